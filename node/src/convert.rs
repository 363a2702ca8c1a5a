//! Client requests (`proto`) into the writes that prep checks (`tree::prep`), and writes into the bytes a
//! follower forwards to its leader (the client's own op code and request body, so the leader decodes them with
//! the client decoder; createSession carries its timeout as one int).

use bytes::Bytes;
use proto::records::Request as Wire;
use tree::code::op;
use tree::jute::{JuteError, JuteRead, JuteWrite};
use tree::prep::Request;

/// The prep request a client write asks for, taking the request, so its path, data and ACL move instead of
/// being copied; `None` for an op that is not a write.
pub fn into_prep(op_code: i32, request: Wire) -> Option<Request> {
    Some(match (op_code, request) {
        (
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL,
            Wire::Create { path, data, acl, flags, ttl },
        ) => Request::Create { op: op_code, path, data, acl, flags, ttl: ttl.unwrap_or(-1) },
        (op::DELETE, Wire::Delete { path, version }) => Request::Delete { path, version },
        (op::SET_DATA, Wire::SetData { path, data, version }) => Request::SetData { path, data, version },
        (op::SET_ACL, Wire::SetAcl { path, acl, version }) => Request::SetAcl { path, acl, version },
        (op::CHECK, Wire::Check { path, version }) => Request::Check { path, version },
        (op::MULTI, Wire::Multi(ops)) => {
            Request::Multi(ops.into_iter().map(|(sub, r)| into_prep(sub, r)).collect::<Option<Vec<_>>>()?)
        }
        (op::CLOSE_SESSION, _) => Request::CloseSession,
        _ => return None,
    })
}

/// The client request a write came from (inverse of [`into_prep`]), with its op code.
fn to_wire(request: &Request) -> (i32, Wire) {
    match request {
        Request::Create { op, path, data, acl, flags, ttl } => (
            *op,
            Wire::Create {
                path: path.clone(),
                data: data.clone(),
                acl: acl.clone(),
                flags: *flags,
                ttl: (*op == op::CREATE_TTL).then_some(*ttl),
            },
        ),
        Request::Delete { path, version } => (op::DELETE, Wire::Delete { path: path.clone(), version: *version }),
        Request::SetData { path, data, version } => {
            (op::SET_DATA, Wire::SetData { path: path.clone(), data: data.clone(), version: *version })
        }
        Request::SetAcl { path, acl, version } => {
            (op::SET_ACL, Wire::SetAcl { path: path.clone(), acl: acl.clone(), version: *version })
        }
        Request::Check { path, version } => (op::CHECK, Wire::Check { path: path.clone(), version: *version }),
        Request::Multi(ops) => (op::MULTI, Wire::Multi(ops.iter().map(to_wire).collect())),
        Request::CreateSession { .. } => (op::CREATE_SESSION, Wire::Empty),
        Request::CloseSession => (op::CLOSE_SESSION, Wire::Empty),
    }
}

/// The op code and body a follower forwards for `request`.
pub fn encode(request: &Request) -> (i32, Bytes) {
    let mut body = Vec::new();
    match request {
        Request::CreateSession { timeout } => {
            body.write_int(*timeout);
            (op::CREATE_SESSION, Bytes::from(body))
        }
        _ => {
            let (op_code, wire) = to_wire(request);
            wire.write(&mut body);
            (op_code, Bytes::from(body))
        }
    }
}

/// The write a forwarded op code and body stand for.
pub fn decode(op_code: i32, body: &[u8]) -> Result<Request, JuteError> {
    let mut buf = body;
    let request = match op_code {
        op::CREATE_SESSION => Request::CreateSession { timeout: buf.read_int()? },
        op::CLOSE_SESSION => Request::CloseSession,
        _ => {
            let wire = Wire::read(op_code, &mut buf)?;
            into_prep(op_code, wire).ok_or_else(|| JuteError::Invalid(format!("op {op_code} is not a write")))?
        }
    };
    if !buf.is_empty() {
        return Err(JuteError::Invalid(format!("{} bytes after a forwarded request", buf.len())));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tree::acl::open_acl_unsafe;

    #[test]
    fn writes_survive_forwarding() {
        let create = |op, flags, ttl| Request::Create {
            op,
            path: "/a".into(),
            data: Some(Bytes::from_static(b"x")),
            acl: open_acl_unsafe(),
            flags,
            ttl,
        };
        let requests = vec![
            create(op::CREATE, 0, -1),
            create(op::CREATE2, 3, -1),
            create(op::CREATE_CONTAINER, 4, -1),
            create(op::CREATE_TTL, 5, 1000),
            Request::Delete { path: "/a".into(), version: 3 },
            Request::SetData { path: "/a".into(), data: Some(Bytes::from_static(b"y")), version: -1 },
            Request::SetData { path: "/a".into(), data: Some(Bytes::new()), version: -1 },
            Request::SetData { path: "/a".into(), data: None, version: -1 },
            Request::Create {
                op: op::CREATE,
                path: "/n".into(),
                data: None,
                acl: open_acl_unsafe(),
                flags: 0,
                ttl: -1,
            },
            Request::SetAcl { path: "/a".into(), acl: open_acl_unsafe(), version: 0 },
            Request::Check { path: "/a".into(), version: 1 },
            Request::Multi(vec![create(op::CREATE, 0, -1), Request::Delete { path: "/a".into(), version: -1 }]),
            Request::CreateSession { timeout: 30_000 },
            Request::CloseSession,
        ];
        for request in requests {
            let (op_code, body) = encode(&request);
            assert_eq!(decode(op_code, &body).unwrap(), request);
        }
    }

    #[test]
    fn reads_and_garbage_are_refused() {
        assert!(decode(op::GET_DATA, b"\0\0\0\x02/a\0").is_err());
        assert!(decode(op::CREATE, b"\xff\xff").is_err());
        assert!(decode(op::CREATE_SESSION, b"\0\0\0\x01extra").is_err());
    }
}
