//! `ensemble status HOST:PORT[,HOST:PORT...]`: one screen for an ensemble, from each server's `srvr` answer
//! (the four-letter word ZooKeeper's `zkServer.sh status` reads, allowed by every whitelist), so it works on
//! Ensemble and Apache ZooKeeper servers alike.
//!
//! ```text
//! SERVER           MODE      ZXID          LAG  OUTSTANDING  CONNECTIONS  LATENCY MIN/AVG/MAX  NODES
//! 127.0.0.1:2181   leader    0x100000004     0            0            1  0/0.1/3              5
//! 127.0.0.1:2182   follower  0x100000004     0            0            0  0/0.0/0              5
//! 127.0.0.1:2183   -         unreachable: connection refused
//! quorum: yes (leader 127.0.0.1:2181; 2 of 3 voting servers serving)
//! ```
//!
//! `LAG` is how many txns a server's last zxid is behind the leader's, in the leader's epoch (`epoch` when it is
//! still in an older one). The ensemble has a quorum when a leader serves and more than half of the voting
//! servers (those listed, less the ones that say they observe) follow it or lead. Exit code 0 with a quorum
//! (or a standalone server serving), 1 without, 2 on a usage error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{Out, Outcome, ToolError};

/// How long one server has to connect and answer.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The most of an answer read: `srvr` is a few hundred bytes.
const MAX_ANSWER: u64 = 64 * 1024;

/// `ensemble status ...`
#[derive(Args)]
pub struct StatusArgs {
    /// The servers' client addresses, comma-separated (a ZooKeeper connect string; a chroot suffix is ignored).
    servers: String,
    /// One JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// One server as `srvr` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Srvr {
    /// `Mode:` (leader, follower, observer, standalone, read-only).
    pub mode: String,
    /// `Zxid:`.
    pub zxid: i64,
    /// `Latency min/avg/max:`.
    pub latency: String,
    /// `Received:`.
    pub received: u64,
    /// `Sent:`.
    pub sent: u64,
    /// `Connections:`.
    pub connections: u64,
    /// `Outstanding:`.
    pub outstanding: u64,
    /// `Node count:`.
    pub node_count: u64,
    /// `Zookeeper version:`.
    pub version: String,
}

/// What one server said.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Answer {
    /// It serves.
    Serving(Srvr),
    /// It is up and not serving (electing a leader, syncing, or cut off).
    NotServing,
    /// No answer: the reason.
    Unreachable {
        /// Why.
        reason: String,
    },
    /// An answer that is not `srvr`'s: the reason.
    Garbled {
        /// Why.
        reason: String,
    },
}

/// One server's row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The address as given.
    pub server: String,
    /// What it said.
    #[serde(flatten)]
    pub answer: Answer,
    /// Txns behind the leader (`None`: no leader, not serving, or in an older epoch).
    pub lag: Option<i64>,
}

/// The whole ensemble.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Every server, in the order given.
    pub servers: Vec<Row>,
    /// The serving leader's address.
    pub leader: Option<String>,
    /// Voting servers (listed, less observers) that serve as leader or follower.
    pub voting_serving: usize,
    /// Voting servers listed.
    pub voting: usize,
    /// Whether a quorum serves (or, for a single server, whether it serves standalone).
    pub quorum: bool,
}

/// Runs `ensemble status`.
pub fn run(args: StatusArgs) -> Result<Outcome, ToolError> {
    let servers = parse_servers(&args.servers)?;
    let answers = std::thread::scope(|scope| {
        let asks: Vec<_> = servers.iter().map(|s| scope.spawn(move || ask(s))).collect();
        asks.into_iter()
            .map(|h| h.join().unwrap_or(Answer::Garbled { reason: "the query thread panicked".into() }))
            .collect::<Vec<_>>()
    });
    let status = summarize(servers.into_iter().zip(answers).collect());
    let mut out = Out::new();
    if args.json {
        out.json(&status)?;
    } else {
        table(&mut out, &status)?;
    }
    out.flush()?;
    Ok(if status.quorum { Outcome::Sound } else { Outcome::Problem })
}

/// The addresses of a connect string (`host:port,host:port[/chroot]`).
fn parse_servers(list: &str) -> Result<Vec<String>, ToolError> {
    let hosts = list.split_once('/').map_or(list, |(hosts, _chroot)| hosts);
    let servers: Vec<String> = hosts.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if servers.is_empty() {
        return Err(ToolError::Usage(format!("no server in {list:?}: give HOST:PORT[,HOST:PORT...]")));
    }
    Ok(servers)
}

/// Asks `server` for `srvr`.
fn ask(server: &str) -> Answer {
    let unreachable = |reason: String| Answer::Unreachable { reason };
    let addrs: Vec<SocketAddr> = match server.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => return unreachable(format!("cannot resolve: {e}")),
    };
    let Some(addr) = addrs.first() else { return unreachable("no address".into()) };
    let mut stream = match TcpStream::connect_timeout(addr, TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => return unreachable(e.to_string()),
    };
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    if let Err(e) = stream.write_all(b"srvr") {
        return unreachable(format!("cannot ask: {e}"));
    }
    let mut text = String::new();
    if let Err(e) = stream.take(MAX_ANSWER).read_to_string(&mut text) {
        return unreachable(format!("no answer: {e}"));
    }
    parse_srvr(&text)
}

/// Reads a `srvr` answer.
pub fn parse_srvr(text: &str) -> Answer {
    if text.starts_with("This ZooKeeper instance is not currently serving requests") {
        return Answer::NotServing;
    }
    let mut srvr = Srvr::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else { continue };
        let number = || value.trim().parse::<u64>().unwrap_or(0);
        seen += 1;
        match key {
            "Zookeeper version" => srvr.version = value.to_owned(),
            "Latency min/avg/max" => srvr.latency = value.to_owned(),
            "Received" => srvr.received = number(),
            "Sent" => srvr.sent = number(),
            "Connections" => srvr.connections = number(),
            "Outstanding" => srvr.outstanding = number(),
            "Zxid" => {
                let hex = value.trim().trim_start_matches("0x");
                srvr.zxid = u64::from_str_radix(hex, 16).map_or(-1, |z| z as i64);
            }
            "Mode" => srvr.mode = value.trim().to_owned(),
            "Node count" => srvr.node_count = number(),
            _ => seen -= 1,
        }
    }
    if srvr.mode.is_empty() || seen < 3 {
        let first = text.lines().next().unwrap_or("(nothing)");
        return Answer::Garbled { reason: format!("not a srvr answer: {first:?}") };
    }
    Answer::Serving(srvr)
}

/// Works out the leader, each server's lag and whether a quorum serves.
pub fn summarize(answers: Vec<(String, Answer)>) -> Status {
    let serving = |a: &Answer| match a {
        Answer::Serving(s) => Some(s.clone()),
        _ => None,
    };
    let leader = answers.iter().find_map(|(addr, a)| serving(a).filter(|s| s.mode == "leader").map(|s| (addr, s)));
    let observers = answers.iter().filter(|(_, a)| serving(a).is_some_and(|s| s.mode == "observer")).count();
    let voting = answers.len() - observers;
    let voting_serving = if leader.is_some() {
        answers.iter().filter(|(_, a)| serving(a).is_some_and(|s| s.mode == "leader" || s.mode == "follower")).count()
    } else {
        0
    };
    let standalone = answers.len() == 1 && serving(&answers[0].1).is_some_and(|s| s.mode == "standalone");
    let quorum = standalone || (leader.is_some() && voting_serving * 2 > voting);
    let leader_zxid = leader.as_ref().map(|(_, s)| s.zxid);
    let servers = answers
        .iter()
        .map(|(server, answer)| {
            let lag = match (serving(answer), leader_zxid) {
                // Only within one epoch does the zxid difference count txns.
                (Some(s), Some(l)) if s.zxid >> 32 == l >> 32 => Some(l - s.zxid),
                _ => None,
            };
            Row { server: server.clone(), answer: answer.clone(), lag }
        })
        .collect();
    Status { servers, leader: leader.map(|(a, _)| a.clone()), voting_serving, voting, quorum }
}

fn table(out: &mut Out, status: &Status) -> Result<(), ToolError> {
    let width = status.servers.iter().map(|r| r.server.len()).max().unwrap_or(6).max(6);
    out.line(format_args!(
        "{:width$}  {:10}  {:>12}  {:>5}  {:>11}  {:>11}  {:20}  {:>8}",
        "SERVER", "MODE", "ZXID", "LAG", "OUTSTANDING", "CONNECTIONS", "LATENCY MIN/AVG/MAX", "NODES"
    ))?;
    for row in &status.servers {
        let line = match &row.answer {
            Answer::Serving(s) => {
                let lag = match (row.lag, &status.leader) {
                    (Some(lag), _) => lag.to_string(),
                    (None, Some(_)) => "epoch".into(),
                    (None, None) => "-".into(),
                };
                format!(
                    "{:width$}  {:10}  {:>12}  {:>5}  {:>11}  {:>11}  {:20}  {:>8}",
                    row.server,
                    s.mode,
                    format!("0x{:x}", s.zxid),
                    lag,
                    s.outstanding,
                    s.connections,
                    s.latency,
                    s.node_count
                )
            }
            Answer::NotServing => {
                format!("{:width$}  {:10}  not serving (electing a leader or syncing)", row.server, "-")
            }
            Answer::Unreachable { reason } => format!("{:width$}  {:10}  unreachable: {reason}", row.server, "-"),
            Answer::Garbled { reason } => format!("{:width$}  {:10}  {reason}", row.server, "-"),
        };
        out.line(line)?;
    }
    let verdict = match (&status.leader, status.quorum) {
        (_, true) if status.servers.len() == 1 && status.leader.is_none() => "quorum: yes (standalone)".to_owned(),
        (Some(leader), quorum) => format!(
            "quorum: {} (leader {leader}; {} of {} voting servers serving)",
            if quorum { "yes" } else { "NO" },
            status.voting_serving,
            status.voting
        ),
        (None, _) => format!("quorum: NO (no leader serving among {} servers)", status.servers.len()),
    };
    out.line(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: &str = "Zookeeper version: 3.8.0-1, built on 2022-02-25 08:49 UTC\nLatency min/avg/max: 0/0.4/3\n\
        Received: 10\nSent: 9\nConnections: 1\nOutstanding: 0\nZxid: 0x100000004\nMode: leader\nNode count: 5\n\
        Proposal sizes last/min/max: 48/48/92\n";

    fn serving(mode: &str, zxid: i64) -> Answer {
        Answer::Serving(Srvr { mode: mode.into(), zxid, ..Srvr::default() })
    }

    #[test]
    fn parses_zookeepers_srvr() {
        let Answer::Serving(s) = parse_srvr(LEADER) else { panic!("serving") };
        assert_eq!((s.mode.as_str(), s.zxid, s.node_count, s.latency.as_str()), ("leader", 0x100000004, 5, "0/0.4/3"));
        assert_eq!(parse_srvr("This ZooKeeper instance is not currently serving requests\n"), Answer::NotServing);
        assert!(matches!(parse_srvr("imok"), Answer::Garbled { .. }));
        assert!(matches!(
            parse_srvr("srvr is not executed because it is not in the whitelist.\n"),
            Answer::Garbled { .. }
        ));
    }

    #[test]
    fn a_quorum_needs_a_leader_and_more_than_half_of_the_voters() {
        let s = |answers: Vec<Answer>| {
            summarize(answers.into_iter().enumerate().map(|(i, a)| (format!("h:{i}"), a)).collect())
        };
        let down = || Answer::Unreachable { reason: "refused".into() };
        let all = s(vec![serving("leader", 0x1_0000_0009), serving("follower", 0x1_0000_0007), down()]);
        assert!(all.quorum);
        assert_eq!(all.servers.iter().map(|r| r.lag).collect::<Vec<_>>(), [Some(0), Some(2), None]);
        assert!(!s(vec![serving("leader", 1), down(), down()]).quorum, "1 of 3");
        assert!(!s(vec![serving("follower", 1), serving("follower", 1), down()]).quorum, "no leader");
        let observed = s(vec![serving("leader", 1), serving("follower", 1), down(), serving("observer", 1)]);
        assert!(observed.quorum && observed.voting == 3, "observers do not vote");
        assert!(s(vec![serving("standalone", 1)]).quorum);
        let older = s(vec![serving("leader", 0x2_0000_0001), serving("follower", 0x1_0000_0009)]);
        assert_eq!(older.servers[1].lag, None, "another epoch");
    }

    #[test]
    fn connect_strings() {
        assert_eq!(parse_servers("a:1, b:2,c:3/app").unwrap(), ["a:1", "b:2", "c:3"]);
        assert!(parse_servers(" , ").is_err());
    }
}
