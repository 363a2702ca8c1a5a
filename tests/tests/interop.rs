//! Clients that are not Rust against a 3-node cluster: a scripted kazoo (Python) session and scripted
//! sessions of Apache ZooKeeper's own CLI, zkCli.sh (Java). Both scripts live in `scripts/interop/` and check
//! every result themselves; this test starts the cluster, runs them and fails with their output. The tools
//! must be installed (`python3 -m pip install kazoo`, `apt-get install -y zookeeper`): without them the test
//! fails, naming the command.

use std::path::{Path, PathBuf};
use std::process::Command;

use ensemble_tests::{Cluster, Options};

const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop").join(name)
}

/// Runs `cmd`, returning whether it succeeded and its whole output.
fn run(mut cmd: Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn require_tools() {
    let (kazoo, why) = run({
        let mut c = Command::new("python3");
        c.args(["-c", "import kazoo"]);
        c
    });
    assert!(kazoo, "kazoo is not installed for python3 ({why}): install it with `python3 -m pip install kazoo`");
    assert!(Path::new(ZKCLI).is_file(), "{ZKCLI} is missing: install it with `apt-get install -y zookeeper`");
}

#[test]
fn kazoo_and_zkcli_sessions() {
    require_tools();
    // kazoo's session asks `ruok`, which ZooKeeper's default whitelist (`srvr` only) refuses; zkCli's session
    // creates a TTL node, which ZooKeeper has off by default.
    let config = vec!["4lw.commands.whitelist=*".into(), "extendedTypesEnabled=true".into()];
    let options = Options { config, ..Options::default() };
    let cluster = Cluster::start_with(options);
    let cs = cluster.connect_string();

    let mut kazoo = Command::new("python3");
    kazoo.arg(script("kazoo_session.py")).arg(&cs);
    let (kazoo_ok, kazoo_out) = run(kazoo);
    eprintln!("===== kazoo_session.py {cs} =====\n{kazoo_out}");

    let mut zkcli = Command::new("bash");
    zkcli.arg(script("zkcli_session.sh")).arg(&cs).env("ZKCLI", ZKCLI);
    let (zkcli_ok, zkcli_out) = run(zkcli);
    eprintln!("===== zkcli_session.sh {cs} =====\n{zkcli_out}");

    assert!(kazoo_ok && zkcli_ok, "kazoo session passed: {kazoo_ok}, zkCli sessions passed: {zkcli_ok} (output above)");
}
