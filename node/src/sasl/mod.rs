//! Client SASL, as ZooKeeper 3.8 serves it: DIGEST-MD5 against the users of a JAAS section, a session that
//! completes it gets the identity `sasl:<user>` (and `super` for a `superUser`), and authentication can be
//! enforced before a session may do anything else.
//!
//! - [`digest_md5`] owns the DIGEST-MD5 exchange (RFC 2831), parameterized by protocol and server name so that
//!   quorum SASL (`QuorumServer`/`QuorumLearner` sections, protocol `zookeeper-quorum`) can reuse it.
//! - [`jaas`] reads JAAS files; [`config`] the zoo.cfg keys.
//! - [`quorum`] is quorum SASL between servers (`quorum.auth.*`), over the same DIGEST-MD5 and JAAS reader.
//! - [`Sasl`] is what the server holds at run time; the connection ([`crate::conn`]) runs one exchange per
//!   connection and applies [`Sasl::refuses`] to every packet but `auth` and `sasl`.
//!
//! Kerberos (GSSAPI) is not supported. ZooKeeper's server, when its JAAS section holds no Kerberos principal,
//! runs DIGEST-MD5 whatever the client asked for; so does Ensemble: a GSSAPI client's first token is answered
//! with a DIGEST-MD5 challenge, which that client then gives up on. A JAAS section naming another login module
//! than ZooKeeper's `DigestLoginModule` (Kerberos's `Krb5LoginModule`, say) is refused at start.

pub mod config;
pub mod digest_md5;
pub mod jaas;
pub mod quorum;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tree::acl::Id;
use tree::code::Code;

use self::config::SaslSettings;
use self::digest_md5::{DigestMd5Server, Step};
use self::jaas::{Entry, Jaas, JaasError, Section};

/// The SASL protocol name of ZooKeeper's client port.
pub const PROTOCOL: &str = "zookeeper";
/// The server name (and DIGEST-MD5 realm) ZooKeeper's client port uses with DIGEST-MD5.
pub const SERVER_NAME: &str = "zk-sasl-md5";
/// ZooKeeper's login module for DIGEST-MD5 users (`user_<name>="<password>"` options).
pub const DIGEST_LOGIN_MODULE: &str = "org.apache.zookeeper.server.auth.DigestLoginModule";
/// The option prefix of a user in a `DigestLoginModule` entry.
const USER_PREFIX: &str = "user_";

/// A SASL configuration the server cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    /// The JAAS file cannot be read or parsed.
    #[error(transparent)]
    Jaas(#[from] JaasError),
    /// `sasl.serverconfig` names a section the file lacks.
    #[error("JAAS file {path}: no section named {section:?}, which sasl.serverconfig names (zoo.cfg line {line})")]
    MissingSection {
        /// The file.
        path: PathBuf,
        /// The section.
        section: String,
        /// The zoo.cfg line of `sasl.serverconfig`.
        line: usize,
    },
    /// A login module Ensemble does not have.
    #[error("JAAS file {path}, line {line}: login module {module} is not supported ({why})")]
    Module {
        /// The file.
        path: PathBuf,
        /// The entry's line.
        line: usize,
        /// The module.
        module: String,
        /// What is supported instead.
        why: &'static str,
    },
    /// Quorum SASL is enabled but the JAAS file lacks a section it needs, or has none.
    #[error("quorum.auth.enableSasl=true: {what}")]
    Quorum {
        /// What is missing.
        what: String,
    },
    /// A user name ZooKeeper would read as a Kerberos principal.
    #[error(
        "JAAS file {path}, line {line}: user name {user:?} holds '@', which makes it a Kerberos name (unsupported)"
    )]
    KerberosName {
        /// The file.
        path: PathBuf,
        /// The entry's line.
        line: usize,
        /// The name.
        user: String,
    },
}

/// Client SASL at run time: the users, and the settings.
#[derive(Debug, Default)]
pub struct Sasl {
    /// The DIGEST-MD5 users and their passwords; `None` when no JAAS section configures SASL.
    users: Option<HashMap<String, String>>,
    settings: SaslSettings,
}

impl Sasl {
    /// Reads the JAAS file the settings name. Without one, or when it has no section named as the settings
    /// say and `sasl.serverconfig` was not given, SASL is off (as in ZooKeeper, which then logs nothing).
    pub fn load(settings: &SaslSettings) -> Result<Sasl, SaslError> {
        let mut sasl = Sasl { users: None, settings: settings.clone() };
        let Some((_, path)) = &settings.jaas else { return Ok(sasl) };
        let jaas = Jaas::load(path)?;
        let Some(section) = jaas.section(settings.section_name()) else {
            if let Some((line, section)) = &settings.section {
                return Err(SaslError::MissingSection { path: path.clone(), section: section.clone(), line: *line });
            }
            tracing::warn!(path = %path.display(), "the JAAS file has no Server section: client SASL is off");
            return Ok(sasl);
        };
        let users = digest_users(path, section)?;
        if users.is_empty() {
            tracing::warn!(path = %path.display(), section = section.name, "the JAAS section has no user_ entries");
        }
        tracing::info!(users = users.len(), section = section.name, "client SASL (DIGEST-MD5) on");
        sasl.users = Some(users);
        Ok(sasl)
    }

    /// A server side for one connection's exchange, `None` when SASL is off.
    pub fn exchange(&self) -> Option<DigestMd5Server> {
        self.users.as_ref().map(|_| DigestMd5Server::new(PROTOCOL, SERVER_NAME))
    }

    /// `user`'s password (ZooKeeper's `SaslServerCallbackHandler`: the user `super`, if listed, takes
    /// `SASLAuthenticationProvider.superPassword` when that is set).
    pub fn password(&self, user: &str) -> Option<String> {
        let password = self.users.as_ref()?.get(user)?;
        match (&self.settings.super_password, user) {
            (Some(super_password), "super") => Some(super_password.clone()),
            _ => Some(password.clone()),
        }
    }

    /// The identities a session gets once `user` authenticated: `sasl:<user>`, and `super` when the name is a
    /// `superUser` (ZooKeeper's `isSaslSuperUser`). The name is ZooKeeper's authorized id: the user name as the
    /// client sent it (its Kerberos short name, which is itself for a name without '@').
    pub fn identities(&self, user: &str) -> Vec<Id> {
        let mut ids = vec![Id::new("sasl", user)];
        if !user.is_empty() && self.settings.super_users.iter().any(|s| s == user) {
            ids.push(Id::new("super", ""));
        }
        ids
    }

    /// Whether a packet (other than `auth` and `sasl`) from a session with identities `auth` is refused
    /// because authentication is enforced and none of them is of an enforced scheme (ZooKeeper's
    /// `AuthenticationHelper.enforceAuthentication`: SESSIONCLOSEDREQUIRESASLAUTH, connection closed).
    pub fn refuses(&self, auth: &[Id]) -> bool {
        match &self.settings.enforce {
            Some(schemes) => !auth.iter().any(|id| schemes.contains(&id.scheme)),
            None => false,
        }
    }

    /// What a connection answers to a `sasl` packet carrying `token` (ZooKeeper's `processSasl`). `exchange` is
    /// the connection's DIGEST-MD5 state, made on its first packet; one per connection, so a second exchange on
    /// a connection fails, as ZooKeeper's one `SaslServer` per connection does.
    pub fn answer(&self, exchange: &mut Option<DigestMd5Server>, token: &[u8]) -> Answer {
        if exchange.is_none() {
            *exchange = self.exchange();
        }
        let Some(server) = exchange.as_mut() else {
            // ZooKeeper without a SASL server logs an error and answers OK with no token.
            tracing::warn!("a client sent a SASL token, but client SASL is not configured (no JAAS Server section)");
            return Answer { code: Code::Ok, token: None, ids: Vec::new(), close: false };
        };
        match server.evaluate(token, |user| self.password(user)) {
            Ok(Step::Challenge(challenge)) => {
                Answer { code: Code::Ok, token: Some(challenge), ids: Vec::new(), close: false }
            }
            Ok(Step::Complete { user, rspauth, .. }) => {
                tracing::info!(user, "SASL authenticated");
                Answer { code: Code::Ok, token: Some(rspauth), ids: self.identities(&user), close: false }
            }
            Err(error) => self.failed(&error),
        }
    }

    /// A failed exchange: the connection stays with `allowSaslFailedClients` (unless SASL is enforced) and is
    /// answered OK with no token; otherwise AUTHFAILED, or SESSIONCLOSEDREQUIRESASLAUTH when SASL is enforced,
    /// and the connection closes (the session stays until it expires, as in ZooKeeper).
    pub fn failed(&self, error: &dyn std::fmt::Display) -> Answer {
        tracing::warn!(%error, "client failed to SASL authenticate");
        let settings = &self.settings;
        if settings.allow_failed_clients && !settings.sasl_required() {
            return Answer { code: Code::Ok, token: None, ids: Vec::new(), close: false };
        }
        let code = if settings.sasl_required() { Code::SessionClosedRequireSaslAuth } else { Code::AuthFailed };
        Answer { code, token: None, ids: Vec::new(), close: true }
    }

    /// The settings.
    pub fn settings(&self) -> &SaslSettings {
        &self.settings
    }
}

/// Refuses an entry whose login module Ensemble does not have: only ZooKeeper's `DigestLoginModule`.
pub(crate) fn check_module(path: &Path, entry: &Entry) -> Result<(), SaslError> {
    if entry.module == DIGEST_LOGIN_MODULE {
        return Ok(());
    }
    let why = if entry.module.contains("Krb5") {
        "Kerberos (GSSAPI) is out of Ensemble's scope"
    } else {
        "only org.apache.zookeeper.server.auth.DigestLoginModule"
    };
    Err(SaslError::Module { path: path.to_owned(), line: entry.line, module: entry.module.clone(), why })
}

/// The DIGEST-MD5 users of a section (its `user_<name>="<password>"` options) and their passwords.
pub(crate) fn digest_users(path: &Path, section: &Section) -> Result<HashMap<String, String>, SaslError> {
    let mut users = HashMap::new();
    for entry in &section.entries {
        check_module(path, entry)?;
        for (key, password) in &entry.options {
            let Some(user) = key.strip_prefix(USER_PREFIX) else { continue };
            if user.contains('@') {
                return Err(SaslError::KerberosName { path: path.to_owned(), line: entry.line, user: user.into() });
            }
            users.insert(user.to_owned(), password.clone());
        }
    }
    Ok(users)
}

/// A connection's answer to a `sasl` packet: the reply's error code and `SetSASLResponse` token (sent whatever
/// the code, as ZooKeeper sends it), the identities the session gains, and whether the connection then closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The reply header's error code.
    pub code: Code,
    /// The reply's token (`None`: a null buffer).
    pub token: Option<Vec<u8>>,
    /// Identities to add to the session.
    pub ids: Vec<Id>,
    /// Whether the connection closes once the reply is out.
    pub close: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(jaas: &str, settings: SaslSettings) -> Result<Sasl, SaslError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(jaas.as_bytes()).unwrap();
        let settings = SaslSettings { jaas: Some((1, file.path().to_owned())), ..settings };
        Sasl::load(&settings)
    }

    const SERVER: &str = "Server {\n org.apache.zookeeper.server.auth.DigestLoginModule required\n \
                          user_super=\"adminsecret\"\n user_bob=\"bobsecret\";\n};\n";

    #[test]
    fn users_passwords_and_identities() {
        let settings = SaslSettings { super_users: vec!["bob".into()], ..SaslSettings::default() };
        let sasl = load(SERVER, settings).unwrap();
        assert_eq!(sasl.password("bob").as_deref(), Some("bobsecret"));
        assert_eq!(sasl.password("eve"), None);
        assert!(sasl.exchange().is_some());
        assert_eq!(sasl.identities("bob"), vec![Id::new("sasl", "bob"), Id::new("super", "")]);
        assert_eq!(sasl.identities("super"), vec![Id::new("sasl", "super")], "super is only a name here");
        let settings = SaslSettings { super_password: Some("override".into()), ..SaslSettings::default() };
        let sasl = load(SERVER, settings).unwrap();
        assert_eq!(sasl.password("super").as_deref(), Some("override"));
        assert_eq!(sasl.password("bob").as_deref(), Some("bobsecret"));
    }

    #[test]
    fn without_a_section_sasl_is_off_unless_one_was_named() {
        let client_only = "Client {\n org.apache.zookeeper.server.auth.DigestLoginModule required username=\"a\";\n};";
        let sasl = load(client_only, SaslSettings::default()).unwrap();
        assert!(sasl.exchange().is_none());
        assert_eq!(sasl.password("a"), None);
        assert!(Sasl::load(&SaslSettings::default()).unwrap().exchange().is_none());
        let named = SaslSettings { section: Some((7, "Zk".into())), ..SaslSettings::default() };
        let error = load(client_only, named).unwrap_err().to_string();
        assert!(error.contains("no section named \"Zk\"") && error.contains("line 7"), "{error}");
    }

    #[test]
    fn kerberos_and_malformed_files_are_refused_with_the_line() {
        let krb = "Server {\n com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true;\n};";
        let error = load(krb, SaslSettings::default()).unwrap_err().to_string();
        assert!(error.contains("line 2") && error.contains("Kerberos"), "{error}");
        let principal = "Server {\n org.apache.zookeeper.server.auth.DigestLoginModule required user_a@R=\"x\";\n};";
        assert!(load(principal, SaslSettings::default()).unwrap_err().to_string().contains("line 2"));
        let broken = "Server {\n org.apache.zookeeper.server.auth.DigestLoginModule required\n user_a=\"x\"\n};";
        assert!(load(broken, SaslSettings::default()).unwrap_err().to_string().contains("line 4"));
        let missing = SaslSettings { jaas: Some((3, "/nonexistent/jaas.conf".into())), ..SaslSettings::default() };
        assert!(Sasl::load(&missing).unwrap_err().to_string().contains("/nonexistent/jaas.conf"));
    }

    fn exchange(sasl: &Sasl, user: &str, password: &str) -> (Answer, Answer) {
        let mut state = None;
        let first = sasl.answer(&mut state, b"");
        let mut client = digest_md5::DigestMd5Client::new(PROTOCOL, user, password);
        let response = client.respond(first.token.as_deref().unwrap()).unwrap();
        let second = sasl.answer(&mut state, &response);
        (first, second)
    }

    #[test]
    fn answers_follow_process_sasl() {
        let settings = SaslSettings { super_users: vec!["bob".into()], ..SaslSettings::default() };
        let sasl = load(SERVER, settings).unwrap();
        let (first, second) = exchange(&sasl, "bob", "bobsecret");
        assert_eq!((first.code, first.close, first.ids.len()), (Code::Ok, false, 0));
        assert_eq!(second.code, Code::Ok);
        assert_eq!(second.ids, vec![Id::new("sasl", "bob"), Id::new("super", "")]);
        assert!(second.token.unwrap().starts_with(b"rspauth="));
        let (_, wrong) = exchange(&sasl, "bob", "guess");
        assert_eq!(wrong, Answer { code: Code::AuthFailed, token: None, ids: vec![], close: true });

        let required = SaslSettings { enforce: Some(vec!["sasl".into()]), ..SaslSettings::default() };
        let (_, wrong) = exchange(&load(SERVER, required).unwrap(), "bob", "guess");
        assert_eq!((wrong.code, wrong.close), (Code::SessionClosedRequireSaslAuth, true));
        let allowed = SaslSettings { allow_failed_clients: true, ..SaslSettings::default() };
        let (_, wrong) = exchange(&load(SERVER, allowed).unwrap(), "bob", "guess");
        assert_eq!(wrong, Answer { code: Code::Ok, token: None, ids: vec![], close: false });
        let both =
            SaslSettings { allow_failed_clients: true, enforce: Some(vec!["sasl".into()]), ..Default::default() };
        assert!(exchange(&load(SERVER, both).unwrap(), "bob", "guess").1.close, "enforced SASL is never waived");

        let off = Sasl::default();
        assert_eq!(off.answer(&mut None, b""), Answer { code: Code::Ok, token: None, ids: vec![], close: false });
    }

    #[test]
    fn enforcement() {
        let sasl =
            Sasl { users: None, settings: SaslSettings { enforce: Some(vec!["sasl".into()]), ..Default::default() } };
        assert!(sasl.refuses(&[Id::new("ip", "127.0.0.1")]));
        assert!(!sasl.refuses(&[Id::new("ip", "127.0.0.1"), Id::new("sasl", "bob")]));
        assert!(!Sasl::default().refuses(&[]));
    }
}
