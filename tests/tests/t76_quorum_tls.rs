//! Quorum TLS (issue 12, peers): ZooKeeper's `sslQuorum`, `portUnification` and `ssl.quorum.*` keys on three
//! servers, each on its own loopback address (127.0.0.2, .3, .4) with a certificate for that address made by the
//! test with the `openssl` CLI (one CA; another CA for a stranger). Every certificate also names 127.0.0.1, the
//! address the kernel gives the dialer of a loopback connection, which ZooKeeper checks a dialer's certificate
//! against (Ensemble checks it against the server id the dialer claims).
//!
//! One cluster, while a client writes throughout (every acknowledged write is on every server at the end):
//! 1. ZooKeeper's rolling switch from plaintext: each server in turn restarted with `portUnification=true` and
//!    the keys, then each with `sslQuorum=true`, then each with `portUnification=false`; the cluster serves and
//!    acknowledges writes after every restart.
//! 2. With `sslQuorum=true`: a write through every server; a stranger whose certificate another CA signed is
//!    refused by the leader's quorum port, and the cluster serves on.
//! 3. Ensemble only (its peer frames are made by hand, as in t50): a plaintext stranger claiming server 3 and
//!    forwarding a create, and a stranger with a valid certificate for another server's address claiming server
//!    3 and forwarding a create, are refused and nothing is created; the same frames over a connection with
//!    server 3's own certificate do create it (so the frames would work if the checks did not refuse them). A
//!    key store replaced by a bad file is refused with a log line and the old one kept
//!    (`sslQuorumReloadCertFiles`).
//!
//! 4. Rotation (`sslQuorumReloadCertFiles`): every server's key store replaced by a new certificate from the same
//!    CA while the client writes; each quorum port serves its new certificate, a follower restarted afterwards
//!    (so that every link to it is made anew, with the rotated certificates on both ends) rejoins, and writes
//!    go on.
//!
//! Runs against Apache ZooKeeper 3.8 too (`ENSEMBLE_TESTS_SERVER=zookeeper`), without part 3.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::peer_frames::{claim_and_create, closed};
use ensemble_tests::process::Server;
use ensemble_tests::{blocking, connect, Cluster, Options};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const NODES: usize = 3;

/// Node `i`'s address.
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + i as u8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_tls_rolling_switch_identities_and_strangers() {
    let started = Instant::now();
    let certs = Arc::new(blocking(Certs::make));
    // Snapshots and purges under the background writer, so that a restarted server recovers from a snapshot and
    // may sync by SNAP over the secured link.
    let options = Options { addresses: (0..NODES).map(address).collect(), ..Options::small_files() };
    let cluster = Arc::new(blocking(move || Cluster::start_with(options)));
    let ensemble = matches!(cluster.server(), Server::Ensemble(_));
    let cs = cluster.connect_string();
    connect(&cs).await.create("/t76", b"", PERSISTENT).await.unwrap();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writer = tokio::spawn(ensemble_tests::client::write_until(cs.clone(), "/t76/bg-", stop.clone(), acked.clone()));

    // 1. The rolling switch, ZooKeeper's three steps, one server at a time.
    let steps: [(&str, &[&str]); 3] = [
        ("portUnification on", &["portUnification=true"]),
        ("sslQuorum on", &["sslQuorum=true"]),
        ("portUnification off", &["portUnification=false"]),
    ];
    for (step, lines) in steps {
        for i in 0..NODES {
            let before = acked.lock().unwrap().len();
            let mut config = certs.quorum_lines(i);
            config.extend(lines.iter().map(|l| l.to_string()));
            let c = cluster.clone();
            blocking(move || {
                c.stop(i);
                c.set_config_lines(i, &config);
                c.restart(i);
            });
            ensemble_tests::client::acknowledged_since(&acked, before, &format!("{step} on node {}", i + 1)).await;
        }
        eprintln!("t76: {step} on every server at {:?}", started.elapsed());
    }
    let config = std::fs::read_to_string(cluster.config_path(0)).unwrap();
    assert!(config.contains("sslQuorum=true") && config.contains("portUnification=false"), "{config}");

    // 2. TLS between every server: writes through each; a stranger from another CA is refused.
    serving(&cluster, "the switch").await;
    let c = cluster.clone();
    let leader = blocking(move || c.leader());
    let rogue = certs.client("rogue", "ca").await;
    let refused = tls_stranger(&rogue, cluster.quorum_addr(leader), address(leader)).await;
    assert!(refused.is_err(), "a certificate from another CA was let in");
    eprintln!("t76: the other CA's stranger: {}", refused.err().unwrap_or_default());
    serving(&cluster, "the other CA's stranger").await;

    // 3. Ensemble's own peer frames: forwarded creates from strangers.
    if ensemble {
        strangers_cannot_forward(&cluster, &certs).await;
        serving(&cluster, "the strangers").await;
    } else {
        eprintln!("t76: ZooKeeper mode: the hand-made Ensemble peer frames and the reload check are skipped");
    }

    // 4. Rotation while the client writes.
    for i in 0..NODES {
        let next = certs.path(&format!("server{}-next-store.pem", i + 1));
        std::fs::copy(next, certs.path(&format!("server{}-store.pem", i + 1))).expect("rotate a key store");
    }
    tokio::time::sleep(RELOAD_WAIT).await;
    let peer = certs.client("server2", "ca").await;
    // ZooKeeper's learners do not listen on the quorum port; its leader does (and Ensemble's servers all do).
    for i in (0..NODES).filter(|&i| ensemble || i == leader) {
        let served = served_certificate(&peer, cluster.quorum_addr(i), address(i)).await;
        let name = format!("server{}-next", i + 1);
        assert!(
            served.windows(name.len()).any(|w| w == name.as_bytes()),
            "node {} serves the rotated certificate",
            i + 1
        );
    }
    let c = cluster.clone();
    let follower = blocking(move || (0..NODES).find(|&i| i != c.leader()).expect("a follower"));
    let before = acked.lock().unwrap().len();
    let c = cluster.clone();
    blocking(move || {
        c.stop(follower);
        c.restart(follower);
    });
    ensemble_tests::client::acknowledged_since(&acked, before, "the rotation").await;
    serving(&cluster, "the rotation").await;
    eprintln!("t76: rotated every quorum certificate at {:?}", started.elapsed());

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the background writer");
    let acked = acked.lock().unwrap().clone();
    let servers: Vec<String> = (0..NODES).map(|i| cluster.client_addr(i).to_string()).collect();
    ensemble_tests::client::assert_on_every_server(&servers, "/t76", &acked).await;
    eprintln!("t76: {} acknowledged writes, all on every node; {:?} in all", acked.len(), started.elapsed());
}

/// Every node runs and commits a write.
async fn serving(cluster: &Arc<Cluster>, after: &str) {
    for i in 0..NODES {
        assert!(blocking(|| cluster.is_running(i)), "node {} exited after {after}", i + 1);
        let client = connect(&cluster.client_addr(i).to_string()).await;
        let path = format!("/t76/{}-via-{}", after.replace(' ', "-"), i + 1);
        client.create(&path, b"", PERSISTENT).await.unwrap_or_else(|e| panic!("write via node {}: {e}", i + 1));
    }
}

/// Ensemble only: forwarded creates over the leader's quorum port, from a plaintext stranger and from one with a
/// valid certificate for another server's address, both claiming server 3, are refused; the same frames with
/// server 3's certificate create the node. Meanwhile the leader's key store is replaced by a bad file: refused,
/// logged, the old one kept (the strangers' handshakes still work).
async fn strangers_cannot_forward(cluster: &Arc<Cluster>, certs: &Arc<Certs>) {
    let c = cluster.clone();
    let mut leader = blocking(move || c.leader());
    if leader == NODES - 1 {
        // Nobody dials the highest id (the higher id dials): move the leadership elsewhere first.
        let c = cluster.clone();
        // Server 3 comes back once the others have elected one of them, and follows it.
        leader = blocking(move || {
            c.stop(NODES - 1);
            let leader = c.leader();
            c.restart(NODES - 1);
            assert_eq!(c.leader(), leader, "the leadership moved when server 3 came back");
            leader
        });
        assert_ne!(leader, NODES - 1, "server 3 led again after its restart");
    }
    let store = certs.path(&format!("server{}-store.pem", leader + 1));
    let good_store = std::fs::read(&store).unwrap();
    std::fs::write(&store, b"not a key store").unwrap();

    // A session of server 3's, so that the leader takes the forwarded create as server 3's.
    let client3 = connect(&cluster.client_addr(NODES - 1).to_string()).await;
    let session = client3.session_id().0;
    let quorum = cluster.quorum_addr(leader);
    let frames = |path: &str| claim_and_create(3, session, path);

    let mut plain = TcpStream::connect(quorum).await.unwrap();
    let _ = plain.write_all(&frames("/t76/plaintext-stranger")).await;
    assert!(closed(&mut plain).await, "the leader kept a plaintext stranger's connection");

    // A certificate that names another server's address than server 3's (not the leader's, which may be 1).
    let other = if leader == 0 { 1 } else { 0 };
    let impostor = certs.client(&format!("server{}", other + 1), "ca").await;
    let sent = tls_send(&impostor, quorum, address(leader), &frames("/t76/impostor")).await;
    assert!(sent.is_err(), "the leader kept server {}'s certificate claiming server 3", other + 1);

    let honest = certs.client("server3", "ca").await;
    // Let in as server 3 (replacing its link until it reconnects).
    let mut stream = tls_connect(&honest, quorum, address(leader)).await.expect("server 3's certificate is let in");
    stream.write_all(&frames("/t76/by-server-3")).await.unwrap();
    stream.flush().await.unwrap();
    let leader_client = connect(&cluster.client_addr(leader).to_string()).await;
    let created = async {
        while leader_client.check_stat("/t76/by-server-3").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), created).await.expect("server 3's own certificate forwards a create");
    drop(stream);
    for path in ["/t76/plaintext-stranger", "/t76/impostor"] {
        assert_eq!(leader_client.check_stat(path).await.unwrap(), None, "{path} was created");
    }

    let log = cluster.log_text(leader);
    for refusal in ["secure handshake", "claims to be server 3, but its certificate is not valid for 127.0.0.4"] {
        assert!(log.contains(refusal), "the leader logged no refusal with {refusal:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(6);
    while !cluster.log_text(leader).contains("quorum TLS files changed but cannot be used; keeping the old ones") {
        assert!(Instant::now() < deadline, "the bad quorum key store was not logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&store, good_store).unwrap();
}

/// A TLS connection to `addr` (whose certificate must name `ip`) that sends nothing: `Err` with why when the
/// server refuses it (a failed handshake, or a close within 10 s), `Ok` when it keeps it.
async fn tls_stranger(config: &Arc<rustls::ClientConfig>, addr: SocketAddr, ip: Ipv4Addr) -> Result<(), String> {
    let mut stream = tls_connect(config, addr, ip).await?;
    if closed(&mut stream).await {
        return Err("closed after the handshake".into());
    }
    Ok(())
}

/// Sends `bytes` over TLS to `addr`: `Err` when the server refuses the connection or closes it within 10 s.
async fn tls_send(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    ip: Ipv4Addr,
    bytes: &[u8],
) -> Result<(), String> {
    let mut stream = tls_connect(config, addr, ip).await?;
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    if closed(&mut stream).await {
        return Err("closed".into());
    }
    Ok(())
}

async fn tls_connect(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    ip: Ipv4Addr,
) -> Result<impl AsyncRead + AsyncWrite + Unpin, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let handshake = connector.connect(ServerName::IpAddress(IpAddr::V4(ip).into()), tcp);
    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("handshake: {e}")),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// Longer than the servers' poll of the store files (Ensemble: 2 s).
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// The certificate (DER) the quorum port at `addr` (node address `ip`) serves to a client presenting `config`'s.
async fn served_certificate(config: &Arc<rustls::ClientConfig>, addr: SocketAddr, ip: Ipv4Addr) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.expect("connect to the quorum port");
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let handshake = connector.connect(ServerName::IpAddress(IpAddr::V4(ip).into()), tcp);
    let stream = tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .expect("the handshake finishes")
        .expect("a handshake with a certificate of the CA");
    let certificates = stream.get_ref().1.peer_certificates().expect("the server's certificate");
    certificates[0].to_vec()
}

/// The test's certificates, in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::Builder::new().prefix("t76-certs-").tempdir().expect("temp dir");
        let certs = Certs { dir };
        certs.ca("ca");
        certs.ca("rogue-ca");
        for i in 0..NODES {
            certs.leaf(&format!("server{}", i + 1), &format!("IP:{},IP:127.0.0.1", address(i)), "ca");
            let store = [certs.read(&format!("server{}.key", i + 1)), certs.read(&format!("server{}.pem", i + 1))];
            std::fs::write(certs.path(&format!("server{}-store.pem", i + 1)), store.concat()).unwrap();
            // The certificate it rotates to: the same CA and addresses, another name.
            certs.leaf(&format!("server{}-next", i + 1), &format!("IP:{},IP:127.0.0.1", address(i)), "ca");
            let next =
                [certs.read(&format!("server{}-next.key", i + 1)), certs.read(&format!("server{}-next.pem", i + 1))];
            std::fs::write(certs.path(&format!("server{}-next-store.pem", i + 1)), next.concat()).unwrap();
        }
        certs.leaf("rogue", &format!("IP:{},IP:127.0.0.1", address(1)), "rogue-ca");
        certs
    }

    /// Node `i`'s quorum TLS keys (ZooKeeper's names).
    fn quorum_lines(&self, i: usize) -> Vec<String> {
        vec![
            format!("ssl.quorum.keyStore.location={}", self.path(&format!("server{}-store.pem", i + 1)).display()),
            "ssl.quorum.keyStore.type=PEM".into(),
            format!("ssl.quorum.trustStore.location={}", self.path("ca.pem").display()),
            "ssl.quorum.trustStore.type=PEM".into(),
            "sslQuorumReloadCertFiles=true".into(),
        ]
    }

    /// A TLS client configuration presenting `name`'s certificate and trusting `ca`.
    async fn client(&self, name: &str, ca: &str) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.path(&format!("{ca}.pem"))).unwrap()).unwrap();
        let chain = vec![CertificateDer::from_pem_file(self.path(&format!("{name}.pem"))).unwrap()];
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read a certificate file")
    }

    fn ca(&self, name: &str) {
        let subject = format!("/O=Ensemble/CN={name}");
        let (key, out) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(
            &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
            &["-days", "2", "-subj", &subject, "-keyout", &key, "-out", &out],
        );
    }

    /// A certificate for `san` signed by `ca`, version 3 (webpki and Java refuse version 1).
    fn leaf(&self, name: &str, san: &str, ca: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(self.path(&ext), format!("basicConstraints=CA:FALSE\nsubjectAltName={san}\n")).unwrap();
        let (subject, key, csr) = (format!("/O=Ensemble/CN={name}"), format!("{name}.key"), format!("{name}.csr"));
        self.openssl(
            &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
            &["-subj", &subject, "-keyout", &key, "-out", &csr],
        );
        let (ca_pem, ca_key, out) = (format!("{ca}.pem"), format!("{ca}.key"), format!("{name}.pem"));
        self.openssl(
            &["x509", "-req", "-CAcreateserial", "-days", "2"],
            &["-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-extfile", &ext, "-out", &out],
        );
    }

    fn openssl(&self, args: &[&str], more: &[&str]) {
        let out =
            Command::new("openssl").args(args).args(more).current_dir(self.dir.path()).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?} {more:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
