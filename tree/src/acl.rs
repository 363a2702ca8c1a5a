//! ACLs: permissions, ids, the shared ACL table, and the permission check (`ZooKeeperServer.checkACL`).
//!
//! Jute layout: `ACL { int perms; Id id }`, `Id { ustring scheme; ustring id }`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Buf;

use crate::jute::{JuteError, JuteRead, JuteWrite};

/// Permission bits (`ZooDefs.Perms`).
#[allow(missing_docs)]
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// An identity: `scheme:id` (`world:anyone`, `digest:user:hash`, `ip:10.0.0.0/8`, `auth:`, `super:...`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    /// The scheme.
    pub scheme: String,
    /// The id within the scheme.
    pub id: String,
}

/// One ACL entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    /// Permission bits.
    pub perms: i32,
    /// Whom they are granted to.
    pub id: Id,
}

impl Id {
    /// An id.
    pub fn new(scheme: &str, id: &str) -> Id {
        Id { scheme: scheme.to_owned(), id: id.to_owned() }
    }

    /// `world:anyone`.
    pub fn anyone() -> Id {
        Id::new("world", "anyone")
    }

    /// Whether an ACL entry naming `self` grants to a client authenticated as `client`.
    pub fn grants_to(&self, client: &Id) -> bool {
        if self.scheme != client.scheme {
            return false;
        }
        match self.scheme.as_str() {
            "ip" => ip_matches(&self.id, &client.id),
            // ZooKeeper's SASLAuthenticationProvider.matches: the SASL user `super` matches every sasl ACL.
            "sasl" => client.id == "super" || self.id == client.id,
            _ => self.id == client.id,
        }
    }
}

/// Whether `id` is a valid Kerberos name, as ZooKeeper's `KerberosName` constructor parses one (which
/// `SASLAuthenticationProvider.isValid` uses): anything without '@', or `service[/host]@realm` with no further
/// '/' or '@'.
pub fn kerberos_name_valid(id: &str) -> bool {
    let Some((principal, realm)) = id.split_once('@') else { return true };
    !realm.contains(['@', '/']) && principal.matches('/').count() <= 1
}

/// `ip:` matching: `a.b.c.d` exactly, or `a.b.c.d/bits` as a prefix.
fn ip_matches(pattern: &str, client: &str) -> bool {
    let (net, bits) = match pattern.split_once('/') {
        Some((net, bits)) => (net, bits.parse::<u32>().ok()),
        None => (pattern, None),
    };
    let (Ok(net), Ok(client)) = (net.parse::<IpAddr>(), client.parse::<IpAddr>()) else { return false };
    let (net, client, width) = match (net, client) {
        (IpAddr::V4(n), IpAddr::V4(c)) => (u128::from(u32::from(n)) << 96, u128::from(u32::from(c)) << 96, 32),
        (IpAddr::V6(n), IpAddr::V6(c)) => (u128::from(n), u128::from(c), 128),
        _ => return false,
    };
    let bits = bits.unwrap_or(width).min(width);
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    net & mask == client & mask
}

impl Acl {
    /// Encodes the entry.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.write_int(self.perms);
        out.write_string(&self.id.scheme);
        out.write_string(&self.id.id);
    }

    /// Decodes an entry.
    pub fn read(buf: &mut impl Buf) -> Result<Acl, JuteError> {
        let perms = buf.read_int()?;
        Ok(Acl { perms, id: Id { scheme: buf.read_string()?, id: buf.read_string()? } })
    }
}

/// Encodes a `vector<ACL>`.
pub fn write_acls(out: &mut Vec<u8>, acls: &[Acl]) {
    out.write_len(acls.len());
    for acl in acls {
        acl.write(out);
    }
}

/// Decodes a `vector<ACL>`.
pub fn read_acls(buf: &mut impl Buf) -> Result<Vec<Acl>, JuteError> {
    let count = buf.read_count(12)?;
    (0..count).map(|_| Acl::read(buf)).collect()
}

/// `OPEN_ACL_UNSAFE`: everything for everyone.
pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl { perms: perms::ALL, id: Id::anyone() }]
}

/// Whether `acl` is `OPEN_ACL_UNSAFE` (checked without allocating).
pub fn is_open(acl: &[Acl]) -> bool {
    matches!(acl, [a] if a.perms == perms::ALL && a.id.scheme == "world" && a.id.id == "anyone")
}

/// `READ_ACL_UNSAFE`: read for everyone.
pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![Acl { perms: perms::READ, id: Id::anyone() }]
}

/// Whether a client authenticated as `ids` holds `perm` on a node with `acl` (ZooKeeper's checkACL).
pub fn check(acl: &[Acl], perm: i32, ids: &[Id]) -> bool {
    if acl.is_empty() || ids.iter().any(|id| id.scheme == "super") {
        return true;
    }
    acl.iter()
        .filter(|a| a.perms & perm != 0)
        .any(|a| (a.id.scheme == "world" && a.id.id == "anyone") || ids.iter().any(|client| a.id.grants_to(client)))
}

/// The id of an ACL list in an [`AclTable`]: nodes store this, not the list.
pub type AclId = i64;

/// The id of `OPEN_ACL_UNSAFE`, which is never stored.
pub const OPEN_ACL_ID: AclId = -1;

/// Interned ACL lists, reference-counted by the nodes that use them (ZooKeeper's `ReferenceCountedACLCache`).
#[derive(Clone, Debug)]
pub struct AclTable {
    by_id: BTreeMap<AclId, (Arc<[Acl]>, u64)>,
    by_list: HashMap<Arc<[Acl]>, AclId>,
    last: AclId,
    /// `OPEN_ACL_UNSAFE`, built once: most nodes use it, and [`AclTable::get`] is on every write's path.
    open: Arc<[Acl]>,
}

impl Default for AclTable {
    fn default() -> Self {
        AclTable { by_id: BTreeMap::new(), by_list: HashMap::new(), last: 0, open: open_acl_unsafe().into() }
    }
}

impl AclTable {
    /// The id for `acl`, counting one more use.
    pub fn intern(&mut self, acl: &[Acl]) -> AclId {
        if is_open(acl) {
            return OPEN_ACL_ID;
        }
        if let Some(&id) = self.by_list.get(acl) {
            self.by_id.get_mut(&id).expect("both maps agree").1 += 1;
            return id;
        }
        self.last += 1;
        let list: Arc<[Acl]> = acl.into();
        self.by_id.insert(self.last, (list.clone(), 1));
        self.by_list.insert(list, self.last);
        self.last
    }

    /// Counts one use fewer of `id`, dropping the list when nobody uses it.
    pub fn release(&mut self, id: AclId) {
        let Some(entry) = self.by_id.get_mut(&id) else { return };
        entry.1 -= 1;
        if entry.1 == 0 {
            let (list, _) = self.by_id.remove(&id).expect("present");
            self.by_list.remove(&list);
        }
    }

    /// The list with `id`.
    pub fn get(&self, id: AclId) -> Arc<[Acl]> {
        match self.by_id.get(&id) {
            Some((list, _)) => list.clone(),
            None => self.open.clone(),
        }
    }

    /// Every stored list with its id and reference count, in id order (for snapshots).
    pub fn entries(&self) -> impl Iterator<Item = (AclId, &[Acl], u64)> {
        self.by_id.iter().map(|(&id, (list, refs))| (id, &list[..], *refs))
    }

    /// How many lists are stored.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no list is stored.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_follows_zookeeper() {
        let digest = Id::new("digest", "bob:hash");
        let acl = vec![Acl { perms: perms::READ | perms::WRITE, id: digest.clone() }];
        assert!(check(&acl, perms::READ, std::slice::from_ref(&digest)));
        assert!(!check(&acl, perms::DELETE, std::slice::from_ref(&digest)));
        assert!(!check(&acl, perms::READ, &[Id::new("digest", "eve:hash")]));
        assert!(check(&acl, perms::ADMIN, &[Id::new("super", "admin")]));
        assert!(check(&[], perms::ADMIN, &[]));
        assert!(check(&open_acl_unsafe(), perms::ADMIN, &[]));
        assert!(!check(&read_acl_unsafe(), perms::WRITE, &[]));
    }

    #[test]
    fn ip_ids_match_by_prefix() {
        let net = Id::new("ip", "10.1.0.0/16");
        assert!(net.grants_to(&Id::new("ip", "10.1.200.3")));
        assert!(!net.grants_to(&Id::new("ip", "10.2.0.1")));
        assert!(Id::new("ip", "127.0.0.1").grants_to(&Id::new("ip", "127.0.0.1")));
        assert!(!Id::new("ip", "127.0.0.1").grants_to(&Id::new("ip", "::1")));
    }

    #[test]
    fn sasl_ids_match_by_name_and_the_sasl_user_super_matches_all() {
        let bob = Id::new("sasl", "bob");
        assert!(bob.grants_to(&Id::new("sasl", "bob")));
        assert!(!bob.grants_to(&Id::new("sasl", "alice")));
        assert!(!bob.grants_to(&Id::new("digest", "bob")));
        assert!(bob.grants_to(&Id::new("sasl", "super")));
        assert!(kerberos_name_valid("bob") && kerberos_name_valid("zk/host@REALM") && kerberos_name_valid(""));
        assert!(kerberos_name_valid("a/b/c"), "no '@': the whole name is the service name");
        assert!(!kerberos_name_valid("a@b@c") && !kerberos_name_valid("a/b/c@R") && !kerberos_name_valid("a@R/x"));
    }

    #[test]
    fn the_table_interns_and_counts() {
        let mut table = AclTable::default();
        let acl = read_acl_unsafe();
        let a = table.intern(&acl);
        let b = table.intern(&acl);
        assert_eq!(a, b);
        assert_eq!(table.intern(&open_acl_unsafe()), OPEN_ACL_ID);
        table.release(a);
        assert_eq!(table.len(), 1);
        table.release(b);
        assert!(table.is_empty());
    }
}
