//! ZooKeeper's four-letter words (`ruok`, `srvr`, `stat`, `mntr`, ...): the text answers, byte for byte as Apache
//! ZooKeeper 3.8 writes them, so that monitoring scripts, `zkServer.sh status` and exporters parse Ensemble
//! unchanged.
//!
//! Pure: the connection code fills a [`Report`] with the server's state, calls [`answer`], writes the string and
//! closes the connection. Where each format comes from in ZooKeeper 3.8:
//!
//! - `ruok`: `RuokCommand` (`imok`, no newline, even when not serving).
//! - `srvr`, `stat`: `StatCommand`, `ServerStats.toString`, `ServerCnxn.dumpConnectionInfo` (brief),
//!   `BufferStats.toString`.
//! - `cons`: `ConsCommand`, `ServerCnxn.dumpConnectionInfo` (full).
//! - `mntr`: `MonitorCommand` (`zk_<key>\t<value>`), `ZooKeeperServer.dumpMonitorValues` and `registerMetrics`,
//!   `QuorumZooKeeperServer` (`peer_state`, `quorum_size`), `LeaderZooKeeperServer.registerMetrics`.
//! - `conf`: `ConfCommand`, `ZooKeeperServer.dumpConf`, `QuorumZooKeeperServer.dumpConf`, `QuorumMaj.toString`.
//! - `envi`: `EnvCommand`, `Environment.list`.
//! - `wchs`: `WatchCommand`, `DataTree.dumpWatchesSummary`, `WatchManager.toString`.
//! - `wchc`, `wchp`: `WatchCommand`, `WatchManager.dumpWatches` (the data watch manager only: getData, exists,
//!   persistent and recursive watches; child watches are not listed), then an empty line.
//! - `hash`: `DigestCommand` (`DataTree`'s digest log: every 128th zxid, the last 1024).
//! - `gtmk`, `stmk`: `TraceMaskCommand`, `SetTraceMaskCommand` (the mask in decimal, no newline; `stmk` reads
//!   the new mask, a big-endian long, after the word).
//! - `dirs`: `DirsCommand`.
//! - `dump`: `DumpCommand` ([`dump`]).
//! - `isro`: `IsroCommand` (`rw`, `ro`, or `null` when not serving; no newline).
//! - `crst`, `srst`: `CnxnStatResetCommand`, `StatResetCommand`.
//! - a word not in `4lw.commands.whitelist`: `NIOServerCnxn.checkFourLetterWord` with `NopCommand`.
//!
//! Every answer but `ruok`, `envi` and `isro` is [`NOT_SERVING`] while the server is not serving (ZooKeeper's
//! `isZKServerRunning()`: during election, for instance).
//!
//! Values are ZooKeeper's Java renderings: zxids, session ids and cxids in `Long.toHexString` (two's complement,
//! no leading zeros), averages in `Double.toString` (`0.0`, `4.25`), addresses in `InetSocketAddress.toString`
//! (`/127.0.0.1:53422`).

mod conf;
pub mod dump;
mod java;
mod mntr;
mod report;
mod stat;

use std::fmt;

pub use dump::Dump;
pub use report::{Conf, Connection, LeaderStats, Mode, Report, WatchSummary};
pub use stat::last_op_name;

use conf::{conf, envi};
use mntr::mntr;
use stat::{cons, stat};

/// ZooKeeper's default trace mask (`ZooTrace`): client requests, server packets, sessions, warnings.
pub const DEFAULT_TRACE_MASK: i64 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8);

/// What every command that needs a running server answers while it is not serving.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests\n";

/// Every word ZooKeeper 3.8 recognises in the first four bytes of a connection (`FourLetterCommands`).
pub const KNOWN_WORDS: [&str; 18] = [
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "hash", "isro", "mntr", "ruok", "srst", "srvr", "stat",
    "stmk", "wchc", "wchp", "wchs",
];

/// The word the first four bytes of a connection spell, if they spell one ZooKeeper knows.
///
/// ZooKeeper reads those bytes as the big-endian length of the first frame and checks them against the words
/// before anything else. A real `ConnectRequest` can never look like a word: its frame is under 100 bytes, so its
/// length's first byte is `0x00`, while every word starts with a lowercase ASCII letter, which as a length is
/// at least `0x6300_0000` (1.6 GB), far beyond `jute.maxbuffer`. The check applies only to the first frame of a
/// connection. ZooKeeper's other 4-byte code, telnet's close sequence `ff f4 ff fd`, needs no word here: as a
/// length it is negative, and refusing it closes the connection, which is all ZooKeeper does with it.
pub fn four_letter_word(first4: &[u8]) -> Option<&'static str> {
    let head = first4.get(..4)?;
    KNOWN_WORDS.iter().copied().find(|w| w.as_bytes() == head)
}

/// Whether the first four bytes of a connection are a four-letter word (see [`four_letter_word`]).
pub fn is_four_letter_word(first4: &[u8]) -> bool {
    four_letter_word(first4).is_some()
}

/// The answer to a word that is not in `4lw.commands.whitelist`.
///
/// ZooKeeper always enables `srvr` (which `zkServer.sh status` uses), and `isro` when read-only mode is on,
/// whatever the whitelist says.
pub fn not_whitelisted(word: &str) -> String {
    format!("{word} is not executed because it is not in the whitelist.\n")
}

/// The bytes ZooKeeper writes for `word` before it closes the connection, or `None` if `word` is not one of
/// [`KNOWN_WORDS`].
///
/// `crst` and `srst` only produce the confirmation; resetting the statistics is the caller's work.
pub fn answer(word: &str, report: &Report) -> Option<String> {
    let word = KNOWN_WORDS.iter().copied().find(|w| *w == word)?;
    Some(Answer { word, report }.to_string())
}

/// One answer as a `Display`, so that the renderers can use `?` (writing into a `String` cannot fail).
struct Answer<'a> {
    word: &'static str,
    report: &'a Report,
}

impl fmt::Display for Answer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        match self.word {
            "ruok" => f.write_str("imok"),
            "envi" => envi(f, r),
            "isro" => f.write_str(match (r.serving, r.mode) {
                (false, _) => "null",
                (true, Mode::ReadOnly) => "ro",
                (true, _) => "rw",
            }),
            // `TraceMaskCommand` and `SetTraceMaskCommand` answer whether or not the server serves.
            "gtmk" | "stmk" => write!(f, "{}", r.trace_mask),
            "hash" if !r.serving => f.write_str(NOT_SERVING.trim_end()),
            _ if !r.serving => f.write_str(NOT_SERVING),
            "srvr" => stat(f, r, false),
            "stat" => stat(f, r, true),
            "cons" => cons(f, r),
            "mntr" => mntr(f, r),
            "conf" => conf(f, r),
            "wchs" => {
                let w = r.data_watches;
                writeln!(f, "{} connections watching {} paths\nTotal watches:{}", w.connections, w.paths, w.watches)
            }
            "dirs" => writeln!(f, "datadir_size: {}\nlogdir_size: {}", r.snapshot_dir_size, r.log_dir_size),
            "dump" => dump::dump(f, &r.dump),
            // `WatchManager.dumpWatches`, then `WatchCommand`'s empty line.
            "wchc" => {
                for (session, paths) in &r.watches_by_session {
                    writeln!(f, "0x{session:x}")?;
                    paths.iter().try_for_each(|path| writeln!(f, "\t{path}"))?;
                }
                writeln!(f)
            }
            "wchp" => {
                for (path, sessions) in &r.watches_by_path {
                    writeln!(f, "{path}")?;
                    sessions.iter().try_for_each(|session| writeln!(f, "\t0x{session:x}"))?;
                }
                writeln!(f)
            }
            // `DigestCommand`: `Long.toHexString(zxid) + ": " + digest`, the digest a signed long.
            "hash" => r.digest_log.iter().try_for_each(|&(zxid, digest)| writeln!(f, "{zxid:x}: {}", digest as i64)),
            "crst" => f.write_str("Connection stats reset.\n"),
            "srst" => f.write_str("Server stats reset.\n"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const VERSION: &str = "3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC";

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((a, port))
    }

    /// A follower of a 3-node ensemble with a client session and the `stat` asker connected.
    pub(super) fn follower() -> Report {
        let session = Connection {
            remote: v4([10, 0, 0, 7], 50412),
            interest_ops: 1,
            received: 153,
            sent: 152,
            session_id: 0x0100_0003_a4c2_0001,
            last_op: last_op_name(4).to_owned(),
            established_ms: 1_700_000_000_123,
            session_timeout_ms: 30_000,
            last_cxid: 0x96,
            last_zxid: 0x1_0000_0042,
            last_response_ms: 987_654,
            last_latency_ms: 1,
            min_latency_ms: 0,
            avg_latency_ms: 0,
            max_latency_ms: 12,
            ..Connection::default()
        };
        let asker = Connection { remote: v4([127, 0, 0, 1], 53422), received: 1, ..Connection::default() };
        Report {
            version: VERSION.to_owned(),
            mode: Mode::Follower,
            serving: true,
            peer_state: "following - broadcast".to_owned(),
            zxid: 0x1_0000_0042,
            node_count: 1005,
            min_latency_ms: 0,
            avg_latency_ms: 4.25,
            max_latency_ms: 12,
            packets_received: 45,
            packets_sent: 44,
            outstanding_requests: 0,
            uptime_ms: 1_473_697,
            connections: vec![session, asker],
            watch_count: 3,
            data_watches: WatchSummary { connections: 1, paths: 2, watches: 2 },
            ephemerals_count: 1,
            approximate_data_size: 269,
            global_sessions: 1,
            local_sessions: 0,
            open_file_descriptors: 75,
            max_file_descriptors: 4096,
            quorum_size: 3,
            leader: LeaderStats::default(),
            observer_master_id: -1,
            conf: Conf {
                client_port: 2181,
                secure_client_port: None,
                data_dir: "/data/version-2".to_owned(),
                data_log_dir: "/datalog/version-2".to_owned(),
                tick_time_ms: 2000,
                max_client_cnxns: 60,
                min_session_timeout_ms: 4000,
                max_session_timeout_ms: 40000,
                client_port_listen_backlog: -1,
                server_id: 3,
                init_limit: 5,
                sync_limit: 2,
                election_alg: 3,
                election_port: 3888,
                quorum_port: 2888,
                members: (1..=3).map(|id| (id, format!("zk{id}:2888:3888:participant;0.0.0.0:2181"))).collect(),
                config_version: 0,
            },
            snapshot_dir_size: 67_108_880,
            log_dir_size: 1266,
            environment: vec![
                ("zookeeper.version".to_owned(), VERSION.to_owned()),
                ("host.name".to_owned(), "zk3".to_owned()),
            ],
            extra: vec![("ensemble_fsync_p99_us".to_owned(), "850".to_owned())],
            trace_mask: DEFAULT_TRACE_MASK,
            watches_by_session: Vec::new(),
            watches_by_path: Vec::new(),
            digest_log: Vec::new(),
            dump: Dump::default(),
        }
    }

    pub(super) fn ask(word: &str, r: &Report) -> String {
        answer(word, r).unwrap_or_else(|| panic!("{word} not answered"))
    }

    #[test]
    fn envi_wchs_dirs() {
        let r = follower();
        let envi = ask("envi", &r);
        assert_eq!(envi, format!("Environment:\nzookeeper.version={VERSION}\nhost.name=zk3\n"));
        assert_eq!(ask("wchs", &r), "1 connections watching 2 paths\nTotal watches:2\n");
        assert_eq!(ask("dirs", &r), "datadir_size: 67108880\nlogdir_size: 1266\n");
        assert_eq!(ask("crst", &r), "Connection stats reset.\n");
        assert_eq!(ask("srst", &r), "Server stats reset.\n");
    }

    #[test]
    fn ruok_and_isro_have_no_newline() {
        let mut r = follower();
        assert_eq!(ask("ruok", &r), "imok");
        assert_eq!(ask("isro", &r), "rw");
        r.mode = Mode::ReadOnly;
        assert_eq!(ask("isro", &r), "ro");
        r.serving = false;
        assert_eq!(ask("isro", &r), "null");
        assert_eq!(ask("ruok", &r), "imok");
    }

    #[test]
    fn a_server_not_serving_says_so_except_for_ruok_envi_isro() {
        let r = Report { serving: false, ..follower() };
        for word in ["srvr", "stat", "cons", "mntr", "conf", "wchs", "wchc", "wchp", "dirs", "dump", "crst", "srst"] {
            assert_eq!(ask(word, &r), "This ZooKeeper instance is not currently serving requests\n", "{word}");
        }
        assert_eq!(ask("hash", &r), "This ZooKeeper instance is not currently serving requests", "print, not println");
        assert_eq!(ask("gtmk", &r), "306", "the trace mask answers whether or not the server serves");
        assert!(ask("envi", &r).starts_with("Environment:\n"));
    }

    #[test]
    fn watch_dumps_digest_log_and_trace_mask_in_zookeepers_formats() {
        let r = Report {
            watches_by_session: vec![(0x1000a, vec!["/a".into(), "/b".into()]), (0x2000b, vec!["/a".into()])],
            watches_by_path: vec![("/a".into(), vec![0x1000a, 0x2000b]), ("/b".into(), vec![0x1000a])],
            digest_log: vec![(0x100000080, 1234), (0x100000100, u64::MAX)],
            trace_mask: 4660,
            ..follower()
        };
        assert_eq!(ask("wchc", &r), "0x1000a\n\t/a\n\t/b\n0x2000b\n\t/a\n\n");
        assert_eq!(ask("wchp", &r), "/a\n\t0x1000a\n\t0x2000b\n/b\n\t0x1000a\n\n");
        assert_eq!(ask("hash", &r), "100000080: 1234\n100000100: -1\n");
        assert_eq!((ask("gtmk", &r), ask("stmk", &r)), ("4660".into(), "4660".into()));
        let empty = Report { trace_mask: DEFAULT_TRACE_MASK, ..follower() };
        assert_eq!(
            (ask("wchc", &empty), ask("wchp", &empty), ask("hash", &empty)),
            ("\n".into(), "\n".into(), "".into())
        );
    }

    #[test]
    fn whitelist_message() {
        assert_eq!(not_whitelisted("mntr"), "mntr is not executed because it is not in the whitelist.\n");
    }

    #[test]
    fn words_zookeeper_does_not_know_are_none() {
        let r = follower();
        for word in ["xxxx", "", "srvrx", "SRVR"] {
            assert_eq!(answer(word, &r), None, "{word}");
        }
    }

    #[test]
    fn recognising_a_word_in_the_first_four_bytes() {
        for word in KNOWN_WORDS {
            assert_eq!(four_letter_word(word.as_bytes()), Some(word));
            assert!(is_four_letter_word(word.as_bytes()));
        }
        assert_eq!(four_letter_word(b"ruok\n"), Some("ruok"));
        // A ConnectRequest frame: length 44, then protocolVersion 0.
        assert!(!is_four_letter_word(&[0, 0, 0, 44, 0, 0, 0, 0]));
        assert!(!is_four_letter_word(b"ruo"));
        assert!(!is_four_letter_word(b"RUOK"));
        assert!(!is_four_letter_word(&[0xff, 0xf4, 0xff, 0xfd]));
    }
}
