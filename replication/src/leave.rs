//! Why a server leaves its leader, its followers or its sync and goes back to electing, so that the reason is
//! logged rather than discarded; and the protocol violations of a peer, which drop the link to it.

use crate::broadcast::StreamError;
use crate::discovery::DiscoveryError;
use crate::follower_sync::SyncError;
use crate::message::ServerId;

/// A message from a peer that makes no sense where this server is in the protocol: the peer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Discovery failed (a stale leader, a follower ahead of its leader).
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The leader broke the sync protocol (a chunk at the wrong offset, a gap, a message out of phase).
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The leader's proposals skip or repeat zxids.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A notification whose sender is not the server whose connection it came on.
    #[error("a notification claiming to be from server {}", claimed.0)]
    ForgedSender {
        /// The sender it claims.
        claimed: ServerId,
    },
    /// An ACKEPOCH from a follower this leader is syncing or has synced already (each would start another
    /// sync stream for it).
    #[error("ACKEPOCH from a follower that is synced or being synced")]
    RepeatedAckEpoch,
}

/// Why a server goes back to electing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Leave {
    /// The leader said nothing for too long.
    #[error("the leader was silent for too long")]
    LeaderSilent,
    /// Discovery and sync with the leader did not end within initLimit.
    #[error("the sync with the leader did not end within initLimit")]
    SyncTooSlow,
    /// The connection to the leader broke.
    #[error("the connection to the leader broke")]
    LeaderGone,
    /// A leader whose quorum did not sync within initLimit.
    #[error("no quorum synced within initLimit")]
    NoQuorumSynced,
    /// A leader that no longer hears from a quorum.
    #[error("no longer hears from a quorum")]
    LostQuorum,
    /// A leader's discovery failed because of what a follower (or the leader itself) holds: the election
    /// picked the wrong server, and the protocol says elect again.
    #[error("discovery failed on what server {} holds: {error}", follower.0)]
    Discovery {
        /// The follower (or this leader).
        follower: ServerId,
        /// Why.
        error: DiscoveryError,
    },
    /// A peer broke the protocol.
    #[error("server {} broke the protocol: {violation}", peer.0)]
    Violation {
        /// The peer.
        peer: ServerId,
        /// What it did.
        violation: Violation,
    },
}

impl Leave {
    /// Whether a peer is to blame, or the protocol ran into trouble (logged as a warning, the rest as
    /// information).
    pub fn is_violation(&self) -> bool {
        matches!(self, Leave::Violation { .. } | Leave::Discovery { .. })
    }
}
