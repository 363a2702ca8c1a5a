//! Turning client requests into txns (ZooKeeper's `PrepRequestProcessor`): every check a write makes happens
//! here, on the leader, and the txn carries the outcome (the new version, the sequential name, the parent's new
//! cversion). A failed check becomes an error txn, which still takes a zxid, as in ZooKeeper.
//!
//! Prep reads the committed tree through an [`Overlay`]: the changes of proposals the tree has not applied yet
//! ([`Pending`]), and the changes of the ops before it in the same multi.

use std::collections::HashMap;
use std::sync::Arc;

use crate::acl::{self, perms, Acl, Id};
use crate::code::{op, Code};
use crate::path::{self, validate_path};
use crate::pending::{Changes, Pending, View};
use crate::quota;
use crate::stat::{OwnerKind, CONTAINER_OWNER};
use crate::tree::{Data, DataTree};
use crate::txn::Txn;

pub mod close;

/// How a node is created (`CreateMode` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CreateMode {
    Persistent = 0,
    Ephemeral = 1,
    PersistentSequential = 2,
    EphemeralSequential = 3,
    Container = 4,
    PersistentWithTtl = 5,
    PersistentSequentialWithTtl = 6,
}

impl CreateMode {
    /// The mode for a wire flag.
    pub fn from_flag(flag: i32) -> Option<CreateMode> {
        use CreateMode::*;
        [
            Persistent,
            Ephemeral,
            PersistentSequential,
            EphemeralSequential,
            Container,
            PersistentWithTtl,
            PersistentSequentialWithTtl,
        ]
        .into_iter()
        .find(|m| *m as i32 == flag)
    }

    fn sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    fn ttl(self) -> bool {
        matches!(self, CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl)
    }
}

/// A write request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Request {
    /// `op` is create, create2, createContainer or createTTL; `flags` the CreateMode flag; `ttl` -1 if none.
    Create {
        op: i32,
        path: String,
        data: Data,
        acl: Vec<Acl>,
        flags: i32,
        ttl: i64,
    },
    Delete {
        path: String,
        version: i32,
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
    Multi(Vec<Request>),
    CreateSession {
        timeout: i32,
    },
    CloseSession,
}

/// Who sends a request.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The session id.
    pub session: i64,
    /// The identities the session authenticated as (`ip:...`, `digest:...`, `super:...`): shared, since every
    /// request of the session carries them.
    pub auth: Arc<[Id]>,
    /// The session is gone: it expired, or its close was proposed before this write (ZooKeeper's
    /// `checkSession`). Every write of it but a close fails with SESSIONEXPIRED; without the check, an
    /// ephemeral created behind its owner's close would outlive it forever (ZOOKEEPER-1208).
    pub expired: bool,
}

/// Limits that prep enforces.
#[derive(Clone, Copy, Debug)]
pub struct PrepOptions {
    /// Whether TTL nodes may be created (ZooKeeper's `extendedTypesEnabled`).
    pub ttl_enabled: bool,
    /// Whether creates and setData past a quota's hard limit fail with QUOTAEXCEEDED (ZooKeeper's
    /// `zookeeper.enforceQuota`).
    pub enforce_quota: bool,
}

/// What prep reads: the committed tree, the changes of proposals not yet applied to it, and the changes this
/// request made so far.
pub struct Overlay<'a> {
    tree: &'a DataTree,
    pending: &'a Pending,
    /// A single op's changes (at most two: the node and its parent), for a single op reads everything before
    /// it sets anything.
    changes: Vec<(Arc<str>, Option<View>)>,
    /// For a multi, whose later ops read what earlier ones changed: the latest change per path, and only that
    /// (a multi that sets one path a thousand times leaves one pending change, not a thousand).
    own: Option<HashMap<Arc<str>, Option<View>>>,
}

impl<'a> Overlay<'a> {
    fn new(tree: &'a DataTree, pending: &'a Pending, request: &Request) -> Overlay<'a> {
        let own = matches!(request, Request::Multi(_)).then(HashMap::new);
        Overlay { tree, pending, changes: Vec::new(), own }
    }

    fn get(&self, path: &str) -> Option<View> {
        if let Some(change) = self.own.as_ref().and_then(|own| own.get(path)) {
            return change.clone();
        }
        view(self.tree, self.pending, path)
    }

    fn set(&mut self, path: &str, view: Option<View>) {
        match &mut self.own {
            Some(own) => match own.get_mut(path) {
                Some(change) => *change = view,
                None => {
                    own.insert(Arc::from(path), view);
                }
            },
            None => self.changes.push((Arc::from(path), view)),
        }
    }

    /// Drops the changes made so far (the request fails).
    fn discard(&mut self) {
        self.changes.clear();
        if let Some(own) = &mut self.own {
            own.clear();
        }
    }

    /// The request's changes, one per path.
    fn into_changes(self) -> Changes {
        match self.own {
            Some(own) => Changes(own.into_iter().collect()),
            None => Changes(self.changes),
        }
    }
}

/// A node as the committed tree with the `pending` changes on top has it.
fn view(tree: &DataTree, pending: &Pending, path: &str) -> Option<View> {
    if let Some(change) = pending.get(path) {
        return change.clone();
    }
    let node = tree.get(path)?;
    Some(View {
        version: node.stat.version,
        cversion: node.stat.cversion,
        aversion: node.stat.aversion,
        owner: node.stat.ephemeral_owner,
        children: node.children.len(),
        acl: tree.acl_of(node),
        data_len: quota::data_len(node) as usize,
    })
}

/// A request turned into a txn.
#[derive(Debug)]
pub struct Prepared {
    /// The txn's op code.
    pub op: i32,
    /// The txn.
    pub txn: Txn,
    /// What it changes, for [`Pending::absorb`] once it is proposed.
    pub changes: Changes,
}

/// Turns `request` into a txn (its op code and body); a failed check gives an error txn.
pub fn prep(tree: &DataTree, caller: &Caller, options: PrepOptions, request: &Request) -> (i32, Txn) {
    let Prepared { op, txn, .. } = prep_over(tree, &Pending::new(), caller, options, request);
    (op, txn)
}

/// [`prep`] against `tree` with the `pending` changes of proposals it has not applied yet on top; also returns
/// the request's own changes. Quotas are checked against `tree` alone, as ZooKeeper checks them against its
/// committed tree. (A leader preps a closeSession with [`close::prep_close`], which lets go of the tree's lock
/// now and then; this holds `tree` throughout.)
pub fn prep_over(
    tree: &DataTree,
    pending: &Pending,
    caller: &Caller,
    options: PrepOptions,
    request: &Request,
) -> Prepared {
    if let Request::CloseSession = request {
        return close::prep_close(|| tree, pending, caller.session);
    }
    let mut overlay = Overlay::new(tree, pending, request);
    let (op, txn) = match request {
        Request::Multi(ops) => (op::MULTI, prep_multi(&mut overlay, caller, options, ops)),
        _ => prep_one(&mut overlay, caller, options, request).unwrap_or_else(|code| {
            overlay.discard();
            (op::ERROR, Txn::Error { err: code.value() })
        }),
    };
    Prepared { op, txn, changes: overlay.into_changes() }
}

fn prep_multi(overlay: &mut Overlay<'_>, caller: &Caller, options: PrepOptions, ops: &[Request]) -> Txn {
    let mut failed = false;
    let txns = ops
        .iter()
        .map(|request| {
            if failed {
                return (op::ERROR, Txn::Error { err: Code::RuntimeInconsistency.value() });
            }
            let outcome = match request {
                Request::Create { .. } | Request::Delete { .. } | Request::SetData { .. } | Request::Check { .. } => {
                    prep_one(overlay, caller, options, request)
                }
                _ => Err(Code::BadArguments),
            };
            outcome.unwrap_or_else(|code| {
                failed = true;
                (op::ERROR, Txn::Error { err: code.value() })
            })
        })
        .collect();
    if failed {
        // The multi fails as a whole: none of its ops' changes happen.
        overlay.discard();
    }
    Txn::Multi(txns)
}

fn prep_one(o: &mut Overlay<'_>, caller: &Caller, options: PrepOptions, request: &Request) -> Result<(i32, Txn), Code> {
    // (A multi's first op fails so, and the rest with RUNTIMEINCONSISTENCY, as ZooKeeper checks per op. A create
    // checks its mode and TTL first, as ZooKeeper's validateCreateRequest does.)
    let exempt = matches!(request, Request::CreateSession { .. } | Request::CloseSession | Request::Create { .. });
    if caller.expired && !exempt {
        return Err(Code::SessionExpired);
    }
    match request {
        Request::Create { op, path, data, acl, flags, ttl } => {
            prep_create(o, caller, options, *op, path, data, acl, *flags, *ttl)
        }
        Request::Delete { path, version } => prep_delete(o, caller, path, *version),
        Request::SetData { path, data, version } => {
            validate(path, false)?;
            let node = o.get(path).ok_or(Code::NoNode)?;
            check_acl(&node.acl, perms::WRITE, caller)?;
            quota::check(o.tree, path, 0, data_len(data) as i64 - node.data_len as i64, options.enforce_quota)?;
            let version = next_version(node.version, *version)?;
            o.set(path, Some(View { version, data_len: data_len(data), ..node }));
            Ok((op::SET_DATA, Txn::SetData { path: path.clone(), data: data.clone(), version }))
        }
        Request::SetAcl { path, acl, version } => {
            validate(path, false)?;
            let acl = fix_acl(acl, caller)?;
            let node = o.get(path).ok_or(Code::NoNode)?;
            check_acl(&node.acl, perms::ADMIN, caller)?;
            let version = next_version(node.aversion, *version)?;
            o.set(path, Some(View { aversion: version, acl: Arc::from(acl.clone()), ..node }));
            Ok((op::SET_ACL, Txn::SetAcl { path: path.clone(), acl, version }))
        }
        Request::Check { path, version } => {
            validate(path, false)?;
            let node = o.get(path).ok_or(Code::NoNode)?;
            check_acl(&node.acl, perms::READ, caller)?;
            let next = next_version(node.version, *version)?;
            Ok((op::CHECK, Txn::Check { path: path.clone(), version: next }))
        }
        Request::CreateSession { timeout } => Ok((op::CREATE_SESSION, Txn::CreateSession { timeout: *timeout })),
        // `prep_over` preps these itself (a multi's ops are the other requests).
        Request::CloseSession | Request::Multi(_) => Err(Code::BadArguments),
    }
}

#[allow(clippy::too_many_arguments)]
fn prep_create(
    o: &mut Overlay<'_>,
    caller: &Caller,
    options: PrepOptions,
    op_code: i32,
    path: &str,
    data: &Data,
    acl: &[Acl],
    flags: i32,
    ttl: i64,
) -> Result<(i32, Txn), Code> {
    let mode = CreateMode::from_flag(flags).ok_or(Code::BadArguments)?;
    let ttl = if op_code == op::CREATE_TTL { ttl } else { -1 };
    if mode.ttl() && !options.ttl_enabled {
        return Err(Code::Unimplemented);
    }
    if mode.ttl() != (ttl >= 0) || (mode.ttl() && OwnerKind::ttl_owner(ttl).is_none()) {
        return Err(Code::BadArguments);
    }
    if path.rfind('/').is_none() || path.contains('\0') {
        return Err(Code::BadArguments);
    }
    if caller.expired {
        return Err(Code::SessionExpired);
    }
    let acl = fix_acl(acl, caller)?;
    let parent_path = path::parent(path);
    let parent = o.get(parent_path).ok_or(Code::NoNode)?;
    check_acl(&parent.acl, perms::CREATE, caller)?;
    let path = if mode.sequential() { format!("{path}{:010}", parent.cversion) } else { path.to_owned() };
    validate(&path, false)?;
    if o.get(&path).is_some() {
        return Err(Code::NodeExists);
    }
    if matches!(OwnerKind::of(parent.owner), OwnerKind::Ephemeral(_)) {
        return Err(Code::NoChildrenForEphemerals);
    }
    quota::check(o.tree, &path, 1, data_len(data) as i64, options.enforce_quota)?;
    let parent_cversion = parent.cversion.wrapping_add(1);
    let (op_out, txn, owner) = match op_code {
        op::CREATE_CONTAINER => (
            op::CREATE_CONTAINER,
            Txn::CreateContainer { path: path.clone(), data: data.clone(), acl: acl.clone(), parent_cversion },
            CONTAINER_OWNER,
        ),
        op::CREATE_TTL => {
            let owner = OwnerKind::ttl_owner(ttl).ok_or(Code::BadArguments)?;
            (
                op::CREATE_TTL,
                Txn::CreateTtl { path: path.clone(), data: data.clone(), acl: acl.clone(), parent_cversion, ttl },
                owner,
            )
        }
        _ => {
            let ephemeral = matches!(mode, CreateMode::Ephemeral | CreateMode::EphemeralSequential);
            let owner = if ephemeral { caller.session } else { 0 };
            let op_out = if op_code == op::CREATE2 { op::CREATE2 } else { op::CREATE };
            (
                op_out,
                Txn::Create { path: path.clone(), data: data.clone(), acl: acl.clone(), ephemeral, parent_cversion },
                owner,
            )
        }
    };
    // The tree raises the cversion only (at the wrap, it stays).
    let cversion = parent_cversion.max(parent.cversion);
    o.set(parent_path, Some(View { cversion, children: parent.children + 1, ..parent }));
    o.set(
        &path,
        Some(View {
            version: 0,
            cversion: 0,
            aversion: 0,
            owner,
            children: 0,
            acl: Arc::from(acl),
            data_len: data_len(data),
        }),
    );
    Ok((op_out, txn))
}

fn prep_delete(o: &mut Overlay<'_>, caller: &Caller, path: &str, version: i32) -> Result<(i32, Txn), Code> {
    if path.rfind('/').is_none()
        || path.contains('\0')
        || matches!(path, "/" | "/zookeeper" | "/zookeeper/quota" | "/zookeeper/config")
    {
        return Err(Code::BadArguments);
    }
    let parent_path = path::parent(path);
    let parent = o.get(parent_path).ok_or(Code::NoNode)?;
    check_acl(&parent.acl, perms::DELETE, caller)?;
    let node = o.get(path).ok_or(Code::NoNode)?;
    next_version(node.version, version)?;
    if node.children > 0 {
        return Err(Code::NotEmpty);
    }
    o.set(parent_path, Some(View { children: parent.children - 1, ..parent }));
    o.set(path, None);
    Ok((op::DELETE, Txn::Delete { path: path.to_owned() }))
}

/// The length of request data, null counting 0 (as ZooKeeper's quota check counts it).
fn data_len(data: &Data) -> usize {
    data.as_deref().map_or(0, <[u8]>::len)
}

fn validate(path: &str, sequential: bool) -> Result<(), Code> {
    validate_path(path, sequential).map_err(|_| Code::BadArguments)
}

/// `checkAndIncVersion`: the expected version must match (-1: any); the next one wraps, and -1 becomes 0.
fn next_version(current: i32, expected: i32) -> Result<i32, Code> {
    if expected != -1 && expected != current {
        return Err(Code::BadVersion);
    }
    Ok(match current.wrapping_add(1) {
        -1 => 0,
        v => v,
    })
}

fn check_acl(acl: &[Acl], perm: i32, caller: &Caller) -> Result<(), Code> {
    if acl::check(acl, perm, &caller.auth) {
        Ok(())
    } else {
        Err(Code::NoAuth)
    }
}

/// The most entries an ACL list may have once `auth` is expanded. A request frame holds at most ~70,000
/// entries, but each `auth` entry expands to every identity of the session: without a bound, a small request
/// could make millions. (Far past what any txn can carry anyway: the leader refuses a txn over its size limit.)
pub const MAX_ACL_ENTRIES: usize = 1 << 16;

/// Up to this many entries, [`fix_acl`] finds repeats by scanning what it kept.
const SCAN_DEDUP: usize = 16;

/// `fixupACL`: removes duplicates, expands `auth` to the caller's identities, refuses what is invalid (and a
/// list that would expand past [`MAX_ACL_ENTRIES`]).
fn fix_acl(acl: &[Acl], caller: &Caller) -> Result<Vec<Acl>, Code> {
    let mut fixed: Vec<Acl> = Vec::new();
    let mut seen: std::collections::HashSet<Acl> = std::collections::HashSet::new();
    for entry in acl {
        let expanded: Vec<Acl> = match (entry.id.scheme.as_str(), entry.id.id.as_str()) {
            ("world", "anyone") => vec![entry.clone()],
            ("auth", _) => {
                let ids: Vec<Acl> = caller
                    .auth
                    .iter()
                    .filter(|id| id.scheme != "ip" && id.scheme != "super")
                    .map(|id| Acl { perms: entry.perms, id: id.clone() })
                    .collect();
                if ids.is_empty() {
                    return Err(Code::InvalidAcl);
                }
                ids
            }
            ("digest", id) if id.split_once(':').is_some_and(|(user, hash)| !user.is_empty() && !hash.is_empty()) => {
                vec![entry.clone()]
            }
            ("ip", id) if ip_valid(id) => vec![entry.clone()],
            // A client certificate's subject DN (ZooKeeper's X509AuthenticationProvider), compared as text.
            ("x509", id) if id.contains('=') => vec![entry.clone()],
            // A SASL user name (ZooKeeper's SASLAuthenticationProvider.isValid: a valid Kerberos name).
            ("sasl", id) if crate::acl::kerberos_name_valid(id) => vec![entry.clone()],
            _ => return Err(Code::InvalidAcl),
        };
        if fixed.len() + expanded.len() > MAX_ACL_ENTRIES {
            return Err(Code::InvalidAcl);
        }
        for e in expanded {
            // Nearly every list is an entry or two: a scan, not a hash set, until the list grows.
            let fresh = if fixed.len() < SCAN_DEDUP {
                !fixed.contains(&e)
            } else {
                if seen.is_empty() {
                    seen.extend(fixed.iter().cloned());
                }
                seen.insert(e.clone())
            };
            if fresh {
                fixed.push(e);
            }
        }
    }
    if fixed.is_empty() {
        return Err(Code::InvalidAcl);
    }
    Ok(fixed)
}

fn ip_valid(id: &str) -> bool {
    let (addr, bits) = id.split_once('/').map_or((id, None), |(a, b)| (a, Some(b)));
    addr.parse::<std::net::IpAddr>().is_ok() && bits.is_none_or(|b| b.parse::<u8>().is_ok_and(|b| b <= 128))
}
