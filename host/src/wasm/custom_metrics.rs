//! Metrics defined by filters (`proxy_define_metric`), registered in the proxy's
//! Prometheus registry. A name may carry labels in Prometheus form,
//! `name{key="value",…}`: each base name becomes one family with those label names.
//! Ids are process-wide, so every worker's VM gets the same id for the same metric.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::abi::status::Status;
use super::runtime::lock;

/// Buckets for duration-like histograms (Istio's, in milliseconds).
const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Most distinct filter metrics (name + labels) per runtime.
const MAX_METRICS: usize = 50_000;

/// Kinds of `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Filter metrics of one runtime.
pub(crate) struct CustomMetrics {
    registry: Registry,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ids: HashMap<(MetricKind, String), u32>,
    metrics: Vec<Metric>,
    families: HashMap<String, Family>,
}

#[derive(Clone)]
enum Metric {
    Counter(IntCounter),
    Gauge(IntGauge),
    Histogram(Histogram),
}

enum Family {
    Counter(IntCounterVec, Vec<String>),
    Gauge(IntGaugeVec, Vec<String>),
    Histogram(HistogramVec, Vec<String>),
}

// === impl MetricKind ===

impl MetricKind {
    pub fn from_raw(v: u32) -> Option<MetricKind> {
        match v {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}

// === impl CustomMetrics ===

impl CustomMetrics {
    pub fn new(registry: Registry) -> Self {
        CustomMetrics { registry, inner: Mutex::new(Inner::default()) }
    }

    /// Defines (or finds) a metric; always succeeds (a name that cannot be registered
    /// gets a detached metric and a warning, since the SDK accepts only `Ok`).
    pub fn define(&self, kind: MetricKind, name: &str) -> u32 {
        let mut inner = lock(&self.inner);
        if let Some(id) = inner.ids.get(&(kind, name.to_owned())) {
            return *id;
        }
        if inner.metrics.len() >= MAX_METRICS {
            // Cardinality guard: every further metric shares one detached sink per kind.
            tracing::warn!(metric = name, "too many filter metrics; not exported");
            let sink = format!("wasmesh_filter_metrics_overflow_{}", kind as u8);
            if let Some(id) = inner.ids.get(&(kind, sink.clone())) {
                return *id;
            }
            let id = inner.metrics.len() as u32;
            inner.metrics.push(detached(kind, &sink));
            inner.ids.insert((kind, sink), id);
            return id;
        }
        let (base, labels) = parse_name(name);
        let metric = self.resolve(&mut inner, kind, &base, &labels).unwrap_or_else(|why| {
            tracing::warn!(metric = name, why, "filter metric not exported");
            detached(kind, &base)
        });
        let id = inner.metrics.len() as u32;
        inner.metrics.push(metric);
        inner.ids.insert((kind, name.to_owned()), id);
        id
    }

    fn resolve(
        &self,
        inner: &mut Inner,
        kind: MetricKind,
        base: &str,
        labels: &[(String, String)],
    ) -> Result<Metric, &'static str> {
        let names: Vec<String> = labels.iter().map(|(k, _)| k.clone()).collect();
        let values: Vec<&str> = labels.iter().map(|(_, v)| v.as_str()).collect();
        if !inner.families.contains_key(base) {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let help = format!("filter metric {base}");
            let fam = match kind {
                MetricKind::Counter => Family::Counter(
                    IntCounterVec::new(Opts::new(base, &help), &refs).map_err(|_| "invalid name")?,
                    names.clone(),
                ),
                MetricKind::Gauge => Family::Gauge(
                    IntGaugeVec::new(Opts::new(base, &help), &refs).map_err(|_| "invalid name")?,
                    names.clone(),
                ),
                MetricKind::Histogram => {
                    let buckets = if base.ends_with("_bytes") || base.ends_with("_size") {
                        prometheus::exponential_buckets(1.0, 10.0, 10).unwrap_or_default()
                    } else {
                        DURATION_BUCKETS.to_vec()
                    };
                    let opts = HistogramOpts::new(base, &help).buckets(buckets);
                    Family::Histogram(HistogramVec::new(opts, &refs).map_err(|_| "invalid name")?, names.clone())
                }
            };
            let collector: Box<dyn Collector> = match &fam {
                Family::Counter(v, _) => Box::new(v.clone()),
                Family::Gauge(v, _) => Box::new(v.clone()),
                Family::Histogram(v, _) => Box::new(v.clone()),
            };
            self.registry.register(collector).map_err(|_| "name clashes with another metric")?;
            inner.families.insert(base.to_owned(), fam);
        }
        let fam = inner.families.get(base).ok_or("family missing")?;
        match (fam, kind) {
            (Family::Counter(v, n), MetricKind::Counter) if *n == names => {
                v.get_metric_with_label_values(&values).map(Metric::Counter).map_err(|_| "bad labels")
            }
            (Family::Gauge(v, n), MetricKind::Gauge) if *n == names => {
                v.get_metric_with_label_values(&values).map(Metric::Gauge).map_err(|_| "bad labels")
            }
            (Family::Histogram(v, n), MetricKind::Histogram) if *n == names => {
                v.get_metric_with_label_values(&values).map(Metric::Histogram).map_err(|_| "bad labels")
            }
            _ => Err("same name defined with another type or other label names"),
        }
    }

    fn get(&self, id: u32) -> Option<Metric> {
        lock(&self.inner).metrics.get(id as usize).cloned()
    }

    /// `proxy_increment_metric`.
    pub fn increment(&self, id: u32, delta: i64) -> Status {
        match self.get(id) {
            None => Status::NotFound,
            Some(Metric::Counter(_)) if delta < 0 => Status::BadArgument,
            Some(Metric::Counter(c)) => {
                c.inc_by(delta as u64);
                Status::Ok
            }
            Some(Metric::Gauge(g)) => {
                g.add(delta);
                Status::Ok
            }
            // Envoy: increment is not defined for histograms.
            Some(Metric::Histogram(_)) => Status::BadArgument,
        }
    }

    /// `proxy_record_metric`: adds to a counter, sets a gauge, observes a histogram.
    pub fn record(&self, id: u32, value: u64) -> Status {
        match self.get(id) {
            None => Status::NotFound,
            Some(Metric::Counter(c)) => {
                c.inc_by(value);
                Status::Ok
            }
            Some(Metric::Gauge(g)) => {
                g.set(value as i64);
                Status::Ok
            }
            Some(Metric::Histogram(h)) => {
                h.observe(value as f64);
                Status::Ok
            }
        }
    }

    /// `proxy_get_metric`.
    pub fn value(&self, id: u32) -> Result<u64, Status> {
        match self.get(id) {
            None => Err(Status::NotFound),
            Some(Metric::Counter(c)) => Ok(c.get()),
            Some(Metric::Gauge(g)) => Ok(g.get() as u64),
            Some(Metric::Histogram(_)) => Err(Status::BadArgument),
        }
    }
}

fn detached(kind: MetricKind, base: &str) -> Metric {
    let name = if base.is_empty() { "invalid" } else { base };
    let fallback = "invalid_metric_name";
    match kind {
        MetricKind::Counter => Metric::Counter(
            IntCounter::new(name, "detached")
                .or_else(|_| IntCounter::new(fallback, "detached"))
                .unwrap_or_else(|_| unreachable_metric()),
        ),
        MetricKind::Gauge => Metric::Gauge(
            IntGauge::new(name, "detached")
                .or_else(|_| IntGauge::new(fallback, "detached"))
                .unwrap_or_else(|_| unreachable_metric()),
        ),
        MetricKind::Histogram => Metric::Histogram(
            Histogram::with_opts(HistogramOpts::new(name, "detached"))
                .or_else(|_| Histogram::with_opts(HistogramOpts::new(fallback, "detached")))
                .unwrap_or_else(|_| unreachable_metric()),
        ),
    }
}

#[allow(clippy::panic)]
fn unreachable_metric<T>() -> T {
    // A constant, valid metric name never fails to build.
    panic!("prometheus rejected the constant metric name `invalid_metric_name`")
}

/// Splits `name{a="1",b="2"}` into a sanitized base name and its labels.
pub(crate) fn parse_name(name: &str) -> (String, Vec<(String, String)>) {
    let (base, rest) = match name.find('{') {
        Some(i) if name.ends_with('}') => (&name[..i], Some(&name[i + 1..name.len() - 1])),
        _ => (name, None),
    };
    let mut labels = Vec::new();
    if let Some(rest) = rest {
        for part in split_labels(rest) {
            if let Some((k, v)) = part.split_once('=') {
                let v = v.trim().trim_matches('"').replace("\\\"", "\"");
                labels.push((sanitize(k.trim()), v));
            }
        }
    }
    (sanitize(base), labels)
}

fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '\\' if quoted => escaped = !escaped,
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

fn sanitize(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_in_names() {
        let (b, l) = parse_name(r#"istio_requests_total{code="200",app="a,b"}"#);
        assert_eq!(b, "istio_requests_total");
        assert_eq!(l, vec![("code".into(), "200".into()), ("app".into(), "a,b".into())]);
        assert_eq!(parse_name("a.b-c").0, "a_b_c");
    }

    #[test]
    fn families_and_values() {
        let reg = Registry::new();
        let m = CustomMetrics::new(reg.clone());
        let a = m.define(MetricKind::Counter, r#"reqs{code="200"}"#);
        let b = m.define(MetricKind::Counter, r#"reqs{code="500"}"#);
        assert_ne!(a, b);
        assert_eq!(m.define(MetricKind::Counter, r#"reqs{code="200"}"#), a);
        assert_eq!(m.increment(a, 2), Status::Ok);
        assert_eq!(m.increment(a, -1), Status::BadArgument);
        assert_eq!(m.record(a, 3), Status::Ok);
        assert_eq!(m.value(a), Ok(5));
        // Same base, other label names: detached, still usable.
        let c = m.define(MetricKind::Counter, r#"reqs{other="x"}"#);
        assert_eq!(m.increment(c, 1), Status::Ok);
        let h = m.define(MetricKind::Histogram, "lat_ms");
        assert_eq!(m.record(h, 12), Status::Ok);
        assert_eq!(m.value(h), Err(Status::BadArgument));
        assert_eq!(m.value(999), Err(Status::NotFound));
        let text = reg.gather().iter().map(|f| f.name().to_owned()).collect::<Vec<_>>();
        assert!(text.contains(&"reqs".to_owned()) && text.contains(&"lat_ms".to_owned()));
    }
}
