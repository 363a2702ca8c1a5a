//! The zoo.cfg keys of quorum SASL, read into [`QuorumSaslSettings`] with ZooKeeper 3.8's defaults and checks
//! (`QuorumPeerConfig`): requiring SASL without enabling it, or requiring it of dialers
//! (`serverRequireSasl`) without sending it as one (`learnerRequireSasl`), stops the server.

use crate::config::{invalid, true_false, ConfigError};

/// The keys this module reads.
pub const KEYS: [&str; 7] = [
    "quorum.auth.enableSasl",
    "quorum.auth.learnerRequireSasl",
    "quorum.auth.serverRequireSasl",
    "quorum.auth.learner.saslLoginContext",
    "quorum.auth.server.saslLoginContext",
    "quorum.auth.kerberos.servicePrincipal",
    "quorum.cnxn.threads.size",
];

/// Quorum SASL as zoo.cfg configures it (present only with `quorum.auth.enableSasl=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSaslSettings {
    /// `quorum.auth.learnerRequireSasl`: this server authenticates when it dials a peer, and a peer that refuses
    /// it is not connected to.
    pub learner_require: bool,
    /// `quorum.auth.serverRequireSasl`: a dialer that does not authenticate, or fails to, is refused.
    pub server_require: bool,
    /// `quorum.auth.learner.saslLoginContext`: the JAAS section with this server's `username` and `password`.
    pub learner_context: String,
    /// `quorum.auth.server.saslLoginContext`: the JAAS section with the `user_<name>` a dialer may be.
    pub server_context: String,
}

type Get<'a> = dyn Fn(&str) -> Option<(usize, &'a str)> + 'a;

/// The settings from the keys: `None` when `quorum.auth.enableSasl` is not true.
pub fn settings(get: &Get<'_>) -> Result<Option<QuorumSaslSettings>, ConfigError> {
    let flag = |key: &str| true_false(get(key), key);
    let (enable, learner_require, server_require) = (
        flag("quorum.auth.enableSasl")?,
        flag("quorum.auth.learnerRequireSasl")?,
        flag("quorum.auth.serverRequireSasl")?,
    );
    for (key, required) in
        [("quorum.auth.serverRequireSasl", server_require), ("quorum.auth.learnerRequireSasl", learner_require)]
    {
        if required && !enable {
            let line = get(key).map_or(0, |(line, _)| line);
            return Err(invalid(line, key, "true", "quorum.auth.enableSasl is disabled, so it cannot be true"));
        }
    }
    if server_require && !learner_require {
        let line = get("quorum.auth.serverRequireSasl").map_or(0, |(line, _)| line);
        let reason = "quorum.auth.learnerRequireSasl is disabled, so it cannot be true";
        return Err(invalid(line, "quorum.auth.serverRequireSasl", "true", reason));
    }
    if let Some((line, text)) = get("quorum.cnxn.threads.size") {
        text.trim().parse::<i32>().map_err(|_| invalid(line, "quorum.cnxn.threads.size", text, "not a number"))?;
        tracing::info!(line, "quorum.cnxn.threads.size has no effect in Ensemble (its handshakes are tasks)");
    }
    if let Some((line, _)) = get("quorum.auth.kerberos.servicePrincipal") {
        tracing::warn!(line, "quorum.auth.kerberos.servicePrincipal ignored: Kerberos is not supported");
    }
    if !enable {
        return Ok(None);
    }
    let context = |key: &str, default: &str| get(key).map_or(default, |(_, v)| v).to_owned();
    Ok(Some(QuorumSaslSettings {
        learner_require,
        server_require,
        learner_context: context("quorum.auth.learner.saslLoginContext", "QuorumLearner"),
        server_context: context("quorum.auth.server.saslLoginContext", "QuorumServer"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<QuorumSaslSettings>, ConfigError> {
        let get = |k: &str| pairs.iter().position(|(key, _)| *key == k).map(|i| (i + 1, pairs[i].1));
        settings(&get)
    }

    #[test]
    fn off_unless_enabled_with_zookeepers_defaults() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&[("quorum.auth.enableSasl", "false"), ("quorum.cnxn.threads.size", "20")]).unwrap(), None);
        let on = parse(&[("quorum.auth.enableSasl", "true")]).unwrap().unwrap();
        let expected = QuorumSaslSettings {
            learner_require: false,
            server_require: false,
            learner_context: "QuorumLearner".into(),
            server_context: "QuorumServer".into(),
        };
        assert_eq!(on, expected);
        let named = parse(&[
            ("quorum.auth.enableSasl", "TRUE"),
            ("quorum.auth.learnerRequireSasl", "true"),
            ("quorum.auth.serverRequireSasl", "true"),
            ("quorum.auth.learner.saslLoginContext", "L"),
            ("quorum.auth.server.saslLoginContext", "S"),
            ("quorum.auth.kerberos.servicePrincipal", "zkquorum/localhost"),
        ]);
        let named = named.unwrap().unwrap();
        assert!(named.learner_require && named.server_require);
        assert_eq!((named.learner_context.as_str(), named.server_context.as_str()), ("L", "S"));
    }

    #[test]
    fn requiring_without_enabling_or_learning_is_refused_as_zookeeper_refuses_it() {
        let e = parse(&[("quorum.auth.serverRequireSasl", "true")]).unwrap_err().to_string();
        assert!(e.contains("quorum.auth.serverRequireSasl") && e.contains("enableSasl is disabled"), "{e}");
        let e = parse(&[("quorum.auth.enableSasl", "false"), ("quorum.auth.learnerRequireSasl", "true")]);
        assert!(e.unwrap_err().to_string().contains("line 2"));
        let e = parse(&[("quorum.auth.enableSasl", "true"), ("quorum.auth.serverRequireSasl", "true")]);
        assert!(e.unwrap_err().to_string().contains("learnerRequireSasl is disabled"));
        assert!(parse(&[("quorum.auth.enableSasl", "yes")]).unwrap_err().to_string().contains("true or false"));
        assert!(parse(&[("quorum.cnxn.threads.size", "many")]).is_err());
    }
}
