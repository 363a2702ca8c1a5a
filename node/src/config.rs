//! Configuration: ZooKeeper's `zoo.cfg` (a Java properties file) and the `myid` file in `dataDir`.
//!
//! Every key ZooKeeper documents for these purposes is understood, with ZooKeeper's defaults. Keys that
//! ZooKeeper has but Ensemble does not need (the JVM settings of the metrics provider, ...) are accepted with a
//! warning naming them, so that an existing `zoo.cfg` works. Any other key, and any invalid value, is an error
//! naming the key and its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wal::fs::FileSystem;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A key Ensemble does not know (a typo, most likely).
    #[error("line {line}: unknown key {key:?}")]
    UnknownKey {
        /// The line.
        line: usize,
        /// The key.
        key: String,
    },
    /// A value that does not parse or is out of range.
    #[error("line {line}: invalid value {value:?} for {key}: {reason}")]
    Invalid {
        /// The line (0: not from a line, e.g. a missing key or a cross-key check).
        line: usize,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A line that is not `key=value`.
    #[error("line {line}: expected key=value, found {text:?}")]
    Syntax {
        /// The line.
        line: usize,
        /// Its text.
        text: String,
    },
    /// A required key is missing.
    #[error("missing required key {0}")]
    Missing(&'static str),
}

/// A member of the ensemble (`server.N=host:quorumPort:electionPort[:participant|:observer][;[clientHost:]clientPort]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEntry {
    /// The host peers connect to.
    pub host: String,
    /// The port for proposals and sync.
    pub quorum_port: u16,
    /// The port for leader election.
    pub election_port: u16,
    /// Whether it observes (does not vote).
    pub observer: bool,
    /// Its client address, when given on the line.
    pub client: Option<SocketAddr>,
}

/// The four-letter words ZooKeeper knows.
pub const FOUR_LETTER_WORDS: [&str; 18] = [
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "hash", "isro", "mntr", "ruok", "srst", "srvr", "stat",
    "stmk", "wchc", "wchp", "wchs",
];

/// A node's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `tickTime`, default 2000 ms.
    pub tick: Duration,
    /// `initLimit`, in ticks, default 10.
    pub init_limit: u32,
    /// `syncLimit`, in ticks, default 5.
    pub sync_limit: u32,
    /// `dataDir` (snapshots, `myid`, epochs).
    pub data_dir: PathBuf,
    /// `dataLogDir` (the WAL), default `dataDir`.
    pub data_log_dir: PathBuf,
    /// `clientPort`.
    pub client_port: Option<u16>,
    /// `clientPortAddress`, default all interfaces.
    pub client_port_address: Option<String>,
    /// `server.N` lines.
    pub servers: BTreeMap<u64, ServerEntry>,
    /// `snapCount`, default 100,000.
    pub snap_count: u64,
    /// How often the leader looks for empty containers and expired TTL nodes (ZooKeeper's system property
    /// `znode.container.checkIntervalMs`, here a config key). Default 60 s.
    pub container_check_interval: Duration,
    /// A container that never had a child is deleted once this old (`znode.container.maxNeverUsedIntervalMs`;
    /// 0, the default: never).
    pub container_max_never_used: Duration,
    /// `autopurge.snapRetainCount`, default 3.
    pub snap_retain_count: usize,
    /// `autopurge.purgeInterval`, in hours, 0 (default) for never.
    pub purge_interval_hours: u32,
    /// `preAllocSize`, in KiB, default 65536 (the WAL segment size).
    pub prealloc_kib: u64,
    /// `maxClientCnxns` per client IP, 0 for no limit, default 60.
    pub max_client_cnxns: u32,
    /// `minSessionTimeout`, default 2 ticks.
    pub min_session_timeout: Duration,
    /// `maxSessionTimeout`, default 20 ticks.
    pub max_session_timeout: Duration,
    /// `jute.maxbuffer`, default 0xfffff: the largest client frame.
    pub jute_max_buffer: usize,
    /// `jute.maxbuffer.extrasize` (ZooKeeper's `zookeeper.jute.maxbuffer.extrasize`), default `jute.maxbuffer`:
    /// how much larger than a client frame a txn may grow (a multi's sequential suffixes, `auth` ACLs expanded).
    pub jute_max_buffer_extra: usize,
    /// `maxCnxns`: client connections to this server at most, 0 (the default) for no limit of its own (the
    /// process's file descriptor limit still bounds them).
    pub max_cnxns: u32,
    /// `globalOutstandingLimit`, default 1000: requests in flight on this server (all connections together)
    /// before connections stop reading (ZooKeeper's throttle).
    pub global_outstanding_limit: u32,
    /// `4lw.commands.whitelist`, default `srvr`; `*` for all.
    pub four_letter_words: Vec<String>,
    /// `forceSync`, default yes. `no` is for benchmarks only: writes are then acknowledged before fsync.
    pub force_sync: bool,
    /// `extendedTypesEnabled` (ZooKeeper's `zookeeper.extendedTypesEnabled`, which it also takes from zoo.cfg),
    /// default false: whether TTL nodes may be created (createTTL answers UNIMPLEMENTED otherwise).
    pub extended_types: bool,
    /// `enforceQuota` (ZooKeeper's `zookeeper.enforceQuota`, which it also takes from zoo.cfg as `enforceQuota`),
    /// default false: whether a create or setData past a quota's hard limit fails with QUOTAEXCEEDED.
    pub enforce_quota: bool,
    /// The super user's digest id, `super:base64(sha1("super:password"))` (ZooKeeper's system property
    /// `zookeeper.DigestAuthenticationProvider.superDigest`, here a config key).
    pub super_digest: Option<String>,
    /// `readonlymode.enabled` (ZooKeeper's Java system property of that name, here a config key), default
    /// false: whether a server cut off from its quorum serves read-only clients ([`crate::read_only`]).
    pub read_only_mode: bool,
    /// `localSessionsEnabled`, default false. Ensemble has local sessions in read-only mode only, where
    /// ZooKeeper creates sessions only with this set; read-write sessions are always global here.
    pub local_sessions: bool,
    /// The Prometheus endpoint (`metricsProvider.className` naming ZooKeeper's `PrometheusMetricsProvider`),
    /// where to listen; `None` without it ([`crate::metrics`]).
    pub metrics: Option<MetricsEndpoint>,
    /// The AdminServer (`admin.enableServer`, default true as in ZooKeeper; `admin.serverAddress` 0.0.0.0,
    /// `admin.serverPort` 8080, `admin.commandURL` `/commands`); `None` when disabled ([`crate::admin`]).
    pub admin: Option<AdminEndpoint>,
    /// The config file's text as read at start (ZooKeeper's `initialConfig`, which the AdminServer's
    /// `initial_configuration` answers); `None` for a config parsed from a string.
    pub initial_config: Option<String>,
    /// This server's id, from `dataDir/myid` (absent for a standalone server without one).
    pub my_id: Option<u64>,
    /// Client TLS (`secureClientPort` and the `ssl.*` keys), `None` without `secureClientPort`.
    pub tls: Option<crate::tls::TlsSettings>,
    /// The subject DN whose client certificate makes a session super (ZooKeeper's system property
    /// `zookeeper.X509AuthenticationProvider.superUser`, here a config key).
    pub x509_super_user: Option<String>,
    /// Quorum TLS (`sslQuorum`, `portUnification` and the `ssl.quorum.*` keys), `None` when both are off.
    pub quorum_tls: Option<crate::tls::config::QuorumSettings>,
    /// Client SASL and enforced authentication (`java.security.auth.login.config`, `superUser`,
    /// `enforce.auth.*`, ...; [`crate::sasl::config`]).
    pub sasl: crate::sasl::config::SaslSettings,
    /// Quorum SASL (`quorum.auth.*`; [`crate::sasl::quorum`]), `None` unless `quorum.auth.enableSasl=true`.
    pub quorum_sasl: Option<crate::sasl::quorum::settings::QuorumSaslSettings>,
}

/// Where the Prometheus `/metrics` endpoint listens: `metricsProvider.httpHost` (default `0.0.0.0`) and
/// `metricsProvider.httpPort` (default 7000), ZooKeeper's `PrometheusMetricsProvider` keys and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsEndpoint {
    /// The host or address to bind.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// Where the AdminServer listens and the path its commands live under (ZooKeeper's `JettyAdminServer` keys
/// and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminEndpoint {
    /// `admin.serverAddress`, default `0.0.0.0`.
    pub host: String,
    /// `admin.serverPort`, default 8080.
    pub port: u16,
    /// `admin.commandURL`, default `/commands`.
    pub command_url: String,
}

/// ZooKeeper's Prometheus provider class: naming it turns the `/metrics` endpoint on.
pub const PROMETHEUS_PROVIDER: &str = "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";

/// ZooKeeper's own providers that export nothing over HTTP (its default, and the null one): accepted, no
/// endpoint; `mntr` shows the server's values either way.
const NON_HTTP_PROVIDERS: [&str; 2] = [
    "org.apache.zookeeper.metrics.impl.DefaultMetricsProvider",
    "org.apache.zookeeper.metrics.impl.NullMetricsProvider",
];

/// ZooKeeper keys that Ensemble accepts and ignores (with a warning), so that existing files work.
const IGNORED: [&str; 16] = [
    // Jetty's idle timeout and HTTP version: the admin endpoint has its own bounds (crate::http).
    "admin.idleTimeout",
    "admin.httpVersion",
    // The Prometheus provider's Java-specific settings: JVM metrics, and its summary worker threads and queue.
    "metricsProvider.exportJvmInfo",
    "metricsProvider.numWorkerThreads",
    "metricsProvider.maxQueueSize",
    "metricsProvider.workerShutdownTimeoutMs",
    "standaloneEnabled",
    "reconfigEnabled",
    "quorumListenOnAllIPs",
    "electionPortBindRetry",
    "leaderServes",
    "cnxTimeout",
    "syncEnabled",
    "audit.enable",
    // An observer is one whose own `server.N` line ends in `:observer`; ZooKeeper also wants this key.
    "peerType",
    // Read-write sessions are global from the start: there is nothing to upgrade.
    "localSessionsUpgradingEnabled",
];

impl Config {
    /// This server's id: `myid`, or 1 for a standalone server without one (as ZooKeeper's standalone server
    /// is 1 in its zxids' session ids); `None` for a quorum member without `myid`, which cannot start.
    pub fn server_id(&self) -> Option<u64> {
        match (self.my_id, self.servers.len()) {
            (Some(id), _) => Some(id),
            (None, 0) => Some(1),
            (None, _) => None,
        }
    }

    /// Reads `path` and the `myid` in its `dataDir`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(&wal::fs::StdFs, path)
    }

    /// Like [`Config::load`], on the filesystem `fs` (a simulated one in tests: a `myid` that a power cut
    /// took or tore is an error naming the file, never another server's id).
    pub fn load_with(fs: &dyn FileSystem, path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(fs, path)?;
        let mut config = Config::parse(&text)?;
        config.initial_config = Some(text);
        let myid = config.data_dir.join("myid");
        match read_text(fs, &myid) {
            Ok(id) => {
                let id = id.trim();
                let parsed = id.parse::<u64>().ok().filter(|&n| (1..=254).contains(&n));
                config.my_id = Some(parsed.ok_or_else(|| ConfigError::Invalid {
                    line: 0,
                    key: "myid".into(),
                    value: id.into(),
                    reason: "a server id from 1 to 254".into(),
                })?);
            }
            Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        config.check_membership()?;
        Ok(config)
    }

    /// Parses the text of a `zoo.cfg` (without reading `myid`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut values: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                continue;
            }
            let Some(at) = trimmed.find(['=', ':']) else {
                return Err(ConfigError::Syntax { line, text: raw.to_owned() });
            };
            let (key, value) = (trimmed[..at].trim().to_owned(), trimmed[at + 1..].trim().to_owned());
            values.insert(key, (line, value));
        }
        Config::from_values(values)
    }

    fn from_values(values: BTreeMap<String, (usize, String)>) -> Result<Config, ConfigError> {
        let mut servers = BTreeMap::new();
        let mut known: BTreeMap<&str, (usize, String)> = BTreeMap::new();
        let mut prefixed: Vec<(String, usize, String)> = Vec::new();
        for (key, (line, value)) in &values {
            if let Some(id) = key.strip_prefix("server.") {
                let id = id
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| (1..=254).contains(&n))
                    .ok_or_else(|| invalid(*line, key, value, "server ids go from 1 to 254"))?;
                servers.insert(id, parse_server(*line, key, value)?);
            } else if IGNORED.contains(&key.as_str()) {
                tracing::warn!(line, key, "ZooKeeper setting ignored by Ensemble");
            } else if let Some(k) = KEYS
                .iter()
                .chain(&crate::tls::config::KEYS)
                .chain(&crate::tls::config::QUORUM_KEYS)
                .chain(&crate::sasl::config::KEYS)
                .chain(&crate::sasl::quorum::settings::KEYS)
                .find(|k| **k == key)
            {
                known.insert(k, (*line, value.clone()));
            } else if crate::sasl::config::is_prefixed_key(key) {
                prefixed.push((key.clone(), *line, value.clone()));
            } else {
                return Err(ConfigError::UnknownKey { line: *line, key: key.clone() });
            }
        }
        let get = |k: &str| known.get(k).map(|(l, v)| (*l, v.as_str()));
        let tick_ms: u64 = number(get("tickTime"), "tickTime", 2000, 1..=u64::MAX)?;
        let tick = Duration::from_millis(tick_ms);
        let data_dir = PathBuf::from(get("dataDir").ok_or(ConfigError::Missing("dataDir"))?.1);
        let min = number(get("minSessionTimeout"), "minSessionTimeout", tick_ms * 2, 1..=u64::MAX)?;
        let max = number(get("maxSessionTimeout"), "maxSessionTimeout", tick_ms * 20, 1..=u64::MAX)?;
        if min > max {
            return Err(invalid(0, "maxSessionTimeout", &max.to_string(), "below minSessionTimeout"));
        }
        let jute_max_buffer = number(get("jute.maxbuffer"), "jute.maxbuffer", 0xfffff, 1..=MAX_JUTE_BUFFER)?;
        let (tls, x509_super_user) = crate::tls::config::settings(&get)?;
        let quorum_tls = crate::tls::config::quorum_settings(&get)?;
        let sasl = crate::sasl::config::settings(&get, &prefixed)?;
        let quorum_sasl = crate::sasl::quorum::settings::settings(&get)?;
        let config = Config {
            tick,
            init_limit: number(get("initLimit"), "initLimit", 10, 1..=u32::MAX)?,
            sync_limit: number(get("syncLimit"), "syncLimit", 5, 1..=u32::MAX)?,
            data_log_dir: get("dataLogDir").map_or_else(|| data_dir.clone(), |(_, v)| PathBuf::from(v)),
            data_dir,
            client_port: get("clientPort").map(|v| number(Some(v), "clientPort", 0, 1..=u16::MAX)).transpose()?,
            client_port_address: get("clientPortAddress").map(|(_, v)| v.to_owned()),
            servers,
            snap_count: number(get("snapCount"), "snapCount", 100_000, 2..=u64::MAX)?,
            container_check_interval: Duration::from_millis(number(
                get("znode.container.checkIntervalMs"),
                "znode.container.checkIntervalMs",
                60_000,
                1..=u64::MAX,
            )?),
            container_max_never_used: Duration::from_millis(number(
                get("znode.container.maxNeverUsedIntervalMs"),
                "znode.container.maxNeverUsedIntervalMs",
                0,
                0..=u64::MAX,
            )?),
            snap_retain_count: number(
                get("autopurge.snapRetainCount"),
                "autopurge.snapRetainCount",
                3,
                3..=usize::MAX,
            )?,
            purge_interval_hours: number(get("autopurge.purgeInterval"), "autopurge.purgeInterval", 0, 0..=u32::MAX)?,
            prealloc_kib: number(get("preAllocSize"), "preAllocSize", 65536, 1..=u64::MAX)?,
            max_client_cnxns: number(get("maxClientCnxns"), "maxClientCnxns", 60, 0..=u32::MAX)?,
            min_session_timeout: Duration::from_millis(min),
            max_session_timeout: Duration::from_millis(max),
            jute_max_buffer,
            jute_max_buffer_extra: number(
                get("jute.maxbuffer.extrasize"),
                "jute.maxbuffer.extrasize",
                jute_max_buffer,
                0..=MAX_JUTE_BUFFER,
            )?,
            max_cnxns: number(get("maxCnxns"), "maxCnxns", 0, 0..=u32::MAX)?,
            global_outstanding_limit: number(
                get("globalOutstandingLimit"),
                "globalOutstandingLimit",
                1000,
                1..=u32::MAX,
            )?,
            four_letter_words: four_letter_words(get("4lw.commands.whitelist"))?,
            force_sync: yes_no(get("forceSync"), "forceSync", true)?,
            extended_types: yes_no(get("extendedTypesEnabled"), "extendedTypesEnabled", false)?,
            enforce_quota: true_false(get("enforceQuota"), "enforceQuota")?,
            super_digest: get("DigestAuthenticationProvider.superDigest").map(|(_, v)| v.to_owned()),
            read_only_mode: yes_no(get("readonlymode.enabled"), "readonlymode.enabled", false)?,
            local_sessions: yes_no(get("localSessionsEnabled"), "localSessionsEnabled", false)?,
            metrics: metrics_endpoint(get("metricsProvider.className"), get("metricsProvider.httpHost"), || {
                number(get("metricsProvider.httpPort"), "metricsProvider.httpPort", 7000, 0..=u16::MAX)
            })?,
            admin: admin_endpoint(&get)?,
            initial_config: None,
            my_id: None,
            tls,
            x509_super_user,
            quorum_tls,
            sasl,
            quorum_sasl,
        };
        if config.local_sessions {
            tracing::warn!(
                "localSessionsEnabled: only a server in read-only mode has local sessions in Ensemble; read-write \
                 sessions are all global"
            );
        }
        // As in ZooKeeper, a server may serve TLS clients only.
        let plaintext = config.client_port.is_some() || config.servers.values().any(|s| s.client.is_some());
        if !plaintext && config.tls.as_ref().and_then(|tls| tls.port).is_none() {
            return Err(ConfigError::Missing("clientPort"));
        }
        Ok(config)
    }

    /// An ensemble needs `myid`, and it must name one of the servers.
    fn check_membership(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Ok(());
        }
        let id = self.my_id.ok_or(ConfigError::Missing("myid (in dataDir)"))?;
        if !self.servers.contains_key(&id) {
            return Err(invalid(0, "myid", &id.to_string(), "no server.N line has this id"));
        }
        Ok(())
    }
}

/// Keys with a meaning in Ensemble.
const KEYS: [&str; 34] = [
    "tickTime",
    "initLimit",
    "syncLimit",
    "dataDir",
    "dataLogDir",
    "clientPort",
    "clientPortAddress",
    "snapCount",
    "autopurge.snapRetainCount",
    "autopurge.purgeInterval",
    "preAllocSize",
    "maxClientCnxns",
    "minSessionTimeout",
    "maxSessionTimeout",
    "jute.maxbuffer",
    "4lw.commands.whitelist",
    "forceSync",
    "DigestAuthenticationProvider.superDigest",
    "znode.container.checkIntervalMs",
    "extendedTypesEnabled",
    "znode.container.maxNeverUsedIntervalMs",
    "jute.maxbuffer.extrasize",
    "maxCnxns",
    "globalOutstandingLimit",
    "readonlymode.enabled",
    "localSessionsEnabled",
    "enforceQuota",
    "metricsProvider.className",
    "metricsProvider.httpHost",
    "metricsProvider.httpPort",
    "admin.enableServer",
    "admin.serverAddress",
    "admin.serverPort",
    "admin.commandURL",
];

/// The AdminServer the `admin.*` keys ask for: on unless `admin.enableServer=false`, as in ZooKeeper.
fn admin_endpoint<'a>(get: &impl Fn(&str) -> Option<(usize, &'a str)>) -> Result<Option<AdminEndpoint>, ConfigError> {
    let enabled = get("admin.enableServer");
    if enabled.is_some() && !true_false(enabled, "admin.enableServer")? {
        return Ok(None);
    }
    let host = get("admin.serverAddress").map_or("0.0.0.0", |(_, h)| h).to_owned();
    let port = number(get("admin.serverPort"), "admin.serverPort", 8080, 0..=u16::MAX)?;
    let command_url = match get("admin.commandURL") {
        None => "/commands".to_owned(),
        Some((_, url)) if url.starts_with('/') && url.len() > 1 => url.trim_end_matches('/').to_owned(),
        Some((line, url)) => return Err(invalid(line, "admin.commandURL", url, "must be a path such as /commands")),
    };
    Ok(Some(AdminEndpoint { host, port, command_url }))
}

/// The endpoint `metricsProvider.className` asks for. Another class than ZooKeeper's own is refused rather than
/// ignored: ZooKeeper refuses to start with a provider class it cannot load, and an operator who configured one
/// expects its output somewhere, so a silent start without it would hide the mistake until the dashboards are
/// empty.
fn metrics_endpoint(
    class: Option<(usize, &str)>,
    host: Option<(usize, &str)>,
    port: impl FnOnce() -> Result<u16, ConfigError>,
) -> Result<Option<MetricsEndpoint>, ConfigError> {
    match class {
        Some((_, PROMETHEUS_PROVIDER)) => {
            let host = host.map_or("0.0.0.0", |(_, h)| h).to_owned();
            Ok(Some(MetricsEndpoint { host, port: port()? }))
        }
        None => Ok(None),
        Some((_, class)) if NON_HTTP_PROVIDERS.contains(&class) => Ok(None),
        Some((line, class)) => Err(invalid(
            line,
            "metricsProvider.className",
            class,
            &format!("Ensemble provides {PROMETHEUS_PROVIDER} (and ZooKeeper's default, which exports nothing)"),
        )),
    }
}

/// The largest `jute.maxbuffer` (and extra size) accepted: 256 MiB, so that every derived limit (a txn, a WAL
/// record, a peer frame) stays far below 4 GiB.
pub const MAX_JUTE_BUFFER: usize = 256 << 20;

pub(crate) fn invalid(line: usize, key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { line, key: key.to_owned(), value: value.to_owned(), reason: reason.to_owned() }
}

fn number<T>(
    v: Option<(usize, &str)>,
    key: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some((line, text)) = v else { return Ok(default) };
    let n: T = text.parse().map_err(|_| invalid(line, key, text, "not a number"))?;
    if !range.contains(&n) {
        return Err(invalid(line, key, text, &format!("must be between {} and {}", range.start(), range.end())));
    }
    Ok(n)
}

fn yes_no(v: Option<(usize, &str)>, key: &str, default: bool) -> Result<bool, ConfigError> {
    match v {
        None => Ok(default),
        Some((_, t)) if t.eq_ignore_ascii_case("yes") || t.eq_ignore_ascii_case("true") => Ok(true),
        Some((_, t)) if t.eq_ignore_ascii_case("no") || t.eq_ignore_ascii_case("false") => Ok(false),
        Some((line, t)) => Err(invalid(line, key, t, "yes or no")),
    }
}

/// A Java boolean property, default false. ZooKeeper's `Boolean.parseBoolean` takes any other text as false
/// (`yes` too); refusing it says so instead of quietly differing.
pub(crate) fn true_false(v: Option<(usize, &str)>, key: &str) -> Result<bool, ConfigError> {
    match v {
        None => Ok(false),
        Some((_, t)) if t.eq_ignore_ascii_case("true") => Ok(true),
        Some((_, t)) if t.eq_ignore_ascii_case("false") => Ok(false),
        Some((line, t)) => Err(invalid(line, key, t, "true or false")),
    }
}

fn four_letter_words(v: Option<(usize, &str)>) -> Result<Vec<String>, ConfigError> {
    let Some((line, text)) = v else { return Ok(vec!["srvr".into()]) };
    if text.trim() == "*" {
        return Ok(FOUR_LETTER_WORDS.iter().map(|w| w.to_string()).collect());
    }
    text.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| {
            if FOUR_LETTER_WORDS.contains(&w) {
                Ok(w.to_owned())
            } else {
                Err(invalid(line, "4lw.commands.whitelist", w, "not a four-letter word"))
            }
        })
        .collect()
}

fn parse_server(line: usize, key: &str, value: &str) -> Result<ServerEntry, ConfigError> {
    let bad = |reason: &str| invalid(line, key, value, reason);
    let (peer, client) = match value.split_once(';') {
        Some((peer, client)) => (peer, Some(client)),
        None => (value, None),
    };
    let parts: Vec<&str> = peer.split(':').collect();
    if parts.len() < 3 || parts.len() > 4 {
        return Err(bad("expected host:quorumPort:electionPort[:participant|observer]"));
    }
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| bad("ports go from 1 to 65535"));
    let observer = match parts.get(3) {
        None | Some(&"participant") => false,
        Some(&"observer") => true,
        Some(_) => return Err(bad("the role is participant or observer")),
    };
    let client = client
        .map(|c| {
            let c = c.trim();
            let with_host = if c.contains(':') { c.to_owned() } else { format!("0.0.0.0:{c}") };
            with_host.parse::<SocketAddr>().map_err(|_| bad("the client address is [host:]port"))
        })
        .transpose()?;
    Ok(ServerEntry {
        host: parts[0].to_owned(),
        quorum_port: port(parts[1])?,
        election_port: port(parts[2])?,
        observer,
        client,
    })
}

/// The text of an operator's file (`zoo.cfg`, `myid`).
fn read_text(fs: &dyn FileSystem, path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io { path: path.to_path_buf(), source };
    let bytes = fs.read(path).map_err(io)?;
    String::from_utf8(bytes).map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Writes `myid` into `data_dir` durably (a temporary file, fsynced, renamed, and the directory fsynced), so
/// that a power cut leaves either no `myid` or the whole id: a torn `12` read as `1` would make this server
/// another's.
pub fn write_myid(fs: &dyn FileSystem, data_dir: &Path, id: u64) -> std::io::Result<()> {
    let (temporary, myid) = (data_dir.join("myid.tmp"), data_dir.join("myid"));
    let file = fs.create(&temporary)?;
    file.write_at(format!("{id}\n").as_bytes(), 0)?;
    file.sync_all()?;
    drop(file);
    fs.rename(&temporary, &myid)?;
    fs.sync_dir(data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zookeeper_config_works_with_defaults() {
        let text = "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir=/tmp/zk\nclientPort=2181\n# comment\n\nadmin.enableServer=false\n";
        let c = Config::parse(text).unwrap();
        assert_eq!((c.tick, c.init_limit, c.sync_limit), (Duration::from_millis(2000), 10, 5));
        assert_eq!((c.data_dir.clone(), c.data_log_dir.clone()), (PathBuf::from("/tmp/zk"), PathBuf::from("/tmp/zk")));
        assert_eq!(c.client_port, Some(2181));
        assert_eq!((c.min_session_timeout, c.max_session_timeout), (Duration::from_secs(4), Duration::from_secs(40)));
        assert_eq!(
            (c.snap_count, c.snap_retain_count, c.jute_max_buffer, c.max_client_cnxns),
            (100_000, 3, 0xfffff, 60)
        );
        assert_eq!(c.four_letter_words, vec!["srvr"]);
        assert!(c.force_sync);
        assert!(!c.extended_types, "TTL nodes are off by default, as in ZooKeeper");
        let on = Config::parse(&format!("{text}extendedTypesEnabled=true\n")).unwrap();
        assert!(on.extended_types);
        assert!(!c.enforce_quota, "quotas are not enforced by default, as in ZooKeeper");
        assert!(Config::parse(&format!("{text}enforceQuota=true\n")).unwrap().enforce_quota);
        assert!(!Config::parse(&format!("{text}enforceQuota=False\n")).unwrap().enforce_quota);
        let err = Config::parse(&format!("{text}enforceQuota=yes\n")).unwrap_err().to_string();
        assert!(err.contains("enforceQuota") && err.contains("true or false"), "{err}");
    }

    #[test]
    fn the_config_that_zk_ensemble_writes_parses() {
        // ../shared/tools/zk-ensemble's zoo.cfg for Apache ZooKeeper 3.8, as written.
        let text = "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir=/tmp/zkgold/zk1/data\nclientPort=22181\n\
                    clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nforceSync=yes\n4lw.commands.whitelist=*\n\
                    admin.enableServer=false\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(
            (c.client_port, c.client_port_address.as_deref(), c.max_client_cnxns),
            (Some(22181), Some("127.0.0.1"), 0)
        );
        assert!(c.four_letter_words.contains(&"mntr".to_string()));
    }

    #[test]
    fn server_lines_parse_in_every_zookeeper_form() {
        let text = "dataDir=/d\nserver.1=a:2888:3888\nserver.2=b:2889:3889:participant;2182\nserver.3=c:2890:3890:observer;127.0.0.1:2183\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.servers.len(), 3);
        assert_eq!(
            c.servers[&1],
            ServerEntry { host: "a".into(), quorum_port: 2888, election_port: 3888, observer: false, client: None }
        );
        assert_eq!(c.servers[&2].client, Some("0.0.0.0:2182".parse().unwrap()));
        assert!(c.servers[&3].observer);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let cases = [
            ("dataDir=/d\nclientPort=1\ntickTim=2000\n", "line 3: unknown key \"tickTim\""),
            ("dataDir=/d\nclientPort=99999\n", "clientPort"),
            ("dataDir=/d\nclientPort=1\nforceSync=maybe\n", "forceSync"),
            ("dataDir=/d\nclientPort=1\nserver.1=a:2888\n", "server.1"),
            ("dataDir=/d\nclientPort=1\nserver.0=a:2888:3888\n", "server.0"),
            ("dataDir=/d\nclientPort=1\n4lw.commands.whitelist=ruok, boom\n", "4lw.commands.whitelist"),
            ("dataDir=/d\nclientPort=1\nminSessionTimeout=5000\nmaxSessionTimeout=4000\n", "maxSessionTimeout"),
            ("clientPort=1\n", "dataDir"),
            ("dataDir=/d\n", "clientPort"),
            ("dataDir=/d\nclientPort=1\njust some text\n", "line 3"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    /// A power cut at every IO step of writing `myid` (each resolved by several seeds): the server then reads
    /// its whole id, or finds none and refuses to start naming `myid`; never a torn id (`12` read as `1` would
    /// make it server 1).
    #[test]
    fn a_power_cut_while_myid_is_written_leaves_the_whole_id_or_none() {
        use wal::fs::SimFs;
        let (dir, data, cfg) = (Path::new("/srv"), Path::new("/srv/data"), Path::new("/srv/zoo.cfg"));
        let members: String = (1..=12).map(|n| format!("server.{n}=h{n}:1:2\n")).collect();
        let text = format!("dataDir=/srv/data\nclientPort=2181\n{members}");
        let disk = || {
            let fs = SimFs::new();
            fs.create_dir_all(data).unwrap();
            let file = fs.create(cfg).unwrap();
            file.write_at(text.as_bytes(), 0).unwrap();
            file.sync_all().unwrap();
            fs.sync_dir(dir).unwrap();
            fs.sync_dir(Path::new("/")).unwrap();
            fs
        };
        let clean = disk();
        let before = clean.steps();
        write_myid(&clean, data, 12).unwrap();
        let steps = clean.steps() - before;
        assert!(steps >= 4, "create, write, fsync, rename, directory fsync: {steps} steps");
        assert_eq!(Config::load_with(&clean.crash_now(0), cfg).unwrap().my_id, Some(12), "durable once written");
        let (mut whole, mut none) = (0, 0);
        for step in 1..=steps {
            for seed in 0..16 {
                let fs = disk();
                fs.crash_after(fs.steps() + step, seed);
                let written = write_myid(&fs, data, 12);
                assert!(written.is_err() || step == steps, "only the cut fails the write");
                let after = fs.crashed().expect("the power was cut");
                match Config::load_with(&after, cfg) {
                    Ok(config) => {
                        assert_eq!(config.my_id, Some(12), "step {step} seed {seed}: another server's id");
                        whole += 1;
                    }
                    Err(e) => {
                        assert!(written.is_err(), "step {step} seed {seed}: a write that returned Ok was lost: {e}");
                        assert!(e.to_string().contains("myid"), "step {step} seed {seed}: {e}");
                        none += 1;
                    }
                }
            }
        }
        assert!(whole > 0 && none > 0, "both outcomes happen: {whole} whole, {none} none");
    }

    #[test]
    fn myid_must_name_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("zoo.cfg");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(&cfg, format!("dataDir={}\nclientPort=2181\nserver.1=a:1:2\nserver.2=b:3:4\n", data.display()))
            .unwrap();
        assert!(Config::load(&cfg).unwrap_err().to_string().contains("myid"));
        std::fs::write(data.join("myid"), "7\n").unwrap();
        assert!(Config::load(&cfg).unwrap_err().to_string().contains("no server.N line"));
        std::fs::write(data.join("myid"), "2\n").unwrap();
        assert_eq!(Config::load(&cfg).unwrap().my_id, Some(2));
        std::fs::write(data.join("myid"), "x\n").unwrap();
        assert!(Config::load(&cfg).unwrap_err().to_string().contains("myid"));
    }

    #[test]
    fn read_only_mode_and_local_sessions_are_keys_off_by_default() {
        let c = Config::parse("dataDir=/d\nclientPort=1\n").unwrap();
        assert!(!c.read_only_mode && !c.local_sessions);
        let text = "dataDir=/d\nclientPort=1\nreadonlymode.enabled=true\nlocalSessionsEnabled=true\n\
                    localSessionsUpgradingEnabled=true\n";
        let c = Config::parse(text).unwrap();
        assert!(c.read_only_mode && c.local_sessions);
        let err = Config::parse("dataDir=/d\nclientPort=1\nreadonlymode.enabled=perhaps\n").unwrap_err();
        assert!(err.to_string().contains("readonlymode.enabled"), "{err}");
    }

    #[test]
    fn the_whitelist_accepts_all_or_a_list() {
        let c = Config::parse("dataDir=/d\nclientPort=1\n4lw.commands.whitelist=*\n").unwrap();
        assert_eq!(c.four_letter_words.len(), FOUR_LETTER_WORDS.len());
        let c = Config::parse("dataDir=/d\nclientPort=1\n4lw.commands.whitelist=ruok, mntr\n").unwrap();
        assert_eq!(c.four_letter_words, vec!["ruok", "mntr"]);
    }

    #[test]
    fn the_prometheus_provider_turns_the_endpoint_on_with_zookeepers_defaults() {
        let base = "dataDir=/d\nclientPort=1\n";
        assert_eq!(Config::parse(base).unwrap().metrics, None);
        let on = format!("{base}metricsProvider.className={PROMETHEUS_PROVIDER}\n");
        let endpoint = Config::parse(&on).unwrap().metrics;
        assert_eq!(endpoint, Some(MetricsEndpoint { host: "0.0.0.0".into(), port: 7000 }));
        let set = format!("{on}metricsProvider.httpHost=127.0.0.1\nmetricsProvider.httpPort=7001\n");
        let set = format!("{set}metricsProvider.exportJvmInfo=false\n");
        let endpoint = Config::parse(&set).unwrap().metrics;
        assert_eq!(endpoint, Some(MetricsEndpoint { host: "127.0.0.1".into(), port: 7001 }));
        let bad_port = Config::parse(&format!("{on}metricsProvider.httpPort=70000\n")).unwrap_err().to_string();
        assert!(bad_port.contains("metricsProvider.httpPort"), "{bad_port}");
        // ZooKeeper's default provider exports nothing over HTTP; any other class is refused, naming the key.
        let default =
            format!("{base}metricsProvider.className=org.apache.zookeeper.metrics.impl.DefaultMetricsProvider\n");
        assert_eq!(Config::parse(&default).unwrap().metrics, None);
        let other = Config::parse(&format!("{base}metricsProvider.className=com.example.Mine\n")).unwrap_err();
        assert!(other.to_string().contains("line 3") && other.to_string().contains("com.example.Mine"), "{other}");
    }

    #[test]
    fn the_admin_server_is_on_by_default_on_8080_as_in_zookeeper() {
        let base = "dataDir=/d\nclientPort=1\n";
        let default = AdminEndpoint { host: "0.0.0.0".into(), port: 8080, command_url: "/commands".into() };
        assert_eq!(Config::parse(base).unwrap().admin, Some(default));
        assert_eq!(Config::parse(&format!("{base}admin.enableServer=false\n")).unwrap().admin, None);
        let set = format!("{base}admin.serverAddress=127.0.0.1\nadmin.serverPort=9090\nadmin.commandURL=/cmds/\n");
        let set = Config::parse(&set).unwrap().admin;
        assert_eq!(set, Some(AdminEndpoint { host: "127.0.0.1".into(), port: 9090, command_url: "/cmds".into() }));
        let bad = Config::parse(&format!("{base}admin.enableServer=maybe\n")).unwrap_err().to_string();
        assert!(bad.contains("admin.enableServer"), "{bad}");
        let bad = Config::parse(&format!("{base}admin.commandURL=cmds\n")).unwrap_err().to_string();
        assert!(bad.contains("admin.commandURL"), "{bad}");
    }
}
