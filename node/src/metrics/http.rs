//! The `/metrics` HTTP endpoint, as ZooKeeper's `PrometheusMetricsProvider` serves it: `GET /metrics` answers
//! the registry in the Prometheus text format (0.0.4); every other path is 404 (its Jetty context has that one
//! servlet); another method on `/metrics` is 405.
//!
//! It takes what any client of this server may take (README, "What one client can take"): at most
//! [`MAX_CONNECTIONS`] connections at once (more are closed on accept), request heads of at most
//! [`MAX_HEAD`] bytes sent within [`HEAD_TIMEOUT`], and [`CONNECTION_TIMEOUT`] per connection in all, so a slow
//! or silent client loses its connection. A scrape reads the server's report on a blocking thread, never on
//! the runtime's threads that serve clients and peers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
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

/// The text format's content type, as Prometheus' clients send it.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `registry` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics endpoint: too many connections, closing this one");
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| answer(request, registry.clone()));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics endpoint: connection ended"),
                Err(_) => tracing::debug!(%peer, "metrics endpoint: connection timed out"),
            }
        });
    }
}

async fn answer(request: Request<Incoming>, registry: Arc<Registry>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(status(StatusCode::NOT_FOUND, "Not Found\n"));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let text = tokio::task::spawn_blocking(move || super::scrape(&registry)).await;
    Ok(match text {
        Ok(Ok(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
            response
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "metrics endpoint: the registry did not encode");
            status(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
        Err(error) => {
            tracing::error!(%error, "metrics endpoint: the scrape panicked");
            status(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
    })
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response
}
