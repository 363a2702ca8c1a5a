//! `srvr`, `stat` and `cons`: the server summary and its client connections, as `ServerStats` and
//! `ServerCnxn.dumpConnectionInfo` print them.

use std::fmt::{self, Write as _};

use super::java::{round4, size, JavaAddr, JavaDouble};
use super::{Connection, Mode, Report};

/// `lop=` in `cons`: ZooKeeper's four-letter abbreviation of the last request's opcode (set by
/// `FinalRequestProcessor`), `NA` for none.
pub fn last_op_name(op: i32) -> &'static str {
    match op {
        11 => "PING",
        -10 => "SESS",
        -11 => "CLOS",
        14 => "MULT",
        22 => "MLTR",
        1 | 15 | 19 | 21 => "CREA",
        2 | 20 => "DELE",
        5 => "SETD",
        16 => "RECO",
        7 => "SETA",
        9 => "SYNC",
        13 => "CHEC",
        3 => "EXIS",
        4 => "GETD",
        101 => "SETW",
        105 => "STW2",
        106 => "ADDW",
        6 => "GETA",
        8 | 12 => "GETC",
        104 => "GETACN",
        17 => "CHKW",
        18 => "REMW",
        103 => "GETE",
        107 => "HOMI",
        _ => "NA",
    }
}

/// `srvr` (`clients` false) and `stat`.
pub(super) fn stat(f: &mut fmt::Formatter<'_>, r: &Report, clients: bool) -> fmt::Result {
    writeln!(f, "Zookeeper version: {}", r.version)?;
    if r.mode == Mode::ReadOnly {
        f.write_str("READ-ONLY mode; serving only read-only clients\n")?;
    }
    if clients {
        f.write_str("Clients:\n")?;
        for c in &r.connections {
            connection(f, c, true)?;
            f.write_char('\n')?;
        }
        f.write_char('\n')?;
    }
    let avg = JavaDouble(round4(r.avg_latency_ms));
    writeln!(f, "Latency min/avg/max: {}/{avg}/{}", r.min_latency_ms, r.max_latency_ms)?;
    writeln!(f, "Received: {}\nSent: {}", r.packets_received, r.packets_sent)?;
    writeln!(f, "Connections: {}\nOutstanding: {}", r.connections.len(), r.outstanding_requests)?;
    writeln!(f, "Zxid: 0x{:x}\nMode: {}\nNode count: {}", r.zxid, r.mode.as_str(), r.node_count)?;
    if r.mode == Mode::Leader {
        let l = &r.leader;
        let (last, min, max) = (size(l.last_proposal_size), size(l.min_proposal_size), size(l.max_proposal_size));
        writeln!(f, "Proposal sizes last/min/max: {last}/{min}/{max}")?;
    }
    Ok(())
}

pub(super) fn cons(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    for c in &r.connections {
        connection(f, c, false)?;
        f.write_char('\n')?;
    }
    f.write_char('\n')
}

/// `ServerCnxn.dumpConnectionInfo`: ` /addr[ops](queued=..,recved=..,sent=..[,sid=0x..,...])`.
fn connection(f: &mut fmt::Formatter<'_>, c: &Connection, brief: bool) -> fmt::Result {
    write!(f, " {}[{:x}]", JavaAddr(c.remote), c.interest_ops)?;
    write!(f, "(queued={},recved={},sent={}", c.queued, c.received, c.sent)?;
    if !brief && c.session_id != 0 {
        write!(f, ",sid=0x{:x},lop={},est={},to={}", c.session_id, c.last_op, c.established_ms, c.session_timeout_ms)?;
        if c.last_cxid >= 0 {
            write!(f, ",lcxid=0x{:x}", c.last_cxid)?;
        }
        write!(f, ",lzxid=0x{:x},lresp={},llat={}", c.last_zxid, c.last_response_ms, c.last_latency_ms)?;
        write!(f, ",minlat={},avglat={},maxlat={}", c.min_latency_ms, c.avg_latency_ms, c.max_latency_ms)?;
    }
    f.write_char(')')
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

    use super::super::tests::{ask, follower};
    use super::last_op_name;
    use crate::fourlw::{Connection, Mode};

    #[test]
    fn srvr_matches_zookeeper() {
        let expected = "Zookeeper version: 3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC\n\
                        Latency min/avg/max: 0/4.25/12\n\
                        Received: 45\n\
                        Sent: 44\n\
                        Connections: 2\n\
                        Outstanding: 0\n\
                        Zxid: 0x100000042\n\
                        Mode: follower\n\
                        Node count: 1005\n";
        assert_eq!(ask("srvr", &follower()), expected);
    }

    #[test]
    fn stat_lists_clients_briefly_and_a_leader_adds_proposal_sizes() {
        let mut r = follower();
        r.mode = Mode::Leader;
        r.avg_latency_ms = 0.0;
        r.leader.last_proposal_size = Some(120);
        r.leader.min_proposal_size = Some(36);
        r.leader.max_proposal_size = Some(4096);
        let expected = "Zookeeper version: 3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC\n\
                        Clients:\n \
                        /10.0.0.7:50412[1](queued=0,recved=153,sent=152)\n \
                        /127.0.0.1:53422[0](queued=0,recved=1,sent=0)\n\
                        \n\
                        Latency min/avg/max: 0/0.0/12\n\
                        Received: 45\n\
                        Sent: 44\n\
                        Connections: 2\n\
                        Outstanding: 0\n\
                        Zxid: 0x100000042\n\
                        Mode: leader\n\
                        Node count: 1005\n\
                        Proposal sizes last/min/max: 120/36/4096\n";
        assert_eq!(ask("stat", &r), expected);
    }

    #[test]
    fn stat_of_a_fresh_leader_prints_minus_one_sizes_and_read_only_says_so() {
        let mut r = follower();
        r.mode = Mode::Leader;
        assert!(ask("srvr", &r).ends_with("Mode: leader\nNode count: 1005\nProposal sizes last/min/max: -1/-1/-1\n"));
        r.mode = Mode::ReadOnly;
        let srvr = ask("srvr", &r);
        assert!(srvr.contains("UTC\nREAD-ONLY mode; serving only read-only clients\nLatency"), "{srvr}");
        assert!(srvr.contains("\nMode: read-only\n"), "{srvr}");
        assert!(!srvr.contains("Proposal"), "{srvr}");
    }

    #[test]
    fn cons_prints_session_fields_only_for_connections_with_a_session() {
        let mut r = follower();
        let fresh_session = Connection {
            remote: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 40001, 0, 0)),
            session_id: -0x7f00_0000_0000_0001, // high bit set: Java prints two's complement
            session_timeout_ms: 4000,
            established_ms: 5,
            ..Connection::default()
        };
        r.connections.push(fresh_session);
        let expected = " /10.0.0.7:50412[1](queued=0,recved=153,sent=152,sid=0x1000003a4c20001,lop=GETD,\
                        est=1700000000123,to=30000,lcxid=0x96,lzxid=0x100000042,lresp=987654,llat=1,\
                        minlat=0,avglat=0,maxlat=12)\n \
                        /127.0.0.1:53422[0](queued=0,recved=1,sent=0)\n \
                        /0:0:0:0:0:0:0:1:40001[0](queued=0,recved=0,sent=0,sid=0x80ffffffffffffff,lop=NA,\
                        est=5,to=4000,lzxid=0xffffffffffffffff,lresp=0,llat=0,minlat=0,avglat=0,maxlat=0)\n\
                        \n";
        assert_eq!(ask("cons", &r), expected);
    }

    #[test]
    fn last_op_names() {
        assert_eq!(last_op_name(11), "PING");
        assert_eq!(last_op_name(-10), "SESS");
        assert_eq!(last_op_name(15), "CREA");
        assert_eq!(last_op_name(12), "GETC");
        assert_eq!(last_op_name(104), "GETACN");
        assert_eq!(last_op_name(999), "NA");
    }
}
