//! Model of a node's life: random writes, snapshots taken while writes go on, retention, and reboots. After every
//! reboot the recovered tree and digest must equal the live ones from before it.

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use tree::tree::same_contents;

#[derive(Clone, Debug)]
enum Step {
    /// Writes `count` ops of the workload starting at `from`.
    Write { from: usize, count: usize },
    /// A snapshot (chunks of `chunk` nodes) while `count` writes go on.
    SnapshotDuring { chunk: usize, from: usize, count: usize },
    /// Retention keeping `keep` snapshots.
    Retain { keep: usize },
    /// Close everything and recover.
    Reboot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..1000, 1usize..40).prop_map(|(from, count)| Step::Write { from, count }),
        2 => (1usize..6, 0usize..1000, 1usize..40).prop_map(|(chunk, from, count)| Step::SnapshotDuring { chunk, from, count }),
        1 => (1usize..3).prop_map(|keep| Step::Retain { keep }),
        2 => Just(Step::Reboot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn recovery_always_gives_back_the_live_tree(steps in proptest::collection::vec(step(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Arc::new(Db::create(dir.path()));
        for step in steps {
            match step {
                Step::Write { from, count } => workload(&db, from, count),
                Step::SnapshotDuring { chunk, from, count } => {
                    let writer = {
                        let db = db.clone();
                        std::thread::spawn(move || workload(&db, from, count))
                    };
                    db.snapshot(chunk);
                    writer.join().unwrap();
                }
                Step::Retain { keep } => {
                    snapshot::retain::retain(&db.snap_dir, &db.wal, keep).unwrap();
                }
                Step::Reboot => {
                    let live = db.tree.read().unwrap().clone();
                    drop(Arc::try_unwrap(db).ok().expect("sole owner"));
                    let (reopened, _) = Db::open(dir.path()).unwrap();
                    let tree = reopened.tree.read().unwrap().clone();
                    tree.validate().map_err(TestCaseError::fail)?;
                    prop_assert_eq!(tree.digest(), live.digest());
                    prop_assert!(same_contents(&tree, &live));
                    db = Arc::new(reopened);
                }
            }
        }
    }
}
