//! Availability from a history: acknowledged writes per second during each fault and after its healing, and the
//! time from healing to the first acknowledged write.

use std::fmt::Write as _;

use super::history::{secs, Event, Micros, Op};

/// When one step's fault was in place and when the cluster was watched after it.
#[derive(Clone, Debug)]
pub struct Window {
    /// What was done (fault and its actions).
    pub label: String,
    /// The fault was in place from here...
    pub start: Micros,
    /// ...to here, when healing began.
    pub heal: Micros,
    /// The end of the time watched after healing.
    pub end: Micros,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// The step's label.
    pub label: String,
    /// Acknowledged writes per second while the fault was in place.
    pub during: f64,
    /// Acknowledged writes per second from healing to the end of the window.
    pub after: f64,
    /// From healing to the first write acknowledged after it, if any was.
    pub first_ack: Option<Micros>,
    /// The longest time without an acknowledged write from the fault's start to the window's end (an election
    /// after a leader fault, the whole fault when no quorum is left).
    pub outage: Micros,
}

/// Completion times of the acknowledged writes, sorted.
pub fn acks(events: &[Event]) -> Vec<Micros> {
    let mut acks: Vec<Micros> = events
        .iter()
        .filter(|e| match &e.op {
            Op::Cas { outcome, .. } => outcome.ok().is_some(),
            Op::Create { outcome, .. } => outcome.ok().is_some(),
            Op::Read { .. } => false,
        })
        .map(|e| e.complete)
        .collect();
    acks.sort_unstable();
    acks
}

/// The row of each window, from the sorted `acks`.
pub fn rows(acks: &[Micros], windows: &[Window]) -> Vec<Row> {
    let count = |from: Micros, to: Micros| acks.iter().filter(|&&t| from <= t && t < to).count();
    let rate = |from: Micros, to: Micros| {
        // Counts and spans of a test run are far below 2^52: the conversion is exact.
        count(from, to) as f64 / secs(to.saturating_sub(from)).max(1e-6)
    };
    windows
        .iter()
        .map(|w| Row {
            label: w.label.clone(),
            during: rate(w.start, w.heal),
            after: rate(w.heal, w.end),
            first_ack: acks.iter().find(|&&t| t >= w.heal).map(|t| t - w.heal),
            outage: outage(acks, w.start, w.end),
        })
        .collect()
}

/// The longest span in `[from, to]` with no ack in `acks` (sorted).
fn outage(acks: &[Micros], from: Micros, to: Micros) -> Micros {
    let inside = acks.iter().copied().filter(|&t| from <= t && t <= to);
    let points: Vec<Micros> = std::iter::once(from).chain(inside).chain(std::iter::once(to)).collect();
    points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| step | writes/s during | writes/s after healing | healing to first ack | longest without an ack |\n\
         |---|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let first = row.first_ack.map_or("none".to_string(), |t| format!("{:.2} s", secs(t)));
        let outage = secs(row.outage);
        let _ = writeln!(out, "| {} | {:.0} | {:.0} | {first} | {outage:.2} s |", row.label, row.during, row.after);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_acks_inside_each_span() {
        let acks = [100_000, 200_000, 1_500_000, 1_600_000, 2_500_000];
        let window = Window { label: "x".into(), start: 0, heal: 1_000_000, end: 3_000_000 };
        let rows = rows(&acks, &[window]);
        assert_eq!((rows[0].during, rows[0].after, rows[0].first_ack), (2.0, 1.5, Some(500_000)));
        assert_eq!(rows[0].outage, 1_300_000, "from the ack at 0.2 s to the one at 1.5 s");
        let table = table(&rows);
        let header_columns = table.lines().next().map(|l| l.matches('|').count());
        assert_eq!(header_columns, table.lines().nth(2).map(|l| l.matches('|').count()), "{table}");
        assert!(table.contains("| x | 2 | 2 | 0.50 s | 1.30 s |"), "{table}");
    }
}
