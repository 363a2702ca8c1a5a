//! ZooKeeper's summaries: a count and a sum since start, and quantiles over recent observations, exported as a
//! Prometheus `summary` (`name{quantile="0.5"}`, `name_sum`, `name_count`).
//!
//! Neither Rust Prometheus client has a summary type; the `prometheus` crate encodes one that a collector
//! builds, so this is that collector. ZooKeeper's `PrometheusMetricsProvider` (simpleclient 0.9) keeps CKMS
//! streams over a 10-minute sliding window with quantiles 0.5 (a `BASIC` summary) or 0.5, 0.9 and 0.99
//! (`ADVANCED`); here the quantiles are exact over the last [`WINDOW`] observations, which a busy server
//! renews within seconds and an idle one keeps longer. With no observation yet they are NaN, as ZooKeeper's.
//!
//! # Invariants
//! - `window.len() <= WINDOW`, and `count` counts every observation ever made (`count >= window.len()`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType, Quantile, Summary as SummaryProto};

use crate::shared::lock;

/// How many recent observations the quantiles are taken over.
pub const WINDOW: usize = 4096;

/// ZooKeeper's `DetailLevel.BASIC` quantiles.
pub const BASIC: &[f64] = &[0.5];
/// ZooKeeper's `DetailLevel.ADVANCED` quantiles.
pub const ADVANCED: &[f64] = &[0.5, 0.9, 0.99];

/// One summary; clones share their observations.
#[derive(Clone, Debug)]
pub struct Summary {
    desc: Arc<Desc>,
    quantiles: &'static [f64],
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    count: u64,
    sum: f64,
    window: VecDeque<f64>,
}

impl Summary {
    /// A summary named `name` with these quantiles. ZooKeeper's help text is the name itself.
    pub fn new(name: &str, help: &str, quantiles: &'static [f64]) -> Summary {
        let desc = Desc::new(name.into(), help.into(), Vec::new(), Default::default()).expect("a valid metric name");
        Summary { desc: Arc::new(desc), quantiles, state: Arc::default() }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let mut state = lock(&self.state);
        state.count += 1;
        state.sum += value;
        if state.window.len() == WINDOW {
            state.window.pop_front();
        }
        state.window.push_back(value);
    }

    /// The count, the sum, and each quantile with its value.
    pub fn snapshot(&self) -> (u64, f64, Vec<(f64, f64)>) {
        let (count, sum, mut recent) = {
            let state = lock(&self.state);
            (state.count, state.sum, state.window.iter().copied().collect::<Vec<f64>>())
        };
        recent.sort_by(f64::total_cmp);
        let quantiles = self.quantiles.iter().map(|&q| (q, quantile(&recent, q))).collect();
        (count, sum, quantiles)
    }
}

/// The value at rank `ceil(q * n)` of the sorted `values` (NaN when empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Collector for Summary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (count, sum, quantiles) = self.snapshot();
        let mut summary = SummaryProto::default();
        summary.set_sample_count(count);
        summary.set_sample_sum(sum);
        summary.set_quantile(
            quantiles
                .into_iter()
                .map(|(q, v)| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(q);
                    quantile.set_value(v);
                    quantile
                })
                .collect(),
        );
        let mut metric = Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_taken_over_the_recent_window_and_count_over_all() {
        let s = Summary::new("readlatency", "readlatency", ADVANCED);
        let (count, _, q) = s.snapshot();
        assert_eq!(count, 0);
        assert!(q.iter().all(|(_, v)| v.is_nan()), "no observation: NaN, as ZooKeeper's");
        for v in 1..=100 {
            s.observe(f64::from(v));
        }
        let (count, sum, q) = s.snapshot();
        assert_eq!((count, sum), (100, 5050.0));
        assert_eq!(q, vec![(0.5, 50.0), (0.9, 90.0), (0.99, 99.0)]);
        for _ in 0..WINDOW {
            s.observe(1000.0);
        }
        let (count, _, q) = s.snapshot();
        assert_eq!(count, 100 + WINDOW as u64);
        assert_eq!(q[0], (0.5, 1000.0), "the old observations left the window");
    }

    #[test]
    fn the_text_format_has_zookeepers_lines() {
        let s = Summary::new("fsynctime", "fsynctime", BASIC);
        s.observe(3.0);
        let registry = prometheus::Registry::new();
        registry.register(Box::new(s)).unwrap();
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        for line in
            ["# TYPE fsynctime summary", "fsynctime{quantile=\"0.5\"} 3", "fsynctime_sum 3", "fsynctime_count 1"]
        {
            assert!(text.contains(line), "{line:?} in {text}");
        }
    }
}
