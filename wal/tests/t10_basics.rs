//! Appends, reads, rolls, truncation, purge, reopen, and the request errors.

mod common;

use common::*;
use wal::{Wal, WalError, WalOptions, Zxid};

#[test]
fn appended_records_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 1..=200);
    assert!(segments(dir.path()).len() > 5, "tiny segments must roll");
    let records = all(&log);
    assert_eq!(records.len(), 200);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.zxid, Zxid(i as u64 + 1));
        assert_eq!(&r.payload[..], &payload(r.zxid)[..]);
    }
    assert_eq!(log.first_zxid(), Some(Zxid(1)));
    assert_eq!(log.last_zxid(), Some(Zxid(200)));
    let from: Vec<u64> = log.iter_from(Zxid(150)).map(|r| r.unwrap().zxid.0).collect();
    assert_eq!(from, (150..=200).collect::<Vec<_>>());
}

#[test]
fn reopen_recovers_every_record_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), tiny());
        append_all(&log, (1..=100).map(|z| z * 3));
    }
    let (log, recovery) = Wal::open(dir.path(), tiny()).unwrap();
    assert_eq!(recovery.records, 100);
    assert_eq!(recovery.last_zxid, Some(Zxid(300)));
    assert_eq!(recovery.torn_tail, None);
    assert!(matches!(log.append(Zxid(300), vec![]), Err(WalError::ZxidNotIncreasing { .. })));
    append_all(&log, 301..=310);
    assert_eq!(zxids(&log), (1..=100).map(|z| z * 3).chain(301..=310).collect::<Vec<_>>());
}

#[test]
fn sparse_zxids_across_epochs_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    let zs = [Zxid::new(wal::Epoch(1), 1), Zxid::new(wal::Epoch(1), 2), Zxid::new(wal::Epoch(3), 1)];
    append_all(&log, zs.iter().map(|z| z.0));
    assert_eq!(zxids(&log), zs.iter().map(|z| z.0).collect::<Vec<_>>());
}

#[test]
fn request_errors_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    assert!(matches!(log.append(Zxid(1), vec![0; 1025]), Err(WalError::PayloadTooLarge { len: 1025, max: 1024 })));
    assert!(matches!(log.append(Zxid(0), vec![]), Err(WalError::ZxidNotIncreasing { .. })));
    append_all(&log, [5]);
    assert!(matches!(log.append(Zxid(5), vec![]), Err(WalError::ZxidNotIncreasing { .. })));
    assert!(matches!(log.append(Zxid(4), vec![]), Err(WalError::ZxidNotIncreasing { .. })));
    log.append(Zxid(1024), vec![1; 1024]).unwrap().wait().unwrap();
    assert_eq!(zxids(&log), vec![5, 1024]);
}

#[test]
fn truncate_after_drops_the_tail_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), tiny());
        append_all(&log, 1..=120);
        let before = segments(dir.path()).len();
        log.truncate_after(Zxid(37)).unwrap().wait().unwrap();
        assert_eq!(zxids(&log), (1..=37).collect::<Vec<_>>());
        assert!(segments(dir.path()).len() < before);
        assert!(matches!(log.append(Zxid(37), vec![]), Err(WalError::ZxidNotIncreasing { .. })));
        // A new history continues after the cut, with zxids the old tail had used.
        append_all(&log, 38..=60);
    }
    let log = open(dir.path(), tiny());
    assert_eq!(zxids(&log), (1..=60).collect::<Vec<_>>());
    for r in all(&log) {
        assert_eq!(&r.payload[..], &payload(r.zxid)[..]);
    }
}

#[test]
fn truncate_at_a_segment_boundary_reopens_the_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 1..=120);
    let second =
        wal::segment::format::parse_file_name(segments(dir.path())[1].file_name().unwrap().to_str().unwrap()).unwrap();
    log.truncate_after(Zxid(second.0 - 1)).unwrap().wait().unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(log.last_zxid(), Some(Zxid(second.0 - 1)));
    append_all(&log, second.0..=130);
    drop(log);
    let log = open(dir.path(), tiny());
    assert_eq!(zxids(&log), (1..=130).collect::<Vec<_>>());
}

#[test]
fn truncate_before_everything_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 10..=50);
    log.truncate_after(Zxid(3)).unwrap().wait().unwrap();
    assert_eq!(zxids(&log), Vec::<u64>::new());
    assert_eq!(log.last_zxid(), None);
    append_all(&log, [4, 5]);
    drop(log);
    assert_eq!(zxids(&open(dir.path(), tiny())), vec![4, 5]);
}

#[test]
fn truncate_past_the_end_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 1..=10);
    log.truncate_after(Zxid(99)).unwrap().wait().unwrap();
    assert_eq!(zxids(&log), (1..=10).collect::<Vec<_>>());
    assert!(matches!(log.append(Zxid(10), vec![]), Err(WalError::ZxidNotIncreasing { .. })));
}

#[test]
fn purge_deletes_only_whole_older_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 1..=200);
    let before = segments(dir.path()).len();
    let purged = log.purge_before(Zxid(100)).unwrap().wait().unwrap();
    assert!(purged.segments > 0 && purged.bytes > 0);
    assert_eq!(segments(dir.path()).len(), before - purged.segments);
    let first = log.first_zxid().unwrap();
    assert!(first <= Zxid(100), "the segment holding 100 must stay");
    assert_eq!(zxids(&log), (first.0..=200).collect::<Vec<_>>());
    // Purging everything keeps the segment being appended to.
    log.purge_before(Zxid(u64::MAX)).unwrap().wait().unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(log.last_zxid(), Some(Zxid(200)));
    drop(log);
    let log = open(dir.path(), tiny());
    assert_eq!(log.last_zxid(), Some(Zxid(200)));
    append_all(&log, [201]);
}

#[test]
fn a_directory_with_foreign_files_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let err = Wal::open(dir.path(), tiny()).unwrap_err();
    assert!(matches!(&err, WalError::NotAWal { file, .. } if file == "notes.txt"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("notes.txt")).unwrap(), b"hello");
}

#[test]
fn bad_magic_and_future_versions_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), tiny()).append(Zxid(1), vec![1]).unwrap().wait());
    let seg = segments(dir.path())[0].clone();
    let original = std::fs::read(&seg).unwrap();
    let mut bytes = original.clone();
    bytes[8] = 9; // version 9
    std::fs::write(&seg, &bytes).unwrap();
    let err = Wal::open(dir.path(), tiny()).unwrap_err();
    assert!(matches!(err, WalError::UnsupportedVersion { version: 9, .. }), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    bytes[..8].copy_from_slice(b"PK\x03\x04ZIP!");
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(Wal::open(dir.path(), tiny()), Err(WalError::BadMagic { .. })));
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path(), tiny());
    assert!(matches!(Wal::open(dir.path(), tiny()), Err(WalError::Locked { .. })));
}

#[test]
fn inconsistent_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_size: 1000, max_payload: 1000, ..WalOptions::default() };
    assert!(matches!(Wal::open(dir.path(), options), Err(WalError::InvalidOptions(_))));
}

#[test]
fn a_tiny_queue_applies_back_pressure_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { max_queued_records: 2, max_queued_bytes: 64, max_batch_records: Some(3), ..tiny() };
    let log = std::sync::Arc::new(open(dir.path(), options));
    let next = std::sync::Mutex::new(0u64);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    let pending = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        log.append(Zxid(*n), payload(Zxid(*n))).unwrap()
                    };
                    pending.wait().unwrap();
                }
            });
        }
    });
    assert_eq!(zxids(&log), (1..=400).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_appenders_share_fsyncs_and_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { max_queued_records: 4, ..tiny() };
    let log = std::sync::Arc::new(open(dir.path(), options));
    let next = std::sync::Arc::new(tokio::sync::Mutex::new(0u64));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (log, next) = (log.clone(), next.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    let pending = {
                        let mut n = next.lock().await;
                        *n += 1;
                        log.append_async(Zxid(*n), payload(Zxid(*n))).await.unwrap()
                    };
                    let z = pending.await.unwrap();
                    assert!(log.last_zxid().unwrap() >= z, "durable means readable");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(zxids(&log), (1..=640).collect::<Vec<_>>());
}

#[test]
fn readers_started_before_a_truncation_keep_their_view() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    append_all(&log, 1..=100);
    let mut old = log.iter_from(Zxid(1));
    log.truncate_after(Zxid(50)).unwrap().wait().unwrap();
    append_all(&log, 51..=60);
    let first: Vec<u64> = old.by_ref().take(100).map(|r| r.unwrap().zxid.0).collect();
    assert_eq!(first, (1..=100).collect::<Vec<_>>());
    assert_eq!(zxids(&log), (1..=60).collect::<Vec<_>>());
}

#[test]
fn a_batch_is_queued_at_once_and_made_durable_by_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), WalOptions { segment_size: 1 << 20, ..tiny() });
    append_all(&log, [1]);
    let before = log.stats().batches;
    let batch: Vec<(Zxid, bytes::Bytes)> = (2..=50).map(|z| (Zxid(z), payload(Zxid(z)).into())).collect();
    assert_eq!(log.append_batch(batch).unwrap().wait().unwrap(), Zxid(50));
    assert_eq!(log.stats().batches, before + 1, "one fdatasync for the whole batch");
    assert_eq!(zxids(&log), (1..=50).collect::<Vec<_>>());
    // Invalid batches queue nothing.
    let bad_order = vec![(Zxid(52), bytes::Bytes::new()), (Zxid(51), bytes::Bytes::new())];
    assert!(matches!(log.append_batch(bad_order), Err(WalError::ZxidNotIncreasing { .. })));
    let too_big = vec![(Zxid(51), bytes::Bytes::new()), (Zxid(52), bytes::Bytes::from(vec![0; 2000]))];
    assert!(matches!(log.append_batch(too_big), Err(WalError::PayloadTooLarge { .. })));
    assert!(matches!(log.append_batch(Vec::new()), Err(WalError::EmptyBatch)));
    append_all(&log, [51]);
    assert_eq!(log.last_zxid(), Some(Zxid(51)));
}

#[test]
fn a_restarted_log_begins_after_its_base_and_says_so_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), tiny());
        append_all(&log, 1..=100);
        assert!(log.holds_full_history());
        log.restart_after(Zxid(500)).unwrap().wait().unwrap();
        assert_eq!(
            (log.first_zxid(), log.last_zxid(), log.base(), log.end()),
            (None, None, Some(Zxid(500)), Zxid(500))
        );
        assert!(!log.holds_full_history(), "an empty restarted log does not hold the history before its base");
        assert!(segments(dir.path()).is_empty(), "every old segment is gone");
        assert!(matches!(log.append(Zxid(500), vec![]), Err(WalError::ZxidNotIncreasing { .. })));
        assert!(matches!(log.truncate_after(Zxid(499)), Err(WalError::TruncateBelowBase { .. })));
        append_all(&log, 501..=560);
    }
    let (log, recovery) = Wal::open(dir.path(), tiny()).unwrap();
    assert_eq!(recovery.first_zxid, Some(Zxid(501)));
    assert_eq!(zxids(&log), (501..=560).collect::<Vec<_>>());
    assert_eq!((log.base(), log.end()), (Some(Zxid(500)), Zxid(560)));
    assert!(!log.holds_full_history(), "segment 1 of the restarted log is not the start of the history");
    // Cutting every record leaves the log ending at its base, not at zero.
    log.truncate_after(Zxid(500)).unwrap().wait().unwrap();
    assert_eq!((log.last_zxid(), log.end()), (None, Zxid(500)));
    drop(log);
    let (log, _) = Wal::open(dir.path(), tiny()).unwrap();
    assert_eq!(log.end(), Zxid(500));
    append_all(&log, [501]);
}

#[test]
fn segments_left_by_a_restart_that_crashed_before_deleting_them_go_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), tiny());
        append_all(&log, 1..=100);
    }
    let old = segments(dir.path());
    assert!(old.len() > 2);
    for path in &old {
        std::fs::copy(path, saved.path().join(path.file_name().unwrap())).unwrap();
    }
    {
        let log = open(dir.path(), tiny());
        log.restart_after(Zxid(50)).unwrap().wait().unwrap();
    }
    // The crash: the base file is durable, the old segments are still there.
    for path in &old {
        std::fs::copy(saved.path().join(path.file_name().unwrap()), path).unwrap();
    }
    let (log, recovery) = Wal::open(dir.path(), tiny()).unwrap();
    assert_eq!((recovery.records, log.end(), log.base()), (0, Zxid(50), Some(Zxid(50))));
    assert!(segments(dir.path()).is_empty(), "{:?}", segments(dir.path()));
    append_all(&log, 51..=60);
    assert_eq!(zxids(&log), (51..=60).collect::<Vec<_>>());
}

#[test]
fn a_damaged_base_file_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), tiny());
        log.restart_after(Zxid(7)).unwrap().wait().unwrap();
    }
    let path = dir.path().join("base");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[9] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(Wal::open(dir.path(), tiny()), Err(WalError::BadBase { .. })));
}

#[test]
fn a_purge_after_a_restart_ends_the_base_for_good() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), tiny());
        log.restart_after(Zxid(100)).unwrap().wait().unwrap();
        append_all(&log, 101..=300);
        assert_eq!(log.base(), Some(Zxid(100)), "every record after the base is still there");
        assert!(log.purge_before(Zxid(200)).unwrap().wait().unwrap().segments > 0);
        assert_eq!(log.base(), None, "the log no longer holds every record after 100");
        assert!(!log.holds_full_history());
    }
    let (log, _) = Wal::open(dir.path(), tiny()).unwrap();
    assert_eq!(log.base(), None, "nor after a reopen");
    assert!(!log.holds_full_history());
    assert_eq!(log.end(), Zxid(300));
}

#[test]
fn a_base_file_below_the_records_it_claims_to_precede_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), tiny());
        append_all(&log, 1..=100);
    }
    // A base file (layout in wal/src/base.rs) saying the log begins after 50, next to records from 1: whatever
    // wrote it, the log cannot tell which history it holds, and must not open.
    let mut base = b"\x89ENSBAS\n".to_vec();
    base.extend_from_slice(&50u64.to_le_bytes());
    base.extend_from_slice(&1u64.to_le_bytes());
    let crc = crc32c::crc32c(&base);
    base.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("base"), base).unwrap();
    match Wal::open(dir.path(), tiny()) {
        Err(WalError::RecordBelowBase { zxid, base }) => assert_eq!((zxid, base), (Zxid(1), Zxid(50))),
        other => panic!("expected RecordBelowBase, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_record_over_a_lowered_limit_stays_readable_and_is_never_cut_as_torn() {
    let dir = tempfile::tempdir().unwrap();
    let big = WalOptions { segment_size: 1 << 20, max_payload: 100_000, ..WalOptions::default() };
    {
        let (log, _) = Wal::open(dir.path(), big.clone()).unwrap();
        log.append(Zxid(1), vec![1; 10]).unwrap().wait().unwrap();
        // The last record of the log, over the limit the next open is given.
        log.append(Zxid(2), vec![2; 90_000]).unwrap().wait().unwrap();
    }
    let lowered = WalOptions { max_payload: 1000, ..big };
    let (log, recovery) = Wal::open(dir.path(), lowered).unwrap();
    assert_eq!((recovery.records, recovery.torn_tail), (2, None), "nothing cut");
    let records: Vec<_> = log.iter_from(Zxid(1)).map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].payload.len(), 90_000);
    assert!(log.append(Zxid(3), vec![3; 2000]).is_err(), "appends still obey the lowered limit");
}

/// The segment files in `dir`, by inode number.
fn by_inode(dir: &std::path::Path) -> std::collections::HashMap<u64, std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    segments(dir).into_iter().map(|p| (std::fs::metadata(&p).unwrap().ino(), p)).collect()
}

#[test]
fn purged_segments_come_back_as_zeroed_spares_but_never_under_a_reader_holding_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), tiny());
    let (mut next, mut recycled) = (1u64, 0);
    for round in 0..40 {
        append_all(&log, next..next + 60);
        next += 60;
        // Some rounds, a reader holds the records of the segments about to go: the log's own (an earlier view),
        // or an inspection's, which opens the files read-only as `ensemble wal dump` does from another process.
        let held = match round % 3 {
            1 => Some(all(&log)),
            2 => Some(
                wal::inspect(dir.path(), &tiny()).unwrap().records(Zxid::ZERO).collect::<Result<Vec<_>, _>>().unwrap(),
            ),
            _ => None,
        };
        let before = by_inode(dir.path());
        log.purge_before(Zxid(next - 30)).unwrap().wait().unwrap();
        append_all(&log, next..next + 60);
        next += 60;
        // A file that was one segment before the purge and is another now was recycled.
        recycled +=
            by_inode(dir.path()).iter().filter(|(ino, path)| before.get(ino).is_some_and(|p| p != *path)).count();
        if let Some(held) = held {
            for record in &held {
                assert_eq!(record.payload, payload(record.zxid), "a held record of {} was overwritten", record.zxid);
            }
        }
        let first = log.first_zxid().unwrap().0;
        assert_eq!(zxids(&log), (first..next).collect::<Vec<_>>(), "round {round}");
    }
    assert!(recycled > 0, "no purged segment was ever recycled");
    drop(log);
    let log = open(dir.path(), tiny());
    assert_eq!(log.last_zxid(), Some(Zxid(next - 1)));
    let first = log.first_zxid().unwrap().0;
    assert_eq!(zxids(&log), (first..next).collect::<Vec<_>>(), "after a reopen");
}

#[test]
fn a_new_log_doubles_its_segments_up_to_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_size: 16384, first_segment_size: 2048, ..tiny() };
    let sizes = |dir: &std::path::Path| -> Vec<u64> {
        segments(dir).iter().map(|p| std::fs::metadata(p).unwrap().len()).collect()
    };
    let log = open(dir.path(), options.clone());
    append_all(&log, 1..=3);
    assert_eq!(sizes(dir.path()), [2048]);
    // A reopened log goes on in its last segment without extending it (what fallocate adds is unwritten, and each
    // append into it would cost a journal commit), and grows from there.
    drop(log);
    let log = open(dir.path(), options.clone());
    append_all(&log, 4..=400);
    // Each segment doubles the one before, or repeats its size when that one was created while its spare was
    // still being zeroed (the writer does not wait for it), up to segment_size.
    let grown = sizes(dir.path());
    assert_eq!(grown[0], 2048, "{grown:?}");
    assert!(grown.windows(2).all(|w| w[1] == w[0] || w[1] == 2 * w[0]), "{grown:?}");
    assert_eq!(grown.last(), Some(&16384), "{grown:?}");
    assert!(grown.len() >= 6, "{grown:?}");
    // Just after a roll the spare is idle, so the purge offers it the smallest segment first. Whether the spare is
    // a recycled segment or a new file, the segments after the purge are full size.
    let mut next = 401;
    let count = segments(dir.path()).len();
    while segments(dir.path()).len() == count {
        append_all(&log, next..=next);
        next += 1;
    }
    // The record that rolled the log opens its last segment.
    log.purge_before(Zxid(next - 1)).unwrap().wait().unwrap();
    assert!(sizes(dir.path()).iter().all(|&len| len == 16384), "{:?}", sizes(dir.path()));
    append_all(&log, next..next + 400);
    assert!(sizes(dir.path()).iter().all(|&len| len == 16384), "{:?}", sizes(dir.path()));
    assert_eq!(zxids(&log), (log.first_zxid().unwrap().0..next + 400).collect::<Vec<_>>());
}

#[test]
fn a_truncation_keeps_a_small_segment_small() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_size: 16384, first_segment_size: 2048, ..tiny() };
    let log = open(dir.path(), options.clone());
    append_all(&log, 1..=3);
    log.truncate_after(Zxid(2)).unwrap().wait().unwrap();
    append_all(&log, 3..=4);
    // The cut segment was rewritten at its own size, not fallocated up to segment_size (unwritten extents).
    let sizes: Vec<u64> = segments(dir.path()).iter().map(|p| std::fs::metadata(p).unwrap().len()).collect();
    assert_eq!(sizes, [2048]);
    assert_eq!(zxids(&log), (1..=4).collect::<Vec<_>>());
}
