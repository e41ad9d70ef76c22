//! Load balancers: pick an endpoint index from a host set without taking a lock.
//! Each policy is one file; `Balancer` dispatches and owns the "skip unavailable" rule.

mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;

use std::sync::Arc;

use super::endpoint::EndpointState;
use super::hash::xxh64;
use crate::config::{HashAlgorithm, HashSettings, LbPolicy};

pub(crate) use least_request::LeastRequest;
pub(crate) use maglev::{Maglev, MAX_TABLE_SIZE as MAX_MAGLEV_TABLE};
pub(crate) use random::WeightedRandom;
pub(crate) use ring_hash::RingHash;
pub(crate) use round_robin::RoundRobin;

/// A built load balancer over one host set (a cluster or one of its subsets).
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Weighted round robin over a precomputed smooth schedule.
    RoundRobin(RoundRobin),
    /// Weighted random.
    Random(WeightedRandom),
    /// Power of two choices on active requests.
    LeastRequest(LeastRequest),
    /// Ketama-style ring; keyless requests fall back to weighted random.
    RingHash(RingHash, WeightedRandom),
    /// Maglev table; keyless requests fall back to weighted random.
    Maglev(Maglev, WeightedRandom),
}

/// Which endpoints a pick may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Only healthy, non-ejected endpoints.
    Available,
    /// Any endpoint (panic mode: every endpoint is unavailable).
    Any,
}

// === impl Balancer ===

impl Balancer {
    /// Builds the balancer for `endpoints` (in this order; picks return indexes into it).
    pub(crate) fn build(policy: LbPolicy, hash: &HashSettings, endpoints: &[Arc<EndpointState>]) -> Balancer {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&weights)),
            LbPolicy::Random => Balancer::Random(WeightedRandom::new(&weights)),
            LbPolicy::LeastRequest => Balancer::LeastRequest(LeastRequest::new(&weights)),
            LbPolicy::ConsistentHash => {
                let ids: Vec<(&str, u32)> = endpoints.iter().map(|e| (e.address(), e.weight())).collect();
                let fallback = WeightedRandom::new(&weights);
                match hash.algorithm {
                    HashAlgorithm::RingHash => Balancer::RingHash(RingHash::new(&ids, hash.table_size), fallback),
                    HashAlgorithm::Maglev => Balancer::Maglev(Maglev::new(&ids, hash.table_size), fallback),
                }
            }
        }
    }

    /// Picks an endpoint index passing `filter`, or `None` when none does.
    pub(crate) fn pick(&self, endpoints: &[Arc<EndpointState>], key: Option<&[u8]>, filter: Filter) -> Option<usize> {
        self.pick_where(endpoints, key, |e| filter == Filter::Any || e.is_available())
    }

    /// Picks an endpoint index `accept` takes, or `None` when it takes none.
    pub(crate) fn pick_where(
        &self,
        endpoints: &[Arc<EndpointState>],
        key: Option<&[u8]>,
        accept: impl Fn(&EndpointState) -> bool,
    ) -> Option<usize> {
        if endpoints.is_empty() {
            return None;
        }
        let ok = |i: usize| endpoints.get(i).is_some_and(|e| accept(e));
        match self {
            Balancer::RoundRobin(rr) => rr.pick(endpoints.len(), ok),
            Balancer::Random(r) => r.pick(ok),
            Balancer::LeastRequest(lr) => lr.pick(endpoints, ok),
            Balancer::RingHash(ring, fallback) => match key {
                Some(k) => ring.pick(xxh64(k, 0), ok),
                None => fallback.pick(ok),
            },
            Balancer::Maglev(table, fallback) => match key {
                Some(k) => table.pick(xxh64(k, 0), endpoints.len(), ok),
                None => fallback.pick(ok),
            },
        }
    }
}

/// The first index passing `ok`, scanning `n` indexes from `start` (wrapping).
pub(crate) fn scan_from(start: usize, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

#[cfg(test)]
mod tests;
