//! What servers of one ensemble tell each other about clients, inside the replication protocol's opaque
//! `Forward` messages: a follower forwards its clients' writes, syncs and session touches to the leader, and the
//! leader answers syncs and drops requests it could not take.
//!
//! ```text
//!  tag u8, then big-endian fields (jute encoding for strings and buffers: int length, then bytes)
//!   1  Request    session i64 | cxid i32 | op i32 | auth count i32 | { scheme str | id str }* | body buffer
//!   2  Touch      count i32 | { session i64 }*
//!   3  Sync       session i64 | cxid i32
//!   4  Synced     session i64 | cxid i32 | zxid i64      (the leader's committed zxid once the sync barrier passed)
//!   5  Dropped    session i64                             (the leader could not take a request: close the session's
//!                                                          connection so that its client reconnects and retries)
//!   6  Digest     zxid i64 | digest i64                   (the leader's tree digest after applying zxid)
//!   7  Attached   session i64                             (a client re-attached this session here)
//! ```
//!
//! The body of a Request is the client's own request body (as `zookeeper.jute` encodes it for `op`), so the
//! leader decodes it with the same code as a request from its own clients.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use tree::acl::Id;
use tree::jute::{JuteError, JuteRead, JuteWrite};

use crate::session::SessionId;

/// One forwarded item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// A client write (or createSession/closeSession) for the leader to prepare and propose.
    Request {
        /// The session.
        session: SessionId,
        /// The client's xid.
        cxid: i32,
        /// The op code.
        op: i32,
        /// The identities the session authenticated as.
        auth: Arc<[Id]>,
        /// The request body.
        body: Bytes,
    },
    /// Sessions with client activity since the last touch.
    Touch(Vec<SessionId>),
    /// A client's `sync`.
    Sync {
        /// The session.
        session: SessionId,
        /// The client's xid.
        cxid: i32,
    },
    /// The leader's answer to a `Sync`.
    Synced {
        /// The session.
        session: SessionId,
        /// The client's xid.
        cxid: i32,
        /// Everything up to this zxid was committed before the sync was answered.
        zxid: i64,
    },
    /// The leader dropped a request of this session.
    Dropped(SessionId),
    /// A client re-attached this session on the sending server.
    Attached(SessionId),
    /// The leader's tree digest after applying `zxid` ([`crate::digest`]).
    Digest {
        /// The zxid.
        zxid: i64,
        /// The digest.
        digest: u64,
    },
}

impl Forward {
    /// Encodes the item.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.size_hint());
        match self {
            Forward::Request { session, cxid, op, auth, body } => {
                out.push(1);
                out.write_long(*session);
                out.write_int(*cxid);
                out.write_int(*op);
                out.write_int(auth.len() as i32);
                for id in auth.iter() {
                    out.write_string(&id.scheme);
                    out.write_string(&id.id);
                }
                out.write_buffer(body);
            }
            Forward::Touch(sessions) => {
                out.push(2);
                out.write_int(sessions.len() as i32);
                for s in sessions {
                    out.write_long(*s);
                }
            }
            Forward::Sync { session, cxid } => {
                out.push(3);
                out.write_long(*session);
                out.write_int(*cxid);
            }
            Forward::Synced { session, cxid, zxid } => {
                out.push(4);
                out.write_long(*session);
                out.write_int(*cxid);
                out.write_long(*zxid);
            }
            Forward::Dropped(session) => {
                out.push(5);
                out.write_long(*session);
            }
            Forward::Attached(session) => {
                out.push(7);
                out.write_long(*session);
            }
            Forward::Digest { zxid, digest } => {
                out.push(6);
                out.write_long(*zxid);
                out.write_long(*digest as i64);
            }
        }
        Bytes::from(out)
    }

    /// How many bytes it encodes to: the buffer's capacity, so that encoding allocates once (exact, which the
    /// round-trip test checks).
    fn size_hint(&self) -> usize {
        match self {
            Forward::Request { auth, body, .. } => {
                1 + 8
                    + 4
                    + 4
                    + 4
                    + auth.iter().map(|id| 8 + id.scheme.len() + id.id.len()).sum::<usize>()
                    + 4
                    + body.len()
            }
            Forward::Touch(sessions) => 1 + 4 + 8 * sessions.len(),
            Forward::Sync { .. } => 1 + 8 + 4,
            Forward::Synced { .. } => 1 + 8 + 4 + 8,
            Forward::Dropped(_) | Forward::Attached(_) => 1 + 8,
            Forward::Digest { .. } => 1 + 8 + 8,
        }
    }

    /// Decodes an item; all of `buf` must be used.
    pub fn decode(buf: Bytes) -> Result<Forward, JuteError> {
        Forward::decode_with(buf, &mut AuthMemo::default())
    }

    /// [`Forward::decode`], sharing a request's identities with an equal list `memo` holds (and remembering
    /// them there if it holds none).
    pub fn decode_with(mut buf: Bytes, memo: &mut AuthMemo) -> Result<Forward, JuteError> {
        let b = &mut buf;
        if !b.has_remaining() {
            return Err(JuteError::Invalid("empty forward".into()));
        }
        let item = match b.get_u8() {
            1 => {
                let (session, cxid, op) = (b.read_long()?, b.read_int()?, b.read_int()?);
                let auth = memo.ids(b)?;
                Forward::Request { session, cxid, op, auth, body: b.read_buffer()? }
            }
            2 => {
                let count = count(b.read_int()?, b.remaining() / 8)?;
                let mut sessions = Vec::with_capacity(count);
                for _ in 0..count {
                    sessions.push(b.read_long()?);
                }
                Forward::Touch(sessions)
            }
            3 => Forward::Sync { session: b.read_long()?, cxid: b.read_int()? },
            4 => Forward::Synced { session: b.read_long()?, cxid: b.read_int()?, zxid: b.read_long()? },
            5 => Forward::Dropped(b.read_long()?),
            6 => Forward::Digest { zxid: b.read_long()?, digest: b.read_long()? as u64 },
            7 => Forward::Attached(b.read_long()?),
            tag => return Err(JuteError::Invalid(format!("unknown forward tag {tag}"))),
        };
        if b.has_remaining() {
            return Err(JuteError::Invalid(format!("{} bytes after a forward", b.remaining())));
        }
        Ok(item)
    }
}

/// The identity lists lately decoded from forwarded requests, by their encoding. Every write a follower forwards
/// carries its session's list, and most sessions share theirs (`ip:` the client's host, or none), so the leader
/// shares a list it holds rather than decoding it into new strings for every write. Bounded: the
/// [`AuthMemo::LISTS`] lists used last, each of at most [`AuthMemo::MAX_LIST_BYTES`] (a larger one is decoded for
/// its request alone, as before).
#[derive(Debug, Default)]
pub struct AuthMemo {
    /// Least recently used first.
    lists: std::collections::VecDeque<(Bytes, Arc<[Id]>)>,
}

impl AuthMemo {
    /// Distinct lists held at most.
    pub const LISTS: usize = 16;
    /// The largest encoding of a list held (an `ip:` identity takes about 30 bytes).
    pub const MAX_LIST_BYTES: usize = 1024;

    /// Reads a request's identities (`count`, then a scheme and an id string each) from `b`.
    fn ids(&mut self, b: &mut Bytes) -> Result<Arc<[Id]>, JuteError> {
        let encoded = auth_extent(b)?;
        if let Some(i) = self.lists.iter().position(|(seen, _)| seen[..] == b[..encoded]) {
            b.advance(encoded);
            let used = self.lists.remove(i).expect("found at i");
            let ids = used.1.clone();
            self.lists.push_back(used);
            return Ok(ids);
        }
        let mut raw = &b[..encoded];
        let count = count(raw.read_int()?, raw.remaining())?;
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(Id { scheme: raw.read_string()?, id: raw.read_string()? });
        }
        let ids: Arc<[Id]> = ids.into();
        if encoded <= Self::MAX_LIST_BYTES {
            if self.lists.len() == Self::LISTS {
                self.lists.pop_front();
            }
            // A copy, not a slice: a slice would keep the whole network buffer it came in alive.
            self.lists.push_back((Bytes::copy_from_slice(&b[..encoded]), ids.clone()));
        }
        b.advance(encoded);
        Ok(ids)
    }
}

/// How many bytes the identity list at the start of `b` takes (its count and two strings per identity),
/// checked against what `b` holds.
fn auth_extent(b: &Bytes) -> Result<usize, JuteError> {
    let mut at = &b[..];
    let count = count(at.read_int()?, at.remaining())?;
    for _ in 0..count * 2 {
        let len = at.read_len()?.unwrap_or(0);
        if len > at.remaining() {
            return Err(JuteError::Invalid(format!("a string of {len} bytes with {} left", at.remaining())));
        }
        at.advance(len);
    }
    Ok(b.len() - at.remaining())
}

/// A count read from the wire, refused when it is negative or larger than the bytes left could hold.
fn count(n: i32, at_most: usize) -> Result<usize, JuteError> {
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= at_most)
        .ok_or_else(|| JuteError::Invalid(format!("count {n} with {at_most} items' worth of bytes left")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item() -> impl Strategy<Value = Forward> {
        let id = ("[a-z]{0,6}", "[a-z:=]{0,12}").prop_map(|(s, i)| Id::new(&s, &i));
        prop_oneof![
            (any::<i64>(), any::<i32>(), any::<i32>(), proptest::collection::vec(id, 0..3), any::<Vec<u8>>()).prop_map(
                |(session, cxid, op, auth, body)| Forward::Request {
                    session,
                    cxid,
                    op,
                    auth: auth.into(),
                    body: body.into()
                }
            ),
            proptest::collection::vec(any::<i64>(), 0..5).prop_map(Forward::Touch),
            (any::<i64>(), any::<i32>()).prop_map(|(session, cxid)| Forward::Sync { session, cxid }),
            (any::<i64>(), any::<i32>(), any::<i64>()).prop_map(|(session, cxid, zxid)| Forward::Synced {
                session,
                cxid,
                zxid
            }),
            any::<i64>().prop_map(Forward::Dropped),
            any::<i64>().prop_map(Forward::Attached),
            (any::<i64>(), any::<u64>()).prop_map(|(zxid, digest)| Forward::Digest { zxid, digest }),
        ]
    }

    fn request(auth: &[Id]) -> Forward {
        Forward::Request { session: 7, cxid: 1, op: 5, auth: auth.into(), body: Bytes::from_static(b"body") }
    }

    fn auth_of(item: Forward) -> Arc<[Id]> {
        let Forward::Request { auth, .. } = item else { panic!("a request") };
        auth
    }

    #[test]
    fn a_list_seen_lately_is_shared_and_the_memo_stays_bounded() {
        let mut memo = AuthMemo::default();
        let ip = [Id::new("ip", "10.0.0.1")];
        let first = auth_of(Forward::decode_with(request(&ip).encode(), &mut memo).unwrap());
        let again = auth_of(Forward::decode_with(request(&ip).encode(), &mut memo).unwrap());
        assert!(Arc::ptr_eq(&first, &again), "the second request shares the first one's list");
        let other = auth_of(Forward::decode_with(request(&[Id::new("ip", "10.0.0.2")]).encode(), &mut memo).unwrap());
        assert_eq!(&other[..], &[Id::new("ip", "10.0.0.2")]);
        for host in 0..3 * AuthMemo::LISTS {
            let ids = [Id::new("ip", &format!("10.1.0.{host}")), Id::new("digest", "u:h")];
            let decoded = auth_of(Forward::decode_with(request(&ids).encode(), &mut memo).unwrap());
            assert_eq!(&decoded[..], &ids);
            assert!(memo.lists.len() <= AuthMemo::LISTS);
        }
        let evicted = auth_of(Forward::decode_with(request(&ip).encode(), &mut memo).unwrap());
        assert_eq!(&evicted[..], &ip);
        assert!(!Arc::ptr_eq(&first, &evicted), "a list pushed out of the memo is decoded afresh");
    }

    #[test]
    fn the_list_used_last_stays_while_others_come_and_go() {
        let mut memo = AuthMemo::default();
        let ip = [Id::new("ip", "10.0.0.1")];
        let kept = auth_of(Forward::decode_with(request(&ip).encode(), &mut memo).unwrap());
        for host in 0..4 * AuthMemo::LISTS {
            let other = [Id::new("ip", &format!("10.2.0.{host}"))];
            Forward::decode_with(request(&other).encode(), &mut memo).unwrap();
            // The busy session writes between the others.
            let again = auth_of(Forward::decode_with(request(&ip).encode(), &mut memo).unwrap());
            assert!(Arc::ptr_eq(&kept, &again), "evicted after {host} other hosts");
        }
    }

    #[test]
    fn a_large_list_is_decoded_for_its_request_alone() {
        // A peer sending frame-sized lists must not make the leader hold 16 of them.
        let mut memo = AuthMemo::default();
        let large = [Id::new("digest", &"u".repeat(AuthMemo::MAX_LIST_BYTES))];
        let decoded = auth_of(Forward::decode_with(request(&large).encode(), &mut memo).unwrap());
        assert_eq!(&decoded[..], &large);
        assert!(memo.lists.is_empty(), "a list over MAX_LIST_BYTES is not held");
    }

    proptest! {
        #[test]
        fn items_round_trip(item in item()) {
            prop_assert_eq!(item.encode().len(), item.size_hint(), "the size hint is exact");
            prop_assert_eq!(Forward::decode(item.encode()).unwrap(), item);
        }

        /// Through one memo, as the leader decodes a stream of forwards: the same items as without it.
        #[test]
        fn items_decoded_through_a_memo_round_trip(items in proptest::collection::vec(item(), 0..40)) {
            let mut memo = AuthMemo::default();
            for item in items {
                prop_assert_eq!(Forward::decode_with(item.encode(), &mut memo).unwrap(), item);
                prop_assert!(memo.lists.len() <= AuthMemo::LISTS);
            }
        }

        #[test]
        fn truncated_items_are_errors(item in item(), cut in any::<proptest::sample::Index>()) {
            let bytes = item.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(Forward::decode(bytes.slice(..cut)).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in any::<Vec<u8>>()) {
            let _ = Forward::decode(bytes.into());
        }
    }
}
