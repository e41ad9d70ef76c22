//! Weighted random: a draw over cumulative weights (uniform when all weights are equal).

use super::scan_from;

/// How many draws are tried before scanning for an available endpoint.
const DRAWS: usize = 4;

/// Weighted random state (immutable; `fastrand`'s thread-local generator draws).
#[derive(Debug)]
pub(crate) struct WeightedRandom {
    /// Running sums of the weights; empty when all weights are equal.
    cumulative: Vec<u64>,
    n: usize,
}

// === impl WeightedRandom ===

impl WeightedRandom {
    /// Builds the draw table for `weights`.
    pub(crate) fn new(weights: &[u32]) -> WeightedRandom {
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = if uniform {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u64, |acc, &w| {
                    *acc += u64::from(w);
                    Some(*acc)
                })
                .collect()
        };
        WeightedRandom { cumulative, n: weights.len() }
    }

    /// One weighted draw, ignoring availability.
    pub(crate) fn draw(&self) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        match self.cumulative.last() {
            None => Some(fastrand::usize(..self.n)),
            Some(&total) if total > 0 => {
                let r = fastrand::u64(..total);
                Some(self.cumulative.partition_point(|&c| c <= r))
            }
            Some(_) => Some(fastrand::usize(..self.n)),
        }
    }

    /// A weighted draw passing `ok`: a few draws, then a scan from a random start.
    pub(crate) fn pick(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..DRAWS {
            let i = self.draw()?;
            if ok(i) {
                return Some(i);
            }
        }
        scan_from(fastrand::usize(..self.n), self.n, ok)
    }
}
