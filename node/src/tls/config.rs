//! The zoo.cfg keys of client TLS, read into [`TlsSettings`], and of quorum TLS, read into [`QuorumSettings`],
//! with ZooKeeper 3.8's defaults (`X509Util`, `QuorumX509Util`, `SSLContextAndOptions`, `QuorumPeerConfig`). Only what can be checked without the files is checked here; the files
//! are read when the server starts ([`super::context`]) and again when they change ([`super::reload`]).
//!
//! In ZooKeeper these are system properties (`zookeeper.ssl.keyStore.location`, ...) that its zoo.cfg also sets,
//! since QuorumPeerConfig turns unknown zoo.cfg keys into `zookeeper.`-prefixed properties.

use std::path::PathBuf;

use crate::config::{invalid, ConfigError};

/// ZooKeeper's Netty connection factory, which ZooKeeper needs for TLS; Ensemble accepts it (and NIO's).
pub const NETTY_FACTORY: &str = "org.apache.zookeeper.server.NettyServerCnxnFactory";
const NIO_FACTORY: &str = "org.apache.zookeeper.server.NIOServerCnxnFactory";
/// ZooKeeper's x509 provider class, which ZooKeeper needs registered (`authProvider.x509=`) for client
/// certificates; Ensemble always gives a verified certificate its `x509` identity.
pub const X509_PROVIDER: &str = "org.apache.zookeeper.server.auth.X509AuthenticationProvider";

/// The keys this module reads.
pub const KEYS: [&str; 16] = [
    "secureClientPort",
    "secureClientPortAddress",
    "serverCnxnFactory",
    "ssl.keyStore.location",
    "ssl.keyStore.password",
    "ssl.keyStore.type",
    "ssl.trustStore.location",
    "ssl.trustStore.password",
    "ssl.trustStore.type",
    "ssl.clientAuth",
    "ssl.protocol",
    "ssl.enabledProtocols",
    "ssl.ciphersuites",
    "authProvider.x509",
    "X509AuthenticationProvider.superUser",
    "client.portUnification",
];

/// The quorum TLS keys: ZooKeeper's `QuorumPeerConfig` keys and `QuorumX509Util`'s `ssl.quorum.` properties.
pub const QUORUM_KEYS: [&str; 14] = [
    "sslQuorum",
    "sslQuorumReloadCertFiles",
    "portUnification",
    "ssl.quorum.keyStore.location",
    "ssl.quorum.keyStore.password",
    "ssl.quorum.keyStore.type",
    "ssl.quorum.trustStore.location",
    "ssl.quorum.trustStore.password",
    "ssl.quorum.trustStore.type",
    "ssl.quorum.clientAuth",
    "ssl.quorum.protocol",
    "ssl.quorum.enabledProtocols",
    "ssl.quorum.ciphersuites",
    "ssl.quorum.hostnameVerification",
];

/// Quorum TLS as zoo.cfg configures it (`sslQuorum`, `portUnification`, `ssl.quorum.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumSettings {
    /// `sslQuorum`: this server dials its peers over TLS, and (without `portUnification`) takes only TLS.
    pub ssl_quorum: bool,
    /// `portUnification`: the quorum port takes TLS and plaintext peers, told apart by their first byte.
    pub port_unification: bool,
    /// `sslQuorumReloadCertFiles`: the quorum key and trust stores are reloaded when their files change.
    pub reload: bool,
    /// `ssl.quorum.hostnameVerification`, default true: a peer's certificate must name the host of the
    /// `server.N` line it is (the one dialed, or the id a dialer claims).
    pub hostname_verification: bool,
    /// The stores, versions and suites (`ssl.quorum.keyStore.*`, `ssl.quorum.trustStore.*`,
    /// `ssl.quorum.enabledProtocols`, `ssl.quorum.ciphersuites`), read as the client port's are; `port` and
    /// `address` are unused, `client_auth` is always `need`.
    pub tls: TlsSettings,
}

/// Whether clients must present a certificate (`ssl.clientAuth`; ZooKeeper's default is `need`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for.
    None,
    /// One is asked for; a client without one is let in (without an `x509` identity).
    Want,
    /// A client without a valid certificate is refused.
    Need,
}

/// A TLS version Ensemble serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TLSv1.2, ZooKeeper 3.8's default.
    Tls12,
    /// TLSv1.3.
    Tls13,
}

/// A PEM file named by a `*.location` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    /// The key that named it (for errors).
    pub key: &'static str,
    /// Its zoo.cfg line.
    pub line: usize,
    /// The file.
    pub path: PathBuf,
    /// Whether a password was given (only an encrypted key would need one, and those are refused).
    pub password: bool,
}

/// Client TLS as zoo.cfg configures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// `secureClientPort`; `None` when TLS is served on the plaintext port only (`client.portUnification`).
    pub port: Option<u16>,
    /// `secureClientPortAddress`, default `clientPortAddress`'s, else all interfaces.
    pub address: Option<String>,
    /// `ssl.keyStore.location`: the server's certificate chain and private key, in one PEM file.
    pub key_store: Store,
    /// `ssl.trustStore.location`: the CA certificates client certificates must chain to.
    pub trust_store: Option<Store>,
    /// `ssl.clientAuth`.
    pub client_auth: ClientAuth,
    /// `ssl.enabledProtocols`, default `ssl.protocol`, default TLSv1.2 (ZooKeeper 3.8).
    pub protocols: Vec<Protocol>,
    /// `ssl.ciphersuites` as rustls names them; `None`: rustls's defaults.
    pub cipher_suites: Option<Vec<rustls::CipherSuite>>,
    /// `client.portUnification`, default false: the plaintext port also takes TLS clients, told apart by their
    /// first byte (ZooKeeper's `UnifiedServerSocket`).
    pub port_unification: bool,
}

type Get<'a> = dyn Fn(&str) -> Option<(usize, &'a str)> + 'a;

/// The quorum TLS settings; `None` unless `sslQuorum` or `portUnification` is true. Both need the quorum key
/// and trust stores (Ensemble has no default CA list), and peers always authenticate each other
/// (`ssl.quorum.clientAuth` may only be `need`).
pub fn quorum_settings(get: &Get<'_>) -> Result<Option<QuorumSettings>, ConfigError> {
    let ssl_quorum = boolean(get, "sslQuorum", false)?;
    let port_unification = boolean(get, "portUnification", false)?;
    let reload = boolean(get, "sslQuorumReloadCertFiles", false)?;
    let hostname_verification = boolean(get, "ssl.quorum.hostnameVerification", true)?;
    if !ssl_quorum && !port_unification {
        return Ok(None);
    }
    let key_store = store(get, "ssl.quorum.keyStore")?
        .ok_or(ConfigError::Missing("ssl.quorum.keyStore.location (sslQuorum or portUnification is true)"))?;
    let trust_store = store(get, "ssl.quorum.trustStore")?
        .ok_or(ConfigError::Missing("ssl.quorum.trustStore.location (sslQuorum or portUnification is true)"))?;
    match get("ssl.quorum.clientAuth") {
        None => {}
        Some((_, v)) if v.eq_ignore_ascii_case("need") || v.is_empty() => {}
        Some((line, v)) => {
            return Err(invalid(line, "ssl.quorum.clientAuth", v, "need: peers always present their certificates"))
        }
    }
    let protocol = get("ssl.quorum.protocol").map(|v| protocols(v, "ssl.quorum.protocol")).transpose()?;
    let protocols = match get("ssl.quorum.enabledProtocols") {
        Some(v) => protocols(v, "ssl.quorum.enabledProtocols")?,
        None => protocol.unwrap_or_else(|| vec![Protocol::Tls12]),
    };
    let cipher_suites =
        get("ssl.quorum.ciphersuites").map(|v| cipher_suites(v, "ssl.quorum.ciphersuites")).transpose()?;
    let tls = TlsSettings {
        port: None,
        address: None,
        key_store,
        trust_store: Some(trust_store),
        client_auth: ClientAuth::Need,
        protocols,
        cipher_suites,
        port_unification: false,
    };
    Ok(Some(QuorumSettings { ssl_quorum, port_unification, reload, hostname_verification, tls }))
}

/// A `true`/`false` key (Java's `Boolean.parseBoolean` would take anything else as false; a typo is refused).
fn boolean(get: &Get<'_>, key: &'static str, default: bool) -> Result<bool, ConfigError> {
    match get(key) {
        None => Ok(default),
        Some((_, v)) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some((_, v)) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some((line, v)) => Err(invalid(line, key, v, "true or false")),
    }
}

/// The TLS settings, `None` without `secureClientPort` or `client.portUnification=true`; and the x509 super
/// user's DN.
pub fn settings(get: &Get<'_>) -> Result<(Option<TlsSettings>, Option<String>), ConfigError> {
    if let Some((line, v)) = get("serverCnxnFactory") {
        if v != NETTY_FACTORY && v != NIO_FACTORY {
            return Err(invalid(line, "serverCnxnFactory", v, "ZooKeeper's Netty or NIO factory"));
        }
    }
    if let Some((line, v)) = get("authProvider.x509") {
        if v != X509_PROVIDER {
            return Err(invalid(line, "authProvider.x509", v, &format!("only {X509_PROVIDER}")));
        }
    }
    let port_unification = match get("client.portUnification") {
        None => false,
        Some((_, v)) if v.eq_ignore_ascii_case("true") => true,
        Some((_, v)) if v.eq_ignore_ascii_case("false") => false,
        Some((line, v)) => return Err(invalid(line, "client.portUnification", v, "true or false")),
    };
    let super_user = get("X509AuthenticationProvider.superUser").map(|(_, v)| v.to_owned());
    let port = match get("secureClientPort") {
        Some((line, port)) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| invalid(line, "secureClientPort", port, "a port"))?,
        ),
        None if port_unification => None,
        None => return Ok((None, super_user)),
    };
    let key_store = store(get, "ssl.keyStore")?.ok_or(ConfigError::Missing("ssl.keyStore.location"))?;
    let trust_store = store(get, "ssl.trustStore")?;
    let client_auth = match get("ssl.clientAuth") {
        None => ClientAuth::Need,
        Some((_, v)) if v.eq_ignore_ascii_case("need") || v.is_empty() => ClientAuth::Need,
        Some((_, v)) if v.eq_ignore_ascii_case("want") => ClientAuth::Want,
        Some((_, v)) if v.eq_ignore_ascii_case("none") => ClientAuth::None,
        Some((line, v)) => return Err(invalid(line, "ssl.clientAuth", v, "none, want or need")),
    };
    if client_auth != ClientAuth::None && trust_store.is_none() {
        // ZooKeeper would fall back to the JVM's CA list; Ensemble has none, so it says so.
        return Err(ConfigError::Missing("ssl.trustStore.location (ssl.clientAuth is want or need)"));
    }
    let protocol = get("ssl.protocol").map(|v| protocols(v, "ssl.protocol")).transpose()?;
    let protocols = match get("ssl.enabledProtocols") {
        Some(v) => protocols(v, "ssl.enabledProtocols")?,
        None => protocol.unwrap_or_else(|| vec![Protocol::Tls12]),
    };
    let cipher_suites = get("ssl.ciphersuites").map(|v| cipher_suites(v, "ssl.ciphersuites")).transpose()?;
    let address = get("secureClientPortAddress").or(get("clientPortAddress")).map(|(_, v)| v.to_owned());
    let settings =
        TlsSettings { port, address, key_store, trust_store, client_auth, protocols, cipher_suites, port_unification };
    Ok((Some(settings), super_user))
}

/// `<prefix>.location`, `.password` and `.type` (PEM only).
fn store(get: &Get<'_>, prefix: &'static str) -> Result<Option<Store>, ConfigError> {
    let (location_key, type_key) = match prefix {
        "ssl.keyStore" => ("ssl.keyStore.location", "ssl.keyStore.type"),
        "ssl.quorum.keyStore" => ("ssl.quorum.keyStore.location", "ssl.quorum.keyStore.type"),
        "ssl.quorum.trustStore" => ("ssl.quorum.trustStore.location", "ssl.quorum.trustStore.type"),
        _ => ("ssl.trustStore.location", "ssl.trustStore.type"),
    };
    let Some((line, location)) = get(location_key) else { return Ok(None) };
    let password = get(&format!("{prefix}.password")).is_some_and(|(_, p)| !p.is_empty());
    match get(type_key) {
        Some((_, t)) if t.eq_ignore_ascii_case("PEM") => {}
        Some((line, t)) => {
            return Err(invalid(
                line,
                type_key,
                t,
                "only PEM is supported (convert JKS/PKCS12 with openssl or keytool)",
            ))
        }
        // ZooKeeper infers the type from the file's extension.
        None if location.ends_with(".pem") || location.ends_with(".crt") || location.ends_with(".key") => {}
        None => return Err(invalid(line, location_key, location, &format!("not a .pem file: set {type_key}=PEM"))),
    }
    Ok(Some(Store { key: location_key, line, path: PathBuf::from(location), password }))
}

/// A comma-separated list of TLS versions; older ones than 1.2 are refused.
fn protocols((line, text): (usize, &str), key: &str) -> Result<Vec<Protocol>, ConfigError> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let protocol = match name {
            "TLSv1.2" => Protocol::Tls12,
            "TLSv1.3" => Protocol::Tls13,
            // Java's "TLS" means the newest the JVM has.
            "TLS" => Protocol::Tls13,
            _ => return Err(invalid(line, key, name, "TLSv1.2 or TLSv1.3 (older versions are not served)")),
        };
        if !out.contains(&protocol) {
            out.push(protocol);
        }
    }
    if out.is_empty() {
        return Err(invalid(line, key, text, "no protocol named"));
    }
    Ok(out)
}

/// Java cipher suite names as rustls's ring provider knows them (Java writes TLS 1.3's without `13`).
fn cipher_suites((line, text): (usize, &str), key: &str) -> Result<Vec<rustls::CipherSuite>, ConfigError> {
    let known = rustls::crypto::ring::default_provider().cipher_suites;
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let found = known.iter().map(|s| s.suite()).find(|s| {
            let ours = s.as_str().unwrap_or_default();
            ours == name || ours.strip_prefix("TLS13_").is_some_and(|rest| name.strip_prefix("TLS_") == Some(rest))
        });
        out.push(found.ok_or_else(|| invalid(line, key, name, "a cipher suite this server does not have"))?);
    }
    if out.is_empty() {
        return Err(invalid(line, key, text, "no cipher suite named"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<(Option<TlsSettings>, Option<String>), ConfigError> {
        let get = |k: &str| pairs.iter().position(|(key, _)| *key == k).map(|i| (i + 1, pairs[i].1));
        settings(&get)
    }

    const BASE: [(&str, &str); 3] =
        [("secureClientPort", "2281"), ("ssl.keyStore.location", "/k.pem"), ("ssl.trustStore.location", "/t.pem")];

    #[test]
    fn zookeepers_defaults_need_a_client_certificate_over_tls_1_2() {
        let tls = parse(&BASE).unwrap().0.unwrap();
        assert_eq!((tls.port, tls.client_auth, tls.protocols), (Some(2281), ClientAuth::Need, vec![Protocol::Tls12]));
        assert_eq!(tls.cipher_suites, None);
        assert_eq!(parse(&[]).unwrap().0, None);
    }

    #[test]
    fn bad_values_are_refused_naming_key_and_line() {
        let with = |k: &'static str, v: &'static str| {
            let mut pairs = BASE.to_vec();
            pairs.push((k, v));
            parse(&pairs).unwrap_err().to_string()
        };
        assert!(with("ssl.enabledProtocols", "TLSv1.2,TLSv1.1")
            .contains("line 4: invalid value \"TLSv1.1\" for ssl.enabledProtocols"));
        assert!(with("ssl.ciphersuites", "TLS_RSA_WITH_RC4_128_MD5")
            .contains("\"TLS_RSA_WITH_RC4_128_MD5\" for ssl.ciphersuites"));
        assert!(with("ssl.keyStore.type", "JKS").contains("for ssl.keyStore.type: only PEM"));
        assert!(with("ssl.clientAuth", "maybe").contains("ssl.clientAuth"));
        assert!(with("serverCnxnFactory", "Foo").contains("serverCnxnFactory"));
        let no_trust = parse(&BASE[..2]).unwrap_err().to_string();
        assert!(no_trust.contains("ssl.trustStore.location"), "{no_trust}");
    }

    #[test]
    fn port_unification_needs_the_stores_but_no_secure_port() {
        let tls = parse(&[("client.portUnification", "true"), BASE[1], BASE[2]]).unwrap().0.unwrap();
        assert_eq!((tls.port, tls.port_unification), (None, true));
        assert!(parse(&[("client.portUnification", "true")])
            .unwrap_err()
            .to_string()
            .contains("ssl.keyStore.location"));
    }

    fn quorum(pairs: &[(&str, &str)]) -> Result<Option<QuorumSettings>, ConfigError> {
        let get = |k: &str| pairs.iter().position(|(key, _)| *key == k).map(|i| (i + 1, pairs[i].1));
        quorum_settings(&get)
    }

    const QUORUM: [(&str, &str); 3] = [
        ("sslQuorum", "true"),
        ("ssl.quorum.keyStore.location", "/q.pem"),
        ("ssl.quorum.trustStore.location", "/qt.pem"),
    ];

    #[test]
    fn quorum_tls_takes_zookeepers_keys_and_defaults() {
        assert_eq!(quorum(&QUORUM[1..]).unwrap(), None, "off without sslQuorum or portUnification");
        let q = quorum(&QUORUM).unwrap().unwrap();
        assert!(q.ssl_quorum && !q.port_unification && !q.reload && q.hostname_verification);
        assert_eq!((q.tls.client_auth, &q.tls.protocols[..]), (ClientAuth::Need, &[Protocol::Tls12][..]));
        assert_eq!(q.tls.key_store.key, "ssl.quorum.keyStore.location");
        assert_eq!(q.tls.trust_store.unwrap().path, PathBuf::from("/qt.pem"));
        let mut pairs = QUORUM.to_vec();
        pairs[0] = ("portUnification", "true");
        pairs.extend([("sslQuorumReloadCertFiles", "true"), ("ssl.quorum.hostnameVerification", "false")]);
        pairs.push(("ssl.quorum.enabledProtocols", "TLSv1.3"));
        let q = quorum(&pairs).unwrap().unwrap();
        assert!(!q.ssl_quorum && q.port_unification && q.reload && !q.hostname_verification);
        assert_eq!(q.tls.protocols, [Protocol::Tls13]);
    }

    #[test]
    fn inconsistent_quorum_settings_are_refused_naming_the_key() {
        let with = |k: &'static str, v: &'static str| {
            let mut pairs = QUORUM.to_vec();
            pairs.push((k, v));
            quorum(&pairs).unwrap_err().to_string()
        };
        assert!(with("ssl.quorum.enabledProtocols", "TLSv1").contains("\"TLSv1\" for ssl.quorum.enabledProtocols"));
        assert!(with("ssl.quorum.protocol", "TLSv1.1").contains("ssl.quorum.protocol"));
        assert!(with("ssl.quorum.clientAuth", "want").contains("ssl.quorum.clientAuth"));
        assert!(with("ssl.quorum.ciphersuites", "TLS_RSA_WITH_RC4_128_MD5").contains("for ssl.quorum.ciphersuites"));
        assert!(with("ssl.quorum.keyStore.type", "JKS").contains("ssl.quorum.keyStore.type"));
        assert!(with("ssl.quorum.hostnameVerification", "yes").contains("ssl.quorum.hostnameVerification"));
        let err = |pairs: &[(&str, &str)]| quorum(pairs).unwrap_err().to_string();
        assert!(err(&[QUORUM[0]]).contains("missing required key ssl.quorum.keyStore.location"));
        assert!(err(&QUORUM[..2]).contains("missing required key ssl.quorum.trustStore.location"));
        assert!(err(&[("sslQuorum", "yes")]).contains("for sslQuorum: true or false"));
        assert!(err(&[("portUnification", "true")]).contains("ssl.quorum.keyStore.location"));
    }

    #[test]
    fn java_names_of_tls_1_3_suites_map_to_rustls() {
        let mut pairs = BASE.to_vec();
        pairs.push(("ssl.ciphersuites", "TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"));
        let suites = parse(&pairs).unwrap().0.unwrap().cipher_suites.unwrap();
        assert_eq!(
            suites,
            [rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
        );
    }
}
