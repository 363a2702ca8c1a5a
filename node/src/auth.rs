//! Authentication schemes: `digest` (ZooKeeper's `DigestAuthenticationProvider`) and the implicit `ip` identity.
//!
//! A digest id is `user:base64(sha1("user:password"))`. A session that authenticates as the configured super
//! digest also gets the identity `super:`, which every ACL check lets through.

use base64::Engine;
use sha1::{Digest, Sha1};
use tree::acl::Id;

/// The digest id for `user:password` credentials.
pub fn digest_id(credentials: &str) -> Option<String> {
    let (user, _) = credentials.split_once(':')?;
    let hash = Sha1::digest(credentials.as_bytes());
    Some(format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(hash)))
}

/// Why an `auth` packet failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A scheme this server has no provider for.
    #[error("no authentication provider for scheme {0:?}")]
    UnknownScheme(String),
    /// Credentials that are not `user:password`.
    #[error("malformed credentials for scheme {0:?}")]
    Malformed(String),
    /// The session's identities would outgrow what one session may carry.
    #[error("the session's identities would take {bytes} bytes, over the limit of {limit}")]
    TooMany {
        /// What they would take.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// The identities an `auth` packet adds to a session.
pub fn authenticate(scheme: &str, auth: &[u8], super_digest: Option<&str>) -> Result<Vec<Id>, AuthError> {
    match scheme {
        "digest" => {
            let credentials = std::str::from_utf8(auth).map_err(|_| AuthError::Malformed(scheme.into()))?;
            let id = digest_id(credentials).ok_or_else(|| AuthError::Malformed(scheme.into()))?;
            let mut ids = vec![Id::new("digest", &id)];
            if super_digest == Some(id.as_str()) {
                ids.push(Id::new("super", ""));
            }
            Ok(ids)
        }
        other => Err(AuthError::UnknownScheme(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeeper() {
        // `DigestAuthenticationProvider.generateDigest("super:test")` in ZooKeeper's docs.
        assert_eq!(digest_id("super:test").as_deref(), Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU="));
        assert_eq!(digest_id("no-colon"), None);
    }

    #[test]
    fn the_super_digest_adds_the_super_identity() {
        let ids = authenticate("digest", b"super:test", Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")).unwrap();
        assert_eq!(ids, vec![Id::new("digest", "super:D/InIHSb7yEEbrWz8b9l71RjZJU="), Id::new("super", "")]);
        assert_eq!(authenticate("digest", b"bob:pw", None).unwrap().len(), 1);
        assert_eq!(authenticate("kerberos", b"x", None), Err(AuthError::UnknownScheme("kerberos".into())));
    }
}
