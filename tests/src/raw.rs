//! A bare ZooKeeper client session written from the protocol's jute records, for the requests that
//! `zookeeper-client` does not expose (checkWatches, removeWatches by type, explicit pings) and to read the
//! raw connect response.
//!
//! Frames are `int length | payload`. A request is `int xid | int type | body`; a reply is
//! `int xid | long zxid | int err | body`; a watch event comes with xid -1 and a ping reply with xid -2.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Op codes (ZooKeeper's `ZooDefs.OpCode`).
pub mod op {
    /// delete
    pub const DELETE: i32 = 2;
    /// exists
    pub const EXISTS: i32 = 3;
    /// getData
    pub const GET_DATA: i32 = 4;
    /// setData
    pub const SET_DATA: i32 = 5;
    /// sync
    pub const SYNC: i32 = 9;
    /// ping
    pub const PING: i32 = 11;
    /// check (outside a multi)
    pub const CHECK: i32 = 13;
    /// multi
    pub const MULTI: i32 = 14;
    /// create2
    pub const CREATE2: i32 = 15;
    /// checkWatches
    pub const CHECK_WATCHES: i32 = 17;
    /// removeWatches
    pub const REMOVE_WATCHES: i32 = 18;
    /// getEphemerals
    pub const GET_EPHEMERALS: i32 = 103;
    /// closeSession
    pub const CLOSE_SESSION: i32 = -11;
}

/// Error codes (ZooKeeper's `KeeperException.Code`).
pub mod err {
    /// OK
    pub const OK: i32 = 0;
    /// NONODE
    pub const NO_NODE: i32 = -101;
    /// NOTREADONLY: a write to a server in read-only mode
    pub const NOT_READ_ONLY: i32 = -119;
    /// NOWATCHER
    pub const NO_WATCHER: i32 = -121;
}

/// Watcher types of checkWatches and removeWatches (`WatcherType`).
pub mod watcher_type {
    /// Children
    pub const CHILDREN: i32 = 1;
    /// Data
    pub const DATA: i32 = 2;
    /// Any
    pub const ANY: i32 = 3;
}

/// A jute body under construction.
#[derive(Default)]
pub struct Body(Vec<u8>);

impl Body {
    /// An empty body.
    pub fn new() -> Body {
        Body(Vec::new())
    }
    /// Appends an `int`.
    pub fn int(mut self, v: i32) -> Body {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a `long`.
    pub fn long(mut self, v: i64) -> Body {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a `boolean`.
    pub fn boolean(mut self, v: bool) -> Body {
        self.0.push(u8::from(v));
        self
    }
    /// Appends a `buffer` (or `ustring`): `int length | bytes`.
    pub fn buffer(self, v: &[u8]) -> Body {
        let mut b = self.int(i32::try_from(v.len()).expect("short buffer"));
        b.0.extend_from_slice(v);
        b
    }
    /// Appends a null `buffer` (length -1): a znode's null data.
    pub fn null_buffer(self) -> Body {
        self.int(-1)
    }
    /// Appends a `ustring`.
    pub fn string(self, v: &str) -> Body {
        self.buffer(v.as_bytes())
    }
    /// Appends the open ACL list `[world:anyone ALL]`.
    pub fn open_acl(self) -> Body {
        self.int(1).int(31).string("world").string("anyone")
    }
    /// Appends raw bytes (an already encoded record).
    pub fn raw(mut self, bytes: &[u8]) -> Body {
        self.0.extend_from_slice(bytes);
        self
    }
    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A whole request frame: the length prefix, the header (`xid`, `op`) and `body`.
pub fn request_frame(xid: i32, op: i32, body: Body) -> Vec<u8> {
    let payload = Body::new().int(xid).int(op).raw(&body.0).0;
    let mut frame = u32::try_from(payload.len()).expect("short frame").to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// A reply to one request.
#[derive(Debug)]
pub struct Reply {
    /// The zxid in the reply header.
    pub zxid: i64,
    /// The error code (0 for OK).
    pub err: i32,
    /// The reply body.
    pub body: Vec<u8>,
}

/// A watch event received on the session: (type, state, path).
pub type Event = (i32, i32, String);

/// What a ConnectRequest asks for.
#[derive(Clone, Copy, Debug)]
pub struct Connect<'a> {
    /// The session timeout asked for.
    pub timeout_ms: i32,
    /// The session to reopen, 0 for a new one.
    pub session_id: i64,
    /// Its password.
    pub password: &'a [u8],
    /// Whether the client accepts a read-only server (`canBeReadOnly`).
    pub read_only: bool,
}

/// One session over one connection.
pub struct RawSession {
    stream: TcpStream,
    next_xid: i32,
    /// The negotiated session timeout, from the connect response.
    pub timeout_ms: i32,
    /// The session id (0 when the server refused to open or reopen the session).
    pub session_id: i64,
    /// The session password.
    pub password: Vec<u8>,
    /// The connect response's `readOnly` flag (`None` when the server left it out).
    pub read_only: Option<bool>,
    /// Watch events received so far, in order.
    pub events: Vec<Event>,
}

impl RawSession {
    /// Connects to `addr` and opens a new session asking for `timeout_ms`.
    pub async fn connect(addr: SocketAddr, timeout_ms: i32) -> std::io::Result<RawSession> {
        RawSession::reconnect(addr, timeout_ms, 0, &[0; 16]).await
    }

    /// Connects to `addr` and reopens session `session_id` with `password` (a new session if the id is 0). A
    /// refused session shows as `timeout_ms` 0.
    pub async fn reconnect(
        addr: SocketAddr,
        timeout_ms: i32,
        session_id: i64,
        password: &[u8],
    ) -> std::io::Result<RawSession> {
        RawSession::open(addr, Connect { timeout_ms, session_id, password, read_only: false }).await
    }

    /// Connects to `addr` and sends `connect`. A server that closes the connection instead of answering is an
    /// `UnexpectedEof` error; an answer too short for a ConnectResponse (a bare reply header) is an
    /// `InvalidData` error carrying its bytes in hex.
    pub async fn open(addr: SocketAddr, connect: Connect<'_>) -> std::io::Result<RawSession> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let request = Body::new()
            .int(0)
            .long(0)
            .int(connect.timeout_ms)
            .long(connect.session_id)
            .buffer(connect.password)
            .boolean(connect.read_only);
        write_frame(&mut stream, &request.0).await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no connect response within 10 s"))??;
        // protocolVersion, timeOut, sessionId and the password's length: 20 bytes at least.
        if reply.len() < 20 {
            let hex: String = reply.iter().map(|b| format!("{b:02x}")).collect();
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, hex));
        }
        let mut r = Reader(&reply);
        let _protocol = r.int();
        let timeout_ms = r.int();
        let session_id = r.long();
        let password = r.buffer();
        let read_only = (!r.0.is_empty()).then(|| r.boolean());
        Ok(RawSession { stream, next_xid: 1, timeout_ms, session_id, password, read_only, events: Vec::new() })
    }

    /// Sends one request and waits (up to 10 s) for its reply, collecting watch events and skipping ping
    /// replies on the way.
    pub async fn request(&mut self, op: i32, body: Body) -> std::io::Result<Reply> {
        let xid = if op == op::PING { -2 } else { self.next_xid };
        self.next_xid += 1;
        let frame = Body::new().int(xid).int(op);
        let mut bytes = frame.0;
        bytes.extend_from_slice(&body.0);
        write_frame(&mut self.stream, &bytes).await?;
        tokio::time::timeout(Duration::from_secs(10), self.read_reply(xid))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no reply to op {op}")))?
    }

    /// Sends a request without waiting for its reply; returns its xid.
    pub async fn send(&mut self, op: i32, body: Body) -> std::io::Result<i32> {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.stream.write_all(&request_frame(xid, op, body)).await?;
        Ok(xid)
    }

    /// Sends requests in one write (the server reads them together) without waiting for replies; returns their
    /// xids.
    pub async fn send_all(&mut self, requests: Vec<(i32, Body)>) -> std::io::Result<Vec<i32>> {
        let mut bytes = Vec::new();
        let mut xids = Vec::new();
        for (op, body) in requests {
            xids.push(self.next_xid);
            bytes.extend_from_slice(&request_frame(self.next_xid, op, body));
            self.next_xid += 1;
        }
        self.stream.write_all(&bytes).await?;
        Ok(xids)
    }

    /// The next reply, whatever its xid (watch events are collected and ping replies skipped on the way).
    pub async fn next_reply(&mut self) -> std::io::Result<(i32, Reply)> {
        self.next(None).await
    }

    async fn read_reply(&mut self, xid: i32) -> std::io::Result<Reply> {
        let (got, reply) = self.next(Some(xid)).await?;
        if got != xid {
            return Err(std::io::Error::other(format!("reply for xid {got} while waiting for {xid}")));
        }
        Ok(reply)
    }

    /// The next reply: the one to `want` (a ping's included), or any but a ping's.
    async fn next(&mut self, want: Option<i32>) -> std::io::Result<(i32, Reply)> {
        loop {
            let frame = read_frame(&mut self.stream).await?;
            let mut r = Reader(&frame);
            let (got, zxid, err) = (r.int(), r.long(), r.int());
            if got == -1 {
                let (kind, state, path) = (r.int(), r.int(), r.string());
                self.events.push((kind, state, path));
            } else if want == Some(got) || got != -2 {
                return Ok((got, Reply { zxid, err, body: r.0.to_vec() }));
            }
        }
    }

    /// Whether the server has closed the connection (reads until EOF or 20 s with nothing read, generous for a
    /// loaded machine: a server that closes answers at once; events read are kept).
    pub async fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = u32::try_from(payload.len()).expect("short frame").to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await?;
    if len > 16 << 20 {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut buf = vec![0; usize::try_from(len).expect("u32 fits usize")];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Reads jute values from a reply; panics (failing the test) on a short body.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(self.0.len() >= n, "reply body too short: {n} bytes wanted, {} left", self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    /// An `int`.
    pub fn int(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    /// A `boolean`.
    pub fn boolean(&mut self) -> bool {
        self.take(1)[0] != 0
    }
    /// A `long`.
    pub fn long(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    /// A `ustring`.
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(&self.buffer()).into_owned()
    }
    /// A `buffer` whose null (length -1) reads as `None`.
    pub fn nullable_buffer(&mut self) -> Option<Vec<u8>> {
        match self.int() {
            -1 => None,
            len => Some(self.take(usize::try_from(len).expect("a length of -1 or more")).to_vec()),
        }
    }
    /// A `buffer` (-1 for null reads as empty).
    pub fn buffer(&mut self) -> Vec<u8> {
        let len = usize::try_from(self.int()).unwrap_or(0);
        self.take(len).to_vec()
    }
}
