//! The seam where a peer connection is secured before the transport's handshake (the dialer's server id):
//! [`PeerSecurity`] upgrades each connection, accepted or dialed, and says what its other end proved; the
//! transport then asks it whether the server id the dialer claims is one that proof allows ([`PeerSecurity::admit`]).
//!
//! [`Plaintext`] is the default: connections stay plain TCP and prove nothing, so any id is admitted (the
//! transport still refuses unknown ids and wrong dialers). The node implements TLS with rustls (quorum TLS,
//! `node/src/tls/quorum.rs`), so this crate does not depend on a TLS library: a verified certificate reaches it as
//! DER bytes.
//!
//! The transport bounds everything here: an upgrade and the id after it must finish within the handshake
//! timeout, and accepted connections being upgraded count against [`crate::transport::MAX_HANDSHAKES`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::message::ServerId;
use crate::transport::LinkFault;

/// A connection to a peer once upgraded: plain TCP, or TLS over it.
pub trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PeerStream for T {}

/// An upgraded connection.
pub type BoxedStream = Box<dyn PeerStream>;

/// An upgrade in progress: its outcome, or the peer's fault.
pub type Upgrade<T> = Pin<Box<dyn Future<Output = Result<T, LinkFault>> + Send>>;

/// What an accepted connection proved about its other end, before it claimed a server id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Nothing: a plaintext connection.
    Unproven,
    /// The end-entity certificate (DER) of a chain the security layer verified against its trust store.
    Certificate(Vec<u8>),
}

/// Secures peer connections. Implementations hold what they need behind `Arc`s, so that their futures own it.
pub trait PeerSecurity: Send + Sync + 'static {
    /// Upgrades a connection this server accepted from `addr`, before it reads the dialer's id.
    fn accept(&self, stream: TcpStream, addr: SocketAddr) -> Upgrade<(BoxedStream, PeerIdentity)>;

    /// Whether a dialer whose connection proved `identity` may be server `claimed` (a server id of the
    /// configuration: the transport checked that first). An error refuses the connection.
    fn admit(&self, claimed: ServerId, identity: &PeerIdentity) -> Result<(), LinkFault>;

    /// Upgrades a connection this server dialed to `peer` at `addr`, before it sends its own id; the upgrade
    /// checks that the other end is `peer`.
    fn connect(&self, stream: TcpStream, peer: ServerId, addr: SocketAddr) -> Upgrade<BoxedStream>;
}

/// Plain TCP, today's default: nothing is proven and every known id is admitted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plaintext;

impl PeerSecurity for Plaintext {
    fn accept(&self, stream: TcpStream, _: SocketAddr) -> Upgrade<(BoxedStream, PeerIdentity)> {
        Box::pin(async move { Ok((Box::new(stream) as BoxedStream, PeerIdentity::Unproven)) })
    }

    fn admit(&self, _: ServerId, _: &PeerIdentity) -> Result<(), LinkFault> {
        Ok(())
    }

    fn connect(&self, stream: TcpStream, _: ServerId, _: SocketAddr) -> Upgrade<BoxedStream> {
        Box::pin(async move { Ok(Box::new(stream) as BoxedStream) })
    }
}
