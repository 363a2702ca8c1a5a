//! Client TLS (issue 12): `secureClientPort` on each of three servers, with ZooKeeper's `ssl.*` keys, driven by
//! kazoo over TLS. Certificates are made by the test with the `openssl` CLI (a CA, the servers' certificate,
//! two clients' and one from a CA the servers do not trust).
//!
//! Checked: create/get/set through every server's secure port; `ssl.clientAuth` (ZooKeeper's default, `need`)
//! refuses a client without a certificate and one whose certificate the trust store does not vouch for; an
//! `x509:` ACL admits its certificate's client and answers NOAUTH to another; the x509 super user reads it; a
//! plaintext client on the secure port, and a connection that sends nothing, are closed while the server
//! keeps serving; with `client.portUnification=true` the plaintext port serves TLS clients too; the key store is reloaded when it changes, and kept when the new file is bad (Ensemble only).
//! Runs against Apache ZooKeeper 3.8 too (`ENSEMBLE_TESTS_SERVER=zookeeper`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ensemble_tests::process::Server;
use ensemble_tests::{free_ports, Cluster, Options};

/// DNs as ZooKeeper's X509AuthenticationProvider names them (RFC 2253: the last RDN of the subject first).
const CLIENT1_DN: &str = "CN=client1,O=Ensemble";
const ADMIN_DN: &str = "CN=admin,O=Ensemble";

#[test]
fn kazoo_over_tls_with_client_certificates_and_x509_acls() {
    let certs = Certs::make();
    let ports = free_ports(3);
    let options = Options {
        config: vec![
            "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory".into(),
            "authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider".into(),
            format!("ssl.keyStore.location={}", certs.path("server-store.pem").display()),
            "ssl.keyStore.type=PEM".into(),
            format!("ssl.trustStore.location={}", certs.path("ca.pem").display()),
            "ssl.trustStore.type=PEM".into(),
            format!("X509AuthenticationProvider.superUser={ADMIN_DN}"),
            // The plaintext port takes TLS clients too.
            "client.portUnification=true".into(),
        ],
        node_config: ports.iter().map(|p| vec![format!("secureClientPort={p}")]).collect(),
        ..Options::default()
    };
    let cluster = Cluster::start_with(options);
    let secure: Vec<SocketAddr> = ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
    let all = secure.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",");

    // Writes and reads through the secure ports, then the value read back from each server.
    certs
        .kazoo(
            &all,
            Some("client1"),
            "zk.create('/t75', b'one'); zk.set('/t75', b'two'); assert zk.get('/t75')[0] == b'two'",
        )
        .expect("client1 writes over TLS");
    for addr in &secure {
        certs
            .kazoo(&addr.to_string(), Some("client2"), "zk.sync('/t75'); assert zk.get('/t75')[0] == b'two'")
            .expect("every server serves TLS");
    }

    // ZooKeeper's default `ssl.clientAuth=need`: no certificate, or one from another CA, gets no session.
    let refused = certs.kazoo(&secure[0].to_string(), None, "zk.get('/t75')").expect_err("no certificate, no session");
    assert!(refused.contains("Timeout") || refused.contains("timed out"), "{refused}");
    certs
        .kazoo(&secure[1].to_string(), Some("rogue"), "zk.get('/t75')")
        .expect_err("an untrusted CA's client is refused");

    // An x509 ACL: client1's DN may do everything, client2 gets NOAUTH, the super user passes.
    certs
        .kazoo(
            &secure[0].to_string(),
            Some("client1"),
            &format!("zk.create('/t75/mine', b'secret', acl=[make_acl('x509', '{CLIENT1_DN}', all=True)]); assert zk.get('/t75/mine')[0] == b'secret'"),
        )
        .expect("client1 creates a node only it may read");
    let denied = certs
        .kazoo(&secure[1].to_string(), Some("client2"), "zk.sync('/t75/mine'); zk.get('/t75/mine')")
        .expect_err("client2 is not client1");
    assert!(denied.contains("NoAuthError"), "{denied}");
    certs
        .kazoo(&secure[2].to_string(), Some("client1"), "zk.sync('/t75/mine'); zk.set('/t75/mine', b'changed')")
        .expect("client1 through another server");
    certs
        .kazoo(
            &secure[1].to_string(),
            Some("admin"),
            "zk.sync('/t75/mine'); assert zk.get('/t75/mine')[0] == b'changed'",
        )
        .expect("the x509 super user reads everything");

    // The official Java client (zkCli.sh over Netty, with ZooKeeper's client TLS properties).
    let out = certs.zkcli(&secure[1].to_string(), "client1", &["get /t75", "get /t75/mine", "create /t75/java j"]);
    assert!(out.contains("\ntwo") && out.contains("\nchanged"), "zkCli reads over TLS:\n{out}");
    assert!(out.contains("Created /t75/java"), "zkCli writes over TLS:\n{out}");
    let out = certs.zkcli(&secure[2].to_string(), "client2", &["get /t75/mine", "get /t75/java"]);
    assert!(out.contains("Insufficient permission"), "the x509 ACL holds for the Java client:\n{out}");
    assert!(out.contains("\nj"), "client2 reads an open node:\n{out}");

    // A plaintext ZooKeeper client on the secure port gets nowhere; the server goes on serving.
    let plain = kazoo_script(&secure[0].to_string(), "", "zk.get('/t75')");
    assert!(python(&plain).is_err(), "a plaintext client on the secure port must be refused");
    // A connection that never starts its handshake is closed within a few seconds (ZooKeeper's Netty: 10 s).
    let mut idle = TcpStream::connect(secure[0]).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = matches!(idle.read(&mut buf), Ok(0) | Err(_));
    assert!(
        closed && started.elapsed() < Duration::from_secs(15),
        "an idle TLS connection held {:?}",
        started.elapsed()
    );
    certs
        .kazoo(&secure[0].to_string(), Some("client1"), "assert zk.get('/t75')[0] == b'two'")
        .expect("still serving TLS");
    assert!(cluster.four_letter(0, "srvr").contains("Mode"), "the plaintext port still serves");

    // client.portUnification: TLS and plaintext clients on the plaintext port.
    let unified = cluster.client_addr(1).to_string();
    certs
        .kazoo(&unified, Some("client1"), "assert zk.get('/t75/mine')[0] == b'changed'")
        .expect("TLS on the plain port");
    python(&kazoo_script(&unified, "", "assert zk.get('/t75')[0] == b'two'")).expect("plaintext on the plain port");
    let denied = python(&kazoo_script(&unified, "", "zk.get('/t75/mine')")).expect_err("no certificate, no x509 id");
    assert!(denied.contains("NoAuthError"), "{denied}");

    if cluster.server_kind() == &Server::ZooKeeper {
        return; // ZooKeeper 3.8 reloads its stores on its own terms; the rest is Ensemble's reload.
    }
    // Rotation while a client writes over TLS: the new certificate (same CA) is served to new connections, the
    // writer's connection is not dropped, and every write it had acknowledged is there.
    let writer = certs.tls_writer(&secure[0].to_string(), "/t75-rotation", Duration::from_secs(8));
    std::thread::sleep(Duration::from_secs(2));
    let store = certs.path("server-store.pem");
    std::fs::copy(certs.path("server-next-store.pem"), &store).expect("rotate the key store");
    std::thread::sleep(RELOAD_WAIT);
    assert!(certs.served_subject(secure[0]).contains("localhost-next"), "the rotated certificate is served");
    let out = writer.join().expect("the writer thread").expect("the writer over TLS");
    let acked: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("acked ")).collect();
    assert!(acked.len() > 20, "the writer wrote throughout:\n{out}");
    assert!(out.contains("\nconnection drops 0"), "the rotation dropped the writer's connection:\n{out}");
    let names = acked.iter().map(|p| format!("{:?}", p.rsplit('/').next().unwrap())).collect::<Vec<_>>().join(",");
    certs
        .kazoo(
            &secure[1].to_string(),
            Some("client1"),
            &format!("zk.sync('/t75-rotation'); missing = {{{names}}} - set(zk.get_children('/t75-rotation')); assert not missing, missing"),
        )
        .expect("every acknowledged write is there after the rotation");

    // Reload: a key store that is not one keeps the old configuration; a new certificate is served.
    std::fs::write(&store, b"not a key store").unwrap();
    std::thread::sleep(RELOAD_WAIT);
    certs.kazoo(&secure[0].to_string(), Some("client1"), "zk.get('/t75')").expect("the old configuration is kept");
    assert!(cluster.log_text(0).contains("cannot be used; keeping the old ones"), "a bad reload is logged");
    std::fs::write(&store, [certs.read("rogue-server.key"), certs.read("rogue-server.pem")].concat()).unwrap();
    std::thread::sleep(RELOAD_WAIT);
    certs
        .kazoo(&secure[0].to_string(), Some("client1"), "zk.get('/t75')")
        .expect_err("the new certificate is not ca's");
    certs
        .kazoo_trusting("rogue-ca.pem", &secure[0].to_string(), Some("client1"), "zk.get('/t75')")
        .expect("the reloaded certificate is served");
}

/// Longer than the servers' poll of the store files.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// The test's certificates, in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::Builder::new().prefix("t75-certs-").tempdir().expect("temp dir");
        let certs = Certs { dir };
        certs.ca("ca");
        certs.ca("rogue-ca");
        certs.leaf("server", "/O=Ensemble/CN=localhost", "ca");
        certs.leaf("client1", "/O=Ensemble/CN=client1", "ca");
        certs.leaf("client2", "/O=Ensemble/CN=client2", "ca");
        certs.leaf("admin", "/O=Ensemble/CN=admin", "ca");
        certs.leaf("rogue", "/O=Ensemble/CN=client1", "rogue-ca");
        certs.leaf("rogue-server", "/O=Ensemble/CN=localhost", "rogue-ca");
        certs.leaf("server-next", "/O=Ensemble/CN=localhost-next", "ca");
        // ZooKeeper's PEM key store: the private key and the certificate in one file.
        for name in ["server", "server-next", "client1", "client2"] {
            let store = [certs.read(&format!("{name}.key")), certs.read(&format!("{name}.pem"))].concat();
            std::fs::write(certs.path(&format!("{name}-store.pem")), store).expect("write a key store");
        }
        certs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read a certificate file")
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/O=Ensemble/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// A certificate for `name` signed by `ca`, version 3 (webpki and Java refuse version 1).
    fn leaf(&self, name: &str, subject: &str, ca: &str) {
        let ext = self.path("v3.ext");
        std::fs::write(&ext, "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "v3.ext",
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// Runs zkCli.sh on `server` over TLS as `client`: ZooKeeper's client TLS properties, the Netty socket
    /// (Debian's zkCli classpath lacks netty-codec, so the classpath is given again with it).
    fn zkcli(&self, server: &str, client: &str, commands: &[&str]) -> String {
        let netty = ["handler", "transport", "buffer", "common", "codec", "resolver", "transport-native-unix-common"];
        let mut classpath = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar".to_string();
        for jar in netty {
            classpath += &format!(":/usr/share/java/netty-{jar}.jar");
        }
        let flags = format!(
            "-cp {classpath} -Dzookeeper.client.secure=true \
             -Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty \
             -Dzookeeper.ssl.keyStore.location={} -Dzookeeper.ssl.keyStore.type=PEM \
             -Dzookeeper.ssl.trustStore.location={} -Dzookeeper.ssl.trustStore.type=PEM",
            show(&self.path(&format!("{client}-store.pem"))),
            show(&self.path("ca.pem")),
        );
        ensemble_tests::zkcli::run_with_env(server, commands, &[("CLIENT_JVMFLAGS", flags.as_str())])
    }

    /// The subject of the certificate `addr` serves (to client1, trusting ca).
    fn served_subject(&self, addr: SocketAddr) -> String {
        let connect = addr.to_string();
        let args =
            ["s_client", "-connect", &connect, "-cert", "client1.pem", "-key", "client1.key", "-CAfile", "ca.pem"];
        let out = Command::new("timeout")
            .arg("10")
            .arg("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().find(|l| l.contains("subject=")).unwrap_or_default().to_string()
    }

    /// A kazoo client (client1) on `hosts` that creates sequential nodes under `parent` over TLS for `run`,
    /// printing `acked <path>` for each acknowledged create and, at the end, `connection drops N` (SUSPENDED or
    /// LOST states seen).
    fn tls_writer(&self, hosts: &str, parent: &str, run: Duration) -> std::thread::JoinHandle<Result<String, String>> {
        let statements = format!(
            "import time\n\
             drops = []\n\
             zk.add_listener(lambda state: drops.append(state) if state != 'CONNECTED' else None)\n\
             zk.ensure_path('{parent}')\n\
             end = time.time() + {secs}\n\
             while time.time() < end:\n    \
                 try:\n        \
                     print('acked', zk.create('{parent}/n', b'x', sequence=True), flush=True)\n    \
                 except Exception as e:\n        \
                     print('failed', repr(e), flush=True)\n        \
                     time.sleep(0.1)\n\
             print('connection drops', len(drops), flush=True)",
            secs = run.as_secs_f64(),
        );
        let ca = self.path("ca.pem");
        let (cert, key) = (self.path("client1.pem"), self.path("client1.key"));
        let tls = format!(
            ", use_ssl=True, verify_certs=True, ca={:?}, certfile={:?}, keyfile={:?}",
            show(&ca),
            show(&cert),
            show(&key)
        );
        let script = kazoo_script(hosts, &tls, &statements);
        std::thread::spawn(move || python(&script))
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(self.dir.path()).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs `statements` in a kazoo TLS session on `hosts` as `client` (its certificate; `None`: none).
    fn kazoo(&self, hosts: &str, client: Option<&str>, statements: &str) -> Result<String, String> {
        self.kazoo_trusting("ca.pem", hosts, client, statements)
    }

    /// [`Certs::kazoo`], trusting the server certificates that the CA in file `ca` signed.
    fn kazoo_trusting(&self, ca: &str, hosts: &str, client: Option<&str>, statements: &str) -> Result<String, String> {
        let ca = self.path(ca);
        let mut tls = format!("use_ssl=True, verify_certs=True, ca={:?}", ca.display().to_string());
        if let Some(client) = client {
            let (cert, key) = (self.path(&format!("{client}.pem")), self.path(&format!("{client}.key")));
            tls += &format!(", certfile={:?}, keyfile={:?}", show(&cert), show(&key));
        }
        python(&kazoo_script(hosts, &format!(", {tls}"), statements))
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

fn kazoo_script(hosts: &str, tls: &str, statements: &str) -> String {
    format!(
        "from kazoo.client import KazooClient\nfrom kazoo.security import make_acl\n\
         zk = KazooClient(hosts={hosts:?}, timeout=10, connection_retry={{'max_tries': 2}}{tls})\n\
         zk.start(timeout=8)\n{statements}\nzk.stop()\n"
    )
}

/// Runs a python3 script: its output when it succeeds, else its output as the error. The script goes in on
/// stdin: the check after the rotation names every acknowledged write, which on a fast machine is more than one
/// command-line argument may hold (128 KiB).
fn python(script: &str) -> Result<String, String> {
    let mut child = Command::new("python3")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().expect("piped").write_all(script.as_bytes()).expect("the script goes to python3");
    let out = child.wait_with_output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{script}\n{text}"))
    }
}
