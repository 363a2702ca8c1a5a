//! A jute reader over a byte stream that knows its file and offset, keeps ZooKeeper's Adler32 running over
//! every byte read (what `CheckedInputStream` does), and bounds every length before allocating.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tree::acl::{Acl, Id};

use crate::error::{Corruption, ZkDataError};

/// Reads jute fields from a stream, each error naming the file and the offset of the field.
pub(crate) struct Input<R> {
    inner: R,
    file: PathBuf,
    offset: u64,
    adler: adler2::Adler32,
    max_len: u64,
}

impl<R: Read> Input<R> {
    /// A reader of `file` whose lengths may not exceed `max_len`.
    pub(crate) fn new(inner: R, file: &Path, max_len: u64) -> Input<R> {
        Input { inner, file: file.to_path_buf(), offset: 0, adler: adler2::Adler32::new(), max_len }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn max_len(&self) -> u64 {
        self.max_len
    }

    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// The Adler32 of every byte read so far.
    pub(crate) fn checksum(&self) -> u32 {
        self.adler.checksum()
    }

    pub(crate) fn corrupt(&self, offset: u64, kind: Corruption) -> ZkDataError {
        ZkDataError::corrupt(&self.file, offset, kind)
    }

    /// Reads what is there, up to `buf.len()` bytes; fewer only at the end of the stream.
    pub(crate) fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, ZkDataError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.stream_error(e)),
            }
        }
        self.adler.write_slice(&buf[..got]);
        self.offset += got as u64;
        Ok(got)
    }

    fn stream_error(&self, e: std::io::Error) -> ZkDataError {
        match e.kind() {
            ErrorKind::InvalidData | ErrorKind::InvalidInput => {
                self.corrupt(self.offset, Corruption::Compression(e.to_string()))
            }
            ErrorKind::UnexpectedEof => self.corrupt(self.offset, Corruption::Truncated),
            _ => ZkDataError::Io { file: self.file.clone(), op: "read", source: e },
        }
    }

    /// Fills `buf`; the stream ending first is a truncated record starting at `start`.
    pub(crate) fn fill(&mut self, buf: &mut [u8], start: u64) -> Result<(), ZkDataError> {
        if self.read_some(buf)? < buf.len() {
            return Err(self.corrupt(start, Corruption::Truncated));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ZkDataError> {
        let mut buf = [0u8; N];
        let start = self.offset;
        self.fill(&mut buf, start)?;
        Ok(buf)
    }

    pub(crate) fn int(&mut self) -> Result<i32, ZkDataError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn long(&mut self) -> Result<i64, ZkDataError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A length prefix: `None` for -1 (null); refused when negative or past the limit.
    pub(crate) fn len(&mut self) -> Result<Option<usize>, ZkDataError> {
        let at = self.offset;
        match self.int()? {
            -1 => Ok(None),
            n => match u64::try_from(n) {
                Ok(len) if len <= self.max_len => Ok(Some(usize::try_from(len).unwrap_or(usize::MAX))),
                _ => Err(self.corrupt(at, Corruption::BadLength { len: i64::from(n), limit: self.max_len })),
            },
        }
    }

    /// A jute `buffer`, null kept apart from empty.
    pub(crate) fn buffer(&mut self) -> Result<Option<Bytes>, ZkDataError> {
        let start = self.offset;
        let Some(len) = self.len()? else { return Ok(None) };
        let mut buf = vec![0u8; len];
        self.fill(&mut buf, start)?;
        Ok(Some(Bytes::from(buf)))
    }

    /// A jute `ustring` (null reads as empty).
    pub(crate) fn string(&mut self) -> Result<String, ZkDataError> {
        let start = self.offset;
        let bytes = self.buffer()?.unwrap_or_default();
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.corrupt(start, Corruption::Invalid("a string is not UTF-8".into())))
    }

    /// A `vector<ACL>`; null (-1) is refused, as ZooKeeper's ACL cache refuses it.
    pub(crate) fn acls(&mut self) -> Result<Vec<Acl>, ZkDataError> {
        let at = self.offset;
        let count = self.int()?;
        if count < 0 {
            return Err(self.corrupt(at, Corruption::Invalid(format!("ACL list of length {count}"))));
        }
        // Grown as entries arrive: a hostile count costs reads that fail at the end of the file, not memory.
        let mut acls = Vec::new();
        for _ in 0..count {
            let perms = self.int()?;
            let (scheme, id) = (self.string()?, self.string()?);
            acls.push(Acl { perms, id: Id { scheme, id } });
        }
        Ok(acls)
    }

    /// Whether the stream is at its end, consuming nothing when it is; a byte found there is reported as
    /// `what` at its offset.
    pub(crate) fn expect_end(&mut self, what: &str) -> Result<(), ZkDataError> {
        let at = self.offset;
        let mut byte = [0u8; 1];
        if self.read_some(&mut byte)? == 0 {
            return Ok(());
        }
        Err(self.corrupt(at, Corruption::Invalid(format!("bytes after {what}"))))
    }
}
