//! [`Cluster`]: N server processes on loopback, each from its own `zoo.cfg`, in a temporary directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::fourlw::{self, Mode};
use crate::ports::free_ports;
use crate::process::{self, Server};

/// How a cluster is configured. `Options::default()` is 3 nodes with ZooKeeper's sample timing (`tickTime=2000`,
/// `initLimit=10`, `syncLimit=5`), its default session bounds (2 to 20 ticks) and its defaults for everything
/// else: a test that needs another setting sets it and says why ([`Options::small_files`] for the usual one).
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of nodes; 1 is a standalone server (no `server.N` lines, no `myid`).
    pub nodes: usize,
    /// `tickTime` in milliseconds.
    pub tick_ms: u64,
    /// `initLimit`, in ticks.
    pub init_limit: u32,
    /// `syncLimit`, in ticks.
    pub sync_limit: u32,
    /// `snapCount`: ZooKeeper's 100,000 by default.
    pub snap_count: u64,
    /// `preAllocSize` in KiB: ZooKeeper's 64 MiB by default (Ensemble's WAL segments: a log's first is 4 MiB,
    /// each next one twice the one before, up to this size).
    pub prealloc_kib: u64,
    /// `maxSessionTimeout` in milliseconds (the minimum stays ZooKeeper's 2 ticks); ZooKeeper's 20 ticks unless a
    /// test says otherwise.
    pub max_session_timeout_ms: u64,
    /// How long [`Cluster::start`] and the other waits give the nodes to serve.
    pub start_timeout: Duration,
    /// How many of the nodes (the last ones) are observers: `server.N=...:observer` and `peerType=observer`.
    pub observers: usize,
    /// Extra `zoo.cfg` lines (`key=value`). Everything else is ZooKeeper's default where it matters to users
    /// (`maxClientCnxns`, the four-letter-word whitelist, `jute.maxbuffer`, ...): a test that needs another
    /// setting sets it here and says why. Keys that Apache ZooKeeper takes only as Java system properties
    /// ([`crate::process::SYSTEM_PROPERTIES`], e.g. `readonlymode.enabled`) are passed to it as `-D` flags.
    pub config: Vec<String>,
    /// Extra `zoo.cfg` lines for one node each (`node_config[i]` for node `i`, after [`Options::config`]): for
    /// settings that must differ between nodes on one host, such as a port.
    pub node_config: Vec<Vec<String>>,
    /// Run each node inside a network namespace of its own, on its own address, instead of all on 127.0.0.1
    /// (the nemesis suite partitions them; see [`crate::nemesis::Network`]).
    pub netns: Option<Netns>,
    /// Each node's own loopback address (`addresses[i]` for node `i`: its client, quorum and election ports
    /// listen there), instead of all on 127.0.0.1; empty for 127.0.0.1. For tests whose servers must differ by
    /// address (t76: certificates name their server's address). Ignored with `netns`.
    pub addresses: Vec<Ipv4Addr>,
    /// The server to run, whatever `ENSEMBLE_TESTS_SERVER` says (`None`: as it says; see [`Server::from_env`]):
    /// for tests that move data between Apache ZooKeeper and Ensemble (t80).
    pub server: Option<Server>,
    /// Extra JVM flags for Apache ZooKeeper (`-Dzookeeper.snapshot.compression.method=snappy`, say); Ensemble
    /// ignores them.
    pub zookeeper_flags: Vec<String>,
}

/// Where each node runs: `namespaces[i]` (entered with `ip netns exec`) on address `ips[i]`, which the test
/// process reaches from the root namespace.
#[derive(Clone, Debug)]
pub struct Netns {
    /// Node `i`'s network namespace.
    pub namespaces: Vec<String>,
    /// Node `i`'s address: its client port, its quorum and election ports listen there.
    pub ips: Vec<Ipv4Addr>,
}

impl Options {
    /// ZooKeeper's defaults but for `snapCount` 100 and `preAllocSize` 4 MiB (Ensemble's smallest segment): for
    /// tests of snapshots, log rolls, purges and the recovery from them, which a test's few thousand writes would
    /// not reach under the defaults (a snapshot every 50,000 to 100,000 txns, segments growing to 64 MiB).
    pub fn small_files() -> Options {
        Options { snap_count: 100, prealloc_kib: 4096, ..Options::default() }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 3,
            tick_ms: 2000,
            init_limit: 10,
            sync_limit: 5,
            snap_count: 100_000,
            prealloc_kib: 65_536,
            max_session_timeout_ms: 40_000,
            start_timeout: Duration::from_secs(60),
            observers: 0,
            config: Vec::new(),
            node_config: Vec::new(),
            netns: None,
            addresses: Vec::new(),
            server: None,
            zookeeper_flags: Vec::new(),
        }
    }
}

/// At most this many clusters run at once in one test process (the test machine has 2 cores).
const MAX_CLUSTERS: usize = 2;

struct Slot;

static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl Slot {
    fn take() -> Slot {
        let (count, freed) = &SLOTS;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_CLUSTERS {
            n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &SLOTS;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

struct Node {
    /// `myid`: index + 1.
    id: usize,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// How its process ended when it exited on its own.
    exited: Option<ExitStatus>,
}

/// A running cluster. Nodes are numbered from 0 (their `myid` is the index + 1). Every method takes `&self`,
/// so that one `Arc<Cluster>` can be shared by concurrent test tasks. The methods block: from async code call
/// them through [`crate::blocking`]. Dropping the cluster SIGKILLs every node, prints the node logs if the
/// thread is panicking, and removes the directory unless `ENSEMBLE_KEEP` is set.
pub struct Cluster {
    server: Server,
    options: Options,
    root: PathBuf,
    tempdir: Option<tempfile::TempDir>,
    addrs: Vec<SocketAddr>,
    /// Each node's quorum (peer) address: the first port of its `server.N` line.
    quorum_addrs: Vec<SocketAddr>,
    nodes: Vec<Mutex<Node>>,
    /// The JVM's `-D` flags from `options.config` (ZooKeeper only).
    properties: Vec<String>,
    _slot: Slot,
}

impl Cluster {
    /// Starts `n` nodes with the default options and waits until every one serves.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(Options { nodes: n, ..Options::default() })
    }

    /// Starts a cluster as `options` say and waits until every node serves (exactly one leader).
    pub fn start_with(options: Options) -> Cluster {
        assert!(options.nodes >= 1, "a cluster needs a node");
        let server = options.server.clone().unwrap_or_else(Server::from_env);
        let slot = Slot::take();
        let tempdir = tempfile::Builder::new().prefix("ensemble-tests-").tempdir().expect("temp dir");
        let root = tempdir.path().to_path_buf();
        let ports = free_ports(options.nodes * 3);
        if let Some(netns) = &options.netns {
            assert_eq!(netns.ips.len(), options.nodes, "one namespace and address per node");
        }
        let ips: Vec<Ipv4Addr> = (0..options.nodes).map(|i| node_ip(&options, i)).collect();
        let addrs: Vec<SocketAddr> = (0..options.nodes).map(|i| SocketAddr::from((ips[i], ports[i * 3]))).collect();
        let quorum_addrs: Vec<SocketAddr> =
            (0..options.nodes).map(|i| SocketAddr::from((ips[i], ports[i * 3 + 1]))).collect();
        let (zoo_cfg, mut properties) = server.split_config(&options.config);
        if server == Server::ZooKeeper {
            properties.extend(options.zookeeper_flags.iter().cloned());
        }
        let mut nodes = Vec::new();
        for i in 0..options.nodes {
            let dir = root.join(format!("node{}", i + 1));
            let config = write_node_files(&options, &zoo_cfg, &dir, i, &ports).expect("node files");
            server.prepare(&dir).expect("server files");
            let log = dir.join("server.log");
            nodes.push(Mutex::new(Node { id: i + 1, dir, config, log, child: None, starts: 0, exited: None }));
        }
        let cluster = Cluster {
            server,
            options,
            root,
            tempdir: Some(tempdir),
            addrs,
            quorum_addrs,
            nodes,
            properties,
            _slot: slot,
        };
        eprintln!(
            "ensemble-tests: starting {} node(s) of {:?} in {}, clients on {}",
            cluster.len(),
            cluster.server,
            cluster.root.display(),
            cluster.connect_string()
        );
        for i in 0..cluster.len() {
            cluster.start_node(i);
        }
        cluster.wait_serving();
        cluster
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: [`Cluster::start_with`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The server implementation under test.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`: every node's client address.
    pub fn connect_string(&self) -> String {
        self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Node `i`'s client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Node `i`'s quorum address (the first port of its `server.N` line): where its peers connect to it. For
    /// a standalone node, a port nothing listens on.
    pub fn quorum_addr(&self, i: usize) -> SocketAddr {
        self.quorum_addrs[i]
    }

    /// Node `i`'s directory (its `zoo.cfg`, `server.log`, `data/` and `log/`).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.node(i).dir.clone()
    }

    /// Node `i`'s log (its stdout and stderr, across restarts).
    pub fn log_text(&self, i: usize) -> String {
        fs::read_to_string(&self.node(i).log).unwrap_or_default()
    }

    /// The process id of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.node(i).child.as_ref().map(Child::id)
    }

    /// Whether node `i`'s process runs (a node that exited on its own is reaped here).
    pub fn is_running(&self, i: usize) -> bool {
        let mut node = self.node(i);
        match node.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                eprintln!("ensemble-tests: node {} exited on its own: {status}", node.id);
                (node.child, node.exited) = (None, Some(status));
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// How node `i`'s process ended, if it exited on its own (seen by [`Cluster::is_running`]).
    pub fn exit_status(&self, i: usize) -> Option<ExitStatus> {
        self.node(i).exited
    }

    /// Sends `word` to node `i`'s client port; the error when it cannot be reached.
    pub fn try_four_letter(&self, i: usize, word: &str) -> io::Result<String> {
        fourlw::four_letter(self.addrs[i], word)
    }

    /// Sends `word` to node `i`'s client port and returns the answer; fails the test if the node cannot be
    /// reached.
    pub fn four_letter(&self, i: usize, word: &str) -> String {
        self.try_four_letter(i, word)
            .unwrap_or_else(|e| self.fail(&format!("four-letter word {word:?} to node {}: {e}", i + 1)))
    }

    /// What node `i`'s `srvr` says it is; `None` if it is unreachable or not serving.
    pub fn mode(&self, i: usize) -> Option<Mode> {
        self.try_four_letter(i, "srvr").ok().as_deref().and_then(fourlw::parse_mode)
    }

    /// Waits until every running node serves and, with more than one node, exactly one of them leads.
    pub fn wait_serving(&self) {
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            let mut modes = Vec::new();
            for i in 0..self.len() {
                if self.node(i).child.is_some() {
                    if !self.is_running(i) {
                        self.fail(&format!("node {} exited while the cluster was to serve", i + 1));
                    }
                    modes.push(self.mode(i));
                }
            }
            let leaders = modes.iter().filter(|m| **m == Some(Mode::Leader)).count();
            let ready = if self.len() == 1 {
                modes == [Some(Mode::Standalone)]
            } else {
                modes.iter().all(Option::is_some) && leaders == 1
            };
            if ready {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "the cluster did not serve within {:?}: modes of the running nodes {modes:?}",
                    self.options.start_timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the leader, waiting until the running nodes serve with one.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            self.wait_serving();
            let leaders: Vec<usize> = (0..self.len()).filter(|&i| self.mode(i) == Some(Mode::Leader)).collect();
            if let [leader] = leaders[..] {
                return leader;
            }
            if Instant::now() > deadline {
                self.fail(&format!("no single leader: {leaders:?}"));
            }
        }
    }

    /// Node `i`'s `zoo.cfg`.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.node(i).config.clone()
    }

    /// Rewrites node `i`'s zoo.cfg with `lines`, each replacing earlier lines of its key; a line `key=` alone
    /// removes the key. Takes effect at the node's next start.
    pub fn set_config_lines(&self, i: usize, lines: &[String]) {
        let path = self.config_path(i);
        let text = std::fs::read_to_string(&path).expect("read a node's zoo.cfg");
        let key = |line: &str| line.split_once('=').map(|(k, _)| k.trim().to_owned());
        let replaced: Vec<Option<String>> = lines.iter().map(|l| key(l)).collect();
        let mut out: Vec<String> = text.lines().filter(|l| !replaced.contains(&key(l))).map(str::to_owned).collect();
        out.extend(lines.iter().filter(|l| !l.trim_end().ends_with('=')).cloned());
        std::fs::write(&path, out.join("\n") + "\n").expect("write a node's zoo.cfg");
    }

    /// The server the nodes run.
    pub fn server_kind(&self) -> &Server {
        &self.server
    }

    /// Makes every node run `server` from its next start, on the same configuration and data directories
    /// (t80 moves a ZooKeeper ensemble's data to Ensemble and back). Every node must be stopped.
    pub fn switch_server(&mut self, server: Server) {
        for i in 0..self.len() {
            assert!(self.node(i).child.is_none(), "node {} still runs", i + 1);
            server.prepare(&self.node(i).dir).expect("server files");
        }
        let (_, mut properties) = server.split_config(&self.options.config);
        if server == Server::ZooKeeper {
            properties.extend(self.options.zookeeper_flags.iter().cloned());
        }
        self.properties = properties;
        self.server = server;
    }

    /// Starts every node (all stopped) and waits until the cluster serves.
    pub fn start_all(&self) {
        for i in 0..self.len() {
            self.start_node(i);
        }
        self.wait_serving();
    }

    /// Stops every running node with SIGTERM.
    pub fn stop_all(&self) {
        for i in 0..self.len() {
            if self.node(i).child.is_some() {
                self.stop(i);
            }
        }
    }

    /// The indexes of the running nodes that say they follow.
    pub fn followers(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.mode(i) == Some(Mode::Follower)).collect()
    }

    /// Starts node `i`'s process (it must not run) without waiting for it to serve.
    pub fn start_node(&self, i: usize) {
        let mut node = self.node(i);
        assert!(node.child.is_none(), "node {} already runs", node.id);
        node.starts += 1;
        let log = open_log(&node.log, node.starts).expect("node log");
        let mut cmd = self.server.command(&node.config, &node.dir, &self.properties);
        if let Some(netns) = &self.options.netns {
            cmd = process::in_namespace(&netns.namespaces[i], &cmd);
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("log fd")).stderr(log);
        match process::spawn(cmd) {
            Ok(child) => node.child = Some(child),
            Err(e) => {
                drop(node);
                self.fail(&format!("cannot start node {}: {e}", i + 1))
            }
        }
    }

    /// Restarts node `i` (which must be down) with the same configuration and data, and waits until the
    /// cluster serves with it.
    pub fn restart(&self, i: usize) {
        self.start_node(i);
        let deadline = Instant::now() + self.options.start_timeout;
        while self.mode(i).is_none() {
            if !self.is_running(i) {
                self.fail(&format!("node {} exited after its restart", i + 1));
            }
            if Instant::now() > deadline {
                self.fail(&format!("node {} does not serve {:?} after its restart", i + 1, self.options.start_timeout));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_serving();
    }

    /// SIGKILLs node `i` and reaps it; returns how it ended (it may have died before).
    pub fn kill(&self, i: usize) -> ExitStatus {
        let mut node = self.node(i);
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {} does not run", i + 1));
        let _ = child.kill();
        child.wait().expect("wait for a killed node")
    }

    /// SIGSTOPs node `i` (it must run) and waits until every thread of it has stopped: it keeps its sockets and
    /// answers nothing until [`Cluster::resume`]. Linux hands a SIGSTOP to one thread, which stops the others once
    /// it runs; on a loaded machine the rest of the process may go on for milliseconds after kill(2) returns (the
    /// nemesis suite once saw a node paused that way acknowledge a write sent after the signal).
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        let pid = self.node(i).child.as_ref().map(|child| child.id()).expect("a running node");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            if Instant::now() > deadline {
                self.fail(&format!("node {} did not stop within 10 s of SIGSTOP", i + 1));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGCONTs node `i` after [`Cluster::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let node = self.node(i);
        let child = node.child.as_ref().unwrap_or_else(|| panic!("node {} does not run", i + 1));
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child this process has not reaped yet (the node's lock is held), so
        // the pid is still ours.
        unsafe { libc::kill(pid, signal) };
    }

    /// SIGTERMs node `i` and waits up to 30 s for it to exit (generous: a loaded CI machine, and a node that is
    /// electing or has just lost its quorum when the others stopped); fails the test if it does not.
    pub fn stop(&self, i: usize) -> ExitStatus {
        let mut node = self.node(i);
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {} does not run", i + 1));
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child this process has not reaped yet, so the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                drop(node);
                self.fail(&format!("node {} did not exit within 30 s of SIGTERM (SIGKILLed)", i + 1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prints the end of every node's log (`ENSEMBLE_LOG_LINES` lines, default 80) to stderr.
    pub fn dump_logs(&self) {
        let lines: usize = std::env::var("ENSEMBLE_LOG_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(80);
        for i in 0..self.len() {
            let node = self.node(i);
            let text = fs::read_to_string(&node.log).unwrap_or_else(|e| format!("(cannot read: {e})\n"));
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            eprintln!(
                "===== node {} ({}): last {} of {} lines of {} =====",
                node.id,
                node.child.as_ref().map_or("down".to_string(), |c| format!("pid {}", c.id())),
                all.len() - from,
                all.len(),
                node.log.display()
            );
            for line in &all[from..] {
                eprintln!("{line}");
            }
        }
    }

    /// Fails the test with `message` (the logs are printed as the cluster is dropped).
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}")
    }

    fn node(&self, i: usize) -> MutexGuard<'_, Node> {
        self.nodes[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            if let Some(mut child) = self.node(i).child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        if std::env::var_os("ENSEMBLE_KEEP").is_some() {
            if let Some(dir) = self.tempdir.take() {
                eprintln!("ensemble-tests: kept {}", dir.keep().display());
            }
        }
    }
}

/// Writes node `i`'s `zoo.cfg` (and `myid` when there are several nodes), with the `extra` lines; returns the
/// config's path. `ports` holds client, quorum and election port of each node in turn.
fn write_node_files(options: &Options, extra: &[String], dir: &Path, i: usize, ports: &[u16]) -> io::Result<PathBuf> {
    let data = dir.join("data");
    let log = dir.join("log");
    fs::create_dir_all(&data)?;
    fs::create_dir_all(&log)?;
    let mut cfg = format!(
        "tickTime={}\ninitLimit={}\nsyncLimit={}\ndataDir={}\ndataLogDir={}\nclientPort={}\n\
         clientPortAddress={}\nsnapCount={}\npreAllocSize={}\nmaxSessionTimeout={}\n\
         # The AdminServer is on by default on port 8080: several nodes on one machine would clash, so it is off\n\
         # unless a test turns it on with a port per node (Options::node_config; t72_admin).\n\
         admin.enableServer=false\n",
        options.tick_ms,
        options.init_limit,
        options.sync_limit,
        data.display(),
        log.display(),
        ports[i * 3],
        node_ip(options, i),
        options.snap_count,
        options.prealloc_kib,
        options.max_session_timeout_ms,
    );
    for line in extra.iter().chain(options.node_config.get(i).into_iter().flatten()) {
        cfg.push_str(line);
        cfg.push('\n');
    }
    if options.nodes > 1 {
        let observer = |n: usize| n + options.observers >= options.nodes;
        for n in 0..options.nodes {
            let role = if observer(n) { ":observer" } else { "" };
            let (ip, quorum, election) = (node_ip(options, n), ports[n * 3 + 1], ports[n * 3 + 2]);
            cfg.push_str(&format!("server.{}={ip}:{quorum}:{election}{role}\n", n + 1));
        }
        if observer(i) {
            cfg.push_str("peerType=observer\n");
        }
        fs::write(data.join("myid"), format!("{}\n", i + 1))?;
    }
    let config = dir.join("zoo.cfg");
    fs::write(&config, cfg)?;
    Ok(config)
}

/// Node `i`'s address: its namespace's, or its own loopback address, or 127.0.0.1.
fn node_ip(options: &Options, i: usize) -> Ipv4Addr {
    match &options.netns {
        Some(netns) => netns.ips[i],
        None => options.addresses.get(i).copied().unwrap_or(Ipv4Addr::LOCALHOST),
    }
}

fn open_log(path: &Path, start: u32) -> io::Result<File> {
    let mut log = OpenOptions::new().create(true).append(true).open(path)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    writeln!(log, "----- ensemble-tests: start #{start} at unix time {:.3} -----", now.as_secs_f64())?;
    Ok(log)
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`; a thread that exits
/// meanwhile counts as stopped).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| match std::fs::read_to_string(task.path().join("stat")) {
        // The state is the first field after the command, which is in parentheses and may hold any byte.
        Ok(stat) => stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next()) == Some("T"),
        Err(_) => true,
    })
}
