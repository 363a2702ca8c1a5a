//! Reply and event frames, and the reply a client gets for a write once its txn is applied.
//!
//! ```text
//!  reply  ReplyHeader { int xid | long zxid | int err } then, when err is 0, the op's response record
//!  event  ReplyHeader { xid -1 | zxid -1 | err 0 } then WatcherEvent { int type | int state | ustring path }
//! ```
//! (`zookeeper.jute`; the 4-byte length prefix is the framing codec's job.)

use bytes::Bytes;
use proto::records::{ReplyHeader, Response};
use tree::code::{op, Code};
use tree::tree::Applied;
use tree::txn::Txn;

use crate::watch::SYNC_CONNECTED;

/// The xid of watch notifications.
pub const NOTIFICATION_XID: i32 = -1;

/// A reply frame: the header, then the body when `err` is 0.
pub fn frame(xid: i32, zxid: i64, err: Code, body: &Response) -> Bytes {
    // The header is 16 bytes.
    let mut out = Vec::with_capacity(16 + if err == Code::Ok { body.size_hint() } else { 0 });
    ReplyHeader { xid, zxid, err: err.value() }.write(&mut out);
    if err == Code::Ok {
        body.write(&mut out);
    }
    Bytes::from(out)
}

/// The reply to a `sasl` packet: ZooKeeper sends its `SetSASLResponse` whatever the error code (a null token
/// with AUTHFAILED), unlike other replies, whose body goes with OK only.
pub fn sasl(xid: i32, err: Code, token: Option<Vec<u8>>) -> Bytes {
    let mut out = Vec::with_capacity(32 + token.as_ref().map_or(0, Vec::len));
    ReplyHeader { xid, zxid: 0, err: err.value() }.write(&mut out);
    Response::Sasl { token: token.map(Bytes::from) }.write(&mut out);
    Bytes::from(out)
}

/// A watch event frame.
pub fn event(event_type: i32, path: &str) -> Bytes {
    frame(
        NOTIFICATION_XID,
        -1,
        Code::Ok,
        &Response::WatcherEvent { event_type, state: SYNC_CONNECTED, path: path.to_owned() },
    )
}

/// The outcome code and response of a write, from its txn and what applying it did. `request_op` is the op
/// the client sent, which the txn does not always keep (a failed check becomes an error txn).
pub fn write_reply(request_op: i32, txn: &Txn, applied: &Applied) -> (Code, Response) {
    if request_op == op::MULTI {
        // A multi's header always says OK; each op's result says how it went (ZooKeeper's
        // FinalRequestProcessor does not raise a multi's error).
        // A failed multi applies nothing: every op gets an error result (0 before the failing op, its code,
        // then RUNTIMEINCONSISTENCY), never a success.
        let results = match txn {
            Txn::Multi(ops) => {
                let failed = ops.iter().any(|(sub, _)| *sub == op::ERROR);
                ops.iter()
                    .zip(&applied.multi)
                    .map(|((sub, sub_txn), sub_applied)| match sub_applied.code() {
                        Code::Ok if !failed => (*sub, 0, single(*sub, sub_txn, sub_applied)),
                        code => (op::ERROR, code.value(), Response::Empty),
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        return (Code::Ok, Response::Multi(results));
    }
    match applied.code() {
        Code::Ok => (Code::Ok, single(request_op, txn, applied)),
        code => (code, Response::Empty),
    }
}

fn single(op_code: i32, txn: &Txn, applied: &Applied) -> Response {
    let path = || applied.path.clone().or_else(|| txn.created().map(|(p, _)| p.to_owned())).unwrap_or_default();
    match op_code {
        op::CREATE => Response::Create { path: path() },
        op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            Response::Create2 { path: path(), stat: applied.stat.unwrap_or_default() }
        }
        op::SET_DATA | op::SET_ACL => Response::Stat(applied.stat.unwrap_or_default()),
        _ => Response::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::records::ReplyHeader;

    #[test]
    fn an_error_reply_has_no_body() {
        let f = frame(7, 9, Code::NoNode, &Response::Create { path: "/x".into() });
        assert_eq!(f.len(), 16);
        let mut b = &f[..];
        assert_eq!(ReplyHeader::read(&mut b).unwrap(), ReplyHeader { xid: 7, zxid: 9, err: -101 });
    }

    #[test]
    fn a_failed_multi_reports_no_op_as_a_success() {
        let create = Txn::Create {
            path: "/a".into(),
            data: Some(Bytes::new()),
            acl: Vec::new(),
            ephemeral: false,
            parent_cversion: -1,
        };
        let txn = Txn::Multi(vec![(op::CREATE, create), (op::ERROR, Txn::Error { err: -103 })]);
        let applied = Applied {
            err: Some(Code::BadVersion),
            multi: vec![Applied::default(), Applied { err: Some(Code::BadVersion), ..Applied::default() }],
            ..Applied::default()
        };
        let (_, response) = write_reply(op::MULTI, &txn, &applied);
        assert_eq!(
            response,
            Response::Multi(vec![(op::ERROR, 0, Response::Empty), (op::ERROR, -103, Response::Empty)])
        );
    }

    #[test]
    fn a_failed_multi_reports_per_op_codes_under_an_ok_header() {
        let txn = Txn::Multi(vec![(op::ERROR, Txn::Error { err: 0 }), (op::ERROR, Txn::Error { err: -101 })]);
        let applied = Applied {
            err: Some(Code::NoNode),
            multi: vec![Applied::default(), Applied { err: Some(Code::NoNode), ..Applied::default() }],
            ..Applied::default()
        };
        let (code, response) = write_reply(op::MULTI, &txn, &applied);
        assert_eq!(code, Code::Ok);
        assert_eq!(
            response,
            Response::Multi(vec![(op::ERROR, 0, Response::Empty), (op::ERROR, -101, Response::Empty)])
        );
    }
}
