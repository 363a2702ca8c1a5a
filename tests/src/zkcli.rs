//! Running Apache ZooKeeper's own CLI, zkCli.sh (Debian's `zookeeper` package), against a server.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where Debian installs zkCli.sh.
pub const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";

/// Fails the test, saying how to install it, if zkCli.sh is missing.
pub fn require() {
    assert!(Path::new(ZKCLI).is_file(), "{ZKCLI} is missing: install it with `apt-get install -y zookeeper`");
}

/// Runs `commands` in one zkCli session connected to `server` (`host:port`), then `quit`; returns what it
/// printed (stdout and stderr, where zkCli writes some answers, in that order) without SLF4J's noise. The
/// session ends within 120 s or the test fails.
pub fn run(server: &str, commands: &[&str]) -> String {
    run_with_env(server, commands, &[])
}

/// [`run`] with extra environment variables, e.g. `CLIENT_JVMFLAGS` for the JVM's `-D` flags (a JAAS file).
pub fn run_with_env(server: &str, commands: &[&str], env: &[(&str, &str)]) -> String {
    require();
    let mut child = Command::new("timeout")
        .args(["120", ZKCLI, "-server", server])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {ZKCLI}: {e}"));
    let mut input = commands.join("\n");
    input.push_str("\nquit\n");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("zkCli's stdin");
    let out = child.wait_with_output().expect("zkCli's output");
    assert!(out.status.code() != Some(124), "zkCli did not finish within 120 s: {commands:?}");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.lines().filter(|l| !l.starts_with("SLF4J")).collect::<Vec<_>>().join("\n")
}
