//! ZooKeeper's Prometheus metrics (`metricsProvider.className=...PrometheusMetricsProvider`): `GET /metrics` in
//! the Prometheus text format, with ZooKeeper 3.8's names and types, and Ensemble's own under `ensemble_`.
//!
//! - The gauges ZooKeeper registers with callbacks (`ZooKeeperServer.registerMetrics` and the quorum, leader
//!   and follower servers') are read at each scrape from the same [`Report`] that `mntr` prints, so the two
//!   never disagree ([`report_families`]); like ZooKeeper, a leader's gauges exist only on the leader, and
//!   `quorum_size` only on a member of a quorum.
//! - The summaries and counters ZooKeeper's `ServerMetrics` defines, where Ensemble has the event, are
//!   [`Instruments`], observed where it happens (a reply, a WAL batch, a commit, a snapshot).
//! - Counters keep ZooKeeper's names as they are (`commit_count`, no `_total`): ZooKeeper 3.8 exports through
//!   Prometheus' simpleclient 0.9, which adds no suffix, and the community dashboards query those names.
//!
//! [`Endpoint`] answers `GET /metrics` on the bounded server of [`crate::http`]; [`summary`] is ZooKeeper's
//! summary type.

pub mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use replication::message::ServerId;
use replication::monitor::{Monitor, SyncKind};

use crate::fourlw::{Mode, Report};
use crate::server::Ctx;
use summary::{Summary, ADVANCED, BASIC};

/// The text format's content type, as Prometheus' clients send it.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` endpoint, as ZooKeeper's `PrometheusMetricsProvider` serves it: `GET /metrics` answers the
/// registry in the Prometheus text format (0.0.4); every other path is 404 (its Jetty context has that one
/// servlet); another method on `/metrics` is 405.
pub struct Endpoint(pub Arc<Registry>);

impl crate::http::Handler for Endpoint {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        use crate::http::status;
        if request.uri().path() != "/metrics" {
            return status(StatusCode::NOT_FOUND, "Not Found\n");
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let registry = self.0.clone();
        match tokio::task::spawn_blocking(move || scrape(&registry)).await {
            Ok(Ok(text)) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
                response
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "metrics endpoint: the registry did not encode");
                status(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
            }
            Err(error) => {
                tracing::error!(%error, "metrics endpoint: the scrape panicked");
                status(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
            }
        }
    }
}

/// What the server observes as it works, for the metrics (nothing here feeds `mntr`, which has its own values
/// for everything it prints; these are the events `mntr` has no counterpart for).
#[derive(Clone, Debug)]
pub struct Instruments {
    /// `readlatency`: ms from a read's arrival to its reply.
    pub read_latency: Summary,
    /// `updatelatency`: ms from a write's arrival to its reply.
    pub update_latency: Summary,
    /// `fsynctime`: ms per WAL fdatasync.
    pub fsync_time: Summary,
    /// `snapshottime`: ms per snapshot written.
    pub snapshot_time: Summary,
    /// `commit_count`: txns this server committed as leader.
    pub commit_count: IntCounter,
    /// `election_time`: ms from looking for a leader to leading or following.
    pub election_time: Summary,
    /// `looking_count`: times this server began looking for a leader.
    pub looking_count: IntCounter,
    /// `diff_count`: followers this leader synced without a snapshot (DIFF, or TRUNC then DIFF).
    pub diff_count: IntCounter,
    /// `snap_count`: followers this leader synced with a snapshot.
    pub snap_count: IntCounter,
    /// `ensemble_follower_syncs_total{how}`: follower syncs begun as leader, by DIFF, TRUNC (each followed by
    /// a DIFF) and SNAP.
    pub follower_syncs: IntCounterVec,
    /// `ensemble_wal_fsync_seconds`: the fdatasync time of each WAL batch.
    pub wal_fsync_seconds: Histogram,
    /// `ensemble_wal_records_per_fsync`: the records each WAL batch (one fdatasync) made durable.
    pub wal_records_per_fsync: Histogram,
    /// `ensemble_snapshot_seconds`: the time to write each snapshot.
    pub snapshot_seconds: Histogram,
    /// `ensemble_snapshot_bytes`: the size of the last snapshot written.
    pub snapshot_bytes: prometheus::IntGauge,
}

impl Default for Instruments {
    fn default() -> Self {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("a valid histogram")
        };
        let fsync_buckets = prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("valid buckets");
        Instruments {
            read_latency: Summary::new("readlatency", "readlatency", ADVANCED),
            update_latency: Summary::new("updatelatency", "updatelatency", ADVANCED),
            fsync_time: Summary::new("fsynctime", "fsynctime", BASIC),
            snapshot_time: Summary::new("snapshottime", "snapshottime", BASIC),
            commit_count: IntCounter::new("commit_count", "commit_count").expect("a valid counter"),
            election_time: Summary::new("election_time", "election_time", BASIC),
            looking_count: IntCounter::new("looking_count", "looking_count").expect("a valid counter"),
            diff_count: IntCounter::new("diff_count", "diff_count").expect("a valid counter"),
            snap_count: IntCounter::new("snap_count", "snap_count").expect("a valid counter"),
            follower_syncs: IntCounterVec::new(
                Opts::new(
                    "ensemble_follower_syncs_total",
                    "Follower syncs begun as leader, by how: diff, trunc (each followed by a diff), snap.",
                ),
                &["how"],
            )
            .expect("a valid counter"),
            wal_fsync_seconds: histogram(
                "ensemble_wal_fsync_seconds",
                "Time of each write-ahead log fdatasync (one per batch of records).",
                fsync_buckets,
            ),
            wal_records_per_fsync: histogram(
                "ensemble_wal_records_per_fsync",
                "Records made durable by each write-ahead log batch (one fdatasync).",
                prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            ),
            snapshot_seconds: histogram(
                "ensemble_snapshot_seconds",
                "Time to write each fuzzy snapshot.",
                prometheus::exponential_buckets(0.01, 2.0, 14).expect("valid buckets"),
            ),
            snapshot_bytes: prometheus::IntGauge::new("ensemble_snapshot_bytes", "Size of the last snapshot written.")
                .expect("a valid gauge"),
        }
    }
}

impl Instruments {
    /// A request answered: its latency, as ZooKeeper's `ServerStats.updateLatency` counts it (whole ms).
    pub fn request_latency(&self, started: Instant, update: bool) {
        let ms = millis(started.elapsed());
        if update {
            self.update_latency.observe(ms);
        } else {
            self.read_latency.observe(ms);
        }
    }

    /// A WAL batch made durable (on the WAL's writer thread).
    pub fn wal_batch(&self, records: usize, fsync: Duration) {
        self.fsync_time.observe(millis(fsync));
        self.wal_fsync_seconds.observe(fsync.as_secs_f64());
        self.wal_records_per_fsync.observe(records as f64);
    }

    /// What the WAL calls after each batch.
    pub fn wal_observer(&self) -> wal::BatchObserver {
        let instruments = self.clone();
        wal::BatchObserver(Arc::new(move |records, fsync| instruments.wal_batch(records, fsync)))
    }

    /// A snapshot written in `took`, of `bytes` bytes.
    pub fn snapshot(&self, took: Duration, bytes: u64) {
        self.snapshot_time.observe(millis(took));
        self.snapshot_seconds.observe(took.as_secs_f64());
        self.snapshot_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.read_latency.clone()))?;
        registry.register(Box::new(self.update_latency.clone()))?;
        registry.register(Box::new(self.fsync_time.clone()))?;
        registry.register(Box::new(self.snapshot_time.clone()))?;
        registry.register(Box::new(self.commit_count.clone()))?;
        registry.register(Box::new(self.election_time.clone()))?;
        registry.register(Box::new(self.looking_count.clone()))?;
        registry.register(Box::new(self.diff_count.clone()))?;
        registry.register(Box::new(self.snap_count.clone()))?;
        registry.register(Box::new(self.follower_syncs.clone()))?;
        registry.register(Box::new(self.wal_fsync_seconds.clone()))?;
        registry.register(Box::new(self.wal_records_per_fsync.clone()))?;
        registry.register(Box::new(self.snapshot_seconds.clone()))?;
        registry.register(Box::new(self.snapshot_bytes.clone()))
    }
}

/// The runtime's elections and syncs, under ZooKeeper's names.
impl Monitor for Instruments {
    fn looking(&self) {
        self.looking_count.inc();
    }

    fn elected(&self, took: Duration) {
        self.election_time.observe(millis(took));
    }

    fn syncing(&self, how: SyncKind) {
        match how {
            SyncKind::Diff => self.diff_count.inc(),
            SyncKind::Snap => self.snap_count.inc(),
            // Counted by ZooKeeper as the DIFF that follows it.
            SyncKind::Trunc => {}
        }
        self.follower_syncs.with_label_values(&[how.as_str()]).inc();
    }
}

/// ZooKeeper measures in whole milliseconds.
fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

/// The registry of one server: its instruments and the values read from its report at each scrape.
pub fn registry(ctx: Arc<Ctx>) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    ctx.shared.stats.instruments.register(&registry)?;
    registry.register(Box::new(ReportCollector::new(ctx)))?;
    Ok(registry)
}

/// The registry's families in the Prometheus text format (0.0.4). Reads the server's report (the tree's
/// counters, `/proc`): call it off the runtime's threads.
pub fn scrape(registry: &Registry) -> Result<String, prometheus::Error> {
    prometheus::TextEncoder::new().encode_to_string(&registry.gather())
}

/// The families `mntr` also shows, by ZooKeeper's metric name, and whether each is a counter.
struct ReportCollector {
    ctx: Arc<Ctx>,
    descs: Vec<Desc>,
}

/// Every name [`report_families`] may give, with ZooKeeper's type (a gauge, except where noted).
const REPORT_NAMES: [&str; 29] = [
    "avg_latency",
    "max_latency",
    "min_latency",
    "packets_received",
    "packets_sent",
    "num_alive_connections",
    "outstanding_requests",
    "uptime",
    "znode_count",
    "watch_count",
    "ephemerals_count",
    "approximate_data_size",
    "global_sessions",
    "local_sessions",
    "open_file_descriptor_count",
    "max_file_descriptor_count",
    "quorum_size",
    "learners",
    "synced_followers",
    "synced_non_voting_followers",
    "synced_observers",
    "pending_syncs",
    "leader_uptime",
    "last_proposal_size",
    "max_proposal_size",
    "min_proposal_size",
    "ensemble_wal_batches_total",
    "ensemble_wal_records_total",
    "ensemble_peer_send_queue_bytes",
];

impl ReportCollector {
    fn new(ctx: Arc<Ctx>) -> ReportCollector {
        let desc = |name: &str| Desc::new(name.into(), name.into(), Vec::new(), Default::default()).expect("valid");
        ReportCollector { ctx, descs: REPORT_NAMES.iter().map(|n| desc(n)).collect() }
    }
}

impl Collector for ReportCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let wal = self.ctx.wal.stats();
        let mut families = report_families(&crate::report::report(&self.ctx, None));
        families.push(counter(
            "ensemble_wal_batches_total",
            "Write-ahead log batches made durable, one fdatasync each (mntr's wal_fsyncs).",
            wal.batches,
        ));
        families.push(peer_queue_bytes(&self.ctx.handle.send_queues.bytes()));
        families.push(counter(
            "ensemble_wal_records_total",
            "Write-ahead log records made durable (mntr's wal_records).",
            wal.records,
        ));
        families
    }
}

/// ZooKeeper's callback gauges, from the values `mntr` prints. The help text is the name, as ZooKeeper's.
pub fn report_families(r: &Report) -> Vec<MetricFamily> {
    let mut gauges: Vec<(&str, f64)> = vec![
        ("avg_latency", r.avg_latency_ms),
        ("max_latency", r.max_latency_ms as f64),
        ("min_latency", r.min_latency_ms as f64),
        ("packets_received", r.packets_received as f64),
        ("packets_sent", r.packets_sent as f64),
        ("num_alive_connections", r.connections.len() as f64),
        ("outstanding_requests", r.outstanding_requests as f64),
        ("uptime", r.uptime_ms as f64),
        ("znode_count", r.node_count as f64),
        ("watch_count", r.watch_count as f64),
        ("ephemerals_count", r.ephemerals_count as f64),
        ("approximate_data_size", r.approximate_data_size as f64),
        ("global_sessions", r.global_sessions as f64),
        ("local_sessions", r.local_sessions as f64),
        ("open_file_descriptor_count", r.open_file_descriptors as f64),
        ("max_file_descriptor_count", r.max_file_descriptors as f64),
    ];
    if r.mode != Mode::Standalone {
        gauges.push(("quorum_size", r.quorum_size as f64));
    }
    if r.mode == Mode::Leader {
        let l = &r.leader;
        let size = |s: Option<u32>| s.map_or(-1.0, f64::from);
        gauges.extend([
            ("learners", l.learners as f64),
            ("synced_followers", l.synced_followers as f64),
            ("synced_non_voting_followers", l.synced_non_voting_followers as f64),
            ("synced_observers", l.synced_observers as f64),
            ("pending_syncs", l.pending_syncs as f64),
            ("leader_uptime", l.leader_uptime_ms as f64),
            ("last_proposal_size", size(l.last_proposal_size)),
            ("max_proposal_size", size(l.max_proposal_size)),
            ("min_proposal_size", size(l.min_proposal_size)),
        ]);
    }
    gauges.into_iter().map(|(name, value)| gauge(name, value)).collect()
}

/// `ensemble_peer_send_queue_bytes{peer}`: the bytes waiting for each connected peer (a follower that lags
/// or a stalled link shows here before its queue bound drops it).
fn peer_queue_bytes(queues: &[(ServerId, usize)]) -> MetricFamily {
    let metrics = queues
        .iter()
        .map(|&(peer, bytes)| {
            let mut gauge = Gauge::default();
            gauge.set_value(bytes as f64);
            let mut label = LabelPair::default();
            label.set_name("peer".to_owned());
            label.set_value(peer.0.to_string());
            let mut metric = Metric::default();
            metric.set_label(vec![label]);
            metric.set_gauge(gauge);
            metric
        })
        .collect();
    families(
        "ensemble_peer_send_queue_bytes",
        "Bytes queued to send to each connected peer server.",
        MetricType::GAUGE,
        metrics,
    )
}

fn family(name: &str, help: &str, kind: MetricType, metric: Metric) -> MetricFamily {
    families(name, help, kind, vec![metric])
}

fn families(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn gauge(name: &str, value: f64) -> MetricFamily {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::default();
    metric.set_gauge(gauge);
    family(name, name, MetricType::GAUGE, metric)
}

fn counter(name: &str, help: &str, value: u64) -> MetricFamily {
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    let mut metric = Metric::default();
    metric.set_counter(counter);
    family(name, help, MetricType::COUNTER, metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fourlw::LeaderStats;

    fn text(families: &[MetricFamily]) -> String {
        prometheus::TextEncoder::new().encode_to_string(families).expect("encodes")
    }

    /// The gauges carry mntr's values under ZooKeeper's names, and a leader's only on a leader.
    #[test]
    fn the_gauges_are_mntrs_values_under_zookeepers_names() {
        let mut r = Report { mode: Mode::Follower, node_count: 7, watch_count: 3, quorum_size: 3, ..Report::default() };
        r.outstanding_requests = 2;
        let follower = text(&report_families(&r));
        for line in ["# TYPE znode_count gauge", "znode_count 7\n", "watch_count 3\n", "outstanding_requests 2\n"] {
            assert!(follower.contains(line), "{line:?} in {follower}");
        }
        assert!(follower.contains("quorum_size 3\n") && !follower.contains("learners"), "{follower}");
        r.mode = Mode::Leader;
        r.leader = LeaderStats { learners: 2, synced_followers: 2, ..LeaderStats::default() };
        let leader = text(&report_families(&r));
        for line in ["learners 2\n", "synced_followers 2\n", "last_proposal_size -1\n"] {
            assert!(leader.contains(line), "{line:?} in {leader}");
        }
        r.mode = Mode::Standalone;
        assert!(!text(&report_families(&r)).contains("quorum_size"));
    }

    /// One series per connected peer, labelled with its id.
    #[test]
    fn peer_send_queues_are_one_series_per_peer() {
        let text = text(&[peer_queue_bytes(&[(ServerId(2), 10), (ServerId(3), 0)])]);
        for line in ["# TYPE ensemble_peer_send_queue_bytes gauge", "{peer=\"2\"} 10\n", "{peer=\"3\"} 0\n"] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
    }

    /// Counters keep ZooKeeper's names (simpleclient 0.9 adds no `_total`).
    #[test]
    fn counters_keep_zookeepers_names() {
        let instruments = Instruments::default();
        instruments.commit_count.inc();
        instruments.wal_batch(3, Duration::from_millis(2));
        instruments.looking();
        instruments.elected(Duration::from_millis(7));
        instruments.syncing(SyncKind::Trunc);
        instruments.syncing(SyncKind::Diff);
        instruments.syncing(SyncKind::Snap);
        let registry = Registry::new();
        instruments.register(&registry).unwrap();
        let text = scrape(&registry).unwrap();
        for line in [
            "# TYPE commit_count counter",
            "commit_count 1\n",
            "fsynctime_count 1\n",
            "fsynctime{quantile=\"0.5\"} 2\n",
            "ensemble_wal_records_per_fsync_sum 3\n",
            "ensemble_wal_fsync_seconds_count 1\n",
            "looking_count 1\n",
            "election_time{quantile=\"0.5\"} 7\n",
            // A TRUNC is followed by a DIFF, which ZooKeeper counts: diff_count counts the sync once.
            "diff_count 1\n",
            "snap_count 1\n",
            "ensemble_follower_syncs_total{how=\"trunc\"} 1\n",
            "ensemble_follower_syncs_total{how=\"diff\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
    }
}
