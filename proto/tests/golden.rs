//! Every frame captured between zkCli / kazoo and Apache ZooKeeper 3.8 (`testdata/zookeeper-3.8/`) decodes,
//! uses all its bytes, and encodes back to exactly the same bytes.

use std::collections::BTreeMap;

use bytes::Buf;
use proto::connect::{ConnectRequest, ConnectResponse};
use proto::records::{xid, ReplyHeader, Request, RequestHeader, Response};
use tree::code::op;

struct Frame {
    conn: u32,
    to_server: bool,
    bytes: Vec<u8>,
}

fn frames(file: &str) -> Vec<Frame> {
    let path = format!("{}/../testdata/zookeeper-3.8/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let conn = parts.next().unwrap().parse().unwrap();
            let to_server = parts.next().unwrap() == "c2s";
            let hex = parts.next().unwrap();
            let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            Frame { conn, to_server, bytes }
        })
        .collect()
}

/// Frames a record the way the wire does: length prefix, then the bytes.
fn framed(record: Vec<u8>) -> Vec<u8> {
    let mut out = (record.len() as u32).to_be_bytes().to_vec();
    out.extend(record);
    out
}

/// Checks one capture; returns how many request and reply frames were checked.
fn check(file: &str) -> (usize, usize, BTreeMap<i32, usize>) {
    let (mut requests, mut replies, mut ops) = (0, 0, BTreeMap::new());
    let mut by_conn: BTreeMap<u32, Vec<&Frame>> = BTreeMap::new();
    let all = frames(file);
    for f in &all {
        by_conn.entry(f.conn).or_default().push(f);
    }
    for (conn, mut frames) in by_conn {
        // The capture's two directions were written by two threads: put each request before its reply.
        frames.sort_by_key(|f| !f.to_server);
        let mut ops_by_xid: BTreeMap<i32, i32> = BTreeMap::new();
        let (mut connected_in, mut connected_out) = (false, false);
        for f in frames {
            let mut body = &f.bytes[4..];
            let mut out = Vec::new();
            let what = format!("{file} connection {conn} frame {:02x?}", &f.bytes[..f.bytes.len().min(24)]);
            if f.to_server && !connected_in {
                connected_in = true;
                ConnectRequest::read(&mut body).expect(&what).write(&mut out);
            } else if !f.to_server && !connected_out {
                connected_out = true;
                ConnectResponse::read(&mut body).expect(&what).write(&mut out);
            } else if f.to_server {
                let header = RequestHeader::read(&mut body).expect(&what);
                let request = Request::read(header.op, &mut body).expect(&what);
                ops_by_xid.insert(header.xid, header.op);
                *ops.entry(header.op).or_default() += 1;
                header.write(&mut out);
                request.write(&mut out);
                requests += 1;
            } else {
                let header = ReplyHeader::read(&mut body).expect(&what);
                let response = match header.xid {
                    xid::WATCH_EVENT => Response::read_watcher_event(&mut body).expect(&what),
                    xid::PING | xid::AUTH => Response::Empty,
                    x => {
                        let op = ops_by_xid[&x];
                        if header.err != 0 && op != op::MULTI {
                            Response::Empty
                        } else {
                            Response::read(op, &mut body).expect(&what)
                        }
                    }
                };
                header.write(&mut out);
                response.write(&mut out);
                replies += 1;
            }
            assert_eq!(body.remaining(), 0, "{what}: bytes left over");
            assert_eq!(framed(out), f.bytes, "{what}: re-encoding differs");
        }
    }
    (requests, replies, ops)
}

#[test]
fn zkcli_frames_round_trip_byte_for_byte() {
    let (requests, replies, ops) = check("zkcli.txt");
    assert!(requests >= 13 && replies >= 13, "{requests} requests, {replies} replies");
    for op in [
        op::CREATE,
        op::GET_DATA,
        op::SET_DATA,
        op::EXISTS,
        op::GET_CHILDREN2,
        op::GET_ACL,
        op::SET_ACL,
        op::DELETE,
        op::SYNC,
        op::WHO_AM_I,
    ] {
        assert!(ops.contains_key(&op), "zkCli capture has no op {op}: {ops:?}");
    }
}

#[test]
fn zkcli_frames_of_the_newer_ops_round_trip_byte_for_byte() {
    let (requests, replies, ops) = check("zkcli-extended.txt");
    assert!(requests >= 10 && replies >= 10, "{requests} requests, {replies} replies");
    for op in [
        op::CREATE_CONTAINER,
        op::CREATE_TTL,
        op::ADD_WATCH,
        op::GET_EPHEMERALS,
        op::GET_ALL_CHILDREN_NUMBER,
        op::REMOVE_WATCHES,
    ] {
        assert!(ops.contains_key(&op), "the capture has no op {op}: {ops:?}");
    }
}

#[test]
fn kazoo_frames_round_trip_byte_for_byte() {
    let (requests, replies, ops) = check("kazoo.txt");
    assert!(requests >= 15 && replies >= 15, "{requests} requests, {replies} replies");
    for op in [op::MULTI, op::AUTH, op::GET_CHILDREN, op::EXISTS, op::CLOSE_SESSION] {
        assert!(ops.contains_key(&op), "kazoo capture has no op {op}: {ops:?}");
    }
}

#[test]
fn the_connect_handshake_carries_what_zookeeper_sent() {
    let f = &frames("kazoo.txt")[1];
    let response = ConnectResponse::read(&mut &f.bytes[4..]).unwrap();
    assert_eq!(response.timeout, 10_000, "kazoo asked for 10 s and ZooKeeper granted it");
    assert_eq!(response.passwd.len(), 16);
    assert_ne!(response.session_id, 0);
}

#[test]
fn every_captured_frame_cut_short_is_an_error_never_a_panic() {
    for file in ["zkcli.txt", "zkcli-extended.txt", "kazoo.txt"] {
        let mut connected = std::collections::BTreeSet::new();
        // The first frame a client sends is its ConnectRequest, not a request.
        let requests: Vec<Frame> =
            frames(file).into_iter().filter(|f| f.to_server && !connected.insert(f.conn)).collect();
        for f in requests.iter().filter(|f| f.bytes.len() > 12) {
            let op = i32::from_be_bytes(f.bytes[8..12].try_into().unwrap());
            for cut in 12..f.bytes.len() {
                let mut body = &f.bytes[12..cut];
                let decoded = Request::read(op, &mut body);
                assert!(
                    decoded.is_err() || body.remaining() == 0,
                    "{file}: op {op} cut at {cut} decoded with bytes left"
                );
                if cut < f.bytes.len() {
                    // A strict prefix never decodes to the whole request.
                    let whole = Request::read(op, &mut &f.bytes[12..]).unwrap();
                    assert!(
                        decoded.as_ref().ok() != Some(&whole) || op == op::MULTI,
                        "{file}: op {op} cut at {cut} decoded whole"
                    );
                }
            }
        }
    }
}
