//! One ensemble server: recovery, the replication runtime, the applier, the leader pipeline and the client
//! listener, wired together.
//!
//! ```text
//!  clients ──► conn ──┬─► (leading) pipeline ──► runtime (propose, replicate, commit) ──► applier ──► tree
//!                     └─► (following) Forward ──► the leader's pipeline                        │
//!             ◄──────────── replies and watch events, per connection ◄────────────────────────┘
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use replication::election::ElectionConfig;
use replication::message::ServerId;
use replication::peer::{PeerConfig, Role};
use replication::quorum::Voters;
use replication::runtime::{self, ForwardTo, Forwarded, Handle, ServerConfig};
use replication::security::PeerSecurity;
use replication::transport::TransportConfig;
use snapshot::policy::SnapPolicy;
use snapshot::retain::Retention;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use wal::{SyncMode, Wal, WalOptions};

use crate::admission::Permit;
use crate::apply::{self, SnapshotSettings};
use crate::config::Config;
use crate::forward::{AuthMemo, Forward};
use crate::leader::{self, Item, Origin};
use crate::limits::Limits;
use crate::repair;
use crate::sasl::quorum::security::QuorumSasl;
use crate::sasl::quorum::Credentials;
use crate::shared::{lock, Out, Shared, Stats};
use crate::throttle;
use crate::tls::quorum::QuorumTls;
use crate::tls::Tls;
use tree::acl::Id;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot run.
    #[error("configuration: {0}")]
    Config(String),
    /// The WAL could not be opened.
    #[error("write-ahead log: {0}")]
    Wal(#[from] wal::WalError),
    /// Recovery failed.
    #[error("recovery: {0}")]
    Recovery(#[from] snapshot::SnapshotError),
    /// The client TLS configuration's files cannot be used.
    #[error("client TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The client SASL configuration (its JAAS file) cannot be used.
    #[error("client SASL: {0}")]
    Sasl(#[from] crate::sasl::SaslError),
    /// The quorum SASL configuration (its JAAS sections) cannot be used.
    #[error("quorum SASL: {0}")]
    QuorumSasl(#[source] crate::sasl::SaslError),
    /// A port could not be bound or a directory created.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What connections need from their server.
pub struct Ctx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The replication runtime.
    pub handle: Handle,
    /// The leader pipeline's queue (used while this server leads).
    pub pipeline: leader::Queue,
    /// The client address.
    pub client_addr: SocketAddr,
    /// Where snapshots and the log live, for `dirs` and `conf`.
    pub snap_dir: PathBuf,
    /// The log directory.
    pub log_dir: PathBuf,
    /// The WAL, for its statistics.
    pub wal: Arc<Wal>,
}

impl Ctx {
    /// Whether this server leads and serves.
    pub fn leading(&self) -> bool {
        *self.handle.role.borrow() == (Role::Leading, true) && self.shared.halt.borrow().is_none()
    }

    /// Whether this server serves clients (never again once halted).
    pub fn serving(&self) -> bool {
        self.handle.role.borrow().1 && self.shared.halt.borrow().is_none()
    }
}

/// A running server.
pub struct Server {
    /// Its context.
    pub ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    fatal: watch::Receiver<Option<String>>,
}

impl Server {
    /// The client address it listens on.
    pub fn client_addr(&self) -> SocketAddr {
        self.ctx.client_addr
    }

    /// Waits until the server failed for good (its replication runtime stopped on a disk error, say); the
    /// reason. The process should exit then, so that a restart recovers from disk.
    pub async fn failed(&self) -> String {
        let mut fatal = self.fatal.clone();
        let reason = match fatal.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Stops serving: closes client connections and the replication runtime.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.ctx.handle.shutdown();
        for conn in self.ctx.shared.conns().values() {
            conn.send(Out::Close);
        }
    }
}

/// The WAL writer's idle spin after a small batch: `ENSEMBLE_WAL_SPIN_US` (microseconds), or the WAL's
/// default (50 us).
fn spin_from_env() -> std::time::Duration {
    let us = std::env::var("ENSEMBLE_WAL_SPIN_US").ok().and_then(|v| v.parse().ok());
    us.map_or(WalOptions::default().idle_spin, std::time::Duration::from_micros)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Starts a server from its configuration (inside a tokio runtime).
pub async fn start(config: Config) -> Result<Server, StartError> {
    let config = Arc::new(config);
    let Some(my_id) = config.server_id() else {
        return Err(StartError::Config("server.N lines but no myid file in dataDir".into()));
    };
    let standalone = config.servers.is_empty();
    let snap_dir = config.data_dir.join("snapshots");
    let log_dir = config.data_log_dir.clone();
    for dir in [&snap_dir, &log_dir] {
        // Durably: a power cut must not take a new directory's name (and everything acknowledged in it).
        wal::create_dir_durably(dir)?;
    }

    let started = Instant::now();
    tracing::info!(dir = %log_dir.display(), "opening the write-ahead log");
    let limits = Limits::new(&config);
    let stats = Stats::default();
    let options = WalOptions {
        // A segment must hold the largest record; ZooKeeper takes any preAllocSize.
        segment_size: (config.prealloc_kib * 1024).max(4 << 20).max(2 * limits.wal_payload as u64),
        max_payload: limits.wal_payload,
        sync: if config.force_sync { SyncMode::Fdatasync } else { SyncMode::Never },
        idle_spin: spin_from_env(),
        on_batch: Some(stats.instruments.wal_observer()),
        ..WalOptions::default()
    };
    let dirs = repair::Dirs { log_dir: &log_dir, snap_dir: &snap_dir, standalone };
    let (wal, wal_recovery) = repair::open_wal(&dirs, &options)?;
    let range = match (wal_recovery.first_zxid, wal_recovery.last_zxid) {
        (Some(first), Some(last)) => format!("zxids {first}..{last}"),
        _ => "empty".to_owned(),
    };
    tracing::info!(
        segments = wal_recovery.segments,
        records = wal_recovery.records,
        range = %range,
        torn_tail_cut = wal_recovery.torn_tail.as_ref().map_or(0, |t| t.bytes),
        removed_empty_segments = wal_recovery.removed_empty_segments.len(),
        "write-ahead log verified; rebuilding the tree from the newest valid snapshot and the log after it"
    );
    let (wal, tree, recovered) = repair::recover(&dirs, wal, &options)?;
    tracing::info!(
        zxid = format_args!("0x{:x}", recovered.last_zxid),
        nodes = tree.node_count(),
        sessions = tree.sessions().len(),
        replayed = recovered.replayed,
        snapshot = %recovered.snapshot.as_ref().map_or("none".into(), |p| p.display().to_string()),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    let wal = Arc::new(wal);

    // `server.N=...;[host:]port` overrides clientPort / clientPortAddress, as in ZooKeeper's dynamic config.
    let client_bind = match (config.servers.get(&my_id).and_then(|s| s.client), config.client_port) {
        (Some(addr), _) => Some(addr.to_string()),
        (None, Some(port)) => {
            let host = config.client_port_address.clone().unwrap_or_else(|| "0.0.0.0".into());
            Some(format!("{host}:{port}"))
        }
        // Only a secure port (the config insists on one port or the other).
        (None, None) => None,
    };
    let client_listener = match &client_bind {
        Some(bind) => Some(TcpListener::bind(bind.as_str()).await.map_err(io(format!("bind the client port {bind}")))?),
        None => None,
    };
    let tls = config.tls.as_ref().map(|settings| Tls::new(settings.clone())).transpose()?;
    // Quorum TLS (`sslQuorum`, `portUnification`): a standalone server has no peers to secure.
    let quorum_tls = match &config.quorum_tls {
        Some(settings) if !standalone => Some(QuorumTls::new(settings.clone(), &config.servers)?),
        _ => None,
    };
    let sasl = crate::sasl::Sasl::load(&config.sasl)?;
    let peer_security = peer_security(&config, my_id, quorum_tls.clone(), standalone)?;
    let secure = secure_listener(&config, &tls).await?;
    let client_addr = match (&client_listener, &secure) {
        (Some(listener), _) => listener.local_addr(),
        (None, Some(listener)) => listener.local_addr(),
        (None, None) => unreachable!("the config has a client port or a secure one"),
    }
    .map_err(io("client address"))?;
    // As in ZooKeeper, a metrics endpoint that cannot start stops the server from starting.
    let metrics_listener = match &config.metrics {
        Some(endpoint) => {
            let bind = (endpoint.host.as_str(), endpoint.port);
            let what = format!("bind the metrics endpoint {}:{}", endpoint.host, endpoint.port);
            Some(TcpListener::bind(bind).await.map_err(io(what))?)
        }
        None => None,
    };
    // ZooKeeper's AdminServer, on by default. One that cannot bind is what ZooKeeper makes of it: a quorum
    // member logs it and serves without it (`QuorumPeer.start`), a standalone server does not start
    // (`ZooKeeperServerMain`).
    let admin_listener = match &config.admin {
        Some(endpoint) => {
            let bind = (endpoint.host.as_str(), endpoint.port);
            let what = format!(
                "bind the admin server {}:{} (admin.enableServer=false turns it off)",
                endpoint.host, endpoint.port
            );
            match TcpListener::bind(bind).await {
                Ok(listener) => Some(listener),
                Err(error) if !standalone => {
                    tracing::warn!(%error, "cannot {what}: serving without the admin server, as ZooKeeper does");
                    None
                }
                Err(error) => return Err(io(what)(error)),
            }
        }
        None => None,
    };

    let mut peers = BTreeMap::new();
    for (&id, entry) in &config.servers {
        let addr = (entry.host.as_str(), entry.quorum_port)
            .to_socket_addrs()
            .map_err(io(format!("resolve server.{id} {}", entry.host)))?
            .next()
            .ok_or_else(|| StartError::Config(format!("server.{id}: {} resolves to nothing", entry.host)))?;
        peers.insert(ServerId(id), addr);
    }
    let peer_listener = match peers.get(&ServerId(my_id)) {
        Some(addr) => TcpListener::bind(addr).await.map_err(io(format!("bind the quorum port {addr}")))?,
        None if standalone => TcpListener::bind("127.0.0.1:0").await.map_err(io("bind a loopback peer port"))?,
        None => return Err(StartError::Config(format!("myid is {my_id} but there is no server.{my_id} line"))),
    };
    if standalone {
        peers.insert(ServerId(my_id), peer_listener.local_addr().map_err(io("peer address"))?);
    }
    let peer = PeerConfig {
        me: ServerId(my_id),
        // Observers (`server.N=...:observer`) follow and apply every commit but never vote.
        voters: Voters::new(peers.keys().copied().filter(|id| config.servers.get(&id.0).is_none_or(|s| !s.observer))),
        tick: config.tick,
        init_limit: config.init_limit,
        sync_limit: config.sync_limit,
        window: leader::WINDOW,
        election: ElectionConfig::default(),
    };
    let server_config = ServerConfig {
        peer,
        listener: peer_listener,
        peers,
        dir: log_dir.clone(),
        wal: options,
        snapshots: Some(snap_dir.clone()),
        transport: TransportConfig {
            max_frame: limits.peer_frame,
            // A follower forwards what its clients' budget lets it read (`throttle`), plus one frame per
            // connection past it, each weighing 256 B more here (`FORWARD_ENTRY_WEIGHT`): twice the budget
            // leaves room for those before a follower is taken as hostile.
            forwarded_bytes: 2 * throttle::DEFAULT_MAX_BYTES as usize,
            security: peer_security,
            ..TransportConfig::default()
        },
        monitor: Arc::new(stats.instruments.clone()),
        quiet_appends_here: std::env::var("ENSEMBLE_QUIET_APPENDS_HERE").map_or(true, |v| v != "0"),
    };
    let (handle, streams) = runtime::start_with_wal(server_config, wal.clone())?;

    let (shared, digests_in) =
        Shared::new(config.clone(), (my_id, standalone), (tree, recovered.last_zxid), sasl, stats);

    let snaps = SnapshotSettings {
        dir: snap_dir.clone(),
        retention: Arc::new(Mutex::new(Retention::new(config.snap_retain_count.max(3)))),
        policy: SnapPolicy::new(config.snap_count, my_id),
    };
    let (pipeline, items) = leader::Queue::new();
    let ctx =
        Arc::new(Ctx { shared: shared.clone(), handle: handle.clone(), pipeline, client_addr, snap_dir, log_dir, wal });
    let (stop, stopped) = watch::channel(false);
    let tasks = Supervisor { ctx: ctx.clone(), stopped: stopped.clone() };
    let applier = apply::run(shared.clone(), ctx.wal.clone(), streams.committed, snaps);
    tasks.spawn("the applier", async move { applier.await.map_err(|e| e.to_string()) });
    tasks.spawn("the leader pipeline", ok(leader::run(shared.clone(), handle.clone(), items)));
    tasks.spawn("the forwarded-message handler", ok(forwarded(ctx.clone(), streams.forwarded)));
    tasks.spawn("the session toucher", ok(touches(ctx.clone(), stopped.clone())));
    tasks.spawn("the role watcher", ok(serving(ctx.clone(), stopped.clone())));
    tasks.spawn("the digest sender", ok(send_digests(ctx.clone(), digests_in)));
    tasks.spawn("the halt watcher", ok(halt_on_divergence(ctx.clone())));
    // A standalone server is never cut off from a quorum.
    if config.read_only_mode && !standalone {
        tasks.spawn("the read-only switch", ok(crate::read_only::run(ctx.clone(), stopped.clone())));
    }
    if let Some(listener) = metrics_listener {
        let registry =
            crate::metrics::registry(ctx.clone()).map_err(|e| StartError::Config(format!("metrics registry: {e}")))?;
        let addr = listener.local_addr().map_err(io("metrics address"))?;
        tracing::info!(server = my_id, %addr, "serving Prometheus metrics at /metrics");
        let endpoint = crate::metrics::Endpoint(Arc::new(registry));
        let endpoint = crate::http::serve("metrics endpoint", listener, endpoint, stopped.clone());
        tasks.spawn("the metrics endpoint", ok(endpoint));
    }
    if let (Some(listener), Some(endpoint)) = (admin_listener, &config.admin) {
        let addr = listener.local_addr().map_err(io("admin server address"))?;
        tracing::info!(server = my_id, %addr, url = %endpoint.command_url, "serving the AdminServer's commands");
        let admin = crate::admin::Endpoint::new(ctx.clone(), endpoint.command_url.clone());
        tasks.spawn("the admin server", ok(crate::http::serve("admin server", listener, admin, stopped.clone())));
    }
    if let Some(tls) = &tls {
        tasks.spawn("the TLS file watcher", ok(crate::tls::reload::watch_files(tls.clone(), stopped.clone())));
    }
    if let Some(quorum_tls) = quorum_tls.filter(|q| q.settings().reload) {
        tasks.spawn("the quorum TLS file watcher", ok(crate::tls::reload::watch_files(quorum_tls, stopped.clone())));
    }
    if let (Some(listener), Some(tls)) = (secure, &tls) {
        let addr = listener.local_addr().map_err(io("secure client address"))?;
        tracing::info!(server = my_id, %addr, "serving TLS clients (secureClientPort)");
        let port = Port::Secure(tls.clone());
        tasks.spawn("the secure client acceptor", ok(accept(ctx.clone(), listener, port, stopped.clone())));
    }
    if let Some(listener) = client_listener {
        let port = match tls {
            Some(tls) if tls.settings().port_unification => Port::Unified(tls),
            _ => Port::Plain,
        };
        tasks.spawn("the client acceptor", ok(accept(ctx.clone(), listener, port, stopped)));
    }
    tracing::info!(client = %client_addr, standalone, "started");
    let fatal = ctx.shared.fatal.subscribe();
    Ok(Server { ctx, stop, fatal })
}

/// Watches the server's long-lived tasks: one that ends while the server is neither stopping nor halted (it
/// returned, failed or panicked) is fatal, with its reason: the server stops serving and the process exits, so
/// that a restart recovers from disk. It never goes on voting or answering with a frozen tree.
struct Supervisor {
    ctx: Arc<Ctx>,
    stopped: watch::Receiver<bool>,
}

impl Supervisor {
    fn spawn(&self, name: &'static str, task: impl Future<Output = Result<(), String>> + Send + 'static) {
        let (ctx, stopped) = (self.ctx.clone(), self.stopped.clone());
        let task = tokio::spawn(task);
        tokio::spawn(async move {
            let reason = match task.await {
                Ok(Ok(())) => format!("{name} ended"),
                Ok(Err(error)) => format!("{name} failed: {error}"),
                Err(join) => format!("{name} panicked: {join}"),
            };
            if *stopped.borrow() || ctx.shared.halt.borrow().is_some() {
                return;
            }
            ctx.shared.fail(reason);
        });
    }
}

/// A task that cannot fail, as the supervisor takes it.
async fn ok(task: impl Future<Output = ()>) -> Result<(), String> {
    task.await;
    Ok(())
}

/// The secure client port's listener, if `secureClientPort` is set.
async fn secure_listener(config: &Config, tls: &Option<Arc<Tls>>) -> Result<Option<TcpListener>, StartError> {
    let (Some(settings), Some(_)) = (&config.tls, tls) else { return Ok(None) };
    let Some(port) = settings.port else { return Ok(None) };
    let bind = format!("{}:{port}", settings.address.as_deref().unwrap_or("0.0.0.0"));
    let listener = TcpListener::bind(bind.as_str()).await.map_err(io(format!("bind the secure client port {bind}")))?;
    Ok(Some(listener))
}

/// What a client port speaks.
enum Port {
    /// ZooKeeper's protocol in plaintext.
    Plain,
    /// TLS first (`secureClientPort`).
    Secure(Arc<Tls>),
    /// Either, told by the first byte (`client.portUnification`).
    Unified(Arc<Tls>),
}

/// The first byte of a TLS connection: a handshake record (ZooKeeper's `UnifiedServerSocket` looks for it).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts client connections until stopped.
async fn accept(ctx: Arc<Ctx>, listener: TcpListener, port: Port, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        match ctx.shared.admission.admit(addr.ip()) {
            // The permit is taken before the handshake: a handshake holds a slot like any connection.
            Ok(permit) => match &port {
                Port::Plain => drop(tokio::spawn(plain(ctx.clone(), stream, addr, permit))),
                Port::Secure(tls) => drop(tokio::spawn(secured(ctx.clone(), tls.clone(), stream, addr, permit))),
                Port::Unified(tls) => drop(tokio::spawn(unified(ctx.clone(), tls.clone(), stream, addr, permit))),
            },
            Err(refused) => tracing::warn!(client = %addr, %refused, "connection refused"),
        }
    }
}

/// Serves a plaintext connection.
async fn plain(ctx: Arc<Ctx>, stream: tokio::net::TcpStream, addr: SocketAddr, permit: Permit) {
    let _ = stream.set_nodelay(true);
    crate::conn::serve(ctx, stream, addr, Vec::new(), permit).await
}

/// Serves a connection to a unified port: TLS when its first byte starts a handshake, plaintext otherwise.
/// Waiting for that byte is bounded like a handshake.
async fn unified(ctx: Arc<Ctx>, tls: Arc<Tls>, stream: tokio::net::TcpStream, addr: SocketAddr, permit: Permit) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => secured(ctx, tls, stream, addr, permit).await,
        Ok(Ok(1)) => plain(ctx, stream, addr, permit).await,
        _ => {}
    }
}

/// Serves a connection to the secure port once its handshake is done.
async fn secured(ctx: Arc<Ctx>, tls: Arc<Tls>, stream: tokio::net::TcpStream, addr: SocketAddr, permit: Permit) {
    let Some(secured) = tls.handshake(stream, addr).await else { return };
    let mut identity: Vec<Id> = secured.identity.into_iter().collect();
    // ZooKeeper's `zookeeper.X509AuthenticationProvider.superUser`: that DN is also `super`.
    if let Some(super_user) = &ctx.shared.config.x509_super_user {
        if identity.iter().any(|id| &id.id == super_user) {
            identity.push(Id::new("super", super_user));
        }
    }
    crate::conn::serve(ctx, secured.stream, addr, identity, permit).await
}

/// Handles what other servers forward: requests and syncs (as leader), answers (as follower).
async fn forwarded(ctx: Arc<Ctx>, mut stream: mpsc::Receiver<Forwarded>) {
    // A payload for the pipeline keeps its share there until handled; every other one gives it back at once.
    // Nothing here waits (the pipeline's queue is bounded by the shares): a touch behind a write is heard at once.
    let mut memo = AuthMemo::default();
    while let Some(Forwarded { from, data, share }) = stream.recv().await {
        let item = match Forward::decode_with(data, &mut memo) {
            Ok(item) => item,
            Err(error) => {
                // The peer's fault (a server forwards only what it encoded): drop its link, as for a frame that
                // does not decode.
                tracing::debug!(peer = from.0, %error, "undecodable forward from a peer");
                ctx.handle.drop_peer(from, "it forwarded a payload that does not decode");
                continue;
            }
        };
        match item {
            Forward::Request { session, cxid, op, auth, body } => match crate::convert::decode(op, &body) {
                Ok(request) => {
                    tracing::trace!(target: crate::LATENCY, session, cxid, "received");
                    let item = Item::Write { origin: Origin::Peer(from), session, cxid, auth, request };
                    ctx.pipeline.forwarded(item, share);
                }
                Err(error) => {
                    // A follower forwards a client's request only after decoding it itself.
                    tracing::debug!(peer = from.0, %error, "undecodable forwarded request");
                    ctx.handle.drop_peer(from, "it forwarded a client request that does not decode");
                }
            },
            Forward::Sync { session, cxid } => {
                ctx.pipeline.forwarded(Item::Sync { origin: Origin::Peer(from), session, cxid }, share);
            }
            Forward::Touch(sessions) => ctx.shared.tracker.touch(&sessions, Instant::now()),
            Forward::Attached(session) => {
                ctx.pipeline.forwarded(Item::Attach { origin: Origin::Peer(from), session }, share);
            }
            Forward::Synced { session, cxid, zxid } => {
                if let Some(waiter) = lock(&ctx.shared.syncs).remove(&(session, cxid)) {
                    let _ = waiter.send(zxid);
                }
            }
            Forward::Dropped(session) => {
                if let Some(conn) = ctx.shared.conns().get(&session) {
                    conn.send(Out::Close);
                }
            }
            Forward::Digest { .. } if ctx.handle.role.borrow().0 != Role::Following(from) => {
                // Benign (a sample from the previous leader, sent before this server moved on), and a peer could
                // send any number of them: not worth a warning each.
                tracing::debug!(peer = from.0, "a digest sample from a server this one does not follow: ignored");
            }
            Forward::Digest { zxid, digest } => {
                if let Err(diverged) = lock(&ctx.shared.digests).leaders(zxid, digest) {
                    tracing::error!(%diverged, "stopping: this server's tree differs from the leader's");
                    ctx.shared.halt(diverged.to_string());
                }
            }
        }
    }
}

/// Sessions per touch message (8 bytes each: 128 KiB).
const TOUCH_CHUNK: usize = 16 << 10;

/// Tells the leader, every half tick, which sessions had client activity.
async fn touches(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(ctx.shared.config.tick / 2);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        // A session whose client sent a packet since the last touch is alive (ZooKeeper's followers report the
        // same in their pings): its deadline at the leader is then at most half a tick behind its last packet,
        // so a silent client's session expires within its timeout plus a tick, as in ZooKeeper.
        let sessions: Vec<i64> = ctx
            .shared
            .conns()
            .iter()
            .filter(|(&s, conn)| s != 0 && conn.counters.active.swap(false, Ordering::Relaxed))
            .map(|(&s, _)| s)
            .collect();
        if sessions.is_empty() {
            continue;
        }
        // In bounded pieces: a server may hold any number of sessions, a peer frame only so many.
        for sessions in sessions.chunks(TOUCH_CHUNK) {
            if ctx.leading() {
                ctx.shared.tracker.touch(sessions, Instant::now());
            } else if ctx.serving() {
                ctx.handle.forward(ForwardTo::Leader, Forward::Touch(sessions.to_vec()).encode()).await;
            }
        }
    }
}

/// Closes every client connection when this server stops serving (ZooKeeper shuts its request processors
/// down on a leader change; clients reconnect, to this server or another, once one serves again).
async fn serving(ctx: Arc<Ctx>, stopped: watch::Receiver<bool>) {
    let mut role = ctx.handle.role.clone();
    let mut was = *role.borrow();
    while role.changed().await.is_ok() {
        let now = *role.borrow_and_update();
        if now != was {
            let role = match now.0 {
                Role::Looking => "looking".to_owned(),
                Role::Leading => "leading".to_owned(),
                Role::Following(leader) => format!("following server {}", leader.0),
            };
            tracing::info!(role = %role, serving = now.1, "role changed");
        }
        ctx.shared.leading.store(now == (Role::Leading, true), Ordering::Release);
        if now.0 != was.0 {
            // Samples from another leader's time never match this one's.
            *lock(&ctx.shared.digests) = Default::default();
        }
        if was.1 && (!now.1 || now.0 != was.0) {
            let conns: Vec<_> = ctx.shared.conns().values().cloned().collect();
            for conn in conns {
                conn.send(Out::Close);
            }
            lock(&ctx.shared.syncs).clear();
        }
        was = now;
    }
    // The runtime ended. Unless this server is shutting down, or halted on a divergence (it stays up, not
    // serving, for the operator to look at; a restart would serve its diverged disk), that was a fatal error
    // (its log says which: a failed fsync, say): serving on would answer reads from a tree that no longer
    // follows the leader.
    if !*stopped.borrow() && ctx.shared.halt.borrow().is_none() {
        let reason = "the replication runtime stopped on a fatal error (see the log above)".to_owned();
        ctx.shared.fail(reason);
    }
}

/// Sends the leader's digest samples to every follower.
async fn send_digests(ctx: Arc<Ctx>, mut samples: mpsc::UnboundedReceiver<(i64, u64)>) {
    while let Some((zxid, digest)) = samples.recv().await {
        let data = Forward::Digest { zxid, digest }.encode();
        for &id in ctx.shared.config.servers.keys().filter(|&&id| id != ctx.shared.my_id) {
            ctx.handle.forward(ForwardTo::Peer(ServerId(id)), data.clone()).await;
        }
    }
}

/// Stops a server whose tree diverged from the leader's: it leaves the ensemble and serves no client, so that
/// no read is answered from a wrong tree. Its disk stays as it is, for the operator to inspect.
async fn halt_on_divergence(ctx: Arc<Ctx>) {
    let mut halt = ctx.shared.halt.subscribe();
    let reason = match halt.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone().unwrap_or_default(),
        Err(_) => return,
    };
    tracing::error!(%reason, "halted: this server serves no more");
    ctx.handle.shutdown();
    let conns: Vec<_> = ctx.shared.conns().values().cloned().collect();
    for conn in conns {
        conn.send(Out::Close);
    }
}

/// How peer connections are secured: quorum TLS or plain TCP, with quorum SASL over it when
/// `quorum.auth.enableSasl=true` (a standalone server has no peers to authenticate).
fn peer_security(
    config: &Config,
    my_id: u64,
    quorum_tls: Option<Arc<QuorumTls>>,
    standalone: bool,
) -> Result<Arc<dyn PeerSecurity>, StartError> {
    let beneath: Arc<dyn PeerSecurity> = match quorum_tls {
        Some(quorum_tls) => quorum_tls,
        None => Arc::new(replication::security::Plaintext),
    };
    match &config.quorum_sasl {
        Some(settings) if !standalone => {
            let credentials = Credentials::load(settings, config.sasl.jaas.as_ref()).map_err(StartError::QuorumSasl)?;
            Ok(QuorumSasl::new(my_id, settings.clone(), credentials, beneath))
        }
        _ => Ok(beneath),
    }
}
