//! `mntr`: the monitoring values as `zk_<key>\t<value>` lines (`MonitorCommand`).

use std::fmt;

use super::java::{round4, size, JavaDouble};
use super::{Mode, Report};

/// `mntr`: `dumpMonitorValues` first, then the gauges in the order ZooKeeper registers them (its own output
/// follows a hash map's order; scripts look keys up by name), then [`Report::extra`].
pub(super) fn mntr(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    let mut kv = |key: &str, value: &dyn fmt::Display| writeln!(f, "zk_{key}\t{value}");
    kv("version", &r.version)?;
    kv("server_state", &r.mode.as_str())?;
    if r.mode.in_quorum() {
        kv("peer_state", &r.peer_state)?;
    }
    if r.mode == Mode::Observer {
        kv("observer_master_id", &r.observer_master_id)?;
    }
    kv("avg_latency", &JavaDouble(round4(r.avg_latency_ms)))?;
    kv("max_latency", &r.max_latency_ms)?;
    kv("min_latency", &r.min_latency_ms)?;
    kv("packets_received", &r.packets_received)?;
    kv("packets_sent", &r.packets_sent)?;
    kv("num_alive_connections", &r.connections.len())?;
    kv("outstanding_requests", &r.outstanding_requests)?;
    kv("uptime", &r.uptime_ms)?;
    kv("znode_count", &r.node_count)?;
    kv("watch_count", &r.watch_count)?;
    kv("ephemerals_count", &r.ephemerals_count)?;
    kv("approximate_data_size", &r.approximate_data_size)?;
    kv("global_sessions", &r.global_sessions)?;
    kv("local_sessions", &r.local_sessions)?;
    kv("open_file_descriptor_count", &r.open_file_descriptors)?;
    kv("max_file_descriptor_count", &r.max_file_descriptors)?;
    if r.mode.in_quorum() {
        kv("quorum_size", &r.quorum_size)?;
    }
    if r.mode == Mode::Leader {
        let l = &r.leader;
        kv("learners", &l.learners)?;
        kv("synced_followers", &l.synced_followers)?;
        kv("synced_non_voting_followers", &l.synced_non_voting_followers)?;
        kv("synced_observers", &l.synced_observers)?;
        kv("pending_syncs", &l.pending_syncs)?;
        kv("leader_uptime", &l.leader_uptime_ms)?;
        kv("last_proposal_size", &size(l.last_proposal_size))?;
        kv("max_proposal_size", &size(l.max_proposal_size))?;
        kv("min_proposal_size", &size(l.min_proposal_size))?;
    }
    for (key, value) in &r.extra {
        kv(key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ask, follower};
    use crate::fourlw::{LeaderStats, Mode};

    #[test]
    fn mntr_is_tab_separated_zk_lines_with_quorum_keys_for_a_follower() {
        let expected = [
            "zk_version\t3.8.4-ensemble-0.1.0, built on 2025-01-01 00:00 UTC",
            "zk_server_state\tfollower",
            "zk_peer_state\tfollowing - broadcast",
            "zk_avg_latency\t4.25",
            "zk_max_latency\t12",
            "zk_min_latency\t0",
            "zk_packets_received\t45",
            "zk_packets_sent\t44",
            "zk_num_alive_connections\t2",
            "zk_outstanding_requests\t0",
            "zk_uptime\t1473697",
            "zk_znode_count\t1005",
            "zk_watch_count\t3",
            "zk_ephemerals_count\t1",
            "zk_approximate_data_size\t269",
            "zk_global_sessions\t1",
            "zk_local_sessions\t0",
            "zk_open_file_descriptor_count\t75",
            "zk_max_file_descriptor_count\t4096",
            "zk_quorum_size\t3",
            "zk_ensemble_fsync_p99_us\t850",
        ];
        let mut want = expected.join("\n");
        want.push('\n');
        assert_eq!(ask("mntr", &follower()), want);
    }

    #[test]
    fn mntr_of_a_leader_adds_learner_keys_before_the_extras() {
        let mut r = follower();
        r.mode = Mode::Leader;
        r.peer_state = "leading - broadcast".to_owned();
        r.avg_latency_ms = 1.0 / 3.0;
        r.leader = LeaderStats {
            learners: 2,
            synced_followers: 2,
            synced_non_voting_followers: 0,
            synced_observers: 0,
            pending_syncs: 0,
            leader_uptime_ms: 5000,
            last_proposal_size: Some(120),
            min_proposal_size: Some(36),
            max_proposal_size: None,
        };
        let out = ask("mntr", &r);
        let tail = "zk_quorum_size\t3\n\
                    zk_learners\t2\n\
                    zk_synced_followers\t2\n\
                    zk_synced_non_voting_followers\t0\n\
                    zk_synced_observers\t0\n\
                    zk_pending_syncs\t0\n\
                    zk_leader_uptime\t5000\n\
                    zk_last_proposal_size\t120\n\
                    zk_max_proposal_size\t-1\n\
                    zk_min_proposal_size\t36\n\
                    zk_ensemble_fsync_p99_us\t850\n";
        assert!(out.ends_with(tail), "{out}");
        assert!(out.contains("\nzk_server_state\tleader\nzk_peer_state\tleading - broadcast\n"), "{out}");
        assert!(out.contains("\nzk_avg_latency\t0.3333\n"), "{out}");
    }

    #[test]
    fn mntr_of_an_observer_names_its_master_and_no_leader_keys() {
        let mut r = follower();
        r.mode = Mode::Observer;
        r.peer_state = "observing - broadcast".to_owned();
        r.observer_master_id = 2;
        let out = ask("mntr", &r);
        let head = "zk_server_state\tobserver\nzk_peer_state\tobserving - broadcast\nzk_observer_master_id\t2\n";
        assert!(out.contains(head), "{out}");
        assert!(out.contains("\nzk_quorum_size\t3\n"), "{out}");
        assert!(!out.contains("zk_learners") && !out.contains("zk_synced_"), "{out}");
        assert!(!ask("mntr", &follower()).contains("observer_master_id"), "only an observer prints it");
    }

    #[test]
    fn mntr_of_a_standalone_server_has_no_quorum_or_leader_keys() {
        let mut r = follower();
        r.mode = Mode::Standalone;
        let out = ask("mntr", &r);
        assert!(out.starts_with("zk_version\t3.8.4"), "{out}");
        assert!(out.contains("\nzk_server_state\tstandalone\n"), "{out}");
        for key in ["zk_peer_state", "zk_quorum_size", "zk_learners", "zk_synced_followers", "zk_pending_syncs"] {
            assert!(!out.contains(key), "{key} in {out}");
        }
        assert!(out.lines().all(|l| l.starts_with("zk_") && l.split('\t').count() == 2), "{out}");
    }
}
