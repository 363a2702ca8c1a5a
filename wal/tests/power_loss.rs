//! Power loss on a simulated disk: a workload of appends (group commit from several threads, batches, async
//! batches), segment rolls with spare preparation, truncate, purge and restart_after runs on [`SimFs`]; the
//! power is cut right after every IO step of it in turn (each with several seeds choosing which unsynced writes
//! and directory entries survive), the log is reopened from what the disk kept, and checked against what was
//! acknowledged:
//!
//! - every append whose `Pending` completed is there, with its payload, in order, with nothing missing before it
//!   (records below a purge point may be gone, from the front only);
//! - nothing is there that was never appended, or that a completed truncate or restart removed;
//! - after a completed `restart_after(z)` the log ends at `z` or later;
//! - the log opened after the cut takes a new append.
//!
//! A second cut, at a step of that recovery, is checked the same way. `open` may refuse only with
//! [`WalError::Corruption`] in the last segment (a record cut short, then a valid record after it: unsynced pages
//! reached the disk out of order, so the log cannot tell a torn tail from lost acknowledged data); then
//! `repair` must keep every acknowledged record.
//!
//! A second test damages a sealed segment and cuts the power at every IO step of `repair`: the next open (or
//! repair) must end with exactly the records before the damage.
//!
//! `WAL_POWER_LOSS_SEEDS=N` sets the seeds per crash point (default 3); `WAL_POWER_LOSS_VERBOSE=1` prints each
//! refusal. Odd seeds run without spare segments (new segments created the plain way); seeds with bit 1 clear grow
//! the log's segments from one record's room up to full size.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::Bytes;
use wal::fs::{FileSystem, SimFs};
use wal::{Wal, WalError, WalOptions, Zxid};

const DIR: &str = "/node/wal";

/// A disk holding the node's durable directory; the log creates its own directory in it.
fn fresh_disk() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/node")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

/// Tiny segments (a few records each) so that rolls, spares and purges happen many times; with `zero_fill` off,
/// new segments are created the plain way instead of from a spare. With `grow`, a log's first segment has room
/// for one record of `max_payload` and the next ones double up to `segment_size`; without, every segment is full
/// size (and every purged one can be recycled).
fn options(zero_fill: bool, grow: bool) -> WalOptions {
    let idle_spin = std::time::Duration::ZERO;
    let first_segment_size = if grow { 0 } else { 1024 };
    WalOptions {
        segment_size: 1024,
        first_segment_size,
        max_payload: 96,
        idle_spin,
        zero_fill,
        ..WalOptions::default()
    }
}

/// The payload of `zxid` appended in `era` (the number of truncates and restarts completed before): distinct
/// for the same zxid in different eras, so that a record a truncate removed cannot pass for its successor.
fn payload(zxid: u64, era: u32) -> Bytes {
    let len = 8 + (zxid.wrapping_mul(2654435761) % 64) as usize;
    let head = format!("{zxid}/{era}:");
    Bytes::from(
        head.bytes().chain((0..).map(|i: u64| (zxid * 7 + i) as u8)).take(len.max(head.len())).collect::<Vec<_>>(),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Truncate(u64),
    Restart(u64),
    Purge(u64),
}

/// What the workload did, as the log's callers saw it.
#[derive(Debug, Default)]
struct Model {
    /// Every append handed to the log: (zxid, era).
    issued: Vec<(u64, u32)>,
    /// The appends whose `Pending` completed.
    acked: BTreeSet<(u64, u32)>,
    /// The control operations that completed, in order.
    done: Vec<Control>,
    /// A control operation that was queued and failed (the power went): it may or may not have happened.
    uncertain: Option<Control>,
    era: u32,
    next: u64,
}

type Shared = Arc<Mutex<Model>>;

/// Appends `count` records from this thread, one at a time; false once the log fails.
fn appender(log: &Wal, model: &Shared, count: usize) -> bool {
    for _ in 0..count {
        let (zxid, era, pending) = {
            let mut m = model.lock().unwrap();
            let (zxid, era) = (m.next, m.era);
            m.next += 1;
            m.issued.push((zxid, era));
            // Queued under the model's lock, so queue order is zxid order.
            match log.append(Zxid(zxid), payload(zxid, era)) {
                Ok(p) => (zxid, era, p),
                Err(_) => return false,
            }
        };
        match pending.wait() {
            Ok(z) => assert!(model.lock().unwrap().acked.insert((z.0, era)) && z.0 == zxid),
            Err(_) => return false,
        }
    }
    true
}

/// Appends from `threads` threads at once (group commit), `each` records per thread.
fn appenders(log: &Wal, model: &Shared, threads: usize, each: usize) -> bool {
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| appender(log, model, each))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold(true, |a, b| a & b)
    })
}

/// Appends a batch of `count` records, blocking or async; false once the log fails.
fn batch(log: &Wal, model: &Shared, count: u64, runtime: Option<&tokio::runtime::Runtime>) -> bool {
    let (records, era) = {
        let mut m = model.lock().unwrap();
        let (first, era) = (m.next, m.era);
        m.next += count;
        m.issued.extend((first..first + count).map(|z| (z, era)));
        ((first..first + count).map(|z| (Zxid(z), payload(z, era))).collect::<Vec<_>>(), era)
    };
    let zxids: Vec<u64> = records.iter().map(|r| r.0 .0).collect();
    let outcome = match runtime {
        Some(rt) => rt.block_on(async { log.append_batch_async(records).await?.await }),
        None => log.append_batch(records).and_then(|p| p.wait()),
    };
    match outcome {
        Ok(_) => {
            model.lock().unwrap().acked.extend(zxids.iter().map(|&z| (z, era)));
            true
        }
        Err(_) => false,
    }
}

/// Runs a control operation to completion; false once the log fails.
fn control(log: &Wal, model: &Shared, op: Control) -> bool {
    type Wait = Box<dyn FnOnce() -> Result<(), WalError>>;
    let queued: Result<Wait, WalError> = match op {
        Control::Truncate(z) => log.truncate_after(Zxid(z)).map(|p| Box::new(move || p.wait()) as Wait),
        Control::Restart(z) => log.restart_after(Zxid(z)).map(|p| Box::new(move || p.wait()) as Wait),
        Control::Purge(z) => log.purge_before(Zxid(z)).map(|p| Box::new(move || p.wait().map(drop)) as Wait),
    };
    let Ok(wait) = queued else { return false };
    let mut m = model.lock().unwrap();
    if wait().is_err() {
        m.uncertain = Some(op);
        return false;
    }
    m.done.push(op);
    if let Control::Truncate(z) | Control::Restart(z) = op {
        (m.era, m.next) = (m.era + 1, z + 1);
    }
    true
}

/// The workload; stops at the first failure (after the power cut everything fails).
fn workload(log: &Wal, model: &Shared) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let next = || model.lock().unwrap().next;
    let _ = appenders(log, model, 3, 8)
        && batch(log, model, 4, None)
        && batch(log, model, 3, Some(&runtime))
        && control(log, model, Control::Truncate(next() - 20))
        && appenders(log, model, 2, 8)
        && control(log, model, Control::Purge(next() - 10))
        && control(log, model, Control::Restart(next() + 40))
        && appenders(log, model, 1, 10)
        && batch(log, model, 3, Some(&runtime))
        && control(log, model, Control::Truncate(next() - 2))
        && appenders(log, model, 2, 3)
        // One record at a time, each followed by a purge of everything before it: a purge right after a roll
        // finds no spare under way, so it recycles the purged segment as the next one.
        && (0..RECYCLING_ROUNDS).all(|_| appenders(log, model, 1, 1) && control(log, model, Control::Purge(next() - 1)));
}

/// The single appends (and purges) at the end of the workload: enough to roll a few times.
const RECYCLING_ROUNDS: usize = 40;

/// Runs the workload on `fs` (its power cut as armed) and returns what the callers saw.
fn run(fs: &SimFs, options: &WalOptions) -> Model {
    let model = Arc::new(Mutex::new(Model { next: 1, ..Model::default() }));
    match Wal::open_with(Arc::new(fs.clone()), DIR, options.clone()) {
        Ok((log, _)) => workload(&log, &model),
        Err(e) => assert!(fs.is_off(), "open on a fresh disk: {e}"),
    }
    Arc::try_unwrap(model).unwrap().into_inner().unwrap()
}

/// One possible outcome of the operation the cut interrupted.
struct World {
    done: Vec<Control>,
    /// Acknowledged records of the last era above this zxid need not be there (a truncate in progress).
    optional_above: Option<u64>,
}

fn worlds(model: &Model) -> Vec<World> {
    let world = |extra: Option<Control>, optional_above| World {
        done: model.done.iter().copied().chain(extra).collect(),
        optional_above,
    };
    match model.uncertain {
        None => vec![world(None, None)],
        Some(Control::Truncate(z)) => vec![world(None, Some(z))],
        Some(op) => vec![world(None, None), world(Some(op), None)],
    }
}

/// Whether a record of `era` survives the completed operations `done`.
fn alive(done: &[Control], zxid: u64, era: u32) -> bool {
    let eras = done.iter().filter(|c| !matches!(c, Control::Purge(_)));
    !eras.skip(era as usize).any(|c| match *c {
        Control::Truncate(z) => zxid > z,
        Control::Restart(_) => true,
        Control::Purge(_) => unreachable!(),
    })
}

/// Checks the records read back (`found`, with the log's end) against one world.
fn check_world(model: &Model, world: &World, found: &[(u64, Bytes)], end: u64) -> Result<(), String> {
    let expected: Vec<(u64, u32)> = {
        let mut e: Vec<_> = model.issued.iter().copied().filter(|&(z, era)| alive(&world.done, z, era)).collect();
        e.sort();
        e
    };
    assert!(expected.windows(2).all(|w| w[0].0 < w[1].0), "the workload reuses no live zxid");
    if let Some(&(first, _)) = found.first() {
        let at = expected.iter().position(|&(z, _)| z == first).ok_or(format!("zxid {first} was never appended"))?;
        for (i, (zxid, data)) in found.iter().enumerate() {
            match expected.get(at + i) {
                Some(&(z, era)) if z == *zxid && payload(z, era) == *data => {}
                other => {
                    return Err(format!("found zxid {zxid}, expected {other:?} (a gap, a removed or a foreign record)"))
                }
            }
        }
    }
    let floor = world
        .done
        .iter()
        .chain(&model.uncertain)
        .filter_map(|c| match c {
            Control::Purge(z) => Some(*z),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let last_era = model.era;
    for &(z, era) in &model.acked {
        let optional = world.optional_above.is_some_and(|t| z > t && era == last_era) || z < floor;
        if alive(&world.done, z, era) && !optional && !found.iter().any(|(f, _)| *f == z) {
            return Err(format!("acknowledged zxid {z} (era {era}) is lost"));
        }
    }
    if let Some(t) = world
        .done
        .iter()
        .filter_map(|c| match c {
            Control::Restart(t) => Some(*t),
            _ => None,
        })
        .max()
    {
        if end < t {
            return Err(format!("restarted after {t}, but the log ends at {end}"));
        }
    }
    Ok(())
}

fn read_back(log: &Wal) -> Vec<(u64, Bytes)> {
    log.iter_from(Zxid::ZERO).map(|r| r.map(|r| (r.zxid.0, r.payload)).expect("a recovered log reads")).collect()
}

fn check(model: &Model, log: &Wal, context: &str) {
    let found = read_back(log);
    let errors: Vec<String> =
        worlds(model).iter().filter_map(|w| check_world(model, w, &found, log.end().0).err()).collect();
    if errors.len() == worlds(model).len() {
        let zxids: Vec<u64> = found.iter().map(|r| r.0).collect();
        panic!("{context}: {errors:?}\nfound {zxids:?}\nmodel {model:?}");
    }
}

#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    refused: u64,
    recovery_cuts: u64,
}

/// Opens the log on `fs` and checks it; a refusal must be a corrupt last segment, and repair must then keep
/// every acknowledged record.
fn reopen_and_check(fs: &SimFs, options: &WalOptions, model: &Model, context: &str, tally: &mut Tally) -> Wal {
    let fs_handle: Arc<dyn FileSystem> = Arc::new(fs.clone());
    match Wal::open_with(fs_handle.clone(), DIR, options.clone()) {
        Ok((log, _)) => {
            check(model, &log, context);
            log
        }
        Err(error) => {
            let last_segment = fs.read_dir(Path::new(DIR)).unwrap().into_iter().filter(|n| n.ends_with(".wal")).max();
            match &error {
                WalError::Corruption { segment, kind, .. }
                    if matches!(kind, wal::CorruptionKind::BadChecksum | wal::CorruptionKind::BadRecordHeader)
                        && segment.file_name().map(|n| n.to_string_lossy().into_owned()) == last_segment => {}
                _ => panic!("{context}: open refused with {error}\nmodel {model:?}"),
            }
            tally.refused += 1;
            if std::env::var_os("WAL_POWER_LOSS_VERBOSE").is_some() {
                eprintln!("{context}: refused: {error}");
            }
            wal::repair_with(&*fs_handle, Path::new(DIR), options).expect("repair");
            let (log, _) = Wal::open_with(fs_handle, DIR, options.clone()).expect("open after repair");
            check(model, &log, &format!("{context}, after repair of {error}"));
            log
        }
    }
}

/// Cuts the power after step `step` with `seed`, recovers, checks; then cuts again during a recovery. Odd seeds
/// run without spares.
fn crash_at(step: u64, seed: u64, tally: &mut Tally) {
    let options = options(seed & 1 == 0, seed & 2 == 0);
    let fs = fresh_disk();
    fs.crash_after(fs.steps() + step, seed);
    let model = run(&fs, &options);
    let after = |fs: &SimFs| fs.crashed().unwrap_or_else(|| fs.crash_now(seed));
    let context = format!(
        "cut after step {step}, seed {seed}, zero_fill {}, first segment {}",
        options.zero_fill, options.first_segment_size
    );
    let disk = after(&fs);
    let log = reopen_and_check(&disk, &options, &model, &context, tally);
    let recovery_steps = disk.steps();
    // The recovered log takes new appends.
    let zxid = log.end().0 + 1;
    log.append(Zxid(zxid), payload(zxid, u32::MAX)).and_then(|p| p.wait()).expect("append after recovery");
    drop(log);
    tally.runs += 1;
    // A second cut, in the middle of that recovery.
    if recovery_steps > 0 {
        let again = after(&fs);
        again.crash_after(1 + seed % recovery_steps, seed ^ 0x5eed);
        drop(Wal::open_with(Arc::new(again.clone()), DIR, options.clone()));
        let context = format!("{context}, cut again at recovery step {}", 1 + seed % recovery_steps);
        drop(reopen_and_check(&after(&again), &options, &model, &context, tally));
        tally.recovery_cuts += 1;
    }
}

#[test]
fn every_acknowledged_write_survives_a_power_cut_at_every_io_step() {
    let seeds: u64 = std::env::var("WAL_POWER_LOSS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let clean = fresh_disk();
    let setup = clean.steps();
    let model = run(&clean, &options(true, false));
    assert!(
        model.uncertain.is_none() && model.done.len() == 4 + RECYCLING_ROUNDS,
        "the clean run completes: {model:?}"
    );
    let steps = clean.steps() - setup;
    let mut tally = Tally::default();
    // Threads make the step order vary a little between runs; a few steps past the clean count cover that.
    for step in 1..=steps + 4 {
        for seed in 0..seeds {
            crash_at(step, step * 1000 + seed, &mut tally);
        }
    }
    eprintln!(
        "power loss: {steps} IO steps in a clean run, {seeds} seeds each: {} cuts checked, {} second cuts during \
         recovery, {} refusals repaired",
        tally.runs, tally.recovery_cuts, tally.refused
    );
    assert!(tally.runs >= steps * seeds);
}

/// A closed log of `count` acknowledged records (single appender, no spares: the same IO steps every time) whose
/// third record in its second segment has a flipped byte, durably: a disk fault that [`wal::repair`] must cut.
/// Returns the disk and the zxid of the damaged record.
fn damaged_log(count: u64) -> (SimFs, u64) {
    let fs = fresh_disk();
    let (log, _) = Wal::open_with(Arc::new(fs.clone()), DIR, options(false, false)).unwrap();
    for zxid in 1..=count {
        log.append(Zxid(zxid), payload(zxid, 0)).unwrap().wait().unwrap();
    }
    drop(log);
    let mut segments: Vec<String> =
        fs.read_dir(Path::new(DIR)).unwrap().into_iter().filter(|n| n.ends_with(".wal")).collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let first = wal::segment::format::parse_file_name(&segments[1]).unwrap().0;
    let len = |z: u64| wal::record::encoded_len(payload(z, 0).len()) as u64;
    let offset = wal::segment::format::HEADER_LEN as u64 + len(first) + len(first + 1) + 20;
    let file = fs.open(&Path::new(DIR).join(&segments[1]), true).unwrap();
    let mut byte = [0u8];
    file.read_at(&mut byte, offset).unwrap();
    file.write_at(&[byte[0] ^ 0x40], offset).unwrap();
    file.sync_data().unwrap();
    (fs, first + 2)
}

#[test]
fn a_repair_cut_short_by_a_power_cut_is_finished_by_the_next_one() {
    let count = 60;
    let (clean, damaged) = damaged_log(count);
    let before = clean.steps();
    assert!(matches!(wal::repair_with(&clean, Path::new(DIR), &options(false, false)), Ok(Some(_))));
    let steps = clean.steps() - before;
    let seeds: u64 = std::env::var("WAL_POWER_LOSS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut cuts = 0;
    for step in 1..=steps {
        for seed in 0..seeds {
            let (fs, _) = damaged_log(count);
            fs.crash_after(fs.steps() + step, seed);
            // Fails, or succeeds when the cut comes right after its last step.
            let _ = wal::repair_with(&fs, Path::new(DIR), &options(false, false));
            let disk: Arc<dyn FileSystem> = Arc::new(fs.crashed().expect("cut"));
            let log = match Wal::open_with(disk.clone(), DIR, options(false, false)) {
                Ok((log, _)) => log,
                Err(WalError::Corruption { .. }) => {
                    wal::repair_with(&*disk, Path::new(DIR), &options(false, false)).expect("repair again");
                    Wal::open_with(disk, DIR, options(false, false)).expect("open after the repair").0
                }
                Err(e) => panic!("repair cut after step {step}, seed {seed}: open refused with {e}"),
            };
            let found: Vec<u64> = read_back(&log).into_iter().map(|(z, _)| z).collect();
            assert_eq!(found, (1..damaged).collect::<Vec<_>>(), "repair cut after step {step}, seed {seed}");
            cuts += 1;
        }
    }
    eprintln!("power loss in repair: {steps} IO steps, {seeds} seeds each: {cuts} cuts checked");
    assert!(cuts >= steps * seeds && steps > 0);
}
