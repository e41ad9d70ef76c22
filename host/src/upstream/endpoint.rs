//! `EndpointState`: one upstream endpoint shared by every worker — its address, labels,
//! weight, live request count, ejection mark and health bit — and the `ActiveRequest` guard.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::uri::Authority;

use super::metrics::ClusterMetrics;

/// One endpoint of a cluster, shared by all workers behind an `Arc`.
///
/// Counters and marks are atomics: reading or updating them never takes a lock.
#[derive(Debug)]
pub struct EndpointState {
    address: String,
    addr: SocketAddr,
    authority: Authority,
    labels: BTreeMap<String, String>,
    weight: u32,
    active_requests: AtomicU64,
    /// Milliseconds since [`process_start`] until which the endpoint is ejected.
    ejected_until_ms: AtomicU64,
    healthy: AtomicBool,
    cluster: Arc<ClusterShared>,
}

/// Counts one request in flight on an endpoint (and its cluster) until dropped.
#[must_use = "the request counts as active only while the guard lives"]
#[derive(Debug)]
pub struct ActiveRequest {
    endpoint: Arc<EndpointState>,
}

/// Per-cluster state every endpoint of the cluster points to (counters survive DNS
/// refreshes that replace endpoints).
#[derive(Debug)]
pub(crate) struct ClusterShared {
    pub(crate) name: String,
    pub(crate) active_requests: AtomicU64,
    pub(crate) metrics: ClusterMetrics,
}

/// The instant all ejection marks are measured from.
fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since [`process_start`].
fn now_ms() -> u64 {
    u64::try_from(process_start().elapsed().as_millis()).unwrap_or(u64::MAX)
}

// === impl EndpointState ===

impl EndpointState {
    pub(crate) fn new(
        address: String,
        addr: SocketAddr,
        labels: BTreeMap<String, String>,
        weight: u32,
        cluster: Arc<ClusterShared>,
    ) -> Result<Self, http::uri::InvalidUri> {
        let authority = Authority::try_from(addr.to_string().as_str())?;
        Ok(Self {
            address,
            addr,
            authority,
            labels,
            weight,
            active_requests: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            cluster,
        })
    }

    /// The address as configured (`ip:port` or `hostname:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The resolved socket address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The resolved address as a URI authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The endpoint's labels (subsets select on them).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Relative load-balancing weight (≥ 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Name of the cluster this endpoint belongs to.
    pub fn cluster_name(&self) -> &str {
        &self.cluster.name
    }

    /// Requests currently in flight on this endpoint (all workers).
    pub fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Counts a request as active on this endpoint and its cluster until the guard drops.
    /// Hold it for the whole exchange, response body included.
    pub fn track(self: &Arc<Self>) -> ActiveRequest {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        self.cluster.active_requests.fetch_add(1, Ordering::Relaxed);
        self.cluster.metrics.requests_active.inc();
        ActiveRequest { endpoint: self.clone() }
    }

    /// Ejects the endpoint for `duration` from now (outlier detection). A longer
    /// ejection already in place is kept.
    pub fn eject(&self, duration: Duration) {
        let for_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let until = now_ms().saturating_add(for_ms);
        let previous = self.ejected_until_ms.fetch_max(until, Ordering::Relaxed);
        if previous < until {
            self.cluster.metrics.ejections.inc();
        }
    }

    /// Ends any ejection now.
    pub fn uneject(&self) {
        self.ejected_until_ms.store(0, Ordering::Relaxed);
    }

    /// True while an ejection is in force.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// Time left on the current ejection (zero when not ejected).
    pub fn ejection_remaining(&self) -> Duration {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(now_ms()))
    }

    /// The health bit (set by health checking; true unless someone cleared it).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health bit.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Healthy and not ejected: what load balancers prefer.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// True when this is the endpoint configured as `address` and resolved to `addr`:
    /// a DNS refresh keeps such an endpoint (and its counters and marks).
    pub(crate) fn same_identity(&self, address: &str, addr: SocketAddr) -> bool {
        self.address == address && self.addr == addr
    }

    /// The JSON view for the admin `/clusters` page.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "address": self.address,
            "resolved": self.addr.to_string(),
            "labels": self.labels,
            "weight": self.weight,
            "active_requests": self.active_requests(),
            "ejected": self.is_ejected(),
            "ejected_for_ms": u64::try_from(self.ejection_remaining().as_millis()).unwrap_or(u64::MAX),
            "healthy": self.is_healthy(),
        })
    }
}

// === impl ActiveRequest ===

impl ActiveRequest {
    /// The endpoint this request runs on.
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.endpoint
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.endpoint.active_requests.fetch_sub(1, Ordering::Relaxed);
        self.endpoint.cluster.active_requests.fetch_sub(1, Ordering::Relaxed);
        self.endpoint.cluster.metrics.requests_active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Arc<EndpointState> {
        let shared = Arc::new(ClusterShared {
            name: "c".into(),
            active_requests: AtomicU64::new(0),
            metrics: ClusterMetrics::detached(),
        });
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("literal address");
        Arc::new(EndpointState::new("127.0.0.1:1".into(), addr, BTreeMap::new(), 1, shared).expect("valid authority"))
    }

    #[test]
    fn guard_counts_and_releases() {
        let ep = endpoint();
        let a = ep.track();
        let b = ep.track();
        assert_eq!(ep.active_requests(), 2);
        assert_eq!(ep.cluster.active_requests.load(Ordering::Relaxed), 2);
        assert_eq!(ep.cluster.metrics.requests_active.get(), 2);
        drop(a);
        assert_eq!(ep.active_requests(), 1);
        drop(b);
        assert_eq!(ep.active_requests(), 0);
        assert_eq!(ep.cluster.metrics.requests_active.get(), 0);
    }

    #[test]
    fn ejection_expires_and_keeps_the_longer_mark() {
        let ep = endpoint();
        assert!(!ep.is_ejected());
        ep.eject(Duration::from_secs(60));
        assert!(ep.is_ejected());
        assert!(!ep.is_available());
        ep.eject(Duration::from_millis(1)); // shorter: the 60 s mark stays
        assert!(ep.ejection_remaining() > Duration::from_secs(50));
        ep.uneject();
        assert!(ep.is_available());
        ep.eject(Duration::from_millis(20));
        assert!(ep.is_ejected());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!ep.is_ejected());
        ep.set_healthy(false);
        assert!(!ep.is_available());
    }
}
