//! A TCP proxy on loopback that the tests point clients at, so that they decide which node a session talks to,
//! when its connection breaks, and when it cannot reach any node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct State {
    target: Mutex<SocketAddr>,
    blocked: AtomicBool,
    /// Bumped to close every connection open at that moment.
    generation: watch::Sender<u64>,
}

/// Forwards each accepted connection to the current target. Dropping it closes its listener and connections.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            target: Mutex::new(target),
            blocked: AtomicBool::new(false),
            generation: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Proxy { addr, state, accept }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connect string of this proxy alone.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// New connections go to `target` from now on (open ones stay where they are: see [`Proxy::sever`]).
    pub fn redirect(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Closes every open connection (both sides see the close).
    pub fn sever(&self) {
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Closes every open connection and closes each new one at once, until [`Proxy::unblock`]: for the
    /// client, no node is reachable.
    pub fn block(&self) {
        self.state.blocked.store(true, Ordering::SeqCst);
        self.sever();
    }

    /// Forwards new connections again.
    pub fn unblock(&self) {
        self.state.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if state.blocked.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let target = *state.target.lock().unwrap_or_else(|e| e.into_inner());
        let severed = state.generation.subscribe();
        tokio::spawn(forward(client, target, severed));
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut severed: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = severed.changed() => {}
    }
}
