//! Weighted round robin: a smooth schedule computed once, walked by one shared atomic
//! counter, so the global order is exact and deterministic across workers.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::scan_from;

/// Longest schedule kept; larger weight sums are scaled down (each weight stays ≥ 1).
const MAX_SCHEDULE: u64 = 1 << 16;

/// Weighted round robin state.
pub(crate) struct RoundRobin {
    schedule: Vec<u32>,
    next: AtomicUsize,
}

// === impl RoundRobin ===

impl std::fmt::Debug for RoundRobin {
    /// Sizes only: tables can hold a million entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundRobin").field("schedule_len", &self.schedule.len()).finish()
    }
}

impl RoundRobin {
    /// Builds the schedule: endpoint `i` appears `weights[i]` times per cycle (after
    /// dividing by the weights' gcd), spread evenly by the Sainte-Laguë rule — slot
    /// `k` of endpoint `i` sits at `(2k - 1) / (2 w_i)`, ties by index — so
    /// `[5, 1, 1]` gives `0 0 0 1 2 0 0` rather than `0 0 0 0 0 1 2`.
    pub(crate) fn new(weights: &[u32]) -> RoundRobin {
        let weights = reduce(weights);
        let schedule = if weights.iter().all(|&w| w == 1) {
            (0..weights.len()).map(|i| i as u32).collect()
        } else {
            let mut slots: Vec<(u64, u64, u32)> = Vec::with_capacity(weights.iter().sum::<u64>() as usize);
            for (i, &w) in weights.iter().enumerate() {
                slots.extend((1..=w).map(|k| (2 * k - 1, w, i as u32)));
            }
            slots.sort_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)));
            slots.into_iter().map(|(_, _, i)| i).collect()
        };
        RoundRobin { schedule, next: AtomicUsize::new(0) }
    }

    /// The next scheduled endpoint passing `ok`: up to `n` turns of the schedule, then
    /// the next passing endpoint after the last one tried.
    pub(crate) fn pick(&self, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 || n == 0 {
            return None;
        }
        let mut last = 0;
        for _ in 0..n.min(len) {
            let turn = self.next.fetch_add(1, Ordering::Relaxed);
            last = self.schedule[turn % len] as usize;
            if ok(last) {
                return Some(last);
            }
        }
        scan_from(last + 1, n, ok)
    }

    /// The schedule of one cycle (tests and the admin view).
    #[cfg(test)]
    pub(crate) fn schedule(&self) -> &[u32] {
        &self.schedule
    }
}

/// Divides by the gcd and caps the sum at [`MAX_SCHEDULE`].
fn reduce(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w))).max(1);
    let mut w: Vec<u64> = weights.iter().map(|&w| (u64::from(w) / g).max(1)).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x * MAX_SCHEDULE / total).max(1);
        }
    }
    w
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
