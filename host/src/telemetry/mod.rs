//! Metrics registry, log setup and the access-log sink. A leaf: everyone calls in,
//! it calls nothing of the proxy.

mod access_log;
mod log;

pub use access_log::AccessLogSink;
pub use log::{init_logging, LogFormat};

/// A fresh registry for one proxy instance (tests run several proxies in one process).
pub fn new_registry() -> prometheus::Registry {
    prometheus::Registry::new()
}

/// Renders every metric of `registry` in the Prometheus text exposition format.
pub fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::with_capacity(16 * 1024);
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Registers `metric` in `registry`, logging (not failing) on a duplicate: a metric
/// family registered twice is a programming error that must not take the proxy down.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &prometheus::Registry, metric: M) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    metric
}

/// Latency buckets in seconds shared by the host's histograms (0.5 ms … 30 s).
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
