//! One filter metric series: its rendered labels and value cells that every worker
//! updates with relaxed atomics (no lock, no allocation per update).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::MetricKind;

/// A series of a family (or a detached one, which is counted but not exported).
pub(crate) struct Series {
    /// `key="value",…` (shared by every family with the same label set).
    pub labels: Arc<str>,
    /// The value.
    pub cells: Cells,
}

/// A series' value.
pub(crate) enum Cells {
    /// Monotonic count.
    Counter(AtomicU64),
    /// Settable value.
    Gauge(AtomicI64),
    /// Bucketed observations.
    Histogram(HistogramCells),
}

/// Per-bucket counts (not cumulative; the exposition sums them) and the sum.
pub(crate) struct HistogramCells {
    /// Upper bounds, ascending; observations above the last go to an overflow cell.
    pub bounds: Arc<[f64]>,
    /// `bounds.len() + 1` counts.
    pub counts: Box<[AtomicU64]>,
    /// Sum of the observations (they are integers).
    pub sum: AtomicU64,
}

// === impl Cells ===

impl Cells {
    /// Zeroed cells of `kind`, histograms bucketed by `bounds`.
    pub fn new(kind: MetricKind, bounds: &Arc<[f64]>) -> Cells {
        match kind {
            MetricKind::Counter => Cells::Counter(AtomicU64::new(0)),
            MetricKind::Gauge => Cells::Gauge(AtomicI64::new(0)),
            MetricKind::Histogram => Cells::Histogram(HistogramCells {
                bounds: bounds.clone(),
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0),
            }),
        }
    }
}

// === impl HistogramCells ===

impl HistogramCells {
    /// Counts `value` in the first bucket whose bound is at least `value`.
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value as f64);
        if let Some(cell) = self.counts.get(i) {
            cell.fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(value, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let bounds: Arc<[f64]> = Arc::from(&[1.0, 5.0, 10.0][..]);
        let Cells::Histogram(h) = Cells::new(MetricKind::Histogram, &bounds) else { panic!("not a histogram") };
        for v in [0, 1, 2, 5, 6, 10, 11, 1000] {
            h.observe(v);
        }
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counts, [2, 2, 2, 2]);
        assert_eq!(h.sum.load(Relaxed), 1035);
    }
}
