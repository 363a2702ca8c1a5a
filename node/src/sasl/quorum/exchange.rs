//! The two sides of one quorum SASL exchange over a stream ([`super::frame`] frames, DIGEST-MD5 from
//! [`crate::sasl::digest_md5`]): [`serve`] for the listener (ZooKeeper's `SaslQuorumAuthServer`), [`learn`] for
//! the dialer (`SaslQuorumAuthLearner`).
//!
//! ```text
//!  dialer                                   listener
//!  InProgress ""                      ──►
//!                                     ◄──   InProgress challenge
//!  InProgress response                ──►
//!                                     ◄──   Success rspauth   (or Error "")
//! ```
//!
//! DIGEST-MD5 takes exactly these two rounds, so the listener reads at most two frames; anything else fails.

use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{self, Frame, FrameError, Status};
use super::{Credentials, PROTOCOL, SERVER_NAME};
use crate::sasl::digest_md5::{DigestError, DigestMd5Client, DigestMd5Server, Step};

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// A frame that cannot be read, or a broken connection: the stream is unusable.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// DIGEST-MD5 failed (a wrong password, an unknown user, a malformed token, a listener that does not prove
    /// it knows the password).
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The listener refused this server's credentials.
    #[error("the peer refused the credentials of user {user:?} (a wrong password, or a user it does not list)")]
    Refused {
        /// The user name presented.
        user: String,
    },
    /// A frame whose status does not fit the exchange's turn.
    #[error("quorum SASL frame with status {0:?} out of turn")]
    OutOfTurn(Status),
}

impl ExchangeError {
    /// Whether the stream is unusable after this failure (the frames are out of step), whatever the settings.
    pub fn ends_connection(&self) -> bool {
        matches!(self, ExchangeError::Frame(_))
    }
}

/// Runs the listener's side with a dialer whose first bytes are a frame; the user it proved. A DIGEST-MD5 failure
/// is answered with an `Error` frame (sent as far as the connection takes it) before it is returned.
pub async fn serve(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    credentials: &Credentials,
) -> Result<String, ExchangeError> {
    let mut server = DigestMd5Server::new(PROTOCOL, SERVER_NAME);
    let outcome = serve_rounds(stream, &mut server, credentials).await;
    if let Err(error) = &outcome {
        if !error.ends_connection() {
            let _ = frame::write(stream, &Frame::new(Status::Error, Vec::new())).await;
        }
    }
    outcome
}

async fn serve_rounds(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    server: &mut DigestMd5Server,
    credentials: &Credentials,
) -> Result<String, ExchangeError> {
    let password = |user: &str| credentials.password(user);
    for _round in 0..2 {
        let from_dialer = frame::read(stream).await?;
        if from_dialer.status != Status::InProgress {
            return Err(ExchangeError::OutOfTurn(from_dialer.status));
        }
        match server.evaluate(&from_dialer.token, password)? {
            Step::Challenge(challenge) => frame::write(stream, &Frame::new(Status::InProgress, challenge)).await?,
            Step::Complete { user, authzid, rspauth } => {
                // ZooKeeper's SaslQuorumServerCallbackHandler: the authorization id, if asked for, is the user.
                if let Some(authzid) = authzid.filter(|a| *a != user) {
                    let value = authzid.chars().take(64).collect();
                    return Err(ExchangeError::Digest(DigestError::Unacceptable { directive: "authzid", value }));
                }
                frame::write(stream, &Frame::new(Status::Success, rspauth)).await?;
                return Ok(user);
            }
        }
    }
    Err(ExchangeError::Digest(DigestError::OutOfTurn))
}

/// Runs the dialer's side as `user` with `password`; succeeds once the listener accepted them and proved it
/// knows the password too.
pub async fn learn(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    user: &str,
    password: &str,
) -> Result<(), ExchangeError> {
    let mut client = DigestMd5Client::new(PROTOCOL, user, password);
    frame::write(stream, &Frame::new(Status::InProgress, Vec::new())).await?;
    let challenge = expect(frame::read(stream).await?, Status::InProgress, user)?;
    let response = client.respond(&challenge)?;
    frame::write(stream, &Frame::new(Status::InProgress, response)).await?;
    let rspauth = expect(frame::read(stream).await?, Status::Success, user)?;
    client.verify(&rspauth)?;
    Ok(())
}

/// The token of a frame that must have `status`; an `Error` frame is a refusal.
fn expect(frame: Frame, status: Status, user: &str) -> Result<Vec<u8>, ExchangeError> {
    match frame.status {
        s if s == status => Ok(frame.token),
        Status::Error => Err(ExchangeError::Refused { user: user.to_owned() }),
        other => Err(ExchangeError::OutOfTurn(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One exchange over an in-memory pipe: a listener knowing user `learner` with password `secret`, a dialer
    /// presenting `password`; what each side concluded.
    async fn exchange(password: &str) -> (Result<String, ExchangeError>, Result<(), ExchangeError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let credentials = Credentials::new(&[("learner", "secret")], ("learner", "secret"));
        tokio::join!(serve(&mut b, &credentials), learn(&mut a, "learner", password))
    }

    #[tokio::test]
    async fn a_listed_user_with_its_password_is_proven_both_ways() {
        let (served, learned) = exchange("secret").await;
        assert_eq!(served.unwrap(), "learner");
        learned.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_password_is_refused_and_the_dialer_is_told() {
        let (served, learned) = exchange("guess").await;
        let served = served.unwrap_err();
        assert!(!served.ends_connection() && served.to_string().contains("bad password"), "{served}");
        assert!(matches!(learned, Err(ExchangeError::Refused { .. })), "{learned:?}");
    }

    #[tokio::test]
    async fn a_listener_that_does_not_know_the_password_is_not_believed() {
        let (a, b) = tokio::io::duplex(4096);
        // The listener accepts anyone (a stranger posing as a server): its rspauth cannot match.
        let (served, learned) = tokio::join!(
            async move {
                let mut b = b;
                let _ = frame::read(&mut b).await.unwrap();
                let mut server = DigestMd5Server::new(PROTOCOL, SERVER_NAME);
                let Step::Challenge(c) = server.evaluate(b"", |_| None).unwrap() else { panic!() };
                frame::write(&mut b, &Frame::new(Status::InProgress, c)).await.unwrap();
                let _ = frame::read(&mut b).await.unwrap();
                frame::write(&mut b, &Frame::new(Status::Success, b"rspauth=00".to_vec())).await
            },
            async move {
                let mut a = a;
                learn(&mut a, "learner", "secret").await
            }
        );
        served.unwrap();
        assert!(matches!(learned, Err(ExchangeError::Digest(DigestError::BadServerProof))), "{learned:?}");
    }

    #[tokio::test]
    async fn out_of_turn_and_endless_frames_fail() {
        let credentials = Credentials::new(&[("learner", "secret")], ("learner", "secret"));
        let mut input = Frame::new(Status::Success, Vec::new()).encode();
        let served = serve(&mut tokio::io::join(input.as_slice(), Vec::new()), &credentials).await;
        assert!(matches!(served, Err(ExchangeError::OutOfTurn(Status::Success))), "{served:?}");
        // Three empty tokens: the second is no DIGEST-MD5 response.
        input = Frame::new(Status::InProgress, Vec::new()).encode().repeat(3);
        let served = serve(&mut tokio::io::join(input.as_slice(), Vec::new()), &credentials).await;
        assert!(matches!(served, Err(ExchangeError::Digest(_))), "{served:?}");
    }
}
