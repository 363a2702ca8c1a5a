//! `ensemble demo`: a local ensemble on loopback. Each server is its own `ensemble start` process, as in a real
//! deployment, with its config, data and log file in its own folder (`DIR/node<N>/zoo.cfg`, `.../server.log`),
//! so three servers never interleave on one terminal. The demo waits until every server accepts clients, prints
//! the connect string and where the logs are, and stops every server on Ctrl-C (SIGTERM, then SIGKILL after
//! 10 s). If one server exits by itself, the demo says which and where its log is, and stops the others. The
//! servers die with the demo even if it is killed (`PR_SET_PDEATHSIG`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use node::logging::LogFormat;
use tokio::process::{Child, Command};

/// How long a server may take to accept clients.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
pub struct Demo {
    /// The folder of the servers' folders.
    pub dir: PathBuf,
    /// How many servers.
    pub nodes: u64,
    /// The first client port.
    pub client_port: u16,
    /// The first quorum port (election ports 1000 above).
    pub quorum_port: u16,
    /// The first AdminServer port (8080; the others follow).
    pub admin_port: u16,
    /// The servers' log format.
    pub log_format: LogFormat,
}

/// Runs the demo until Ctrl-C (Ok) or until a server exits by itself (Err, naming it and its log).
pub async fn run(demo: Demo) -> Result<(), String> {
    if !(1..=9).contains(&demo.nodes) {
        return Err(format!("--nodes {}: run 1 to 9 servers", demo.nodes));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the ensemble binary: {e}"))?;
    let mut servers = Vec::new();
    for id in 1..=demo.nodes {
        let folder = demo.dir.join(format!("node{id}"));
        let config = write_config(&demo, id, &folder)?;
        let log = folder.join("server.log");
        servers.push((id, log.clone(), spawn(&exe, &config, &log, demo.log_format)?));
    }
    let addrs: Vec<String> = (1..=demo.nodes).map(|id| format!("127.0.0.1:{}", client_port(&demo, id))).collect();
    let ready = wait_ready(&addrs);
    let exited = first_exit(&mut servers);
    tokio::select! {
        () = ready => {}
        (id, log, status) = exited => return Err(format!("server {id} exited ({status}) while starting; its log: {}", log.display())),
    }
    println!(
        "Ensemble of {} running; data in {}. Connect with:\n  {}",
        demo.nodes,
        demo.dir.display(),
        addrs.join(",")
    );
    for (id, log, _) in &servers {
        let admin = admin_port(&demo, *id);
        println!("  server {id} logs to {}; its AdminServer: http://127.0.0.1:{admin}/commands", log.display());
    }
    println!("Stop with Ctrl-C; the next start recovers every znode from disk.");
    let outcome = tokio::select! {
        () = wait_for_signal() => Ok(()),
        (id, log, status) = first_exit(&mut servers) => {
            Err(format!("server {id} exited ({status}); its log: {}", log.display()))
        }
    };
    stop_all(&mut servers).await;
    outcome
}

fn client_port(demo: &Demo, id: u64) -> u16 {
    demo.client_port + id as u16 - 1
}

/// Each server's AdminServer port: 8080, 8081, ... (ZooKeeper's default for the first; the others would clash).
fn admin_port(demo: &Demo, id: u64) -> u16 {
    demo.admin_port + id as u16 - 1
}

/// Writes `folder/zoo.cfg` and `folder/myid`; the config's path.
fn write_config(demo: &Demo, id: u64, folder: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(folder).map_err(|e| format!("create {}: {e}", folder.display()))?;
    let folder = folder.canonicalize().map_err(|e| format!("{}: {e}", folder.display()))?;
    node::config::write_myid(&wal::fs::StdFs, &folder, id).map_err(|e| format!("write myid: {e}"))?;
    let members: String = (1..=demo.nodes)
        .map(|n| {
            let q = demo.quorum_port + n as u16 - 1;
            format!("server.{n}=127.0.0.1:{q}:{}\n", q + 1000)
        })
        .collect();
    let text = format!(
        "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
         4lw.commands.whitelist=*\nadmin.serverAddress=127.0.0.1\nadmin.serverPort={}\n{}",
        folder.display(),
        client_port(demo, id),
        admin_port(demo, id),
        if demo.nodes > 1 { members.as_str() } else { "" },
    );
    let config = folder.join("zoo.cfg");
    std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
    Ok(config)
}

/// Starts `ensemble start --config CONFIG` with its output appended to `log`.
fn spawn(exe: &Path, config: &Path, log: &Path, format: LogFormat) -> Result<Child, String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open {}: {e}", log.display()))
    };
    let mut command = Command::new(exe);
    command
        .arg("start")
        .arg("--config")
        .arg(config)
        .arg("--log-format")
        .arg(match format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .kill_on_drop(true);
    // SAFETY: `prctl` is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| format!("start {}: {e}", exe.display()))
}

/// Returns once every address accepts a connection, or after [`START_TIMEOUT`] (the servers' logs say why).
async fn wait_ready(addrs: &[String]) {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    for addr in addrs {
        while tokio::net::TcpStream::connect(addr).await.is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The first server to exit: its id, log and exit status.
async fn first_exit(servers: &mut [(u64, PathBuf, Child)]) -> (u64, PathBuf, String) {
    let waits = servers.iter_mut().map(|(id, log, child)| {
        Box::pin(async move {
            let status = child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string());
            (*id, log.clone(), status)
        })
    });
    futures_util::future::select_all(waits).await.0
}

/// SIGTERM to every server still running, then SIGKILL to those not gone within [`STOP_TIMEOUT`].
async fn stop_all(servers: &mut [(u64, PathBuf, Child)]) {
    for (_, _, child) in servers.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: a plain signal to a child we started and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for (id, log, child) in servers.iter_mut() {
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "ensemble: server {id} did not stop within {STOP_TIMEOUT:?}; killing it (log: {})",
                    log.display()
                );
                let _ = child.kill().await;
            }
        }
    }
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
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
