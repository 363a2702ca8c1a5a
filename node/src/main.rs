//! The `ensemble` command: run one server from a ZooKeeper config, or a local demo ensemble; look at a server's
//! write-ahead log and snapshots (`ensemble wal ...`, `ensemble snapshot ...`, see [`tools`]); move data in
//! from Apache ZooKeeper and back (`ensemble import`, `ensemble export`).

mod demo;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use node::config::Config;
use node::logging::{self, LogFormat};
use node::server;

/// mimalloc instead of glibc's malloc: the write path allocates and frees small buffers on every request, across
/// threads, and glibc's allocator took about a seventh of the servers' CPU under write load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ensemble", version, about = "A ZooKeeper-compatible replicated coordination store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the server logs (on stderr): readable lines, or one JSON object per line for log shippers. Every
    /// line names the server (`server=N`, `"server":N`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one server from a ZooKeeper `zoo.cfg` (with `myid` in its dataDir).
    Start {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs a local ensemble on loopback, one `ensemble start` process per server: client ports 2181, 2182, ...,
    /// each server's config, data and log (`server.log`) in `DIR/node<N>`.
    Demo {
        /// Where the servers keep their data (one folder each); reused, so a restart recovers everything.
        #[arg(long, default_value = "data/demo")]
        dir: PathBuf,
        /// How many servers.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// The first client port.
        #[arg(long, default_value_t = 2181)]
        client_port: u16,
        /// The first quorum port (election ports follow 1000 above).
        #[arg(long, default_value_t = 2888)]
        quorum_port: u16,
        /// The first AdminServer port (the others follow: 8080, 8081, 8082 for three servers).
        #[arg(long, default_value_t = 8080)]
        admin_port: u16,
    },
    /// Looks at a write-ahead log directory: list, dump, verify, repair (ZooKeeper's zkTxnLogToolkit).
    #[command(subcommand, after_help = tools::EXIT_CODES)]
    Wal(tools::wal::WalCommand),
    /// Looks at a snapshot directory: list, dump, verify (ZooKeeper's zkSnapShotToolkit).
    #[command(subcommand, after_help = tools::EXIT_CODES)]
    Snapshot(tools::snapshot::SnapshotCommand),
    /// One screen for an ensemble: each server's role, zxid, lag behind the leader, outstanding requests,
    /// connections, latency, and whether a quorum serves (`zkServer.sh status` for every server at once).
    #[command(after_help = "Exit codes: 0 a quorum serves (or a standalone server); 1 no quorum; 2 a usage error.")]
    Status(tools::status::StatusArgs),
    /// Imports Apache ZooKeeper's data (its newest valid snapshot and the logs after it) into an Ensemble data
    /// directory; stop ZooKeeper first, then start Ensemble with the same zoo.cfg.
    #[command(
        after_help = "Exit codes: 0 imported; 1 ZooKeeper's data is damaged or incomplete (the file and offset are named; nothing was written); 2 a usage or IO error."
    )]
    Import(tools::door::import::ImportArgs),
    /// Exports Ensemble's data as an Apache ZooKeeper 3.8 data directory (a snapshot and the epoch files);
    /// stop the server first.
    #[command(after_help = "Exit codes: 0 exported; 2 a usage or IO error (nothing was moved into place).")]
    Export(tools::door::export::ExportArgs),
}

/// What the server logs unless `RUST_LOG` says otherwise.
const DEFAULT_FILTER: &str = "info,wal=warn";

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let log_format = cli.log_format;
    match cli.command {
        // The tools say what they find themselves; the libraries' logs only with RUST_LOG.
        Command::Wal(command) => {
            logging::init(log_format, None, "off");
            tools::run(|| tools::wal::run(command))
        }
        Command::Snapshot(command) => {
            logging::init(log_format, None, "off");
            tools::run(|| tools::snapshot::run(command))
        }
        Command::Status(args) => {
            logging::init(log_format, None, "off");
            tools::run(|| tools::status::run(args))
        }
        Command::Import(args) => {
            logging::init(log_format, None, "off");
            tools::run(|| tools::door::import::run(args))
        }
        Command::Export(args) => {
            logging::init(log_format, None, "off");
            tools::run(|| tools::door::export::run(args))
        }
        Command::Start { config } => {
            // Read once with no log installed, for the server id every line carries; then again, so that
            // what the config says (ignored keys, ...) is logged with it.
            let my_id = Config::load(&config).ok().and_then(|c| c.server_id());
            logging::init(log_format, my_id, DEFAULT_FILTER);
            block_on(start(config))
        }
        Command::Demo { dir, nodes, client_port, quorum_port, admin_port } => {
            logging::init(log_format, None, DEFAULT_FILTER);
            block_on(demo::run(demo::Demo { dir, nodes, client_port, quorum_port, admin_port, log_format }))
        }
    }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says what the operator wants
/// (mimalloc then does the same for 0, nothing for 1). A growing tree faults in fresh memory all the time, and
/// a huge page's fault zeroes 2 MiB at once: on this VM that was 13% of the servers' CPU under a create load,
/// against 3% for the same memory in 4 KiB pages, and creates went 8% faster without them (BENCHMARKS.md).
/// The call fails only on kernels older than 3.15, which then keep their default: nothing to report.
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Runs `task` on a multi-threaded runtime; its error goes to stderr and makes the exit code 1.
fn block_on(task: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ensemble: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ensemble: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn start(path: PathBuf) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let server = server::start(config).await.map_err(|e| e.to_string())?;
    tokio::select! {
        _ = demo::wait_for_signal() => {}
        reason = server.failed() => return Err(reason),
    }
    tracing::info!("stopping");
    server.shutdown();
    Ok(())
}
