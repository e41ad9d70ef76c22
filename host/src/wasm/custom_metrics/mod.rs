//! Metrics defined by filters (`proxy_define_metric`). A name may carry labels in
//! Prometheus form, `name{key="value",…}`: each base name becomes one family with
//! those label names. Ids are process-wide, so every worker's VM gets the same id for
//! the same metric.
//!
//! The store is built for many label sets (Istio's metrics carry 25 labels): a label
//! set is rendered to text once and shared by every family that uses it, a series is
//! its value cells and a pointer to that text, and a scrape copies the text out
//! chunk by chunk ([`CustomMetrics::render_next`]) instead of building the whole
//! exposition in memory. The families' names are claimed in the proxy's registry,
//! so a filter cannot shadow a host metric (or the other way round).

mod exposition;
mod name;
mod series;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::Registry;

use self::series::{Cells, Series};
use super::abi::status::Status;
use super::runtime::lock;

pub(crate) use exposition::Cursor;

/// Buckets for duration-like histograms (Istio's, in milliseconds).
const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Buckets for size-like histograms (`*_bytes`, `*_size`): 1, 10, … 10⁹.
const SIZE_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

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
    /// Where family names are claimed against the host's metrics.
    registry: Registry,
    catalog: Mutex<Catalog>,
    /// Indexed by metric id; only ever appended to.
    series: RwLock<Vec<Series>>,
}

/// What defining a metric looks up.
#[derive(Default)]
struct Catalog {
    families: Vec<Family>,
    by_name: HashMap<Arc<str>, u32>,
    /// Rendered label sets, shared between families.
    label_sets: HashSet<Arc<str>>,
    ids: HashMap<Key, u32>,
    /// The detached sink per kind once [`MAX_METRICS`] is reached.
    overflow: HashMap<MetricKind, u32>,
}

/// Identity of a defined metric.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    kind: MetricKind,
    base: Arc<str>,
    labels: Arc<str>,
}

/// An exported metric family.
struct Family {
    name: Arc<str>,
    kind: MetricKind,
    label_names: Vec<String>,
    /// Histogram bucket bounds (empty otherwise).
    bounds: Arc<[f64]>,
    /// The bounds as `le` label values, then `+Inf`.
    le: Vec<String>,
    /// Ids of its series, in definition order.
    members: Vec<u32>,
}

/// Holds a family's name in the registry; exports nothing itself.
struct NameClaim(Desc);

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

    fn type_name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

// === impl CustomMetrics ===

impl CustomMetrics {
    pub fn new(registry: Registry) -> Self {
        CustomMetrics { registry, catalog: Mutex::new(Catalog::default()), series: RwLock::new(Vec::new()) }
    }

    /// Defines (or finds) a metric; always succeeds (a name that cannot be exported
    /// gets a detached metric and a warning, since the SDK accepts only `Ok`).
    pub fn define(&self, kind: MetricKind, name: &str) -> u32 {
        self.define_parsed(kind, name::parse(name))
    }

    /// [`CustomMetrics::define`] with the labels as unescaped `(name, value)` pairs.
    pub fn define_labeled<'a>(
        &self,
        kind: MetricKind,
        base: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> u32 {
        self.define_parsed(kind, name::from_pairs(base, labels))
    }

    fn define_parsed(&self, kind: MetricKind, parsed: name::MetricName) -> u32 {
        let name = parsed.base.as_str();
        let mut catalog = lock(&self.catalog);
        let base = catalog.by_name.get_key_value(name).map(|(k, _)| k.clone());
        let base = base.unwrap_or_else(|| Arc::from(name));
        let labels = catalog.label_sets.get(parsed.labels.as_str()).cloned();
        let labels = labels.unwrap_or_else(|| Arc::from(parsed.labels.as_str()));
        let key = Key { kind, base, labels };
        if let Some(id) = catalog.ids.get(&key) {
            return *id;
        }
        if self.len() >= MAX_METRICS {
            // Cardinality guard: every further metric shares one detached sink per kind.
            tracing::warn!(metric = name, "too many filter metrics; not exported");
            if let Some(id) = catalog.overflow.get(&kind) {
                return *id;
            }
            let id = self.push(Series { labels: key.labels, cells: Cells::new(kind, &empty()) });
            catalog.overflow.insert(kind, id);
            return id;
        }
        let family = self.family(&mut catalog, kind, &key.base, parsed.label_names).unwrap_or_else(|why| {
            tracing::warn!(metric = name, why, "filter metric not exported");
            None
        });
        let bounds = family.and_then(|f| catalog.families.get(f as usize)).map(|f| f.bounds.clone());
        let cells = Cells::new(kind, &bounds.unwrap_or_else(|| bounds_for(kind, &key.base)));
        catalog.label_sets.insert(key.labels.clone());
        let id = self.push(Series { labels: key.labels.clone(), cells });
        if let Some(f) = family.and_then(|f| catalog.families.get_mut(f as usize)) {
            f.members.push(id);
        }
        catalog.ids.insert(key, id);
        id
    }

    /// The family `base` of `kind` with `label_names`, created (and its name claimed)
    /// when new; `None` for a name that cannot be exported.
    fn family(
        &self,
        catalog: &mut Catalog,
        kind: MetricKind,
        base: &Arc<str>,
        label_names: Vec<String>,
    ) -> Result<Option<u32>, &'static str> {
        if let Some(&f) = catalog.by_name.get(base) {
            return match catalog.families.get(f as usize) {
                Some(fam) if fam.kind == kind && fam.label_names == label_names => Ok(Some(f)),
                _ => Err("same name defined with another type or other label names"),
            };
        }
        if kind == MetricKind::Histogram && label_names.iter().any(|n| n == "le") {
            return Err("`le` is reserved in histograms");
        }
        let desc = Desc::new(base.to_string(), help(base), label_names.clone(), HashMap::new())
            .map_err(|_| "invalid name or label names")?;
        self.registry.register(Box::new(NameClaim(desc))).map_err(|_| "name clashes with another metric")?;
        let bounds = bounds_for(kind, base);
        let le = bounds.iter().map(f64::to_string).chain(std::iter::once("+Inf".to_owned())).collect();
        let f = catalog.families.len() as u32;
        catalog.families.push(Family { name: base.clone(), kind, label_names, bounds, le, members: Vec::new() });
        catalog.by_name.insert(base.clone(), f);
        Ok(Some(f))
    }

    fn push(&self, series: Series) -> u32 {
        let mut all = self.series.write().unwrap_or_else(PoisonError::into_inner);
        all.push(series);
        (all.len() - 1) as u32
    }

    fn len(&self) -> usize {
        self.series.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Runs `f` on the cells of metric `id`; `NotFound` for an unknown id.
    fn with_cells(&self, id: u32, f: impl FnOnce(&Cells) -> Status) -> Status {
        let all = self.series.read().unwrap_or_else(PoisonError::into_inner);
        all.get(id as usize).map_or(Status::NotFound, |s| f(&s.cells))
    }

    /// `proxy_increment_metric`.
    pub fn increment(&self, id: u32, delta: i64) -> Status {
        use std::sync::atomic::Ordering::Relaxed;
        self.with_cells(id, |cells| match cells {
            Cells::Counter(_) if delta < 0 => Status::BadArgument,
            Cells::Counter(c) => {
                c.fetch_add(delta as u64, Relaxed);
                Status::Ok
            }
            Cells::Gauge(g) => {
                g.fetch_add(delta, Relaxed);
                Status::Ok
            }
            // Envoy: increment is not defined for histograms.
            Cells::Histogram(_) => Status::BadArgument,
        })
    }

    /// `proxy_record_metric`: adds to a counter, sets a gauge, observes a histogram.
    pub fn record(&self, id: u32, value: u64) -> Status {
        use std::sync::atomic::Ordering::Relaxed;
        self.with_cells(id, |cells| {
            match cells {
                Cells::Counter(c) => {
                    c.fetch_add(value, Relaxed);
                }
                Cells::Gauge(g) => g.store(value as i64, Relaxed),
                Cells::Histogram(h) => h.observe(value),
            }
            Status::Ok
        })
    }

    /// `proxy_get_metric`.
    pub fn value(&self, id: u32) -> Result<u64, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = Err(Status::NotFound);
        self.with_cells(id, |cells| {
            out = match cells {
                Cells::Counter(c) => Ok(c.load(Relaxed)),
                Cells::Gauge(g) => Ok(g.load(Relaxed) as u64),
                Cells::Histogram(_) => Err(Status::BadArgument),
            };
            Status::Ok
        });
        out
    }
}

// === impl NameClaim ===

impl Collector for NameClaim {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Vec::new()
    }
}

fn help(base: &str) -> String {
    format!("filter metric {base}")
}

fn empty() -> Arc<[f64]> {
    Arc::from(&[][..])
}

fn bounds_for(kind: MetricKind, base: &str) -> Arc<[f64]> {
    match kind {
        MetricKind::Histogram if base.ends_with("_bytes") || base.ends_with("_size") => Arc::from(SIZE_BUCKETS),
        MetricKind::Histogram => Arc::from(DURATION_BUCKETS),
        _ => empty(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        // Same base, other label names: detached, still usable, same id again.
        let c = m.define(MetricKind::Counter, r#"reqs{other="x"}"#);
        assert_eq!(m.increment(c, 1), Status::Ok);
        assert_eq!(m.define(MetricKind::Counter, r#"reqs{other="x"}"#), c);
        let h = m.define(MetricKind::Histogram, "lat_ms");
        assert_eq!(m.record(h, 12), Status::Ok);
        assert_eq!(m.value(h), Err(Status::BadArgument));
        assert_eq!(m.increment(h, 1), Status::BadArgument);
        assert_eq!(m.value(999), Err(Status::NotFound));
        let g = m.define(MetricKind::Gauge, "level");
        assert_eq!(m.record(g, 7), Status::Ok);
        assert_eq!(m.increment(g, -9), Status::Ok);
        assert_eq!(m.value(g), Ok(-2i64 as u64));
        let text = m.render_all();
        assert!(text.contains("reqs{code=\"200\"} 5\n") && !text.contains("other"), "{text}");
        assert!(text.contains("lat_ms_bucket{le=\"25\"} 1\n"), "{text}");
    }

    #[test]
    fn names_are_claimed_against_the_host_registry() {
        let reg = Registry::new();
        let host = prometheus::IntCounter::new("wasmesh_host_total", "host").unwrap();
        reg.register(Box::new(host)).unwrap();
        let m = CustomMetrics::new(reg.clone());
        let clash = m.define(MetricKind::Counter, "wasmesh_host_total");
        assert_eq!(m.increment(clash, 1), Status::Ok, "detached but usable");
        let own = m.define(MetricKind::Counter, "filter_total");
        m.increment(own, 1);
        assert!(!m.render_all().contains("wasmesh_host_total"));
        // The host cannot take a filter's name later either.
        let late = prometheus::IntCounter::new("filter_total", "late").unwrap();
        assert!(reg.register(Box::new(late)).is_err());
        // Neither can a histogram use `le`, nor a name repeat a label.
        let le = m.define(MetricKind::Histogram, r#"h_ms{le="1"}"#);
        let dup = m.define(MetricKind::Counter, r#"d_total{a="1",a="2"}"#);
        assert_eq!(m.record(le, 1), Status::Ok);
        assert_eq!(m.increment(dup, 1), Status::Ok);
        let text = m.render_all();
        assert!(!text.contains("h_ms") && !text.contains("d_total"), "{text}");
    }

    #[test]
    fn label_sets_are_stored_once_across_families() {
        let m = CustomMetrics::new(Registry::new());
        let labels = r#"{reporter="destination",source_workload="a"}"#;
        let ids: Vec<u32> = ["req_total", "dur_ms", "size_bytes"]
            .iter()
            .zip([MetricKind::Counter, MetricKind::Histogram, MetricKind::Histogram])
            .map(|(n, k)| m.define(k, &format!("{n}{labels}")))
            .collect();
        let all = m.series.read().unwrap();
        let first = &all[ids[0] as usize].labels;
        assert!(ids.iter().all(|&id| Arc::ptr_eq(&all[id as usize].labels, first)));
        assert_eq!(lock(&m.catalog).label_sets.len(), 1);
    }

    #[test]
    fn the_cardinality_cap_sends_new_metrics_to_one_sink() {
        let m = CustomMetrics::new(Registry::new());
        for i in 0..MAX_METRICS {
            m.define(MetricKind::Counter, &format!("c_total{{i=\"{i}\"}}"));
        }
        let over = m.define(MetricKind::Counter, r#"c_total{i="late"}"#);
        assert_eq!(m.define(MetricKind::Counter, r#"c_total{i="later"}"#), over);
        assert_eq!(m.increment(over, 1), Status::Ok);
        assert!(!m.render_all().contains("late"));
    }
}
