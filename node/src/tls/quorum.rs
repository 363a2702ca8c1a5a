//! Quorum TLS: ZooKeeper's `sslQuorum`, `portUnification` and `ssl.quorum.*` keys, as the peer transport's
//! [`PeerSecurity`] (the transport runs it before its id handshake, within its timeout and handshake bound).
//!
//! With `sslQuorum=true` every peer connection is mutual TLS (rustls, the quorum key and trust stores):
//! - The dialer checks the listener's certificate: it chains to the quorum trust store and, with
//!   `ssl.quorum.hostnameVerification=true` (the default), names the host of the `server.N` line dialed, in a
//!   subjectAltName (an IP address entry for an IP host, a DNS entry for a name; the CN is not read).
//! - The listener requires the dialer's certificate and checks that it chains to the quorum trust store. Once the
//!   dialer has sent the server id it claims, its certificate must name the host of that id's `server.N` line
//!   (with hostname verification on), so a holder of server 2's certificate cannot be server 3. ZooKeeper
//!   instead checks a dialer's certificate against the address it connects from; Ensemble checks it against
//!   the claim, which is what a peer's messages are trusted for (votes, proposals, forwarded requests with
//!   their sessions' auth ids).
//! - With `ssl.quorum.hostnameVerification=false` any certificate the trust store vouches for may be any
//!   server, as in ZooKeeper.
//!
//! With `portUnification=true` the listener takes plaintext dialers too, told apart by their first byte (0x16
//! starts a TLS handshake); a plaintext dialer proves nothing and is admitted as it would be without TLS. That
//! is for the rolling switch only (README, "TLS between servers"): while it is on, a stranger on the quorum port
//! can still speak plaintext. `sslQuorum` decides how this server dials: TLS when true, plaintext when false.
//!
//! A failed handshake or identity is the dialer's fault ([`LinkFault::Secure`], [`LinkFault::Identity`]),
//! logged by the transport with its other refusals (at most 20 lines per 10 s).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use replication::message::ServerId;
use replication::security::{BoxedStream, PeerIdentity, PeerSecurity, Upgrade};
use replication::transport::LinkFault;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::config::QuorumSettings;
use super::context::{self, TlsError};
use super::reload::Reloadable;
use super::TlsSettings;
use crate::config::ServerEntry;

/// The first byte of a TLS connection: a handshake record.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The quorum's TLS configuration (replaced when its files change, with `sslQuorumReloadCertFiles`).
pub struct QuorumTls {
    settings: QuorumSettings,
    /// The host of each `server.N` line, as a certificate must name it.
    hosts: Arc<BTreeMap<ServerId, ServerName<'static>>>,
    current: RwLock<Contexts>,
}

/// What the files make: both ends of a handshake.
#[derive(Clone)]
struct Contexts {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl QuorumTls {
    /// Reads the files the settings name; `servers` are the `server.N` lines.
    pub fn new(settings: QuorumSettings, servers: &BTreeMap<u64, ServerEntry>) -> Result<Arc<QuorumTls>, TlsError> {
        let mut hosts = BTreeMap::new();
        for (&id, entry) in servers {
            let name = ServerName::try_from(entry.host.clone())
                .map_err(|_| TlsError::PeerHost { id, host: entry.host.clone() })?;
            hosts.insert(ServerId(id), name);
        }
        let current = RwLock::new(contexts(&settings)?);
        Ok(Arc::new(QuorumTls { settings, hosts: Arc::new(hosts), current }))
    }

    /// The settings.
    pub fn settings(&self) -> &QuorumSettings {
        &self.settings
    }

    fn contexts(&self) -> Contexts {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// Reads the stores into a server configuration that requires a verified client certificate, and a client
/// configuration that presents ours and verifies the listener's ([`PeerVerifier`]).
fn contexts(settings: &QuorumSettings) -> Result<Contexts, TlsError> {
    let acceptor = TlsAcceptor::from(Arc::new(context::server_config(&settings.tls)?));
    let (provider, versions) = context::provider_and_versions(&settings.tls);
    let trust = settings.tls.trust_store.as_ref().expect("quorum settings always have a trust store");
    let verifier = PeerVerifier {
        roots: Arc::new(context::roots(trust)?),
        algorithms: provider.signature_verification_algorithms,
        hostname_verification: settings.hostname_verification,
    };
    let (chain, key) = context::key_store(&settings.tls.key_store)?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)?;
    Ok(Contexts { acceptor, connector: TlsConnector::from(Arc::new(client)) })
}

impl PeerSecurity for QuorumTls {
    fn accept(&self, stream: TcpStream, _: SocketAddr) -> Upgrade<(BoxedStream, PeerIdentity)> {
        let acceptor = self.contexts().acceptor;
        let unified = self.settings.port_unification;
        Box::pin(async move {
            if unified {
                let mut first = [0u8; 1];
                let read = stream.peek(&mut first).await.map_err(LinkFault::Handshake)?;
                if read == 0 || first[0] != TLS_HANDSHAKE_RECORD {
                    return Ok((Box::new(stream) as BoxedStream, PeerIdentity::Unproven));
                }
            }
            let tls = acceptor.accept(stream).await.map_err(|e| LinkFault::Secure(e.to_string()))?;
            let certificate = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
            // rustls requires a verified certificate (`need`): there always is one.
            let certificate = certificate.ok_or_else(|| LinkFault::Secure("no client certificate".into()))?.to_vec();
            Ok((Box::new(tls) as BoxedStream, PeerIdentity::Certificate(certificate)))
        })
    }

    fn admit(&self, claimed: ServerId, identity: &PeerIdentity) -> Result<(), LinkFault> {
        match identity {
            // Only a unified port lets a plaintext dialer this far.
            PeerIdentity::Unproven => Ok(()),
            // Quorum SASL over TLS (`crate::sasl::quorum`): the certificate beneath decides.
            PeerIdentity::Sasl { under, .. } => self.admit(claimed, under),
            PeerIdentity::Certificate(_) if !self.settings.hostname_verification => Ok(()),
            PeerIdentity::Certificate(der) => {
                names(&self.hosts, claimed, der).map_err(|reason| LinkFault::Identity { claimed: claimed.0, reason })
            }
        }
    }

    fn connect(&self, stream: TcpStream, peer: ServerId, _: SocketAddr) -> Upgrade<BoxedStream> {
        if !self.settings.ssl_quorum {
            return Box::pin(async move { Ok(Box::new(stream) as BoxedStream) });
        }
        let connector = self.contexts().connector;
        let name = self.hosts.get(&peer).cloned();
        Box::pin(async move {
            let name = name.ok_or(LinkFault::UnknownServer(peer.0))?;
            let tls = connector.connect(name, stream).await.map_err(|e| LinkFault::Secure(e.to_string()))?;
            Ok(Box::new(tls) as BoxedStream)
        })
    }
}

/// Whether the certificate `der` names the host of server `claimed`; why not, if it does not.
fn names(hosts: &BTreeMap<ServerId, ServerName<'static>>, claimed: ServerId, der: &[u8]) -> Result<(), String> {
    let host = hosts.get(&claimed).ok_or_else(|| "it is not in the configuration".to_owned())?;
    let der = CertificateDer::from(der);
    let parsed = ParsedCertificate::try_from(&der).map_err(|e| format!("its certificate does not parse: {e}"))?;
    rustls::client::verify_server_name(&parsed, host)
        .map_err(|e| format!("its certificate is not valid for {}: {e}", host.to_str()))
}

impl Reloadable for QuorumTls {
    fn what(&self) -> &'static str {
        "quorum TLS"
    }

    fn settings(&self) -> &TlsSettings {
        &self.settings.tls
    }

    fn reload(&self) -> Result<(), TlsError> {
        let contexts = contexts(&self.settings)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = contexts;
        Ok(())
    }
}

/// Verifies a listener's certificate: it chains to the quorum trust store and, with hostname verification,
/// names the host dialed. (rustls's own verifier always checks the name; ZooKeeper lets it be turned off.)
#[derive(Debug)]
struct PeerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    hostname_verification: bool,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.hostname_verification {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::tls::config::{ClientAuth, Protocol, Store};

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl CLI runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CA and a certificate it signed for `san` (openssl's syntax: `IP:127.0.0.3,DNS:zk2`), in `dir`:
    /// `ca.pem`, and `leaf.pem` with the key and certificate (ZooKeeper's PEM key store).
    fn make_certs(dir: &Path, san: &str) {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            dir,
            &[&["req", "-x509"], &ec[..], &["-subj", "/CN=ca", "-keyout", "ca.key", "-out", "ca.pem"]].concat(),
        );
        openssl(
            dir,
            &[&["req", "-new"], &ec[..], &["-subj", "/CN=zk", "-keyout", "leaf.key", "-out", "leaf.csr"]].concat(),
        );
        std::fs::write(dir.join("v3.ext"), format!("basicConstraints=CA:FALSE\nsubjectAltName={san}\n")).unwrap();
        let sign = ["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
        openssl(dir, &[&sign[..], &["-days", "2", "-extfile", "v3.ext", "-out", "leaf.crt"]].concat());
        let store =
            [std::fs::read(dir.join("leaf.key")).unwrap(), std::fs::read(dir.join("leaf.crt")).unwrap()].concat();
        std::fs::write(dir.join("leaf.pem"), store).unwrap();
    }

    fn settings(dir: &Path, hostname_verification: bool) -> QuorumSettings {
        let store = |key, name: &str| Store { key, line: 1, path: dir.join(name), password: false };
        let tls = TlsSettings {
            port: None,
            address: None,
            key_store: store("ssl.quorum.keyStore.location", "leaf.pem"),
            trust_store: Some(store("ssl.quorum.trustStore.location", "ca.pem")),
            client_auth: ClientAuth::Need,
            protocols: vec![Protocol::Tls12],
            cipher_suites: None,
            port_unification: false,
        };
        QuorumSettings { ssl_quorum: true, port_unification: false, reload: false, hostname_verification, tls }
    }

    fn servers() -> BTreeMap<u64, ServerEntry> {
        let entry = |host: &str| ServerEntry {
            host: host.into(),
            quorum_port: 2888,
            election_port: 3888,
            observer: false,
            client: None,
        };
        [(1, entry("127.0.0.2")), (2, entry("127.0.0.3")), (3, entry("127.0.0.4")), (4, entry("zk4.example"))].into()
    }

    #[test]
    fn a_certificate_admits_only_the_servers_whose_host_it_names() {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path(), "IP:127.0.0.3,DNS:zk4.example");
        let der = CertificateDer::from_pem_file(dir.path().join("leaf.crt")).unwrap().to_vec();
        let quorum = QuorumTls::new(settings(dir.path(), true), &servers()).unwrap();
        let admit = |id| quorum.admit(ServerId(id), &PeerIdentity::Certificate(der.clone()));
        assert!(admit(2).is_ok(), "server 2's certificate names 127.0.0.3");
        assert!(admit(4).is_ok(), "and zk4.example");
        let refused = admit(3).unwrap_err().to_string();
        assert!(refused.contains("claims to be server 3") && refused.contains("127.0.0.4"), "{refused}");
        assert!(admit(1).is_err());
        assert!(admit(9).unwrap_err().to_string().contains("not in the configuration"));
        assert!(quorum.admit(ServerId(1), &PeerIdentity::Certificate(vec![0x30, 0x03, 1, 2, 3])).is_err());
        // A plaintext dialer reaches `admit` only through a unified port.
        assert!(quorum.admit(ServerId(3), &PeerIdentity::Unproven).is_ok());

        // ZooKeeper's ssl.quorum.hostnameVerification=false: any certificate of the trust store is any server.
        let lax = QuorumTls::new(settings(dir.path(), false), &servers()).unwrap();
        assert!(lax.admit(ServerId(3), &PeerIdentity::Certificate(der)).is_ok());
    }

    #[test]
    fn a_bad_new_key_store_keeps_the_old_configuration() {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path(), "IP:127.0.0.3");
        let quorum = QuorumTls::new(settings(dir.path(), true), &servers()).unwrap();
        std::fs::write(dir.path().join("leaf.pem"), "not a key store").unwrap();
        let error = quorum.reload().unwrap_err().to_string();
        assert!(error.contains("ssl.quorum.keyStore.location"), "{error}");
        assert!(QuorumTls::new(settings(dir.path(), true), &servers()).is_err());
        let bad_host = [(1, ServerEntry { host: "under_score!".into(), ..servers()[&1].clone() })].into();
        make_certs(dir.path(), "IP:127.0.0.3");
        assert!(matches!(QuorumTls::new(settings(dir.path(), true), &bad_host), Err(TlsError::PeerHost { id: 1, .. })));
    }

    #[tokio::test]
    async fn quorum_sasl_runs_over_tls_and_the_certificate_beneath_still_decides() {
        use crate::sasl::quorum::security::QuorumSasl;
        use crate::sasl::quorum::settings::QuorumSaslSettings;
        use crate::sasl::quorum::Credentials;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path(), "IP:127.0.0.2");
        let tls: Arc<dyn PeerSecurity> = QuorumTls::new(settings(dir.path(), true), &servers()).unwrap();
        let flags = QuorumSaslSettings {
            learner_require: true,
            server_require: true,
            learner_context: "QuorumLearner".into(),
            server_context: "QuorumServer".into(),
        };
        let credentials = Credentials::new(&[("learner", "secret")], ("learner", "secret"));
        let sasl = QuorumSasl::new(1, flags, credentials, tls);
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (accepted, dialed) = tokio::join!(socket.accept(), TcpStream::connect(addr));
        let (accepted, from) = accepted.unwrap();
        let dial = async {
            let mut stream = sasl.connect(dialed.unwrap(), ServerId(1), addr).await.unwrap();
            stream.write_u64(1).await.unwrap();
            stream.flush().await.unwrap();
            stream
        };
        let accept = async {
            let (mut stream, identity) = sasl.accept(accepted, from).await.unwrap();
            assert_eq!(stream.read_u64().await.unwrap(), 1);
            identity
        };
        let (identity, _dialed) = tokio::join!(accept, dial);
        let PeerIdentity::Sasl { user, under } = &identity else { panic!("not proven by SASL: {identity:?}") };
        assert_eq!(user, "learner");
        assert!(matches!(**under, PeerIdentity::Certificate(_)), "SASL ran over TLS");
        assert!(sasl.admit(ServerId(1), &identity).is_ok(), "the certificate names server 1's host");
        let refused = sasl.admit(ServerId(2), &identity).unwrap_err().to_string();
        assert!(refused.contains("not valid for 127.0.0.3"), "{refused}");
    }
}
