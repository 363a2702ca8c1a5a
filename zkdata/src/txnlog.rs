//! ZooKeeper's txn log (`FileTxnLog`), read record by record and written by [`LogWriter`] as ZooKeeper writes
//! it.
//!
//! ```text
//!  FileHeader      "ZKLG" | 2 | dbid 0                                        (see crate::header)
//!  records         long Adler32 of the entry | int length | entry | byte 'B' (0x42)
//!     entry        TxnHeader | txn record for its type | TxnDigest (3.6+, optional: int version | long digest)
//!  zero tail       the file is preallocated with zeros (64 MiB by default): a zero checksum and length mark
//!                  the end, and only zeros may follow
//! ```
//!
//! The txn records are `tree::txn`'s (ZooKeeper's jute, which Ensemble's own txns use), but for `reconfig`,
//! whose body is a `SetDataTxn` on `/zookeeper/config`, and `closeSession` from before 3.6, which has no body.
//!
//! # Limits
//! An entry is at most the limit given (`jute.maxbuffer + jute.maxbuffer.extrasize`, as ZooKeeper's reader)
//! and the file's size, checked before allocating.
//!
//! # Invariants
//! - Each record's checksum is the Adler32 of its entry, and it ends with 'B'.
//! - After the last record, only zeros, to the end of the file.

use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Buf;
use tree::code::op;
use tree::jute::{JuteRead, JuteWrite};
use tree::txn::{Txn, TxnHeader, TxnRecord};

use crate::error::{Corruption, ZkDataError};
use crate::header::{FileHeader, LOG_DBID, LOG_MAGIC, VERSION};
use crate::input::Input;

/// ZooKeeper's `OpCode.reconfig`.
pub const OP_RECONFIG: i32 = 16;
/// The end-of-record byte, 'B'.
pub const END_OF_RECORD: u8 = 0x42;
/// A record's checksum and length.
const RECORD_HEAD: usize = 12;
/// A `TxnDigest`.
const DIGEST_LEN: usize = 12;

/// The digest a 3.6+ leader appends to a txn: the tree's digest once the txn is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnDigest {
    /// `DigestCalculator`'s version.
    pub version: i32,
    /// The tree digest after the txn.
    pub digest: u64,
}

/// One txn read from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Where its record begins in the file.
    pub offset: u64,
    /// The txn.
    pub record: TxnRecord,
    /// Its digest, if the leader appended one.
    pub digest: Option<TxnDigest>,
}

/// Reads the records of one log file.
pub struct LogReader<R> {
    input: Input<R>,
    ended: bool,
}

impl<R: Read> LogReader<R> {
    /// Opens a log, checking its header; entries may be at most `max_len` bytes.
    pub fn new(stream: R, file: &Path, max_len: u64) -> Result<LogReader<R>, ZkDataError> {
        let mut input = Input::new(stream, file, max_len);
        FileHeader::read(&mut input, LOG_MAGIC, "a ZooKeeper txn log")?;
        Ok(LogReader { input, ended: false })
    }

    /// The next txn; `None` at the end of the records.
    pub fn next_entry(&mut self) -> Result<Option<LogEntry>, ZkDataError> {
        if self.ended {
            return Ok(None);
        }
        let at = self.input.offset();
        let mut head = [0u8; RECORD_HEAD];
        let got = self.input.read_some(&mut head)?;
        if head.iter().all(|&b| b == 0) {
            // The end of the stream or of the records: only zeros may follow.
            self.ended = true;
            return self.zero_tail().map(|()| None);
        }
        if got < RECORD_HEAD {
            return Err(self.input.corrupt(at, Corruption::Truncated));
        }
        let stored = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(head[8..].try_into().expect("4 bytes"));
        let limit = self.input_limit();
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l as u64 <= limit)
            .ok_or_else(|| self.input.corrupt(at + 8, Corruption::BadLength { len: i64::from(len), limit }))?;
        let mut entry = vec![0u8; len];
        self.input.fill(&mut entry, at)?;
        let marker_at = self.input.offset();
        let mut marker = [0u8; 1];
        if self.input.read_some(&mut marker)? == 0 {
            return Err(self.input.corrupt(at, Corruption::Truncated));
        }
        if marker[0] != END_OF_RECORD {
            let reason = format!("end-of-record byte {:#04x}, not 'B'", marker[0]);
            return Err(self.input.corrupt(marker_at, Corruption::Invalid(reason)));
        }
        let mut adler = adler2::Adler32::new();
        adler.write_slice(&entry);
        let computed = u64::from(adler.checksum());
        if stored != computed {
            return Err(self.input.corrupt(at, Corruption::Checksum { stored, computed }));
        }
        let (record, digest) =
            decode_entry(&entry).map_err(|reason| self.input.corrupt(at, Corruption::Invalid(reason)))?;
        Ok(Some(LogEntry { offset: at, record, digest }))
    }

    fn input_limit(&self) -> u64 {
        self.input.max_len()
    }

    /// The file read.
    pub fn file(&self) -> &Path {
        self.input.file()
    }

    fn zero_tail(&mut self) -> Result<(), ZkDataError> {
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let at = self.input.offset();
            let got = self.input.read_some(&mut chunk)?;
            if let Some(i) = chunk[..got].iter().position(|&b| b != 0) {
                let reason = "non-zero bytes after the last record (a damaged record, or records after a gap)";
                return Err(self.input.corrupt(at + i as u64, Corruption::Invalid(reason.into())));
            }
            if got < chunk.len() {
                return Ok(());
            }
        }
    }
}

/// Splits an entry into its txn and optional digest.
pub fn decode_entry(entry: &[u8]) -> Result<(TxnRecord, Option<TxnDigest>), String> {
    let mut buf = entry;
    let header = TxnHeader {
        client_id: buf.read_long().map_err(|e| e.to_string())?,
        cxid: buf.read_int().map_err(|e| e.to_string())?,
        zxid: buf.read_long().map_err(|e| e.to_string())?,
        time: buf.read_long().map_err(|e| e.to_string())?,
        op: buf.read_int().map_err(|e| e.to_string())?,
    };
    let txn = match header.op {
        // A closeSession of ZooKeeper before 3.6 carries no body (`SerializeUtils.deserializeTxn`).
        op::CLOSE_SESSION if buf.is_empty() => Ok(Txn::CloseSession { paths: Vec::new() }),
        OP_RECONFIG => Txn::read(op::SET_DATA, &mut buf),
        other => Txn::read(other, &mut buf),
    }
    .map_err(|e| format!("txn {:#x} (type {}): {e}", header.zxid, header.op))?;
    let digest = match buf.len() {
        0 => None,
        DIGEST_LEN => Some(TxnDigest { version: buf.get_i32(), digest: buf.get_u64() }),
        n => return Err(format!("txn {:#x}: {n} bytes after the txn", header.zxid)),
    };
    Ok((TxnRecord { header, txn }, digest))
}

/// An entry's bytes: the txn, then its digest if any (`Util.marshallTxnEntry`).
pub fn encode_entry(record: &TxnRecord, digest: Option<TxnDigest>) -> Vec<u8> {
    let mut entry = record.encode();
    if let Some(d) = digest {
        entry.write_int(d.version);
        entry.write_long(d.digest as i64);
    }
    entry
}

/// Writes a log as ZooKeeper does: header, records, then zeros to the preallocated size.
pub struct LogWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> LogWriter<W> {
    /// Starts a log with its header.
    pub fn new(mut out: W) -> io::Result<LogWriter<W>> {
        out.write_all(&FileHeader { magic: LOG_MAGIC, version: VERSION, dbid: LOG_DBID }.encode())?;
        Ok(LogWriter { out, written: crate::header::LEN as u64 })
    }

    /// Appends one txn (`FileTxnLog.append`).
    pub fn append(&mut self, record: &TxnRecord, digest: Option<TxnDigest>) -> io::Result<()> {
        let entry = encode_entry(record, digest);
        let mut adler = adler2::Adler32::new();
        adler.write_slice(&entry);
        let mut out = Vec::with_capacity(entry.len() + RECORD_HEAD + 1);
        out.write_long(i64::from(adler.checksum()));
        out.write_buffer(&entry);
        out.push(END_OF_RECORD);
        self.out.write_all(&out)?;
        self.written += out.len() as u64;
        Ok(())
    }

    /// Pads with zeros to `size` bytes (ZooKeeper's preallocation) and returns the output.
    pub fn finish(mut self, size: u64) -> io::Result<W> {
        let zeros = [0u8; 4096];
        while self.written < size {
            let n = (size - self.written).min(zeros.len() as u64) as usize;
            self.out.write_all(&zeros[..n])?;
            self.written += n as u64;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn txn() -> impl Strategy<Value = (i32, Txn)> {
        let data = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from));
        prop_oneof![
            ("/[a-z]{1,8}", data.clone(), any::<i32>()).prop_map(|(path, data, parent_cversion)| (
                op::CREATE,
                Txn::Create { path, data, acl: tree::acl::open_acl_unsafe(), ephemeral: false, parent_cversion }
            )),
            ("/[a-z]{1,8}", data, any::<i32>())
                .prop_map(|(path, data, version)| (op::SET_DATA, Txn::SetData { path, data, version })),
            "/[a-z]{1,8}".prop_map(|path| (op::DELETE, Txn::Delete { path })),
            any::<i32>().prop_map(|timeout| (op::CREATE_SESSION, Txn::CreateSession { timeout })),
            proptest::collection::vec("/[a-z]{1,8}", 0..3)
                .prop_map(|paths| (op::CLOSE_SESSION, Txn::CloseSession { paths })),
        ]
    }

    fn entries() -> impl Strategy<Value = Vec<(TxnRecord, Option<TxnDigest>)>> {
        proptest::collection::vec((txn(), proptest::option::of(any::<u64>()), any::<i64>()), 1..8).prop_map(|txns| {
            txns.into_iter()
                .enumerate()
                .map(|(i, ((op, txn), digest, client_id))| {
                    let header = TxnHeader {
                        client_id,
                        cxid: i as i32,
                        zxid: 0x1_0000_0001 + i as i64,
                        time: 1_700_000_000_000,
                        op,
                    };
                    (TxnRecord { header, txn }, digest.map(|digest| TxnDigest { version: 2, digest }))
                })
                .collect()
        })
    }

    /// A log of `entries`, preallocated to 4 KiB past them; and where each record ends.
    fn encode(entries: &[(TxnRecord, Option<TxnDigest>)]) -> (Vec<u8>, Vec<usize>) {
        let mut w = LogWriter::new(Vec::new()).unwrap();
        let mut ends = Vec::new();
        for (record, digest) in entries {
            w.append(record, *digest).unwrap();
            ends.push(w.written as usize);
        }
        let size = w.written + 4096;
        (w.finish(size).unwrap(), ends)
    }

    fn decode(bytes: &[u8]) -> Result<Vec<(TxnRecord, Option<TxnDigest>)>, ZkDataError> {
        let mut reader = LogReader::new(bytes, Path::new("log.100000001"), bytes.len() as u64)?;
        let mut out = Vec::new();
        while let Some(entry) = reader.next_entry()? {
            out.push((entry.record, entry.digest));
        }
        Ok(out)
    }

    proptest! {
        #[test]
        fn round_trips(entries in entries()) {
            prop_assert_eq!(decode(&encode(&entries).0).unwrap(), entries);
        }

        #[test]
        fn a_flipped_byte_is_refused_with_its_record(entries in entries(), at in any::<proptest::sample::Index>(), flip in 1u8..=255) {
            let (mut bytes, ends) = encode(&entries);
            // Anywhere but the dbid, which ZooKeeper does not check either.
            let at = at.index(bytes.len());
            prop_assume!(!(8..16).contains(&at));
            bytes[at] ^= flip;
            let err = decode(&bytes).unwrap_err();
            let (file, offset, _) = err.corruption().expect("reported as damage");
            prop_assert_eq!(file, Path::new("log.100000001"));
            // Reported in the record that holds the byte or after it (a damaged length moves its end), never before.
            let record_start = std::iter::once(0).chain(ends.iter().copied()).filter(|&s| s <= at).max().unwrap_or(0);
            prop_assert!(offset as usize >= record_start && (offset as usize) < bytes.len(), "{err}");
        }

        #[test]
        fn a_cut_inside_a_record_is_refused(entries in entries(), at in any::<proptest::sample::Index>()) {
            let (mut bytes, ends) = encode(&entries);
            let at = 16 + at.index(ends[ends.len() - 1] - 16);
            prop_assume!(!ends.contains(&at));
            // A record cut while its bytes so far are zeros (the high half of its checksum) is the zero tail.
            let record_start = std::iter::once(16).chain(ends.iter().copied()).filter(|&s| s <= at).max().unwrap();
            prop_assume!(bytes[record_start..at].iter().any(|&b| b != 0));
            bytes.truncate(at);
            let err = decode(&bytes).unwrap_err();
            // Truncated, or a length past the end of the file (which bounds every length).
            prop_assert!(matches!(err.corruption(), Some((_, _, Corruption::Truncated | Corruption::BadLength { .. }))), "{err}");
        }
    }

    #[test]
    fn the_layout_is_zookeepers() {
        let record = TxnRecord {
            header: TxnHeader { client_id: 1, cxid: 2, zxid: 3, time: 4, op: op::DELETE },
            txn: Txn::Delete { path: "/a".into() },
        };
        let (bytes, _) = encode(&[(record.clone(), Some(TxnDigest { version: 2, digest: 9 }))]);
        assert_eq!(&bytes[..16], b"ZKLG\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00");
        let entry = encode_entry(&record, Some(TxnDigest { version: 2, digest: 9 }));
        assert_eq!(entry.len(), 32 + 6 + 12);
        let mut adler = adler2::Adler32::new();
        adler.write_slice(&entry);
        assert_eq!(&bytes[16..24], &u64::from(adler.checksum()).to_be_bytes());
        assert_eq!(&bytes[24..28], &50i32.to_be_bytes());
        assert_eq!(&bytes[28..78], &entry[..]);
        assert_eq!(bytes[78], b'B');
        assert!(bytes[79..].iter().all(|&b| b == 0), "then the preallocated zeros");
    }

    #[test]
    fn old_close_sessions_and_reconfigs_decode() {
        let mut entry = TxnRecord {
            header: TxnHeader { client_id: 5, cxid: 0, zxid: 7, time: 0, op: op::CLOSE_SESSION },
            txn: Txn::CloseSession { paths: vec![] },
        }
        .encode();
        entry.truncate(32);
        assert_eq!(decode_entry(&entry).unwrap().0.txn, Txn::CloseSession { paths: vec![] });
        let set = Txn::SetData {
            path: "/zookeeper/config".into(),
            data: Some(Bytes::from_static(b"server.1=x")),
            version: 3,
        };
        let mut entry = TxnRecord {
            header: TxnHeader { client_id: 0, cxid: 0, zxid: 8, time: 0, op: OP_RECONFIG },
            txn: set.clone(),
        }
        .encode();
        entry.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]);
        let (record, digest) = decode_entry(&entry).unwrap();
        assert_eq!((record.txn, digest), (set, Some(TxnDigest { version: 2, digest: 1 })));
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let record = TxnRecord {
            header: TxnHeader { client_id: 1, cxid: 2, zxid: 3, time: 4, op: op::DELETE },
            txn: Txn::Delete { path: "/a".into() },
        };
        let (mut bytes, _) = encode(&[(record, None)]);
        bytes[24..28].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err.corruption(), Some((_, 24, Corruption::BadLength { .. }))), "{err}");
    }
}
