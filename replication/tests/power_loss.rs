//! Power loss on a simulated disk ([`SimFs`]) under the epochs file and the repair mark: a run of epochs updates
//! (accepted, then current, several rounds) and of repair marks and clears is cut right after every IO step in
//! turn, each cut resolved by several seeds (which unsynced writes and directory entries survive), and what the
//! disk kept is read back:
//!
//! - the epochs read are the last ones whose write completed, or the ones being written when the power went;
//!   never lower than acknowledged, never anything else;
//! - a completed `mark` survives with what it vouched for (or the mark being written, which vouches for more);
//!   a completed `clear` never comes back;
//! - neither file is ever torn: both are fsynced before their rename, so recovery never refuses (a refusal, the
//!   typed error naming the file, fails the test here);
//! - the recovered disk takes the next write.
//!
//! `REPLICATION_POWER_LOSS_SEEDS=N` sets the seeds per crash point (default 8).

use std::path::Path;

use replication::repairing;
use replication::{read_epochs_with, write_epochs_with};
use wal::fs::{FileSystem, SimFs};
use wal::{Epoch, Zxid};

const DIR: &str = "/node";

/// A disk holding the node's durable directory.
fn fresh_disk() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new(DIR)).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

fn seeds() -> u64 {
    std::env::var("REPLICATION_POWER_LOSS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8)
}

/// Epochs updates as a peer asks for them: the accepted epoch in discovery, then the current one in sync.
const EPOCHS: [(u32, u32); 7] = [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (5, 3)];

/// What a run got through before the power went: the last epochs acknowledged, and the ones in flight.
struct EpochsRun {
    acked: (Epoch, Epoch),
    in_flight: Option<(Epoch, Epoch)>,
}

fn run_epochs(fs: &SimFs) -> EpochsRun {
    let mut acked = (Epoch(0), Epoch(0));
    for (accepted, current) in EPOCHS {
        let epochs = (Epoch(accepted), Epoch(current));
        match write_epochs_with(fs, Path::new(DIR), epochs.0, epochs.1) {
            Ok(()) => acked = epochs,
            Err(e) => {
                assert!(fs.is_off(), "only the power cut fails a write: {e}");
                return EpochsRun { acked, in_flight: Some(epochs) };
            }
        }
    }
    EpochsRun { acked, in_flight: None }
}

#[test]
fn epochs_survive_a_power_cut_at_every_io_step() {
    let steps = {
        let fs = fresh_disk();
        let before = fs.steps();
        run_epochs(&fs);
        fs.steps() - before
    };
    let mut cuts = 0;
    for step in 1..=steps {
        for seed in 0..seeds() {
            let fs = fresh_disk();
            fs.crash_after(fs.steps() + step, seed);
            let run = run_epochs(&fs);
            let disk = fs.crashed().unwrap_or_else(|| fs.crash_now(seed));
            let what = format!("cut after step {step}, seed {seed}");
            let got = read_epochs_with(&disk, Path::new(DIR)).unwrap_or_else(|e| panic!("{what}: refused: {e}"));
            assert!(
                got == run.acked || Some(got) == run.in_flight,
                "{what}: read {got:?}, acknowledged {:?}, in flight {:?}",
                run.acked,
                run.in_flight
            );
            assert!(got.0 >= run.acked.0 && got.1 >= run.acked.1, "{what}: an epoch went back");
            write_epochs_with(&disk, Path::new(DIR), Epoch(9), Epoch(9)).unwrap();
            assert_eq!(read_epochs_with(&disk, Path::new(DIR)).unwrap(), (Epoch(9), Epoch(9)), "{what}");
            cuts += 1;
        }
    }
    // Checked last, so that a step skipped on purpose shows as lost epochs first.
    assert_eq!(steps, 5 * EPOCHS.len() as u64, "create, write, fsync, rename, fsync directory per update");
    assert_eq!(cuts, steps * seeds());
}

/// Repair marks and clears, as a server repairing twice does; `mark(3)` after `mark(7)` keeps 7.
#[derive(Clone, Copy, Debug)]
enum Op {
    Mark(u64),
    Clear,
}

const REPAIRS: [Op; 7] = [Op::Mark(7), Op::Mark(3), Op::Clear, Op::Clear, Op::Mark(12), Op::Mark(20), Op::Clear];

/// The mark after `op`, from the mark before it.
fn after(op: Op, before: Option<Zxid>) -> Option<Zxid> {
    match op {
        Op::Mark(z) => Some(before.map_or(Zxid(z), |b| b.max(Zxid(z)))),
        Op::Clear => None,
    }
}

struct RepairRun {
    acked: Option<Zxid>,
    in_flight: Option<Option<Zxid>>,
}

fn run_repairs(fs: &SimFs) -> RepairRun {
    let dir = Path::new(DIR);
    let mut acked = None;
    for op in REPAIRS {
        let done = match op {
            Op::Mark(z) => repairing::mark_with(fs, dir, Zxid(z)).map(Some),
            Op::Clear => repairing::clear_with(fs, dir).map(|()| None),
        };
        match done {
            Ok(now) => {
                assert_eq!(now, after(op, acked), "{op:?}");
                acked = now;
            }
            Err(e) => {
                assert!(fs.is_off(), "only the power cut fails {op:?}: {e}");
                return RepairRun { acked, in_flight: Some(after(op, acked)) };
            }
        }
    }
    RepairRun { acked, in_flight: None }
}

#[test]
fn the_repair_mark_survives_a_power_cut_at_every_io_step() {
    let steps = {
        let fs = fresh_disk();
        let before = fs.steps();
        run_repairs(&fs);
        fs.steps() - before
    };
    for step in 1..=steps {
        for seed in 0..seeds() {
            let fs = fresh_disk();
            fs.crash_after(fs.steps() + step, seed);
            let run = run_repairs(&fs);
            let disk = fs.crashed().unwrap_or_else(|| fs.crash_now(seed));
            let what = format!("cut after step {step}, seed {seed}");
            let got = repairing::read_with(&disk, Path::new(DIR)).unwrap_or_else(|e| panic!("{what}: refused: {e}"));
            assert!(
                got == run.acked || Some(got) == run.in_flight,
                "{what}: read {got:?}, acknowledged {:?}, in flight {:?}",
                run.acked,
                run.in_flight
            );
            if let (Some(acked), Some(got)) = (run.acked, got) {
                assert!(got >= acked, "{what}: the mark vouches for less than a completed mark did");
            }
            repairing::mark_with(&disk, Path::new(DIR), Zxid(30)).unwrap();
            repairing::clear_with(&disk, Path::new(DIR)).unwrap();
            assert_eq!(repairing::read_with(&disk, Path::new(DIR)).unwrap(), None, "{what}");
        }
    }
    // A mark is 5 steps (create, write, fsync, rename, fsync directory), a clear 2 (remove, fsync directory), a
    // clear of no mark 1 (the fsync directory). Checked last, so that a step skipped on purpose shows first.
    assert_eq!(steps, 4 * 5 + 2 * 2 + 1, "steps of {REPAIRS:?}");
}
