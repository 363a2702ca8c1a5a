//! Four-letter words on the client port: the server's state gathered into a [`fourlw::Report`], answered in
//! ZooKeeper's formats, and the connection closed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use replication::peer::Role;
use replication::runtime::LearnerView;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::fourlw::dump::{round_to_next_interval, Sessions, CONNECTION_EXPIRY_INTERVAL_MS};
use crate::fourlw::{self, Connection, Dump, LeaderStats, Mode, Report, WatchSummary};
use crate::server::Ctx;
use crate::shared::Stats;

/// The word the first four bytes of a connection spell, if any.
pub fn four_letter_word(first4: &[u8; 4]) -> Option<&'static str> {
    fourlw::four_letter_word(first4)
}

/// How long a four-letter word's answer may wait for its reader.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers `word` and closes the connection. The report reads `/proc` and walks the data directories, so it is
/// gathered on a blocking thread; a reader that does not take the answer within `ANSWER_TIMEOUT` loses it.
pub async fn answer_four_letter_word<S>(ctx: Arc<Ctx>, mut stream: S, asker: SocketAddr, word: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let asker = Some(asker);
    if word == "stmk" && whitelisted(&ctx, word) {
        // The new mask follows the word: a big-endian long (`NIOServerCnxn.checkFourLetterWord`).
        let mut mask = [0u8; 8];
        match tokio::time::timeout(ANSWER_TIMEOUT, stream.read_exact(&mut mask)).await {
            Ok(Ok(_)) => ctx.shared.trace_mask.store(i64::from_be_bytes(mask), Ordering::Relaxed),
            _ => return,
        }
    }
    let answer = tokio::task::spawn_blocking(move || answer(&ctx, word, asker)).await;
    let Ok(text) = answer else { return };
    let written = tokio::time::timeout(ANSWER_TIMEOUT, async {
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await
    });
    let _ = written.await;
}

/// Whether `word` may run: listed in `4lw.commands.whitelist` (`srvr` always may, and `isro` with
/// `readonlymode.enabled`, as in ZooKeeper, whose clients ask them).
fn whitelisted(ctx: &Ctx, word: &str) -> bool {
    let config = &ctx.shared.config;
    word == "srvr"
        || (word == "isro" && config.read_only_mode)
        || config.four_letter_words.iter().any(|w| w == "*" || w == word)
}

fn answer(ctx: &Ctx, word: &'static str, asker: Option<SocketAddr>) -> String {
    if !whitelisted(ctx, word) {
        return fourlw::not_whitelisted(word);
    }
    match word {
        "srst" => ctx.shared.stats.reset(),
        "crst" => ctx.shared.conns().values().for_each(|conn| conn.counters.reset()),
        _ => {}
    }
    let mut report = report(ctx, asker);
    match word {
        "wchc" => report.watches_by_session = ctx.shared.watches().data_watches_by_session(),
        "wchp" => report.watches_by_path = ctx.shared.watches().data_watches_by_path(),
        "hash" => report.digest_log = crate::shared::lock(&ctx.shared.digest_log).iter().copied().collect(),
        "dump" => report.dump = dump(ctx, &report.connections),
        _ => {}
    }
    fourlw::answer(word, &report).unwrap_or_else(|| fourlw::not_whitelisted(word))
}

/// The server's state now, as the client at `asker` (if known) asks for it: ZooKeeper counts and lists the
/// asking connection among the connections.
pub fn report(ctx: &Ctx, asker: Option<SocketAddr>) -> Report {
    let shared = &ctx.shared;
    let config = &shared.config;
    let role = ctx.handle.role.borrow().0;
    let read_only = shared.read_only.generation().is_some();
    let serving = ctx.serving() || read_only;
    let observer = shared.config.servers.get(&shared.my_id).is_some_and(|s| s.observer);
    let mode = match role {
        _ if shared.standalone => Mode::Standalone,
        _ if read_only => Mode::ReadOnly,
        Role::Leading => Mode::Leader,
        _ if observer => Mode::Observer,
        _ => Mode::Follower,
    };
    let (zxid, node_count, sessions, ephemerals, data_size) = {
        // Counters the tree keeps as it goes: a report never walks the tree (monitoring polls it).
        let tree = shared.tree();
        let (nodes, sessions, ephemerals) = (tree.node_count(), tree.sessions().len(), tree.ephemeral_count());
        (tree.last_zxid(), nodes as u64, sessions as u64, ephemerals as u64, tree.approximate_data_size())
    };
    let (watches, paths, watchers) = shared.watches().counts();
    let stats = &shared.stats;
    let latency = stats.latency.ms();
    let mut connections: Vec<Connection> =
        shared.conns().iter().map(|(&session, conn)| connection(session, conn)).collect();
    // The asker has sent its word and nothing else yet, and is off the selector (`[0]`) while answered.
    connections.extend(asker.map(|remote| Connection { remote, received: 1, ..Connection::default() }));
    let wal = ctx.wal.stats();
    Report {
        version: format!("3.8.4-ensemble-{}, built on Rust", env!("CARGO_PKG_VERSION")),
        mode,
        serving,
        peer_state: peer_state(role, serving, observer).to_owned(),
        zxid,
        node_count,
        min_latency_ms: latency.min,
        avg_latency_ms: latency.avg,
        max_latency_ms: latency.max,
        packets_received: stats.received.load(Ordering::Relaxed),
        packets_sent: stats.sent.load(Ordering::Relaxed),
        outstanding_requests: stats.outstanding.load(Ordering::Relaxed),
        uptime_ms: stats.started.elapsed().as_millis() as u64,
        connections,
        watch_count: watches as u64,
        data_watches: WatchSummary { connections: watchers as u64, paths: paths as u64, watches: watches as u64 },
        ephemerals_count: ephemerals,
        approximate_data_size: data_size,
        global_sessions: sessions,
        local_sessions: count(shared.read_only.sessions()),
        open_file_descriptors: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        max_file_descriptors: max_fds(),
        // ZooKeeper's `getQuorumSize()` is the size of the voting view: observers do not count.
        quorum_size: count(config.servers.values().filter(|s| !s.observer).count().max(1)),
        leader: match mode {
            Mode::Leader => leader_stats(*ctx.handle.learners.borrow(), stats),
            _ => LeaderStats::default(),
        },
        observer_master_id: match role {
            Role::Following(leader) if mode == Mode::Observer => i64::try_from(leader.0).unwrap_or(-1),
            _ => -1,
        },
        conf: conf(ctx),
        snapshot_dir_size: dir_size(&ctx.snap_dir),
        log_dir_size: dir_size(&ctx.log_dir),
        environment: environment(),
        trace_mask: shared.trace_mask.load(Ordering::Relaxed),
        watches_by_session: Vec::new(),
        watches_by_path: Vec::new(),
        digest_log: Vec::new(),
        dump: Dump::default(),
        extra: vec![
            ("wal_records".into(), wal.records.to_string()),
            ("wal_fsyncs".into(), wal.batches.to_string()),
            ("wal_fsync_time_us".into(), wal.fsync_time.as_micros().to_string()),
            ("wal_fsync_max_us".into(), wal.fsync_max.as_micros().to_string()),
        ],
    }
}

/// What `dump` shows: a leader's (or standalone server's) session expiry queue as its tracker has it, else the
/// sessions in the tree with their timeouts; every session's ephemerals; and `connections` by when ZooKeeper's
/// NIO factory would expire them (a connection's last reply, or its start, plus its session timeout, or 10 s
/// without a session). Expiry times are bucketed on this server's monotonic clock, as ZooKeeper's
/// `ExpiryQueue` does, then shown on the wall clock.
pub(crate) fn dump(ctx: &Ctx, connections: &[Connection]) -> Dump {
    let shared = &ctx.shared;
    let expiring = ctx.leading().then(|| shared.tracker.deadlines()).flatten();
    let (now, started) = (Instant::now(), shared.stats.started);
    let now_mono = millis(now.saturating_duration_since(started)) as i64;
    let now_wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| millis(d) as i64);
    let wall = |mono: i64| now_wall + (mono - now_mono);
    let mono = |at: Instant| millis(at.saturating_duration_since(started)) as i64;
    let tick = i64::try_from(shared.config.tick.as_millis()).unwrap_or(i64::MAX).max(1);
    let (sessions, ephemerals) = {
        let tree = shared.tree();
        let sessions = match expiring {
            Some(tracked) => Sessions::Expiring(
                tracked
                    .into_iter()
                    .map(|(session, deadline)| (session, wall(round_to_next_interval(mono(deadline), tick))))
                    .collect(),
            ),
            None => Sessions::Known {
                local: (shared.read_only.generation().is_some() && shared.config.local_sessions).then(|| {
                    let local = shared.read_only.expiries(now).into_iter();
                    local.map(|(s, at)| (s, wall(round_to_next_interval(mono(at), tick)))).collect()
                }),
                global: tree.sessions().iter().map(|(&s, &t)| (s, t)).collect(),
            },
        };
        let ephemerals =
            tree.ephemeral_owners().map(|s| (s, tree.ephemerals(s).map(str::to_owned).collect())).collect();
        (sessions, ephemerals)
    };
    let connections = connections
        .iter()
        .map(|c| {
            let active = match (c.last_response_ms, c.established_ms) {
                (0, 0) => now_mono,
                (0, established) => now_mono - (now_wall - established),
                (last_reply, _) => last_reply,
            };
            let timeout = match c.session_timeout_ms {
                t if t > 0 => i64::from(t),
                _ => CONNECTION_EXPIRY_INTERVAL_MS,
            };
            (wall(round_to_next_interval(active + timeout, CONNECTION_EXPIRY_INTERVAL_MS)), c.clone())
        })
        .collect();
    Dump { sessions, ephemerals, connections }
}

/// `QuorumPeer.getDetailedPeerState()` (without the sync mode ZooKeeper adds while syncing).
fn peer_state(role: Role, serving: bool, observer: bool) -> &'static str {
    match (role, serving) {
        (Role::Looking, _) => "looking",
        (Role::Leading, true) => "leading - broadcast",
        (Role::Leading, false) => "leading - synchronization",
        (Role::Following(_), true) if observer => "observing - broadcast",
        (Role::Following(_), false) if observer => "observing - synchronization",
        (Role::Following(_), true) => "following - broadcast",
        (Role::Following(_), false) => "following - synchronization",
    }
}

/// What a leader reports of its learners (the replication runtime's `view`), its learners' syncs and its
/// proposals.
fn leader_stats(view: LearnerView, stats: &Stats) -> LeaderStats {
    let [last_proposal_size, min_proposal_size, max_proposal_size] = stats.proposal_sizes.get();
    LeaderStats {
        learners: count(view.learners.connected),
        synced_followers: count(view.learners.synced_followers),
        // A learner here votes or observes: ZooKeeper's non-voting followers (participants outside the voting
        // view) exist only during a reconfig, which Ensemble does not do.
        synced_non_voting_followers: 0,
        synced_observers: count(view.learners.synced_observers),
        pending_syncs: count(stats.learner_syncs.count()),
        leader_uptime_ms: view.leading_since.map_or(0, |since| millis(since.elapsed())),
        last_proposal_size,
        min_proposal_size,
        max_proposal_size,
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A client connection as `cons` shows it.
fn connection(session: i64, conn: &crate::shared::ConnHandle) -> Connection {
    let c = &conn.counters;
    let latency = c.latency.ms();
    let last_op = c.last_op.load(Ordering::Relaxed);
    Connection {
        remote: conn.addr,
        interest_ops: 1,
        queued: c.outstanding.load(Ordering::Relaxed),
        received: c.received.load(Ordering::Relaxed),
        sent: c.sent.load(Ordering::Relaxed),
        session_id: session,
        last_op: if last_op == i32::MIN { "NA".to_owned() } else { fourlw::last_op_name(last_op).to_owned() },
        established_ms: c.established_ms,
        session_timeout_ms: c.session_timeout_ms.load(Ordering::Relaxed),
        last_cxid: c.last_cxid.load(Ordering::Relaxed) as i64,
        last_zxid: c.last_zxid.load(Ordering::Relaxed),
        last_response_ms: c.last_response_ms.load(Ordering::Relaxed),
        last_latency_ms: latency.last,
        min_latency_ms: latency.min,
        // ZooKeeper's connection counters print the mean as a truncated integer.
        avg_latency_ms: latency.avg as i64,
        max_latency_ms: latency.max,
    }
}

fn conf(ctx: &Ctx) -> fourlw::Conf {
    let config = &ctx.shared.config;
    let me = config.servers.get(&ctx.shared.my_id);
    fourlw::Conf {
        client_port: ctx.client_addr.port(),
        secure_client_port: config.tls.as_ref().and_then(|tls| tls.port),
        data_dir: absolute(&ctx.snap_dir),
        data_log_dir: absolute(&ctx.log_dir),
        tick_time_ms: config.tick.as_millis() as u32,
        max_client_cnxns: config.max_client_cnxns,
        min_session_timeout_ms: config.min_session_timeout.as_millis() as u32,
        max_session_timeout_ms: config.max_session_timeout.as_millis() as u32,
        client_port_listen_backlog: -1,
        server_id: if ctx.shared.standalone { 0 } else { ctx.shared.my_id },
        init_limit: config.init_limit,
        sync_limit: config.sync_limit,
        election_alg: 3,
        election_port: me.map_or(0, |m| m.election_port),
        quorum_port: me.map_or(0, |m| m.quorum_port),
        members: config
            .servers
            .iter()
            .map(|(&id, s)| (id, format!("{}:{}:{}:participant", s.host, s.quorum_port, s.election_port)))
            .collect(),
        ..fourlw::Conf::default()
    }
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn max_fds() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    }
}

fn environment() -> Vec<(String, String)> {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "<NA>".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_or("<NA>".into(), |h| h.trim().to_owned());
    vec![
        ("zookeeper.version".into(), format!("3.8.4-ensemble-{}", env!("CARGO_PKG_VERSION"))),
        ("host.name".into(), host),
        ("os.name".into(), std::env::consts::OS.into()),
        ("os.arch".into(), std::env::consts::ARCH.into()),
        ("user.name".into(), var("USER")),
        ("user.home".into(), var("HOME")),
        ("user.dir".into(), std::env::current_dir().map_or("<NA>".into(), |d| d.display().to_string())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use replication::peer::Learners;

    /// The leader's block comes from the runtime's view and the pipeline's counters, not from defaults (a
    /// leader once reported `zk_learners 0` with two synced followers).
    #[test]
    fn a_leaders_stats_come_from_the_runtime_view_and_the_counters() {
        let stats = Stats::default();
        stats.proposal_sizes.record(90);
        stats.proposal_sizes.record(40);
        let _sync = stats.learner_syncs.wait_for(3);
        let since = std::time::Instant::now() - std::time::Duration::from_millis(1500);
        let learners = Learners { connected: 3, synced_followers: 2, synced_observers: 1 };
        let leader = leader_stats(LearnerView { learners, leading_since: Some(since) }, &stats);
        assert_eq!(
            (leader.learners, leader.synced_followers, leader.synced_non_voting_followers, leader.synced_observers),
            (3, 2, 0, 1)
        );
        assert_eq!(leader.pending_syncs, 1);
        assert!((1500..60_000).contains(&leader.leader_uptime_ms), "{}", leader.leader_uptime_ms);
        let sizes = (leader.last_proposal_size, leader.min_proposal_size, leader.max_proposal_size);
        assert_eq!(sizes, (Some(40), Some(40), Some(90)));
        let mntr = fourlw::answer("mntr", &Report { mode: Mode::Leader, serving: true, leader, ..Report::default() });
        let mntr = mntr.expect("answered");
        for line in
            ["zk_learners\t3\n", "zk_synced_followers\t2\n", "zk_synced_observers\t1\n", "zk_pending_syncs\t1\n"]
        {
            assert!(mntr.contains(line), "{line:?} in {mntr}");
        }
    }
}
