//! ZooKeeper's Prometheus endpoint (`metricsProvider.className=...PrometheusMetricsProvider`), scraped by a
//! real Prometheus (Debian's `prometheus` package, which `scripts/test` installs with `promtool`).
//!
//! A 3-node cluster serves `/metrics` on a port per node. The test checks each scrape's families against
//! ZooKeeper 3.8's names and types (`testdata/zookeeper-3.8/metrics-names.txt`, derived from its source:
//! Debian's ZooKeeper has no Prometheus provider jar, so it cannot be scraped itself), that the gauges agree
//! with `mntr`, that `promtool check metrics` parses the output (lint findings only on ZooKeeper's own names,
//! which break Prometheus' naming rules and which dashboards depend on), and that Prometheus scrapes every
//! node (`up == 1`) and answers queries for the series dashboards use.
//!
//! With `ENSEMBLE_TESTS_SERVER=zookeeper` the test fails at once, saying why: it is never skipped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ensemble_tests::client::PERSISTENT;
use ensemble_tests::process::Server;
use ensemble_tests::{connect, free_ports, Cluster, Options};

/// ZooKeeper's Prometheus provider class.
const PROVIDER: &str = "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";

/// Families every node must export: the ones the community dashboards chart.
const EVERY_NODE: [&str; 17] = [
    "znode_count",
    "watch_count",
    "ephemerals_count",
    "approximate_data_size",
    "outstanding_requests",
    "num_alive_connections",
    "packets_received",
    "avg_latency",
    "quorum_size",
    "readlatency",
    "updatelatency",
    "fsynctime",
    "commit_count",
    "ensemble_wal_records_per_fsync",
    "election_time",
    "looking_count",
    "ensemble_peer_send_queue_bytes",
];

/// ZooKeeper 3.8's families and their types, from the test data.
fn zookeeper_names() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/zookeeper-3.8/metrics-names.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("name type");
            (name.to_owned(), kind.trim().to_owned())
        })
        .collect()
}

/// `GET path` over HTTP/1.0; the status code and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
    Ok((status, body))
}

/// `# TYPE name type` lines of a scrape.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("name type");
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// The value of the unlabelled sample `name` in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A `zk_key\tvalue` of an `mntr` answer.
fn mntr_value(mntr: &str, key: &str) -> Option<f64> {
    mntr.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('\t')?.parse().ok())
}

/// The Prometheus server of the test, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, port: u16, targets: &[u16]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ensemble\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus.log");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = ensemble_tests::process::spawn(cmd).unwrap_or_else(|e| {
            panic!("start prometheus (Debian package `prometheus`; scripts/test installs it): {e}")
        });
        Prometheus { child, port }
    }

    /// The result vector of an instant query: each series' labels and value.
    fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let (status, body) = match http_get(self.port, &format!("/api/v1/query?query={query}")) {
            Ok(answer) => answer,
            Err(_) => return Vec::new(),
        };
        if status != 200 {
            return Vec::new();
        }
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON from the query API");
        let result = json["data"]["result"].as_array().cloned().unwrap_or_default();
        result
            .iter()
            .map(|series| {
                let labels = series["metric"].as_object().expect("labels");
                let labels = labels.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect();
                let value = series["value"][1].as_str().expect("a value").parse().expect("a number");
                (labels, value)
            })
            .collect()
    }

    /// Polls `query` until `done` holds for its result (30 s at most).
    fn until(&self, query: &str, done: impl Fn(&[(BTreeMap<String, String>, f64)]) -> bool) -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = self.query(query);
            if done(&result) {
                return result.into_iter().map(|(_, v)| v).collect();
            }
            assert!(Instant::now() < deadline, "Prometheus: {query} never held; last answer {result:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn prometheus_scrapes_zookeepers_metrics_from_every_node() {
    assert!(
        Server::from_env() != Server::ZooKeeper,
        "t70 cannot run against Apache ZooKeeper: Debian's zookeeper package ships no Prometheus metrics provider \
         jar (zookeeper-prometheus-metrics), so there is no /metrics to scrape; its names and types are checked \
         from testdata/zookeeper-3.8/metrics-names.txt instead"
    );
    let ports = free_ports(4);
    let (metrics_ports, prometheus_port) = (&ports[..3], ports[3]);
    let cluster = Cluster::start_with(Options {
        // mntr, to compare the gauges with.
        config: vec!["4lw.commands.whitelist=*".into(), format!("metricsProvider.className={PROVIDER}")],
        // The feature under test: each node's endpoint on a port of its own (they share a host).
        node_config: metrics_ports
            .iter()
            .map(|p| vec!["metricsProvider.httpHost=127.0.0.1".into(), format!("metricsProvider.httpPort={p}")])
            .collect(),
        ..Options::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = connect(&cluster.connect_string()).await;
        for i in 0..5 {
            client.create(&format!("/t70-{i}"), b"data", PERSISTENT).await.expect("create");
            client.get_data(&format!("/t70-{i}")).await.expect("read");
        }
    });

    let zookeeper = zookeeper_names();
    let leader = cluster.leader();
    for (i, &port) in metrics_ports.iter().enumerate() {
        let (status, scrape) = http_get(port, "/metrics").expect("scrape");
        assert_eq!(status, 200, "node {i}: {scrape}");
        let exported = families(&scrape);
        for name in EVERY_NODE.iter().chain(if i == leader { &["learners", "synced_followers"][..] } else { &[] }) {
            assert!(exported.contains_key(*name), "node {i} exports no {name}:\n{scrape}");
        }
        for (name, kind) in &exported {
            match zookeeper.get(name) {
                Some(theirs) => assert_eq!(kind, theirs, "node {i}: {name} is a {theirs} in ZooKeeper 3.8"),
                None => assert!(name.starts_with("ensemble_"), "node {i}: {name} is neither ZooKeeper's nor ensemble_"),
            }
        }
        // The gauges read mntr's sources: the same figures while nothing changes.
        let mntr = cluster.four_letter(i, "mntr");
        for key in ["znode_count", "ephemerals_count", "approximate_data_size", "global_sessions", "quorum_size"] {
            let (ours, theirs) = (sample(&scrape, key), mntr_value(&mntr, &format!("zk_{key}")));
            assert_eq!(ours, theirs, "node {i}: {key} in /metrics and zk_{key} in mntr");
        }
        // Every node looked for a leader and found one; the leader synced both followers without a snapshot
        // (the logs were empty), which ZooKeeper counts as diff_count.
        assert!(sample(&scrape, "looking_count") >= Some(1.0), "node {i}: {scrape}");
        assert!(sample(&scrape, "election_time_count") >= Some(1.0), "node {i}: {scrape}");
        if i == leader {
            assert!(sample(&scrape, "diff_count") >= Some(2.0), "the leader synced 2 followers: {scrape}");
            assert_eq!(sample(&scrape, "snap_count"), Some(0.0), "{scrape}");
            assert!(scrape.contains("ensemble_follower_syncs_total{how=\"diff\"}"), "{scrape}");
        }
        let queues = scrape.lines().filter(|l| l.starts_with("ensemble_peer_send_queue_bytes{peer=")).count();
        assert_eq!(queues, 2, "node {i} is connected to its 2 peers: {scrape}");
        promtool_accepts(&scrape, &zookeeper, i);
        assert_eq!(http_get(port, "/").expect("GET /").0, 404, "only /metrics is served, as by ZooKeeper");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let prometheus = Prometheus::start(dir.path(), prometheus_port, metrics_ports);
    let up = prometheus.until("up", |r| r.len() == 3 && r.iter().all(|(_, v)| *v == 1.0));
    assert_eq!(up, vec![1.0; 3]);
    let nodes = prometheus.until("znode_count", |r| r.len() == 3);
    let nodes: BTreeSet<u64> = nodes.into_iter().map(|v| v as u64).collect();
    assert_eq!(nodes.len(), 1, "every node holds the same tree: {nodes:?}");
    let mntr_nodes = mntr_value(&cluster.four_letter(leader, "mntr"), "zk_znode_count").expect("zk_znode_count");
    assert_eq!(nodes.into_iter().next(), Some(mntr_nodes as u64));
    assert_eq!(prometheus.until("quorum_size", |r| r.len() == 3), vec![3.0; 3]);
    assert_eq!(prometheus.until("learners", |r| r.len() == 1), vec![2.0], "the leader's learners");
    let updates = prometheus.until("sum(updatelatency_count)", |r| r.len() == 1);
    assert!(updates[0] >= 5.0, "the 5 creates were answered: {updates:?}");
    let quantiles = prometheus.until("readlatency", |r| r.len() == 9);
    assert_eq!(quantiles.len(), 9, "quantiles 0.5, 0.9, 0.99 on each of 3 nodes");
    prometheus.until("sum(ensemble_wal_records_per_fsync_count)", |r| r.len() == 1 && r[0].1 > 0.0);
}

/// `promtool check metrics` parses the scrape; its lint findings may name ZooKeeper's metrics only (their names,
/// e.g. `znode_count` or the counter `commit_count` without `_total`, are what dashboards query), never ours.
fn promtool_accepts(scrape: &str, zookeeper: &BTreeMap<String, String>, node: usize) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run promtool (Debian package `prometheus`; scripts/test installs it): {e}"));
    child.stdin.take().expect("stdin").write_all(scrape.as_bytes()).expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    // promtool exits 0 when clean, 3 with lint findings only, 1 when the text does not parse.
    assert!(matches!(output.status.code(), Some(0 | 3)), "node {node}: promtool check metrics failed:\n{said}");
    for finding in said.lines().filter(|l| !l.trim().is_empty()) {
        let name = finding.split_whitespace().next().unwrap_or("");
        assert!(zookeeper.contains_key(name), "node {node}: promtool finds fault with a name of ours: {finding}");
    }
}
