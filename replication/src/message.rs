//! The peer wire format: every message servers exchange, framed for TCP.
//!
//! ```text
//!  frame    len u32 BE (of what follows) | tag u8 | fields, big-endian, in the order listed below
//!
//!  tag  message        fields
//!   1   Notification   leader u64 | zxid u64 | peer epoch u32 | election epoch u64 | state u8 | sender u64
//!                      (state: 0 looking, 1 following, 2 leading, 3 observing, 4 repairing)
//!   2   FollowerInfo   accepted epoch u32 | last zxid u64
//!   3   LeaderInfo     new epoch u32
//!   4   AckEpoch       current epoch u32 | last zxid u64
//!   5   Diff           zxid u64
//!   6   Trunc          zxid u64
//!   7   Snap           zxid u64 | total bytes u64
//!   8   SnapChunk      offset u64 | len u32 | bytes
//!   9   NewLeader      epoch u32 | zxid u64
//!  10   AckNewLeader   zxid u64
//!  11   UpToDate       -
//!  12   Proposal       zxid u64 | len u32 | txn bytes
//!  13   Ack            zxid u64            (cumulative: everything up to zxid is durable)
//!  14   Commit         zxid u64            (cumulative: everything up to zxid is committed)
//!  15   Ping           zxid u64 | round u64 (the sender's last committed zxid; the leader numbers its
//!                                           heartbeats and a follower echoes the number it answers)
//!  16   Digest         zxid u64 | digest u64
//!  17   Forward        len u32 | bytes     (opaque to the protocol: the node layer's requests to its leader
//!                                           and answers to them; the node owns that format)
//! ```
//!
//! # Limits
//! A frame is at most `max_frame` bytes (the codec's setting; a snapshot chunk or a proposal carries at most
//! one txn of `jute.maxbuffer` plus headers). A longer length prefix is refused before anything is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use wal::{Epoch, Zxid};

/// A server's id (`myid`, the `N` of `server.N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(pub u64);

/// What a server is doing, as it tells its peers during election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Electing a leader.
    Looking = 0,
    /// Following an elected leader.
    Following = 1,
    /// Leading.
    Leading = 2,
    /// A non-voting member.
    Observing = 3,
    /// Electing, as a server repairing its log from its peers: it votes for others only (see
    /// [`crate::election`]). Not one of ZooKeeper's states.
    Repairing = 4,
}

/// A fast-leader-election notification: the sender's current vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The server the sender votes for.
    pub leader: ServerId,
    /// The last zxid of the voted-for server, as the sender knows it.
    pub zxid: Zxid,
    /// The epoch of the voted-for server's last zxid.
    pub peer_epoch: Epoch,
    /// The sender's election round (ZooKeeper's logical clock).
    pub election_epoch: u64,
    /// The sender's state.
    pub state: PeerState,
    /// The sender.
    pub sender: ServerId,
}

/// Every message between servers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Message {
    Notification(Notification),
    FollowerInfo { accepted_epoch: Epoch, last_zxid: Zxid },
    LeaderInfo { new_epoch: Epoch },
    AckEpoch { current_epoch: Epoch, last_zxid: Zxid },
    Diff { zxid: Zxid },
    Trunc { zxid: Zxid },
    Snap { zxid: Zxid, total_bytes: u64 },
    SnapChunk { offset: u64, data: Bytes },
    NewLeader { epoch: Epoch, zxid: Zxid },
    AckNewLeader { zxid: Zxid },
    UpToDate,
    Proposal { zxid: Zxid, txn: Bytes },
    Ack { zxid: Zxid },
    Commit { zxid: Zxid },
    Ping { zxid: Zxid, round: u64 },
    Digest { zxid: Zxid, digest: u64 },
    Forward { data: Bytes },
}

/// Why bytes did not decode as a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends before its fields do.
    #[error("message truncated")]
    Truncated,
    /// Bytes remain after the message's fields.
    #[error("{0} bytes after the message")]
    Trailing(usize),
    /// An unknown tag.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// An unknown peer state.
    #[error("unknown peer state {0}")]
    UnknownState(u8),
    /// A frame longer than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// The length prefix.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An IO error on the connection.
    #[error("io: {0}")]
    Io(String),
}

impl From<std::io::Error> for DecodeError {
    fn from(e: std::io::Error) -> Self {
        DecodeError::Io(e.to_string())
    }
}

impl Message {
    /// About how many bytes the message takes on the wire (its payload; fixed fields count as 32).
    pub fn approximate_len(&self) -> usize {
        32 + match self {
            Message::Proposal { txn, .. } => txn.len(),
            Message::SnapChunk { data, .. } | Message::Forward { data } => data.len(),
            _ => 0,
        }
    }

    /// Encodes the message body (tag and fields, without the length prefix).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Message::Notification(n) => {
                out.put_u8(1);
                out.put_u64(n.leader.0);
                out.put_u64(n.zxid.0);
                out.put_u32(n.peer_epoch.0);
                out.put_u64(n.election_epoch);
                out.put_u8(n.state as u8);
                out.put_u64(n.sender.0);
            }
            Message::FollowerInfo { accepted_epoch, last_zxid } => {
                out.put_u8(2);
                out.put_u32(accepted_epoch.0);
                out.put_u64(last_zxid.0);
            }
            Message::LeaderInfo { new_epoch } => {
                out.put_u8(3);
                out.put_u32(new_epoch.0);
            }
            Message::AckEpoch { current_epoch, last_zxid } => {
                out.put_u8(4);
                out.put_u32(current_epoch.0);
                out.put_u64(last_zxid.0);
            }
            Message::Diff { zxid } => put_zxid(out, 5, *zxid),
            Message::Trunc { zxid } => put_zxid(out, 6, *zxid),
            Message::Snap { zxid, total_bytes } => {
                put_zxid(out, 7, *zxid);
                out.put_u64(*total_bytes);
            }
            Message::SnapChunk { offset, data } => {
                out.put_u8(8);
                out.put_u64(*offset);
                put_bytes(out, data);
            }
            Message::NewLeader { epoch, zxid } => {
                out.put_u8(9);
                out.put_u32(epoch.0);
                out.put_u64(zxid.0);
            }
            Message::AckNewLeader { zxid } => put_zxid(out, 10, *zxid),
            Message::UpToDate => out.put_u8(11),
            Message::Proposal { zxid, txn } => {
                put_zxid(out, 12, *zxid);
                put_bytes(out, txn);
            }
            Message::Ack { zxid } => put_zxid(out, 13, *zxid),
            Message::Commit { zxid } => put_zxid(out, 14, *zxid),
            Message::Ping { zxid, round } => {
                put_zxid(out, 15, *zxid);
                out.put_u64(*round);
            }
            Message::Digest { zxid, digest } => {
                put_zxid(out, 16, *zxid);
                out.put_u64(*digest);
            }
            Message::Forward { data } => {
                out.put_u8(17);
                put_bytes(out, data);
            }
        }
    }

    /// Decodes a message body; all of `buf` must be used.
    pub fn decode(mut buf: Bytes) -> Result<Message, DecodeError> {
        let b = &mut buf;
        let message = match u8_(b)? {
            1 => Message::Notification(Notification {
                leader: ServerId(u64_(b)?),
                zxid: Zxid(u64_(b)?),
                peer_epoch: Epoch(u32_(b)?),
                election_epoch: u64_(b)?,
                state: state(u8_(b)?)?,
                sender: ServerId(u64_(b)?),
            }),
            2 => Message::FollowerInfo { accepted_epoch: Epoch(u32_(b)?), last_zxid: Zxid(u64_(b)?) },
            3 => Message::LeaderInfo { new_epoch: Epoch(u32_(b)?) },
            4 => Message::AckEpoch { current_epoch: Epoch(u32_(b)?), last_zxid: Zxid(u64_(b)?) },
            5 => Message::Diff { zxid: Zxid(u64_(b)?) },
            6 => Message::Trunc { zxid: Zxid(u64_(b)?) },
            7 => Message::Snap { zxid: Zxid(u64_(b)?), total_bytes: u64_(b)? },
            8 => Message::SnapChunk { offset: u64_(b)?, data: bytes_(b)? },
            9 => Message::NewLeader { epoch: Epoch(u32_(b)?), zxid: Zxid(u64_(b)?) },
            10 => Message::AckNewLeader { zxid: Zxid(u64_(b)?) },
            11 => Message::UpToDate,
            12 => Message::Proposal { zxid: Zxid(u64_(b)?), txn: bytes_(b)? },
            13 => Message::Ack { zxid: Zxid(u64_(b)?) },
            14 => Message::Commit { zxid: Zxid(u64_(b)?) },
            15 => Message::Ping { zxid: Zxid(u64_(b)?), round: u64_(b)? },
            16 => Message::Digest { zxid: Zxid(u64_(b)?), digest: u64_(b)? },
            17 => Message::Forward { data: bytes_(b)? },
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        if buf.has_remaining() {
            return Err(DecodeError::Trailing(buf.remaining()));
        }
        Ok(message)
    }
}

fn put_zxid(out: &mut BytesMut, tag: u8, zxid: Zxid) {
    out.put_u8(tag);
    out.put_u64(zxid.0);
}

fn put_bytes(out: &mut BytesMut, data: &[u8]) {
    out.put_u32(u32::try_from(data.len()).expect("payloads are bounded by the frame limit"));
    out.put_slice(data);
}

fn u8_(b: &mut Bytes) -> Result<u8, DecodeError> {
    b.try_get_u8().map_err(|_| DecodeError::Truncated)
}

fn u32_(b: &mut Bytes) -> Result<u32, DecodeError> {
    b.try_get_u32().map_err(|_| DecodeError::Truncated)
}

fn u64_(b: &mut Bytes) -> Result<u64, DecodeError> {
    b.try_get_u64().map_err(|_| DecodeError::Truncated)
}

fn bytes_(b: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::try_from(u32_(b)?).map_err(|_| DecodeError::Truncated)?;
    if b.remaining() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(b.split_to(len))
}

fn state(v: u8) -> Result<PeerState, DecodeError> {
    Ok(match v {
        0 => PeerState::Looking,
        1 => PeerState::Following,
        2 => PeerState::Leading,
        3 => PeerState::Observing,
        4 => PeerState::Repairing,
        other => return Err(DecodeError::UnknownState(other)),
    })
}

/// The tokio-util codec for peer connections: a u32 length prefix, then a message.
#[derive(Clone, Debug)]
pub struct PeerCodec {
    max_frame: usize,
}

impl PeerCodec {
    /// A codec refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> PeerCodec {
        PeerCodec { max_frame }
    }
}

impl tokio_util::codec::Decoder for PeerCodec {
    type Item = Message;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = usize::try_from(u32::from_be_bytes(src[..4].try_into().expect("4 bytes"))).unwrap_or(usize::MAX);
        if len > self.max_frame {
            return Err(DecodeError::TooLong { len, max: self.max_frame });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        Message::decode(src.split_to(len).freeze()).map(Some)
    }

    /// A connection that ends inside a frame sent a truncated frame: the peer's fault, said as such.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        match self.decode(src)? {
            None if !src.is_empty() => Err(DecodeError::Truncated),
            decoded => Ok(decoded),
        }
    }
}

impl tokio_util::codec::Encoder<Message> for PeerCodec {
    type Error = DecodeError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), DecodeError> {
        let start = dst.len();
        dst.put_u32(0);
        message.encode(dst);
        let len = dst.len() - start - 4;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(DecodeError::TooLong { len, max: self.max_frame });
        }
        dst[start..start + 4].copy_from_slice(&u32::try_from(len).expect("below max_frame").to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

    fn message() -> impl Strategy<Value = Message> {
        let zxid = any::<u64>().prop_map(Zxid);
        let epoch = any::<u32>().prop_map(Epoch);
        let data = proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
        let state = prop_oneof![
            Just(PeerState::Looking),
            Just(PeerState::Following),
            Just(PeerState::Leading),
            Just(PeerState::Observing),
            Just(PeerState::Repairing)
        ];
        prop_oneof![
            (any::<u64>(), zxid.clone(), epoch.clone(), any::<u64>(), state, any::<u64>()).prop_map(
                |(l, z, e, ee, s, from)| {
                    Message::Notification(Notification {
                        leader: ServerId(l),
                        zxid: z,
                        peer_epoch: e,
                        election_epoch: ee,
                        state: s,
                        sender: ServerId(from),
                    })
                }
            ),
            (epoch.clone(), zxid.clone())
                .prop_map(|(accepted_epoch, last_zxid)| Message::FollowerInfo { accepted_epoch, last_zxid }),
            epoch.clone().prop_map(|new_epoch| Message::LeaderInfo { new_epoch }),
            (epoch.clone(), zxid.clone())
                .prop_map(|(current_epoch, last_zxid)| Message::AckEpoch { current_epoch, last_zxid }),
            zxid.clone().prop_map(|zxid| Message::Diff { zxid }),
            zxid.clone().prop_map(|zxid| Message::Trunc { zxid }),
            (zxid.clone(), any::<u64>()).prop_map(|(zxid, total_bytes)| Message::Snap { zxid, total_bytes }),
            (any::<u64>(), data.clone()).prop_map(|(offset, data)| Message::SnapChunk { offset, data }),
            (epoch, zxid.clone()).prop_map(|(epoch, zxid)| Message::NewLeader { epoch, zxid }),
            zxid.clone().prop_map(|zxid| Message::AckNewLeader { zxid }),
            Just(Message::UpToDate),
            (zxid.clone(), data.clone()).prop_map(|(zxid, txn)| Message::Proposal { zxid, txn }),
            data.prop_map(|data| Message::Forward { data }),
            zxid.clone().prop_map(|zxid| Message::Ack { zxid }),
            zxid.clone().prop_map(|zxid| Message::Commit { zxid }),
            (zxid.clone(), any::<u64>()).prop_map(|(zxid, round)| Message::Ping { zxid, round }),
            (zxid, any::<u64>()).prop_map(|(zxid, digest)| Message::Digest { zxid, digest }),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip_through_the_codec(messages in proptest::collection::vec(message(), 1..8), split in any::<proptest::sample::Index>()) {
            let mut codec = PeerCodec::new(1 << 20);
            let mut wire = BytesMut::new();
            for m in &messages {
                codec.encode(m.clone(), &mut wire).unwrap();
            }
            // Delivered in two pieces, split anywhere.
            let mut first = wire.split_to(split.index(wire.len() + 1));
            let mut decoded = Vec::new();
            while let Some(m) = codec.decode(&mut first).unwrap() {
                decoded.push(m);
            }
            first.unsplit(wire);
            while let Some(m) = codec.decode(&mut first).unwrap() {
                decoded.push(m);
            }
            prop_assert_eq!(decoded, messages);
            prop_assert!(first.is_empty());
        }

        #[test]
        fn truncated_bodies_are_errors_not_panics(m in message(), cut in any::<proptest::sample::Index>()) {
            let mut body = BytesMut::new();
            m.encode(&mut body);
            let cut = cut.index(body.len());
            prop_assert!(Message::decode(body.freeze().slice(..cut)).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(Bytes::from(bytes.clone()));
            let mut codec = PeerCodec::new(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut codec = PeerCodec::new(100);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        assert!(matches!(codec.decode(&mut buf), Err(DecodeError::TooLong { .. })));
        let big = Message::Proposal { zxid: Zxid(1), txn: Bytes::from(vec![0; 200]) };
        let mut out = BytesMut::new();
        assert!(matches!(codec.encode(big, &mut out), Err(DecodeError::TooLong { .. })));
        assert!(out.is_empty(), "nothing half-written");
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_a_truncated_frame() {
        let mut codec = PeerCodec::new(100);
        let mut buf = BytesMut::from(&[0, 0, 0, 9, 13, 0, 0][..]);
        assert_eq!(codec.decode_eof(&mut buf), Err(DecodeError::Truncated));
        assert_eq!(codec.decode_eof(&mut BytesMut::new()), Ok(None), "a clean end between frames");
    }

    #[test]
    fn layout_of_a_proposal() {
        let mut out = BytesMut::new();
        PeerCodec::new(1024)
            .encode(Message::Proposal { zxid: Zxid(0x0102), txn: Bytes::from_static(b"tx") }, &mut out)
            .unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 15, 12, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2, b't', b'x']);
    }
}
