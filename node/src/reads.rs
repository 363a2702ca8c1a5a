//! Reads, served from this server's tree: getData, exists, getChildren(2), getACL, getAllChildrenNumber,
//! getEphemerals and multiRead, with the watches they set, and the watch-management requests.
//!
//! A watch is registered under the tree's read lock, so no change can slip between the read and the watch.

use proto::records::{Request, Response};
use tree::acl::{self, perms, Id};
use tree::code::{op, Code};
use tree::path::validate_path;
use tree::tree::DataTree;

use crate::reply;
use crate::session::SessionId;
use crate::shared::Shared;
use crate::watch::{event, Kind, Watches};

/// `WatcherType` of checkWatches / removeWatches.
mod watcher_type {
    pub const CHILDREN: i32 = 1;
    pub const DATA: i32 = 2;
    pub const ANY: i32 = 3;
}

/// The outcome of a read: code, response and the zxid for the reply header.
pub struct ReadReply {
    /// The outcome.
    pub code: Code,
    /// The body (sent when `code` is OK).
    pub response: Response,
    /// The tree's last applied zxid when the read ran.
    pub zxid: i64,
    /// Watch events to send before the reply (setWatches for changes the client missed).
    pub events: Vec<(i32, String)>,
    /// A watch it asked for was refused: the session's watches are over their bound ([`crate::watch`]).
    pub watch_refused: bool,
}

/// Runs a read or watch request of `session` against this server's tree.
pub fn run(shared: &Shared, session: SessionId, auth: &[Id], op_code: i32, request: &Request) -> ReadReply {
    let tree = shared.tree();
    let mut watches = shared.watches();
    let zxid = tree.last_zxid();
    let mut events = Vec::new();
    let (code, response) = match one(&tree, &mut watches, session, auth, op_code, request, &mut events) {
        Ok(response) => (Code::Ok, response),
        Err(code) => (code, Response::Empty),
    };
    let watch_refused = watches.take_refused(session);
    ReadReply { code, response, zxid, events, watch_refused }
}

#[allow(clippy::too_many_arguments)]
fn one(
    tree: &DataTree,
    watches: &mut Watches,
    session: SessionId,
    auth: &[Id],
    op_code: i32,
    request: &Request,
    events: &mut Vec<(i32, String)>,
) -> Result<Response, Code> {
    let readable = |path: &str, perm: i32| -> Result<&tree::tree::Node, Code> {
        let node = tree.get(path).ok_or(Code::NoNode)?;
        if !acl::check(&tree.acl_of(node), perm, auth) {
            return Err(Code::NoAuth);
        }
        Ok(node)
    };
    match (op_code, request) {
        (op::EXISTS, Request::Exists { path, watch }) => {
            check_path(path)?;
            if *watch {
                watches.add(session, Kind::Data, path);
            }
            tree.get(path).map(|n| Response::Stat(n.client_stat())).ok_or(Code::NoNode)
        }
        (op::GET_DATA, Request::GetData { path, watch }) => {
            check_path(path)?;
            let node = readable(path, perms::READ)?;
            if *watch {
                watches.add(session, Kind::Data, path);
            }
            Ok(Response::GetData { data: node.data.clone(), stat: node.client_stat() })
        }
        (op::GET_CHILDREN | op::GET_CHILDREN2, Request::GetChildren { path, watch }) => {
            check_path(path)?;
            let node = readable(path, perms::READ)?;
            if *watch {
                watches.add(session, Kind::Child, path);
            }
            let children = node.children.iter().cloned().collect();
            Ok(if op_code == op::GET_CHILDREN {
                Response::GetChildren { children }
            } else {
                Response::GetChildren2 { children, stat: node.client_stat() }
            })
        }
        (op::GET_ACL, Request::GetAcl { path }) => {
            check_path(path)?;
            let node = tree.get(path).ok_or(Code::NoNode)?;
            let acl = tree.acl_of(node);
            if !acl::check(&acl, perms::READ, auth) && !acl::check(&acl, perms::ADMIN, auth) {
                return Err(Code::NoAuth);
            }
            let mut acl = acl.to_vec();
            if !acl::check(&tree.acl_of(node), perms::ADMIN, auth) {
                // ZooKeeper 3.6+ (ZOOKEEPER-1392): without ADMIN, digest hashes are hidden as `user:x`.
                for entry in acl.iter_mut().filter(|a| a.id.scheme == "digest") {
                    let user = entry.id.id.split(':').next().unwrap_or_default().to_owned();
                    entry.id.id = format!("{user}:x");
                }
            }
            Ok(Response::GetAcl { acl, stat: node.client_stat() })
        }
        (op::GET_ALL_CHILDREN_NUMBER, Request::GetAllChildrenNumber { path }) => {
            check_path(path)?;
            readable(path, perms::READ)?;
            let prefix = if path == "/" { "/".to_owned() } else { format!("{path}/") };
            let count = tree.nodes_after(Some(path)).take_while(|(p, _)| p.starts_with(&prefix)).count();
            Ok(Response::AllChildrenNumber(count as i32))
        }
        (op::GET_EPHEMERALS, Request::GetEphemerals { prefix }) => {
            // ZooKeeper lists them all for a prefix that is blank or `/` once Java's `trim()` (control characters
            // and spaces) is applied.
            let all = matches!(prefix.trim_matches(|c: char| c <= ' '), "" | "/");
            let mut paths: Vec<String> =
                tree.ephemerals(session).filter(|p| all || p.starts_with(prefix.as_str())).map(str::to_owned).collect();
            paths.sort();
            Ok(Response::Ephemerals(paths))
        }
        (op::MULTI_READ, Request::Multi(ops)) => {
            let results = ops
                .iter()
                .map(|(sub, request)| match (*sub, request) {
                    (op::GET_DATA | op::GET_CHILDREN, _) => {
                        match one(tree, watches, session, auth, *sub, request, events) {
                            Ok(response) => (*sub, 0, response),
                            Err(code) => (op::ERROR, code.value(), Response::Empty),
                        }
                    }
                    _ => (op::ERROR, Code::BadArguments.value(), Response::Empty),
                })
                .collect();
            Ok(Response::Multi(results))
        }
        (op::SET_WATCHES | op::SET_WATCHES2, Request::SetWatches { relative_zxid, data, exist, child, persistent }) => {
            // ZooKeeper's DataTree.setWatches: a change the client missed while disconnected fires at once.
            for path in data {
                match tree.get(path) {
                    None => events.push((event::NODE_DELETED, path.clone())),
                    Some(n) if n.stat.mzxid > *relative_zxid => events.push((event::NODE_DATA_CHANGED, path.clone())),
                    Some(_) => watches.add(session, Kind::Data, path),
                }
            }
            for path in exist {
                match tree.get(path) {
                    Some(_) => events.push((event::NODE_CREATED, path.clone())),
                    None => watches.add(session, Kind::Data, path),
                }
            }
            for path in child {
                match tree.get(path) {
                    None => events.push((event::NODE_DELETED, path.clone())),
                    Some(n) if n.stat.pzxid > *relative_zxid => {
                        events.push((event::NODE_CHILDREN_CHANGED, path.clone()))
                    }
                    Some(_) => watches.add(session, Kind::Child, path),
                }
            }
            if let Some((persistent, recursive)) = persistent {
                for path in persistent {
                    watches.add(session, Kind::Persistent, path);
                }
                for path in recursive {
                    watches.add(session, Kind::Recursive, path);
                }
            }
            Ok(Response::Empty)
        }
        (op::ADD_WATCH, Request::AddWatch { path, mode }) => {
            check_path(path)?;
            let kind = Kind::from_add_watch_mode(*mode).ok_or(Code::BadArguments)?;
            watches.add(session, kind, path);
            // ZooKeeper answers addWatch with an ErrorResponse body (error code 0); the Java client needs it.
            Ok(Response::ErrorCode(0))
        }
        (op::CHECK_WATCHES | op::REMOVE_WATCHES, Request::WatchCheck { path, watch_type }) => {
            check_path(path)?;
            let kinds: &[Kind] = match *watch_type {
                watcher_type::CHILDREN => &[Kind::Child, Kind::Persistent, Kind::Recursive],
                watcher_type::DATA => &[Kind::Data, Kind::Persistent, Kind::Recursive],
                watcher_type::ANY => &[Kind::Data, Kind::Child, Kind::Persistent, Kind::Recursive],
                _ => return Err(Code::BadArguments),
            };
            let held: Vec<Kind> = kinds.iter().copied().filter(|&k| watches.has(session, k, path)).collect();
            if held.is_empty() {
                return Err(Code::NoWatcher);
            }
            if op_code == op::REMOVE_WATCHES {
                for kind in held {
                    watches.remove(session, kind, path);
                }
            }
            Ok(Response::Empty)
        }
        _ => Err(Code::Unimplemented),
    }
}

fn check_path(path: &str) -> Result<(), Code> {
    validate_path(path, false).map_err(|_| Code::BadArguments)
}

/// A reply frame for a read.
pub fn frame(xid: i32, read: &ReadReply) -> bytes::Bytes {
    reply::frame(xid, read.zxid, read.code, &read.response)
}
