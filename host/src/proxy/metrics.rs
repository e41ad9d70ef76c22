//! The request path's metrics: requests, latency and connections per listener/cluster.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

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
    listener: std::sync::Arc<str>,
}

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
        ProxyMetrics { requests, duration, connections_active, connections_total, downstream_rejected, tls_errors }
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
            listener: listener.clone(),
        }
    }
}

// === impl ListenerStats ===

impl ListenerStats {
    /// Records one completed request.
    pub fn record(&self, cluster: &str, status: u16, flags: crate::flags::ResponseFlags, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let flags = if flags.is_empty() { "-".to_string() } else { flags.to_string() };
        self.requests.with_label_values(&[&self.listener, cluster, class, &flags]).inc();
        self.duration.with_label_values(&[&self.listener, cluster]).observe(seconds);
    }
}
