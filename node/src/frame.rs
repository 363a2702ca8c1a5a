//! The client port's framing, as ZooKeeper's `ClientCnxn` and server frame every packet:
//!
//! ```text
//!  +--------------+-------------------------------+
//!  | len: u32 BE  | payload: len bytes (jute)     |
//!  +--------------+-------------------------------+
//! ```
//!
//! # Limits
//! An incoming payload is at most `jute.maxbuffer` bytes: a longer length is refused before anything is
//! buffered, and the connection closes (ZooKeeper's "Len error"). Unlike tokio-util's length-delimited codec,
//! the read buffer is not sized to the announced length up front: it grows by at most [`READ_STEP`] at a time as
//! bytes arrive, so a client that announces a large frame and sends nothing holds only what it sent. Outgoing
//! payloads are bounded by the `u32` length only (a reply may be larger than the client's own limit, as with
//! ZooKeeper: the client then refuses it).

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// The most a read buffer grows by for a frame still arriving.
pub const READ_STEP: usize = 64 << 10;

/// Frames of the client port.
#[derive(Clone, Copy, Debug)]
pub struct ClientCodec {
    max_payload: usize,
}

impl ClientCodec {
    /// A codec refusing incoming payloads over `max_payload` bytes (`jute.maxbuffer`).
    pub fn new(max_payload: usize) -> ClientCodec {
        ClientCodec { max_payload }
    }
}

impl Decoder for ClientCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(prefix) = src.get(..LEN_PREFIX) else { return Ok(None) };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes"));
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_payload {
            let message = format!("a frame of {len} bytes is over jute.maxbuffer ({})", self.max_payload);
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        let missing = (LEN_PREFIX + len).saturating_sub(src.len());
        if missing > 0 {
            src.reserve(missing.min(READ_STEP));
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<Bytes> for ClientCodec {
    type Error = io::Error;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a reply over 4 GiB"))?;
        dst.reserve(LEN_PREFIX + payload.len());
        dst.put_u32(len);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_round_trip_whole_or_byte_by_byte(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let mut codec = ClientCodec::new(300);
            let mut wire = BytesMut::new();
            for p in &payloads {
                codec.encode(Bytes::from(p.clone()), &mut wire).unwrap();
            }
            let (mut whole, mut trickled, mut src) = (Vec::new(), Vec::new(), BytesMut::new());
            let mut all = wire.clone();
            while let Some(frame) = codec.decode(&mut all).unwrap() {
                whole.push(frame.to_vec());
            }
            for byte in wire.iter() {
                src.put_u8(*byte);
                while let Some(frame) = codec.decode(&mut src).unwrap() {
                    trickled.push(frame.to_vec());
                }
            }
            prop_assert_eq!(&whole, &payloads);
            prop_assert_eq!(&trickled, &payloads);
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_anything_is_buffered() {
        let mut codec = ClientCodec::new(0xfffff);
        let mut src = BytesMut::from(&[0x00, 0x10, 0x00, 0x00][..]);
        assert_eq!(codec.decode(&mut src).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(codec.decode(&mut huge).is_err());
    }

    #[test]
    fn an_announced_frame_does_not_reserve_its_whole_length() {
        let mut codec = ClientCodec::new(0xfffff);
        let mut src = BytesMut::new();
        src.put_u32(0xfffff);
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(src.capacity() <= LEN_PREFIX + READ_STEP, "reserved {} bytes for 4 received", src.capacity());
    }
}
