//! `ensemble wal ...` and `ensemble snapshot ...` run as a process over a WAL and snapshots written through the
//! `wal`, `tree` and `snapshot` APIs, as a server writes them: what they print, their exit codes, and that
//! `--json` parses. The binary is `$ENSEMBLE_BIN` (the release build), else the one Cargo built for this test.

mod common;

use common::run;
use std::path::{Path, PathBuf};
use std::process::Output;

use tree::acl::open_acl_unsafe;
use tree::code::op;
use tree::tree::DataTree;
use tree::txn::{Txn, TxnHeader, TxnRecord};
use wal::{Wal, WalOptions, Zxid};

const SESSION: i64 = 0x1000_0000_0000_0042;
/// Epoch 1, so zxids read 0x1000000NN.
const EPOCH: u64 = 1 << 32;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn tiny() -> WalOptions {
    WalOptions { segment_size: 4096, max_payload: 2048, ..WalOptions::default() }
}

/// The txns of the test log, in order: a session, creates (null data among them), setData, a multi, deletes,
/// filler writes to roll segments, and the session's close.
fn txns() -> Vec<(i32, Txn)> {
    let acl = open_acl_unsafe;
    let create = |path: &str, data: Option<&str>, ephemeral| Txn::Create {
        path: path.into(),
        data: data.map(|d| bytes::Bytes::copy_from_slice(d.as_bytes())),
        acl: acl(),
        ephemeral,
        parent_cversion: 0,
    };
    let mut txns = vec![
        (op::CREATE_SESSION, Txn::CreateSession { timeout: 30000 }),
        (op::CREATE, create("/app", None, false)),
        (op::CREATE, create("/app/eph", Some("mine"), true)),
        (op::SET_DATA, Txn::SetData { path: "/app".into(), data: Some("v1".into()), version: 1 }),
        (
            op::MULTI,
            Txn::Multi(vec![
                (op::CREATE, create("/app/m1", Some("x"), false)),
                (op::SET_DATA, Txn::SetData { path: "/app/m1".into(), data: Some("y".into()), version: 1 }),
            ]),
        ),
        (op::DELETE, Txn::Delete { path: "/app/m1".into() }),
    ];
    for i in 0..60 {
        let data = format!("filler value {i} {}", "z".repeat(150));
        txns.push((op::SET_DATA, Txn::SetData { path: "/app".into(), data: Some(data.into()), version: i + 2 }));
    }
    txns.push((op::CLOSE_SESSION, Txn::CloseSession { paths: vec!["/app/eph".into()] }));
    txns
}

/// A data directory as a server lays it out (`log/` and `snapshots/`): every txn of [`txns`] in the WAL, applied
/// to a tree, with a snapshot written after the first `snap_after` of them.
fn data_dir(snap_after: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (log_dir, snap_dir) = (dir.path().join("log"), dir.path().join("snapshots"));
    std::fs::create_dir_all(&snap_dir).unwrap();
    let (wal, _) = Wal::open(&log_dir, tiny()).unwrap();
    let tree = snapshot::write::SharedTree::new(DataTree::new());
    for (i, (code, txn)) in txns().into_iter().enumerate() {
        let zxid = EPOCH + i as u64 + 1;
        let header =
            TxnHeader { client_id: SESSION, cxid: i as i32, zxid: zxid as i64, time: 1_700_000_000_000, op: code };
        let record = TxnRecord { header, txn };
        wal.append(Zxid(zxid), record.encode()).unwrap().wait().unwrap();
        tree.write().unwrap().apply(&record.header, &record.txn);
        if i + 1 == snap_after {
            snapshot::write::write_fuzzy(&snap_dir, &tree, 1024).unwrap();
        }
    }
    drop(wal);
    std::fs::remove_file(log_dir.join("LOCK")).unwrap();
    dir
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = walk(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn segments(log: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = walk(log).into_iter().filter(|p| p.extension().is_some_and(|e| e == "wal")).collect();
    segs.sort();
    segs
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

#[test]
fn wal_list_shows_each_segment_sealed_by_the_next_and_changes_nothing() {
    let dir = data_dir(10);
    let before = files(dir.path());
    let log = dir.path().join("log");
    let out = run(&["wal", "list", log.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{out:?}");
    let text = stdout(&out);
    let segs = segments(&log);
    assert!(segs.len() >= 3, "{text}");
    for seg in &segs {
        assert!(text.contains(seg.file_name().unwrap().to_str().unwrap()), "{text}");
    }
    assert_eq!(text.matches("sealed (end").count(), segs.len() - 1, "{text}");
    assert!(text.contains("last (not sealed"), "{text}");
    let total = txns().len();
    assert!(text.contains(&format!("{} records, zxids 0x100000001..0x{:x}", total, EPOCH + total as u64)), "{text}");
    // The data directory is accepted too; JSON gives the same ranges.
    let out = run(&["wal", "list", "--json", dir.path().to_str().unwrap()]);
    let doc = json(&out);
    let listed = doc["segments"].as_array().unwrap();
    assert_eq!(listed.len(), segs.len());
    assert_eq!(listed[0]["first_zxid"], "0x100000001");
    for pair in listed.windows(2) {
        assert_eq!(pair[0]["sealed"], true);
        let last = u64::from_str_radix(pair[0]["last_zxid"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let next = u64::from_str_radix(pair[1]["first_zxid"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(next, last + 1);
    }
    assert_eq!(doc["records"], total);
    assert!(doc["problem"].is_null());
    assert_eq!(files(dir.path()), before, "list changed the directory");
}

#[test]
fn wal_dump_prints_every_op_like_zookeepers_toolkit() {
    let dir = data_dir(10);
    let log = dir.path().join("log");
    let out = run(&["wal", "dump", log.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let expect = [
        "2023-11-14 22:13:20.000 UTC session 0x1000000000000042 cxid 0x0 zxid 0x100000001 createSession 30000",
        "cxid 0x1 zxid 0x100000002 create /app,null,[world:anyone:cdrwa],false,0",
        "zxid 0x100000003 create /app/eph,\"mine\",[world:anyone:cdrwa],true,0",
        "zxid 0x100000004 setData /app,\"v1\",1",
        "zxid 0x100000005 multi create:/app/m1,\"x\",[world:anyone:cdrwa],false,0;setData:/app/m1,\"y\",1",
        "zxid 0x100000006 delete /app/m1",
    ];
    for (line, want) in lines[1..].iter().zip(expect) {
        assert!(line.ends_with(want), "{line:?} should end with {want:?}");
    }
    assert!(lines.iter().any(|l| l.ends_with("closeSession [/app/eph]")), "{text}");
    assert!(text.ends_with(&format!("EOF reached after {} txns.\n", txns().len())), "{text}");
    // --from/--to and JSON lines: one object per txn, then the summary.
    let out = run(&["wal", "dump", "--json", "--from", "0x100000002", "--to", "0x100000005", log.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    let docs: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), 5);
    assert_eq!(docs[0]["op"], "create");
    assert!(docs[0]["txn"]["data"].is_null(), "null data shows as null");
    assert_eq!(docs[2]["txn"]["data"]["text"], "v1");
    assert_eq!(docs[3]["txn"]["ops"][0]["op"], "create");
    assert_eq!(docs[4]["summary"]["txns"], 4);
}

#[test]
fn wal_verify_names_the_bad_segment_and_offset_and_repair_cuts_there() {
    let dir = data_dir(10);
    let log = dir.path().join("log");
    let ok = run(&["wal", "verify", log.to_str().unwrap()]);
    assert_eq!(code(&ok), 0, "{ok:?}");
    assert!(stdout(&ok).starts_with("OK: "), "{}", stdout(&ok));
    // A flipped byte in the middle of the second (sealed) segment's records.
    let seg = segments(&log)[1].clone();
    let listed = json(&run(&["wal", "list", "--json", log.to_str().unwrap()]));
    let end = listed["segments"][1]["end"].as_u64().unwrap();
    flip(&seg, end / 2);
    let before = files(dir.path());
    let bad = run(&["wal", "verify", log.to_str().unwrap()]);
    assert_eq!(code(&bad), 1, "{bad:?}");
    let report = json(&run(&["wal", "verify", "--json", log.to_str().unwrap()]));
    let offset = report["problem"]["offset"].as_u64().unwrap();
    assert!(offset > 64 && offset <= end / 2, "{report}");
    let text = stdout(&bad);
    assert!(text.contains(&format!("CORRUPT: segment {} offset {offset}", seg.display())), "{text}");
    assert_eq!(report["problem"]["kind"], "corruption");
    assert_eq!(files(dir.path()), before, "verify changed the directory");
    // Without a terminal, repair asks for --yes and changes nothing.
    let refused = run(&["wal", "repair", log.to_str().unwrap()]);
    assert_eq!(code(&refused), 2, "{refused:?}");
    assert_eq!(files(dir.path()), before);
    let repaired = run(&["wal", "repair", "--yes", log.to_str().unwrap()]);
    assert_eq!(code(&repaired), 0, "{repaired:?}");
    let said = stdout(&repaired);
    let kept = report["repair"]["last_good_zxid"].as_str().unwrap();
    assert!(said.contains(&format!("cut {} at offset {offset}", seg.display())), "{said}");
    assert!(said.contains(&format!("up to zxid {kept}")) && said.contains("Repaired: the log now ends at"), "{said}");
    for later in &segments(&log)[2..] {
        assert!(said.contains(&format!("delete {}", later.display())), "{said}");
    }
    let ok = run(&["wal", "verify", "--json", log.to_str().unwrap()]);
    assert_eq!(code(&ok), 0, "{ok:?}");
    assert_eq!(json(&ok)["ok"], true);
    let listed = json(&run(&["wal", "list", "--json", log.to_str().unwrap()]));
    assert_eq!(listed["last_zxid"], kept);
    assert_eq!(listed["segments"].as_array().unwrap().len(), 2);
}

#[test]
fn wal_verify_tells_a_torn_tail_from_corruption() {
    let dir = data_dir(10);
    let log = dir.path().join("log");
    let listed = json(&run(&["wal", "list", "--json", log.to_str().unwrap()]));
    let last = listed["segments"].as_array().unwrap().last().unwrap().clone();
    let seg = log.join(last["file"].as_str().unwrap());
    // The last record's last bytes never reached the disk.
    let end = last["end"].as_u64().unwrap();
    flip(&seg, end - 1);
    let out = run(&["wal", "verify", log.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{out:?}");
    assert!(stdout(&out).starts_with(&format!("TORN TAIL: segment {}", seg.display())), "{}", stdout(&out));
}

#[test]
fn wal_tools_refuse_a_directory_that_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let out = run(&["wal", "list", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a WAL directory"), "{out:?}");
    let out = run(&["wal", "verify", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(code(&out), 2);
}

fn snapshot_file(dir: &Path) -> PathBuf {
    let snaps: Vec<_> = walk(&dir.join("snapshots"));
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    snaps[0].clone()
}

#[test]
fn snapshot_list_and_dump_show_the_tree_as_written() {
    let dir = data_dir(3);
    let before = files(dir.path());
    let snap = snapshot_file(dir.path());
    let out = run(&["snapshot", "list", dir.path().join("snapshots").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("snapshot.0000000100000003") && text.contains("0x100000003"), "{text}");
    let doc = json(&run(&["snapshot", "list", "--json", dir.path().to_str().unwrap()]));
    let row = &doc["snapshots"][0];
    assert_eq!((row["start_zxid"].as_str(), row["end_zxid"].as_str()), (Some("0x100000003"), Some("0x100000003")));
    assert_eq!((row["sessions"].as_u64(), row["valid"].as_bool()), (Some(1), Some(true)));
    let nodes = row["nodes"].as_u64().unwrap();

    let out = run(&["snapshot", "dump", snap.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("Sessions (id, timeout ms):\n  0x1000000000000042, 30000\n"), "{text}");
    assert!(text.contains("----\n/app\n  cZxid = 0x100000002\n"), "{text}");
    let app = text.split("----\n/app\n").nth(1).unwrap();
    assert!(app.contains("  data = null\n"), "{app}");
    let eph = text.split("----\n/app/eph\n").nth(1).unwrap();
    assert!(eph.contains("ephemeralOwner = 0x1000000000000042") && eph.contains("  data = \"mine\""), "{eph}");
    let out = run(&["snapshot", "dump", "--json", snap.to_str().unwrap()]);
    let docs: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let app = docs.iter().find(|d| d["node"]["path"] == "/app").unwrap();
    assert!(app["node"]["data"].is_null());
    assert_eq!(docs.last().unwrap()["summary"]["nodes"].as_u64(), Some(nodes));
    assert_eq!(files(dir.path()), before, "list or dump changed the directory");
}

#[test]
fn snapshot_verify_checks_the_digest_and_names_a_damaged_file() {
    let dir = data_dir(3);
    let snap = snapshot_file(dir.path());
    let out = run(&["snapshot", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(stdout(&out).contains("matches the loaded tree"), "{}", stdout(&out));
    let doc = json(&run(&["snapshot", "verify", "--json", snap.to_str().unwrap()]));
    assert_eq!(doc["ok"], true);

    // A digest that is not the tree's (written with a valid checksum, as a buggy writer would).
    let mut data = std::fs::read(&snap).unwrap();
    let len = data.len();
    data[len - 32] ^= 1;
    let crc = crc32c::crc32c(&data[..len - 8]);
    data[len - 8..len - 4].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&snap, &data).unwrap();
    let out = run(&["snapshot", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{out:?}");
    let text = stdout(&out);
    assert!(text.starts_with(&format!("BAD {}: tree digest", snap.display())), "{text}");

    // A flipped byte: the checksum.
    flip(&snap, 40);
    let out = run(&["snapshot", "verify", "--json", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{out:?}");
    let doc = json(&out);
    assert_eq!(doc["snapshots"][0]["error"], "corrupt snapshot: checksum mismatch");
    let listed = stdout(&run(&["snapshot", "list", dir.path().to_str().unwrap()]));
    assert!(listed.contains("NO: corrupt snapshot: checksum mismatch"), "{listed}");
    assert_eq!(code(&run(&["snapshot", "dump", snap.to_str().unwrap()])), 1);
}

#[test]
fn wal_verify_finds_a_sealed_segment_that_lost_its_last_record() {
    // Zeros where the last record of a sealed segment was (a lost write): the end of the records would look
    // clean but for the seal in the next segment's header.
    let dir = data_dir(10);
    let log = dir.path().join("log");
    let listed = json(&run(&["wal", "list", "--json", log.to_str().unwrap()]));
    let seg = &listed["segments"][1];
    let path = log.join(seg["file"].as_str().unwrap());
    let end = seg["end"].as_u64().unwrap();
    let last = u64::from_str_radix(seg["last_zxid"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let data = std::fs::read(&path).unwrap();
    // The last record starts where the record before it ends: find it by its zxid field (bytes 8..16).
    let start = (64..end as usize).find(|&at| data[at + 8..at + 16] == last.to_le_bytes()).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&vec![0; end as usize - start], start as u64).unwrap();
    }
    let out = run(&["wal", "verify", log.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("CORRUPT: segment {} offset {start}: sealed segment ends at", path.display())),
        "{text}"
    );
}
