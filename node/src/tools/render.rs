//! How the tools show txns, data and ACLs: text lines in the manner of ZooKeeper's `TxnLogToolkit`, and JSON
//! values for `--json`.
//!
//! Text data is quoted (`"v1"`, escaped as in JSON), other data is `#` and hex (jute's CSV form), null data is
//! `null`: unlike ZooKeeper's toolkit, which prints null, empty and binary data alike as raw text. ACLs are
//! `scheme:id:perms`, as zkCli's `setAcl` takes them.

use serde_json::{json, Value};
use tree::acl::{perms, Acl};
use tree::code::op;
use tree::txn::{Txn, TxnRecord};

/// ZooKeeper's name of an op code (`Request.op2String`).
pub fn op_name(code: i32) -> String {
    let name = match code {
        op::NOTIFICATION => "notification",
        op::CREATE => "create",
        op::DELETE => "delete",
        op::EXISTS => "exists",
        op::GET_DATA => "getData",
        op::SET_DATA => "setData",
        op::GET_ACL => "getACL",
        op::SET_ACL => "setACL",
        op::GET_CHILDREN => "getChildren",
        op::SYNC => "sync",
        op::PING => "ping",
        op::GET_CHILDREN2 => "getChildren2",
        op::CHECK => "check",
        op::MULTI => "multi",
        op::CREATE2 => "create2",
        op::RECONFIG => "reconfig",
        op::CHECK_WATCHES => "checkWatches",
        op::REMOVE_WATCHES => "removeWatches",
        op::CREATE_CONTAINER => "createContainer",
        op::DELETE_CONTAINER => "deleteContainer",
        op::CREATE_TTL => "createTTL",
        op::MULTI_READ => "multiRead",
        op::AUTH => "auth",
        op::SET_WATCHES => "setWatches",
        op::SASL => "sasl",
        op::GET_EPHEMERALS => "getEphemerals",
        op::GET_ALL_CHILDREN_NUMBER => "getAllChildrenNumber",
        op::SET_WATCHES2 => "setWatches2",
        op::ADD_WATCH => "addWatch",
        op::WHO_AM_I => "whoAmI",
        op::CREATE_SESSION => "createSession",
        op::CLOSE_SESSION => "closeSession",
        op::ERROR => "error",
        other => return format!("unknown {other}"),
    };
    name.to_owned()
}

/// Data for a text line: quoted text when it is printable UTF-8, else `#` and hex; `null` for null data.
pub fn data_text(data: Option<&[u8]>) -> String {
    match data {
        None => "null".into(),
        Some(bytes) => match printable(bytes) {
            Some(text) => Value::String(text.into()).to_string(),
            None => format!("#{}", hex_bytes(bytes)),
        },
    }
}

/// Data as JSON: `{"text": ...}` when printable UTF-8, else `{"hex": ...}`; `null` for null data.
pub fn data_json(data: Option<&[u8]>) -> Value {
    match data {
        None => Value::Null,
        Some(bytes) => match printable(bytes) {
            Some(text) => json!({ "text": text }),
            None => json!({ "hex": hex_bytes(bytes) }),
        },
    }
}

fn printable(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.chars().all(|c| !c.is_control() || c == '\n' || c == '\t').then_some(text)
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Permission bits as zkCli writes them (`cdrwa`).
pub fn perms_text(bits: i32) -> String {
    [(perms::CREATE, 'c'), (perms::DELETE, 'd'), (perms::READ, 'r'), (perms::WRITE, 'w'), (perms::ADMIN, 'a')]
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, c)| c)
        .collect()
}

/// An ACL list: `[world:anyone:cdrwa,digest:bob:x=:r]`.
pub fn acl_text(acl: &[Acl]) -> String {
    let entries: Vec<String> =
        acl.iter().map(|a| format!("{}:{}:{}", a.id.scheme, a.id.id, perms_text(a.perms))).collect();
    format!("[{}]", entries.join(","))
}

/// An ACL list as JSON.
pub fn acl_json(acl: &[Acl]) -> Value {
    acl.iter().map(|a| json!({ "scheme": a.id.scheme, "id": a.id.id, "perms": perms_text(a.perms) })).collect()
}

/// A time in ms since the epoch, in UTC (`2024-05-01 12:34:56.789 UTC`).
pub fn time_text(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// One txn as a `TxnLogToolkit` line: `<time> session 0x.. cxid 0x.. zxid 0x.. <op> <fields>`. `zxid` is the
/// WAL record's (the header's may be unset: the leader prepares a txn before it gives the zxid).
pub fn txn_line(record: &TxnRecord, zxid: u64) -> String {
    let h = &record.header;
    format!(
        "{} session 0x{:x} cxid 0x{:x} zxid 0x{zxid:x} {} {}",
        time_text(h.time),
        h.client_id,
        h.cxid,
        op_name(h.op),
        fields_text(&record.txn)
    )
}

/// A txn body's fields, comma-separated in ZooKeeper's order; a multi's ops as `op:fields;op:fields`.
pub fn fields_text(txn: &Txn) -> String {
    match txn {
        Txn::Create { path, data, acl, ephemeral, parent_cversion } => {
            format!("{path},{},{},{ephemeral},{parent_cversion}", data_text(data.as_deref()), acl_text(acl))
        }
        Txn::CreateContainer { path, data, acl, parent_cversion } => {
            format!("{path},{},{},{parent_cversion}", data_text(data.as_deref()), acl_text(acl))
        }
        Txn::CreateTtl { path, data, acl, parent_cversion, ttl } => {
            format!("{path},{},{},{parent_cversion},{ttl}", data_text(data.as_deref()), acl_text(acl))
        }
        Txn::Delete { path } => path.clone(),
        Txn::SetData { path, data, version } => format!("{path},{},{version}", data_text(data.as_deref())),
        Txn::SetAcl { path, acl, version } => format!("{path},{},{version}", acl_text(acl)),
        Txn::Check { path, version } => format!("{path},{version}"),
        Txn::CreateSession { timeout } => timeout.to_string(),
        Txn::CloseSession { paths } => format!("[{}]", paths.join(",")),
        Txn::Error { err } => err.to_string(),
        Txn::Multi(ops) => {
            let ops: Vec<String> =
                ops.iter().map(|(code, t)| format!("{}:{}", op_name(*code), fields_text(t))).collect();
            ops.join(";")
        }
    }
}

/// One txn as a JSON object (zxids and session ids as hex strings: JSON numbers lose precision past 2^53).
pub fn txn_json(record: &TxnRecord, zxid: u64) -> Value {
    let h = &record.header;
    let mut value = json!({
        "zxid": super::hex(zxid),
        "time_ms": h.time,
        "time": time_text(h.time),
        "session": format!("0x{:x}", h.client_id),
        "cxid": format!("0x{:x}", h.cxid),
        "op": op_name(h.op),
    });
    value["txn"] = fields_json(&record.txn);
    value
}

/// A txn body's fields as JSON.
pub fn fields_json(txn: &Txn) -> Value {
    match txn {
        Txn::Create { path, data, acl, ephemeral, parent_cversion } => json!({
            "path": path, "data": data_json(data.as_deref()), "acl": acl_json(acl),
            "ephemeral": ephemeral, "parent_cversion": parent_cversion,
        }),
        Txn::CreateContainer { path, data, acl, parent_cversion } => json!({
            "path": path, "data": data_json(data.as_deref()), "acl": acl_json(acl), "parent_cversion": parent_cversion,
        }),
        Txn::CreateTtl { path, data, acl, parent_cversion, ttl } => json!({
            "path": path, "data": data_json(data.as_deref()), "acl": acl_json(acl),
            "parent_cversion": parent_cversion, "ttl": ttl,
        }),
        Txn::Delete { path } => json!({ "path": path }),
        Txn::SetData { path, data, version } => {
            json!({ "path": path, "data": data_json(data.as_deref()), "version": version })
        }
        Txn::SetAcl { path, acl, version } => json!({ "path": path, "acl": acl_json(acl), "version": version }),
        Txn::Check { path, version } => json!({ "path": path, "version": version }),
        Txn::CreateSession { timeout } => json!({ "timeout": timeout }),
        Txn::CloseSession { paths } => json!({ "paths": paths }),
        Txn::Error { err } => json!({ "err": err }),
        Txn::Multi(ops) => json!({
            "ops": ops.iter().map(|(code, t)| json!({ "op": op_name(*code), "txn": fields_json(t) })).collect::<Vec<_>>()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tree::txn::TxnHeader;

    #[test]
    fn data_is_quoted_text_hex_or_null() {
        assert_eq!(data_text(None), "null");
        assert_eq!(data_text(Some(b"")), "\"\"");
        assert_eq!(data_text(Some(b"a,\"b\"")), r#""a,\"b\"""#);
        assert_eq!(data_text(Some(&[0, 0xff])), "#00ff");
        assert_eq!(data_json(Some(&[0xc3])), json!({ "hex": "c3" }));
    }

    #[test]
    fn a_multi_reads_like_zookeepers_toolkit() {
        let record = TxnRecord {
            header: TxnHeader { client_id: 0x1000, cxid: 10, zxid: 0, time: 0, op: op::MULTI },
            txn: Txn::Multi(vec![
                (
                    op::CREATE,
                    Txn::Create {
                        path: "/a".into(),
                        data: None,
                        acl: tree::acl::open_acl_unsafe(),
                        ephemeral: false,
                        parent_cversion: 3,
                    },
                ),
                (op::DELETE, Txn::Delete { path: "/b".into() }),
            ]),
        };
        assert_eq!(
            txn_line(&record, 0x1_0000_0002),
            "1970-01-01 00:00:00.000 UTC session 0x1000 cxid 0xa zxid 0x100000002 multi \
             create:/a,null,[world:anyone:cdrwa],false,3;delete:/b"
        );
        assert_eq!(txn_json(&record, 2)["txn"]["ops"][1]["op"], "delete");
    }
}
