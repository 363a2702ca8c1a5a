//! Which server binary the harness runs, and spawning it so that it dies with the test process.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// The server implementation under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// Ensemble's `ensemble` binary, started as `ensemble start --config FILE`.
    Ensemble(PathBuf),
    /// Apache ZooKeeper 3.8 (Debian's `zookeeper` package), started as `QuorumPeerMain FILE`: only to check the
    /// tests themselves (`ENSEMBLE_TESTS_SERVER=zookeeper`).
    ZooKeeper,
}

/// Settings that Apache ZooKeeper reads only as Java system properties (`Boolean.getBoolean("readonlymode.enabled")`;
/// a zoo.cfg line would become `zookeeper.readonlymode.enabled`; the JAAS file of SASL), which Ensemble takes
/// as zoo.cfg keys.
pub const SYSTEM_PROPERTIES: [&str; 3] =
    ["readonlymode.enabled", "java.security.auth.login.config", "znode.container.checkIntervalMs"];

/// The classpath of Debian's ZooKeeper server, with a log4j binding so that it logs.
/// Jetty 9, the servlet API and Jackson (Debian's jars) let its AdminServer start when a test turns it on
/// (`admin.enableServer=true` in `zoo.cfg`, t72_admin); every other test runs with it off. snappy-java lets it
/// write `.snappy` snapshots when asked (t80). Netty (Debian's libnetty-java) is its `NettyServerCnxnFactory`, which
/// ZooKeeper needs for TLS (t75).
const ZK_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/zookeeper-jute.jar:\
/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar:\
/usr/share/java/jetty9-server.jar:/usr/share/java/jetty9-servlet.jar:/usr/share/java/jetty9-util.jar:\
/usr/share/java/jetty9-http.jar:/usr/share/java/jetty9-io.jar:/usr/share/java/jetty9-security.jar:\
/usr/share/java/servlet-api.jar:/usr/share/java/jackson-databind.jar:/usr/share/java/jackson-core.jar:\
/usr/share/java/jackson-annotations.jar:/usr/share/java/snappy-java.jar:\
/usr/share/java/netty-handler.jar:/usr/share/java/netty-transport.jar:/usr/share/java/netty-buffer.jar:\
/usr/share/java/netty-common.jar:/usr/share/java/netty-codec.jar:/usr/share/java/netty-resolver.jar:\
/usr/share/java/netty-transport-native-epoll.jar:/usr/share/java/netty-transport-native-unix-common.jar";

impl Server {
    /// The server chosen by the environment: `ENSEMBLE_TESTS_SERVER=zookeeper` for Apache ZooKeeper, else the
    /// `ensemble` binary (see [`find_ensemble`]). Panics, saying how to build it, if there is none.
    pub fn from_env() -> Server {
        if std::env::var("ENSEMBLE_TESTS_SERVER").is_ok_and(|v| v == "zookeeper") {
            return Server::ZooKeeper;
        }
        let exe = std::env::current_exe().expect("current_exe");
        match find_ensemble(std::env::var_os("ENSEMBLE_BIN").map(PathBuf::from), &exe) {
            Ok(path) => Server::Ensemble(path),
            Err(message) => panic!("{message}"),
        }
    }

    /// Splits a test's extra zoo.cfg lines into what goes into zoo.cfg and the `-Dkey=value` flags of the JVM:
    /// for ZooKeeper, the lines whose key is one of [`SYSTEM_PROPERTIES`] become flags, so that one test runs
    /// against both servers; for Ensemble every line stays in zoo.cfg.
    pub fn split_config(&self, lines: &[String]) -> (Vec<String>, Vec<String>) {
        let property = |line: &String| {
            let key = line.split_once('=').map_or(line.as_str(), |(key, _)| key).trim();
            *self == Server::ZooKeeper && SYSTEM_PROPERTIES.contains(&key)
        };
        let (flags, zoo_cfg): (Vec<String>, Vec<String>) = lines.iter().cloned().partition(property);
        (zoo_cfg, flags.iter().map(|line| format!("-D{}", line.trim())).collect())
    }

    /// The command that runs one node from `config` (a zoo.cfg), with its working directory `dir`; `properties`
    /// are the JVM's extra `-D` flags (see [`Server::split_config`]; none for Ensemble).
    pub fn command(&self, config: &Path, dir: &Path, properties: &[String]) -> Command {
        let mut cmd = match self {
            Server::Ensemble(bin) => {
                let mut cmd = Command::new(bin);
                cmd.arg("start").arg("--config").arg(config);
                if let Some(filter) = std::env::var_os("ENSEMBLE_LOG") {
                    cmd.env("RUST_LOG", filter);
                }
                cmd.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
                cmd
            }
            Server::ZooKeeper => {
                let mut cmd = Command::new("java");
                cmd.args(["-Xms64m", "-Xmx512m"])
                    .arg("-Dzookeeper.admin.enableServer=false")
                    .args(properties)
                    .arg(format!("-Dlog4j.configuration=file:{}", dir.join("log4j.properties").display()))
                    .arg("-cp")
                    .arg(format!("{}:{ZK_CLASSPATH}", dir.display()))
                    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                    .arg(config);
                cmd
            }
        };
        cmd.current_dir(dir);
        cmd
    }

    /// Files the server needs next to its config (ZooKeeper's log4j configuration).
    pub fn prepare(&self, dir: &Path) -> io::Result<()> {
        if *self == Server::ZooKeeper {
            std::fs::write(
                dir.join("log4j.properties"),
                "log4j.rootLogger=INFO, CONSOLE\nlog4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
                 log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
                 log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n\n",
            )?;
        }
        Ok(())
    }
}

/// Where the `ensemble` binary is: `env` (the value of `ENSEMBLE_BIN`) if given, else next to the directory of
/// the test executable `exe` (`target/debug/deps/t10_x-hash` → `target/debug/ensemble`). The error says how to
/// build it.
pub fn find_ensemble(env: Option<PathBuf>, exe: &Path) -> Result<PathBuf, String> {
    let candidate = match env {
        Some(path) => path,
        None => {
            let deps = exe.parent().ok_or_else(|| format!("test executable {} has no parent", exe.display()))?;
            let profile = if deps.file_name().is_some_and(|n| n == "deps") { deps.parent() } else { Some(deps) };
            profile.ok_or_else(|| format!("no target directory above {}", exe.display()))?.join("ensemble")
        }
    };
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "the ensemble server binary is missing at {}: build it first with `cargo build -p node --bin ensemble` \
             (or point ENSEMBLE_BIN at it)",
            candidate.display()
        ))
    }
}

/// `cmd` run inside the network namespace `namespace`: `ip netns exec NAMESPACE PROGRAM ARGS`, with `cmd`'s
/// environment and working directory. `ip` execs the program in place, so the child's pid is the server's (its
/// signals, [`spawn`]'s parent-death signal) and nothing sits between them.
pub fn in_namespace(namespace: &str, cmd: &Command) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped.args(["netns", "exec", namespace]).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

type Job = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from one long-lived thread, with `PR_SET_PDEATHSIG` = SIGKILL: the kernel kills the child when
/// the thread that forked it ends, and this thread ends only with the test process. So a test process that is
/// killed (a CI timeout, `kill -9`) takes its servers with it instead of leaving them holding ports.
pub fn spawn(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ensemble-tests-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_tied(&mut cmd));
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, tx)).expect("spawner thread alive");
    rx.recv().expect("spawner replies")
}

fn spawn_tied(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe functions
    // (prctl, getppid, kill on itself); it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal would ever come.
            if libc::getppid() != i32::try_from(parent).unwrap_or(-1) {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        })
    };
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_looked_for_above_deps() {
        let dir = tempfile::tempdir().unwrap();
        let deps = dir.path().join("debug/deps");
        std::fs::create_dir_all(&deps).unwrap();
        let exe = deps.join("t10_client_ops-0123");
        let err = find_ensemble(None, &exe).unwrap_err();
        assert!(err.contains("cargo build -p node --bin ensemble"), "{err}");
        assert!(err.contains(&dir.path().join("debug/ensemble").display().to_string()), "{err}");
        std::fs::write(dir.path().join("debug/ensemble"), b"").unwrap();
        assert_eq!(find_ensemble(None, &exe).unwrap(), dir.path().join("debug/ensemble"));
    }

    #[test]
    fn system_properties_become_jvm_flags_for_zookeeper_only() {
        let lines = vec!["readonlymode.enabled=true".to_string(), "localSessionsEnabled=true".to_string()];
        let (zoo_cfg, flags) = Server::ZooKeeper.split_config(&lines);
        assert_eq!((zoo_cfg, flags), (vec![lines[1].clone()], vec!["-Dreadonlymode.enabled=true".to_string()]));
        let (zoo_cfg, flags) = Server::Ensemble(PathBuf::from("ensemble")).split_config(&lines);
        assert_eq!((zoo_cfg, flags), (lines, Vec::<String>::new()));
    }

    #[test]
    fn the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("my-ensemble");
        let err = find_ensemble(Some(bin.clone()), Path::new("/nowhere/deps/x")).unwrap_err();
        assert!(err.contains("ENSEMBLE_BIN"), "{err}");
        std::fs::write(&bin, b"").unwrap();
        assert_eq!(find_ensemble(Some(bin.clone()), Path::new("/nowhere/deps/x")).unwrap(), bin);
    }
}
