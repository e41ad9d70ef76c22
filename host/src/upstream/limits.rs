//! Connection-pool limits per cluster (Istio `connectionPool`, Envoy's cluster circuit
//! breakers): the table a filter hands over (`wasmesh.pool_limits`) and the check made
//! before a request is sent. The filter owns the numbers; the proxy applies them where
//! the load is known, without calling into the filter per request.

use rustc_hash::FxHashMap;
use serde::Deserialize;

/// Limits of one cluster (`None` = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolLimits {
    /// `tcp.maxConnections` (Envoy `max_connections`).
    pub max_connections: Option<u64>,
    /// `http.http1MaxPendingRequests` (Envoy `max_pending_requests`).
    pub max_pending_requests: Option<u64>,
    /// `http.http2MaxRequests` (Envoy `max_requests`).
    pub max_requests: Option<u64>,
}

/// Which limit a request would overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `http2MaxRequests`.
    MaxRequests,
    /// `http1MaxPendingRequests` (with `maxConnections`).
    MaxPendingRequests,
}

/// Pool limits by cluster name, as one filter declared them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitTable(FxHashMap<String, PoolLimits>);

// === impl PoolLimits ===

impl PoolLimits {
    /// Whether a new request overflows when `active` requests are in flight on the
    /// cluster (the request itself not counted). Requests are counted, not connections or
    /// queues, so HTTP/1 semantics are assumed (one request per connection): a request is
    /// pending when every one of `maxConnections` is busy, so `active ≥ maxConnections +
    /// http1MaxPendingRequests` overflows. `maxConnections` alone never overflows (Envoy
    /// queues the request as pending, with Istio's pending default of 2³²−1), nor does
    /// `http1MaxPendingRequests` alone (without a connection limit nothing is pending).
    pub fn check(&self, active: u64) -> Option<Overflow> {
        if self.max_requests.is_some_and(|max| active >= max) {
            return Some(Overflow::MaxRequests);
        }
        let (max_conns, max_pending) = (self.max_connections?, self.max_pending_requests?);
        (active >= max_conns.saturating_add(max_pending)).then_some(Overflow::MaxPendingRequests)
    }
}

// === impl Overflow ===

impl Overflow {
    /// The metric label (`reason`).
    pub fn reason(self) -> &'static str {
        match self {
            Overflow::MaxRequests => "max_requests",
            Overflow::MaxPendingRequests => "max_pending_requests",
        }
    }
}

// === impl LimitTable ===

impl LimitTable {
    /// Parses `{"<cluster>": {"max_requests": N, "max_pending_requests": N,
    /// "max_connections": N}, …}` (each field optional; `"*"`: every cluster not listed);
    /// the error names what is wrong.
    pub fn parse(json: &[u8]) -> Result<LimitTable, String> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let map: FxHashMap<String, PoolLimits> =
            serde_path_to_error::deserialize(&mut *de).map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        de.end().map_err(|e| e.to_string())?;
        Ok(LimitTable(map))
    }

    /// The limits of `cluster` (the `"*"` entry when it is not listed), if any.
    pub fn get(&self, cluster: &str) -> Option<&PoolLimits> {
        self.0.get(cluster).or_else(|| self.0.get("*"))
    }
}

#[cfg(test)]
mod tests;
