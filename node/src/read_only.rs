//! Read-only mode (`readonlymode.enabled=true`): a server cut off from its quorum goes on serving reads to the
//! clients that asked for read-only sessions, as ZooKeeper 3.8's `ReadOnlyZooKeeperServer` does.
//!
//! What ZooKeeper does, and Ensemble with it:
//! - A peer that has been LOOKING for `max(2 s, tickTime)` starts its read-only server (the `roZkMgr` thread of
//!   `QuorumPeer.run`); when it leaves LOOKING (it found a leader, or leads) the read-only server shuts down
//!   and closes every client connection. Here the [`run`] task does both, from the replication runtime's role.
//! - While read-only, the server closes, without an answer, a client whose ConnectRequest does not set
//!   `readOnly` (`canBeReadOnly`), and one that reopens a session the tree knows (a global session,
//!   ZOOKEEPER-3863); its ConnectResponses say `readOnly`.
//! - Its sessions are local: never replicated, kept by this server only, reopened here until their timeout
//!   runs out, and gone when the mode ends. ZooKeeper creates them only with `localSessionsEnabled=true`;
//!   without it the createSession is refused like a write, and the client gets a NOTREADONLY reply header in
//!   place of a ConnectResponse ([`Admission::NotReadOnly`]).
//! - Every write, `check`, `sync`, `multi`, `reconfig` and `deleteContainer` answers NOTREADONLY (-119) before
//!   its body is read (`ReadOnlyRequestProcessor`); reads, watches, pings, auth and `closeSession` work.
//! - `isro` answers `ro` (`rw` when serving read-write) and is enabled whatever `4lw.commands.whitelist`
//!   says; `srvr` and `stat` say `Mode: read-only`.
//!
//! Clients find their way back themselves: the Java client (`ClientCnxn.pingRwServer`) and kazoo ask the other
//! servers `isro` while read-only and reconnect to one that answers `rw`, and any client reconnects when its
//! read-only connection is closed. A read-only session is unknown to the read-write ensemble, so it comes back
//! expired (kazoo then opens a new session; the Java client sends session id 0 until it has seen a read-write
//! server).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use replication::peer::Role;
use tokio::sync::watch;
use tree::code::op;

use crate::server::Ctx;
use crate::session::SessionId;
use crate::shared::lock;

/// The least time a server looks for a leader before it serves read-only (ZooKeeper's `Math.max(2000,
/// tickTime)`): an ordinary election is over well before.
pub const MIN_GRACE: Duration = Duration::from_secs(2);

/// How often the sessions whose connections are gone are looked at for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_millis(500);

/// Whether a request with op code `op` is refused with NOTREADONLY in read-only mode (ZooKeeper's
/// `ReadOnlyRequestProcessor`, which sees the request before its body is read). `closeSession` is not: a
/// read-only session is local, and closes.
pub fn refused(op: i32) -> bool {
    matches!(
        op,
        op::SYNC
            | op::CREATE
            | op::CREATE2
            | op::CREATE_TTL
            | op::CREATE_CONTAINER
            | op::DELETE
            | op::DELETE_CONTAINER
            | op::SET_DATA
            | op::RECONFIG
            | op::SET_ACL
            | op::MULTI
            | op::CHECK
    )
}

/// What a server in read-only mode does with a ConnectRequest (`ZooKeeperServer.processConnectRequest` with
/// `ReadOnlyZooKeeperServer`'s overrides), in ZooKeeper's order; the zxid check comes between the first
/// refusal and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Close the connection without an answer, for this reason.
    Refuse(&'static str),
    /// Answer with a NOTREADONLY reply header where the ConnectResponse would be, then close: the session would
    /// be global, and a read-only server creates none.
    NotReadOnly,
    /// Open a new local session.
    Create,
    /// Reopen the session if it is one of this mode's local sessions and the password matches; else answer
    /// that it expired.
    Reopen,
}

impl Admission {
    /// The admission of a client that asked for `read_only` (None: an old client, which cannot ask),
    /// reopening `session` (0: a new one) that the tree knows (`global`) or not, with `localSessionsEnabled`.
    pub fn of(read_only: Option<bool>, session: SessionId, global: bool, local_sessions: bool) -> Admission {
        match (read_only, session) {
            (None | Some(false), _) => Admission::Refuse("the server is read-only and the client is not"),
            (Some(true), 0) if local_sessions => Admission::Create,
            (Some(true), 0) => Admission::NotReadOnly,
            (Some(true), _) if global => Admission::Refuse("a global session is not reopened in read-only mode"),
            (Some(true), _) => Admission::Reopen,
        }
    }
}

/// The read-only mode of one server: whether it is on, and its local sessions.
#[derive(Debug)]
pub struct ReadOnly {
    /// `readonlymode.enabled`.
    enabled: bool,
    /// `Some(generation)` while this server serves read-only; each time the mode starts it has a new
    /// generation, so that a connection opened in one never outlives it.
    mode: watch::Sender<Option<u64>>,
    generations: AtomicU64,
    sessions: Mutex<HashMap<SessionId, Local>>,
}

/// A local session of the read-only server.
#[derive(Clone, Copy, Debug)]
struct Local {
    generation: u64,
    timeout: Duration,
    /// When it expires; `None` while a connection holds it (the connection closes once its client is silent
    /// for the timeout, and sets this then).
    expires: Option<Instant>,
}

impl ReadOnly {
    /// The mode, off until [`ReadOnly::enter`]; `enabled` is `readonlymode.enabled`.
    pub fn new(enabled: bool) -> ReadOnly {
        ReadOnly { enabled, mode: watch::channel(None).0, generations: AtomicU64::new(0), sessions: Mutex::default() }
    }

    /// Whether `readonlymode.enabled` is set.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The generation of the read-only mode now, if the server is in it.
    pub fn generation(&self) -> Option<u64> {
        *self.mode.borrow()
    }

    /// The mode's changes. Subscribe before reading the generation (`borrow_and_update`): then no change after
    /// the read goes unseen.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.mode.subscribe()
    }

    /// Starts serving read-only, as a new generation; returns it.
    pub fn enter(&self) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.sessions).clear();
        self.mode.send_replace(Some(generation));
        generation
    }

    /// Stops serving read-only: every local session is gone, and the connections holding them see the mode
    /// change and close. Whether the server was read-only.
    pub fn leave(&self) -> bool {
        let was = self.mode.send_replace(None).is_some();
        lock(&self.sessions).clear();
        was
    }

    /// Opens local session `session` of `generation`, held by a connection; false if that mode has ended.
    pub fn open(&self, session: SessionId, timeout: Duration, generation: u64) -> bool {
        let mut sessions = lock(&self.sessions);
        if self.generation() != Some(generation) {
            return false;
        }
        sessions.insert(session, Local { generation, timeout, expires: None });
        true
    }

    /// Reopens local session `session` for a connection of `generation`, with its new `timeout` (ZooKeeper's
    /// `touchSession`); false if it is not one (it expired, was closed, or belongs to an earlier mode).
    pub fn reopen(&self, session: SessionId, timeout: Duration, generation: u64, now: Instant) -> bool {
        let mut sessions = lock(&self.sessions);
        match sessions.get_mut(&session) {
            Some(local) if local.generation == generation && local.expires.is_none_or(|at| now < at) => {
                *local = Local { generation, timeout, expires: None };
                true
            }
            _ => false,
        }
    }

    /// The connection holding `session` closed; the client last sent a packet at `last_packet`: the session
    /// expires a timeout after that.
    pub fn detach(&self, session: SessionId, last_packet: Instant) {
        if let Some(local) = lock(&self.sessions).get_mut(&session) {
            local.expires = Some(last_packet + local.timeout);
        }
    }

    /// Closes `session` (its client's closeSession).
    pub fn close(&self, session: SessionId) {
        lock(&self.sessions).remove(&session);
    }

    /// Forgets the sessions that expired by `now`.
    pub fn expire(&self, now: Instant) {
        lock(&self.sessions).retain(|_, local| local.expires.is_none_or(|at| now < at));
    }

    /// Every local session with when it expires: a held one a timeout after `now` (its connection touches it
    /// with every packet, as ZooKeeper's local tracker does), a detached one when it was set to (`dump`).
    pub fn expiries(&self, now: Instant) -> Vec<(SessionId, Instant)> {
        let sessions = lock(&self.sessions);
        sessions.iter().map(|(&session, local)| (session, local.expires.unwrap_or(now + local.timeout))).collect()
    }

    /// How many local sessions there are (`zk_local_sessions`).
    pub fn sessions(&self) -> usize {
        lock(&self.sessions).len()
    }
}

/// How long a server looks for a leader before it serves read-only: `max(2 s, tickTime)`.
pub fn grace(tick: Duration) -> Duration {
    tick.max(MIN_GRACE)
}

/// Switches this server into read-only mode once it has been looking for a leader for [`grace`], and out of it
/// as soon as it stops looking, until `stopped` (never while halted). Runs only with `readonlymode.enabled`.
pub async fn run(ctx: Arc<Ctx>, stopped: watch::Receiver<bool>) {
    let grace = grace(ctx.shared.config.tick);
    let halt = ctx.shared.halt.subscribe();
    switch(&ctx.shared.read_only, ctx.handle.role.clone(), halt, stopped, grace).await;
    ctx.shared.read_only.leave();
}

/// [`run`]'s loop over its inputs: the runtime's role, the server's halt and stop.
async fn switch(
    read_only: &ReadOnly,
    mut role: watch::Receiver<(Role, bool)>,
    mut halt: watch::Receiver<Option<String>>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) {
    let looking = |role: &(Role, bool)| role.0 == Role::Looking;
    loop {
        // Wait until the server looks for a leader (or is stopping: then this ends).
        tokio::select! {
            r = role.wait_for(looking) => if r.is_err() { return },
            _ = stopped.wait_for(|&s| s) => return,
        }
        // It must go on looking for the whole grace period.
        let still_looking = tokio::select! {
            _ = tokio::time::sleep(grace) => true,
            _ = role.wait_for(|r| !looking(r)) => false,
            _ = stopped.wait_for(|&s| s) => return,
        };
        if !still_looking || halt.borrow().is_some() || !looking(&role.borrow()) {
            continue;
        }
        let generation = read_only.enter();
        tracing::warn!(generation, ?grace, "no quorum: serving read-only clients (readonlymode.enabled)");
        let ended = serve(read_only, &mut role, &mut halt, &mut stopped).await;
        read_only.leave();
        tracing::info!(generation, reason = ended, "read-only mode over: its clients are disconnected");
    }
}

/// Keeps the read-only mode, expiring its sessions, until the server stops looking, halts or stops; why.
async fn serve(
    read_only: &ReadOnly,
    role: &mut watch::Receiver<(Role, bool)>,
    halt: &mut watch::Receiver<Option<String>>,
    stopped: &mut watch::Receiver<bool>,
) -> &'static str {
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            r = role.wait_for(|r| r.0 != Role::Looking) => {
                return if r.is_ok() { "the server found a leader or leads" } else { "the replication runtime ended" }
            }
            _ = halt.wait_for(Option::is_some) => return "the server halted",
            _ = stopped.wait_for(|&s| s) => return "the server stops",
            _ = sweep.tick() => read_only.expire(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replication::message::ServerId;

    #[test]
    fn writes_and_syncs_are_refused_and_reads_are_not() {
        for code in [op::CREATE, op::CREATE2, op::CREATE_TTL, op::CREATE_CONTAINER, op::DELETE, op::SET_DATA] {
            assert!(refused(code), "op {code}");
        }
        for code in [op::SET_ACL, op::CHECK, op::MULTI, op::SYNC, op::RECONFIG, op::DELETE_CONTAINER] {
            assert!(refused(code), "op {code}");
        }
        let reads = [op::EXISTS, op::GET_DATA, op::GET_ACL, op::GET_CHILDREN, op::GET_CHILDREN2, op::MULTI_READ];
        let others = [op::PING, op::AUTH, op::SET_WATCHES, op::SET_WATCHES2, op::ADD_WATCH, op::CHECK_WATCHES];
        let more = [op::REMOVE_WATCHES, op::GET_EPHEMERALS, op::GET_ALL_CHILDREN_NUMBER, op::WHO_AM_I];
        for code in reads.into_iter().chain(others).chain(more).chain([op::CLOSE_SESSION]) {
            assert!(!refused(code), "op {code}");
        }
    }

    #[test]
    fn admission_follows_zookeepers_order() {
        use Admission::*;
        let refuse_rw = Refuse("the server is read-only and the client is not");
        assert_eq!(Admission::of(Some(false), 0, false, true), refuse_rw);
        assert_eq!(Admission::of(None, 0, false, true), refuse_rw, "an old client cannot ask for read-only");
        assert_eq!(Admission::of(Some(false), 7, true, true), refuse_rw, "the client's flag is looked at first");
        assert_eq!(Admission::of(Some(true), 0, false, true), Create);
        assert_eq!(Admission::of(Some(true), 0, false, false), NotReadOnly, "no local sessions: no session");
        assert!(matches!(Admission::of(Some(true), 7, true, true), Refuse(_)), "a global session");
        assert!(matches!(Admission::of(Some(true), 7, true, false), Refuse(_)), "a global session");
        assert_eq!(Admission::of(Some(true), 7, false, true), Reopen);
        assert_eq!(Admission::of(Some(true), 7, false, false), Reopen);
    }

    #[test]
    fn local_sessions_live_until_their_timeout_after_the_last_packet_and_die_with_the_mode() {
        let ro = ReadOnly::new(true);
        let (s, timeout, now) = (0x0100_0000_0000_0001, Duration::from_secs(4), Instant::now());
        assert!(!ro.open(s, timeout, 1), "not read-only yet");
        let first = ro.enter();
        assert!(ro.open(s, timeout, first));
        assert!(ro.reopen(s, timeout, first, now), "held by a connection: alive");
        ro.detach(s, now);
        assert!(ro.reopen(s, Duration::from_secs(6), first, now + Duration::from_secs(3)), "within its timeout");
        ro.detach(s, now + Duration::from_secs(3));
        assert!(!ro.reopen(s, timeout, first, now + Duration::from_secs(9)), "6 s (its new timeout) after");
        ro.expire(now + Duration::from_secs(9));
        assert_eq!(ro.sessions(), 0);

        assert!(ro.open(s, timeout, first));
        ro.close(s);
        assert!(!ro.reopen(s, timeout, first, now), "closed");
        ro.detach(s, now);
        assert_eq!(ro.sessions(), 0, "a detach does not bring a closed session back");

        assert!(ro.open(s, timeout, first));
        assert!(ro.leave());
        assert!(!ro.open(s, timeout, first), "the mode is over");
        let second = ro.enter();
        assert_ne!(first, second);
        assert!(!ro.reopen(s, timeout, second, now), "a session of an earlier mode is gone");
        assert!(!ro.open(s, timeout, first), "a connection of an earlier mode opens nothing");
    }

    /// Drives [`switch`] with a role channel; `grace` is short here (the server's is at least 2 s).
    #[tokio::test]
    async fn the_mode_starts_after_the_grace_of_looking_and_ends_when_a_leader_is_found() {
        let ro = Arc::new(ReadOnly::new(true));
        let (role, roles) = watch::channel((Role::Following(ServerId(2)), true));
        let (halt, halts) = watch::channel(None);
        let (stop, stops) = watch::channel(false);
        // Long enough that the short election below stays well under it on a loaded machine.
        let grace = Duration::from_millis(500);
        let task = tokio::spawn({
            let ro = ro.clone();
            async move { switch(&ro, roles, halts, stops, grace).await }
        });
        let mode = ro.subscribe();
        let wait = |mode: &watch::Receiver<Option<u64>>, on: bool| {
            let mut mode = mode.clone();
            async move {
                let waited = tokio::time::timeout(Duration::from_secs(5), mode.wait_for(|m| m.is_some() == on));
                waited.await.is_ok()
            }
        };

        // Looking for less than the grace (an ordinary election): no read-only mode.
        role.send_replace((Role::Looking, false));
        tokio::time::sleep(grace / 10).await;
        role.send_replace((Role::Following(ServerId(2)), false));
        tokio::time::sleep(grace * 2).await;
        assert_eq!(ro.generation(), None, "an election shorter than the grace");

        // Looking for longer: read-only, until it follows again.
        let looking_since = Instant::now();
        role.send_replace((Role::Looking, false));
        assert!(wait(&mode, true).await, "read-only after the grace");
        assert!(looking_since.elapsed() >= grace, "not before the grace: {:?}", looking_since.elapsed());
        let session = 0x0100_0000_0000_0002;
        assert!(ro.open(session, grace, ro.generation().unwrap()));
        role.send_replace((Role::Following(ServerId(3)), false));
        assert!(wait(&mode, false).await, "the mode ends when a leader is found");
        assert_eq!(ro.sessions(), 0, "and its sessions with it");

        // A halted server never serves read-only; one that halts while read-only stops.
        role.send_replace((Role::Looking, false));
        assert!(wait(&mode, true).await);
        halt.send_replace(Some("diverged".into()));
        assert!(wait(&mode, false).await, "a halt ends the mode");
        role.send_replace((Role::Following(ServerId(3)), false));
        role.send_replace((Role::Looking, false));
        tokio::time::sleep(grace * 3).await;
        assert_eq!(ro.generation(), None, "a halted server stays out of read-only mode");

        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the switch ends when stopped").unwrap();
    }
}
