//! Least request: the power of two choices. Two endpoints are drawn (weighted random)
//! and the one with less load per unit of weight wins, where load is
//! `(active_requests + 1) / weight` — Envoy's effective weight `weight / (active + 1)`
//! with `active_request_bias = 1`, compared pairwise instead of through an EDF scheduler
//! (which would need a lock).

use std::sync::Arc;

use super::random::WeightedRandom;
use crate::upstream::endpoint::EndpointState;

/// Draws for a second candidate distinct from the first.
const SECOND_DRAWS: usize = 4;

/// Least-request state (the candidate draw table; the load lives on the endpoints).
#[derive(Debug)]
pub(crate) struct LeastRequest {
    random: WeightedRandom,
}

// === impl LeastRequest ===

impl LeastRequest {
    /// Builds the candidate draw table for `weights`.
    pub(crate) fn new(weights: &[u32]) -> LeastRequest {
        LeastRequest { random: WeightedRandom::new(weights) }
    }

    /// The less loaded of two candidates passing `ok`.
    pub(crate) fn pick(&self, endpoints: &[Arc<EndpointState>], ok: impl Fn(usize) -> bool) -> Option<usize> {
        let a = self.random.pick(&ok)?;
        if endpoints.len() < 2 {
            return Some(a);
        }
        let Some(b) = (0..SECOND_DRAWS).filter_map(|_| self.random.pick(&ok)).find(|&b| b != a) else {
            return Some(a);
        };
        let (ea, eb) = (&endpoints[a], &endpoints[b]);
        // a's load <= b's load  <=>  (act_a + 1) / w_a <= (act_b + 1) / w_b
        let load_a = (u128::from(ea.active_requests()) + 1) * u128::from(eb.weight());
        let load_b = (u128::from(eb.active_requests()) + 1) * u128::from(ea.weight());
        Some(if load_a <= load_b { a } else { b })
    }
}
