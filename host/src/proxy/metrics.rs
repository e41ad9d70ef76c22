//! The request path's metrics: requests, latency and connections per listener/cluster.

use std::sync::RwLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::flags::ResponseFlags;
use crate::telemetry::{register, LATENCY_BUCKETS};

/// Metric families of the request path, registered once per proxy.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    downstream_rejected: IntCounterVec,
    tls_errors: IntCounterVec,
    overflows: IntCounterVec,
}

/// Handles for one listener, resolved at generation build.
#[derive(Clone)]
pub struct ListenerStats {
    /// Open downstream connections.
    pub connections_active: IntGauge,
    /// Accepted downstream connections.
    pub connections_total: IntCounter,
    /// Connections refused over `max_connections`.
    pub connections_rejected: IntCounter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_errors: IntCounter,
    requests: IntCounterVec,
    duration: HistogramVec,
    overflows: IntCounterVec,
    listener: std::sync::Arc<str>,
    /// Series already resolved, so the request path compares a few keys instead of
    /// hashing four labels under the family's lock.
    resolved: std::sync::Arc<RwLock<Resolved>>,
}

/// The request series of one listener seen so far (a handful: clusters × classes × flags),
/// each with its cluster's duration histogram.
type Resolved = Vec<(String, &'static str, ResponseFlags, IntCounter, Histogram)>;

/// Past this many series per listener the cache stops growing (lookups still work).
const MAX_RESOLVED: usize = 256;

// === impl ProxyMetrics ===

impl ProxyMetrics {
    /// Registers the families in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new("wasmesh_http_requests_total", "Downstream HTTP requests completed"),
                &["listener", "cluster", "code_class", "response_flags"],
            )
            .expect("static metric definition"),
        );
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "wasmesh_http_request_duration_seconds",
                    "Time from request start to response headers sent downstream",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["listener", "cluster"],
            )
            .expect("static metric definition"),
        );
        let connections_active = register(
            registry,
            IntGaugeVec::new(
                Opts::new("wasmesh_downstream_connections_active", "Open downstream connections"),
                &["listener"],
            )
            .expect("static metric definition"),
        );
        let connections_total = register(
            registry,
            IntCounterVec::new(
                Opts::new("wasmesh_downstream_connections_total", "Accepted downstream connections"),
                &["listener"],
            )
            .expect("static metric definition"),
        );
        let downstream_rejected = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "wasmesh_downstream_connections_rejected_total",
                    "Connections closed at accept: over max_connections",
                ),
                &["listener"],
            )
            .expect("static metric definition"),
        );
        let tls_errors = register(
            registry,
            IntCounterVec::new(
                Opts::new("wasmesh_downstream_tls_handshake_errors_total", "Failed or timed-out TLS handshakes"),
                &["listener"],
            )
            .expect("static metric definition"),
        );
        let overflows = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "wasmesh_circuit_breaker_overflow_total",
                    "Requests refused (503 UO) over a connection-pool limit a filter declared",
                ),
                &["cluster", "reason"],
            )
            .expect("static metric definition"),
        );
        ProxyMetrics {
            requests,
            duration,
            connections_active,
            connections_total,
            downstream_rejected,
            tls_errors,
            overflows,
        }
    }

    /// Handles for `listener`.
    pub fn listener(&self, listener: &std::sync::Arc<str>) -> ListenerStats {
        ListenerStats {
            connections_active: self.connections_active.with_label_values(&[listener]),
            connections_total: self.connections_total.with_label_values(&[listener]),
            connections_rejected: self.downstream_rejected.with_label_values(&[listener]),
            tls_handshake_errors: self.tls_errors.with_label_values(&[listener]),
            requests: self.requests.clone(),
            duration: self.duration.clone(),
            overflows: self.overflows.clone(),
            listener: listener.clone(),
            resolved: Default::default(),
        }
    }
}

// === impl ListenerStats ===

impl ListenerStats {
    /// Records one completed request.
    pub fn record(&self, cluster: &str, status: u16, flags: ResponseFlags, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let (counter, histogram) = self.series(cluster, class, flags);
        counter.inc();
        histogram.observe(seconds);
    }

    /// Counts one request refused over a pool limit of `cluster` (`reason`: the limit).
    pub fn overflowed(&self, cluster: &str, reason: &str) {
        self.overflows.with_label_values(&[cluster, reason]).inc();
    }

    /// The request counter and duration histogram for these labels.
    fn series(&self, cluster: &str, class: &'static str, flags: ResponseFlags) -> (IntCounter, Histogram) {
        let hit = self.resolved.read().unwrap_or_else(|p| p.into_inner()).iter().find_map(|(c, k, f, counter, h)| {
            (c == cluster && *k == class && *f == flags).then(|| (counter.clone(), h.clone()))
        });
        if let Some(series) = hit {
            return series;
        }
        let flag_codes = if flags.is_empty() { "-".to_string() } else { flags.to_string() };
        let counter = self.requests.with_label_values(&[&self.listener, cluster, class, &flag_codes]);
        let histogram = self.duration.with_label_values(&[&self.listener, cluster]);
        let mut resolved = self.resolved.write().unwrap_or_else(|p| p.into_inner());
        if resolved.len() < MAX_RESOLVED {
            resolved.push((cluster.to_string(), class, flags, counter.clone(), histogram.clone()));
        }
        (counter, histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(registry: &Registry, labels: &[(&str, &str)]) -> u64 {
        let families = registry.gather();
        let Some(family) = families.iter().find(|f| f.name() == "wasmesh_http_requests_total") else { return 0 };
        family
            .get_metric()
            .iter()
            .filter(|m| labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v)))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    #[test]
    fn repeated_records_land_in_their_own_series() {
        let registry = Registry::new();
        let stats = ProxyMetrics::new(&registry).listener(&std::sync::Arc::from("l"));
        for _ in 0..3 {
            stats.record("a", 200, ResponseFlags::NONE, 0.001);
        }
        stats.record("a", 503, ResponseFlags::UPSTREAM_CONNECTION_FAILURE, 0.001);
        stats.record("b", 204, ResponseFlags::NONE, 0.001);
        stats.record("a", 200, ResponseFlags::NONE, 0.001);
        assert_eq!(count(&registry, &[("cluster", "a"), ("code_class", "2xx"), ("response_flags", "-")]), 4);
        assert_eq!(count(&registry, &[("cluster", "a"), ("code_class", "5xx"), ("response_flags", "UF")]), 1);
        assert_eq!(count(&registry, &[("cluster", "b"), ("code_class", "2xx")]), 1);
        assert_eq!(count(&registry, &[("listener", "l")]), 6);
    }
}
