//! The session handshake.
//!
//! ```text
//!  ConnectRequest   int protocolVersion | long lastZxidSeen | int timeOut | long sessionId | buffer passwd
//!                   [ | boolean readOnly ]      (absent from clients older than 3.4)
//!  ConnectResponse  int protocolVersion | int timeOut | long sessionId | buffer passwd [ | boolean readOnly ]
//! ```

use bytes::{Buf, Bytes};
use tree::jute::{JuteError, JuteRead, JuteWrite};

/// A client's ConnectRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout: i32,
    pub session_id: i64,
    pub passwd: Bytes,
    /// `None` when the client did not send the flag at all.
    pub read_only: Option<bool>,
}

/// The server's ConnectResponse.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout: i32,
    pub session_id: i64,
    pub passwd: Bytes,
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    /// Decodes the record (without the frame's length prefix).
    pub fn read(buf: &mut impl Buf) -> Result<ConnectRequest, JuteError> {
        Ok(ConnectRequest {
            protocol_version: buf.read_int()?,
            last_zxid_seen: buf.read_long()?,
            timeout: buf.read_int()?,
            session_id: buf.read_long()?,
            passwd: buf.read_buffer()?,
            read_only: if buf.has_remaining() { Some(buf.read_bool()?) } else { None },
        })
    }

    /// Encodes the record.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.write_int(self.protocol_version);
        out.write_long(self.last_zxid_seen);
        out.write_int(self.timeout);
        out.write_long(self.session_id);
        out.write_buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            out.write_bool(ro);
        }
    }
}

impl ConnectResponse {
    /// Decodes the record.
    pub fn read(buf: &mut impl Buf) -> Result<ConnectResponse, JuteError> {
        Ok(ConnectResponse {
            protocol_version: buf.read_int()?,
            timeout: buf.read_int()?,
            session_id: buf.read_long()?,
            passwd: buf.read_buffer()?,
            read_only: if buf.has_remaining() { Some(buf.read_bool()?) } else { None },
        })
    }

    /// Encodes the record.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.write_int(self.protocol_version);
        out.write_int(self.timeout);
        out.write_long(self.session_id);
        out.write_buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            out.write_bool(ro);
        }
    }
}
