//! Quorum SASL as the peer transport's [`PeerSecurity`]: it wraps the security beneath it (quorum TLS, or plain
//! TCP), runs the exchange over what that gives, and decides who is admitted by the flags (the table in
//! [`super`]).
//!
//! The listener tells a dialer that authenticates from one that does not by one byte (the frame magic's first,
//! [`super::frame`]): read with `peek` from plain TCP, so that a connection let in without SASL stays a plain
//! `TcpStream` (which the transport splits without a lock); read off a TLS stream and replayed (`Replay`).
//!
//! Every failure is the dialer's fault ([`LinkFault::Secure`], [`LinkFault::Identity`]), logged by the transport
//! with its other refusals (rate-limited there); a failure that ZooKeeper lets through (no `serverRequireSasl`)
//! is logged here, at most [`KEPT_LOGGED`] lines per [`KEPT_WINDOW`].

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use replication::message::ServerId;
use replication::security::{BoxedStream, PeerIdentity, PeerSecurity, Upgrade};
use replication::transport::LinkFault;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::exchange::{self, ExchangeError};
use super::frame::MAGIC;
use super::settings::QuorumSaslSettings;
use super::Credentials;

/// Failed exchanges let through (and logged) per window at most.
pub const KEPT_LOGGED: u64 = 20;
/// The window of [`KEPT_LOGGED`].
pub const KEPT_WINDOW: Duration = Duration::from_secs(10);

/// Quorum SASL over `inner`.
pub struct QuorumSasl {
    inner: Arc<dyn PeerSecurity>,
    shared: Arc<Shared>,
}

/// What the upgrades' futures share.
struct Shared {
    me: u64,
    settings: QuorumSaslSettings,
    credentials: Credentials,
    /// When the current window of logged, let-through failures began, and how many it had.
    kept: Mutex<(Instant, u64)>,
}

impl QuorumSasl {
    /// Quorum SASL for server `me` over `inner`.
    pub fn new(
        me: u64,
        settings: QuorumSaslSettings,
        credentials: Credentials,
        inner: Arc<dyn PeerSecurity>,
    ) -> Arc<QuorumSasl> {
        tracing::info!(
            server = me,
            learner_require = settings.learner_require,
            server_require = settings.server_require,
            user = credentials.learner().0,
            "quorum SASL (DIGEST-MD5) on"
        );
        let kept = Mutex::new((Instant::now(), 0));
        Arc::new(QuorumSasl { inner, shared: Arc::new(Shared { me, settings, credentials, kept }) })
    }
}

impl Shared {
    /// Logs a failed exchange that is let through (`quorum.auth.serverRequireSasl=false`), unless too many were
    /// logged in this window.
    fn kept(&self, addr: SocketAddr, error: &ExchangeError) {
        let mut window = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.0.elapsed() >= KEPT_WINDOW {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        if window.1 <= KEPT_LOGGED {
            tracing::warn!(
                server = self.me,
                %addr,
                %error,
                "a peer failed quorum SASL; letting it in unauthenticated (quorum.auth.serverRequireSasl=false)"
            );
        }
    }
}

impl PeerSecurity for QuorumSasl {
    fn accept(&self, stream: TcpStream, addr: SocketAddr) -> Upgrade<(BoxedStream, PeerIdentity)> {
        let beneath = self.inner.accept(stream, addr);
        let shared = self.shared.clone();
        Box::pin(async move {
            let (stream, identity) = beneath.await?;
            let (mut stream, first) = first_byte(stream).await.map_err(LinkFault::Handshake)?;
            if first != MAGIC[0] {
                // ZooKeeper lets a dialer that does not authenticate through; `admit` refuses it if required.
                return Ok((stream, identity));
            }
            match exchange::serve(&mut stream, &shared.credentials).await {
                Ok(user) => {
                    tracing::debug!(server = shared.me, %addr, user, "a peer authenticated with quorum SASL");
                    Ok((stream, PeerIdentity::Sasl { user, under: Box::new(identity) }))
                }
                Err(error) if error.ends_connection() || shared.settings.server_require => {
                    Err(LinkFault::Secure(format!("quorum SASL: {error}")))
                }
                Err(error) => {
                    shared.kept(addr, &error);
                    Ok((stream, identity))
                }
            }
        })
    }

    fn admit(&self, claimed: ServerId, identity: &PeerIdentity) -> Result<(), LinkFault> {
        match identity {
            PeerIdentity::Sasl { under, .. } => self.inner.admit(claimed, under),
            _ if self.shared.settings.server_require => Err(LinkFault::Identity {
                claimed: claimed.0,
                reason: "it did not authenticate with quorum SASL, which quorum.auth.serverRequireSasl=true requires"
                    .into(),
            }),
            unproven => self.inner.admit(claimed, unproven),
        }
    }

    fn connect(&self, stream: TcpStream, peer: ServerId, addr: SocketAddr) -> Upgrade<BoxedStream> {
        let beneath = self.inner.connect(stream, peer, addr);
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut stream = beneath.await?;
            if !shared.settings.learner_require {
                // ZooKeeper's learner authenticates only when it must.
                return Ok(stream);
            }
            let (user, password) = shared.credentials.learner();
            exchange::learn(&mut stream, user, password).await.map_err(|error| {
                LinkFault::Secure(format!("quorum SASL as user {user:?} with server {}: {error}", peer.0))
            })?;
            tracing::debug!(server = shared.me, peer = peer.0, "authenticated to a peer with quorum SASL");
            Ok(stream)
        })
    }
}

/// The connection's first byte, left to be read again: peeked from plain TCP, read and replayed otherwise.
async fn first_byte(stream: BoxedStream) -> io::Result<(BoxedStream, u8)> {
    let mut first = [0u8; 1];
    if (&*stream as &dyn Any).is::<TcpStream>() {
        let tcp: Box<dyn Any> = stream;
        let tcp = tcp.downcast::<TcpStream>().expect("checked to be a TcpStream");
        if tcp.peek(&mut first).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        return Ok((tcp, first[0]));
    }
    let mut stream = stream;
    stream.read_exact(&mut first).await?;
    Ok((Box::new(Replay { first: Some(first[0]), inner: stream }), first[0]))
}

/// A stream whose first byte was read already: it gives that byte again, then the rest.
struct Replay {
    first: Option<u8>,
    inner: BoxedStream,
}

impl AsyncRead for Replay {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() > 0 {
            if let Some(byte) = this.first.take() {
                buf.put_slice(&[byte]);
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use replication::security::Plaintext;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    fn sasl(learner: (&str, &str), learner_require: bool, server_require: bool) -> Arc<QuorumSasl> {
        let settings = QuorumSaslSettings {
            learner_require,
            server_require,
            learner_context: "QuorumLearner".into(),
            server_context: "QuorumServer".into(),
        };
        let credentials = Credentials::new(&[("learner", "secret")], learner);
        QuorumSasl::new(1, settings, credentials, Arc::new(Plaintext))
    }

    /// `dialer` dials `listener` and sends server id 2; what each side made of it, and the id the listener read.
    async fn link(dialer: &QuorumSasl, listener: &QuorumSasl) -> (Result<PeerIdentity, String>, Result<(), String>) {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let dialed = TcpStream::connect(addr);
        let ((accepted, from), dialed) = tokio::join!(async { socket.accept().await.unwrap() }, dialed);
        let dial = async {
            let mut stream = dialer.connect(dialed.unwrap(), ServerId(1), addr).await.map_err(|e| e.to_string())?;
            stream.write_u64(2).await.map_err(|e| e.to_string())
        };
        let accept = async {
            let (mut stream, identity) = listener.accept(accepted, from).await.map_err(|e| e.to_string())?;
            // A dialer that gave up (refused) closes instead of sending its id.
            if let Ok(id) = stream.read_u64().await {
                assert_eq!(id, 2, "the id after the exchange reads intact");
                listener.admit(ServerId(id), &identity).map_err(|e| e.to_string())?;
            }
            Ok(identity)
        };
        tokio::join!(accept, dial)
    }

    fn proven() -> PeerIdentity {
        PeerIdentity::Sasl { user: "learner".into(), under: Box::new(PeerIdentity::Unproven) }
    }

    #[tokio::test]
    async fn enable_only_neither_sends_nor_requires() {
        let (accepted, dialed) =
            link(&sasl(("learner", "secret"), false, false), &sasl(("x", "y"), false, false)).await;
        assert_eq!(accepted, Ok(PeerIdentity::Unproven));
        dialed.unwrap();
    }

    #[tokio::test]
    async fn a_learner_that_must_authenticate_is_proven() {
        let listener = sasl(("x", "y"), false, false);
        let (accepted, dialed) = link(&sasl(("learner", "secret"), true, false), &listener).await;
        assert_eq!(accepted, Ok(proven()));
        dialed.unwrap();
        let (accepted, dialed) = link(&sasl(("learner", "secret"), true, true), &sasl(("x", "y"), true, true)).await;
        assert_eq!(accepted, Ok(proven()));
        dialed.unwrap();
    }

    #[tokio::test]
    async fn a_failed_learner_is_let_in_unproven_unless_the_server_requires_sasl() {
        // As ZooKeeper: the listener answers Error and keeps the connection; the learner gives up on it.
        let (accepted, dialed) = link(&sasl(("learner", "guess"), true, false), &sasl(("x", "y"), true, false)).await;
        assert_eq!(accepted, Ok(PeerIdentity::Unproven));
        assert!(dialed.unwrap_err().contains("refused the credentials of user \"learner\""));
        let (accepted, dialed) = link(&sasl(("learner", "guess"), true, true), &sasl(("x", "y"), true, true)).await;
        assert!(accepted.unwrap_err().contains("bad password"));
        assert!(dialed.is_err());
    }

    #[tokio::test]
    async fn the_server_requiring_sasl_refuses_a_dialer_that_sends_none() {
        let (accepted, dialed) = link(&sasl(("learner", "secret"), false, false), &sasl(("x", "y"), true, true)).await;
        let refused = accepted.unwrap_err();
        assert!(refused.contains("claims to be server 2") && refused.contains("serverRequireSasl"), "{refused}");
        dialed.unwrap();
    }

    #[tokio::test]
    async fn a_huge_frame_length_ends_the_connection_whatever_the_flags() {
        let listener = sasl(("x", "y"), false, false);
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut dialed = TcpStream::connect(addr).await.unwrap();
        let mut header = super::super::frame::Frame::new(super::super::frame::Status::InProgress, vec![]).encode();
        header[6..].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
        dialed.write_all(&header).await.unwrap();
        let (accepted, from) = socket.accept().await.unwrap();
        // Without the bound the listener would wait for 2 GiB that never come (the transport's handshake
        // timeout would end it): fail instead of hanging.
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept(accepted, from)).await;
        let refused = accepted.expect("refused at once").err().expect("refused").to_string();
        assert!(refused.contains("over the limit"), "{refused}");
    }

    #[tokio::test]
    async fn a_replayed_first_byte_is_read_again() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b"\x00\x00\x00\x00\x00\x00\x00\x02").await.unwrap();
        let (mut stream, first) = first_byte(Box::new(a)).await.unwrap();
        assert_eq!(first, 0);
        assert_eq!(stream.read_u64().await.unwrap(), 2);
    }
}
