//! Request and reply records (zookeeper.jute), each framed as `int length | header | body`.
//!
//! ```text
//!  request  RequestHeader { int xid; int type } | body for `type`
//!  reply    ReplyHeader { int xid; long zxid; int err } | body for the request's type, only if err == 0
//!           (a multi always has its body; xid -1 is a WatcherEvent, -2 a ping reply, -4 an auth reply)
//! ```
//!
//! Bodies by op: create/create2/createContainer `{ustring path; buffer data; vector<ACL> acl; int flags}`,
//! createTTL `{... int flags; long ttl}`, delete `{path; int version}`, exists/getData/getChildren(2)
//! `{path; boolean watch}`, setData `{path; buffer data; int version}`, getACL/sync `{path}`, setACL
//! `{path; vector<ACL> acl; int version}`, check `{path; int version}`, auth `{int type; ustring scheme; buffer
//! auth}`, multi: ops each behind `MultiHeader {int type; boolean done; int err}`, ended by `{-1, true, -1}`.
//! A znode's `data` (in create, setData and the getData reply) keeps null (length -1) apart from empty.

use bytes::{Buf, Bytes};
use tree::acl::{read_acls, write_acls, Acl};
use tree::code::op;
use tree::jute::{JuteError, JuteRead, JuteWrite};
use tree::stat::Stat;
use tree::tree::Data;

/// Special xids.
pub mod xid {
    /// A watch notification.
    pub const WATCH_EVENT: i32 = -1;
    /// A ping.
    pub const PING: i32 = -2;
    /// An auth reply.
    pub const AUTH: i32 = -4;
    /// setWatches.
    pub const SET_WATCHES: i32 = -8;
}

/// The header of every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// The client's request id (or a special xid).
    pub xid: i32,
    /// The op code.
    pub op: i32,
}

/// The header of every reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    /// The request's xid.
    pub xid: i32,
    /// The last zxid the server has applied.
    pub zxid: i64,
    /// 0, or a [`tree::code::Code`] value.
    pub err: i32,
}

impl RequestHeader {
    /// Decodes the header.
    pub fn read(buf: &mut impl Buf) -> Result<RequestHeader, JuteError> {
        Ok(RequestHeader { xid: buf.read_int()?, op: buf.read_int()? })
    }
    /// Encodes the header.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.write_int(self.xid);
        out.write_int(self.op);
    }
}

impl ReplyHeader {
    /// Decodes the header.
    pub fn read(buf: &mut impl Buf) -> Result<ReplyHeader, JuteError> {
        Ok(ReplyHeader { xid: buf.read_int()?, zxid: buf.read_long()?, err: buf.read_int()? })
    }
    /// Encodes the header.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.write_int(self.xid);
        out.write_long(self.zxid);
        out.write_int(self.err);
    }
}

/// A request body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Request {
    /// create, create2, createContainer; `ttl` for createTTL.
    Create {
        path: String,
        data: Data,
        acl: Vec<Acl>,
        flags: i32,
        ttl: Option<i64>,
    },
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Data,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    /// getChildren and getChildren2.
    GetChildren {
        path: String,
        watch: bool,
    },
    Sync {
        path: String,
    },
    Check {
        path: String,
        version: i32,
    },
    Auth {
        auth_type: i32,
        scheme: String,
        auth: Bytes,
    },
    /// sasl (op 102): `GetSASLRequest { buffer token }`, the client's next SASL token.
    Sasl {
        token: Bytes,
    },
    /// setWatches (op 101) and, with the persistent lists, setWatches2 (op 105).
    SetWatches {
        relative_zxid: i64,
        data: Vec<String>,
        exist: Vec<String>,
        child: Vec<String>,
        /// setWatches2 only: persistent and persistent-recursive watches.
        persistent: Option<(Vec<String>, Vec<String>)>,
    },
    AddWatch {
        path: String,
        mode: i32,
    },
    /// checkWatches and removeWatches.
    WatchCheck {
        path: String,
        watch_type: i32,
    },
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    /// Ops of a multi, each with its op code.
    Multi(Vec<(i32, Request)>),
    /// ping, closeSession, whoAmI: no body.
    Empty,
}

/// A reply body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Response {
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    Stat(Stat),
    GetData {
        data: Data,
        stat: Stat,
    },
    GetAcl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    GetChildren {
        children: Vec<String>,
    },
    GetChildren2 {
        children: Vec<String>,
        stat: Stat,
    },
    Sync {
        path: String,
    },
    WhoAmI {
        clients: Vec<(String, String)>,
    },
    Ephemerals(Vec<String>),
    AllChildrenNumber(i32),
    /// `ErrorResponse { int err }`: the body ZooKeeper sends for addWatch (err 0).
    ErrorCode(i32),
    /// Per-op results of a multi: (op code, error code, result).
    Multi(Vec<(i32, i32, Response)>),
    /// A watch notification: event type, keeper state, path.
    WatcherEvent {
        event_type: i32,
        state: i32,
        path: String,
    },
    /// sasl: `SetSASLResponse { buffer token }`, the server's next challenge; null (length -1) where ZooKeeper
    /// has none (after a failure, or without a SASL server).
    Sasl {
        token: Option<Bytes>,
    },
    /// delete, check, auth, ping, closeSession, an error: no body.
    Empty,
}

impl Request {
    /// Decodes the body of a request with op code `op`.
    pub fn read(op: i32, buf: &mut impl Buf) -> Result<Request, JuteError> {
        Ok(match op {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => Request::Create {
                path: buf.read_string()?,
                data: buf.read_nullable_buffer()?,
                acl: read_acls(buf)?,
                flags: buf.read_int()?,
                ttl: if op == op::CREATE_TTL { Some(buf.read_long()?) } else { None },
            },
            op::DELETE => Request::Delete { path: buf.read_string()?, version: buf.read_int()? },
            op::EXISTS => Request::Exists { path: buf.read_string()?, watch: buf.read_bool()? },
            op::GET_DATA => Request::GetData { path: buf.read_string()?, watch: buf.read_bool()? },
            op::SET_DATA => Request::SetData {
                path: buf.read_string()?,
                data: buf.read_nullable_buffer()?,
                version: buf.read_int()?,
            },
            op::GET_ACL => Request::GetAcl { path: buf.read_string()? },
            op::SET_ACL => Request::SetAcl { path: buf.read_string()?, acl: read_acls(buf)?, version: buf.read_int()? },
            op::GET_CHILDREN | op::GET_CHILDREN2 => {
                Request::GetChildren { path: buf.read_string()?, watch: buf.read_bool()? }
            }
            op::SYNC => Request::Sync { path: buf.read_string()? },
            op::CHECK => Request::Check { path: buf.read_string()?, version: buf.read_int()? },
            op::AUTH => {
                Request::Auth { auth_type: buf.read_int()?, scheme: buf.read_string()?, auth: buf.read_buffer()? }
            }
            op::SASL => Request::Sasl { token: buf.read_buffer()? },
            op::MULTI | op::MULTI_READ => {
                let mut ops = Vec::new();
                loop {
                    let (sub, done, _err) = (buf.read_int()?, buf.read_bool()?, buf.read_int()?);
                    if done {
                        break;
                    }
                    if sub == op::MULTI || sub == op::MULTI_READ {
                        return Err(JuteError::Invalid("a multi inside a multi".into()));
                    }
                    ops.push((sub, Request::read(sub, buf)?));
                }
                Request::Multi(ops)
            }
            op::SET_WATCHES | op::SET_WATCHES2 => Request::SetWatches {
                relative_zxid: buf.read_long()?,
                data: read_strings(buf)?,
                exist: read_strings(buf)?,
                child: read_strings(buf)?,
                persistent: if op == op::SET_WATCHES2 { Some((read_strings(buf)?, read_strings(buf)?)) } else { None },
            },
            op::ADD_WATCH => Request::AddWatch { path: buf.read_string()?, mode: buf.read_int()? },
            op::CHECK_WATCHES | op::REMOVE_WATCHES => {
                Request::WatchCheck { path: buf.read_string()?, watch_type: buf.read_int()? }
            }
            op::GET_EPHEMERALS => Request::GetEphemerals { prefix: buf.read_string()? },
            op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber { path: buf.read_string()? },
            op::PING | op::CLOSE_SESSION | op::WHO_AM_I => Request::Empty,
            other => return Err(JuteError::Invalid(format!("unknown op {other}"))),
        })
    }

    /// Encodes the body.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Request::Create { path, data, acl, flags, ttl } => {
                out.write_string(path);
                out.write_nullable_buffer(data.as_deref());
                write_acls(out, acl);
                out.write_int(*flags);
                if let Some(ttl) = ttl {
                    out.write_long(*ttl);
                }
            }
            Request::Delete { path, version } | Request::Check { path, version } => {
                out.write_string(path);
                out.write_int(*version);
            }
            Request::Exists { path, watch }
            | Request::GetData { path, watch }
            | Request::GetChildren { path, watch } => {
                out.write_string(path);
                out.write_bool(*watch);
            }
            Request::SetData { path, data, version } => {
                out.write_string(path);
                out.write_nullable_buffer(data.as_deref());
                out.write_int(*version);
            }
            Request::GetAcl { path }
            | Request::Sync { path }
            | Request::GetEphemerals { prefix: path }
            | Request::GetAllChildrenNumber { path } => out.write_string(path),
            Request::SetWatches { relative_zxid, data, exist, child, persistent } => {
                out.write_long(*relative_zxid);
                write_strings(out, data);
                write_strings(out, exist);
                write_strings(out, child);
                if let Some((persistent, recursive)) = persistent {
                    write_strings(out, persistent);
                    write_strings(out, recursive);
                }
            }
            Request::AddWatch { path, mode: n } | Request::WatchCheck { path, watch_type: n } => {
                out.write_string(path);
                out.write_int(*n);
            }
            Request::SetAcl { path, acl, version } => {
                out.write_string(path);
                write_acls(out, acl);
                out.write_int(*version);
            }
            Request::Auth { auth_type, scheme, auth } => {
                out.write_int(*auth_type);
                out.write_string(scheme);
                out.write_buffer(auth);
            }
            Request::Sasl { token } => out.write_buffer(token),
            Request::Multi(ops) => {
                for (sub, request) in ops {
                    write_multi_header(out, *sub, false, -1);
                    request.write(out);
                }
                write_multi_header(out, -1, true, -1);
            }
            Request::Empty => {}
        }
    }
}

fn write_multi_header(out: &mut Vec<u8>, op: i32, done: bool, err: i32) {
    out.write_int(op);
    out.write_bool(done);
    out.write_int(err);
}

impl Response {
    /// How many bytes the body encodes to, for a buffer's starting capacity (one allocation per reply on every
    /// request's path): exact for the replies of reads and writes, which a test checks; a guess for the rest.
    pub fn size_hint(&self) -> usize {
        const STAT: usize = 68;
        let string = |s: &str| 4 + s.len();
        let strings = |v: &[String]| 4 + v.iter().map(|s| string(s)).sum::<usize>();
        match self {
            Response::Create { path } | Response::Sync { path } => string(path),
            Response::Create2 { path, .. } => string(path) + STAT,
            Response::Stat(_) => STAT,
            Response::GetData { data, .. } => 4 + data.as_ref().map_or(0, |d| d.len()) + STAT,
            Response::GetChildren { children } | Response::Ephemerals(children) => strings(children),
            Response::GetChildren2 { children, .. } => strings(children) + STAT,
            Response::WatcherEvent { path, .. } => 4 + 4 + string(path),
            Response::AllChildrenNumber(_) | Response::ErrorCode(_) => 4,
            Response::Empty => 0,
            _ => 64,
        }
    }

    /// Decodes the body of a successful reply to a request with op code `op`.
    pub fn read(op: i32, buf: &mut impl Buf) -> Result<Response, JuteError> {
        Ok(match op {
            op::CREATE => Response::Create { path: buf.read_string()? },
            op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                Response::Create2 { path: buf.read_string()?, stat: Stat::read(buf)? }
            }
            op::EXISTS | op::SET_DATA | op::SET_ACL => Response::Stat(Stat::read(buf)?),
            op::GET_DATA => Response::GetData { data: buf.read_nullable_buffer()?, stat: Stat::read(buf)? },
            op::GET_ACL => Response::GetAcl { acl: read_acls(buf)?, stat: Stat::read(buf)? },
            op::GET_CHILDREN => Response::GetChildren { children: read_strings(buf)? },
            op::GET_CHILDREN2 => Response::GetChildren2 { children: read_strings(buf)?, stat: Stat::read(buf)? },
            op::SYNC => Response::Sync { path: buf.read_string()? },
            op::WHO_AM_I => {
                let count = buf.read_count(8)?;
                let clients = (0..count)
                    .map(|_| Ok((buf.read_string()?, buf.read_string()?)))
                    .collect::<Result<_, JuteError>>()?;
                Response::WhoAmI { clients }
            }
            op::MULTI | op::MULTI_READ => {
                let mut results = Vec::new();
                loop {
                    let (sub, done, err) = (buf.read_int()?, buf.read_bool()?, buf.read_int()?);
                    if done {
                        break;
                    }
                    let result = match sub {
                        op::ERROR => {
                            let code = buf.read_int()?;
                            results.push((sub, code, Response::Empty));
                            continue;
                        }
                        op::DELETE | op::CHECK => Response::Empty,
                        other => Response::read(other, buf)?,
                    };
                    results.push((sub, err, result));
                }
                Response::Multi(results)
            }
            op::SASL => Response::Sasl { token: buf.read_nullable_buffer()? },
            op::GET_EPHEMERALS => Response::Ephemerals(read_strings(buf)?),
            op::GET_ALL_CHILDREN_NUMBER => Response::AllChildrenNumber(buf.read_int()?),
            op::ADD_WATCH => Response::ErrorCode(buf.read_int()?),
            op::DELETE
            | op::CHECK
            | op::AUTH
            | op::PING
            | op::CLOSE_SESSION
            | op::SET_WATCHES
            | op::SET_WATCHES2
            | op::CHECK_WATCHES
            | op::REMOVE_WATCHES => Response::Empty,
            other => return Err(JuteError::Invalid(format!("no reply body known for op {other}"))),
        })
    }

    /// Decodes a watch notification.
    pub fn read_watcher_event(buf: &mut impl Buf) -> Result<Response, JuteError> {
        Ok(Response::WatcherEvent { event_type: buf.read_int()?, state: buf.read_int()?, path: buf.read_string()? })
    }

    /// Encodes the body.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Response::Create { path } | Response::Sync { path } => out.write_string(path),
            Response::Create2 { path, stat } => {
                out.write_string(path);
                stat.write(out);
            }
            Response::Stat(stat) => stat.write(out),
            Response::GetData { data, stat } => {
                out.write_nullable_buffer(data.as_deref());
                stat.write(out);
            }
            Response::GetAcl { acl, stat } => {
                write_acls(out, acl);
                stat.write(out);
            }
            Response::GetChildren { children } | Response::Ephemerals(children) => write_strings(out, children),
            Response::AllChildrenNumber(n) | Response::ErrorCode(n) => out.write_int(*n),
            Response::GetChildren2 { children, stat } => {
                write_strings(out, children);
                stat.write(out);
            }
            Response::WhoAmI { clients } => {
                out.write_len(clients.len());
                for (scheme, user) in clients {
                    out.write_string(scheme);
                    out.write_string(user);
                }
            }
            Response::Multi(results) => {
                for (sub, err, result) in results {
                    if *sub == op::ERROR {
                        write_multi_header(out, *sub, false, *err);
                        out.write_int(*err);
                    } else {
                        write_multi_header(out, *sub, false, *err);
                        result.write(out);
                    }
                }
                write_multi_header(out, -1, true, -1);
            }
            Response::Sasl { token } => out.write_nullable_buffer(token.as_deref()),
            Response::WatcherEvent { event_type, state, path } => {
                out.write_int(*event_type);
                out.write_int(*state);
                out.write_string(path);
            }
            Response::Empty => {}
        }
    }
}

fn read_strings(buf: &mut impl Buf) -> Result<Vec<String>, JuteError> {
    let count = buf.read_count(4)?;
    (0..count).map(|_| buf.read_string()).collect()
}

fn write_strings(out: &mut Vec<u8>, strings: &[String]) {
    out.write_len(strings.len());
    for s in strings {
        out.write_string(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// kazoo's `SASL(b"abc")` request body and ZooKeeper's `SetSASLResponse` (a token, and null after a
    /// failure), byte for byte.
    #[test]
    fn sasl_records_are_zookeepers() {
        let body: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c'];
        let request = Request::read(op::SASL, &mut &body[..]).unwrap();
        assert_eq!(request, Request::Sasl { token: Bytes::from_static(b"abc") });
        let mut out = Vec::new();
        request.write(&mut out);
        assert_eq!(out, body);
        let empty: &[u8] = &[0, 0, 0, 0];
        assert_eq!(Request::read(op::SASL, &mut &empty[..]).unwrap(), Request::Sasl { token: Bytes::new() });
        let mut out = Vec::new();
        Response::Sasl { token: None }.write(&mut out);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff]);
        assert_eq!(Response::read(op::SASL, &mut &out[..]).unwrap(), Response::Sasl { token: None });
        let mut out = Vec::new();
        Response::Sasl { token: Some(Bytes::from_static(b"rspauth=x")) }.write(&mut out);
        assert_eq!(&out[..4], &[0, 0, 0, 9]);
        assert!(Request::read(op::SASL, &mut &[0, 0, 0, 9, 1][..]).is_err(), "a length past the frame");
    }

    fn strings() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("/[a-z]{0,8}", 0..4)
    }

    fn request() -> impl Strategy<Value = (i32, Request)> {
        let path = "/[a-z/]{0,10}";
        prop_oneof![
            (any::<i64>(), strings(), strings(), strings()).prop_map(|(z, d, e, c)| (
                op::SET_WATCHES,
                Request::SetWatches { relative_zxid: z, data: d, exist: e, child: c, persistent: None }
            )),
            (any::<i64>(), strings(), strings(), strings(), strings(), strings()).prop_map(|(z, d, e, c, p, r)| (
                op::SET_WATCHES2,
                Request::SetWatches { relative_zxid: z, data: d, exist: e, child: c, persistent: Some((p, r)) }
            )),
            (path, any::<i32>()).prop_map(|(path, mode)| (op::ADD_WATCH, Request::AddWatch { path, mode })),
            (path, any::<i32>())
                .prop_map(|(path, watch_type)| (op::REMOVE_WATCHES, Request::WatchCheck { path, watch_type })),
            (path, any::<i32>())
                .prop_map(|(path, watch_type)| (op::CHECK_WATCHES, Request::WatchCheck { path, watch_type })),
            path.prop_map(|prefix| (op::GET_EPHEMERALS, Request::GetEphemerals { prefix })),
            path.prop_map(|path| (op::GET_ALL_CHILDREN_NUMBER, Request::GetAllChildrenNumber { path })),
            (path, data(), any::<i32>())
                .prop_map(|(path, data, version)| (op::SET_DATA, Request::SetData { path, data, version })),
            (path, data(), any::<i64>()).prop_map(|(path, data, ttl)| (
                op::CREATE_TTL,
                Request::Create { path, data, acl: tree::acl::open_acl_unsafe(), flags: 5, ttl: Some(ttl) }
            )),
            proptest::collection::vec((path, any::<bool>()), 0..3).prop_map(|ops| (
                op::MULTI_READ,
                Request::Multi(
                    ops.into_iter().map(|(path, watch)| (op::GET_DATA, Request::GetData { path, watch })).collect()
                )
            )),
        ]
    }

    /// Null data (`None`), empty data and some bytes.
    fn data() -> impl Strategy<Value = Data> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from))
    }

    proptest! {
        #[test]
        fn requests_the_captures_lack_round_trip((op, request) in request()) {
            let mut out = Vec::new();
            request.write(&mut out);
            let mut buf = &out[..];
            prop_assert_eq!(Request::read(op, &mut buf).unwrap(), request);
            prop_assert_eq!(buf.remaining(), 0);
        }

        #[test]
        fn replies_the_captures_lack_round_trip(names in strings(), n in any::<i32>(), data in data()) {
            let cases = [
                (op::GET_DATA, Response::GetData { data, stat: Stat::default() }),
                (op::GET_EPHEMERALS, Response::Ephemerals(names.clone())),
                (op::GET_ALL_CHILDREN_NUMBER, Response::AllChildrenNumber(n)),
                (op::ADD_WATCH, Response::ErrorCode(n)),
            ];
            for (op, response) in cases {
                let mut out = Vec::new();
                response.write(&mut out);
                prop_assert_eq!(Response::read(op, &mut &out[..]).unwrap(), response);
            }
        }

        #[test]
        fn the_size_hint_of_read_and_write_replies_is_exact(path in "/[a-z]{0,30}", names in strings(), data in data()) {
            let stat = Stat::default();
            let cases = [
                Response::Create { path: path.clone() },
                Response::Create2 { path: path.clone(), stat },
                Response::Sync { path: path.clone() },
                Response::Stat(stat),
                Response::GetData { data, stat },
                Response::GetChildren { children: names.clone() },
                Response::GetChildren2 { children: names.clone(), stat },
                Response::Ephemerals(names),
                Response::WatcherEvent { event_type: 1, state: 3, path },
                Response::AllChildrenNumber(7),
                Response::ErrorCode(0),
                Response::Empty,
            ];
            for response in cases {
                let mut out = Vec::new();
                response.write(&mut out);
                prop_assert_eq!(out.len(), response.size_hint(), "{:?}", response);
            }
        }
    }

    #[test]
    fn null_data_is_length_minus_one_and_empty_data_length_zero() {
        let reply = |data: Data| {
            let mut out = Vec::new();
            Response::GetData { data, stat: Stat::default() }.write(&mut out);
            out[..4].to_vec()
        };
        assert_eq!(reply(None), [0xff; 4]);
        assert_eq!(reply(Some(Bytes::new())), [0; 4]);
        let set = |data: Data| {
            let mut out = Vec::new();
            Request::SetData { path: "/a".into(), data, version: -1 }.write(&mut out);
            Request::read(op::SET_DATA, &mut &out[..]).unwrap()
        };
        assert!(matches!(set(None), Request::SetData { data: None, .. }));
        assert!(matches!(set(Some(Bytes::new())), Request::SetData { data: Some(d), .. } if d.is_empty()));
    }

    #[test]
    fn set_watches2_layout() {
        let request = Request::SetWatches {
            relative_zxid: 7,
            data: vec!["/a".into()],
            exist: vec![],
            child: vec![],
            persistent: Some((vec![], vec!["/r".into()])),
        };
        let mut out = Vec::new();
        request.write(&mut out);
        let expected: Vec<u8> = [
            &7i64.to_be_bytes()[..],
            &1i32.to_be_bytes(),
            &2i32.to_be_bytes(),
            b"/a",
            &0i32.to_be_bytes(),
            &0i32.to_be_bytes(),
            &0i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            &2i32.to_be_bytes(),
            b"/r",
        ]
        .concat();
        assert_eq!(out, expected);
    }
}
