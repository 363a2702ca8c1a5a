//! The AdminServer's commands: ZooKeeper 3.8's `Commands.java`, each with its names and the keys it answers,
//! built from the server's [`Report`] (the four-letter words' source) so the two never disagree.
//!
//! Every answer is `{"command": <primary name>, "error": null | "<why>", ...keys}` (`CommandResponse`).
//! Not implemented (answered as unknown): `system_properties` (Java's system properties; Ensemble's settings
//! are all in `zoo.cfg`).

use std::time::UNIX_EPOCH;

use replication::peer::Role;
use serde_json::{json, Map, Value};

use crate::fourlw::{self, Connection, Mode, Report};
use crate::server::Ctx;

/// Each command's names, the primary first, as `Commands.java` registers them.
pub const COMMANDS: [&[&str]; 25] = [
    &["connection_stat_reset", "crst"],
    &["configuration", "conf", "config"],
    &["connections", "cons"],
    &["hash"],
    &["dirs"],
    &["dump"],
    &["environment", "env", "envi"],
    &["get_trace_mask", "gtmk"],
    &["initial_configuration", "icfg"],
    &["is_read_only", "isro"],
    &["last_snapshot", "lsnp"],
    &["leader", "lead"],
    &["monitor", "mntr"],
    &["observer_connection_stat_reset", "orst"],
    &["observers", "obsr"],
    &["ruok"],
    &["server_stats", "srvr"],
    &["set_trace_mask", "stmk"],
    &["stats", "stat"],
    &["stat_reset", "srst"],
    &["voting_view"],
    &["watches", "wchc"],
    &["watches_by_path", "wchp"],
    &["watch_summary", "wchs"],
    &["zabstate"],
];

/// Commands that answer even when the server does not serve (`CommandBase(names, serverRequired=false)`).
const NO_SERVER_NEEDED: [&str; 5] = ["environment", "get_trace_mask", "monitor", "set_trace_mask", "zabstate"];

/// The primary name of the command called `name`, if there is one.
pub fn primary_name(name: &str) -> Option<&'static str> {
    COMMANDS.iter().find(|names| names.contains(&name)).map(|names| names[0])
}

/// `GET <commandURL>`: a link to each primary name, sorted, each followed by `<br/>` (`commandLinks`).
pub fn links(command_url: &str) -> String {
    let mut names: Vec<&str> = COMMANDS.iter().map(|names| names[0]).collect();
    names.sort_unstable();
    names.iter().map(|name| format!("<a href=\"{command_url}/{name}\">{name}</a>\n<br/>\n")).collect()
}

/// `CommandResponse.toMap`: `command`, `error`, then the keys.
fn response(command: &str, error: Option<String>, mut keys: Map<String, Value>) -> Value {
    keys.insert("command".into(), Value::from(command));
    keys.insert("error".into(), error.map_or(Value::Null, Value::from));
    Value::Object(keys)
}

/// Runs the command called `name` (`Commands.runCommand`). Reads `/proc` and the data directories: call it
/// off the runtime's threads.
/// `trace_mask` is the request's `traceMask` parameter, which `set_trace_mask` takes.
pub fn run(ctx: &Ctx, name: &str, trace_mask: Option<&str>) -> Value {
    let Some(primary) = primary_name(name) else {
        return response(name, Some(format!("Unknown command: {name}")), Map::new());
    };
    if primary == "set_trace_mask" {
        return set_trace_mask(ctx, trace_mask);
    }
    match primary {
        "stat_reset" => ctx.shared.stats.reset(),
        "connection_stat_reset" => ctx.shared.conns().values().for_each(|conn| conn.counters.reset()),
        _ => {}
    }
    let mut report = crate::report::report(ctx, None);
    if !report.serving && !NO_SERVER_NEEDED.contains(&primary) {
        let error = fourlw::NOT_SERVING.trim_end().to_owned();
        return response(primary, Some(error), Map::new());
    }
    match primary {
        "watches" => report.watches_by_session = ctx.shared.watches().data_watches_by_session(),
        "watches_by_path" => report.watches_by_path = ctx.shared.watches().data_watches_by_path(),
        "hash" => report.digest_log = crate::shared::lock(&ctx.shared.digest_log).iter().copied().collect(),
        "dump" => report.dump = crate::report::dump(ctx, &report.connections),
        _ => {}
    }
    let keys = match primary {
        "leader" => leader(ctx, &report),
        "voting_view" => voting_view(ctx),
        "zabstate" => zabstate(ctx, &report),
        "last_snapshot" => last_snapshot(ctx),
        // The config file as read at start (`QuorumPeerConfig.initialConfig`).
        "initial_configuration" => {
            object(json!({ "initial_configuration": ctx.shared.config.initial_config.as_deref() }))
        }
        _ => from_report(primary, &report),
    };
    response(primary, None, keys)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The commands whose keys all come from the report.
pub fn from_report(primary: &str, r: &Report) -> Map<String, Value> {
    match primary {
        // Ensemble's observers keep no connection statistics of their own to reset.
        "ruok" | "stat_reset" | "connection_stat_reset" | "observer_connection_stat_reset" => Map::new(),
        // A leader's observers by count (their connection details are not kept); a follower serves none
        // (Ensemble has no observer masters).
        "observers" => {
            let synced = if r.mode == Mode::Leader { r.leader.synced_observers } else { 0 };
            object(json!({"synced_observers": synced, "observers": []}))
        }
        "monitor" => monitor(r),
        "server_stats" => server_stats(r),
        "stats" => {
            let mut keys = server_stats(r);
            keys.insert("connections".into(), r.connections.iter().map(|c| connection(c, true)).collect());
            keys.insert("secure_connections".into(), Value::Array(Vec::new()));
            keys
        }
        "connections" => object(json!({
            "connections": r.connections.iter().map(|c| connection(c, false)).collect::<Vec<_>>(),
            "secure_connections": [],
        })),
        "configuration" => configuration(r),
        "environment" => r.environment.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect(),
        "dirs" => object(json!({"datadir_size": r.snapshot_dir_size, "logdir_size": r.log_dir_size})),
        "get_trace_mask" => object(json!({"tracemask": r.trace_mask})),
        "is_read_only" => object(json!({"read_only": r.mode == Mode::ReadOnly})),
        "watch_summary" => object(json!({
            "num_connections": r.data_watches.connections,
            "num_paths": r.data_watches.paths,
            "num_total_watches": r.data_watches.watches,
        })),
        "watches" => {
            let by_session: Map<String, Value> =
                r.watches_by_session.iter().map(|(s, paths)| (s.to_string(), json!(paths))).collect();
            object(json!({ "session_id_to_watched_paths": by_session }))
        }
        "watches_by_path" => {
            let by_path: Map<String, Value> =
                r.watches_by_path.iter().map(|(p, sessions)| (p.clone(), json!(sessions))).collect();
            object(json!({ "path_to_session_ids": by_path }))
        }
        "hash" => object(json!({
            "digests": r.digest_log.iter().map(|&(zxid, digest)| json!({"zxid": zxid, "digest": digest as i64}))
                .collect::<Vec<_>>(),
        })),
        "dump" => dump(r),
        _ => Map::new(),
    }
}

/// `monitor`: `mntr`'s lines without the `zk_` prefix, numbers as numbers (`dumpMonitorValues`).
fn monitor(r: &Report) -> Map<String, Value> {
    let text = fourlw::answer("mntr", r).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(key, value)| {
            let key = key.strip_prefix("zk_").unwrap_or(key).to_owned();
            let value = match (value.parse::<i64>(), value.parse::<f64>()) {
                (Ok(n), _) => Value::from(n),
                (_, Ok(x)) => Value::from(x),
                _ => Value::from(value),
            };
            (key, value)
        })
        .collect()
}

/// `server_stats` (`srvr`): `ServerStats` and `BufferStats` as Jackson writes them in snake case.
fn server_stats(r: &Report) -> Map<String, Value> {
    let buffer = |last: Option<u32>, min: Option<u32>, max: Option<u32>| {
        let size = |s: Option<u32>| s.map_or(-1, i64::from);
        json!({"last_buffer_size": size(last), "min_buffer_size": size(min), "max_buffer_size": size(max)})
    };
    let mut keys = object(json!({
        "version": r.version,
        "read_only": r.mode == Mode::ReadOnly,
        "server_stats": {
            "min_latency": r.min_latency_ms,
            "avg_latency": r.avg_latency_ms,
            "max_latency": r.max_latency_ms,
            "outstanding_requests": r.outstanding_requests,
            "last_processed_zxid": r.zxid,
            "data_dir_size": r.snapshot_dir_size,
            "log_dir_size": r.log_dir_size,
            "packets_received": r.packets_received,
            "packets_sent": r.packets_sent,
            "server_state": r.mode.as_str(),
            "num_alive_client_connections": r.connections.len(),
            "uptime": r.uptime_ms,
            "provider_null": false,
            "fsync_threshold_exceed_count": 0,
            "non_mtlslocal_conn_count": 0,
            "non_mtlsremote_conn_count": 0,
            "auth_failed_count": 0,
            "client_response_stats": buffer(None, None, None),
        },
        "client_response": buffer(None, None, None),
        "node_count": r.node_count,
    }));
    if r.mode == Mode::Leader {
        let l = &r.leader;
        let stats = buffer(l.last_proposal_size, l.min_proposal_size, l.max_proposal_size);
        keys.insert("proposal_stats".into(), stats);
    }
    keys
}

/// `ServerCnxn.getConnectionInfo(brief)`.
fn connection(c: &Connection, brief: bool) -> Value {
    let mut info = object(json!({
        "remote_socket_address": c.remote.to_string(),
        "interest_ops": c.interest_ops,
        "outstanding_requests": c.queued,
        "packets_received": c.received,
        "packets_sent": c.sent,
    }));
    if !brief && c.session_id != 0 {
        info.extend(object(json!({
            "session_id": c.session_id,
            "last_operation": c.last_op,
            "established": c.established_ms,
            "session_timeout": c.session_timeout_ms,
            "last_cxid": c.last_cxid,
            "last_zxid": c.last_zxid,
            "last_response_time": c.last_response_ms,
            "last_latency": c.last_latency_ms,
            "min_latency": c.min_latency_ms,
            "avg_latency": c.avg_latency_ms,
            "max_latency": c.max_latency_ms,
        })));
    }
    Value::Object(info)
}

/// `configuration`: `ZooKeeperServerConf.toMap`.
fn configuration(r: &Report) -> Map<String, Value> {
    let c = &r.conf;
    object(json!({
        "client_port": c.client_port,
        "data_dir": c.data_dir,
        "data_log_dir": c.data_log_dir,
        "tick_time": c.tick_time_ms,
        "max_client_cnxns": c.max_client_cnxns,
        "min_session_timeout": c.min_session_timeout_ms,
        "max_session_timeout": c.max_session_timeout_ms,
        "server_id": c.server_id,
        "client_port_listen_backlog": c.client_port_listen_backlog,
    }))
}

/// `dump`: sessions by expiry time, and each session's ephemerals.
fn dump(r: &Report) -> Map<String, Value> {
    let mut expiry: Map<String, Value> = Map::new();
    if let fourlw::dump::Sessions::Expiring(sessions) = &r.dump.sessions {
        for &(session, at) in sessions {
            let ids = expiry.entry(at.to_string()).or_insert_with(|| json!([]));
            if let Value::Array(ids) = ids {
                ids.push(Value::from(session));
            }
        }
    }
    let ephemerals: Map<String, Value> =
        r.dump.ephemerals.iter().map(|(session, paths)| (session.to_string(), json!(paths))).collect();
    object(json!({"expiry_time_to_session_ids": expiry, "session_id_to_ephemeral_paths": ephemerals}))
}

/// `set_trace_mask?traceMask=N`: sets the mask `gtmk` reports, with ZooKeeper's errors.
fn set_trace_mask(ctx: &Ctx, value: Option<&str>) -> Value {
    const NAME: &str = "set_trace_mask";
    let Some(value) = value else {
        return response(NAME, Some("setTraceMask requires long traceMask argument".into()), Map::new());
    };
    let Ok(mask) = value.parse::<i64>() else {
        let error = format!("setTraceMask requires long traceMask argument, got {value}");
        return response(NAME, Some(error), Map::new());
    };
    ctx.shared.trace_mask.store(mask, std::sync::atomic::Ordering::Relaxed);
    response(NAME, None, object(json!({ "tracemask": mask })))
}

/// `leader`: whether this server leads, and its leader's id and quorum address.
fn leader(ctx: &Ctx, r: &Report) -> Map<String, Value> {
    if r.mode == Mode::Standalone {
        return Map::new();
    }
    let leader_id = match ctx.handle.role.borrow().0 {
        Role::Leading => Some(ctx.shared.my_id),
        Role::Following(id) => Some(id.0),
        Role::Looking => None,
    };
    let leader_ip = leader_id
        .and_then(|id| ctx.shared.config.servers.get(&id))
        .map_or(String::new(), |s| format!("{}:{}", s.host, s.quorum_port));
    let id = leader_id.and_then(|id| i64::try_from(id).ok()).unwrap_or(-1);
    object(json!({"is_leader": r.mode == Mode::Leader, "leader_id": id, "leader_ip": leader_ip}))
}

/// `voting_view`: each voting member's addresses (`QuorumServerView`).
fn voting_view(ctx: &Ctx) -> Map<String, Value> {
    let view: Map<String, Value> = ctx
        .shared
        .config
        .servers
        .iter()
        .filter(|(_, s)| !s.observer)
        .map(|(id, s)| {
            let client = s.client.map_or(String::new(), |a| a.to_string());
            let member = json!({
                "server_addresses": [format!("{}:{}", s.host, s.quorum_port)],
                "election_addresses": [format!("{}:{}", s.host, s.election_port)],
                "client_address": client,
                "learner_type": "participant",
            });
            (id.to_string(), member)
        })
        .collect();
    object(json!({ "current_config": view }))
}

/// `zabstate`: this member's Zab phase and last zxid.
fn zabstate(ctx: &Ctx, r: &Report) -> Map<String, Value> {
    let config = &ctx.shared.config;
    let Some(me) = config.servers.get(&ctx.shared.my_id).filter(|_| r.mode != Mode::Standalone) else {
        return object(json!({"voting": false, "zabstate": ""}));
    };
    let role = ctx.handle.role.borrow().0;
    let state = match role {
        Role::Looking => "election",
        _ if r.serving => "broadcast",
        _ => "synchronization",
    };
    let client = me.client.map_or(String::new(), |a| a.to_string());
    let zxid = u64::try_from(r.zxid).unwrap_or(0);
    object(json!({
        "myid": ctx.shared.my_id,
        "is_leader": r.mode == Mode::Leader,
        "quorum_address": multiple_addresses(&me.host, me.quorum_port),
        "election_address": multiple_addresses(&me.host, me.election_port),
        "client_address": client,
        "voting": !me.observer,
        "last_zxid": format!("0x{zxid:016x}"),
        "zab_epoch": zxid >> 32,
        "zab_counter": zxid & 0xffff_ffff,
        "zabstate": state,
    }))
}

/// A `MultipleAddresses` (one address here) as Jackson writes its getters, which is what ZooKeeper's
/// `zabstate` answers for `quorum_address` and `election_address`.
fn multiple_addresses(host: &str, port: u16) -> Value {
    let address = format!("{host}:{port}");
    json!({
        "all_addresses": [address],
        "all_host_strings": [host],
        "all_ports": [port],
        "all_reachable_addresses": [address],
        "all_reachable_addresses_or_all": [address],
        "empty": false,
        "one": address,
        "reachable_address": address,
        "reachable_or_one": address,
        "wildcard_addresses": [format!("0.0.0.0:{port}")],
    })
}

/// `last_snapshot`: the newest snapshot's zxid (hex) and when it was written (seconds), -1 without one.
fn last_snapshot(ctx: &Ctx) -> Map<String, Value> {
    let newest = snapshot::dir::list(&ctx.snap_dir).ok().and_then(|list| list.into_iter().next());
    let (zxid, timestamp) = match newest {
        Some((zxid, path)) => {
            let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            let secs = written.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(-1, |d| d.as_secs() as i64);
            (zxid, secs)
        }
        None => (-1, -1),
    };
    object(json!({"zxid": format!("{zxid:x}"), "timestamp": timestamp}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_as_commands_java() {
        assert_eq!(primary_name("mntr"), Some("monitor"));
        assert_eq!(primary_name("config"), Some("configuration"));
        assert_eq!(primary_name("nope"), None);
        assert!(links("/commands").starts_with("<a href=\"/commands/configuration\">configuration</a>\n<br/>\n"));
    }

    #[test]
    fn monitor_is_mntr_as_json() {
        let r = Report { mode: Mode::Follower, serving: true, node_count: 7, avg_latency_ms: 0.5, ..Report::default() };
        let m = monitor(&r);
        assert_eq!(m["znode_count"], json!(7));
        assert_eq!(m["avg_latency"], json!(0.5));
        assert_eq!(m["server_state"], json!("follower"));
        assert!(!m.contains_key("learners"));
    }
}
