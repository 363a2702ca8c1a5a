//! The clients that run while faults come and go, each recording what it did in a [`Recorder`]:
//!
//! - register clients: read a register (after a `sync` half the time), then `setData` it with the version read;
//! - set clients: sequential creates whose names carry a token unique to the attempt;
//! - ephemeral clients: each session creates an ephemeral and watches for its own expiry; a session seen
//!   expired or alive at the end says whether its ephemeral must be gone or present.
//!
//! Every request has a bounded time; one that runs out, or whose connection breaks, is indeterminate. A client
//! whose session expired opens a new one. Paths live under `/nemesis`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zookeeper_client::{Client, Error, SessionState};

use super::history::{Event, Op, Outcome, Recorder, SessionFate, INITIAL_VALUE};
use crate::client::{EPHEMERAL, PERSISTENT, SEQUENTIAL};

/// The root of the workload's nodes.
pub const ROOT: &str = "/nemesis";
/// How long one request may take before it counts as indeterminate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a connect may take before the client tries again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Register `r`'s path.
pub fn register_path(r: usize) -> String {
    format!("{ROOT}/r{r}")
}

/// The parent of the set's sequential nodes.
pub fn set_path() -> String {
    format!("{ROOT}/set")
}

/// The parent of the ephemerals.
pub fn ephemeral_path() -> String {
    format!("{ROOT}/eph")
}

/// Creates the workload's nodes (through `client`, on a healthy cluster). A create whose connection was lost is
/// tried again for up to 30 s, and NodeExists after such a retry means the lost attempt made it.
pub async fn setup(client: &Client, registers: usize) {
    let mut paths = vec![ROOT.to_string(), set_path(), ephemeral_path()];
    paths.extend((0..registers).map(register_path));
    for path in paths {
        let data = if path.starts_with(&format!("{ROOT}/r")) { INITIAL_VALUE } else { "" };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut retried = false;
        loop {
            match client.create(&path, data.as_bytes(), PERSISTENT).await {
                Ok(_) => break,
                Err(zookeeper_client::Error::NodeExists) if retried => break,
                Err(e @ zookeeper_client::Error::ConnectionLoss) if std::time::Instant::now() < deadline => {
                    eprintln!("nemesis: create {path}: {e}; trying again");
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("create {path}: {e}"),
            }
        }
    }
}

/// Who a client is and where it connects.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Unique among the run's clients.
    pub id: usize,
    /// The connect string: one server's address, or all of them.
    pub connect: String,
    /// The server it is pinned to, if one.
    pub pinned: Option<usize>,
    /// The session timeout it asks for.
    pub session_timeout: Duration,
}

/// A connected session, or none while `stop` is unset; retries with bounded connects.
async fn session(who: &Identity, stop: &AtomicBool) -> Option<Client> {
    while !stop.load(Ordering::SeqCst) {
        let mut connector = Client::connector();
        connector.session_timeout(who.session_timeout);
        if let Ok(Ok(client)) = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(&who.connect)).await {
            return Some(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Whether a write that failed with `e` may still have applied: anything but the server's refusal.
fn indeterminate(e: &Error) -> bool {
    !matches!(e, Error::NoNode | Error::NodeExists | Error::BadVersion | Error::NoAuth | Error::BadArguments(_))
}

fn outcome<T, U>(result: Result<Result<T, Error>, tokio::time::error::Elapsed>, ok: impl FnOnce(T) -> U) -> Outcome<U> {
    match result {
        Ok(Ok(value)) => Outcome::Ok(ok(value)),
        Ok(Err(e)) if indeterminate(&e) => Outcome::Indeterminate(e.to_string()),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Indeterminate(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// Whether a session should be given up for a new one.
fn expired(client: &Client) -> bool {
    matches!(client.state(), SessionState::Expired | SessionState::Closed | SessionState::AuthFailed)
}

/// Reads a register (synced or not), then sets it with the version read, until `stop`.
pub async fn register_client(who: Identity, registers: usize, seed: u64, rec: Recorder, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut attempt = 0u64;
    while let Some(client) = session(&who, &stop).await {
        let sid = client.session_id().0;
        let event =
            |invoke, op| Event { client: who.id, session: sid, pinned: who.pinned, invoke, complete: rec.now(), op };
        while !stop.load(Ordering::SeqCst) && !expired(&client) {
            let register = rng.gen_range(0..registers);
            let path = register_path(register);
            let synced = rng.gen_bool(0.5);
            let invoke = rec.now();
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                if synced {
                    client.sync(&path).await?;
                }
                client.get_data(&path).await
            })
            .await;
            let read = outcome(read, |(data, stat)| (String::from_utf8_lossy(&data).into_owned(), stat.version));
            rec.record(event(invoke, Op::Read { register, synced, outcome: read.clone() }));
            let Outcome::Ok((_, expected)) = read else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            attempt += 1;
            let value = format!("c{}-{attempt}", who.id);
            let invoke = rec.now();
            let set =
                tokio::time::timeout(REQUEST_TIMEOUT, client.set_data(&path, value.as_bytes(), Some(expected))).await;
            let outcome = outcome(set, |stat| stat.version);
            rec.record(event(invoke, Op::Cas { register, expected, value, outcome }));
        }
    }
}

/// Sequential creates `set/c<id>-<attempt>-<counter>`, until `stop`.
pub async fn set_client(who: Identity, rec: Recorder, stop: Arc<AtomicBool>) {
    let mut attempt = 0u64;
    while let Some(client) = session(&who, &stop).await {
        let sid = client.session_id().0;
        while !stop.load(Ordering::SeqCst) && !expired(&client) {
            attempt += 1;
            let token = format!("c{}-{attempt}-", who.id);
            let invoke = rec.now();
            let prefix = format!("{}/{token}", set_path());
            let create = tokio::time::timeout(REQUEST_TIMEOUT, client.create(&prefix, b"", SEQUENTIAL)).await;
            let outcome = outcome(create, |(_, seq)| format!("{token}{seq}"));
            let failed = outcome.ok().is_none();
            let complete = rec.now();
            rec.record(Event {
                client: who.id,
                session: sid,
                pinned: who.pinned,
                invoke,
                complete,
                op: Op::Create { token, outcome },
            });
            if failed {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One session with an ephemeral, created by an ephemeral client, kept open until the checks are done.
pub struct Held {
    client: Client,
    path: String,
}

impl Held {
    /// Its session.
    pub fn session(&self) -> i64 {
        self.client.session_id().0
    }
}

/// Sessions, each with an ephemeral `eph/c<id>-s<n>`, until `stop`: returns the fates of the sessions seen
/// expired, and the last session if it is still open (its fate is decided by [`fate_at_end`]).
pub async fn ephemeral_client(who: Identity, stop: Arc<AtomicBool>) -> (Vec<SessionFate>, Option<Held>) {
    let mut fates = Vec::new();
    let mut n = 0;
    while let Some(client) = session(&who, &stop).await {
        n += 1;
        let path = format!("{}/c{}-s{n}", ephemeral_path(), who.id);
        let created = tokio::time::timeout(REQUEST_TIMEOUT, client.create(&path, b"", EPHEMERAL)).await;
        if !matches!(created, Ok(Ok(_))) {
            // Unknown whether it exists: this session's ephemeral is not tracked.
            continue;
        }
        let session = client.session_id().0;
        while !stop.load(Ordering::SeqCst) && !expired(&client) {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.check_stat(&path)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if expired(&client) {
            fates.push(SessionFate { session, path, expired: true });
        } else {
            return (fates, Some(Held { client, path }));
        }
    }
    (fates, None)
}

/// After healing: the fate of a held session, if known (alive if it can still sync and see its ephemeral;
/// expired if the client says so).
pub async fn fate_at_end(held: &Held) -> Option<SessionFate> {
    let session = held.client.session_id().0;
    let seen = tokio::time::timeout(REQUEST_TIMEOUT, async {
        held.client.sync(&held.path).await?;
        held.client.check_stat(&held.path).await
    })
    .await;
    match seen {
        Ok(Ok(Some(stat))) if stat.ephemeral_owner == session => {
            Some(SessionFate { session, path: held.path.clone(), expired: false })
        }
        _ if expired(&held.client) => Some(SessionFate { session, path: held.path.clone(), expired: true }),
        _ => None,
    }
}
