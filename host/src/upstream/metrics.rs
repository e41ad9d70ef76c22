//! The upstream layer's metrics: one family set per proxy registry, resolved to
//! per-cluster handles when a cluster is built (never looked up by name per request).

use std::sync::{Arc, Mutex, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::cluster::Cluster;
use crate::telemetry;

/// Every upstream metric family of one proxy instance.
#[derive(Debug)]
pub struct UpstreamMetrics {
    connect_failures: IntCounterVec,
    requests: IntCounterVec,
    requests_active: IntGaugeVec,
    endpoints: IntGaugeVec,
    ejections: IntCounterVec,
    dns_failures: IntCounterVec,
    healthy: HealthyEndpoints,
}

/// Handles for one cluster, resolved at build.
#[derive(Debug, Clone)]
pub(crate) struct ClusterMetrics {
    /// `wasmesh_upstream_connect_failures_total{cluster}`.
    pub(crate) connect_failures: IntCounter,
    /// `wasmesh_upstream_requests_total{cluster}`.
    pub(crate) requests: IntCounter,
    /// `wasmesh_upstream_requests_active{cluster}`.
    pub(crate) requests_active: IntGauge,
    /// `wasmesh_upstream_endpoints{cluster}`.
    pub(crate) endpoints: IntGauge,
    /// `wasmesh_upstream_ejections_total{cluster}`.
    pub(crate) ejections: IntCounter,
    /// `wasmesh_upstream_dns_refresh_failures_total{cluster}`.
    pub(crate) dns_failures: IntCounter,
}

/// `wasmesh_upstream_endpoints_healthy{cluster}`, computed at scrape time from the live
/// clusters, so that ejections expiring with time are reflected without a timer.
#[derive(Debug, Clone)]
struct HealthyEndpoints {
    inner: Arc<HealthyInner>,
}

#[derive(Debug)]
struct HealthyInner {
    gauge: IntGaugeVec,
    clusters: Mutex<Vec<Weak<Cluster>>>,
}

// === impl UpstreamMetrics ===

impl UpstreamMetrics {
    /// Declares the families in `registry` (a duplicate registration is logged, not fatal).
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| telemetry::register(registry, counter_vec(name, help));
        let gauge = |name: &str, help: &str| telemetry::register(registry, gauge_vec(name, help));
        let healthy = HealthyEndpoints {
            inner: Arc::new(HealthyInner {
                gauge: gauge_vec(
                    "wasmesh_upstream_endpoints_healthy",
                    "Endpoints that are healthy and not ejected, per cluster.",
                ),
                clusters: Mutex::new(Vec::new()),
            }),
        };
        telemetry::register(registry, healthy.clone());
        Self {
            connect_failures: counter(
                "wasmesh_upstream_connect_failures_total",
                "Upstream connections that could not be established (refused, unreachable, timeout).",
            ),
            requests: counter("wasmesh_upstream_requests_total", "Requests sent to upstream endpoints."),
            requests_active: gauge("wasmesh_upstream_requests_active", "Requests in flight to upstream endpoints."),
            endpoints: gauge("wasmesh_upstream_endpoints", "Endpoints configured per cluster."),
            ejections: counter("wasmesh_upstream_ejections_total", "Endpoint ejections (outlier detection)."),
            dns_failures: counter(
                "wasmesh_upstream_dns_refresh_failures_total",
                "DNS re-resolutions of endpoint names that failed (the old address is kept).",
            ),
            healthy,
        }
    }

    /// Handles for cluster `name`.
    pub(crate) fn cluster(&self, name: &str) -> ClusterMetrics {
        let l = &[name];
        ClusterMetrics {
            connect_failures: self.connect_failures.with_label_values(l),
            requests: self.requests.with_label_values(l),
            requests_active: self.requests_active.with_label_values(l),
            endpoints: self.endpoints.with_label_values(l),
            ejections: self.ejections.with_label_values(l),
            dns_failures: self.dns_failures.with_label_values(l),
        }
    }

    /// Makes `cluster` count in `wasmesh_upstream_endpoints_healthy` while it lives.
    pub(crate) fn track(&self, cluster: &Arc<Cluster>) {
        let mut list = self.inner_clusters();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(cluster));
    }

    fn inner_clusters(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Cluster>>> {
        self.healthy.inner.clusters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn counter_vec(name: &str, help: &str) -> IntCounterVec {
    // Names and labels are constants of this file: a failure is a programming error that
    // every test run catches.
    IntCounterVec::new(Opts::new(name, help), &["cluster"]).expect("constant metric options are valid")
}

fn gauge_vec(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["cluster"]).expect("constant metric options are valid")
}

// === impl ClusterMetrics ===

impl ClusterMetrics {
    /// Handles registered nowhere (unit tests of endpoint and balancer code).
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        UpstreamMetrics::new(&Registry::new()).cluster("test")
    }
}

// === impl HealthyEndpoints ===

impl Collector for HealthyEndpoints {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let live: Vec<Arc<Cluster>> = {
            let mut list = self.inner.clusters.lock().unwrap_or_else(|p| p.into_inner());
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        self.inner.gauge.reset();
        // Later builds (a reloaded cluster of the same name) overwrite earlier ones.
        for c in &live {
            let n = i64::try_from(c.healthy_endpoints()).unwrap_or(i64::MAX);
            self.inner.gauge.with_label_values(&[c.name()]).set(n);
        }
        self.inner.gauge.collect()
    }
}
