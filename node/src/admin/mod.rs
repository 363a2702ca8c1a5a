//! ZooKeeper's AdminServer (`admin.enableServer`, on by default on `0.0.0.0:8080`): its commands over HTTP as
//! JSON, as ZooKeeper 3.8's `JettyAdminServer` serves them, on the bounded server of [`crate::http`].
//!
//! - `GET <commandURL>` (default `/commands`) lists the commands' primary names as HTML links, sorted.
//! - `GET <commandURL>/<name or alias>` answers the command's JSON object: `command` (its primary name, even when asked by an alias; an unknown command's name as asked),
//!   `error` (null, or why not), and the command's keys ([`commands`]), status 200 even for an unknown command
//!   or a server that is not serving, as ZooKeeper does.
//! - Any other path is 404; another method than GET (or HEAD) is 405, as Jetty's servlet answers.
//!
//! ZooKeeper 3.8.0 asks no authentication for any command, and every command here only reads (the two stat
//! resets aside, which ZooKeeper also leaves open), so none is gated.
//!
//! Each command's JSON is built from the same [`crate::fourlw::Report`] that the four-letter words print, so
//! `monitor` and `mntr` (and `stats` and `stat`, ...) never disagree.

pub mod commands;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::http::status;
use crate::server::Ctx;

/// The AdminServer's handler: the commands under `command_url`.
pub struct Endpoint {
    ctx: Arc<Ctx>,
    command_url: String,
}

impl Endpoint {
    /// Commands of the server `ctx` under `command_url` (a path such as `/commands`, without a trailing `/`).
    pub fn new(ctx: Arc<Ctx>, command_url: String) -> Endpoint {
        Endpoint { ctx, command_url }
    }
}

/// What a path under the endpoint asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// The list of commands.
    List,
    /// One command, by any of its names.
    Command(&'a str),
    /// Nothing here.
    NotFound,
}

fn route<'a>(command_url: &str, path: &'a str) -> Route<'a> {
    match path.strip_prefix(command_url) {
        Some("" | "/") => Route::List,
        Some(rest) => match rest.strip_prefix('/') {
            Some(name) => Route::Command(name),
            None => Route::NotFound,
        },
        None => Route::NotFound,
    }
}

impl crate::http::Handler for Endpoint {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let route = route(&self.command_url, &path);
        if route == Route::NotFound {
            return status(StatusCode::NOT_FOUND, "Not Found\n");
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match route {
            Route::Command(name) => self.command(name, trace_mask(request.uri().query())).await,
            _ => with_type(commands::links(&self.command_url), "text/html;charset=utf-8"),
        }
    }
}

impl Endpoint {
    async fn command(&self, name: &str, trace_mask: Option<String>) -> Response<Full<Bytes>> {
        let ctx = self.ctx.clone();
        let name = name.to_owned();
        let answer = tokio::task::spawn_blocking(move || commands::run(&ctx, &name, trace_mask.as_deref())).await;
        match answer {
            Ok(json) => {
                let text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".into());
                with_type(text, "application/json")
            }
            Err(error) => {
                tracing::error!(%error, "admin server: a command panicked");
                status(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
            }
        }
    }
}

/// The `traceMask` parameter of a query string (the only parameter a 3.8 command takes); its first value, as
/// Jetty's `getParameterMap` gives it. A mask is a number, so no percent-decoding is needed.
fn trace_mask(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| pair.strip_prefix("traceMask=")).map(str::to_owned)
}

fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_as_jettys_servlet_context() {
        assert_eq!(route("/commands", "/commands"), Route::List);
        assert_eq!(route("/commands", "/commands/"), Route::List);
        assert_eq!(route("/commands", "/commands/mntr"), Route::Command("mntr"));
        assert_eq!(route("/commands", "/commandsx"), Route::NotFound);
        assert_eq!(route("/commands", "/metrics"), Route::NotFound);
        assert_eq!(trace_mask(Some("a=1&traceMask=306")), Some("306".into()));
        assert_eq!(trace_mask(None), None);
    }
}
