//! A request-metrics template as a filter declares it (JSON), validated.

use serde::Deserialize;

use super::facts::Fact;

/// Most labels one template carries (Istio's standard set has 25).
const MAX_LABELS: usize = 64;

/// A parsed `wasmesh.define_request_metrics` argument.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Metric names; an absent one is not recorded.
    pub metrics: Names,
    /// Label names in exposition order, each with where its value comes from.
    pub labels: Vec<(String, Label)>,
}

/// The metrics a template records, by name.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Names {
    /// Counter: one per request.
    pub requests: Option<String>,
    /// Histogram: request duration in whole milliseconds.
    pub duration_ms: Option<String>,
    /// Histogram: request size (headers and body) in bytes.
    pub request_bytes: Option<String>,
    /// Histogram: response size (headers and body) in bytes.
    pub response_bytes: Option<String>,
    /// Counter: gRPC request messages (as the filter reports them for its stream).
    pub request_messages: Option<String>,
    /// Counter: gRPC response messages.
    pub response_messages: Option<String>,
}

/// Where a label's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Label {
    /// The same for every request.
    Literal(String),
    /// A fact of the request, or `default` when the request does not have it.
    Fact { fact: Fact, default: String },
}

/// The JSON form of [`Spec`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    metrics: Names,
    /// `[name, "literal"]` or `[name, {"fact": …, "default": …}]` (told apart by hand, so
    /// a bad fact gets serde's own message rather than "no variant matched").
    labels: Vec<(String, serde_json::Value)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFact {
    fact: Fact,
    #[serde(default)]
    default: String,
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SpecError {
    /// Not the JSON shape (serde's message names the field, line and column).
    #[error("{0}")]
    Json(String),
    /// A label value that is neither a string nor a fact.
    #[error("labels[{index}] {name:?}: {message}")]
    Label { index: usize, name: String, message: String },
    /// A label or metric name Prometheus does not accept.
    #[error("{what} {name:?} is not a valid Prometheus name")]
    Name { what: &'static str, name: String },
    /// The same label twice.
    #[error("label {0:?} is given twice")]
    DuplicateLabel(String),
    /// Too many labels.
    #[error("{0} labels (at most {MAX_LABELS})")]
    TooManyLabels(usize),
    /// No metric named.
    #[error("no metric named in \"metrics\"")]
    NoMetric,
}

// === impl Spec ===

impl Spec {
    /// Parses and validates a template.
    pub fn parse(json: &[u8]) -> Result<Spec, SpecError> {
        let raw: RawSpec = serde_json::from_slice(json).map_err(|e| SpecError::Json(e.to_string()))?;
        if raw.labels.len() > MAX_LABELS {
            return Err(SpecError::TooManyLabels(raw.labels.len()));
        }
        let mut labels: Vec<(String, Label)> = Vec::with_capacity(raw.labels.len());
        for (index, (name, raw)) in raw.labels.into_iter().enumerate() {
            if !valid(&name, false) || name == "le" {
                return Err(SpecError::Name { what: "label", name });
            }
            if labels.iter().any(|(n, _)| *n == name) {
                return Err(SpecError::DuplicateLabel(name));
            }
            let label = match raw {
                serde_json::Value::String(v) => Label::Literal(v),
                other => match serde_json::from_value::<RawFact>(other) {
                    Ok(f) => Label::Fact { fact: f.fact, default: f.default },
                    Err(e) => return Err(SpecError::Label { index, name, message: e.to_string() }),
                },
            };
            labels.push((name, label));
        }
        let m = &raw.metrics;
        let names = [
            &m.requests,
            &m.duration_ms,
            &m.request_bytes,
            &m.response_bytes,
            &m.request_messages,
            &m.response_messages,
        ];
        if names.iter().all(|n| n.is_none()) {
            return Err(SpecError::NoMetric);
        }
        if let Some(bad) = names.iter().copied().flatten().find(|n| !valid(n, true)) {
            return Err(SpecError::Name { what: "metric", name: bad.clone() });
        }
        Ok(Spec { metrics: raw.metrics, labels })
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*` (with `:` for metric names).
fn valid(name: &str, colon: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && name.chars().all(ok)
}
