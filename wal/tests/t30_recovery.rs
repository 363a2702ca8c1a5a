//! Recovery: torn tails are cut, corruption is refused with its place named, and repair cuts it on request.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use wal::record::{self, Decoded};
use wal::segment::format::{Seal, SegmentHeader, HEADER_LEN};
use wal::{CorruptionKind, Wal, WalError, Zxid};

/// The start and end offsets of every record in a segment file.
fn record_spans(path: &Path) -> Vec<(usize, usize, Zxid)> {
    let data = std::fs::read(path).unwrap();
    let mut spans = Vec::new();
    let mut offset = HEADER_LEN;
    while let Decoded::Record { zxid, next, .. } = record::decode(&data, offset, 1 << 20) {
        spans.push((offset, next, zxid));
        offset = next;
    }
    spans
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
    }
    to
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset as u64).unwrap();
}

/// A closed log of records 1..=n in tiny segments.
fn closed_log(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    append_all(&open(dir.path(), tiny()), 1..=n);
    dir
}

#[test]
fn a_last_record_cut_at_any_byte_leaves_exactly_the_records_before_it() {
    // zxid 27's payload is long, so the cut sweeps header and payload.
    let original = closed_log(27);
    let last_seg = segments(original.path()).pop().unwrap();
    let (start, end, zxid) = *record_spans(&last_seg).last().unwrap();
    assert_eq!(zxid, Zxid(27));
    assert!(end - start > 100);
    for cut in start..end {
        let dir = copy_dir(original.path());
        let seg = dir.path().join(last_seg.file_name().unwrap());
        // Bytes past the cut never reached the disk: they read as the preallocated zeros.
        write_at(&seg, cut, &vec![0; end - cut]);
        let (log, recovery) = Wal::open(dir.path(), tiny()).unwrap();
        assert_eq!(zxids(&log), (1..=26).collect::<Vec<_>>(), "cut at {cut}");
        let torn = recovery.torn_tail.clone();
        if cut == start {
            assert_eq!(torn, None, "a clean end is not a torn tail");
        } else {
            let torn = torn.unwrap_or_else(|| panic!("cut at {cut}: torn tail not reported"));
            assert_eq!((torn.offset, torn.last_good_zxid), (start as u64, Zxid(26)));
            assert!(torn.bytes >= 1 && torn.bytes <= (cut - start) as u64);
        }
        // The cut is durable: new records take the place and survive another reopen.
        append_all(&log, [27, 28]);
        drop(log);
        assert_eq!(zxids(&open(dir.path(), tiny())), (1..=28).collect::<Vec<_>>(), "cut at {cut}");
    }
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = closed_log(20);
    let last_seg = segments(dir.path()).pop().unwrap();
    let (_, end, _) = *record_spans(&last_seg).last().unwrap();
    write_at(&last_seg, end + 10, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    let (log, recovery) = Wal::open(dir.path(), tiny()).unwrap();
    assert_eq!(recovery.torn_tail.unwrap().bytes, 17);
    assert_eq!(zxids(&log), (1..=20).collect::<Vec<_>>());
}

#[test]
fn a_bit_flip_anywhere_in_a_sealed_record_is_corruption_at_that_record() {
    let original = closed_log(60);
    let first_seg = segments(original.path())[0].clone();
    let spans = record_spans(&first_seg);
    assert!(segments(original.path()).len() >= 3);
    let mut checked = 0;
    for &(start, end, _) in &spans {
        for byte in start..end {
            let dir = copy_dir(original.path());
            let seg = dir.path().join(first_seg.file_name().unwrap());
            let mut data = std::fs::read(&seg).unwrap();
            data[byte] ^= 1 << (byte % 8);
            std::fs::write(&seg, &data).unwrap();
            match Wal::open(dir.path(), tiny()) {
                Err(WalError::Corruption { segment, offset, .. }) => {
                    assert_eq!(segment, seg, "flip at {byte}");
                    assert_eq!(offset, start as u64, "flip at {byte}");
                }
                Err(e) => panic!("flip at {byte}: unexpected error {e}"),
                Ok((log, _)) => panic!("flip at {byte} went unnoticed; read {:?}", zxids(&log)),
            }
            // Nothing was touched.
            assert_eq!(std::fs::read(&seg).unwrap(), data);
            checked += 1;
        }
    }
    assert!(checked > 1000);
}

#[test]
fn a_bad_record_followed_by_valid_ones_in_the_last_segment_is_corruption() {
    let dir = closed_log(60);
    let last_seg = segments(dir.path()).pop().unwrap();
    let spans = record_spans(&last_seg);
    assert!(spans.len() >= 3);
    let (start, _, _) = spans[spans.len() - 3];
    write_at(&last_seg, start + 9, &[0x55]);
    match Wal::open(dir.path(), tiny()) {
        Err(WalError::Corruption { segment, offset, kind }) => {
            assert_eq!((segment, offset), (last_seg, start as u64));
            assert_eq!(kind, CorruptionKind::BadChecksum);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_missing_middle_segment_is_corruption_and_repair_cuts_there() {
    let dir = closed_log(80);
    let segs = segments(dir.path());
    assert!(segs.len() >= 4);
    let last_kept = record_spans(&segs[0]).last().unwrap().2;
    std::fs::remove_file(&segs[1]).unwrap();
    match Wal::open(dir.path(), tiny()) {
        Err(WalError::Corruption { segment, kind: CorruptionKind::MissingSegment { .. }, .. }) => {
            assert_eq!(segment, segs[2])
        }
        other => panic!("expected a missing segment, got {other:?}"),
    }
    let repaired = wal::repair(dir.path(), &tiny()).unwrap().expect("there was corruption");
    assert_eq!(repaired.last_good_zxid, Some(last_kept));
    assert_eq!(repaired.removed_segments.len(), segs.len() - 2);
    let log = open(dir.path(), tiny());
    assert_eq!(zxids(&log), (1..=last_kept.0).collect::<Vec<_>>());
    append_all(&log, [last_kept.0 + 1]);
}

#[test]
fn repair_cuts_just_before_a_bad_record_and_reports_it() {
    let dir = closed_log(80);
    let segs = segments(dir.path());
    let spans = record_spans(&segs[1]);
    let (start, _, bad_zxid) = spans[2];
    write_at(&segs[1], start + 20, &[0xff]);
    assert!(wal::repair(dir.path(), &tiny()).unwrap().is_some());
    // Repair of a sound log changes nothing.
    assert_eq!(wal::repair(dir.path(), &tiny()).unwrap(), None);
    let log = open(dir.path(), tiny());
    assert_eq!(zxids(&log), (1..bad_zxid.0).collect::<Vec<_>>());
}

#[test]
fn repair_reports_the_cut() {
    let dir = closed_log(80);
    let segs = segments(dir.path());
    let (start, _, bad_zxid) = record_spans(&segs[1])[2];
    write_at(&segs[1], start + 20, &[0xff]);
    let repaired = wal::repair(dir.path(), &tiny()).unwrap().unwrap();
    assert_eq!(repaired.segment, segs[1]);
    assert_eq!(repaired.cut_at, Some(start as u64));
    assert_eq!(repaired.last_good_zxid, Some(Zxid(bad_zxid.0 - 1)));
    assert_eq!(repaired.removed_segments.len(), segs.len() - 2);
    assert_eq!(repaired.last_readable_zxid, Some(Zxid(80)), "the dropped segments read to the end");
}

/// How far the log reached is read past a damaged record of the last segment too, stepping over it by its
/// length: a server that repairs from its peers vouches for all of it in elections.
#[test]
fn the_last_readable_zxid_is_read_past_a_damaged_record() {
    let dir = closed_log(80);
    let last = segments(dir.path()).pop().unwrap();
    let spans = record_spans(&last);
    assert!(spans.len() >= 3, "{spans:?}");
    let (start, _, bad_zxid) = spans[spans.len() - 3];
    write_at(&last, start + 20, &[0xff]);
    let repaired = wal::repair(dir.path(), &tiny()).unwrap().expect("a damaged record followed by valid ones");
    assert_eq!(repaired.last_good_zxid, Some(Zxid(bad_zxid.0 - 1)));
    assert_eq!(repaired.last_readable_zxid, Some(Zxid(80)));
}

/// Writes a segment by hand: `header`, then `records`.
fn craft(dir: &Path, header: SegmentHeader, records: &[(u64, &[u8])]) -> PathBuf {
    let mut data = header.encode().to_vec();
    for &(z, p) in records {
        record::encode(&mut data, Zxid(z), p);
    }
    data.resize(4096, 0);
    let path = dir.join(wal::segment::format::file_name(header.first_zxid));
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn zxids_out_of_order_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = craft(
        dir.path(),
        SegmentHeader { seq: 1, first_zxid: Zxid(1), prev: None },
        &[(1, b"a"), (3, b"b"), (2, b"c")],
    );
    match Wal::open(dir.path(), tiny()) {
        Err(WalError::Corruption { segment, kind: CorruptionKind::ZxidOutOfOrder { zxid, previous }, .. }) => {
            assert_eq!((segment, zxid, previous), (path, Zxid(2), Zxid(3)));
        }
        other => panic!("expected zxids out of order, got {other:?}"),
    }
}

#[test]
fn a_seal_that_disagrees_with_the_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let first = craft(dir.path(), SegmentHeader { seq: 1, first_zxid: Zxid(1), prev: None }, &[(1, b"a"), (2, b"b")]);
    let end = record_spans(&first).last().unwrap().1 as u64;
    // The next segment says the first one ended one record later than it does: a record was lost.
    let seal = Seal { end: end + 17, last_zxid: Zxid(3) };
    craft(dir.path(), SegmentHeader { seq: 2, first_zxid: Zxid(4), prev: Some(seal) }, &[(4, b"d")]);
    match Wal::open(dir.path(), tiny()) {
        Err(WalError::Corruption { segment, offset, kind: CorruptionKind::SealMismatch { .. } }) => {
            assert_eq!((segment, offset), (first, end));
        }
        other => panic!("expected a seal mismatch, got {other:?}"),
    }
}

#[test]
fn a_segment_named_for_another_zxid_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = craft(dir.path(), SegmentHeader { seq: 1, first_zxid: Zxid(1), prev: None }, &[(1, b"a")]);
    std::fs::rename(&path, dir.path().join(wal::segment::format::file_name(Zxid(7)))).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), tiny()),
        Err(WalError::Corruption { kind: CorruptionKind::NameMismatch { .. }, .. })
    ));
}

#[test]
fn leftovers_of_an_interrupted_roll_are_cleaned_up() {
    let dir = closed_log(10);
    let last = *record_spans(segments(dir.path()).last().unwrap()).last().unwrap();
    // A crash during segment creation leaves a .tmp file; one just after it leaves an empty segment.
    let tmp = dir.path().join("000000000000000b.wal.tmp");
    std::fs::write(&tmp, b"partial").unwrap();
    let seal = Seal { end: last.1 as u64, last_zxid: last.2 };
    let seq = segments(dir.path()).len() as u64 + 1;
    let empty = craft(dir.path(), SegmentHeader { seq, first_zxid: Zxid(11), prev: Some(seal) }, &[]);
    // The zero-filled spare segment a closed log may leave (perhaps half done) goes too.
    let spare = usize::from(dir.path().join("spare.tmp").exists());
    let (log, recovery) = Wal::open(dir.path(), tiny()).unwrap();
    assert_eq!(recovery.removed_tmp_files, 1 + spare);
    assert!(!tmp.exists());
    assert_eq!(recovery.removed_empty_segments, vec![empty]);
    assert_eq!(zxids(&log), (1..=10).collect::<Vec<_>>());
    append_all(&log, 11..=40);
    drop(log);
    assert_eq!(zxids(&open(dir.path(), tiny())), (1..=40).collect::<Vec<_>>());
}
