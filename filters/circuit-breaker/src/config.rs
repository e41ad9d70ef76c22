//! The circuit-breaker filter's configuration: JSON (from wasmesh's YAML) → validated
//! [`Config`]. Field names follow Istio's DestinationRule `trafficPolicy`; every error names
//! its path (`clusters.reviews.outlierDetection.interval: …`).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use serde::Deserialize;
use wasmesh_sdk::config::{parse_positive_duration_ms, parse_with_path};

use crate::policy::{Outlier, PoolLimits};

/// One cluster's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterPolicy {
    /// Connection-pool limits.
    pub limits: PoolLimits,
    /// Outlier detection, when configured.
    pub outlier: Option<Outlier>,
}

/// The validated configuration, shared (via `Rc`) by every stream of a VM.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Per-cluster policies by cluster name.
    pub clusters: FxHashMap<String, ClusterPolicy>,
    /// The `"*"` entry: clusters not listed.
    pub fallback: Option<ClusterPolicy>,
    /// Valid but surprising settings (logged at configure time).
    pub warnings: Vec<String>,
    /// Some policy sets a pool limit the host applies (`wasmesh.pool_limits`).
    pub has_pool_limits: bool,
    /// Some policy sets `maxRetries` (handed to the retry filter per request).
    pub has_max_retries: bool,
    /// Some policy has outlier detection (else the response phase has nothing to record).
    pub has_outlier: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    clusters: BTreeMap<String, RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    connection_pool: Option<RawPool>,
    outlier_detection: Option<RawOutlier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    tcp: Option<RawTcp>,
    http: Option<RawHttp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTcp {
    max_connections: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHttp {
    http1_max_pending_requests: Option<u32>,
    http2_max_requests: Option<u32>,
    max_retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOutlier {
    consecutive_5xx_errors: Option<u32>,
    consecutive_gateway_errors: Option<u32>,
    /// Deprecated (istio/istio#8846): rejected with an explanation.
    consecutive_errors: Option<serde_json::Value>,
    split_external_local_origin_errors: Option<bool>,
    consecutive_local_origin_failures: Option<u32>,
    interval: Option<String>,
    base_ejection_time: Option<String>,
    max_ejection_time: Option<String>,
    max_ejection_percent: Option<u32>,
    min_health_percent: Option<u32>,
    always_eject_one_host: Option<bool>,
}

// === impl Config ===

impl Config {
    /// Parses and validates; the error lists every problem, each with its field path.
    pub fn from_json(bytes: &[u8]) -> Result<Config, String> {
        let raw: RawConfig = parse_with_path(bytes).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut clusters = FxHashMap::with_capacity_and_hasher(raw.clusters.len(), Default::default());
        let mut fallback = None;
        for (name, c) in &raw.clusters {
            let path = format!("clusters.{name}");
            if name.is_empty() {
                errors.push("clusters: a cluster name must not be empty".to_string());
                continue;
            }
            let policy = ClusterPolicy {
                limits: c.connection_pool.as_ref().map(pool_limits).unwrap_or_default(),
                outlier: c
                    .outlier_detection
                    .as_ref()
                    .and_then(|o| outlier(o, &format!("{path}.outlierDetection"), &mut errors, &mut warnings)),
            };
            if name == "*" {
                fallback = Some(policy);
            } else {
                clusters.insert(name.clone(), policy);
            }
        }
        if errors.is_empty() {
            let mut c = Config { clusters, fallback, warnings, ..Config::default() };
            c.has_pool_limits = c.any(|p| p.limits.has_pool_limits());
            c.has_max_retries = c.any(|p| p.limits.max_retries.is_some());
            c.has_outlier = c.any(|p| p.outlier.is_some());
            Ok(c)
        } else {
            Err(errors.join("; "))
        }
    }

    /// The policy of `cluster` (the `"*"` entry when unlisted).
    pub fn policy_for(&self, cluster: &str) -> Option<&ClusterPolicy> {
        self.clusters.get(cluster).or(self.fallback.as_ref())
    }

    /// The pool limits for the host (`wasmesh.pool_limits`): every listed cluster (one
    /// without limits too, so it does not fall back) and `"*"`, unset limits left out.
    pub fn pool_limit_table(&self) -> String {
        let listed = self.clusters.iter().map(|(name, p)| (name.as_str(), &p.limits));
        let table: BTreeMap<&str, &PoolLimits> =
            listed.chain(self.fallback.as_ref().map(|p| ("*", &p.limits))).collect();
        serde_json::to_string(&table).unwrap_or_default()
    }

    /// Whether some cluster's policy (or the fallback) does `want`.
    pub fn any(&self, want: impl Fn(&ClusterPolicy) -> bool) -> bool {
        self.clusters.values().chain(self.fallback.as_ref()).any(want)
    }
}

/// Istio: 0 means "not set" (the 2³²−1 default) for every pool limit.
fn limit(v: Option<u32>) -> Option<u64> {
    v.filter(|n| *n > 0).map(u64::from)
}

fn pool_limits(p: &RawPool) -> PoolLimits {
    let http = p.http.as_ref();
    PoolLimits {
        max_connections: limit(p.tcp.as_ref().and_then(|t| t.max_connections)),
        max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: limit(http.and_then(|h| h.http2_max_requests)),
        max_retries: limit(http.and_then(|h| h.max_retries)),
    }
}

fn duration(v: Option<&str>, default: u64, path: &str, errors: &mut Vec<String>) -> u64 {
    match v.map(parse_positive_duration_ms) {
        None => default,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            errors.push(format!("{path}: {e}"));
            default
        }
    }
}

fn outlier(o: &RawOutlier, path: &str, errors: &mut Vec<String>, warnings: &mut Vec<String>) -> Option<Outlier> {
    let d = Outlier::istio_default();
    if o.consecutive_errors.is_some() {
        errors.push(format!(
            "{path}.consecutiveErrors: deprecated and ambiguous (old Istio counted only gateway errors, \
             istio/istio#8846), use consecutive5xxErrors or consecutiveGatewayErrors"
        ));
    }
    let mut percent = |v: Option<u32>, default: u32, field: &str| match v {
        Some(p) if p > 100 => {
            errors.push(format!("{path}.{field}: {p} is not in 0..=100"));
            default
        }
        Some(p) => p,
        None => default,
    };
    let max_ejection_percent = percent(o.max_ejection_percent, d.max_ejection_percent, "maxEjectionPercent");
    let min_health_percent = percent(o.min_health_percent, d.min_health_percent, "minHealthPercent");
    let cfg = Outlier {
        consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(d.consecutive_5xx),
        consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(d.consecutive_gateway),
        split_local_origin: o.split_external_local_origin_errors.unwrap_or(false),
        consecutive_local_origin: o.consecutive_local_origin_failures.unwrap_or(d.consecutive_local_origin),
        interval_ms: duration(o.interval.as_deref(), d.interval_ms, &format!("{path}.interval"), errors),
        base_ejection_ms: duration(
            o.base_ejection_time.as_deref(),
            d.base_ejection_ms,
            &format!("{path}.baseEjectionTime"),
            errors,
        ),
        max_ejection_ms: duration(
            o.max_ejection_time.as_deref(),
            d.max_ejection_ms,
            &format!("{path}.maxEjectionTime"),
            errors,
        ),
        max_ejection_percent,
        min_health_percent,
        always_eject_one: o.always_eject_one_host.unwrap_or(false),
    };
    if cfg.base_ejection_ms > u64::from(u32::MAX) {
        errors.push(format!("{path}.baseEjectionTime: must be at most {}ms", u32::MAX));
    }
    if o.consecutive_local_origin_failures.is_some() && !cfg.split_local_origin {
        errors.push(format!(
            "{path}.consecutiveLocalOriginFailures: only applies with splitExternalLocalOriginErrors: true"
        ));
    }
    if cfg.consecutive_gateway > 0 && cfg.consecutive_5xx > 0 && cfg.consecutive_gateway >= cfg.consecutive_5xx {
        warnings.push(format!(
            "{path}.consecutiveGatewayErrors ({}) has no effect: it is not below consecutive5xxErrors ({})",
            cfg.consecutive_gateway, cfg.consecutive_5xx
        ));
    }
    if cfg.consecutive_5xx == 0
        && cfg.consecutive_gateway == 0
        && !(cfg.split_local_origin && cfg.consecutive_local_origin > 0)
    {
        warnings.push(format!("{path}: every consecutive-error threshold is 0, so nothing is ever ejected"));
    }
    Some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Config::from_json(json.as_bytes()).err().unwrap_or_default()
    }

    fn ok(json: &str) -> Config {
        match Config::from_json(json.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{json}: {e}"),
        }
    }

    #[test]
    fn istio_destination_rule_fields_compile() {
        let c = ok(r#"{"clusters":{"reviews":{
            "connectionPool":{"tcp":{"maxConnections":1},"http":{"http1MaxPendingRequests":1,"http2MaxRequests":10,"maxRetries":2}},
            "outlierDetection":{"consecutive5xxErrors":3,"consecutiveGatewayErrors":2,"interval":"1s","baseEjectionTime":"15s",
                                "maxEjectionPercent":50,"minHealthPercent":20}}}}"#);
        let p = c.policy_for("reviews").copied().unwrap_or_default();
        assert_eq!(
            p.limits,
            PoolLimits {
                max_connections: Some(1),
                max_pending_requests: Some(1),
                max_requests: Some(10),
                max_retries: Some(2)
            }
        );
        let o = p.outlier.unwrap_or_else(Outlier::istio_default);
        assert_eq!((o.consecutive_5xx, o.consecutive_gateway), (3, 2));
        assert_eq!((o.interval_ms, o.base_ejection_ms, o.max_ejection_ms), (1000, 15_000, 300_000));
        assert_eq!((o.max_ejection_percent, o.min_health_percent), (50, 20));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.policy_for("ratings").is_none());
    }

    #[test]
    fn any_looks_at_every_cluster_and_the_fallback() {
        let limits_only = ok(r#"{"clusters":{"a":{"connectionPool":{"http":{"http2MaxRequests":5}}}}}"#);
        assert!(limits_only.any(|p| !p.limits.is_empty()));
        assert!(!limits_only.any(|p| p.outlier.is_some()), "no policy ejects: responses need no look");
        let fallback = ok(r#"{"clusters":{"*":{"outlierDetection":{}}}}"#);
        assert!(fallback.any(|p| p.outlier.is_some()));
        assert!(!fallback.any(|p| !p.limits.is_empty()));
        assert!(!ok(r#"{"clusters":{}}"#).any(|_| true));
    }

    #[test]
    fn the_host_gets_every_listed_cluster_and_the_fallback_without_max_retries() {
        let c = ok(r#"{"clusters":{"*":{"connectionPool":{"http":{"http2MaxRequests":5}}},"b":{"outlierDetection":{}},
            "c":{"connectionPool":{"tcp":{"maxConnections":1},"http":{"http1MaxPendingRequests":2,"maxRetries":3}}}}}"#);
        assert!(c.has_pool_limits && c.has_max_retries && c.has_outlier);
        let table: serde_json::Value = serde_json::from_str(&c.pool_limit_table()).unwrap_or_default();
        assert_eq!(
            table,
            serde_json::json!({"*": {"max_requests": 5}, "b": {}, "c": {"max_connections": 1, "max_pending_requests": 2}})
        );
        let retries_only = ok(r#"{"clusters":{"a":{"connectionPool":{"http":{"maxRetries":3}}}}}"#);
        assert!(!retries_only.has_pool_limits && retries_only.has_max_retries);
        let outlier_only = ok(r#"{"clusters":{"a":{"outlierDetection":{}}}}"#);
        assert!(!outlier_only.has_pool_limits && !outlier_only.has_max_retries);
    }

    #[test]
    fn outlier_defaults_are_istios() {
        let c = ok(r#"{"clusters":{"a":{"outlierDetection":{}}}}"#);
        assert_eq!(c.policy_for("a").and_then(|p| p.outlier), Some(Outlier::istio_default()));
        assert!(ok("").clusters.is_empty());
    }

    #[test]
    fn zero_limits_mean_unset_like_istio() {
        let c = ok(r#"{"clusters":{"a":{"connectionPool":{"http":{"http2MaxRequests":0}}}}}"#);
        assert!(c.policy_for("a").is_some_and(|p| p.limits.is_empty()));
    }

    #[test]
    fn star_is_the_fallback() {
        let c = ok(r#"{"clusters":{"*":{"connectionPool":{"http":{"http2MaxRequests":5}}},"b":{}}}"#);
        assert_eq!(c.policy_for("zzz").and_then(|p| p.limits.max_requests), Some(5));
        assert_eq!(c.policy_for("b").and_then(|p| p.limits.max_requests), None, "a listed cluster does not inherit");
    }

    #[test]
    fn precise_errors() {
        let cases = [
            (
                r#"{"clusters":{"a":{"outlierDetection":{"maxEjectionPercent":101}}}}"#,
                "clusters.a.outlierDetection.maxEjectionPercent: 101 is not in 0..=100",
            ),
            (
                r#"{"clusters":{"a":{"outlierDetection":{"interval":"10"}}}}"#,
                "clusters.a.outlierDetection.interval: duration \"10\" has no unit (use e.g. \"25ms\", \"2s\", \"1m\")",
            ),
            (
                r#"{"clusters":{"a":{"outlierDetection":{"baseEjectionTime":"0s"}}}}"#,
                "clusters.a.outlierDetection.baseEjectionTime: must be at least 1ms",
            ),
            (
                r#"{"clusters":{"a":{"outlierDetection":{"consecutiveErrors":5}}}}"#,
                "clusters.a.outlierDetection.consecutiveErrors: deprecated and ambiguous (old Istio counted only \
                 gateway errors, istio/istio#8846), use consecutive5xxErrors or consecutiveGatewayErrors",
            ),
            (
                r#"{"clusters":{"a":{"outlierDetection":{"consecutiveLocalOriginFailures":2}}}}"#,
                "clusters.a.outlierDetection.consecutiveLocalOriginFailures: only applies with \
                 splitExternalLocalOriginErrors: true",
            ),
        ];
        for (json, want) in cases {
            assert_eq!(err(json), want, "{json}");
        }
    }

    #[test]
    fn type_and_unknown_field_errors_carry_the_path() {
        let e = err(r#"{"clusters":{"a":{"connectionPool":{"http":{"http2MaxRequests":-1}}}}}"#);
        assert!(e.starts_with("clusters.a.connectionPool.http.http2MaxRequests: invalid value: integer `-1`"), "{e}");
        let e = err(r#"{"clusters":{"a":{"connectionPool":{"http":{"maxRequests":1}}}}}"#);
        assert!(e.starts_with("clusters.a.connectionPool.http.maxRequests: unknown field `maxRequests`"), "{e}");
    }

    #[test]
    fn surprising_but_valid_settings_warn() {
        let c =
            ok(r#"{"clusters":{"a":{"outlierDetection":{"consecutive5xxErrors":3,"consecutiveGatewayErrors":3}}}}"#);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("consecutiveGatewayErrors (3) has no effect"), "{:?}", c.warnings);
        let c = ok(r#"{"clusters":{"a":{"outlierDetection":{"consecutive5xxErrors":0}}}}"#);
        assert!(c.warnings[0].contains("nothing is ever ejected"), "{:?}", c.warnings);
    }
}
