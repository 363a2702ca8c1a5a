//! Model test: random appends, truncations, purges and reopens against a plain `Vec` of records.

mod common;

use common::*;
use proptest::prelude::*;
use wal::{Wal, Zxid};

#[derive(Clone, Debug)]
enum Op {
    /// Append this many records, skipping `gap` zxids before each.
    Append { count: u8, gap: u8 },
    /// Truncate after the record this far from the end (or before everything).
    Truncate { back: u8 },
    /// Purge before the record at this index.
    Purge { at: u8 },
    /// Close and reopen the log.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..40, 0u8..3).prop_map(|(count, gap)| Op::Append { count, gap }),
        1 => any::<u8>().prop_map(|back| Op::Truncate { back }),
        1 => any::<u8>().prop_map(|at| Op::Purge { at }),
        1 => Just(Op::Reopen),
    ]
}

struct Model {
    records: Vec<u64>,
    /// The last zxid handed to the log: the next append must be above it.
    floor: u64,
}

fn check(log: &Wal, model: &Model) -> Result<(), TestCaseError> {
    let records = all(log);
    let got: Vec<u64> = records.iter().map(|r| r.zxid.0).collect();
    prop_assert_eq!(&got, &model.records);
    for r in &records {
        prop_assert_eq!(&r.payload[..], &payload(r.zxid)[..]);
    }
    prop_assert_eq!(log.first_zxid().map(|z| z.0), model.records.first().copied());
    prop_assert_eq!(log.last_zxid().map(|z| z.0), model.records.last().copied());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vec(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), tiny());
        let mut model = Model { records: Vec::new(), floor: 0 };
        for op in ops {
            match op {
                Op::Append { count, gap } => {
                    let zxids: Vec<u64> = (0..count).map(|_| { model.floor += 1 + gap as u64; model.floor }).collect();
                    append_all(&log, zxids.iter().copied());
                    model.records.extend(zxids);
                }
                Op::Truncate { back } => {
                    let at = model.records.len().checked_sub(1 + back as usize % (model.records.len() + 1));
                    let zxid = at.map_or(model.records.first().map_or(0, |f| f.saturating_sub(1)), |i| model.records[i]);
                    log.truncate_after(Zxid(zxid)).unwrap().wait().unwrap();
                    model.records.retain(|&z| z <= zxid);
                    model.floor = model.floor.min(zxid);
                }
                Op::Purge { at } => {
                    if model.records.is_empty() { continue; }
                    let zxid = model.records[at as usize % model.records.len()];
                    log.purge_before(Zxid(zxid)).unwrap().wait().unwrap();
                    let first = log.first_zxid().unwrap().0;
                    prop_assert!(first <= zxid, "purge before {} removed the segment holding it", zxid);
                    model.records.retain(|&z| z >= first);
                }
                Op::Reopen => {
                    drop(log);
                    let (reopened, recovery) = Wal::open(dir.path(), tiny()).unwrap();
                    prop_assert_eq!(recovery.torn_tail, None);
                    log = reopened;
                    model.floor = model.records.last().copied().unwrap_or(0);
                }
            }
            check(&log, &model)?;
        }
    }
}
