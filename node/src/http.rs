//! The bounded HTTP/1.1 server (hyper) behind the Prometheus `/metrics` endpoint ([`crate::metrics`]) and the
//! AdminServer ([`crate::admin`]): each gives it a [`Handler`] that answers one request.
//!
//! It takes what any client of this server may take (README, "What one client can take"): at most
//! [`MAX_CONNECTIONS`] connections at once (more are closed on accept), request heads of at most
//! [`MAX_HEAD`] bytes sent within [`HEAD_TIMEOUT`], and [`CONNECTION_TIMEOUT`] per connection in all, so a slow
//! or silent client loses its connection. Handlers read the server's report on a blocking thread, never on
//! the runtime's threads that serve clients and peers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connections served at once; Prometheus keeps one per target.
pub const MAX_CONNECTIONS: usize = 16;
/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a client has to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may last, keep-alive included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What an endpoint answers: one response per request, never failing (errors are responses).
pub trait Handler: Send + Sync + 'static {
    /// The answer to `request`.
    fn answer(&self, request: Request<Incoming>) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Serves `handler` on `listener` until `stop` turns true; `name` names the endpoint in logs.
pub async fn serve<H: Handler>(name: &'static str, listener: TcpListener, handler: H, mut stop: watch::Receiver<bool>) {
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "{name}: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "{name}: too many connections, closing this one");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.answer(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "{name}: connection ended"),
                Err(_) => tracing::debug!(%peer, "{name}: connection timed out"),
            }
        });
    }
}

/// A response with `code` and a short text body.
pub fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response
}
