//! Client TLS: ZooKeeper's `secureClientPort`, served by rustls; and quorum TLS between servers ([`quorum`]).
//!
//! A connection to the secure port takes its place under `maxClientCnxns` when accepted, then has
//! [`HANDSHAKE_TIMEOUT`] to finish the TLS handshake; a failed or slow handshake closes that connection only.
//! After it, the connection speaks exactly the protocol of the plaintext port ([`crate::conn::serve`]).
//! A verified client certificate gives the session the identity `x509:<subject DN>` ([`x509`]).

pub mod config;
pub mod context;
pub mod quorum;
pub mod reload;
pub mod x509;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tree::acl::Id;

pub use config::TlsSettings;
pub use context::TlsError;

/// How long a client has to finish the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The secure port's current TLS configuration (replaced when its files change).
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<TlsAcceptor>,
    /// When a failed handshake was last logged at info (the rest go to debug, so a flood of them costs little).
    last_logged: std::sync::Mutex<Option<Instant>>,
}

/// A client connection once its handshake is done, and the `x509` identity of its certificate.
pub struct Secured {
    /// The stream.
    pub stream: TlsStream<TcpStream>,
    /// `x509:<DN>` when the client presented a verified certificate.
    pub identity: Option<Id>,
}

impl Tls {
    /// Reads the files the settings name.
    pub fn new(settings: TlsSettings) -> Result<Arc<Tls>, TlsError> {
        let acceptor = TlsAcceptor::from(Arc::new(context::server_config(&settings)?));
        Ok(Arc::new(Tls { settings, current: RwLock::new(acceptor), last_logged: Default::default() }))
    }

    /// The settings.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Replaces the configuration (a reload).
    pub fn replace(&self, config: rustls::ServerConfig) {
        let acceptor = TlsAcceptor::from(Arc::new(config));
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = acceptor;
    }

    /// The TLS handshake, bounded by [`HANDSHAKE_TIMEOUT`]; `None` (logged) when it failed.
    pub async fn handshake(&self, stream: TcpStream, addr: SocketAddr) -> Option<Secured> {
        let _ = stream.set_nodelay(true);
        let acceptor = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let error = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => return Some(Secured { identity: identity(&stream, addr), stream }),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
        };
        if self.log_at_info() {
            tracing::info!(client = %addr, %error, "TLS handshake failed (further failures within 10 s at debug)");
        } else {
            tracing::debug!(client = %addr, %error, "TLS handshake failed");
        }
        None
    }

    fn log_at_info(&self) -> bool {
        let mut last = self.last_logged.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let due = !matches!(*last, Some(at) if now.duration_since(at) < Duration::from_secs(10));
        if due {
            *last = Some(now);
        }
        due
    }
}

/// The `x509` identity of the verified certificate the client presented, if any.
fn identity(stream: &TlsStream<TcpStream>, addr: SocketAddr) -> Option<Id> {
    let cert = stream.get_ref().1.peer_certificates()?.first()?;
    match x509::subject_dn(cert) {
        Ok(dn) => Some(Id::new("x509", &dn)),
        Err(error) => {
            // rustls verified it, so this is a DER form the small reader does not know: no identity.
            tracing::info!(client = %addr, %error, "client certificate subject unreadable");
            None
        }
    }
}
