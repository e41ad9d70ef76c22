//! The retry filter's configuration: JSON (from wasmesh's YAML) → validated [`Config`].
//! Every error names its field path (`routes[1].retryOn: unknown condition "5xxx" …`).

use serde::Deserialize;
use wasmesh_sdk::config::{parse_duration_ms, parse_positive_duration_ms, parse_with_path};

use crate::policy::{Backoff, Budget, RetryOn, RetryPolicy, ISTIO_DEFAULT_RETRY_ON};

/// The validated configuration, shared (via `Rc`) by every stream of a VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The policy for requests whose route has no entry in `routes`.
    pub default: RetryPolicy,
    /// Per-route policies, by `wasmesh.route.name`.
    pub routes: Vec<(String, RetryPolicy)>,
    /// The retry budget, when configured.
    pub budget: Option<Budget>,
}

/// The policy fields, as written (top level = the default; per route = overrides).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    /// Retries after the first attempt (Istio `HTTPRetry.attempts`).
    attempts: Option<u32>,
    /// Timeout of each attempt (Istio `perTryTimeout`).
    per_try_timeout: Option<String>,
    /// Retry conditions (Istio `retryOn`).
    retry_on: Option<String>,
    /// Extra retriable status codes (Envoy `retriable_status_codes`).
    retriable_status_codes: Option<Vec<u16>>,
    /// Base backoff (Istio `backoff`, Envoy `retry_back_off.base_interval`).
    backoff: Option<String>,
    /// Backoff cap (Envoy `retry_back_off.max_interval`, default 10 × base).
    max_backoff: Option<String>,
    /// Allow retrying non-idempotent methods.
    retry_non_idempotent: Option<bool>,
    /// Request-body bytes kept for replay.
    max_buffer_bytes: Option<u32>,
    /// Istio `retryRemoteLocalities`: only `false` is supported.
    retry_remote_localities: Option<bool>,
    /// Istio `retryIgnorePreviousHosts`: only `true` (the default) is supported.
    retry_ignore_previous_hosts: Option<bool>,
    /// Retry budget (Istio DestinationRule `retryBudget`).
    budget: Option<RawBudget>,
    /// Per-route policies.
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRoute {
    /// The `wasmesh.route.name` this policy applies to.
    name: String,
    attempts: Option<u32>,
    per_try_timeout: Option<String>,
    retry_on: Option<String>,
    retriable_status_codes: Option<Vec<u16>>,
    backoff: Option<String>,
    max_backoff: Option<String>,
    retry_non_idempotent: Option<bool>,
    max_buffer_bytes: Option<u32>,
    retry_remote_localities: Option<bool>,
    retry_ignore_previous_hosts: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBudget {
    /// Default 20.
    percent: Option<f64>,
    /// Default 3.
    min_retry_concurrency: Option<u32>,
}

/// The policy fields shared by the top level and a route.
struct Fields<'a> {
    attempts: Option<u32>,
    per_try_timeout: Option<&'a str>,
    retry_on: Option<&'a str>,
    retriable_status_codes: Option<&'a [u16]>,
    backoff: Option<&'a str>,
    max_backoff: Option<&'a str>,
    retry_non_idempotent: Option<bool>,
    max_buffer_bytes: Option<u32>,
}

/// The largest `maxBufferBytes` accepted (the host holds this much per request).
pub const MAX_BUFFER_LIMIT: u32 = 16 * 1024 * 1024;

// === impl Config ===

impl Default for Config {
    /// No routes, no budget, Istio's default policy.
    fn default() -> Self {
        Config { default: RetryPolicy::istio_default(), routes: Vec::new(), budget: None }
    }
}

impl Config {
    /// Parses and validates; the error lists every problem, each with its field path.
    pub fn from_json(bytes: &[u8]) -> Result<Config, String> {
        let raw: RawConfig = parse_with_path(bytes).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        istio_only("", raw.retry_remote_localities, raw.retry_ignore_previous_hosts, &mut errors);
        let top = Fields {
            attempts: raw.attempts,
            per_try_timeout: raw.per_try_timeout.as_deref(),
            retry_on: raw.retry_on.as_deref(),
            retriable_status_codes: raw.retriable_status_codes.as_deref(),
            backoff: raw.backoff.as_deref(),
            max_backoff: raw.max_backoff.as_deref(),
            retry_non_idempotent: raw.retry_non_idempotent,
            max_buffer_bytes: raw.max_buffer_bytes,
        };
        let base = RetryPolicy::istio_default();
        let default = resolve("", &top, &base, &mut errors);
        let mut routes: Vec<(String, RetryPolicy)> = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.iter().enumerate() {
            let path = format!("routes[{i}].");
            istio_only(&path, r.retry_remote_localities, r.retry_ignore_previous_hosts, &mut errors);
            if r.name.is_empty() {
                errors.push(format!("{path}name: must not be empty"));
            } else if let Some(j) = raw.routes[..i].iter().position(|o| o.name == r.name) {
                errors.push(format!("{path}name: {:?} is already used by routes[{j}]", r.name));
            }
            let fields = Fields {
                attempts: r.attempts,
                per_try_timeout: r.per_try_timeout.as_deref(),
                retry_on: r.retry_on.as_deref(),
                retriable_status_codes: r.retriable_status_codes.as_deref(),
                backoff: r.backoff.as_deref(),
                max_backoff: r.max_backoff.as_deref(),
                retry_non_idempotent: r.retry_non_idempotent,
                max_buffer_bytes: r.max_buffer_bytes,
            };
            // A route inherits every field it does not set from the top level.
            let merged = Fields {
                attempts: fields.attempts.or(top.attempts),
                per_try_timeout: fields.per_try_timeout.or(top.per_try_timeout),
                retry_on: fields.retry_on.or(top.retry_on),
                retriable_status_codes: fields.retriable_status_codes.or(top.retriable_status_codes),
                backoff: fields.backoff.or(top.backoff),
                max_backoff: fields.max_backoff.or(top.max_backoff),
                retry_non_idempotent: fields.retry_non_idempotent.or(top.retry_non_idempotent),
                max_buffer_bytes: fields.max_buffer_bytes.or(top.max_buffer_bytes),
            };
            // Errors of inherited fields were reported at the top level already.
            let mut route_errors = Vec::new();
            let policy = resolve(&path, &merged, &base, &mut route_errors);
            errors.extend(route_errors.into_iter().filter(|e| owns(&fields, e, &path)));
            routes.push((r.name.clone(), policy));
        }
        let budget = raw.budget.as_ref().map(|b| {
            let percent = b.percent.unwrap_or(20.0);
            if !(0.0..=100.0).contains(&percent) {
                errors.push(format!("budget.percent: {percent} is not in 0..=100"));
            }
            Budget { percent, min_retry_concurrency: b.min_retry_concurrency.unwrap_or(3) }
        });
        if errors.is_empty() {
            Ok(Config { default, routes, budget })
        } else {
            Err(errors.join("; "))
        }
    }

    /// The policy for the route named `route` (the default when unnamed or unlisted).
    pub fn policy_for(&self, route: Option<&str>) -> &RetryPolicy {
        route.and_then(|r| self.routes.iter().find(|(n, _)| n == r)).map(|(_, p)| p).unwrap_or(&self.default)
    }
}

/// Whether error `e` (already prefixed with `path`) is about a field the route itself set.
fn owns(fields: &Fields<'_>, e: &str, path: &str) -> bool {
    let field = e.strip_prefix(path).and_then(|rest| rest.split(':').next()).unwrap_or("");
    match field {
        "perTryTimeout" => fields.per_try_timeout.is_some(),
        "retryOn" => fields.retry_on.is_some(),
        "retriableStatusCodes" => fields.retriable_status_codes.is_some(),
        "backoff" => fields.backoff.is_some(),
        "maxBackoff" => fields.max_backoff.is_some() || fields.backoff.is_some(),
        "maxBufferBytes" => fields.max_buffer_bytes.is_some(),
        _ => true,
    }
}

/// Istio fields accepted only with the value the host's retry mechanism implements.
fn istio_only(path: &str, remote_localities: Option<bool>, ignore_previous: Option<bool>, errors: &mut Vec<String>) {
    if remote_localities == Some(true) {
        errors.push(format!(
            "{path}retryRemoteLocalities: true is not supported (no locality-aware load balancing); omit it"
        ));
    }
    if ignore_previous == Some(false) {
        errors.push(format!(
            "{path}retryIgnorePreviousHosts: false is not supported (a retry always avoids the endpoints already tried); omit it"
        ));
    }
}

/// Builds a policy from `f` over `base`, pushing `path`-prefixed errors.
fn resolve(path: &str, f: &Fields<'_>, base: &RetryPolicy, errors: &mut Vec<String>) -> RetryPolicy {
    let mut p = base.clone();
    if let Some(a) = f.attempts {
        p.attempts = a;
    }
    if let Some(t) = f.per_try_timeout {
        match parse_positive_duration_ms(t) {
            Ok(ms) => p.per_try_timeout_ms = Some(ms),
            Err(e) => errors.push(format!("{path}perTryTimeout: {e}")),
        }
    }
    let codes = f.retriable_status_codes.unwrap_or(&[]);
    for (i, c) in codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            errors.push(format!("{path}retriableStatusCodes[{i}]: {c} is not in 100..=599"));
        }
    }
    if f.retry_on.is_some() || !codes.is_empty() {
        // Istio: a policy that sets no retryOn keeps the default conditions; codes given
        // here replace the default 503.
        let list = f.retry_on.unwrap_or(ISTIO_DEFAULT_RETRY_ON);
        match RetryOn::parse(list, codes) {
            Ok(on) => p.retry_on = on,
            Err(e) => errors.push(format!("{path}retryOn: {e}")),
        }
    }
    let mut backoff = base.backoff;
    if let Some(b) = f.backoff {
        match parse_positive_duration_ms(b).map(u32::try_from) {
            Ok(Ok(ms)) => backoff = Backoff { base_ms: ms, max_ms: ms.saturating_mul(10) },
            Ok(Err(_)) => errors.push(format!("{path}backoff: {b:?} is too long")),
            Err(e) => errors.push(format!("{path}backoff: {e}")),
        }
    }
    if let Some(m) = f.max_backoff {
        match parse_duration_ms(m).map(u32::try_from) {
            Ok(Ok(ms)) if ms < backoff.base_ms => {
                errors.push(format!("{path}maxBackoff: {m:?} is shorter than the base backoff ({}ms)", backoff.base_ms))
            }
            Ok(Ok(ms)) => backoff.max_ms = ms,
            Ok(Err(_)) => errors.push(format!("{path}maxBackoff: {m:?} is too long")),
            Err(e) => errors.push(format!("{path}maxBackoff: {e}")),
        }
    }
    p.backoff = backoff;
    if let Some(n) = f.retry_non_idempotent {
        p.retry_non_idempotent = n;
    }
    if let Some(b) = f.max_buffer_bytes {
        if b > MAX_BUFFER_LIMIT {
            errors.push(format!("{path}maxBufferBytes: {b} is over the limit {MAX_BUFFER_LIMIT}"));
        }
        p.max_buffer_bytes = b;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Condition, Outcome};

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
    fn empty_config_is_the_istio_default() {
        let c = ok("");
        assert_eq!(c.default, RetryPolicy::istio_default());
        assert_eq!(ok("{}").default.attempts, 2);
        assert!(c.default.retry_on.has(Condition::RetriableStatusCodes));
        assert_eq!(c.default.retry_on.status_codes, vec![503]);
        assert_eq!(c.default.backoff, Backoff { base_ms: 25, max_ms: 250 });
        assert_eq!(c.default.max_buffer_bytes, 65536);
        assert!(c.budget.is_none());
    }

    #[test]
    fn fields_map_onto_the_policy() {
        let c = ok(r#"{"attempts":3,"perTryTimeout":"2s","retryOn":"gateway-error,409","backoff":"10ms",
                      "retryNonIdempotent":true,"maxBufferBytes":1024,"budget":{"percent":50}}"#);
        let p = &c.default;
        assert_eq!(p.attempts, 3);
        assert_eq!(p.per_try_timeout_ms, Some(2000));
        assert!(p.retry_on.has(Condition::GatewayError) && !p.retry_on.has(Condition::FiveXx));
        assert_eq!(p.retry_on.status_codes, vec![409]);
        assert_eq!(p.backoff, Backoff { base_ms: 10, max_ms: 100 });
        assert!(p.retry_non_idempotent);
        assert_eq!(p.max_buffer_bytes, 1024);
        assert_eq!(c.budget, Some(Budget { percent: 50.0, min_retry_concurrency: 3 }));
    }

    #[test]
    fn explicit_retry_on_replaces_the_default_503() {
        let p = ok(r#"{"retryOn":"reset"}"#).default;
        let resp503 = Outcome::Response { status: 503, grpc_status: None };
        assert!(!p.retry_on.matches(resp503));
        assert!(p.retry_on.matches(Outcome::Reset));
        // retriableStatusCodes alone switches the condition on, over the default list.
        let p = ok(r#"{"retriableStatusCodes":[500]}"#).default;
        assert!(p.retry_on.matches(Outcome::Response { status: 500, grpc_status: None }));
        assert!(p.retry_on.matches(Outcome::ConnectFailure));
    }

    #[test]
    fn routes_inherit_and_override() {
        let c =
            ok(r#"{"attempts":4,"backoff":"5ms","routes":[{"name":"a","retryOn":"5xx"},{"name":"b","attempts":0}]}"#);
        let a = c.policy_for(Some("a"));
        assert_eq!(a.attempts, 4);
        assert_eq!(a.backoff.base_ms, 5);
        assert!(a.retry_on.has(Condition::FiveXx));
        assert_eq!(c.policy_for(Some("b")).attempts, 0);
        assert_eq!(c.policy_for(Some("zzz")).attempts, 4);
        assert_eq!(c.policy_for(None), &c.default);
    }

    #[test]
    fn errors_name_the_field_path() {
        assert_eq!(
            err(r#"{"routes":[{"name":"a"},{"name":"b","retryOn":"5xx,bogus"}]}"#),
            "routes[1].retryOn: unknown condition \"bogus\" (expected an HTTP status code or one of 5xx, \
             gateway-error, reset, connect-failure, refused-stream, retriable-4xx, retriable-status-codes, \
             cancelled, deadline-exceeded, resource-exhausted, internal, unavailable)"
        );
        assert_eq!(err(r#"{"retryOn":"700"}"#), "retryOn: status code \"700\" is not in 100..=599");
        assert_eq!(err(r#"{"perTryTimeout":"0s"}"#), "perTryTimeout: must be at least 1ms");
        assert_eq!(
            err(r#"{"perTryTimeout":"2"}"#),
            "perTryTimeout: duration \"2\" has no unit (use e.g. \"25ms\", \"2s\", \"1m\")"
        );
        assert_eq!(
            err(r#"{"backoff":"100ms","maxBackoff":"50ms"}"#),
            "maxBackoff: \"50ms\" is shorter than the base backoff (100ms)"
        );
        assert_eq!(err(r#"{"retriableStatusCodes":[99]}"#), "retriableStatusCodes[0]: 99 is not in 100..=599");
        assert_eq!(err(r#"{"budget":{"percent":120}}"#), "budget.percent: 120 is not in 0..=100");
        assert_eq!(
            err(r#"{"routes":[{"name":"a"},{"name":"a"}]}"#),
            "routes[1].name: \"a\" is already used by routes[0]"
        );
        assert_eq!(err(r#"{"maxBufferBytes":99999999}"#), "maxBufferBytes: 99999999 is over the limit 16777216");
        assert_eq!(
            err(r#"{"routes":[{"name":"a","retryRemoteLocalities":true}]}"#),
            "routes[0].retryRemoteLocalities: true is not supported (no locality-aware load balancing); omit it"
        );
        assert_eq!(
            err(r#"{"retryIgnorePreviousHosts":false}"#),
            "retryIgnorePreviousHosts: false is not supported (a retry always avoids the endpoints already tried); omit it"
        );
        assert!(Config::from_json(br#"{"retryIgnorePreviousHosts":true,"retryRemoteLocalities":false}"#).is_ok());
    }

    #[test]
    fn type_and_unknown_field_errors_carry_the_path() {
        let e = err(r#"{"routes":[{"name":"a","attempts":"three"}]}"#);
        assert!(e.starts_with("routes[0].attempts: invalid type: string \"three\", expected u32"), "{e}");
        let e = err(r#"{"attempt":3}"#);
        assert!(e.contains("unknown field `attempt`"), "{e}");
        let e = err(r#"{"attempts":-1}"#);
        assert!(e.starts_with("attempts: invalid value: integer `-1`"), "{e}");
    }

    #[test]
    fn several_errors_are_all_reported_once() {
        let e = err(r#"{"retryOn":"nope","backoff":"0ms","routes":[{"name":"r"}]}"#);
        assert_eq!(e.matches("retryOn").count(), 1, "{e}");
        assert!(e.contains("backoff: must be at least 1ms"), "{e}");
        assert!(!e.contains("routes[0]"), "inherited errors are reported at the top level only: {e}");
    }
}
