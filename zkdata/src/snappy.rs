//! snappy-java's stream format (`SnappyOutputStream`, `SnappyInputStream`), what ZooKeeper writes for
//! `zookeeper.snapshot.compression.method=snappy` (`snapshot.<zxid>.snappy`).
//!
//! ```text
//!  header (16 bytes): 0x82 "SNAPPY" 0x00 | int version (1) | int minimum compatible version (1)
//!  then blocks:       int compressed length (big-endian) | that many bytes of one raw snappy block
//! ```
//!
//! A header may appear again between blocks (streams written one after the other), and is skipped, as
//! `SnappyInputStream` does. snappy-java writes blocks of 32 KiB of input by default.
//!
//! # Limits
//! A block may be at most [`MAX_BLOCK`] bytes, compressed and decompressed, checked before allocating.

use std::io::{self, ErrorKind, Read, Write};

/// snappy-java's `SnappyCodec.MAGIC_HEADER`.
pub const MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const HEADER_LEN: usize = 16;
/// The largest block accepted (snappy-java's blocks are 32 KiB unless configured, never near this).
pub const MAX_BLOCK: usize = 64 << 20;
/// The block size written, snappy-java's default.
pub const BLOCK: usize = 32 << 10;

fn invalid(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message)
}

/// Decompresses a snappy-java stream.
pub struct SnappyReader<R> {
    inner: R,
    block: Vec<u8>,
    pos: usize,
    decoder: snap::raw::Decoder,
    started: bool,
}

impl<R: Read> SnappyReader<R> {
    /// Reads the stream from `inner` (its header is checked at the first read).
    pub fn new(inner: R) -> SnappyReader<R> {
        SnappyReader { inner, block: Vec::new(), pos: 0, decoder: snap::raw::Decoder::new(), started: false }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ended before the first byte.
    fn read_or_end(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..])? {
                0 if got == 0 => return Ok(false),
                0 => return Err(io::Error::new(ErrorKind::UnexpectedEof, "snappy stream ends inside a block")),
                n => got += n,
            }
        }
        Ok(true)
    }

    fn header_rest(&mut self, first: [u8; 4]) -> io::Result<()> {
        let mut rest = [0u8; HEADER_LEN - 4];
        if !self.read_or_end(&mut rest)? || first[..] != MAGIC[..4] || rest[..4] != MAGIC[4..] {
            return Err(invalid("not a snappy-java stream (bad magic header)".into()));
        }
        Ok(())
    }

    /// Loads the next block; `false` at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        let mut len = [0u8; 4];
        if !self.read_or_end(&mut len)? {
            return if self.started { Ok(false) } else { Err(invalid("empty snappy stream".into())) };
        }
        if !self.started || len[0] == MAGIC[0] {
            self.header_rest(len)?;
            self.started = true;
            return self.next_block();
        }
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > snap::raw::max_compress_len(MAX_BLOCK) {
            return Err(invalid(format!("snappy block of {len} bytes")));
        }
        let mut compressed = vec![0u8; len];
        if !self.read_or_end(&mut compressed)? {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "snappy stream ends inside a block"));
        }
        let size = snap::raw::decompress_len(&compressed).map_err(|e| invalid(e.to_string()))?;
        if size > MAX_BLOCK {
            return Err(invalid(format!("snappy block decompresses to {size} bytes")));
        }
        self.block.resize(size, 0);
        self.decoder.decompress(&compressed, &mut self.block).map_err(|e| invalid(e.to_string()))?;
        self.pos = 0;
        Ok(true)
    }
}

impl<R: Read> Read for SnappyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Compresses into a snappy-java stream; [`SnappyWriter::finish`] writes the last block.
pub struct SnappyWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    encoder: snap::raw::Encoder,
}

impl<W: Write> SnappyWriter<W> {
    /// Starts a stream on `inner`, writing its header.
    pub fn new(mut inner: W) -> io::Result<SnappyWriter<W>> {
        inner.write_all(&MAGIC)?;
        inner.write_all(&1i32.to_be_bytes())?;
        inner.write_all(&1i32.to_be_bytes())?;
        Ok(SnappyWriter { inner, pending: Vec::with_capacity(BLOCK), encoder: snap::raw::Encoder::new() })
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let compressed = self.encoder.compress_vec(&self.pending).map_err(|e| invalid(e.to_string()))?;
        let len = u32::try_from(compressed.len()).map_err(|_| invalid("block too large".into()))?;
        self.inner.write_all(&len.to_be_bytes())?;
        self.inner.write_all(&compressed)?;
        self.pending.clear();
        Ok(())
    }

    /// Writes the last block and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SnappyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == BLOCK {
            self.flush_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compress(data: &[u8]) -> Vec<u8> {
        let mut w = SnappyWriter::new(Vec::new()).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn the_layout_is_snappy_javas() {
        // snappy-java's own output for "foobar\n": header, then one block of 9 bytes.
        let bytes = compress(b"foobar\n");
        assert_eq!(&bytes[..16], b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
        assert_eq!(&bytes[16..], b"\x00\x00\x00\x09\x07\x18foobar\n");
    }

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..100_000), concat in any::<bool>()) {
            let mut bytes = compress(&data);
            let mut expected = data.clone();
            if concat {
                bytes.extend(compress(&data));
                expected.extend(&data);
            }
            let mut out = Vec::new();
            SnappyReader::new(&bytes[..]).read_to_end(&mut out).unwrap();
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn damage_is_an_error_never_a_panic(data in proptest::collection::vec(any::<u8>(), 1..5000), at in any::<proptest::sample::Index>(), cut in any::<bool>()) {
            let mut bytes = compress(&data);
            let at = at.index(bytes.len());
            if cut { bytes.truncate(at) } else { bytes[at] ^= 0x5a }
            // Refused, or (a cut at a block boundary, a flipped literal byte) other data, which the snapshot's
            // checksum catches: never a panic, never a huge allocation.
            let _ = SnappyReader::new(&bytes[..]).read_to_end(&mut Vec::new());
        }
    }

    #[test]
    fn a_huge_block_length_is_refused_before_allocating() {
        let mut bytes = compress(b"x");
        bytes.truncate(16);
        bytes.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
        let err = SnappyReader::new(&bytes[..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }
}
