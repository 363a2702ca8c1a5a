//! ZooKeeper's error codes (`KeeperException.Code`) and op codes (`ZooDefs.OpCode`), with their wire values.

/// A ZooKeeper error code, as carried in reply headers, `ErrorTxn` and multi results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum Code {
    #[error("ok")]
    Ok = 0,
    #[error("system error")]
    SystemError = -1,
    #[error("runtime inconsistency")]
    RuntimeInconsistency = -2,
    #[error("data inconsistency")]
    DataInconsistency = -3,
    #[error("connection loss")]
    ConnectionLoss = -4,
    #[error("marshalling error")]
    MarshallingError = -5,
    #[error("unimplemented")]
    Unimplemented = -6,
    #[error("operation timeout")]
    OperationTimeout = -7,
    #[error("bad arguments")]
    BadArguments = -8,
    #[error("unknown session")]
    UnknownSession = -12,
    #[error("new config has no quorum")]
    NewConfigNoQuorum = -13,
    #[error("reconfig in progress")]
    ReconfigInProgress = -14,
    #[error("api error")]
    ApiError = -100,
    #[error("no node")]
    NoNode = -101,
    #[error("not authorized")]
    NoAuth = -102,
    #[error("bad version")]
    BadVersion = -103,
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals = -108,
    #[error("node exists")]
    NodeExists = -110,
    #[error("directory not empty")]
    NotEmpty = -111,
    #[error("session expired")]
    SessionExpired = -112,
    #[error("invalid callback")]
    InvalidCallback = -113,
    #[error("invalid ACL")]
    InvalidAcl = -114,
    #[error("authentication failed")]
    AuthFailed = -115,
    #[error("session moved")]
    SessionMoved = -118,
    #[error("not a read-only call")]
    NotReadOnly = -119,
    #[error("ephemeral on local session")]
    EphemeralOnLocalSession = -120,
    #[error("no watcher")]
    NoWatcher = -121,
    #[error("request timeout")]
    RequestTimeout = -122,
    #[error("reconfig disabled")]
    ReconfigDisabled = -123,
    #[error("session closed: requires SASL auth")]
    SessionClosedRequireSaslAuth = -124,
    #[error("quota exceeded")]
    QuotaExceeded = -125,
    #[error("operation throttled")]
    Throttled = -127,
}

impl Code {
    /// The wire value.
    pub fn value(self) -> i32 {
        self as i32
    }

    /// The code with this wire value.
    pub fn from_value(v: i32) -> Option<Code> {
        use Code::*;
        const ALL: [Code; 32] = [
            Ok,
            SystemError,
            RuntimeInconsistency,
            DataInconsistency,
            ConnectionLoss,
            MarshallingError,
            Unimplemented,
            OperationTimeout,
            BadArguments,
            UnknownSession,
            NewConfigNoQuorum,
            ReconfigInProgress,
            ApiError,
            NoNode,
            NoAuth,
            BadVersion,
            NoChildrenForEphemerals,
            NodeExists,
            NotEmpty,
            SessionExpired,
            InvalidCallback,
            InvalidAcl,
            AuthFailed,
            SessionMoved,
            NotReadOnly,
            EphemeralOnLocalSession,
            NoWatcher,
            RequestTimeout,
            ReconfigDisabled,
            SessionClosedRequireSaslAuth,
            QuotaExceeded,
            Throttled,
        ];
        ALL.into_iter().find(|c| c.value() == v)
    }
}

/// ZooKeeper op codes (`ZooDefs.OpCode`).
#[allow(missing_docs)]
pub mod op {
    pub const NOTIFICATION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CREATE_SESSION: i32 = -10;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_values() {
        for v in -130..=1 {
            if let Some(code) = Code::from_value(v) {
                assert_eq!(code.value(), v);
            }
        }
        assert_eq!(Code::from_value(-101), Some(Code::NoNode));
        assert_eq!(Code::from_value(-126), None);
    }
}
