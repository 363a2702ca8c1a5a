//! SASL DIGEST-MD5 (RFC 2831), the server side, as Java's `DigestMD5Server` (which ZooKeeper uses) runs it with
//! the `auth` quality of protection only: authentication, no integrity or privacy layer.
//!
//! # The exchange
//!
//! ```text
//!  client                                      server
//!  (empty token: DIGEST-MD5 has no initial response)  ──►
//!                                              ◄──  digest-challenge
//!     realm="<server name>",nonce="<40 base64 chars>",qop="auth",charset=utf-8,algorithm=md5-sess
//!  digest-response                                    ──►
//!     username="u",realm="r",nonce="n",cnonce="c",nc=00000001,qop=auth,digest-uri="<protocol>/<server name>",
//!     response=<32 hex>[,charset=utf-8][,maxbuf=N][,authzid="a"]
//!                                              ◄──  response-auth (the exchange is then complete)
//!     rspauth=<32 hex>
//! ```
//!
//! `response` is `KD(HEX(H(A1)), nonce:nc:cnonce:qop:HEX(H(A2)))` with `KD(k, s) = HEX(H(k:s))`,
//! `A1 = H(user:realm:password):nonce:cnonce[:authzid]` and `A2 = AUTHENTICATE:digest-uri`; `rspauth` is the
//! same with `A2 = :digest-uri`, so it proves to the client that the server knows the password too. User name,
//! realm and password enter `A1` as ISO-8859-1 when every character fits, as UTF-8 otherwise (RFC 2831 §2.1.2.1).
//!
//! ZooKeeper's client port uses protocol `zookeeper` and server name (and realm) `zk-sasl-md5`; its quorum SASL
//! uses `zookeeper-quorum` and `zk-quorum-sasl-md5` with the same exchange, so [`DigestMd5Server`] takes both as
//! parameters and [`DigestMd5Client`] is the learner's side.
//!
//! # Limits
//! A response is at most [`MAX_RESPONSE_LEN`] bytes (Java's limit), checked before it is parsed; the parser
//! makes one pass and keeps at most one value per known directive (a repeated one is refused, unknown ones are
//! skipped), so whatever a client sends costs time and memory linear in at most 4 KiB. The nonce is fresh per
//! server (that is, per connection) and is good for one response: after it, whatever comes is refused, so a
//! response cannot be replayed, and the nonce count must be 1.
//!
//! # Invariants
//! - A [`DigestMd5Server`] answers `Complete` at most once, and only after a challenge it sent; it never answers
//!   again after completing or failing.
//! - The nonce is [`NONCE_LEN`] characters of the base64 alphabet, none needing escape in a quoted string.

use base64::Engine;
use md5::{Digest, Md5};
use rand::RngCore;

/// The longest response accepted (Java's `MAX_RESPONSE_LENGTH`).
pub const MAX_RESPONSE_LEN: usize = 4096;

/// Random bytes in a nonce (Java's `RAW_NONCE_SIZE`): 30, which base64 turns into [`NONCE_LEN`] characters.
const RAW_NONCE_LEN: usize = 30;

/// The length of a server nonce.
pub const NONCE_LEN: usize = RAW_NONCE_LEN * 4 / 3;
// Base64 without padding: 3 bytes make 4 characters exactly.
const _: () = assert!(NONCE_LEN == 40 && NONCE_LEN * 3 == RAW_NONCE_LEN * 4);

/// The one nonce count a response may carry (the nonce serves one response).
const NONCE_COUNT: i32 = 1;

/// Why an exchange failed (the peer's fault in every case but none of the server's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// A response over [`MAX_RESPONSE_LEN`].
    #[error("DIGEST-MD5: response of {0} bytes, over the limit of {MAX_RESPONSE_LEN}")]
    TooLong(usize),
    /// Not a list of `key=value` directives.
    #[error("DIGEST-MD5: malformed directives: {0}")]
    Syntax(&'static str),
    /// A directive that may appear once appeared again.
    #[error("DIGEST-MD5: more than one {0} directive")]
    Repeated(&'static str),
    /// A required directive is missing.
    #[error("DIGEST-MD5: missing {0}")]
    Missing(&'static str),
    /// A directive's value is not what this server offered or accepts.
    #[error("DIGEST-MD5: unacceptable {directive}: {value:?}")]
    Unacceptable {
        /// The directive.
        directive: &'static str,
        /// Its value, cut to 64 bytes.
        value: String,
    },
    /// The server has no password for this user.
    #[error("DIGEST-MD5: no password for user {0:?}")]
    UnknownUser(String),
    /// The response does not prove the password.
    #[error("DIGEST-MD5: wrong response (bad password) for user {0:?}")]
    WrongResponse(String),
    /// A message out of turn (another response after the exchange ended, or after a failure).
    #[error("DIGEST-MD5: no further message expected")]
    OutOfTurn,
    /// The server's `rspauth` does not prove it knows the password (client side).
    #[error("DIGEST-MD5: the server's rspauth does not match")]
    BadServerProof,
}

/// What the server answers to a client's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge and wait for the response.
    Challenge(Vec<u8>),
    /// Authenticated: send `rspauth` to the client; nothing more is expected.
    Complete {
        /// The user name the client proved the password of.
        user: String,
        /// The authorization id the client asked for, if any (ZooKeeper ignores it).
        authzid: Option<String>,
        /// `rspauth=...`.
        rspauth: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing received yet.
    Start,
    /// The challenge went out; the response is due.
    Challenged,
    /// The client proved its password.
    Complete,
    /// Failed, or a message came out of turn.
    Ended,
}

/// One DIGEST-MD5 exchange, server side (Java's `DigestMD5Server` with qop `auth`, charset utf-8).
#[derive(Debug)]
pub struct DigestMd5Server {
    realm: String,
    digest_uri: String,
    nonce: String,
    state: State,
}

impl DigestMd5Server {
    /// An exchange for `protocol` (`zookeeper`) on `server_name` (`zk-sasl-md5`), which is also the realm, with
    /// a fresh random nonce.
    pub fn new(protocol: &str, server_name: &str) -> DigestMd5Server {
        let mut raw = [0u8; RAW_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = base64::engine::general_purpose::STANDARD.encode(raw);
        debug_assert_eq!(nonce.len(), NONCE_LEN);
        DigestMd5Server::with_nonce(protocol, server_name, nonce)
    }

    fn with_nonce(protocol: &str, server_name: &str, nonce: String) -> DigestMd5Server {
        let digest_uri = format!("{protocol}/{server_name}");
        DigestMd5Server { realm: server_name.to_owned(), digest_uri, nonce, state: State::Start }
    }

    /// Whether the exchange completed successfully.
    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    /// Takes the client's next token. `password` looks a user's password up. Any error ends the exchange.
    pub fn evaluate(&mut self, token: &[u8], password: impl Fn(&str) -> Option<String>) -> Result<Step, DigestError> {
        if self.state == State::Complete {
            // Authenticated stays authenticated; the message is refused.
            return Err(DigestError::OutOfTurn);
        }
        let state = std::mem::replace(&mut self.state, State::Ended);
        if token.len() > MAX_RESPONSE_LEN {
            return Err(DigestError::TooLong(token.len()));
        }
        match state {
            // Java ignores an initial response (RFC 2831's "subsequent authentication", which it lacks).
            State::Start => {
                self.state = State::Challenged;
                Ok(Step::Challenge(self.challenge()))
            }
            // One response per nonce, right or wrong: the state stays Ended unless it was right.
            State::Challenged => {
                let step = self.validate(token, password)?;
                self.state = State::Complete;
                Ok(step)
            }
            State::Complete | State::Ended => Err(DigestError::OutOfTurn),
        }
    }

    /// `realm="..",nonce="..",qop="auth",charset=utf-8,algorithm=md5-sess`, as Java writes it.
    fn challenge(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"realm=\"");
        write_quoted(&mut out, self.realm.as_bytes());
        out.extend_from_slice(b"\",nonce=\"");
        write_quoted(&mut out, self.nonce.as_bytes());
        out.extend_from_slice(b"\",qop=\"auth\",charset=utf-8,algorithm=md5-sess");
        out
    }

    /// Checks a digest-response (Java's `validateClientResponse`, in its order) and makes `rspauth`.
    fn validate(&self, token: &[u8], password: impl Fn(&str) -> Option<String>) -> Result<Step, DigestError> {
        let d = Directives::parse(token)?;
        if let Some(charset) = d.get(Key::Charset)? {
            if charset != "utf-8" {
                return Err(unacceptable("charset", charset));
            }
        }
        if let Some(maxbuf) = d.get(Key::Maxbuf)? {
            maxbuf.parse::<i32>().map_err(|_| unacceptable("maxbuf", maxbuf))?;
        }
        let user = d.get(Key::Username)?.ok_or(DigestError::Missing("username"))?;
        let realm = d.get(Key::Realm)?.unwrap_or_default();
        if realm != self.realm {
            return Err(unacceptable("realm", realm));
        }
        let nonce = d.value(Key::Nonce).ok_or(DigestError::Missing("nonce"))?;
        if nonce != self.nonce.as_bytes() {
            return Err(unacceptable("nonce", &String::from_utf8_lossy(nonce)));
        }
        let cnonce = d.value(Key::Cnonce).ok_or(DigestError::Missing("cnonce"))?;
        if let Some(nc) = d.get(Key::NonceCount)? {
            if i32::from_str_radix(nc, 16) != Ok(NONCE_COUNT) {
                return Err(unacceptable("nonce-count", nc));
            }
        }
        match d.get(Key::Qop)?.unwrap_or("auth") {
            "auth" => {}
            other => return Err(unacceptable("qop", other)),
        }
        let uri = d.get(Key::DigestUri)?.ok_or(DigestError::Missing("digest-uri"))?;
        if !uri.eq_ignore_ascii_case(&self.digest_uri) {
            return Err(unacceptable("digest-uri", uri));
        }
        let response = d.value(Key::Response).ok_or(DigestError::Missing("response"))?;
        let authzid = d.value(Key::Authzid);
        let password = password(user).ok_or_else(|| DigestError::UnknownUser(user.to_owned()))?;
        let input = Input { user, realm, password: &password, nonce, cnonce, authzid, digest_uri: uri };
        if response != response_value("AUTHENTICATE", &input).as_slice() {
            return Err(DigestError::WrongResponse(user.to_owned()));
        }
        let mut rspauth = b"rspauth=".to_vec();
        rspauth.extend_from_slice(&response_value("", &input));
        let authzid = d.get(Key::Authzid)?.map(str::to_owned);
        Ok(Step::Complete { user: user.to_owned(), authzid, rspauth })
    }
}

/// The client side of the exchange, for the peers of a later quorum SASL and for tests.
#[derive(Debug)]
pub struct DigestMd5Client {
    protocol: String,
    user: String,
    password: String,
    cnonce: String,
    expected_rspauth: Option<Vec<u8>>,
}

impl DigestMd5Client {
    /// A client that will authenticate as `user` for `protocol` (`zookeeper`).
    pub fn new(protocol: &str, user: &str, password: &str) -> DigestMd5Client {
        let mut raw = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut raw);
        let cnonce = base64::engine::general_purpose::STANDARD.encode(raw);
        DigestMd5Client {
            protocol: protocol.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            cnonce,
            expected_rspauth: None,
        }
    }

    /// The digest-response to the server's challenge (realm and nonce taken from it; qop `auth`).
    pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, DigestError> {
        let d = Directives::parse(challenge)?;
        let realm = d.get(Key::Realm)?.unwrap_or_default().to_owned();
        let nonce = d.value(Key::Nonce).ok_or(DigestError::Missing("nonce"))?;
        let digest_uri = format!("{}/{realm}", self.protocol);
        let input = Input {
            user: &self.user,
            realm: &realm,
            password: &self.password,
            nonce,
            cnonce: self.cnonce.as_bytes(),
            authzid: None,
            digest_uri: &digest_uri,
        };
        let response = response_value("AUTHENTICATE", &input);
        self.expected_rspauth = Some([b"rspauth=".as_slice(), &response_value("", &input)].concat());
        let mut out = b"charset=utf-8,username=\"".to_vec();
        write_quoted(&mut out, self.user.as_bytes());
        out.extend_from_slice(b"\",realm=\"");
        write_quoted(&mut out, realm.as_bytes());
        out.extend_from_slice(b"\",nonce=\"");
        write_quoted(&mut out, nonce);
        out.extend_from_slice(b"\",nc=00000001,cnonce=\"");
        write_quoted(&mut out, self.cnonce.as_bytes());
        out.extend_from_slice(b"\",digest-uri=\"");
        write_quoted(&mut out, digest_uri.as_bytes());
        out.extend_from_slice(b"\",maxbuf=65536,response=");
        out.extend_from_slice(&response);
        out.extend_from_slice(b",qop=auth");
        Ok(out)
    }

    /// Checks the server's final message.
    pub fn verify(&self, rspauth: &[u8]) -> Result<(), DigestError> {
        match &self.expected_rspauth {
            Some(expected) if expected == rspauth => Ok(()),
            _ => Err(DigestError::BadServerProof),
        }
    }
}

/// What a response value is computed from.
struct Input<'a> {
    user: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a [u8],
    cnonce: &'a [u8],
    authzid: Option<&'a [u8]>,
    digest_uri: &'a str,
}

/// The 32 hex digits of a response value: `method` `AUTHENTICATE` for the client's `response`, empty for the
/// server's `rspauth` (RFC 2831 §2.1.2.1, qop `auth`).
fn response_value(method: &str, input: &Input) -> [u8; 32] {
    let ha2 = hex(&Md5::digest(format!("{method}:{}", input.digest_uri)));
    let mut secret = Md5::new();
    for (i, part) in [input.user, input.realm, input.password].iter().enumerate() {
        if i > 0 {
            secret.update(b":");
        }
        secret.update(latin1_or_utf8(part));
    }
    let mut a1 = Md5::new();
    a1.update(secret.finalize());
    a1.update(b":");
    a1.update(input.nonce);
    a1.update(b":");
    a1.update(input.cnonce);
    if let Some(authzid) = input.authzid {
        a1.update(b":");
        a1.update(authzid);
    }
    let ha1 = hex(&a1.finalize());
    let mut kd = Md5::new();
    kd.update(ha1);
    kd.update(b":");
    kd.update(input.nonce);
    kd.update(format!(":{NONCE_COUNT:08x}:").as_bytes());
    kd.update(input.cnonce);
    kd.update(b":auth:");
    kd.update(ha2);
    hex(&kd.finalize())
}

/// Lowercase hex of an MD5 digest.
fn hex(digest: &[u8]) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in digest.iter().take(16).enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

/// Java's `stringToByte_8859_1` with UTF-8 on: ISO-8859-1 if every character fits, UTF-8 otherwise.
fn latin1_or_utf8(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| s.as_bytes().to_vec())
}

/// Writes `value` for a quoted string: `"` and `\` and control characters but CR, LF and HT escaped (Java's
/// `writeQuotedStringValue`).
fn write_quoted(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        if b == b'"' || b == b'\\' || b == 127 || (b < 32 && b != b'\r' && b != b'\t' && b != b'\n') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn unacceptable(directive: &'static str, value: &str) -> DigestError {
    let mut end = value.len().min(64);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    DigestError::Unacceptable { directive, value: value[..end].to_owned() }
}

/// The directives either side reads; any other key is skipped (as Java skips them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Username,
    Realm,
    Nonce,
    Cnonce,
    NonceCount,
    Qop,
    DigestUri,
    Response,
    Maxbuf,
    Charset,
    Authzid,
}

const KEYS: [(Key, &str); 11] = [
    (Key::Username, "username"),
    (Key::Realm, "realm"),
    (Key::Nonce, "nonce"),
    (Key::Cnonce, "cnonce"),
    (Key::NonceCount, "nc"),
    (Key::Qop, "qop"),
    (Key::DigestUri, "digest-uri"),
    (Key::Response, "response"),
    (Key::Maxbuf, "maxbuf"),
    (Key::Charset, "charset"),
    (Key::Authzid, "authzid"),
];

/// The known directives of one message, each at most once, values unquoted and unescaped.
#[derive(Debug, Default)]
struct Directives {
    values: [Option<Vec<u8>>; KEYS.len()],
}

impl Directives {
    /// Parses `key=value` or `key="quoted value"` pairs separated by commas and linear white space (Java's
    /// `parseDirectives`): a repeated known directive, an empty key, a key without `=`, a quote left open or
    /// text right after a closing quote are refused. One pass; values only ever hold bytes of `buf`.
    fn parse(buf: &[u8]) -> Result<Directives, DigestError> {
        let mut out = Directives::default();
        let mut i = skip_lws(buf, 0);
        while i < buf.len() {
            if buf[i] == b',' {
                i = skip_lws(buf, i + 1);
                continue;
            }
            let key_start = i;
            while i < buf.len() && buf[i] != b'=' && buf[i] != b',' && !is_lws(buf[i]) {
                i += 1;
            }
            let key = &buf[key_start..i];
            i = skip_lws(buf, i);
            if i >= buf.len() || buf[i] != b'=' {
                return Err(DigestError::Syntax("'=' expected after a key"));
            }
            if key.is_empty() {
                return Err(DigestError::Syntax("empty key"));
            }
            i = skip_lws(buf, i + 1);
            if i >= buf.len() {
                return Err(DigestError::Syntax("a key without a value"));
            }
            let (value, next) = if buf[i] == b'"' { quoted(buf, i + 1)? } else { token(buf, i) };
            out.insert(key, value)?;
            i = next;
            if i < buf.len() && buf[i] != b',' && !is_lws(buf[i]) {
                return Err(DigestError::Syntax("comma or white space expected after a quoted string"));
            }
            i = skip_lws(buf, i);
            if i < buf.len() && buf[i] == b',' {
                i = skip_lws(buf, i + 1);
            }
        }
        Ok(out)
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), DigestError> {
        let Some(index) = KEYS.iter().position(|(_, name)| name.as_bytes().eq_ignore_ascii_case(key)) else {
            return Ok(());
        };
        let slot = &mut self.values[index];
        if slot.is_some() {
            return Err(DigestError::Repeated(KEYS[index].1));
        }
        *slot = Some(value);
        Ok(())
    }

    fn value(&self, key: Key) -> Option<&[u8]> {
        let index = KEYS.iter().position(|(k, _)| *k == key).expect("every key is in KEYS");
        self.values[index].as_deref()
    }

    /// A directive's value as text (UTF-8, as Java's server decodes them).
    fn get(&self, key: Key) -> Result<Option<&str>, DigestError> {
        let name = KEYS.iter().find(|(k, _)| *k == key).map_or("?", |(_, n)| n);
        self.value(key)
            .map(|v| {
                std::str::from_utf8(v)
                    .map_err(|_| DigestError::Unacceptable { directive: name, value: "(not UTF-8)".into() })
            })
            .transpose()
    }
}

/// A quoted value starting after its opening quote: the unescaped value and the index after the closing quote.
fn quoted(buf: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), DigestError> {
    let mut value = Vec::new();
    while i < buf.len() {
        match buf[i] {
            b'\\' if i + 1 < buf.len() => {
                value.push(buf[i + 1]);
                i += 2;
            }
            b'\\' => break,
            b'"' => return Ok((value, i + 1)),
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    Err(DigestError::Syntax("unmatched quote"))
}

/// An unquoted value: up to a comma or white space.
fn token(buf: &[u8], start: usize) -> (Vec<u8>, usize) {
    let end = buf[start..].iter().position(|&b| b == b',' || is_lws(b)).map_or(buf.len(), |n| start + n);
    (buf[start..end].to_vec(), end)
}

fn is_lws(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t')
}

fn skip_lws(buf: &[u8], start: usize) -> usize {
    buf[start.min(buf.len())..].iter().position(|&b| !is_lws(b)).map_or(buf.len(), |n| start + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 2831 §4's example exchange.
    const RFC_RESPONSE: &[u8] = b"charset=utf-8,username=\"chris\",realm=\"elwood.innosoft.com\",\
        nonce=\"OA6MG9tEQGm2hh\",nc=00000001,cnonce=\"OA6MHXh6VqTrRk\",digest-uri=\"imap/elwood.innosoft.com\",\
        response=d388dad90d4bbd760a152321f2143af7,qop=auth";

    fn rfc_server() -> DigestMd5Server {
        let mut server = DigestMd5Server::with_nonce("imap", "elwood.innosoft.com", "OA6MG9tEQGm2hh".into());
        server.evaluate(b"", no_users).unwrap();
        server
    }

    fn no_users(_: &str) -> Option<String> {
        None
    }

    fn chris(user: &str) -> Option<String> {
        (user == "chris").then(|| "secret".to_owned())
    }

    #[test]
    fn rfc_2831_example() {
        let mut server = rfc_server();
        let step = server.evaluate(RFC_RESPONSE, chris).unwrap();
        assert_eq!(
            step,
            Step::Complete {
                user: "chris".into(),
                authzid: None,
                rspauth: b"rspauth=ea40f60335c427b5527b84dbabcdfffd".to_vec()
            }
        );
        assert!(server.is_complete());
        // The nonce served one response: the same one again is refused.
        assert_eq!(server.evaluate(RFC_RESPONSE, chris), Err(DigestError::OutOfTurn));
        assert!(server.is_complete(), "a late message does not undo the authentication");
    }

    #[test]
    fn challenge_is_javas() {
        let mut server = DigestMd5Server::new("zookeeper", "zk-sasl-md5");
        // A GSSAPI client's initial token is ignored, as Java's DIGEST-MD5 server ignores any initial response.
        let Step::Challenge(challenge) = server.evaluate(b"\x60\x82\x02", no_users).unwrap() else { panic!() };
        let text = String::from_utf8(challenge).unwrap();
        let nonce = &server.nonce;
        assert_eq!(nonce.len(), NONCE_LEN);
        assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        assert_eq!(
            text,
            format!("realm=\"zk-sasl-md5\",nonce=\"{nonce}\",qop=\"auth\",charset=utf-8,algorithm=md5-sess")
        );
        assert_ne!(DigestMd5Server::new("zookeeper", "zk-sasl-md5").nonce, *nonce, "a fresh nonce each time");
    }

    #[test]
    fn client_and_server_agree() {
        let users = |u: &str| (u == "bob").then(|| "pässwörd ☃".to_owned());
        let mut server = DigestMd5Server::new("zookeeper", "zk-sasl-md5");
        let mut client = DigestMd5Client::new("zookeeper", "bob", "pässwörd ☃");
        let Step::Challenge(challenge) = server.evaluate(b"", users).unwrap() else { panic!() };
        let response = client.respond(&challenge).unwrap();
        let Step::Complete { user, rspauth, .. } = server.evaluate(&response, users).unwrap() else { panic!() };
        assert_eq!(user, "bob");
        client.verify(&rspauth).unwrap();
        assert_eq!(client.verify(b"rspauth=00000000000000000000000000000000"), Err(DigestError::BadServerProof));
    }

    #[test]
    fn a_wrong_password_or_unknown_user_fails_once_and_for_all() {
        let mut server = DigestMd5Server::new("zookeeper", "zk-sasl-md5");
        let Step::Challenge(challenge) = server.evaluate(b"", chris).unwrap() else { panic!() };
        let response = DigestMd5Client::new("zookeeper", "chris", "guess").respond(&challenge).unwrap();
        assert_eq!(server.evaluate(&response, chris), Err(DigestError::WrongResponse("chris".into())));
        assert!(!server.is_complete());
        let right = DigestMd5Client::new("zookeeper", "chris", "secret").respond(&challenge).unwrap();
        assert_eq!(server.evaluate(&right, chris), Err(DigestError::OutOfTurn), "no second try on a nonce");

        let mut server = DigestMd5Server::new("zookeeper", "zk-sasl-md5");
        let Step::Challenge(challenge) = server.evaluate(b"", chris).unwrap() else { panic!() };
        let response = DigestMd5Client::new("zookeeper", "eve", "secret").respond(&challenge).unwrap();
        assert_eq!(server.evaluate(&response, chris), Err(DigestError::UnknownUser("eve".into())));
    }

    /// Each edit of the RFC's response and the error the server answers it with.
    #[test]
    fn hostile_responses_are_refused() {
        let rfc = std::str::from_utf8(RFC_RESPONSE).unwrap();
        let cases: Vec<(String, DigestError)> = vec![
            (rfc.replace("OA6MG9tEQGm2hh", "OA6MG9tEQGm2hX"), unacceptable("nonce", "OA6MG9tEQGm2hX")),
            (rfc.replace("nc=00000001", "nc=00000002"), unacceptable("nonce-count", "00000002")),
            (rfc.replace("qop=auth", "qop=auth-conf"), unacceptable("qop", "auth-conf")),
            (rfc.replace("charset=utf-8", "charset=latin1"), unacceptable("charset", "latin1")),
            (rfc.replace("imap/", "smtp/"), unacceptable("digest-uri", "smtp/elwood.innosoft.com")),
            (rfc.replace("realm=\"elwood.innosoft.com\",", ""), unacceptable("realm", "")),
            (rfc.replace("username=\"chris\",", ""), DigestError::Missing("username")),
            (rfc.replace("cnonce", "xnonce"), DigestError::Missing("cnonce")),
            (format!("{rfc},username=\"chris\""), DigestError::Repeated("username")),
            (format!("{rfc},NONCE=\"x\""), DigestError::Repeated("nonce")),
            (
                rfc.replace("\"chris\"", "\"chris"),
                DigestError::Syntax("comma or white space expected after a quoted string"),
            ),
            (format!("{rfc},authzid=\"unterminated"), DigestError::Syntax("unmatched quote")),
            (format!("{rfc},authzid=\"ends in an escape\\"), DigestError::Syntax("unmatched quote")),
            (format!("{rfc},=x"), DigestError::Syntax("empty key")),
            (format!("{rfc},novalue"), DigestError::Syntax("'=' expected after a key")),
            (format!("{rfc},novalue="), DigestError::Syntax("a key without a value")),
            (
                rfc.replace("d388dad90d4bbd760a152321f2143af7", "D388DAD90D4BBD760A152321F2143AF7"),
                DigestError::WrongResponse("chris".into()),
            ),
            (format!("{rfc},maxbuf=lots"), unacceptable("maxbuf", "lots")),
            ("x".repeat(1 << 20), DigestError::TooLong(1 << 20)),
        ];
        for (response, error) in cases {
            let mut server = rfc_server();
            assert_eq!(server.evaluate(response.as_bytes(), chris), Err(error), "{response:.200}");
            assert!(!server.is_complete());
        }
        // White space, empty elements, unknown directives and escapes are fine.
        let spaced =
            rfc.replace(",", " ,\r\n\t, ").replace("\"chris\"", "\"ch\\ris\"") + ",auth-param=x,foo=\"b\\\"ar\"";
        assert!(rfc_server().evaluate(spaced.as_bytes(), chris).is_ok());
        // An authzid takes part in A1: the RFC's response no longer matches.
        let with_authzid = format!("{rfc},authzid=\"admin\"");
        assert_eq!(
            rfc_server().evaluate(with_authzid.as_bytes(), chris),
            Err(DigestError::WrongResponse("chris".into()))
        );
    }

    proptest! {
        #[test]
        fn no_input_panics(first in proptest::collection::vec(any::<u8>(), 0..64), bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut server = DigestMd5Server::new("zookeeper", "zk-sasl-md5");
            let _ = server.evaluate(&first, chris);
            let _ = server.evaluate(&bytes, chris);
            prop_assert!(!server.is_complete());
            let _ = Directives::parse(&bytes);
        }

        #[test]
        fn mutated_rfc_responses_never_panic(at in 0..RFC_RESPONSE.len(), byte in prop_oneof![Just(b'"'), Just(b'\\'), Just(b','), Just(b'='), Just(b' '), any::<u8>()], cut in 0..RFC_RESPONSE.len()) {
            let mut response = RFC_RESPONSE[..cut.max(at + 1)].to_vec();
            response[at] = byte;
            let mut server = rfc_server();
            if let Ok(Step::Complete { .. }) = server.evaluate(&response, chris) {
                // Only an edit that keeps every checked value (white space, a key's case) may pass.
                prop_assert!(server.is_complete());
            }
        }
    }
}
