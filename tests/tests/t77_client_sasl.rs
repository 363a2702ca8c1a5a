//! Client SASL (issue 12): DIGEST-MD5 with users from a JAAS `Server` section, driven by kazoo
//! (`sasl_options`, over pure-sasl) and by zkCli.sh with a JAAS `Client` section, against three servers; then
//! enforced authentication on a standalone server.
//!
//! Checked: a SASL user creates a node whose ACL is `sasl:<user>` through a follower and writes it again there
//! (its `sasl` id travels with the forwarded writes); another user gets NoAuth; the `superUser` passes; a wrong
//! password gets AUTHFAILED and no session; zkCli authenticates from its JAAS file, reads the ACL and writes
//! through a follower. With `enforce.auth.enabled=true` and `enforce.auth.schemes=sasl,digest`, a session that
//! has not authenticated is closed at its first request (SESSIONCLOSEDREQUIRESASLAUTH), one authenticated
//! with either scheme is served, and a wrong password is answered SESSIONCLOSEDREQUIRESASLAUTH.
//! Runs against Apache ZooKeeper 3.8 too (`ENSEMBLE_TESTS_SERVER=zookeeper`), which takes the JAAS file as the
//! JVM system property `java.security.auth.login.config`.

use std::path::Path;
use std::process::Command;

use ensemble_tests::process::Server;
use ensemble_tests::{zkcli, Cluster, Options};

const SERVER_JAAS: &str = r#"Server {
    org.apache.zookeeper.server.auth.DigestLoginModule required
    user_bob="bob-secret"
    user_alice="alice-secret"
    user_admin="admin-secret";
};
"#;

#[test]
fn kazoo_and_zkcli_authenticate_with_digest_md5_and_sasl_acls_hold_through_followers() {
    let dir = tempfile::tempdir().unwrap();
    let jaas = dir.path().join("jaas.conf");
    std::fs::write(&jaas, SERVER_JAAS).unwrap();
    let client_jaas = dir.path().join("client-jaas.conf");
    std::fs::write(&client_jaas, client_section("bob", "bob-secret")).unwrap();

    let cluster = Cluster::start_with(Options { config: sasl_config(&jaas, &[]), ..Options::default() });
    let follower = cluster.followers()[0];
    let at_follower = cluster.client_addr(follower).to_string();
    let other = cluster.client_addr(cluster.followers()[1]).to_string();

    // kazoo: bob writes through a follower, alice is refused, the super user passes, a wrong password fails.
    python(&format!(
        r#"
bob = connect({at_follower:?}, 'bob', 'bob-secret')
bob.create('/t77', b'open')
bob.create('/t77/bob', b'one', acl=[make_acl('sasl', 'bob', all=True)])
bob.set('/t77/bob', b'two')
assert bob.get_acls('/t77/bob')[0] == [make_acl('sasl', 'bob', all=True)]
alice = connect({other:?}, 'alice', 'alice-secret')
alice.sync('/t77/bob')
for attempt in (lambda: alice.get('/t77/bob'), lambda: alice.set('/t77/bob', b'x')):
    try:
        attempt()
        raise SystemExit('alice got through a sasl:bob ACL')
    except NoAuthError:
        pass
admin = connect({at_follower:?}, 'admin', 'admin-secret')
admin.set('/t77/bob', b'three')
assert admin.get('/t77/bob')[0] == b'three'
anonymous = KazooClient(hosts={at_follower:?}, timeout=10)
anonymous.start(timeout=8)
assert anonymous.get('/t77')[0] == b'open'
try:
    anonymous.get('/t77/bob')
    raise SystemExit('no identity got through a sasl:bob ACL')
except NoAuthError:
    pass
outcome = refused({other:?}, 'bob', 'wrong')
assert outcome == 'AUTH_FAILED', outcome
"#
    ))
    .unwrap_or_else(|e| cluster.fail(&e));
    if cluster.server_kind() != &Server::ZooKeeper {
        // A user the JAAS file does not list is refused, whatever password it tries. (ZooKeeper 3.8 is checked
        // out of this: its one SaslServerCallbackHandler per server keeps the last listed user's name, and an
        // unlisted user then gets that user's password looked up, so mallory with bob's password passes right
        // after a bob on that server: ZOOKEEPER-4839, fixed after 3.8.0.)
        let unknown = python(&format!(
            "outcome = refused({other:?}, 'mallory', 'bob-secret')\nassert outcome == 'AUTH_FAILED', outcome"
        ));
        unknown.unwrap_or_else(|e| cluster.fail(&e));
    }

    // zkCli with a JAAS Client section: bob reads the ACL, writes through a follower, creates a sasl node.
    let out = zkcli_with_jaas(
        &at_follower,
        &client_jaas,
        &[
            "getAcl /t77/bob",
            "set /t77/bob four",
            "get /t77/bob",
            "create /t77/zkcli x sasl:bob:cdrwa",
            "getAcl /t77/zkcli",
        ],
    );
    assert!(out.contains("'sasl,'bob"), "zkCli reads bob's ACL:\n{out}");
    assert!(out.contains("\nfour"), "zkCli wrote through the follower:\n{out}");
    assert!(out.contains("Created /t77/zkcli"), "{out}");
    assert!(!out.contains("Insufficient permission"), "{out}");
    std::fs::write(&client_jaas, client_section("alice", "alice-secret")).unwrap();
    let out = zkcli_with_jaas(&other, &client_jaas, &["get /t77/zkcli"]);
    assert!(out.contains("Insufficient permission"), "alice may not read bob's node:\n{out}");
    drop(cluster);

    // Enforced authentication: sasl or digest, on a standalone server.
    let enforce = ["enforce.auth.enabled=true".to_owned(), "enforce.auth.schemes=sasl,digest".to_owned()];
    let options = Options { nodes: 1, config: sasl_config(&jaas, &enforce), ..Options::default() };
    let cluster = Cluster::start_with(options);
    let addr = cluster.client_addr(0).to_string();
    python(&format!(
        r#"
bob = connect({addr:?}, 'bob', 'bob-secret')
bob.create('/enforced', b'x')
digest = KazooClient(hosts={addr:?}, timeout=10, auth_data=[('digest', 'carol:pw')])
digest.start(timeout=8)
assert digest.get('/enforced')[0] == b'x'
anonymous = KazooClient(hosts={addr:?}, timeout=10, connection_retry={{'max_tries': 0}})
anonymous.start(timeout=8)
try:
    anonymous.get('/enforced')
    raise SystemExit('an unauthenticated session was served')
except SessionClosedRequireSaslError:
    pass
outcome = refused({addr:?}, 'bob', 'wrong')
assert outcome == 'SessionClosedRequireSaslError', outcome
"#
    ))
    .unwrap_or_else(|e| cluster.fail(&e));
}

/// The zoo.cfg lines of SASL with `jaas`, the `superUser` admin, and `extra`.
fn sasl_config(jaas: &Path, extra: &[String]) -> Vec<String> {
    let mut lines = vec![
        "authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider".to_owned(),
        format!("java.security.auth.login.config={}", jaas.display()),
        "superUser=admin".to_owned(),
    ];
    lines.extend_from_slice(extra);
    lines
}

fn client_section(user: &str, password: &str) -> String {
    format!(
        "Client {{\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n    username=\"{user}\"\n    \
         password=\"{password}\";\n}};\n"
    )
}

/// zkCli.sh connected to `server` with the JAAS file `jaas` (its `Client` section).
fn zkcli_with_jaas(server: &str, jaas: &Path, commands: &[&str]) -> String {
    let flags = format!("-Djava.security.auth.login.config={}", jaas.display());
    zkcli::run_with_env(server, commands, &[("CLIENT_JVMFLAGS", flags.as_str())])
}

/// kazoo helpers every script starts with: `connect` (a SASL session, started) and `refused` (how a SASL
/// session with these credentials fails: kazoo's state, or the error of its first request).
const PRELUDE: &str = r#"
import logging
from kazoo.client import KazooClient
from kazoo.security import make_acl
from kazoo.exceptions import NoAuthError, SessionClosedRequireSaslError
from puresasl.mechanisms import DigestMD5Mechanism

check_server = DigestMD5Mechanism.authenticate_server

def connect(hosts, user, password):
    zk = KazooClient(hosts=hosts, timeout=10, connection_retry={'max_tries': 2},
                     sasl_options={'mechanism': 'DIGEST-MD5', 'username': user, 'password': password})
    zk.start(timeout=8)
    return zk

class Seen(logging.Handler):
    """The exceptions kazoo's connection thread logs (the one it dies of when it does)."""
    def __init__(self):
        super().__init__()
        self.errors = []
    def emit(self, record):
        if record.exc_info:
            self.errors.append(record.exc_info[0].__name__)

seen = Seen()
logging.getLogger().addHandler(seen)

def refused(hosts, user, password):
    """The client does not check the server's rspauth (as an attacker's would not), so what counts is that the
    server refuses it."""
    seen.errors.clear()
    DigestMD5Mechanism.authenticate_server = lambda self, rspauth: None
    zk = KazooClient(hosts=hosts, timeout=5, connection_retry={'max_tries': 0},
                     sasl_options={'mechanism': 'DIGEST-MD5', 'username': user, 'password': password})
    try:
        zk.start(timeout=4)
        zk.get_async('/').get(timeout=4)
    except Exception as e:
        errors = seen.errors + [type(e).__name__]
        if zk.client_state == 'AUTH_FAILED' or 'AuthFailedError' in errors:
            return 'AUTH_FAILED'
        return errors[0]
    finally:
        DigestMD5Mechanism.authenticate_server = check_server
    return 'accepted: %s' % zk.client_state
"#;

/// Runs the script after [`PRELUDE`]: its output when it succeeds, else its output as the error.
fn python(script: &str) -> Result<String, String> {
    let script = format!("{PRELUDE}\n{script}");
    let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{script}\n{text}"))
    }
}
