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

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::message::ServerId;
use crate::transport::LinkFault;

/// A connection to a peer once upgraded: plain TCP, or TLS over it.
pub trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin + Any {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + Any> PeerStream for T {}

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
    /// A SASL user whose password the dialer proved (quorum SASL), over what the connection beneath proved
    /// (`under`: [`PeerIdentity::Unproven`] for plain TCP, a certificate for TLS).
    Sasl {
        /// The user name the dialer authenticated as.
        user: String,
        /// What the connection the exchange ran over proved.
        under: Box<PeerIdentity>,
    },
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

/// Splits an upgraded connection into the halves the transport's reader and writer own. Plain TCP splits into
/// its own halves, which need no lock between them (every peer message crosses one); any other stream (TLS,
/// whose reads and writes share one session) goes through tokio's locked split.
pub(crate) fn split(stream: BoxedStream) -> (PeerReader, PeerWriter) {
    if (&*stream as &dyn Any).is::<TcpStream>() {
        let tcp: Box<dyn Any> = stream;
        let tcp = tcp.downcast::<TcpStream>().expect("checked to be a TcpStream");
        let (read, write) = tcp.into_split();
        return (PeerReader::Tcp(read), PeerWriter::Tcp(write));
    }
    let (read, write) = tokio::io::split(stream);
    (PeerReader::Other(read), PeerWriter::Other(write))
}

/// The reading half of a peer connection.
pub(crate) enum PeerReader {
    Tcp(OwnedReadHalf),
    Other(ReadHalf<BoxedStream>),
}

/// The writing half of a peer connection.
pub(crate) enum PeerWriter {
    Tcp(OwnedWriteHalf),
    Other(WriteHalf<BoxedStream>),
}

impl AsyncRead for PeerReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerReader::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            PeerReader::Other(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerWriter::Tcp(write) => Pin::new(write).poll_write(cx, buf),
            PeerWriter::Other(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerWriter::Tcp(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            PeerWriter::Other(write) => Pin::new(write).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerWriter::Tcp(write) => write.is_write_vectored(),
            PeerWriter::Other(write) => write.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerWriter::Tcp(write) => Pin::new(write).poll_flush(cx),
            PeerWriter::Other(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerWriter::Tcp(write) => Pin::new(write).poll_shutdown(cx),
            PeerWriter::Other(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn plain_tcp_splits_into_its_own_halves_and_other_streams_through_tokio() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dialed = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (accepted, _) = listener.accept().await.unwrap();
        let dialed = dialed.await.unwrap();
        let (mut read, _write) = split(Box::new(accepted));
        assert!(matches!(read, PeerReader::Tcp(_)));
        let (_read, mut write) = split(Box::new(dialed));
        write.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        let (one, _two) = tokio::io::duplex(64);
        let (read, write) = split(Box::new(one));
        assert!(matches!((read, write), (PeerReader::Other(_), PeerWriter::Other(_))));
    }
}
