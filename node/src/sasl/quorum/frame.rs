//! The frames of the quorum SASL exchange, Ensemble's own (its peer protocol is its own: Ensemble and ZooKeeper
//! servers never share an ensemble), shaped on ZooKeeper's `QuorumAuthPacket` (magic, status, token).
//!
//! ```text
//!  0               4         5          6                  10                 10 + len
//!  +---------------+---------+----------+------------------+------------------+
//!  | magic E5 'Q'  | version | status   | len (u32, BE)    | token (len bytes) |
//!  |      'S' 'A'  |    1    | 0/1/2    | <= MAX_TOKEN_LEN |                  |
//!  +---------------+---------+----------+------------------+------------------+
//! ```
//!
//! The dialer (ZooKeeper's learner) sends the first frame, `InProgress` with an empty token (DIGEST-MD5 has no
//! initial response); the listener answers `InProgress` with its challenge; the dialer sends its response; the
//! listener ends with `Success` and its `rspauth`, or `Error` with an empty token.
//!
//! A dialer that does not authenticate sends its 8-byte server id (big-endian, 1 to 254) instead, whose first
//! byte is 0; a TLS dialer on a unified port starts with 0x16. The magic's first byte is neither, so the
//! listener tells the three apart by one byte.
//!
//! # Limits
//! A token is at most [`MAX_TOKEN_LEN`] bytes (a DIGEST-MD5 response is at most 4 KiB); a longer length is
//! refused from the header alone, before anything is allocated for it.
//!
//! # Invariants
//! - [`Frame::encode`] writes exactly [`HEADER_LEN`] + token bytes, and [`Frame::decode`] reads back what it wrote.
//! - Nothing is allocated for a token before its length is checked against [`MAX_TOKEN_LEN`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = [0xE5, b'Q', b'S', b'A'];
/// The frame layout's version.
pub const VERSION: u8 = 1;
/// Magic, version, status and token length.
pub const HEADER_LEN: usize = 10;
/// The longest token taken.
pub const MAX_TOKEN_LEN: usize = 8192;

const _: () = assert!(HEADER_LEN == MAGIC.len() + 1 + 1 + 4);
// Not a server id's first byte (ids are 1 to 254), nor a TLS handshake record's.
const _: () = assert!(MAGIC[0] != 0 && MAGIC[0] != 0x16);

/// Where the exchange stands (ZooKeeper's `QuorumAuth.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The listener authenticated the dialer; the token is its `rspauth`.
    Success = 0,
    /// More is to come: the token is the next step.
    InProgress = 1,
    /// The listener refused the dialer.
    Error = 2,
}

impl Status {
    fn from_byte(byte: u8) -> Result<Status, FrameError> {
        match byte {
            0 => Ok(Status::Success),
            1 => Ok(Status::InProgress),
            2 => Ok(Status::Error),
            other => Err(FrameError::Status(other)),
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where the exchange stands.
    pub status: Status,
    /// The SASL token.
    pub token: Vec<u8>,
}

/// A frame that cannot be read: the peer's fault, and the end of its connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not a quorum SASL frame.
    #[error("not a quorum SASL frame (magic {0:02x?})")]
    Magic([u8; 4]),
    /// A version this server does not speak.
    #[error("quorum SASL frame version {0}, this server speaks {VERSION}")]
    Version(u8),
    /// An unknown status.
    #[error("quorum SASL frame with unknown status {0}")]
    Status(u8),
    /// A token length over the bound.
    #[error("quorum SASL token of {0} bytes, over the limit of {MAX_TOKEN_LEN}")]
    TooLong(u64),
    /// Fewer bytes than the frame needs.
    #[error("quorum SASL frame cut short: {need} bytes needed, {have} given")]
    Truncated {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes there were.
        have: usize,
    },
    /// The connection failed or closed.
    #[error("quorum SASL connection: {0}")]
    Io(#[from] io::Error),
}

impl Frame {
    /// A frame.
    pub fn new(status: Status, token: Vec<u8>) -> Frame {
        Frame { status, token }
    }

    /// The frame's bytes. Panics if the token is over [`MAX_TOKEN_LEN`] (this server makes its tokens).
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.token.len() <= MAX_TOKEN_LEN, "a quorum SASL token of {} bytes", self.token.len());
        let len = u32::try_from(self.token.len()).expect("bounded by MAX_TOKEN_LEN");
        let mut out = Vec::with_capacity(HEADER_LEN + self.token.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.status as u8);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.token);
        debug_assert_eq!(out.len(), HEADER_LEN + self.token.len());
        out
    }

    /// Reads one frame from the start of `bytes`; returns it and the bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Frame, usize), FrameError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(FrameError::Truncated { need: HEADER_LEN, have: bytes.len() })?;
        let (status, len) = decode_header(header)?;
        let end = HEADER_LEN + len;
        let token = bytes.get(HEADER_LEN..end).ok_or(FrameError::Truncated { need: end, have: bytes.len() })?;
        Ok((Frame { status, token: token.to_vec() }, end))
    }
}

/// The status and token length a header announces, checked (magic, version, status, length bound).
pub fn decode_header(header: &[u8; HEADER_LEN]) -> Result<(Status, usize), FrameError> {
    let magic: [u8; 4] = header[..4].try_into().expect("four bytes");
    if magic != MAGIC {
        return Err(FrameError::Magic(magic));
    }
    if header[4] != VERSION {
        return Err(FrameError::Version(header[4]));
    }
    let status = Status::from_byte(header[5])?;
    let len = u32::from_be_bytes(header[6..10].try_into().expect("four bytes"));
    let len = usize::try_from(len).ok().filter(|&n| n <= MAX_TOKEN_LEN).ok_or(FrameError::TooLong(u64::from(len)))?;
    Ok((status, len))
}

/// Reads one frame from `stream`: the header, checked, then the token.
pub async fn read(stream: &mut (impl AsyncRead + Unpin)) -> Result<Frame, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await?;
    let (status, len) = decode_header(&header)?;
    let mut token = vec![0u8; len];
    stream.read_exact(&mut token).await?;
    Ok(Frame { status, token })
}

/// Writes one frame to `stream` and flushes it.
pub async fn write(stream: &mut (impl AsyncWrite + Unpin), frame: &Frame) -> Result<(), FrameError> {
    stream.write_all(&frame.encode()).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![Just(Status::Success), Just(Status::InProgress), Just(Status::Error)]
    }

    proptest! {
        #[test]
        fn frames_round_trip(status in status(), token in proptest::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN)) {
            let frame = Frame::new(status, token);
            let mut bytes = frame.encode();
            prop_assert_eq!(bytes.len(), HEADER_LEN + frame.token.len());
            bytes.extend_from_slice(b"next");
            let (back, used) = Frame::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &frame);
            prop_assert_eq!(&bytes[used..], b"next");
        }

        #[test]
        fn every_cut_short_frame_is_refused(token in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..74) {
            let bytes = Frame::new(Status::InProgress, token).encode();
            let cut = cut.min(bytes.len().saturating_sub(1));
            let refused = matches!(Frame::decode(&bytes[..cut]), Err(FrameError::Truncated { .. }));
            prop_assert!(refused);
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = Frame::decode(&bytes);
        }
    }

    #[test]
    fn the_layout_is_as_drawn() {
        let bytes = Frame::new(Status::Error, b"ab".to_vec()).encode();
        assert_eq!(bytes, [0xE5, b'Q', b'S', b'A', 1, 2, 0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn bad_headers_are_refused_before_any_token_is_read() {
        let good = Frame::new(Status::InProgress, Vec::new()).encode();
        let with = |i: usize, b: u8| {
            let mut h: [u8; HEADER_LEN] = good[..HEADER_LEN].try_into().unwrap();
            h[i] = b;
            decode_header(&h)
        };
        assert!(matches!(with(0, 0x00), Err(FrameError::Magic(_))));
        assert!(matches!(with(4, 2), Err(FrameError::Version(2))));
        assert!(matches!(with(5, 9), Err(FrameError::Status(9))));
        let mut huge: [u8; HEADER_LEN] = good[..HEADER_LEN].try_into().unwrap();
        huge[6..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode_header(&huge), Err(FrameError::TooLong(0xFFFF_FFFF))));
        huge[6..].copy_from_slice(&u32::try_from(MAX_TOKEN_LEN + 1).unwrap().to_be_bytes());
        assert!(matches!(decode_header(&huge), Err(FrameError::TooLong(_))));
    }

    #[tokio::test]
    async fn a_two_gigabyte_length_is_refused_without_reading_on() {
        let mut header = Frame::new(Status::InProgress, Vec::new()).encode();
        header[6..].copy_from_slice(&0x8000_0000u32.to_be_bytes());
        // Nothing follows the header: a reader that tried to read the token would fail with EOF instead.
        let error = read(&mut header.as_slice()).await.unwrap_err();
        assert!(matches!(error, FrameError::TooLong(0x8000_0000)), "{error}");
        let (mut a, mut b) = tokio::io::duplex(64);
        write(&mut a, &Frame::new(Status::Success, b"rspauth=x".to_vec())).await.unwrap();
        assert_eq!(read(&mut b).await.unwrap(), Frame::new(Status::Success, b"rspauth=x".to_vec()));
    }
}
