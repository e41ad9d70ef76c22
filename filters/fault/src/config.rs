//! The fault filter's configuration: JSON (from wasmesh's YAML) → validated [`Config`].
//! Every error names its field path (`rules[0].match[1].uri.regex: invalid regex "(": …`).

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmesh_sdk::config::{parse_positive_duration_ms, parse_with_path};

use crate::policy::{parse_grpc_status, AbortFault, AbortKind, DelayFault, Match, Percent, Rule, StringMatch};

/// The validated configuration, shared (via `Rc`) by every stream of a VM.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Rules in order (first match wins); the top-level `delay`/`abort` is the last, catch-all rule.
    pub rules: Vec<Rule>,
    /// `Some(ceiling)` when `headerControl` is on: header percentages are capped at it.
    pub header_ceiling: Option<Percent>,
    /// `maxActiveFaults`: faults in flight across all workers (`None` = unlimited).
    pub max_active_faults: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    /// Fault for every request no rule matched (Istio `HTTPRoute.fault.delay`).
    delay: Option<RawDelay>,
    /// Istio `HTTPRoute.fault.abort`.
    abort: Option<RawAbort>,
    /// Per-match faults, first match wins.
    #[serde(default)]
    rules: Vec<RawRule>,
    /// Honour `x-envoy-fault-*` request headers (Envoy `header_abort`/`header_delay`).
    #[serde(default)]
    header_control: bool,
    /// Ceiling of header-supplied percentages (default 100).
    header_max_percentage: Option<RawPercent>,
    /// Envoy `max_active_faults`.
    max_active_faults: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    /// Istio `HTTPMatchRequest` list (ORed); empty = every request.
    #[serde(default, rename = "match")]
    matches: Vec<RawMatch>,
    delay: Option<RawDelay>,
    abort: Option<RawAbort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMatch {
    uri: Option<RawStringMatch>,
    #[serde(default)]
    headers: BTreeMap<String, RawStringMatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStringMatch {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDelay {
    fixed_delay: Option<String>,
    percentage: Option<RawPercent>,
    /// Deprecated integer percent: rejected with a pointer to `percentage`.
    percent: Option<serde_json::Value>,
    /// Hidden in Istio: rejected.
    exponential_delay: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAbort {
    http_status: Option<i64>,
    grpc_status: Option<serde_json::Value>,
    /// Hidden in Istio: rejected.
    http2_error: Option<serde_json::Value>,
    percentage: Option<RawPercent>,
    percent: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPercent {
    value: f64,
}

/// Compiled regexes are capped (the `regex` crate's size limit) at this many bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

// === impl Config ===

impl Config {
    /// Parses and validates; the error lists every problem, each with its field path.
    pub fn from_json(bytes: &[u8]) -> Result<Config, String> {
        let raw: RawConfig = parse_with_path(bytes).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(raw.rules.len() + 1);
        for (i, r) in raw.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            if r.delay.is_none() && r.abort.is_none() {
                errors.push(format!("{path}: needs a delay or an abort"));
            }
            let matches =
                r.matches.iter().enumerate().map(|(j, m)| compile_match(m, &format!("{path}.match[{j}]"), &mut errors));
            rules.push(Rule {
                matches: matches.collect(),
                delay: r.delay.as_ref().and_then(|d| compile_delay(d, &format!("{path}.delay"), &mut errors)),
                abort: r.abort.as_ref().and_then(|a| compile_abort(a, &format!("{path}.abort"), &mut errors)),
            });
        }
        if raw.delay.is_some() || raw.abort.is_some() {
            rules.push(Rule {
                matches: Vec::new(),
                delay: raw.delay.as_ref().and_then(|d| compile_delay(d, "delay", &mut errors)),
                abort: raw.abort.as_ref().and_then(|a| compile_abort(a, "abort", &mut errors)),
            });
        }
        let ceiling = match &raw.header_max_percentage {
            Some(p) => compile_percent(p, "headerMaxPercentage", &mut errors),
            None => Some(Percent::ALL),
        };
        if raw.header_max_percentage.is_some() && !raw.header_control {
            errors.push("headerMaxPercentage: only applies with headerControl: true".to_string());
        }
        if raw.max_active_faults == Some(0) {
            errors.push("maxActiveFaults: 0 would disable every fault, omit it for no limit".to_string());
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(Config {
            rules,
            header_ceiling: if raw.header_control { ceiling } else { None },
            max_active_faults: raw.max_active_faults,
        })
    }

    /// Whether this configuration can inject anything at all.
    pub fn is_inert(&self) -> bool {
        self.rules.is_empty() && self.header_ceiling.is_none()
    }
}

fn compile_match(m: &RawMatch, path: &str, errors: &mut Vec<String>) -> Match {
    let uri = m.uri.as_ref().and_then(|u| compile_string_match(u, &format!("{path}.uri"), false, errors));
    let headers = m
        .headers
        .iter()
        .filter_map(|(name, sm)| {
            let p = format!("{path}.headers.{name}");
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace()) {
                errors.push(format!("{p}: header names must be lower case, without spaces"));
                return None;
            }
            compile_string_match(sm, &p, true, errors).map(|m| (name.clone(), m))
        })
        .collect();
    Match { uri, headers }
}

fn compile_string_match(
    sm: &RawStringMatch,
    path: &str,
    allow_presence: bool,
    errors: &mut Vec<String>,
) -> Option<StringMatch> {
    let n = usize::from(sm.exact.is_some()) + usize::from(sm.prefix.is_some()) + usize::from(sm.regex.is_some());
    if n > 1 {
        errors.push(format!("{path}: give only one of exact, prefix, regex"));
        return None;
    }
    if let Some(s) = &sm.exact {
        return Some(StringMatch::Exact(s.clone()));
    }
    if let Some(s) = &sm.prefix {
        return Some(StringMatch::Prefix(s.clone()));
    }
    if let Some(p) = &sm.regex {
        let built = regex::RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build().and_then(|_| {
            // Anchored like Envoy's safe_regex: the whole value must match.
            regex::RegexBuilder::new(&format!("^(?:{p})$")).size_limit(REGEX_SIZE_LIMIT).build()
        });
        return match built {
            Ok(r) => Some(StringMatch::Regex(r)),
            Err(e) => {
                let msg =
                    e.to_string().lines().map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
                errors.push(format!("{path}.regex: invalid regex {p:?}: {msg}"));
                None
            }
        };
    }
    if allow_presence {
        Some(StringMatch::Present)
    } else {
        errors.push(format!("{path}: needs one of exact, prefix, regex"));
        None
    }
}

fn compile_percent(p: &RawPercent, path: &str, errors: &mut Vec<String>) -> Option<Percent> {
    let v = Percent::from_value(p.value);
    if v.is_none() {
        errors.push(format!("{path}.value: {} is not in 0..=100 (a percentage: 0.1 means 0.1%)", p.value));
    }
    v
}

/// The shared checks of `percentage` / legacy `percent`.
fn compile_fault_percent(
    percentage: Option<&RawPercent>,
    legacy: Option<&serde_json::Value>,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<Percent> {
    if let Some(v) = legacy {
        errors.push(format!(
            "{path}.percent: the integer percent ({v}) is deprecated and not supported, \
             use percentage: {{value: {v}}} (a double where 0.1 means 0.1%)"
        ));
        return None;
    }
    match percentage {
        Some(p) => compile_percent(p, &format!("{path}.percentage"), errors),
        None => {
            errors.push(format!(
                "{path}.percentage: required (Istio would silently inject into 0% of requests), \
                 use percentage: {{value: 100}} for every request"
            ));
            None
        }
    }
}

fn compile_delay(d: &RawDelay, path: &str, errors: &mut Vec<String>) -> Option<DelayFault> {
    if d.exponential_delay.is_some() {
        errors.push(format!("{path}.exponentialDelay: not supported, use fixedDelay"));
    }
    let percent = compile_fault_percent(d.percentage.as_ref(), d.percent.as_ref(), path, errors);
    let ms = match d.fixed_delay.as_deref().map(parse_positive_duration_ms) {
        None => {
            errors.push(format!("{path}.fixedDelay: required"));
            None
        }
        Some(Ok(ms)) if ms > u64::from(u32::MAX) => {
            errors.push(format!("{path}.fixedDelay: must be at most {}ms", u32::MAX));
            None
        }
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            errors.push(format!("{path}.fixedDelay: {e}"));
            None
        }
    };
    Some(DelayFault { ms: ms?, percent: percent? })
}

fn compile_abort(a: &RawAbort, path: &str, errors: &mut Vec<String>) -> Option<AbortFault> {
    if a.http2_error.is_some() {
        errors.push(format!("{path}.http2Error: not supported, use httpStatus or grpcStatus"));
    }
    let percent = compile_fault_percent(a.percentage.as_ref(), a.percent.as_ref(), path, errors);
    let kind = match (a.http_status, &a.grpc_status) {
        (Some(_), Some(_)) => {
            errors.push(format!("{path}: give only one of httpStatus, grpcStatus"));
            None
        }
        (None, None) => {
            errors.push(format!("{path}: needs httpStatus or grpcStatus"));
            None
        }
        (Some(s), None) => match u16::try_from(s).ok().filter(|s| (200..=599).contains(s)) {
            Some(s) => Some(AbortKind::Http(s)),
            None => {
                errors.push(format!("{path}.httpStatus: {s} is not in 200..=599"));
                None
            }
        },
        (None, Some(g)) => {
            let parsed = match g {
                serde_json::Value::String(s) => parse_grpc_status(s),
                serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n <= 16),
                _ => None,
            };
            match parsed {
                Some(code) => Some(AbortKind::Grpc(code)),
                None => {
                    errors.push(format!(
                        "{path}.grpcStatus: {g} is not a gRPC status (a name such as \"UNAVAILABLE\" or a code 0..=16)"
                    ));
                    None
                }
            }
        }
    };
    Some(AbortFault { kind: kind?, percent: percent? })
}

#[cfg(test)]
mod tests;
