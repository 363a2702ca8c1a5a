//! Quorum SASL: ZooKeeper's `quorum.auth.*` keys, DIGEST-MD5 between servers with credentials from the JAAS
//! file (`java.security.auth.login.config`), as a [`replication::security::PeerSecurity`] wrapped around the
//! quorum's TLS or plain TCP ([`security::QuorumSasl`]): TLS (if on) first, then SASL over it, then the
//! transport's id handshake, all within the transport's handshake timeout and its bound on handshakes.
//!
//! The `QuorumServer` section (`quorum.auth.server.saslLoginContext`) lists who may dial in:
//! `user_<name>="<password>"`. The `QuorumLearner` section (`quorum.auth.learner.saslLoginContext`) holds what
//! this server presents when it dials: `username` and `password`. With `quorum.auth.enableSasl=true` both must be
//! there (ZooKeeper fails to start without them too); Kerberos modules stop the server.
//!
//! The flags, as ZooKeeper's `SaslQuorumAuthLearner` and `SaslQuorumAuthServer` apply them:
//!
//! | flag | dialing (learner) | accepting (server) |
//! |---|---|---|
//! | `enableSasl` only | sends no SASL | a dialer that sends none is let in; one that fails is told `Error` and let in |
//! | `+ learnerRequireSasl` | authenticates; a refusal or a listener that cannot prove the password drops the link | as above |
//! | `+ serverRequireSasl` | as above | a dialer that sends no SASL, or fails, is refused |
//!
//! A dialer let in without SASL proves nothing ([`replication::security::PeerIdentity::Unproven`]); one that
//! authenticated is `PeerIdentity::Sasl { user, .. }`. Any user of the `QuorumServer` section may be any server
//! id, as in ZooKeeper (whose host check applies to Kerberos principals only; an authorization id, if a dialer
//! sends one, must be its user name, as ZooKeeper's `SaslQuorumServerCallbackHandler` requires).
//!
//! [`frame`] owns the exchange's frames (Ensemble's own, shaped on ZooKeeper's `QuorumAuthPacket`); [`exchange`]
//! runs the two sides over a stream; [`security`] is the transport's seam; [`settings`] reads the keys.

pub mod exchange;
pub mod frame;
pub mod security;
pub mod settings;

use std::collections::HashMap;
use std::path::PathBuf;

use self::settings::QuorumSaslSettings;
use super::jaas::Jaas;
use super::{check_module, digest_users, SaslError};

/// The SASL protocol name of ZooKeeper's quorum SASL.
pub const PROTOCOL: &str = "zookeeper-quorum";
/// The server name (and DIGEST-MD5 realm) of ZooKeeper's quorum SASL.
pub const SERVER_NAME: &str = "zk-quorum-sasl-md5";

/// The credentials of quorum SASL, from the JAAS file.
#[derive(Clone)]
pub struct Credentials {
    /// Who may dial in, and their passwords (the `QuorumServer` section).
    users: HashMap<String, String>,
    /// What this server presents when it dials (the `QuorumLearner` section's `username`, `password`).
    learner: (String, String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("users", &self.users.len()).field("learner", &self.learner.0).finish()
    }
}

impl Credentials {
    /// Reads both sections the settings name from the JAAS file `jaas` (the `java.security.auth.login.config`
    /// line and path).
    pub fn load(settings: &QuorumSaslSettings, jaas: Option<&(usize, PathBuf)>) -> Result<Credentials, SaslError> {
        let Some((_, path)) = jaas else {
            return Err(SaslError::Quorum { what: "no JAAS file (java.security.auth.login.config) is given".into() });
        };
        let jaas = Jaas::load(path)?;
        let missing = |key: &str, name: &str| SaslError::Quorum {
            what: format!("JAAS file {}: no section named {name:?} ({key})", path.display()),
        };
        let server = jaas
            .section(&settings.server_context)
            .ok_or_else(|| missing("quorum.auth.server.saslLoginContext", &settings.server_context))?;
        let users = digest_users(path, server)?;
        if users.is_empty() {
            tracing::warn!(path = %path.display(), section = server.name, "no user_ entries: no peer can authenticate");
        }
        let learner = jaas
            .section(&settings.learner_context)
            .ok_or_else(|| missing("quorum.auth.learner.saslLoginContext", &settings.learner_context))?;
        let (mut username, mut password) = (None, None);
        for entry in &learner.entries {
            check_module(path, entry)?;
            for (key, value) in &entry.options {
                match key.as_str() {
                    "username" => username = Some(value.clone()),
                    "password" => password = Some(value.clone()),
                    _ => {}
                }
            }
        }
        let (Some(username), Some(password)) = (username, password) else {
            let what = format!("JAAS file {}: section {:?} needs username and password", path.display(), learner.name);
            return Err(SaslError::Quorum { what });
        };
        Ok(Credentials { users, learner: (username, password) })
    }

    /// `user`'s password, if the `QuorumServer` section lists the user.
    pub fn password(&self, user: &str) -> Option<String> {
        self.users.get(user).cloned()
    }

    /// The user name and password this server presents when it dials.
    pub fn learner(&self) -> (&str, &str) {
        (&self.learner.0, &self.learner.1)
    }

    /// Credentials made in code (tests).
    #[cfg(test)]
    pub(crate) fn new(users: &[(&str, &str)], learner: (&str, &str)) -> Credentials {
        let users = users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        Credentials { users, learner: (learner.0.into(), learner.1.into()) }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const JAAS: &str = "QuorumServer {\n org.apache.zookeeper.server.auth.DigestLoginModule required\n \
                        user_learner=\"secret\";\n};\nQuorumLearner {\n \
                        org.apache.zookeeper.server.auth.DigestLoginModule required\n username=\"learner\"\n \
                        password=\"secret\";\n};\n";

    fn load(text: &str, settings: &QuorumSaslSettings) -> Result<Credentials, SaslError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        Credentials::load(settings, Some(&(1, file.path().to_owned())))
    }

    fn settings() -> QuorumSaslSettings {
        QuorumSaslSettings {
            learner_require: true,
            server_require: true,
            learner_context: "QuorumLearner".into(),
            server_context: "QuorumServer".into(),
        }
    }

    #[test]
    fn both_sections_are_read_and_needed() {
        let credentials = load(JAAS, &settings()).unwrap();
        assert_eq!(credentials.password("learner").as_deref(), Some("secret"));
        assert_eq!(credentials.password("eve"), None);
        assert_eq!(credentials.learner(), ("learner", "secret"));
        let renamed = QuorumSaslSettings { learner_context: "Elsewhere".into(), ..settings() };
        let e = load(JAAS, &renamed).unwrap_err().to_string();
        assert!(e.contains("\"Elsewhere\"") && e.contains("quorum.auth.learner.saslLoginContext"), "{e}");
        assert!(Credentials::load(&settings(), None).unwrap_err().to_string().contains("java.security.auth"));
        let no_password = JAAS.replace(" password=\"secret\"", "");
        assert!(load(&no_password, &settings()).unwrap_err().to_string().contains("needs username and password"));
    }

    #[test]
    fn kerberos_stops_the_server() {
        let krb = JAAS.replace(
            "QuorumLearner {\n org.apache.zookeeper.server.auth.DigestLoginModule",
            "QuorumLearner {\n com.sun.security.auth.module.Krb5LoginModule",
        );
        let e = load(&krb, &settings()).unwrap_err().to_string();
        assert!(e.contains("Kerberos") && e.contains("line 6"), "{e}");
    }
}
