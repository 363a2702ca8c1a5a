//! The operator's tools: `ensemble wal ...` and `ensemble snapshot ...`, the view of a server's disk
//! (ZooKeeper's `zkTxnLogToolkit` and `zkSnapShotToolkit`), `ensemble status`, the view of a running
//! ensemble, and `ensemble import` / `ensemble export` ([`door`]), the way in from Apache ZooKeeper and back.
//!
//! They look at damaged data, so they never panic on it and never change it, except `ensemble wal repair`,
//! which says what it will drop and asks first. Exit codes (also in `--help`): 0 sound, 1 a problem found in
//! the data, 2 a usage or IO error, 3 (`wal verify` only) a torn tail, which a server cuts by itself.

pub mod door;
pub mod render;
pub mod snapshot;
pub mod status;
pub mod wal;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The exit codes of the data tools.
pub const EXIT_CODES: &str = "Exit codes: 0 the data is sound (or was shown in full); 1 a problem was found in the data; \
2 a usage or IO error (nothing was judged); 3 (wal verify) a torn tail only, which a server cuts by itself on its next start.";

/// What a tool concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sound, or shown in full.
    Sound,
    /// A problem was found in the data (corruption, a snapshot that does not verify).
    Problem,
    /// Only a torn tail: what a crash leaves, cut by the server on its next start.
    TornTail,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Outcome::Sound => 0,
            Outcome::Problem => 1,
            Outcome::TornTail => 3,
        })
    }
}

/// Why a tool could not do its work (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The command line or the directory given is not what the tool expects.
    #[error("{0}")]
    Usage(String),
    /// The WAL could not be read.
    #[error(transparent)]
    Wal(#[from] ::wal::WalError),
    /// A snapshot could not be read.
    #[error(transparent)]
    Snapshot(#[from] ::snapshot::SnapshotError),
    /// Reading a file or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The operator declined the repair.
    #[error("repair aborted; nothing was changed")]
    Aborted,
}

impl ToolError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ToolError {
        let what = what.into();
        move |source| ToolError::Io { what, source }
    }
}

/// Runs a tool and turns its result into the process exit code, printing an error to stderr.
pub fn run(tool: impl FnOnce() -> Result<Outcome, ToolError>) -> ExitCode {
    match tool() {
        Ok(outcome) => outcome.exit_code(),
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(ToolError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ensemble: {error}");
            ExitCode::from(2)
        }
    }
}

/// Parses a zxid given as hex (`0x1000000a5`) or decimal.
pub fn parse_zxid(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a zxid (hex like 0x100000003, or decimal)"))
}

/// A zxid as ZooKeeper prints it.
pub fn hex(zxid: impl Into<u64>) -> String {
    format!("0x{:x}", zxid.into())
}

/// A progress bar on stderr, drawn only when stderr is a terminal; hidden (and free) otherwise.
pub fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// A progress bar on stderr counting `unit`s (znodes, say), drawn only when stderr is a terminal.
pub fn progress_items(total: u64, what: &str, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let template = format!("{{msg}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{eta}})");
    let style = ProgressStyle::with_template(&template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Buffered stdout, with writes that fail as [`ToolError::Io`].
pub struct Out(std::io::BufWriter<std::io::StdoutLock<'static>>);

impl Out {
    /// Locks stdout.
    pub fn new() -> Out {
        Out(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()))
    }

    /// Writes one line.
    pub fn line(&mut self, line: impl std::fmt::Display) -> Result<(), ToolError> {
        writeln!(self.0, "{line}").map_err(ToolError::io("write to stdout"))
    }

    /// Writes one JSON document on one line.
    pub fn json(&mut self, value: &impl serde::Serialize) -> Result<(), ToolError> {
        serde_json::to_writer(&mut self.0, value)
            .map_err(|e| ToolError::Io { what: "write JSON to stdout".into(), source: e.into() })?;
        self.line("")
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> Result<(), ToolError> {
        self.0.flush().map_err(ToolError::io("write to stdout"))
    }
}

/// `dir` itself if it holds what `is_it` recognises, else `dir/sub` if that is a directory (the layout
/// `ensemble start` uses under dataDir or dataLogDir), noted on stderr; else `dir`, for the caller to judge.
pub fn resolve_dir(dir: PathBuf, sub: &str, is_it: impl Fn(&str) -> bool) -> Result<PathBuf, ToolError> {
    let entries = std::fs::read_dir(&dir).map_err(ToolError::io(format!("read directory {}", dir.display())))?;
    let names: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
    let inner = dir.join(sub);
    if !names.iter().any(|n| is_it(n)) && inner.is_dir() {
        eprintln!("ensemble: using {}", inner.display());
        return Ok(inner);
    }
    Ok(dir)
}
