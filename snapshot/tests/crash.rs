//! Crash test with real processes: a child applies writes (each logged durably first) while another of its
//! threads writes fuzzy snapshots back to back; the parent SIGKILLs it at random moments, often in the middle of
//! a snapshot, and checks each time that recovery (newest valid snapshot + WAL) gives exactly the tree that a
//! replay of the whole WAL from scratch gives, and that every write the child reported is in it.
//!
//! `harness = false`: parent mode by default, child mode when `SNAP_CRASH_CHILD` names the data directory.
//! `SNAP_CRASH_ROUNDS` sets the number of kills (default 20), `SNAP_CRASH_SEED` replays a run.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use tree::tree::{same_contents, DataTree};
use tree::txn::TxnRecord;
use wal::Zxid;

fn main() {
    match std::env::var_os("SNAP_CRASH_CHILD") {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

fn child(dir: &Path) -> ! {
    let db = Arc::new(match Db::open(dir) {
        Ok((db, _)) => db,
        Err(e) => panic!("child: recovery failed: {e}"),
    });
    let snapshots = {
        let db = db.clone();
        std::thread::spawn(move || loop {
            db.snapshot(3);
        })
    };
    let mut i = usize::try_from(*db.zxid.lock().unwrap() & 0xffff_ffff).unwrap_or(0);
    loop {
        workload(&db, i, 1);
        i += 1;
        let zxid = *db.zxid.lock().unwrap();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{zxid}").and_then(|()| out.flush()).expect("child: report");
        if snapshots.is_finished() {
            panic!("child: the snapshot thread died");
        }
    }
}

fn parent() {
    let rounds: usize = std::env::var("SNAP_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("SNAP_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("snapshot crash test: {rounds} rounds, SNAP_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    Db::create(dir.path());
    let (mut reported_total, mut from_snapshot) = (0usize, 0usize);
    for round in 0..rounds {
        let reported = run_child_and_kill(dir.path(), Duration::from_millis(rng.gen_range(20..400)));
        reported_total += reported.len();
        let (db, recovered) =
            Db::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: recovery failed: {e} (seed {seed})"));
        from_snapshot += usize::from(recovered.snapshot.is_some());
        let full = replay_whole_wal(&db.wal);
        let tree = db.tree.read().unwrap();
        assert_eq!(tree.digest(), full.digest(), "round {round}: digest differs from a full replay (seed {seed})");
        assert!(same_contents(&tree, &full), "round {round}: tree differs from a full replay (seed {seed})");
        if let Some(&last) = reported.last() {
            assert!(tree.last_zxid() >= last, "round {round}: reported zxid {last:#x} lost (seed {seed})");
        }
    }
    println!("ok: {reported_total} acknowledged writes over {rounds} kills; {from_snapshot} recoveries started from a snapshot");
    assert!(from_snapshot > 0, "the test must exercise recovery from snapshots");
}

fn replay_whole_wal(wal: &wal::Wal) -> DataTree {
    assert!(wal.holds_full_history());
    let mut tree = DataTree::new();
    for record in wal.iter_from(Zxid::ZERO) {
        let record = TxnRecord::decode(&record.unwrap().payload).unwrap();
        tree.apply(&record.header, &record.txn);
    }
    tree
}

fn run_child_and_kill(dir: &Path, after: Duration) -> Vec<i64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("SNAP_CRASH_CHILD", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut zxids, mut reader, mut line) = (Vec::new(), BufReader::new(stdout), Vec::new());
        while reader.read_until(b'\n', &mut line).unwrap() > 0 {
            if let Some(text) = line.strip_suffix(b"\n") {
                zxids.push(std::str::from_utf8(text).unwrap().parse::<i64>().expect("child prints zxids"));
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
