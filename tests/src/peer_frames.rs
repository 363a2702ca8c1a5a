//! Hand-made frames of Ensemble's peer protocol, for the tests where a stranger dials a server's quorum port
//! (t76, t78): a forwarded create, and waiting for the server to close such a connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// A frame of Ensemble's peer protocol (`replication/src/message.rs`): `len u32 | tag 17 (Forward) | len u32 |
/// bytes`, the bytes a forwarded create (`node/src/forward.rs`: `1 | session i64 | cxid i32 | op i32 | auth
/// count i32 | body buffer`) of `path`, open ACL, persistent, from `session`.
pub fn forwarded_create(session: i64, path: &str) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend_from_slice(&i32::try_from(s.len()).expect("a short string").to_be_bytes());
        out.extend_from_slice(s);
    };
    let mut body = Vec::new();
    string(&mut body, path.as_bytes());
    string(&mut body, b"");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&31i32.to_be_bytes());
    string(&mut body, b"world");
    string(&mut body, b"anyone");
    body.extend_from_slice(&0i32.to_be_bytes());
    let mut forward = vec![1u8];
    forward.extend_from_slice(&session.to_be_bytes());
    forward.extend_from_slice(&7000i32.to_be_bytes());
    forward.extend_from_slice(&1i32.to_be_bytes());
    forward.extend_from_slice(&0i32.to_be_bytes());
    string(&mut forward, &body);
    let len = |n: usize| u32::try_from(n).expect("a short frame").to_be_bytes();
    let mut frame = len(forward.len() + 5).to_vec();
    frame.push(17);
    frame.extend_from_slice(&len(forward.len()));
    frame.extend(forward);
    frame
}

/// A dialer's id handshake claiming server `id`, then a forwarded create of `path` from `session`.
pub fn claim_and_create(id: u64, session: i64, path: &str) -> Vec<u8> {
    [id.to_be_bytes().to_vec(), forwarded_create(session, path)].concat()
}

/// Whether the server closes the connection within 10 s (after a refusal, say).
pub async fn closed(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await.is_ok()
}
