//! Turns [`TlsSettings`] and the PEM files they name into rustls's server configuration (and, for quorum TLS,
//! the pieces of its client configuration: [`super::quorum`]).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::config::{ClientAuth, Protocol, Store, TlsSettings};

/// Why the TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A store file could not be read.
    #[error("{key} (line {line}) {path}: {source}")]
    Read {
        /// The key naming the file.
        key: &'static str,
        /// Its zoo.cfg line.
        line: usize,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A store file without what it must hold, or with what Ensemble cannot use.
    #[error("{key} (line {line}) {path}: {problem}")]
    Content {
        /// The key naming the file.
        key: &'static str,
        /// Its zoo.cfg line.
        line: usize,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, suites and versions
    /// with nothing in common, ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The trust store's certificates cannot verify clients.
    #[error("ssl.trustStore.location: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The host of a `server.N` line is neither an IP address nor a DNS name a certificate could name.
    #[error("server.{id}: host {host:?} cannot be checked against a certificate (quorum TLS)")]
    PeerHost {
        /// The server id.
        id: u64,
        /// Its host.
        host: String,
    },
}

/// The crypto provider with the configured suites, and the configured TLS versions.
pub(super) fn provider_and_versions(
    settings: &TlsSettings,
) -> (Arc<rustls::crypto::CryptoProvider>, Vec<&'static rustls::SupportedProtocolVersion>) {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(wanted) = &settings.cipher_suites {
        provider.cipher_suites.retain(|s| wanted.contains(&s.suite()));
    }
    let versions = settings
        .protocols
        .iter()
        .map(|p| match p {
            Protocol::Tls12 => &rustls::version::TLS12,
            Protocol::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    (Arc::new(provider), versions)
}

/// The server's rustls configuration; reads the key and trust stores.
pub fn server_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let (provider, versions) = provider_and_versions(settings);
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match (&settings.trust_store, settings.client_auth) {
        (Some(store), ClientAuth::Want | ClientAuth::Need) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(store)?), provider);
            let verifier = if settings.client_auth == ClientAuth::Want {
                verifier.allow_unauthenticated().build()?
            } else {
                verifier.build()?
            };
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let (chain, key) = key_store(&settings.key_store)?;
    Ok(builder.with_single_cert(chain, key)?)
}

fn read(store: &Store) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&store.path).map_err(|source| TlsError::Read {
        key: store.key,
        line: store.line,
        path: store.path.clone(),
        source,
    })
}

fn content(store: &Store, problem: impl Into<String>) -> TlsError {
    TlsError::Content { key: store.key, line: store.line, path: store.path.clone(), problem: problem.into() }
}

/// ZooKeeper's PEM key store: the certificate chain (server first) and its private key, in one file.
pub(super) fn key_store(store: &Store) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let pem = read(store)?;
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(content(
            store,
            "encrypted private keys are not supported yet (ssl.keyStore.password); store the key unencrypted \
             (openssl pkcs8 -topk8 -nocrypt) and protect the file instead",
        ));
    }
    let chain = certificates(store, &pem)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| content(store, format!("no private key: {e}")))?;
    Ok((chain, key))
}

/// The CA certificates client certificates must chain to.
pub(super) fn roots(store: &Store) -> Result<RootCertStore, TlsError> {
    let pem = read(store)?;
    let mut roots = RootCertStore::empty();
    for cert in certificates(store, &pem)? {
        roots.add(cert).map_err(|e| content(store, format!("a certificate rustls cannot use: {e}")))?;
    }
    Ok(roots)
}

fn certificates(store: &Store, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(store, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(content(store, "no certificate in it"));
    }
    Ok(certs)
}
