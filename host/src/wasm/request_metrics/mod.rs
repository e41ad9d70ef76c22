//! Request metrics the proxy records for a filter (`wasmesh.define_request_metrics`,
//! `wasmesh.request_metrics`). A filter hands over a template once — metric names and
//! labels, each label a literal or a [`Fact`] of the finished request — and the proxy
//! records every stream that uses it when the stream ends, without entering the VM:
//! `builtin:telemetry` decides Istio's standard labels (reporter, workloads, peers) and
//! the proxy fills in the per-request ones (code, flags, service, principals). The
//! series live in the filters' metric store (`custom_metrics`), so they are scraped,
//! capped and named like metrics the filter defined itself.

mod facts;
mod template;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use super::custom_metrics::{CustomMetrics, MetricKind};
use super::runtime::lock;
use super::state::StreamShared;
use super::vm::Vm;

pub(crate) use facts::HeadFacts;
use facts::{FactSet, Facts};
pub(crate) use template::SpecError;

use template::{Label, Spec};

/// Most templates per runtime (a filter defines one per peer workload it learns; a
/// template is never dropped, so this bounds what hostile peer headers can make).
const MAX_TEMPLATES: usize = 4096;

/// Most distinct label sets whose series ids the templates of a runtime cache together
/// (the metric store's own cap); more are looked up in the store per request.
const MAX_CACHED_SERIES: usize = 50_000;

/// The templates of one runtime, by id (the same template gets the same id on every
/// worker).
pub(crate) struct RequestMetrics {
    inner: Mutex<Templates>,
    /// Where the templates' series live.
    store: Arc<CustomMetrics>,
    /// Label sets cached by all templates.
    cached: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Templates {
    all: Vec<Arc<Template>>,
    by_text: HashMap<Box<[u8]>, u32>,
}

/// A template in use: its spec, the facts it reads, where its series live and the series
/// of each label set seen.
pub(crate) struct Template {
    spec: Spec,
    facts: FactSet,
    store: Arc<CustomMetrics>,
    series: Mutex<SeriesCache>,
    /// The runtime's count of cached label sets.
    cached: Arc<AtomicUsize>,
}

/// Series ids by label set: facts hashed, collisions told apart by comparing them.
#[derive(Default)]
struct SeriesCache {
    map: FxHashMap<u64, Vec<(Facts<'static>, Arc<SeriesIds>)>>,
}

/// Metric-store ids of one label set's series.
#[derive(Debug, Default)]
struct SeriesIds {
    requests: Option<u32>,
    duration_ms: Option<u32>,
    request_bytes: Option<u32>,
    response_bytes: Option<u32>,
    request_messages: Option<u32>,
    response_messages: Option<u32>,
}

/// Why a template could not be defined.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DefineError {
    /// The template is malformed.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// [`MAX_TEMPLATES`] reached.
    #[error("too many request-metric templates (at most {MAX_TEMPLATES})")]
    Full,
}

/// The templates a stream records at its end, and what they need from its heads.
#[derive(Default)]
pub(crate) struct StreamMetrics {
    /// One per filter context that asked.
    pub uses: Vec<Use>,
    pub head: HeadFacts,
}

/// Who a stream's use of a template belongs to: a filter's root context in one VM (its
/// HTTP context changes the use its root started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    vm: usize,
    root: u32,
}

/// One filter's request metrics for one stream.
pub(crate) struct Use {
    pub owner: Owner,
    pub template: Arc<Template>,
    /// gRPC messages (request, response) the filter counted.
    pub messages: Option<(u64, u64)>,
}

// === impl Owner ===

impl Owner {
    /// The root context `root` of `vm`.
    pub fn new(vm: *const Vm, root: u32) -> Owner {
        Owner { vm: vm as usize, root }
    }
}

// === impl RequestMetrics ===

impl RequestMetrics {
    /// No templates yet; their series go to `store`.
    pub fn new(store: Arc<CustomMetrics>) -> RequestMetrics {
        RequestMetrics { inner: Mutex::default(), store, cached: Arc::default() }
    }

    /// Defines (or finds) the template `json`; its id.
    pub fn define(&self, json: &[u8]) -> Result<u32, DefineError> {
        let mut t = lock(&self.inner);
        if let Some(id) = t.by_text.get(json) {
            return Ok(*id);
        }
        if t.all.len() >= MAX_TEMPLATES {
            return Err(DefineError::Full);
        }
        let spec = Spec::parse(json)?;
        let mut facts = FactSet::default();
        for (_, l) in &spec.labels {
            if let Label::Fact { fact, .. } = l {
                facts.insert(*fact);
            }
        }
        let id = t.all.len() as u32;
        let (store, cached) = (self.store.clone(), self.cached.clone());
        t.all.push(Arc::new(Template { spec, facts, store, series: Mutex::default(), cached }));
        t.by_text.insert(json.into(), id);
        Ok(id)
    }

    /// The template `id`.
    pub fn get(&self, id: u32) -> Option<Arc<Template>> {
        lock(&self.inner).all.get(id as usize).cloned()
    }
}

// === impl StreamMetrics ===

impl StreamMetrics {
    /// Records every use for the finished stream `s`.
    pub fn record(&self, s: &StreamShared) {
        for u in &self.uses {
            u.template.record(s, &self.head, u.messages);
        }
    }

    /// Sets the template of `owner`'s use (adding one).
    pub fn set(&mut self, owner: Owner, template: Arc<Template>) {
        match self.uses.iter_mut().find(|u| u.owner == owner) {
            Some(u) => u.template = template,
            None => self.uses.push(Use { owner, template, messages: None }),
        }
    }

    /// Sets the gRPC message counts of `owner`'s use; false when it has none.
    pub fn set_messages(&mut self, owner: Owner, messages: (u64, u64)) -> bool {
        match self.uses.iter_mut().find(|u| u.owner == owner) {
            Some(u) => {
                u.messages = Some(messages);
                true
            }
            None => false,
        }
    }
}

// === impl Template ===

impl Template {
    /// Records the finished stream `s` in the series of its label set.
    fn record(&self, s: &StreamShared, head: &HeadFacts, messages: Option<(u64, u64)>) {
        let facts = self.facts.of(s, head);
        let ids = self.series_of(&facts);
        let up = &s.upstream;
        let count = |id: Option<u32>, v: u64| {
            if let Some(id) = id {
                let _ = self.store.record(id, v);
            }
        };
        count(ids.requests, 1);
        if ids.duration_ms.is_some() {
            let end = up.end.unwrap_or_else(std::time::SystemTime::now);
            let ms = end.duration_since(s.info.start).unwrap_or_default().as_millis();
            count(ids.duration_ms, u64::try_from(ms).unwrap_or(u64::MAX));
        }
        count(ids.request_bytes, up.request_body_bytes + up.request_header_bytes);
        count(ids.response_bytes, up.response_body_bytes + up.response_header_bytes);
        if let Some((req, resp)) = messages {
            count(ids.request_messages, req);
            count(ids.response_messages, resp);
        }
    }

    /// The series of `facts`' label set, defined on first sight.
    fn series_of(&self, facts: &Facts<'_>) -> Arc<SeriesIds> {
        let hash = facts.hash_value();
        let mut cache = lock(&self.series);
        if let Some((_, ids)) = cache.map.get(&hash).and_then(|b| b.iter().find(|(k, _)| k == facts)) {
            return ids.clone();
        }
        let ids = Arc::new(self.define_series(facts));
        if self.cached.fetch_add(1, Ordering::Relaxed) < MAX_CACHED_SERIES {
            cache.map.entry(hash).or_default().push((facts.to_static(), ids.clone()));
        } else {
            self.cached.fetch_sub(1, Ordering::Relaxed);
        }
        ids
    }

    fn define_series(&self, facts: &Facts<'_>) -> SeriesIds {
        let values: Vec<std::borrow::Cow<'_, str>> = self
            .spec
            .labels
            .iter()
            .map(|(_, l)| match l {
                Label::Literal(v) => v.as_str().into(),
                Label::Fact { fact, default } => fact.value(facts).unwrap_or_else(|| default.as_str().into()),
            })
            .collect();
        let pairs = || self.spec.labels.iter().map(|(n, _)| n.as_str()).zip(values.iter().map(|v| &**v));
        let m = &self.spec.metrics;
        let define = |name: &Option<String>, kind| name.as_deref().map(|n| self.store.define_labeled(kind, n, pairs()));
        // Message counters exist for gRPC label sets only, as in Istio.
        let grpc = |name: &Option<String>| if facts.grpc { define(name, MetricKind::Counter) } else { None };
        SeriesIds {
            requests: define(&m.requests, MetricKind::Counter),
            duration_ms: define(&m.duration_ms, MetricKind::Histogram),
            request_bytes: define(&m.request_bytes, MetricKind::Histogram),
            response_bytes: define(&m.response_bytes, MetricKind::Histogram),
            request_messages: grpc(&m.request_messages),
            response_messages: grpc(&m.response_messages),
        }
    }
}

#[cfg(test)]
impl SeriesCache {
    /// Label sets cached.
    fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }
}
