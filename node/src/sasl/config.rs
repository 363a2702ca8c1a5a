//! The zoo.cfg keys of client SASL and of enforced authentication, read into [`SaslSettings`] with ZooKeeper
//! 3.8's defaults. The JAAS file itself is read when the server starts ([`super::Sasl::load`]).
//!
//! In ZooKeeper these are Java system properties; those named `zookeeper.<key>` are also set by a zoo.cfg line
//! `<key>=...` (QuorumPeerConfig turns unknown keys into `zookeeper.`-prefixed properties), and Ensemble takes
//! them under that zoo.cfg name: `superUser`, `sasl.serverconfig`, `enforce.auth.enabled`, ... The JAAS file's
//! property, `java.security.auth.login.config`, has no such prefix and is taken under its own name.

use std::path::PathBuf;

use crate::config::{invalid, true_false, ConfigError};

/// ZooKeeper's SASL provider class (`authProvider.N=`).
pub const SASL_PROVIDER: &str = "org.apache.zookeeper.server.auth.SASLAuthenticationProvider";

/// The provider classes an `authProvider.N` line may name: ZooKeeper's own. Ensemble has all of them built in,
/// so the lines change nothing; a custom class is refused (it cannot be loaded here).
const PROVIDERS: [&str; 4] = [
    SASL_PROVIDER,
    "org.apache.zookeeper.server.auth.DigestAuthenticationProvider",
    "org.apache.zookeeper.server.auth.IPAuthenticationProvider",
    crate::tls::config::X509_PROVIDER,
];

/// The schemes `enforce.auth.schemes` may name: the providers Ensemble has.
const SCHEMES: [&str; 4] = ["ip", "digest", "sasl", "x509"];

/// The keys this module reads (besides `authProvider.*` and `superUser.*`, see [`is_prefixed_key`]).
pub const KEYS: [&str; 8] = [
    "java.security.auth.login.config",
    "sasl.serverconfig",
    "superUser",
    "SASLAuthenticationProvider.superPassword",
    "enforce.auth.enabled",
    "enforce.auth.schemes",
    "sessionRequireClientSASLAuth",
    "allowSaslFailedClients",
];

/// Whether `key` is one of the families this module reads: `authProvider.<anything>` and
/// `superUser.<anything>` (ZooKeeper takes every `zookeeper.superUser.*` property as a SASL super user).
pub fn is_prefixed_key(key: &str) -> bool {
    key.strip_prefix("authProvider.").is_some_and(|rest| !rest.is_empty())
        || key.strip_prefix("superUser.").is_some_and(|rest| !rest.is_empty())
}

/// Client SASL and authentication enforcement as zoo.cfg configures them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaslSettings {
    /// `java.security.auth.login.config`: the JAAS file and its zoo.cfg line.
    pub jaas: Option<(usize, PathBuf)>,
    /// `sasl.serverconfig` (`zookeeper.sasl.serverconfig`): the JAAS section with the users, default `Server`;
    /// `Some` only when given (a missing section is then an error, as in ZooKeeper).
    pub section: Option<(usize, String)>,
    /// `superUser` and `superUser.*` (`zookeeper.superUser*`): SASL names that are also `super`.
    pub super_users: Vec<String>,
    /// `SASLAuthenticationProvider.superPassword`: the password of the JAAS user `super`, overriding the file's.
    pub super_password: Option<String>,
    /// The schemes a session must have authenticated with before anything but `auth` and `sasl` packets
    /// (`enforce.auth.enabled` with `enforce.auth.schemes`, or `sessionRequireClientSASLAuth`); `None`: off.
    pub enforce: Option<Vec<String>>,
    /// `allowSaslFailedClients`: a client whose SASL failed keeps its connection (unless SASL is enforced).
    pub allow_failed_clients: bool,
}

impl SaslSettings {
    /// Whether SASL is among the enforced schemes (ZooKeeper's `isSaslAuthRequired`): a failed SASL exchange
    /// then answers SESSIONCLOSEDREQUIRESASLAUTH and is never let through.
    pub fn sasl_required(&self) -> bool {
        self.enforce.as_ref().is_some_and(|schemes| schemes.iter().any(|s| s == "sasl"))
    }

    /// The JAAS section to read.
    pub fn section_name(&self) -> &str {
        self.section.as_ref().map_or("Server", |(_, name)| name)
    }
}

type Get<'a> = dyn Fn(&str) -> Option<(usize, &'a str)> + 'a;

/// The settings from the keys, `prefixed` holding the `authProvider.*` and `superUser.*` lines as
/// `(key, line, value)`.
pub fn settings(get: &Get<'_>, prefixed: &[(String, usize, String)]) -> Result<SaslSettings, ConfigError> {
    let mut super_users: Vec<String> = get("superUser").map(|(_, v)| v.to_owned()).into_iter().collect();
    for (key, line, value) in prefixed {
        if key.starts_with("authProvider.") {
            if !PROVIDERS.contains(&value.as_str()) {
                return Err(invalid(*line, key, value, "one of ZooKeeper's providers (SASL, digest, ip, x509)"));
            }
        } else {
            super_users.push(value.clone());
        }
    }
    let jaas = get("java.security.auth.login.config").map(|(line, v)| (line, PathBuf::from(v)));
    let section = get("sasl.serverconfig").map(|(line, v)| (line, v.to_owned()));
    Ok(SaslSettings {
        jaas,
        section,
        super_users,
        super_password: get("SASLAuthenticationProvider.superPassword").map(|(_, v)| v.to_owned()),
        enforce: enforce(get)?,
        allow_failed_clients: true_false(get("allowSaslFailedClients"), "allowSaslFailedClients")?,
    })
}

/// ZooKeeper's `AuthenticationHelper`: `sessionRequireClientSASLAuth=true` enforces `sasl` whatever the
/// `enforce.auth.*` keys say; otherwise `enforce.auth.enabled=true` enforces the comma-separated
/// `enforce.auth.schemes`, which must be given and name known schemes (ZooKeeper refuses to start otherwise).
fn enforce(get: &Get<'_>) -> Result<Option<Vec<String>>, ConfigError> {
    if true_false(get("sessionRequireClientSASLAuth"), "sessionRequireClientSASLAuth")? {
        return Ok(Some(vec!["sasl".to_owned()]));
    }
    if !true_false(get("enforce.auth.enabled"), "enforce.auth.enabled")? {
        return Ok(None);
    }
    let Some((line, text)) = get("enforce.auth.schemes") else {
        return Err(invalid(0, "enforce.auth.schemes", "", "must be configured when enforce.auth.enabled is true"));
    };
    let schemes: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
    if let Some(unknown) = schemes.iter().find(|s| !SCHEMES.contains(&s.as_str())) {
        let reason = format!("authentication scheme {unknown:?} is not available (ip, digest, sasl, x509)");
        return Err(invalid(line, "enforce.auth.schemes", text, &reason));
    }
    Ok(Some(schemes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)], prefixed: &[(&str, &str)]) -> Result<SaslSettings, ConfigError> {
        let get = |k: &str| pairs.iter().position(|(key, _)| *key == k).map(|i| (i + 1, pairs[i].1));
        let prefixed: Vec<_> = prefixed.iter().map(|(k, v)| (k.to_string(), 9, v.to_string())).collect();
        settings(&get, &prefixed)
    }

    #[test]
    fn defaults_are_zookeepers() {
        let s = parse(&[], &[]).unwrap();
        assert_eq!(s, SaslSettings::default());
        assert_eq!(s.section_name(), "Server");
        assert!(!s.sasl_required());
    }

    #[test]
    fn enforcement_follows_authentication_helper() {
        let s = parse(&[("enforce.auth.enabled", "true"), ("enforce.auth.schemes", "digest, sasl")], &[]).unwrap();
        assert_eq!(s.enforce, Some(vec!["digest".to_owned(), "sasl".to_owned()]));
        assert!(s.sasl_required());
        let s = parse(&[("enforce.auth.enabled", "false"), ("enforce.auth.schemes", "sasl")], &[]).unwrap();
        assert_eq!(s.enforce, None);
        // sessionRequireClientSASLAuth wins over the enforce.auth keys.
        let s = parse(&[("sessionRequireClientSASLAuth", "true"), ("enforce.auth.schemes", "digest")], &[]).unwrap();
        assert_eq!(s.enforce, Some(vec!["sasl".to_owned()]));
        assert!(parse(&[("enforce.auth.enabled", "true")], &[]).is_err(), "schemes must be given");
        let e = parse(&[("enforce.auth.enabled", "true"), ("enforce.auth.schemes", "sasl,kerberos")], &[]);
        assert!(e.unwrap_err().to_string().contains("\"kerberos\" is not available"));
    }

    #[test]
    fn providers_and_super_users() {
        let s = parse(&[("superUser", "admin")], &[("authProvider.1", SASL_PROVIDER), ("superUser.ops", "root")]);
        assert_eq!(s.unwrap().super_users, vec!["admin".to_owned(), "root".to_owned()]);
        let e = parse(&[], &[("authProvider.2", "com.example.MyProvider")]).unwrap_err();
        assert!(e.to_string().contains("line 9"), "{e}");
        assert!(is_prefixed_key("authProvider.1") && is_prefixed_key("superUser.x"));
        assert!(!is_prefixed_key("authProvider.") && !is_prefixed_key("superUserX"));
    }
}
