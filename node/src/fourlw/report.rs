//! The server state the answers are rendered from: the [`Report`] the connection code fills, and its parts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::Dump;

/// The server's role, as `stat` (`Mode:`) and `mntr` (`zk_server_state`) name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Leads a quorum.
    Leader,
    /// Follows a leader and votes.
    Follower,
    /// Follows a leader without voting.
    Observer,
    /// A single server, no quorum.
    #[default]
    Standalone,
    /// Cut off from the quorum, serving reads only (`readonlymode.enabled`).
    ReadOnly,
}

impl Mode {
    /// ZooKeeper's name for the mode (`ServerStats.getServerState()`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Leader => "leader",
            Mode::Follower => "follower",
            Mode::Observer => "observer",
            Mode::Standalone => "standalone",
            Mode::ReadOnly => "read-only",
        }
    }

    /// Whether ZooKeeper runs a `QuorumZooKeeperServer` in this mode (which adds `peer_state`, `quorum_size`
    /// and `membership:`); a read-only server is a plain `ZooKeeperServer` that prints the quorum limits only.
    pub(super) fn in_quorum(self) -> bool {
        matches!(self, Mode::Leader | Mode::Follower | Mode::Observer)
    }
}

/// Everything the answers need: a snapshot of the server's state that the connection code fills.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `Zookeeper version:` and `zk_version`; ZooKeeper's reads `3.8.4-<git sha>, built on <date> UTC`.
    pub version: String,
    /// The role.
    pub mode: Mode,
    /// Whether requests are being served (ZooKeeper's `isZKServerRunning()`); if not, most words answer
    /// [`NOT_SERVING`](super::NOT_SERVING).
    pub serving: bool,
    /// `QuorumPeer.getDetailedPeerState()`, printed as `zk_peer_state` by a leader, follower or observer:
    /// `leading - broadcast`, `following - synchronization - diff`, ... (state, then the Zab phase unless
    /// `election`, then the sync mode unless `none`). Readiness probes wait for `... - broadcast`.
    pub peer_state: String,
    /// The last zxid applied (`Zxid:`).
    pub zxid: i64,
    /// Znodes in the tree.
    pub node_count: u64,
    /// Smallest request latency since the last `srst`, ms (0 if none).
    pub min_latency_ms: i64,
    /// Mean request latency, ms; printed rounded to 4 decimals as ZooKeeper's `AvgMinMaxCounter` does.
    pub avg_latency_ms: f64,
    /// Largest request latency, ms.
    pub max_latency_ms: i64,
    /// Client packets received since the last `srst`.
    pub packets_received: u64,
    /// Client packets sent since the last `srst`.
    pub packets_sent: u64,
    /// Requests received but not yet answered.
    pub outstanding_requests: u64,
    /// Milliseconds since the server started serving (`zk_uptime`).
    pub uptime_ms: u64,
    /// Every client connection, the one asking included, as ZooKeeper lists it (`Connections:` is their count).
    pub connections: Vec<Connection>,
    /// Watches in total, data and child (`zk_watch_count`).
    pub watch_count: u64,
    /// The data watches (`getData`/`exists`) that `wchs` summarises; ZooKeeper leaves child watches out of it.
    pub data_watches: WatchSummary,
    /// Ephemeral znodes.
    pub ephemerals_count: u64,
    /// Bytes of znode paths and data (`DataTree.approximateDataSize()`).
    pub approximate_data_size: u64,
    /// Sessions in the tree (`zk_global_sessions`).
    pub global_sessions: u64,
    /// Sessions local to this server (`zk_local_sessions`).
    pub local_sessions: u64,
    /// File descriptors open.
    pub open_file_descriptors: u64,
    /// The process's file descriptor limit.
    pub max_file_descriptors: u64,
    /// Voting members (`zk_quorum_size`, printed in a quorum mode).
    pub quorum_size: u64,
    /// A leader's view of its learners (printed only when `mode` is [`Mode::Leader`]).
    pub leader: LeaderStats,
    /// The server an observer follows (`zk_observer_master_id`, printed only when `mode` is
    /// [`Mode::Observer`], as `ObserverZooKeeperServer.dumpMonitorValues` does); -1 for none.
    pub observer_master_id: i64,
    /// What `conf` prints.
    pub conf: Conf,
    /// Bytes under `dataDir` (the snapshots): `dirs` `datadir_size`, `conf` `dataDirSize`. ZooKeeper 3.8 swaps
    /// this and [`Report::log_dir_size`] in both places (its `getDataDirSize()` measures the log directory); the
    /// labels here say what they measure.
    pub snapshot_dir_size: u64,
    /// Bytes under `dataLogDir` (the write-ahead log): `dirs` `logdir_size`, `conf` `dataLogSize`.
    pub log_dir_size: u64,
    /// `envi`'s `key=value` lines, in order. ZooKeeper's are `zookeeper.version`, `host.name`, `java.version`,
    /// `java.vendor`, `java.home`, `java.class.path`, `java.library.path`, `java.io.tmpdir`, `java.compiler`,
    /// `os.name`, `os.arch`, `os.version`, `user.name`, `user.home`, `user.dir`, `os.memory.free`,
    /// `os.memory.max`, `os.memory.total` (`<NA>` where unknown, memory as `123MB`).
    pub environment: Vec<(String, String)>,
    /// Ensemble's own `mntr` metrics (WAL fsync times, ...), appended after ZooKeeper's; keys without the `zk_`
    /// prefix, which is added to every key as ZooKeeper does.
    pub extra: Vec<(String, String)>,
    /// `gtmk` and `stmk`: ZooKeeper's trace mask (`ZooTrace`; default 306), printed in decimal.
    pub trace_mask: i64,
    /// `wchc`: each session with data watches (getData, exists, persistent and recursive), and their paths.
    pub watches_by_session: Vec<(i64, Vec<String>)>,
    /// `wchp`: each path with data watches, and the sessions watching it.
    pub watches_by_path: Vec<(String, Vec<i64>)>,
    /// `hash`: the tree digest every 128th zxid (ZooKeeper's `DataTree` digest log, its last 1024).
    pub digest_log: Vec<(i64, u64)>,
    /// `dump`: sessions, ephemerals and connections by expiry.
    pub dump: Dump,
}

/// One client connection, as `stat` (brief) and `cons` (full) print it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The client's address.
    pub remote: SocketAddr,
    /// Java NIO interest ops, hex in brackets (`1` reading, `5` reading and writing, `0` for the connection that
    /// asks: ZooKeeper takes it off the selector to answer).
    pub interest_ops: u32,
    /// Requests received and not yet answered.
    pub queued: u64,
    /// Packets received.
    pub received: u64,
    /// Packets sent.
    pub sent: u64,
    /// The session, 0 before one is established (then `cons` prints no session fields).
    pub session_id: i64,
    /// The last request's abbreviation ([`last_op_name`](super::last_op_name)).
    pub last_op: String,
    /// When the connection was accepted, ms since the Unix epoch.
    pub established_ms: i64,
    /// The negotiated session timeout, ms.
    pub session_timeout_ms: i32,
    /// The last client xid answered; negative (none yet) is not printed.
    pub last_cxid: i64,
    /// The zxid of the last answer (-1 before any).
    pub last_zxid: i64,
    /// When the last answer was sent, ms (ZooKeeper's `Time.currentElapsedTime()`, a monotonic clock).
    pub last_response_ms: i64,
    /// The last request's latency, ms.
    pub last_latency_ms: i64,
    /// Smallest latency, ms (0 if none).
    pub min_latency_ms: i64,
    /// Mean latency, ms, truncated to an integer as ZooKeeper's connection counters do.
    pub avg_latency_ms: i64,
    /// Largest latency, ms.
    pub max_latency_ms: i64,
}

/// ZooKeeper's values for a connection that has answered nothing yet (`ServerCnxn.resetStats`).
impl Default for Connection {
    fn default() -> Connection {
        Connection {
            remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            interest_ops: 0,
            queued: 0,
            received: 0,
            sent: 0,
            session_id: 0,
            last_op: "NA".to_owned(),
            established_ms: 0,
            session_timeout_ms: 0,
            last_cxid: -1,
            last_zxid: -1,
            last_response_ms: 0,
            last_latency_ms: 0,
            min_latency_ms: 0,
            avg_latency_ms: 0,
            max_latency_ms: 0,
        }
    }
}

/// `wchs`: `<connections> connections watching <paths> paths` and `Total watches:<watches>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchSummary {
    /// Connections with at least one watch.
    pub connections: u64,
    /// Paths with at least one watch.
    pub paths: u64,
    /// Watches (a connection watching a path counts once).
    pub watches: u64,
}

/// A leader's `mntr` lines and `stat`'s `Proposal sizes` (`LeaderZooKeeperServer.registerMetrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderStats {
    /// Followers and observers connected, synced or not (`zk_learners`: `Leader.getLearners()`).
    pub learners: u64,
    /// Followers in sync, receiving proposals (`zk_synced_followers`: `Leader.getForwardingFollowers()`).
    pub synced_followers: u64,
    /// Followers in sync that are not in the voting view (`zk_synced_non_voting_followers`).
    pub synced_non_voting_followers: u64,
    /// Observers in sync (`zk_synced_observers`: `Leader.getObservingLearners()`).
    pub synced_observers: u64,
    /// Learners' sync requests waiting for earlier proposals to commit, counted by the proposal they wait for
    /// (`zk_pending_syncs`: `Leader.getNumPendingSyncs()`).
    pub pending_syncs: u64,
    /// Milliseconds since this server began to lead and serve (`zk_leader_uptime`: `Leader.getUptime()`).
    pub leader_uptime_ms: u64,
    /// Bytes of the last proposal; `None` (printed `-1`) before the first.
    pub last_proposal_size: Option<u32>,
    /// Bytes of the smallest proposal.
    pub min_proposal_size: Option<u32>,
    /// Bytes of the largest proposal.
    pub max_proposal_size: Option<u32>,
}

/// What `conf` prints: the effective configuration, defaults applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conf {
    /// `clientPort`.
    pub client_port: u16,
    /// `secureClientPort`, printed `-1` when there is none.
    pub secure_client_port: Option<u16>,
    /// `dataDir` as ZooKeeper prints it: absolute, with its `version-2` subdirectory (`/data/version-2`).
    pub data_dir: String,
    /// `dataLogDir`, the same way (`dataDir`'s when not configured apart).
    pub data_log_dir: String,
    /// `tickTime`, ms.
    pub tick_time_ms: u32,
    /// `maxClientCnxns` per host (0: no limit).
    pub max_client_cnxns: u32,
    /// The effective minimum session timeout, ms (`2 * tickTime` unless configured).
    pub min_session_timeout_ms: u32,
    /// The effective maximum session timeout, ms (`20 * tickTime` unless configured).
    pub max_session_timeout_ms: u32,
    /// `clientPortListenBacklog` (-1: the OS default).
    pub client_port_listen_backlog: i32,
    /// `myid` (0 standalone).
    pub server_id: u64,
    /// `initLimit`, in ticks (printed in every mode but standalone).
    pub init_limit: u32,
    /// `syncLimit`, in ticks.
    pub sync_limit: u32,
    /// `electionAlg` (3, the only one left).
    pub election_alg: u32,
    /// This server's election port.
    pub election_port: u16,
    /// This server's quorum (peer) port.
    pub quorum_port: u16,
    /// The ensemble's members after `membership:`, by id: the value of each `server.N=` line in ZooKeeper's
    /// canonical form (`host:2888:3888:participant;0.0.0.0:2181`).
    pub members: Vec<(u64, String)>,
    /// The membership's version (the zxid of the last reconfig, 0 without), printed in hex as `version=`.
    pub config_version: u64,
}
