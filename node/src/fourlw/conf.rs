//! `conf` and `envi`: the effective configuration and the environment.

use std::fmt;

use super::{Mode, Report};

/// `conf`: `ZooKeeperServer.dumpConf`, then `QuorumZooKeeperServer`'s lines. The membership ends without a
/// newline, as `QuorumMaj.toString` does.
pub(super) fn conf(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    let c = &r.conf;
    let secure = c.secure_client_port.map_or(-1, i32::from);
    writeln!(f, "clientPort={}\nsecureClientPort={secure}", c.client_port)?;
    writeln!(f, "dataDir={}\ndataDirSize={}", c.data_dir, r.snapshot_dir_size)?;
    writeln!(f, "dataLogDir={}\ndataLogSize={}", c.data_log_dir, r.log_dir_size)?;
    writeln!(f, "tickTime={}\nmaxClientCnxns={}", c.tick_time_ms, c.max_client_cnxns)?;
    writeln!(f, "minSessionTimeout={}\nmaxSessionTimeout={}", c.min_session_timeout_ms, c.max_session_timeout_ms)?;
    writeln!(f, "clientPortListenBacklog={}\nserverId={}", c.client_port_listen_backlog, c.server_id)?;
    if r.mode == Mode::Standalone {
        return Ok(());
    }
    writeln!(f, "initLimit={}\nsyncLimit={}\nelectionAlg={}", c.init_limit, c.sync_limit, c.election_alg)?;
    let peer_type = u8::from(r.mode == Mode::Observer); // LearnerType.ordinal(): PARTICIPANT 0, OBSERVER 1
    writeln!(f, "electionPort={}\nquorumPort={}\npeerType={peer_type}", c.election_port, c.quorum_port)?;
    if !r.mode.in_quorum() {
        return Ok(());
    }
    f.write_str("membership: \n")?;
    for (id, spec) in &c.members {
        writeln!(f, "server.{id}={spec}")?;
    }
    write!(f, "version={:x}", c.config_version)
}

pub(super) fn envi(f: &mut fmt::Formatter<'_>, r: &Report) -> fmt::Result {
    f.write_str("Environment:\n")?;
    for (key, value) in &r.environment {
        writeln!(f, "{key}={value}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ask, follower};
    use crate::fourlw::Mode;

    #[test]
    fn conf_of_a_quorum_member_ends_with_the_membership_and_no_newline() {
        let expected = "clientPort=2181\n\
                        secureClientPort=-1\n\
                        dataDir=/data/version-2\n\
                        dataDirSize=67108880\n\
                        dataLogDir=/datalog/version-2\n\
                        dataLogSize=1266\n\
                        tickTime=2000\n\
                        maxClientCnxns=60\n\
                        minSessionTimeout=4000\n\
                        maxSessionTimeout=40000\n\
                        clientPortListenBacklog=-1\n\
                        serverId=3\n\
                        initLimit=5\n\
                        syncLimit=2\n\
                        electionAlg=3\n\
                        electionPort=3888\n\
                        quorumPort=2888\n\
                        peerType=0\n\
                        membership: \n\
                        server.1=zk1:2888:3888:participant;0.0.0.0:2181\n\
                        server.2=zk2:2888:3888:participant;0.0.0.0:2181\n\
                        server.3=zk3:2888:3888:participant;0.0.0.0:2181\n\
                        version=0";
        assert_eq!(ask("conf", &follower()), expected);
    }

    #[test]
    fn conf_by_mode() {
        let mut r = follower();
        r.conf.config_version = 0x1_0000_0007;
        r.mode = Mode::Observer;
        let observer = ask("conf", &r);
        assert!(observer.contains("\npeerType=1\nmembership: \n"), "{observer}");
        assert!(observer.ends_with("\nversion=100000007"), "{observer}");

        r.mode = Mode::ReadOnly;
        assert!(ask("conf", &r).ends_with("quorumPort=2888\npeerType=0\n"));

        r.mode = Mode::Standalone;
        r.conf.secure_client_port = Some(2281);
        r.conf.server_id = 0;
        let standalone = ask("conf", &r);
        assert!(standalone.starts_with("clientPort=2181\nsecureClientPort=2281\n"), "{standalone}");
        assert!(standalone.ends_with("clientPortListenBacklog=-1\nserverId=0\n"), "{standalone}");
        assert!(standalone.lines().all(|l| l.split_once('=').is_some()), "{standalone}");
    }
}
