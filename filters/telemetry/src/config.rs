//! The telemetry filter's configuration (JSON, unknown fields rejected), validated once
//! into the [`Config`] the policy reads. Every error names the field path that is wrong.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::policy::access_log::{AccessLogFilter, LogFormat};
use crate::policy::labels::{Reporter, Workload};
use crate::policy::trace::Propagation;

/// Default OTLP/HTTP path.
pub const DEFAULT_TRACES_PATH: &str = "/v1/traces";
/// Default spans per export request.
pub const DEFAULT_MAX_BATCH: usize = 100;
/// Default bound of buffered spans (per VM).
pub const DEFAULT_MAX_BUFFER: usize = 2048;
/// Default export interval.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
/// Default export timeout.
pub const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 5000;
/// Envoy's default `max_path_tag_length`.
pub const DEFAULT_MAX_PATH_TAG_LENGTH: usize = 256;
/// Istio's default trace sampling (ProxyConfig.tracing.sampling), percent.
pub const DEFAULT_TRACE_SAMPLING: f64 = 1.0;

/// Why a configuration was rejected: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `tracing.sampling`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Forced reporter; `None`: from `listener_direction`.
    pub reporter: Option<Reporter>,
    /// Defaults for the remote side's labels.
    pub peer: Workload,
    /// Exchange workload metadata with the peer (`x-envoy-peer-metadata`, like Istio).
    pub metadata_exchange: bool,
    /// Emit Istio's standard metrics.
    pub metrics: bool,
    /// Tracing; `None`: no propagation and no spans.
    pub tracing: Option<TracingConfig>,
    /// Access logging; `None`: no access log.
    pub access_log: Option<AccessLogConfig>,
}

/// Validated `tracing:`.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// Collector cluster; `None`: propagate only, export nothing.
    pub cluster: Option<String>,
    /// OTLP/HTTP path.
    pub path: String,
    /// `:authority` of export requests (default: the cluster name).
    pub authority: String,
    /// Spans per export request.
    pub max_batch: usize,
    /// Most spans buffered; more are dropped (counted).
    pub max_buffer: usize,
    /// Export period.
    pub flush_interval_ms: u64,
    /// Export request timeout.
    pub timeout_ms: u64,
    /// Percent (0–100) of requests sampled when no parent decided.
    pub sampling: f64,
    /// Header formats written to the upstream.
    pub propagation: Vec<Propagation>,
    /// `service.name` of the exported resource (default `<canonical service>.<namespace>`).
    pub service_name: Option<String>,
    /// Longest `http.url` attribute (characters; 0 = no limit).
    pub max_path_tag_length: usize,
    /// Extra span attributes, by name.
    pub custom_tags: Vec<CustomTag>,
}

/// An extra span attribute (Istio Telemetry `customTags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomTag {
    /// Attribute name.
    pub name: String,
    /// Where its value comes from.
    pub source: TagSource,
}

/// The value of a [`CustomTag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSource {
    /// A fixed value.
    Literal(String),
    /// A request header (lower-case name), with a value for when it is absent.
    Header {
        /// Header name.
        name: String,
        /// Value when the header is absent (`None`: no attribute).
        default_value: Option<String>,
    },
}

/// Validated `access_log:`.
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Which requests are logged.
    pub filter: AccessLogFilter,
    /// Percent (0–100) of the requests passing the filter that are logged.
    pub sampling: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    reporter: Option<String>,
    #[serde(default)]
    peer: RawPeer,
    #[serde(default)]
    metadata_exchange: bool,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    tracing: Option<RawTracing>,
    #[serde(default)]
    access_log: Option<RawAccessLog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    workload: Option<String>,
    namespace: Option<String>,
    principal: Option<String>,
    app: Option<String>,
    version: Option<String>,
    cluster: Option<String>,
    canonical_service: Option<String>,
    canonical_revision: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracing {
    cluster: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    max_batch: Option<u64>,
    max_buffer: Option<u64>,
    flush_interval: Option<String>,
    timeout: Option<String>,
    sampling: Option<f64>,
    propagation: Option<Vec<String>>,
    service_name: Option<String>,
    max_path_tag_length: Option<usize>,
    #[serde(default)]
    custom_tags: BTreeMap<String, RawTag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    literal: Option<RawLiteral>,
    header: Option<RawHeaderTag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLiteral {
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderTag {
    name: String,
    default_value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    format: Option<String>,
    text_format: Option<String>,
    #[serde(default)]
    only_errors: bool,
    when: Option<RawWhen>,
    sampling: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    status_gte: Option<u16>,
    status_lt: Option<u16>,
    #[serde(default)]
    response_flags: Vec<String>,
    min_duration_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

// === impl ConfigError ===

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// === impl Config ===

impl Default for Config {
    /// Metrics on, tracing and access logs off.
    fn default() -> Self {
        Config {
            reporter: None,
            peer: Workload::default(),
            metadata_exchange: false,
            metrics: true,
            tracing: None,
            access_log: None,
        }
    }
}

/// Parses and validates the plugin configuration (empty = defaults). Returns every
/// problem found, each with its field path.
pub fn parse(bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Config::default());
    }
    let raw: RawConfig =
        serde_json::from_slice(bytes).map_err(|e| vec![ConfigError::new("", format!("invalid JSON config: {e}"))])?;
    let mut errs = Vec::new();
    let reporter = match raw.reporter.as_deref() {
        None => None,
        Some(r) => match Reporter::parse(r) {
            Some(r) => Some(r),
            None => {
                errs.push(ConfigError::new("reporter", format!("{r:?} is not one of source, destination, waypoint")));
                None
            }
        },
    };
    let p = raw.peer;
    let peer = Workload {
        name: p.workload,
        namespace: p.namespace,
        principal: p.principal,
        app: p.app,
        version: p.version,
        cluster: p.cluster,
        canonical_service: p.canonical_service,
        canonical_revision: p.canonical_revision,
    };
    let tracing = raw.tracing.map(|t| tracing(t, &mut errs));
    let access_log = raw.access_log.map(|a| access_log(a, &mut errs));
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Config {
        reporter,
        peer,
        metadata_exchange: raw.metadata_exchange,
        metrics: raw.metrics.is_none_or(|m| m.enabled),
        tracing,
        access_log,
    })
}

fn percent(path: &str, v: Option<f64>, default: f64, errs: &mut Vec<ConfigError>) -> f64 {
    match v {
        None => default,
        Some(p) if (0.0..=100.0).contains(&p) => p,
        Some(p) => {
            errs.push(ConfigError::new(path, format!("{p} is not a percentage (0 to 100)")));
            default
        }
    }
}

fn duration(path: &str, v: Option<&str>, default: u64, min: u64, errs: &mut Vec<ConfigError>) -> u64 {
    match v.map(wasmesh_sdk::config::parse_duration_ms) {
        None => default,
        Some(Ok(ms)) if ms >= min => ms,
        Some(Ok(ms)) => {
            errs.push(ConfigError::new(path, format!("{ms}ms is too short (at least {min}ms)")));
            default
        }
        Some(Err(e)) => {
            errs.push(ConfigError::new(path, e));
            default
        }
    }
}

fn count(path: &str, v: Option<u64>, default: usize, max: u64, errs: &mut Vec<ConfigError>) -> usize {
    match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n as usize,
        Some(n) => {
            errs.push(ConfigError::new(path, format!("{n} is out of range (1 to {max})")));
            default
        }
    }
}

fn tracing(t: RawTracing, errs: &mut Vec<ConfigError>) -> TracingConfig {
    if let Some(c) = &t.cluster {
        if c.is_empty() {
            errs.push(ConfigError::new("tracing.cluster", "must not be empty (omit it to only propagate)"));
        }
    }
    let path = t.path.unwrap_or_else(|| DEFAULT_TRACES_PATH.to_string());
    if !path.starts_with('/') {
        errs.push(ConfigError::new("tracing.path", format!("{path:?} must start with '/'")));
    }
    let max_batch = count("tracing.max_batch", t.max_batch, DEFAULT_MAX_BATCH, 10_000, errs);
    let max_buffer = count("tracing.max_buffer", t.max_buffer, DEFAULT_MAX_BUFFER.max(max_batch), 1_000_000, errs);
    if max_buffer < max_batch {
        errs.push(ConfigError::new(
            "tracing.max_buffer",
            format!("{max_buffer} is smaller than tracing.max_batch ({max_batch})"),
        ));
    }
    let propagation = match t.propagation {
        None => vec![Propagation::W3c, Propagation::B3],
        Some(list) => {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                match Propagation::parse(p) {
                    Some(p) if !out.contains(&p) => out.push(p),
                    Some(_) => {}
                    None => errs.push(ConfigError::new(
                        format!("tracing.propagation[{i}]"),
                        format!("{p:?} is not one of w3c, b3, b3_single"),
                    )),
                }
            }
            out
        }
    };
    let mut custom_tags = Vec::new();
    for (name, tag) in t.custom_tags {
        let path = format!("tracing.custom_tags.{name}");
        if name.is_empty() {
            errs.push(ConfigError::new("tracing.custom_tags", "a tag name is empty"));
            continue;
        }
        let source = match (tag.literal, tag.header) {
            (Some(l), None) => TagSource::Literal(l.value),
            (None, Some(h)) => {
                let valid =
                    !h.name.is_empty() && h.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    errs.push(ConfigError::new(
                        format!("{path}.header.name"),
                        format!("{:?} is not a header name", h.name),
                    ));
                    continue;
                }
                TagSource::Header { name: h.name.to_ascii_lowercase(), default_value: h.default_value }
            }
            _ => {
                errs.push(ConfigError::new(path, "set exactly one of literal, header"));
                continue;
            }
        };
        custom_tags.push(CustomTag { name, source });
    }
    TracingConfig {
        max_path_tag_length: t.max_path_tag_length.unwrap_or(DEFAULT_MAX_PATH_TAG_LENGTH),
        custom_tags,
        authority: t.authority.or_else(|| t.cluster.clone()).unwrap_or_default(),
        cluster: t.cluster,
        path,
        max_batch,
        max_buffer,
        flush_interval_ms: duration(
            "tracing.flush_interval",
            t.flush_interval.as_deref(),
            DEFAULT_FLUSH_INTERVAL_MS,
            10,
            errs,
        ),
        timeout_ms: duration("tracing.timeout", t.timeout.as_deref(), DEFAULT_EXPORT_TIMEOUT_MS, 1, errs),
        sampling: percent("tracing.sampling", t.sampling, DEFAULT_TRACE_SAMPLING, errs),
        propagation,
        service_name: t.service_name,
    }
}

fn access_log(a: RawAccessLog, errs: &mut Vec<ConfigError>) -> AccessLogConfig {
    let format = match (a.format.as_deref(), a.text_format) {
        (Some("json"), Some(_)) => {
            errs.push(ConfigError::new("access_log.text_format", "only applies to format: text"));
            LogFormat::Json
        }
        (Some("json"), None) => LogFormat::Json,
        (None | Some("text"), Some(f)) => match LogFormat::parse_text(&f) {
            Ok(t) => t,
            Err(e) => {
                errs.push(ConfigError::new("access_log.text_format", e));
                LogFormat::istio_text()
            }
        },
        (None | Some("text"), None) => LogFormat::istio_text(),
        (Some(other), _) => {
            errs.push(ConfigError::new("access_log.format", format!("{other:?} is not one of text, json")));
            LogFormat::istio_text()
        }
    };
    let mut filter = AccessLogFilter { only_errors: a.only_errors, ..AccessLogFilter::default() };
    if let Some(w) = a.when {
        if let (Some(lo), Some(hi)) = (w.status_gte, w.status_lt) {
            if lo >= hi {
                errs.push(ConfigError::new(
                    "access_log.when.status_lt",
                    format!("{hi} must be greater than status_gte ({lo})"),
                ));
            }
        }
        for (i, f) in w.response_flags.iter().enumerate() {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_uppercase()) {
                errs.push(ConfigError::new(
                    format!("access_log.when.response_flags[{i}]"),
                    format!("{f:?} is not an Envoy short flag such as UF, UO, NR"),
                ));
            }
        }
        filter.status_gte = w.status_gte;
        filter.status_lt = w.status_lt;
        filter.response_flags = w.response_flags;
        filter.min_duration_ms = w.min_duration_ms;
    }
    AccessLogConfig { format, filter, sampling: percent("access_log.sampling", a.sampling, 100.0, errs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(json: &str) -> Vec<String> {
        match parse(json.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn empty_config_means_metrics_only() {
        let c = parse(b"").unwrap_or_default();
        assert!(c.metrics && c.tracing.is_none() && c.access_log.is_none() && c.reporter.is_none());
        assert!(!c.metadata_exchange);
        let c = parse(b"{}").unwrap_or_default();
        assert!(c.metrics && c.tracing.is_none());
    }

    #[test]
    fn tracing_defaults_follow_istio() {
        let c = parse(br#"{"tracing":{"cluster":"otel"}}"#).ok().and_then(|c| c.tracing);
        let t = c.expect("tracing config");
        assert_eq!(t.cluster.as_deref(), Some("otel"));
        assert_eq!(t.authority, "otel");
        assert_eq!(t.path, "/v1/traces");
        assert_eq!(t.sampling, 1.0);
        assert_eq!(t.max_batch, 100);
        assert_eq!(t.flush_interval_ms, 1000);
        assert_eq!(t.propagation, vec![Propagation::W3c, Propagation::B3]);
        assert_eq!(t.max_path_tag_length, 256);
        assert!(t.custom_tags.is_empty());
    }

    #[test]
    fn custom_tags_follow_istio() {
        let c = parse(
            br#"{"tracing":{"custom_tags":{"env":{"literal":{"value":"prod"}},
                "user":{"header":{"name":"X-User","default_value":"anon"}}}}}"#,
        );
        let t = c.ok().and_then(|c| c.tracing).expect("tracing");
        assert_eq!(
            t.custom_tags,
            vec![
                CustomTag { name: "env".into(), source: TagSource::Literal("prod".into()) },
                CustomTag {
                    name: "user".into(),
                    source: TagSource::Header { name: "x-user".into(), default_value: Some("anon".into()) }
                },
            ]
        );
        let e = errors(r#"{"tracing":{"custom_tags":{"a":{},"b":{"header":{"name":"bad name"}}}}}"#);
        assert_eq!(
            e,
            vec![
                "tracing.custom_tags.a: set exactly one of literal, header".to_string(),
                "tracing.custom_tags.b.header.name: \"bad name\" is not a header name".to_string(),
            ]
        );
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            br#"{"reporter":"source","peer":{"workload":"reviews-v1","namespace":"default"},"metadata_exchange":true,
                "metrics":{"enabled":false},
                "tracing":{"cluster":"otel","path":"/otlp/v1/traces","max_batch":10,"max_buffer":50,
                           "flush_interval":"250ms","timeout":"2s","sampling":12.5,"propagation":["b3_single"],
                           "service_name":"gw"},
                "access_log":{"format":"json","only_errors":true,"when":{"status_gte":500,"response_flags":["UF"]},
                              "sampling":50}}"#,
        );
        let c = c.expect("valid config");
        assert_eq!(c.reporter, Some(Reporter::Source));
        assert_eq!(c.peer.name.as_deref(), Some("reviews-v1"));
        assert!(c.metadata_exchange);
        assert!(!c.metrics);
        let t = c.tracing.expect("tracing");
        assert_eq!((t.max_batch, t.max_buffer, t.flush_interval_ms, t.timeout_ms), (10, 50, 250, 2000));
        assert_eq!(t.sampling, 12.5);
        assert_eq!(t.propagation, vec![Propagation::B3Single]);
        let a = c.access_log.expect("access log");
        assert!(matches!(a.format, LogFormat::Json));
        assert!(a.filter.only_errors);
        assert_eq!(a.filter.status_gte, Some(500));
        assert_eq!(a.sampling, 50.0);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let e = errors(
            r#"{"reporter":"client","tracing":{"sampling":150,"flush_interval":"soon","max_batch":0,
                "propagation":["w3c","jaeger"],"path":"v1/traces"},
                "access_log":{"format":"xml","sampling":-1,"when":{"status_gte":500,"status_lt":400,
                "response_flags":["uf"]}}}"#,
        );
        let want = [
            "reporter: \"client\" is not one of source, destination, waypoint",
            "tracing.sampling: 150 is not a percentage (0 to 100)",
            "tracing.flush_interval: duration \"soon\" is not a number followed by a unit",
            "tracing.max_batch: 0 is out of range (1 to 10000)",
            "tracing.propagation[1]: \"jaeger\" is not one of w3c, b3, b3_single",
            "tracing.path: \"v1/traces\" must start with '/'",
            "access_log.format: \"xml\" is not one of text, json",
            "access_log.sampling: -1 is not a percentage (0 to 100)",
            "access_log.when.status_lt: 400 must be greater than status_gte (500)",
            "access_log.when.response_flags[0]: \"uf\" is not an Envoy short flag such as UF, UO, NR",
        ];
        for w in want {
            assert!(e.iter().any(|x| x == w), "missing {w:?} in {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn unknown_fields_and_bad_formats_are_rejected() {
        let e = errors(r#"{"tracing":{"clustr":"x"}}"#);
        assert!(e[0].contains("unknown field `clustr`"), "{e:?}");
        let e = errors(r#"{"access_log":{"text_format":"%START_TIME% %BOGUS%"}}"#);
        assert_eq!(e, vec!["access_log.text_format: unknown operator %BOGUS% at byte 13".to_string()]);
        let e = errors(r#"{"access_log":{"format":"json","text_format":"%START_TIME%"}}"#);
        assert_eq!(e, vec!["access_log.text_format: only applies to format: text".to_string()]);
        let e = errors(r#"{"tracing":{"max_batch":100,"max_buffer":10}}"#);
        assert_eq!(e, vec!["tracing.max_buffer: 10 is smaller than tracing.max_batch (100)".to_string()]);
    }
}
