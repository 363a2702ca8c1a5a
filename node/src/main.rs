//! The `ensemble` command: run one server from a ZooKeeper config, or a local demo ensemble; look at a server's
//! write-ahead log and snapshots (`ensemble wal ...`, `ensemble snapshot ...`, see [`tools`]).

mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use node::config::Config;
use node::server::{self, Server};

#[derive(Parser)]
#[command(name = "ensemble", version, about = "A ZooKeeper-compatible replicated coordination store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one server from a ZooKeeper `zoo.cfg` (with `myid` in its dataDir).
    Start {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs a local ensemble on loopback in this process: client ports 2181, 2182, ... and data under DIR.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The data tools say what they find themselves; the libraries' logs only with RUST_LOG.
    let tool = matches!(cli.command, Command::Wal(_) | Command::Snapshot(_) | Command::Status(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| if tool { "off" } else { "info,wal=warn" }.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Wal(command) => return tools::run(|| tools::wal::run(command)),
        Command::Snapshot(command) => return tools::run(|| tools::snapshot::run(command)),
        Command::Status(args) => return tools::run(|| tools::status::run(args)),
        Command::Start { .. } | Command::Demo { .. } => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ensemble: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Start { config } => start(config).await,
            Command::Demo { dir, nodes, client_port, quorum_port } => demo(dir, nodes, client_port, quorum_port).await,
            Command::Wal(_) | Command::Snapshot(_) | Command::Status(_) => unreachable!("the tools ran above"),
        }
    });
    match result {
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
        _ = wait_for_signal() => {}
        reason = server.failed() => return Err(reason),
    }
    tracing::info!("stopping");
    server.shutdown();
    Ok(())
}

async fn demo(dir: PathBuf, nodes: u64, client_port: u16, quorum_port: u16) -> Result<(), String> {
    if !(1..=9).contains(&nodes) {
        return Err(format!("--nodes {nodes}: run 1 to 9 servers"));
    }
    let mut servers: Vec<Server> = Vec::new();
    let members: String = (1..=nodes)
        .map(|id| {
            let q = quorum_port + id as u16 - 1;
            format!("server.{id}=127.0.0.1:{q}:{}\n", q + 1000)
        })
        .collect();
    for id in 1..=nodes {
        let data = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        std::fs::write(data.join("myid"), format!("{id}\n")).map_err(|e| format!("write myid: {e}"))?;
        let text = format!(
            "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
             4lw.commands.whitelist=*\n{}",
            data.display(),
            client_port + id as u16 - 1,
            if nodes > 1 { members.as_str() } else { "" },
        );
        let cfg = data.join("zoo.cfg");
        std::fs::write(&cfg, text).map_err(|e| format!("write {}: {e}", cfg.display()))?;
        let config = Config::load(&cfg).map_err(|e| format!("{}: {e}", cfg.display()))?;
        servers.push(server::start(config).await.map_err(|e| format!("server {id}: {e}"))?);
    }
    let connect: Vec<String> = servers.iter().map(|s| s.client_addr().to_string()).collect();
    println!("Ensemble of {nodes} running; data in {}. Connect with:\n  {}", dir.display(), connect.join(","));
    println!("Stop with Ctrl-C; the next start recovers every znode from disk.");
    let failures = futures_util::future::select_all(servers.iter().map(|s| Box::pin(s.failed())));
    tokio::select! {
        _ = wait_for_signal() => {}
        (reason, i, _) = failures => {
            for server in &servers {
                server.shutdown();
            }
            return Err(format!("server {}: {reason}", i + 1));
        }
    }
    tracing::info!("stopping");
    for server in &servers {
        server.shutdown();
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
