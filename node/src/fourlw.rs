//! ZooKeeper's four-letter words (`ruok`, `srvr`, `stat`, `mntr`, ...): the text answers, byte for byte as Apache
//! ZooKeeper 3.8 writes them, so that monitoring scripts, `zkServer.sh status` and exporters parse Ensemble
//! unchanged.
//!
//! Pure: the connection code fills a [`Report`] with the server's state, calls [`answer`], writes the string and
//! closes the connection. Where each format comes from in ZooKeeper 3.8:
//!
//! - `ruok`: `RuokCommand` (`imok`, no newline, even when not serving).
//! - `srvr`, `stat`: `StatCommand`, `ServerStats.toString`, `ServerCnxn.dumpConnectionInfo` (brief),
//!   `BufferStats.toString`.
//! - `cons`: `ConsCommand`, `ServerCnxn.dumpConnectionInfo` (full).
//! - `mntr`: `MonitorCommand` (`zk_<key>\t<value>`), `ZooKeeperServer.dumpMonitorValues` and `registerMetrics`,
//!   `QuorumZooKeeperServer` (`peer_state`, `quorum_size`), `LeaderZooKeeperServer.registerMetrics`.
//! - `conf`: `ConfCommand`, `ZooKeeperServer.dumpConf`, `QuorumZooKeeperServer.dumpConf`, `QuorumMaj.toString`.
//! - `envi`: `EnvCommand`, `Environment.list`.
//! - `wchs`: `WatchCommand`, `DataTree.dumpWatchesSummary`, `WatchManager.toString`.
//! - `wchc`, `wchp`: `WatchCommand`, `WatchManager.dumpWatches` (the data watch manager only: getData, exists,
//!   persistent and recursive watches; child watches are not listed), then an empty line.
//! - `hash`: `DigestCommand` (`DataTree`'s digest log: every 128th zxid, the last 1024).
//! - `gtmk`, `stmk`: `TraceMaskCommand`, `SetTraceMaskCommand` (the mask in decimal, no newline; `stmk` reads
//!   the new mask, a big-endian long, after the word).
//! - `dirs`: `DirsCommand`.
//! - `dump`: `DumpCommand` ([`dump`]).
//! - `isro`: `IsroCommand` (`rw`, `ro`, or `null` when not serving; no newline).
//! - `crst`, `srst`: `CnxnStatResetCommand`, `StatResetCommand`.
//! - a word not in `4lw.commands.whitelist`: `NIOServerCnxn.checkFourLetterWord` with `NopCommand`.
//!
//! Every answer but `ruok`, `envi` and `isro` is [`NOT_SERVING`] while the server is not serving (ZooKeeper's
//! `isZKServerRunning()`: during election, for instance).
//!
//! Values are ZooKeeper's Java renderings: zxids, session ids and cxids in `Long.toHexString` (two's complement,
//! no leading zeros), averages in `Double.toString` (`0.0`, `4.25`), addresses in `InetSocketAddress.toString`
//! (`/127.0.0.1:53422`).

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub mod dump;
pub use dump::Dump;

/// ZooKeeper's default trace mask (`ZooTrace`): client requests, server packets, sessions, warnings.
pub const DEFAULT_TRACE_MASK: i64 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8);

/// What every command that needs a running server answers while it is not serving.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests\n";

/// Every word ZooKeeper 3.8 recognises in the first four bytes of a connection (`FourLetterCommands`).
pub const KNOWN_WORDS: [&str; 18] = [
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "hash", "isro", "mntr", "ruok", "srst", "srvr", "stat",
    "stmk", "wchc", "wchp", "wchs",
];

/// The word the first four bytes of a connection spell, if they spell one ZooKeeper knows.
///
/// ZooKeeper reads those bytes as the big-endian length of the first frame and checks them against the words
/// before anything else. A real `ConnectRequest` can never look like a word: its frame is under 100 bytes, so its
/// length's first byte is `0x00`, while every word starts with a lowercase ASCII letter, which as a length is
/// at least `0x6300_0000` (1.6 GB), far beyond `jute.maxbuffer`. The check applies only to the first frame of a
/// connection. ZooKeeper's other 4-byte code, telnet's close sequence `ff f4 ff fd`, needs no word here: as a
/// length it is negative, and refusing it closes the connection, which is all ZooKeeper does with it.
pub fn four_letter_word(first4: &[u8]) -> Option<&'static str> {
    let head = first4.get(..4)?;
    KNOWN_WORDS.iter().copied().find(|w| w.as_bytes() == head)
}

/// Whether the first four bytes of a connection are a four-letter word (see [`four_letter_word`]).
pub fn is_four_letter_word(first4: &[u8]) -> bool {
    four_letter_word(first4).is_some()
}

/// The answer to a word that is not in `4lw.commands.whitelist`.
///
/// ZooKeeper always enables `srvr` (which `zkServer.sh status` uses), and `isro` when read-only mode is on,
/// whatever the whitelist says.
pub fn not_whitelisted(word: &str) -> String {
    format!("{word} is not executed because it is not in the whitelist.\n")
}

/// The bytes ZooKeeper writes for `word` before it closes the connection, or `None` if `word` is not one of
/// [`KNOWN_WORDS`].
///
/// `crst` and `srst` only produce the confirmation; resetting the statistics is the caller's work.
pub fn answer(word: &str, report: &Report) -> Option<String> {
    let word = KNOWN_WORDS.iter().copied().find(|w| *w == word)?;
    Some(Answer { word, report }.to_string())
}

/// `lop=` in `cons`: ZooKeeper's four-letter abbreviation of the last request's opcode (set by
/// `FinalRequestProcessor`), `NA` for none.
pub fn last_op_name(op: i32) -> &'static str {
    match op {
        11 => "PING",
        -10 => "SESS",
        -11 => "CLOS",
        14 => "MULT",
        22 => "MLTR",
        1 | 15 | 19 | 21 => "CREA",
        2 | 20 => "DELE",
        5 => "SETD",
        16 => "RECO",
        7 => "SETA",
        9 => "SYNC",
        13 => "CHEC",
        3 => "EXIS",
        4 => "GETD",
        101 => "SETW",
        105 => "STW2",
        106 => "ADDW",
        6 => "GETA",
        8 | 12 => "GETC",
        104 => "GETACN",
        17 => "CHKW",
        18 => "REMW",
        103 => "GETE",
        107 => "HOMI",
        _ => "NA",
    }
}

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
    fn in_quorum(self) -> bool {
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
    /// [`NOT_SERVING`].
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
    /// The last request's abbreviation ([`last_op_name`]).
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

/// One answer as a `Display`, so that the renderers can use `?` (writing into a `String` cannot fail).
struct Answer<'a> {
    word: &'static str,
    report: &'a Report,
}

impl fmt::Display for Answer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        match self.word {
            "ruok" => f.write_str("imok"),
            "envi" => envi(f, r),
            "isro" => f.write_str(match (r.serving, r.mode) {
                (false, _) => "null",
                (true, Mode::ReadOnly) => "ro",
                (true, _) => "rw",
            }),
            // `TraceMaskCommand` and `SetTraceMaskCommand` answer whether or not the server serves.
            "gtmk" | "stmk" => write!(f, "{}", r.trace_mask),
            "hash" if !r.serving => f.write_str(NOT_SERVING.trim_end()),
            _ if !r.serving => f.write_str(NOT_SERVING),
            "srvr" => stat(f, r, false),
            "stat" => stat(f, r, true),
            "cons" => cons(f, r),
            "mntr" => mntr(f, r),
            "conf" => conf(f, r),
            "wchs" => {
                let w = r.data_watches;
                writeln!(f, "{} connections watching {} paths\nTotal watches:{}", w.connections, w.paths, w.watches)
            }
            "dirs" => writeln!(f, "datadir_size: {}\nlogdir_size: {}", r.snapshot_dir_size, r.log_dir_size),
            "dump" => dump::dump(f, &r.dump),
            // `WatchManager.dumpWatches`, then `WatchCommand`'s empty line.
            "wchc" => {
                for (session, paths) in &r.watches_by_session {
                    writeln!(f, "0x{session:x}")?;
                    paths.iter().try_for_each(|path| writeln!(f, "\t{path}"))?;
                }
                writeln!(f)
            }
            "wchp" => {
                for (path, sessions) in &r.watches_by_path {
                    writeln!(f, "{path}")?;
                    sessions.iter().try_for_each(|session| writeln!(f, "\t0x{session:x}"))?;
                }
                writeln!(f)
            }
            // `DigestCommand`: `Long.toHexString(zxid) + ": " + digest`, the digest a signed long.
            "hash" => r.digest_log.iter().try_for_each(|&(zxid, digest)| writeln!(f, "{zxid:x}: {}", digest as i64)),
            "crst" => f.write_str("Connection stats reset.\n"),
            "srst" => f.write_str("Server stats reset.\n"),
            _ => Ok(()),
        }
    }
}

/// `srvr` (`clients` false) and `stat`.
fn stat(f: &mut fmt::Formatter<'_>, r: &Report, clients: bool) -> fmt::Result {
    writeln!(f, "Zookeeper version: {}", r.version)?;
    if r.mode == Mode::ReadOnly {
        f.write_str("READ-ONLY mode; serving only read-only clients\n")?;
    }
    if clients {
        f.write_str("Clients:\n")?;
        for c in &r.connections {
            connection(f, c, true)?;
            f.write_char('\n')?;
        }
        f.write_char('\n')?;
    }
    let avg = JavaDouble(round4(r.avg_latency_ms));
    writeln!(f, "Latency min/avg/max: {}/{avg}/{}", r.min_latency_ms, r.max_latency_ms)?;
    writeln!(f, "Received: {}\nSent: {}", r.packets_received, r.packets_sent)?;
    writeln!(f, "Connections: {}\nOutstanding: {}", r.connections.len(), r.outstanding_requests)?;
    writeln!(f, "Zxid: 0x{:x}\nMode: {}\nNode count: {}", r.zxid, r.mode.as_str(), r.node_count)?;
    if r.mode == Mode::Leader {
        let l = &r.leader;
        let (last, min, max) = (size(l.last_proposal_size), size(l.min_proposal_size), size(l.max_proposal_size));
        writeln!(f, "Proposal sizes last/min/max: {last}/{min}/{max}")?;
    }
    Ok(())
}

fn cons(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    for c in &r.connections {
        connection(f, c, false)?;
        f.write_char('\n')?;
    }
    f.write_char('\n')
}

/// `ServerCnxn.dumpConnectionInfo`: ` /addr[ops](queued=..,recved=..,sent=..[,sid=0x..,...])`.
fn connection(f: &mut fmt::Formatter<'_>, c: &Connection, brief: bool) -> fmt::Result {
    write!(f, " {}[{:x}]", JavaAddr(c.remote), c.interest_ops)?;
    write!(f, "(queued={},recved={},sent={}", c.queued, c.received, c.sent)?;
    if !brief && c.session_id != 0 {
        write!(f, ",sid=0x{:x},lop={},est={},to={}", c.session_id, c.last_op, c.established_ms, c.session_timeout_ms)?;
        if c.last_cxid >= 0 {
            write!(f, ",lcxid=0x{:x}", c.last_cxid)?;
        }
        write!(f, ",lzxid=0x{:x},lresp={},llat={}", c.last_zxid, c.last_response_ms, c.last_latency_ms)?;
        write!(f, ",minlat={},avglat={},maxlat={}", c.min_latency_ms, c.avg_latency_ms, c.max_latency_ms)?;
    }
    f.write_char(')')
}

/// `mntr`: `dumpMonitorValues` first, then the gauges in the order ZooKeeper registers them (its own output
/// follows a hash map's order; scripts look keys up by name), then [`Report::extra`].
fn mntr(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    let mut kv = |key: &str, value: &dyn fmt::Display| writeln!(f, "zk_{key}\t{value}");
    kv("version", &r.version)?;
    kv("server_state", &r.mode.as_str())?;
    if r.mode.in_quorum() {
        kv("peer_state", &r.peer_state)?;
    }
    if r.mode == Mode::Observer {
        kv("observer_master_id", &r.observer_master_id)?;
    }
    kv("avg_latency", &JavaDouble(round4(r.avg_latency_ms)))?;
    kv("max_latency", &r.max_latency_ms)?;
    kv("min_latency", &r.min_latency_ms)?;
    kv("packets_received", &r.packets_received)?;
    kv("packets_sent", &r.packets_sent)?;
    kv("num_alive_connections", &r.connections.len())?;
    kv("outstanding_requests", &r.outstanding_requests)?;
    kv("uptime", &r.uptime_ms)?;
    kv("znode_count", &r.node_count)?;
    kv("watch_count", &r.watch_count)?;
    kv("ephemerals_count", &r.ephemerals_count)?;
    kv("approximate_data_size", &r.approximate_data_size)?;
    kv("global_sessions", &r.global_sessions)?;
    kv("local_sessions", &r.local_sessions)?;
    kv("open_file_descriptor_count", &r.open_file_descriptors)?;
    kv("max_file_descriptor_count", &r.max_file_descriptors)?;
    if r.mode.in_quorum() {
        kv("quorum_size", &r.quorum_size)?;
    }
    if r.mode == Mode::Leader {
        let l = &r.leader;
        kv("learners", &l.learners)?;
        kv("synced_followers", &l.synced_followers)?;
        kv("synced_non_voting_followers", &l.synced_non_voting_followers)?;
        kv("synced_observers", &l.synced_observers)?;
        kv("pending_syncs", &l.pending_syncs)?;
        kv("leader_uptime", &l.leader_uptime_ms)?;
        kv("last_proposal_size", &size(l.last_proposal_size))?;
        kv("max_proposal_size", &size(l.max_proposal_size))?;
        kv("min_proposal_size", &size(l.min_proposal_size))?;
    }
    for (key, value) in &r.extra {
        kv(key, value)?;
    }
    Ok(())
}

/// `conf`: `ZooKeeperServer.dumpConf`, then `QuorumZooKeeperServer`'s lines. The membership ends without a
/// newline, as `QuorumMaj.toString` does.
fn conf(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    let c = &r.conf;
    let secure = c.secure_client_port.map_or(-1, i32::from);
    writeln!(f, "clientPort={}\nsecureClientPort={secure}", c.client_port)?;
    writeln!(f, "dataDir={}\ndataDirSize={}", c.data_dir, r.snapshot_dir_size)?;
    writeln!(f, "dataLogDir={}\ndataLogSize={}", c.data_log_dir, r.log_dir_size)?;
    writeln!(f, "tickTime={}\nmaxClientCnxns={}", c.tick_time_ms, c.max_client_cnxns)?;
    writeln!(f, "minSessionTimeout={}\nmaxSessionTimeout={}", c.min_session_timeout_ms, c.max_session_timeout_ms)?;
    writeln!(f, "clientPortListenBacklog={}\nserverId={}", c.client_port_listen_backlog, c.server_id)?;
    if r.mode == Mode::Standalone {
        return Ok(());
    }
    writeln!(f, "initLimit={}\nsyncLimit={}\nelectionAlg={}", c.init_limit, c.sync_limit, c.election_alg)?;
    let peer_type = u8::from(r.mode == Mode::Observer); // LearnerType.ordinal(): PARTICIPANT 0, OBSERVER 1
    writeln!(f, "electionPort={}\nquorumPort={}\npeerType={peer_type}", c.election_port, c.quorum_port)?;
    if !r.mode.in_quorum() {
        return Ok(());
    }
    f.write_str("membership: \n")?;
    for (id, spec) in &c.members {
        writeln!(f, "server.{id}={spec}")?;
    }
    write!(f, "version={:x}", c.config_version)
}

fn envi(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    f.write_str("Environment:\n")?;
    for (key, value) in &r.environment {
        writeln!(f, "{key}={value}")?;
    }
    Ok(())
}

/// A proposal size as ZooKeeper's `BufferStats` holds it: -1 for none yet.
fn size(bytes: Option<u32>) -> i64 {
    bytes.map_or(-1, i64::from)
}

/// Rounds half up to 4 decimals, as `AvgMinMaxCounter.getAvg` does with `BigDecimal`.
fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Java's `Double.toString`: always a fraction digit (`0.0`, `12.0`), scientific outside `[1e-3, 1e7)`
/// (`1.0E7`, `1.0E-4`).
struct JavaDouble(f64);

impl fmt::Display for JavaDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            return f.write_str("NaN");
        }
        if v.is_infinite() {
            return f.write_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        }
        let plain = v == 0.0 || (1e-3..1e7).contains(&v.abs());
        let text = if plain { v.to_string() } else { format!("{v:e}") };
        let (mantissa, exponent) = match text.split_once('e') {
            Some((m, e)) => (m, Some(e)),
            None => (text.as_str(), None),
        };
        f.write_str(mantissa)?;
        if !mantissa.contains('.') {
            f.write_str(".0")?;
        }
        match exponent {
            Some(e) => write!(f, "E{e}"),
            None => Ok(()),
        }
    }
}

/// Java's `InetSocketAddress.toString` for an accepted socket (no host name): `/127.0.0.1:53422`, and IPv6 in
/// `Inet6Address`'s uncompressed form, unbracketed as the Java 11 that ZooKeeper 3.8 runs on prints it
/// (`/0:0:0:0:0:0:0:1:53422`). An IPv4-mapped address prints as the IPv4 address Java makes of it.
struct JavaAddr(SocketAddr);

impl fmt::Display for JavaAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => write!(f, "/{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => {
                if let Some(v4) = a.ip().to_ipv4_mapped() {
                    return write!(f, "/{v4}:{}", a.port());
                }
                f.write_char('/')?;
                for (i, segment) in a.ip().segments().iter().enumerate() {
                    let sep = if i == 0 { "" } else { ":" };
                    write!(f, "{sep}{segment:x}")?;
                }
                if a.scope_id() != 0 {
                    write!(f, "%{}", a.scope_id())?;
                }
                write!(f, ":{}", a.port())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    const VERSION: &str = "3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC";

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((a, port))
    }

    /// A follower of a 3-node ensemble with a client session and the `stat` asker connected.
    fn follower() -> Report {
        let session = Connection {
            remote: v4([10, 0, 0, 7], 50412),
            interest_ops: 1,
            received: 153,
            sent: 152,
            session_id: 0x0100_0003_a4c2_0001,
            last_op: last_op_name(4).to_owned(),
            established_ms: 1_700_000_000_123,
            session_timeout_ms: 30_000,
            last_cxid: 0x96,
            last_zxid: 0x1_0000_0042,
            last_response_ms: 987_654,
            last_latency_ms: 1,
            min_latency_ms: 0,
            avg_latency_ms: 0,
            max_latency_ms: 12,
            ..Connection::default()
        };
        let asker = Connection { remote: v4([127, 0, 0, 1], 53422), received: 1, ..Connection::default() };
        Report {
            version: VERSION.to_owned(),
            mode: Mode::Follower,
            serving: true,
            peer_state: "following - broadcast".to_owned(),
            zxid: 0x1_0000_0042,
            node_count: 1005,
            min_latency_ms: 0,
            avg_latency_ms: 4.25,
            max_latency_ms: 12,
            packets_received: 45,
            packets_sent: 44,
            outstanding_requests: 0,
            uptime_ms: 1_473_697,
            connections: vec![session, asker],
            watch_count: 3,
            data_watches: WatchSummary { connections: 1, paths: 2, watches: 2 },
            ephemerals_count: 1,
            approximate_data_size: 269,
            global_sessions: 1,
            local_sessions: 0,
            open_file_descriptors: 75,
            max_file_descriptors: 4096,
            quorum_size: 3,
            leader: LeaderStats::default(),
            observer_master_id: -1,
            conf: Conf {
                client_port: 2181,
                secure_client_port: None,
                data_dir: "/data/version-2".to_owned(),
                data_log_dir: "/datalog/version-2".to_owned(),
                tick_time_ms: 2000,
                max_client_cnxns: 60,
                min_session_timeout_ms: 4000,
                max_session_timeout_ms: 40000,
                client_port_listen_backlog: -1,
                server_id: 3,
                init_limit: 5,
                sync_limit: 2,
                election_alg: 3,
                election_port: 3888,
                quorum_port: 2888,
                members: (1..=3).map(|id| (id, format!("zk{id}:2888:3888:participant;0.0.0.0:2181"))).collect(),
                config_version: 0,
            },
            snapshot_dir_size: 67_108_880,
            log_dir_size: 1266,
            environment: vec![
                ("zookeeper.version".to_owned(), VERSION.to_owned()),
                ("host.name".to_owned(), "zk3".to_owned()),
            ],
            extra: vec![("ensemble_fsync_p99_us".to_owned(), "850".to_owned())],
            trace_mask: DEFAULT_TRACE_MASK,
            watches_by_session: Vec::new(),
            watches_by_path: Vec::new(),
            digest_log: Vec::new(),
            dump: Dump::default(),
        }
    }

    fn ask(word: &str, r: &Report) -> String {
        answer(word, r).unwrap_or_else(|| panic!("{word} not answered"))
    }

    #[test]
    fn srvr_matches_zookeeper() {
        let expected = "Zookeeper version: 3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC\n\
                        Latency min/avg/max: 0/4.25/12\n\
                        Received: 45\n\
                        Sent: 44\n\
                        Connections: 2\n\
                        Outstanding: 0\n\
                        Zxid: 0x100000042\n\
                        Mode: follower\n\
                        Node count: 1005\n";
        assert_eq!(ask("srvr", &follower()), expected);
    }

    #[test]
    fn stat_lists_clients_briefly_and_a_leader_adds_proposal_sizes() {
        let mut r = follower();
        r.mode = Mode::Leader;
        r.avg_latency_ms = 0.0;
        r.leader.last_proposal_size = Some(120);
        r.leader.min_proposal_size = Some(36);
        r.leader.max_proposal_size = Some(4096);
        let expected = "Zookeeper version: 3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC\n\
                        Clients:\n \
                        /10.0.0.7:50412[1](queued=0,recved=153,sent=152)\n \
                        /127.0.0.1:53422[0](queued=0,recved=1,sent=0)\n\
                        \n\
                        Latency min/avg/max: 0/0.0/12\n\
                        Received: 45\n\
                        Sent: 44\n\
                        Connections: 2\n\
                        Outstanding: 0\n\
                        Zxid: 0x100000042\n\
                        Mode: leader\n\
                        Node count: 1005\n\
                        Proposal sizes last/min/max: 120/36/4096\n";
        assert_eq!(ask("stat", &r), expected);
    }

    #[test]
    fn stat_of_a_fresh_leader_prints_minus_one_sizes_and_read_only_says_so() {
        let mut r = follower();
        r.mode = Mode::Leader;
        assert!(ask("srvr", &r).ends_with("Mode: leader\nNode count: 1005\nProposal sizes last/min/max: -1/-1/-1\n"));
        r.mode = Mode::ReadOnly;
        let srvr = ask("srvr", &r);
        assert!(srvr.contains("UTC\nREAD-ONLY mode; serving only read-only clients\nLatency"), "{srvr}");
        assert!(srvr.contains("\nMode: read-only\n"), "{srvr}");
        assert!(!srvr.contains("Proposal"), "{srvr}");
    }

    #[test]
    fn cons_prints_session_fields_only_for_connections_with_a_session() {
        let mut r = follower();
        let fresh_session = Connection {
            remote: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 40001, 0, 0)),
            session_id: -0x7f00_0000_0000_0001, // high bit set: Java prints two's complement
            session_timeout_ms: 4000,
            established_ms: 5,
            ..Connection::default()
        };
        r.connections.push(fresh_session);
        let expected = " /10.0.0.7:50412[1](queued=0,recved=153,sent=152,sid=0x1000003a4c20001,lop=GETD,\
                        est=1700000000123,to=30000,lcxid=0x96,lzxid=0x100000042,lresp=987654,llat=1,\
                        minlat=0,avglat=0,maxlat=12)\n \
                        /127.0.0.1:53422[0](queued=0,recved=1,sent=0)\n \
                        /0:0:0:0:0:0:0:1:40001[0](queued=0,recved=0,sent=0,sid=0x80ffffffffffffff,lop=NA,\
                        est=5,to=4000,lzxid=0xffffffffffffffff,lresp=0,llat=0,minlat=0,avglat=0,maxlat=0)\n\
                        \n";
        assert_eq!(ask("cons", &r), expected);
    }

    #[test]
    fn mntr_is_tab_separated_zk_lines_with_quorum_keys_for_a_follower() {
        let expected = [
            "zk_version\t3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC",
            "zk_server_state\tfollower",
            "zk_peer_state\tfollowing - broadcast",
            "zk_avg_latency\t4.25",
            "zk_max_latency\t12",
            "zk_min_latency\t0",
            "zk_packets_received\t45",
            "zk_packets_sent\t44",
            "zk_num_alive_connections\t2",
            "zk_outstanding_requests\t0",
            "zk_uptime\t1473697",
            "zk_znode_count\t1005",
            "zk_watch_count\t3",
            "zk_ephemerals_count\t1",
            "zk_approximate_data_size\t269",
            "zk_global_sessions\t1",
            "zk_local_sessions\t0",
            "zk_open_file_descriptor_count\t75",
            "zk_max_file_descriptor_count\t4096",
            "zk_quorum_size\t3",
            "zk_ensemble_fsync_p99_us\t850",
        ];
        let mut want = expected.join("\n");
        want.push('\n');
        assert_eq!(ask("mntr", &follower()), want);
    }

    #[test]
    fn mntr_of_a_leader_adds_learner_keys_before_the_extras() {
        let mut r = follower();
        r.mode = Mode::Leader;
        r.peer_state = "leading - broadcast".to_owned();
        r.avg_latency_ms = 1.0 / 3.0;
        r.leader = LeaderStats {
            learners: 2,
            synced_followers: 2,
            synced_non_voting_followers: 0,
            synced_observers: 0,
            pending_syncs: 0,
            leader_uptime_ms: 5000,
            last_proposal_size: Some(120),
            min_proposal_size: Some(36),
            max_proposal_size: None,
        };
        let out = ask("mntr", &r);
        let tail = "zk_quorum_size\t3\n\
                    zk_learners\t2\n\
                    zk_synced_followers\t2\n\
                    zk_synced_non_voting_followers\t0\n\
                    zk_synced_observers\t0\n\
                    zk_pending_syncs\t0\n\
                    zk_leader_uptime\t5000\n\
                    zk_last_proposal_size\t120\n\
                    zk_max_proposal_size\t-1\n\
                    zk_min_proposal_size\t36\n\
                    zk_ensemble_fsync_p99_us\t850\n";
        assert!(out.ends_with(tail), "{out}");
        assert!(out.contains("\nzk_server_state\tleader\nzk_peer_state\tleading - broadcast\n"), "{out}");
        assert!(out.contains("\nzk_avg_latency\t0.3333\n"), "{out}");
    }

    #[test]
    fn mntr_of_an_observer_names_its_master_and_no_leader_keys() {
        let mut r = follower();
        r.mode = Mode::Observer;
        r.peer_state = "observing - broadcast".to_owned();
        r.observer_master_id = 2;
        let out = ask("mntr", &r);
        let head = "zk_server_state\tobserver\nzk_peer_state\tobserving - broadcast\nzk_observer_master_id\t2\n";
        assert!(out.contains(head), "{out}");
        assert!(out.contains("\nzk_quorum_size\t3\n"), "{out}");
        assert!(!out.contains("zk_learners") && !out.contains("zk_synced_"), "{out}");
        assert!(!ask("mntr", &follower()).contains("observer_master_id"), "only an observer prints it");
    }

    #[test]
    fn mntr_of_a_standalone_server_has_no_quorum_or_leader_keys() {
        let mut r = follower();
        r.mode = Mode::Standalone;
        let out = ask("mntr", &r);
        assert!(out.starts_with("zk_version\t3.8.4"), "{out}");
        assert!(out.contains("\nzk_server_state\tstandalone\n"), "{out}");
        for key in ["zk_peer_state", "zk_quorum_size", "zk_learners", "zk_synced_followers", "zk_pending_syncs"] {
            assert!(!out.contains(key), "{key} in {out}");
        }
        assert!(out.lines().all(|l| l.starts_with("zk_") && l.split('\t').count() == 2), "{out}");
    }

    #[test]
    fn conf_of_a_quorum_member_ends_with_the_membership_and_no_newline() {
        let expected = "clientPort=2181\n\
                        secureClientPort=-1\n\
                        dataDir=/data/version-2\n\
                        dataDirSize=67108880\n\
                        dataLogDir=/datalog/version-2\n\
                        dataLogSize=1266\n\
                        tickTime=2000\n\
                        maxClientCnxns=60\n\
                        minSessionTimeout=4000\n\
                        maxSessionTimeout=40000\n\
                        clientPortListenBacklog=-1\n\
                        serverId=3\n\
                        initLimit=5\n\
                        syncLimit=2\n\
                        electionAlg=3\n\
                        electionPort=3888\n\
                        quorumPort=2888\n\
                        peerType=0\n\
                        membership: \n\
                        server.1=zk1:2888:3888:participant;0.0.0.0:2181\n\
                        server.2=zk2:2888:3888:participant;0.0.0.0:2181\n\
                        server.3=zk3:2888:3888:participant;0.0.0.0:2181\n\
                        version=0";
        assert_eq!(ask("conf", &follower()), expected);
    }

    #[test]
    fn conf_by_mode() {
        let mut r = follower();
        r.conf.config_version = 0x1_0000_0007;
        r.mode = Mode::Observer;
        let observer = ask("conf", &r);
        assert!(observer.contains("\npeerType=1\nmembership: \n"), "{observer}");
        assert!(observer.ends_with("\nversion=100000007"), "{observer}");

        r.mode = Mode::ReadOnly;
        assert!(ask("conf", &r).ends_with("quorumPort=2888\npeerType=0\n"));

        r.mode = Mode::Standalone;
        r.conf.secure_client_port = Some(2281);
        r.conf.server_id = 0;
        let standalone = ask("conf", &r);
        assert!(standalone.starts_with("clientPort=2181\nsecureClientPort=2281\n"), "{standalone}");
        assert!(standalone.ends_with("clientPortListenBacklog=-1\nserverId=0\n"), "{standalone}");
        assert!(standalone.lines().all(|l| l.split_once('=').is_some()), "{standalone}");
    }

    #[test]
    fn envi_wchs_dirs() {
        let r = follower();
        let envi = ask("envi", &r);
        assert_eq!(envi, format!("Environment:\nzookeeper.version={VERSION}\nhost.name=zk3\n"));
        assert_eq!(ask("wchs", &r), "1 connections watching 2 paths\nTotal watches:2\n");
        assert_eq!(ask("dirs", &r), "datadir_size: 67108880\nlogdir_size: 1266\n");
        assert_eq!(ask("crst", &r), "Connection stats reset.\n");
        assert_eq!(ask("srst", &r), "Server stats reset.\n");
    }

    #[test]
    fn ruok_and_isro_have_no_newline() {
        let mut r = follower();
        assert_eq!(ask("ruok", &r), "imok");
        assert_eq!(ask("isro", &r), "rw");
        r.mode = Mode::ReadOnly;
        assert_eq!(ask("isro", &r), "ro");
        r.serving = false;
        assert_eq!(ask("isro", &r), "null");
        assert_eq!(ask("ruok", &r), "imok");
    }

    #[test]
    fn a_server_not_serving_says_so_except_for_ruok_envi_isro() {
        let r = Report { serving: false, ..follower() };
        for word in ["srvr", "stat", "cons", "mntr", "conf", "wchs", "wchc", "wchp", "dirs", "dump", "crst", "srst"] {
            assert_eq!(ask(word, &r), "This ZooKeeper instance is not currently serving requests\n", "{word}");
        }
        assert_eq!(ask("hash", &r), "This ZooKeeper instance is not currently serving requests", "print, not println");
        assert_eq!(ask("gtmk", &r), "306", "the trace mask answers whether or not the server serves");
        assert!(ask("envi", &r).starts_with("Environment:\n"));
    }

    #[test]
    fn watch_dumps_digest_log_and_trace_mask_in_zookeepers_formats() {
        let r = Report {
            watches_by_session: vec![(0x1000a, vec!["/a".into(), "/b".into()]), (0x2000b, vec!["/a".into()])],
            watches_by_path: vec![("/a".into(), vec![0x1000a, 0x2000b]), ("/b".into(), vec![0x1000a])],
            digest_log: vec![(0x100000080, 1234), (0x100000100, u64::MAX)],
            trace_mask: 4660,
            ..follower()
        };
        assert_eq!(ask("wchc", &r), "0x1000a\n\t/a\n\t/b\n0x2000b\n\t/a\n\n");
        assert_eq!(ask("wchp", &r), "/a\n\t0x1000a\n\t0x2000b\n/b\n\t0x1000a\n\n");
        assert_eq!(ask("hash", &r), "100000080: 1234\n100000100: -1\n");
        assert_eq!((ask("gtmk", &r), ask("stmk", &r)), ("4660".into(), "4660".into()));
        let empty = Report { trace_mask: DEFAULT_TRACE_MASK, ..follower() };
        assert_eq!(
            (ask("wchc", &empty), ask("wchp", &empty), ask("hash", &empty)),
            ("\n".into(), "\n".into(), "".into())
        );
    }

    #[test]
    fn whitelist_message() {
        assert_eq!(not_whitelisted("mntr"), "mntr is not executed because it is not in the whitelist.\n");
    }

    #[test]
    fn words_zookeeper_does_not_know_are_none() {
        let r = follower();
        for word in ["xxxx", "", "srvrx", "SRVR"] {
            assert_eq!(answer(word, &r), None, "{word}");
        }
    }

    #[test]
    fn recognising_a_word_in_the_first_four_bytes() {
        for word in KNOWN_WORDS {
            assert_eq!(four_letter_word(word.as_bytes()), Some(word));
            assert!(is_four_letter_word(word.as_bytes()));
        }
        assert_eq!(four_letter_word(b"ruok\n"), Some("ruok"));
        // A ConnectRequest frame: length 44, then protocolVersion 0.
        assert!(!is_four_letter_word(&[0, 0, 0, 44, 0, 0, 0, 0]));
        assert!(!is_four_letter_word(b"ruo"));
        assert!(!is_four_letter_word(b"RUOK"));
        assert!(!is_four_letter_word(&[0xff, 0xf4, 0xff, 0xfd]));
    }

    #[test]
    fn java_double_rendering() {
        let cases = [(0.0, "0.0"), (4.25, "4.25"), (12.0, "12.0"), (0.001, "0.001"), (9_999_999.5, "9999999.5")];
        for (v, want) in cases {
            assert_eq!(JavaDouble(v).to_string(), want);
        }
        assert_eq!(JavaDouble(1e7).to_string(), "1.0E7");
        assert_eq!(JavaDouble(1.5e-4).to_string(), "1.5E-4");
        assert_eq!(JavaDouble(round4(2.0 / 3.0)).to_string(), "0.6667");
        assert_eq!(JavaDouble(round4(0.00004)).to_string(), "0.0");
    }

    #[test]
    fn java_addresses() {
        let mapped = SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(192, 168, 1, 2).to_ipv6_mapped(), 7, 0, 0));
        assert_eq!(JavaAddr(mapped).to_string(), "/192.168.1.2:7");
        let scoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, 0xabcd), 9, 0, 2));
        assert_eq!(JavaAddr(scoped).to_string(), "/fe80:0:0:0:0:0:1:abcd%2:9");
    }

    #[test]
    fn last_op_names() {
        assert_eq!(last_op_name(11), "PING");
        assert_eq!(last_op_name(-10), "SESS");
        assert_eq!(last_op_name(15), "CREA");
        assert_eq!(last_op_name(12), "GETC");
        assert_eq!(last_op_name(104), "GETACN");
        assert_eq!(last_op_name(999), "NA");
    }
}
