//! Transactions: what the leader proposes and every replica applies, jute-encoded as in ZooKeeper's txn log.
//!
//! A txn carries the resulting state (the new version, the sequential name, the parent's new cversion, the
//! session, the time), never a delta to recompute, so that applying it is deterministic.
//!
//! ```text
//!  TxnHeader (32 bytes): long clientId | int cxid | long zxid | long time | int type
//!  then the body for `type`:
//!   create, create2    CreateTxn          { ustring path; buffer data; vector<ACL> acl; boolean ephemeral; int parentCVersion }
//!   createContainer    CreateContainerTxn { ustring path; buffer data; vector<ACL> acl; int parentCVersion }
//!   createTTL          CreateTTLTxn       { ustring path; buffer data; vector<ACL> acl; int parentCVersion; long ttl }
//!   delete, deleteContainer  DeleteTxn    { ustring path }
//!   setData            SetDataTxn         { ustring path; buffer data; int version }
//!   setACL             SetACLTxn          { ustring path; vector<ACL> acl; int version }
//!   check              CheckVersionTxn    { ustring path; int version }
//!   createSession      CreateSessionTxn   { int timeOut }
//!   closeSession       CloseSessionTxn    { vector<ustring> paths2Delete }
//!   error              ErrorTxn           { int err }
//!   multi              MultiTxn           { vector<Txn { int type; buffer data }> }
//! ```
//!
//! A znode's `data` keeps ZooKeeper's null (length -1) apart from empty ([`Data`]).

use bytes::Buf;

use crate::acl::{read_acls, write_acls, Acl};
use crate::code::op;
use crate::jute::{JuteError, JuteRead, JuteWrite};
use crate::tree::Data;

/// The header of every txn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnHeader {
    /// The session that sent the request.
    pub client_id: i64,
    /// The request's id within its session.
    pub cxid: i32,
    /// The txn's zxid.
    pub zxid: i64,
    /// The leader's wall clock when it prepared the txn, in ms.
    pub time: i64,
    /// The op code ([`crate::code::op`]).
    pub op: i32,
}

impl TxnHeader {
    /// Its encoded length.
    pub const SIZE: usize = 32;
}

/// A txn body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Txn {
    Create {
        path: String,
        data: Data,
        acl: Vec<Acl>,
        ephemeral: bool,
        parent_cversion: i32,
    },
    CreateContainer {
        path: String,
        data: Data,
        acl: Vec<Acl>,
        parent_cversion: i32,
    },
    CreateTtl {
        path: String,
        data: Data,
        acl: Vec<Acl>,
        parent_cversion: i32,
        ttl: i64,
    },
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Data,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
    CreateSession {
        timeout: i32,
    },
    CloseSession {
        paths: Vec<String>,
    },
    Error {
        err: i32,
    },
    /// The ops of a multi, each with its op code.
    Multi(Vec<(i32, Txn)>),
}

/// A whole txn: header and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    /// The header.
    pub header: TxnHeader,
    /// The body (for `header.op`).
    pub txn: Txn,
}

impl TxnRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TxnHeader::SIZE + self.txn.size_hint());
        let h = &self.header;
        out.write_long(h.client_id);
        out.write_int(h.cxid);
        out.write_long(h.zxid);
        out.write_long(h.time);
        out.write_int(h.op);
        self.txn.write(&mut out);
        out
    }

    /// Decodes a record; the whole buffer must be used.
    pub fn decode(mut buf: &[u8]) -> Result<TxnRecord, JuteError> {
        let header = TxnHeader {
            client_id: buf.read_long()?,
            cxid: buf.read_int()?,
            zxid: buf.read_long()?,
            time: buf.read_long()?,
            op: buf.read_int()?,
        };
        let txn = Txn::read(header.op, &mut buf)?;
        if buf.has_remaining() {
            return Err(JuteError::Invalid(format!("{} bytes after the txn", buf.remaining())));
        }
        Ok(TxnRecord { header, txn })
    }
}

impl Txn {
    /// For a create of any kind: the path and the parent cversion it carries.
    pub fn created(&self) -> Option<(&str, i32)> {
        match self {
            Txn::Create { path, parent_cversion, .. }
            | Txn::CreateContainer { path, parent_cversion, .. }
            | Txn::CreateTtl { path, parent_cversion, .. } => Some((path, *parent_cversion)),
            _ => None,
        }
    }

    /// How many bytes the body encodes to, for a buffer's capacity (one allocation per encoding, not one per
    /// doubling on every write's path); exact, which the round-trip tests check.
    pub fn size_hint(&self) -> usize {
        let string = |s: &str| 4 + s.len();
        let data = |d: &Data| 4 + d.as_ref().map_or(0, |d| d.len());
        let acl = |a: &[Acl]| 4 + a.iter().map(|a| 4 + string(&a.id.scheme) + string(&a.id.id)).sum::<usize>();
        match self {
            Txn::Create { path, data: d, acl: a, .. } => string(path) + data(d) + acl(a) + 1 + 4,
            Txn::CreateContainer { path, data: d, acl: a, .. } => string(path) + data(d) + acl(a) + 4,
            Txn::CreateTtl { path, data: d, acl: a, .. } => string(path) + data(d) + acl(a) + 4 + 8,
            Txn::Delete { path } => string(path),
            Txn::SetData { path, data: d, .. } => string(path) + data(d) + 4,
            Txn::SetAcl { path, acl: a, .. } => string(path) + acl(a) + 4,
            Txn::Check { path, .. } => string(path) + 4,
            Txn::CreateSession { .. } | Txn::Error { .. } => 4,
            Txn::CloseSession { paths } => 4 + paths.iter().map(|p| string(p)).sum::<usize>(),
            Txn::Multi(ops) => 4 + ops.iter().map(|(_, txn)| 4 + 4 + txn.size_hint()).sum::<usize>(),
        }
    }

    /// Encodes the body.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Txn::Create { path, data, acl, ephemeral, parent_cversion } => {
                write_node(out, path, data, acl);
                out.write_bool(*ephemeral);
                out.write_int(*parent_cversion);
            }
            Txn::CreateContainer { path, data, acl, parent_cversion } => {
                write_node(out, path, data, acl);
                out.write_int(*parent_cversion);
            }
            Txn::CreateTtl { path, data, acl, parent_cversion, ttl } => {
                write_node(out, path, data, acl);
                out.write_int(*parent_cversion);
                out.write_long(*ttl);
            }
            Txn::Delete { path } => out.write_string(path),
            Txn::SetData { path, data, version } => {
                out.write_string(path);
                out.write_nullable_buffer(data.as_deref());
                out.write_int(*version);
            }
            Txn::SetAcl { path, acl, version } => {
                out.write_string(path);
                write_acls(out, acl);
                out.write_int(*version);
            }
            Txn::Check { path, version } => {
                out.write_string(path);
                out.write_int(*version);
            }
            Txn::CreateSession { timeout } => out.write_int(*timeout),
            Txn::CloseSession { paths } => {
                out.write_len(paths.len());
                paths.iter().for_each(|p| out.write_string(p));
            }
            Txn::Error { err } => out.write_int(*err),
            Txn::Multi(ops) => {
                out.write_len(ops.len());
                for (op, txn) in ops {
                    out.write_int(*op);
                    let mut body = Vec::with_capacity(txn.size_hint());
                    txn.write(&mut body);
                    out.write_buffer(&body);
                }
            }
        }
    }

    /// Decodes the body of a txn of type `op`.
    pub fn read(op: i32, buf: &mut impl Buf) -> Result<Txn, JuteError> {
        Ok(match op {
            op::CREATE | op::CREATE2 => {
                let (path, data, acl) = read_node(buf)?;
                Txn::Create { path, data, acl, ephemeral: buf.read_bool()?, parent_cversion: buf.read_int()? }
            }
            op::CREATE_CONTAINER => {
                let (path, data, acl) = read_node(buf)?;
                Txn::CreateContainer { path, data, acl, parent_cversion: buf.read_int()? }
            }
            op::CREATE_TTL => {
                let (path, data, acl) = read_node(buf)?;
                Txn::CreateTtl { path, data, acl, parent_cversion: buf.read_int()?, ttl: buf.read_long()? }
            }
            op::DELETE | op::DELETE_CONTAINER => Txn::Delete { path: buf.read_string()? },
            op::SET_DATA => {
                Txn::SetData { path: buf.read_string()?, data: buf.read_nullable_buffer()?, version: buf.read_int()? }
            }
            op::SET_ACL => Txn::SetAcl { path: buf.read_string()?, acl: read_acls(buf)?, version: buf.read_int()? },
            op::CHECK => Txn::Check { path: buf.read_string()?, version: buf.read_int()? },
            op::CREATE_SESSION => Txn::CreateSession { timeout: buf.read_int()? },
            op::CLOSE_SESSION => {
                let count = buf.read_count(4)?;
                Txn::CloseSession { paths: (0..count).map(|_| buf.read_string()).collect::<Result<_, _>>()? }
            }
            op::ERROR => Txn::Error { err: buf.read_int()? },
            op::MULTI => {
                let count = buf.read_count(8)?;
                let mut ops = Vec::with_capacity(count);
                for _ in 0..count {
                    let sub_op = buf.read_int()?;
                    if sub_op == op::MULTI {
                        return Err(JuteError::Invalid("a multi inside a multi".into()));
                    }
                    let body = buf.read_buffer()?;
                    let mut body = &body[..];
                    ops.push((sub_op, Txn::read(sub_op, &mut body)?));
                    if body.has_remaining() {
                        return Err(JuteError::Invalid("bytes after a multi op".into()));
                    }
                }
                Txn::Multi(ops)
            }
            other => return Err(JuteError::Invalid(format!("unknown txn type {other}"))),
        })
    }
}

fn write_node(out: &mut Vec<u8>, path: &str, data: &Data, acl: &[Acl]) {
    out.write_string(path);
    out.write_nullable_buffer(data.as_deref());
    write_acls(out, acl);
}

fn read_node(buf: &mut impl Buf) -> Result<(String, Data, Vec<Acl>), JuteError> {
    Ok((buf.read_string()?, buf.read_nullable_buffer()?, read_acls(buf)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Id;
    use proptest::prelude::*;

    fn acl() -> impl Strategy<Value = Vec<Acl>> {
        proptest::collection::vec(
            (0i32..32, "[a-z]{1,6}", "[a-z:]{0,10}").prop_map(|(perms, s, i)| Acl { perms, id: Id::new(&s, &i) }),
            0..3,
        )
    }

    fn simple() -> impl Strategy<Value = (i32, Txn)> {
        let path = "/[a-z/]{0,12}";
        let data = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32).prop_map(bytes::Bytes::from));
        prop_oneof![
            (path, data.clone(), acl(), any::<bool>(), any::<i32>()).prop_map(
                |(path, data, acl, ephemeral, parent_cversion)| (
                    op::CREATE,
                    Txn::Create { path, data, acl, ephemeral, parent_cversion }
                )
            ),
            (path, data.clone(), acl(), any::<i32>()).prop_map(|(path, data, acl, parent_cversion)| (
                op::CREATE_CONTAINER,
                Txn::CreateContainer { path, data, acl, parent_cversion }
            )),
            (path, data.clone(), acl(), any::<i32>(), any::<i64>()).prop_map(
                |(path, data, acl, parent_cversion, ttl)| (
                    op::CREATE_TTL,
                    Txn::CreateTtl { path, data, acl, parent_cversion, ttl }
                )
            ),
            path.prop_map(|path| (op::DELETE, Txn::Delete { path })),
            (path, data, any::<i32>())
                .prop_map(|(path, data, version)| (op::SET_DATA, Txn::SetData { path, data, version })),
            (path, acl(), any::<i32>())
                .prop_map(|(path, acl, version)| (op::SET_ACL, Txn::SetAcl { path, acl, version })),
            (path, any::<i32>()).prop_map(|(path, version)| (op::CHECK, Txn::Check { path, version })),
            any::<i32>().prop_map(|timeout| (op::CREATE_SESSION, Txn::CreateSession { timeout })),
            proptest::collection::vec(path, 0..3).prop_map(|paths| (op::CLOSE_SESSION, Txn::CloseSession { paths })),
            any::<i32>().prop_map(|err| (op::ERROR, Txn::Error { err })),
        ]
    }

    fn any_txn() -> impl Strategy<Value = (i32, Txn)> {
        prop_oneof![4 => simple(), 1 => proptest::collection::vec(simple(), 0..4).prop_map(|ops| (op::MULTI, Txn::Multi(ops)))]
    }

    proptest! {
        #[test]
        fn txns_round_trip((op, txn) in any_txn(), client_id in any::<i64>(), cxid in any::<i32>(), zxid in any::<i64>(), time in any::<i64>()) {
            let record = TxnRecord { header: TxnHeader { client_id, cxid, zxid, time, op }, txn };
            let bytes = record.encode();
            prop_assert_eq!(bytes.len(), TxnHeader::SIZE + record.txn.size_hint(), "the size hint is exact");
            prop_assert_eq!(TxnRecord::decode(&bytes).unwrap(), record);
        }

        #[test]
        fn truncated_txns_are_errors((op, txn) in any_txn(), cut in any::<proptest::sample::Index>()) {
            let record = TxnRecord { header: TxnHeader { client_id: 1, cxid: 2, zxid: 3, time: 4, op }, txn };
            let bytes = record.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(TxnRecord::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn header_layout_matches_zookeeper() {
        let record = TxnRecord {
            header: TxnHeader { client_id: 1, cxid: 2, zxid: 3, time: 4, op: op::DELETE },
            txn: Txn::Delete { path: "/a".into() },
        };
        let bytes = record.encode();
        let mut expected =
            vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 2];
        expected.extend_from_slice(&[0, 0, 0, 2, b'/', b'a']);
        assert_eq!(bytes, expected);
    }
}
