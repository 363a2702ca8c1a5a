//! The server's log: `tracing` events on stderr, as text for people or JSON lines for log shippers
//! (`--log-format`), every line carrying the id of the server that wrote it (`myid`), so that the logs of an
//! ensemble can be merged and still read.
//!
//! ```text
//! text  server=2 2026-12-01T16:58:08.065285Z  INFO node::server: recovered zxid=0x100000004 nodes=5 ...
//! json  {"server":2,"timestamp":"2026-12-01T16:58:08.065285Z","level":"INFO","fields":{...},"target":"node::server"}
//! ```
//!
//! `RUST_LOG` filters as usual (default `info,wal=warn`).

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `format` on stderr, `server` (the `myid`, if known) on every line, filtered
/// by `RUST_LOG` or else `default_filter`. Colours only on a terminal.
pub fn init(format: LogFormat, server: Option<u64>, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let ansi = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => {
            builder.event_format(WithServer { server, inner: Format::<Full>::default() }).init();
        }
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().flatten_event(false);
            builder.fmt_fields(JsonFields::new()).event_format(WithServer { server, inner: json }).init();
        }
    }
}

/// An event format that puts the server id first: `server=N ` before a text line, `"server":N` as the first key
/// of a JSON line.
struct WithServer<F> {
    server: Option<u64>,
    inner: F,
}

impl<S, N> FormatEvent<S, N> for WithServer<Format<Full>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if let Some(server) = self.server {
            write!(writer, "server={server} ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

impl<S> FormatEvent<S, JsonFields> for WithServer<Format<Json>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match (self.server, line.strip_prefix('{')) {
            (Some(server), Some(rest)) => write!(writer, "{{\"server\":{server},{rest}"),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `format` writes for two events, with server id `server`.
    fn lines(format: LogFormat, server: Option<u64>) -> Vec<String> {
        let buffer = Buffer::default();
        let writer = {
            let buffer = buffer.clone();
            move || buffer.clone()
        };
        let builder = tracing_subscriber::fmt().with_writer(writer).with_ansi(false);
        let log = || {
            tracing::info!(zxid = "0x100000004", "recovered");
            tracing::warn!(peer = 3, "a digest sample from a server this one does not follow: ignored");
        };
        match format {
            LogFormat::Text => {
                let subscriber = builder.event_format(WithServer { server, inner: Format::<Full>::default() });
                tracing::subscriber::with_default(subscriber.finish(), log);
            }
            LogFormat::Json => {
                let json = tracing_subscriber::fmt::format().json().flatten_event(false);
                let subscriber = builder.fmt_fields(JsonFields::new()).event_format(WithServer { server, inner: json });
                tracing::subscriber::with_default(subscriber.finish(), log);
            }
        }
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_text_line_starts_with_the_server() {
        let lines = lines(LogFormat::Text, Some(2));
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.starts_with("server=2 ")), "{lines:?}");
        assert!(lines[0].contains("INFO") && lines[0].contains("recovered zxid=\"0x100000004\""), "{lines:?}");
        assert!(!self::lines(LogFormat::Text, None)[0].starts_with("server="));
    }

    #[test]
    fn every_json_line_is_an_object_whose_first_key_is_the_server() {
        let lines = lines(LogFormat::Json, Some(2));
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert!(line.starts_with("{\"server\":2,"), "{line}");
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(value["server"], 2);
        }
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!((first["level"].as_str(), first["fields"]["message"].as_str()), (Some("INFO"), Some("recovered")));
        let anonymous: serde_json::Value = serde_json::from_str(&self::lines(LogFormat::Json, None)[1]).unwrap();
        assert_eq!(anonymous["fields"]["peer"], 3);
        assert!(anonymous.get("server").is_none());
    }
}
