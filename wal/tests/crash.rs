//! Crash test with real processes: a child appends from several writer threads and prints each zxid once its
//! append is durable; the parent SIGKILLs it at random moments, many times, reopens the log each time, and checks
//! that every zxid the child reported is there, in order, with its payload.
//!
//! `harness = false`: this file is its own `main`, in parent mode by default and in child mode when
//! `WAL_CRASH_CHILD` names the log directory. `WAL_CRASH_ROUNDS` sets the number of kills (default 40).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::payload;
use rand::Rng;
use wal::{Wal, WalOptions, Zxid};

const WRITERS: usize = 4;

fn options() -> WalOptions {
    WalOptions { segment_size: 64 << 10, max_payload: 1024, ..WalOptions::default() }
}

fn main() {
    match std::env::var_os("WAL_CRASH_CHILD") {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

/// Appends forever from `WRITERS` threads, printing each zxid once it is durable.
fn child(dir: &Path) -> ! {
    let (log, _) = Wal::open(dir, options()).expect("child: open");
    let log = Arc::new(log);
    let next = Arc::new(Mutex::new(log.last_zxid().unwrap_or(Zxid::ZERO).0));
    let threads: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (log, next) = (log.clone(), next.clone());
            std::thread::spawn(move || loop {
                let pending = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    log.append(Zxid(*n), payload(Zxid(*n))).expect("child: append")
                };
                let zxid = pending.wait().expect("child: durable");
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", zxid.0).and_then(|()| out.flush()).expect("child: report");
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    unreachable!("writers never stop");
}

fn parent() {
    let rounds: usize = std::env::var("WAL_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(40);
    let seed: u64 = std::env::var("WAL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("wal crash test: {rounds} rounds, WAL_CRASH_SEED={seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (mut reported_total, mut torn_tails, mut max_reported) = (0usize, 0usize, 0u64);
    for round in 0..rounds {
        let reported = run_child_and_kill(dir.path(), Duration::from_millis(rng.gen_range(1..120)));
        reported_total += reported.len();
        let (log, recovery) = Wal::open(dir.path(), options()).expect("reopen after SIGKILL");
        torn_tails += usize::from(recovery.torn_tail.is_some());
        let records: Vec<_> = log.iter_from(Zxid::ZERO).collect::<Result<_, _>>().expect("read back");
        // Group commit makes durability prefix-closed: the log is exactly 1..=last.
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.zxid, Zxid(i as u64 + 1), "round {round}: gap or disorder at record {i} (seed {seed})");
            assert_eq!(&r.payload[..], &payload(r.zxid)[..], "round {round}: payload of {} (seed {seed})", r.zxid);
        }
        let last = records.len() as u64;
        if let Some(&lost) = reported.iter().find(|&&z| z > last) {
            panic!("round {round}: zxid {lost} was reported durable but the log ends at {last} (seed {seed})");
        }
        assert!(last >= max_reported, "round {round}: the log shrank below an acknowledged zxid (seed {seed})");
        max_reported = max_reported.max(reported.iter().copied().max().unwrap_or(0));
    }
    println!("ok: {reported_total} acknowledged appends checked over {rounds} kills; {torn_tails} torn tails cut");
    assert!(reported_total > rounds, "the child must make progress for the test to mean anything");
}

/// Starts a child on `dir`, kills it with SIGKILL after `after`, and returns the zxids it reported durable.
fn run_child_and_kill(dir: &Path, after: Duration) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("WAL_CRASH_CHILD", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut zxids, mut reader, mut line) = (Vec::new(), BufReader::new(stdout), Vec::new());
        while reader.read_until(b'\n', &mut line).unwrap() > 0 {
            // A line cut by the kill has no newline: it was not a whole report, so it is not counted.
            if let Some(text) = line.strip_suffix(b"\n") {
                zxids.push(std::str::from_utf8(text).unwrap().parse::<u64>().expect("child prints zxids"));
            }
            line.clear();
        }
        zxids
    });
    std::thread::sleep(after);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    reader.join().unwrap()
}
