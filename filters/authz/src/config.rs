//! The authz filter's configuration: JSON (from wasmesh's YAML) → validated [`Config`].
//! Every error names its field path (`policies[0].rules[1].when[0].key: unknown condition
//! key "request.foo"`); all errors are reported at once. Unlike Istio, an unsupported
//! condition key is an error, never silently ignored.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;
use wasmesh_sdk::config::parse_duration_ms;

use crate::path::normalize;
use crate::policy::{
    Action, Cidr, Condition, Field, Key, Operation, PathMatch, Policy, Provider, Rule, Segment, Source, StringMatch,
    Values,
};

/// Istio's ext_authz default timeout (`envoyExtAuthzHttp.timeout`: 600s).
const DEFAULT_EXT_TIMEOUT_MS: u32 = 600_000;

/// The validated configuration, shared (via `Rc`) by every stream of a VM.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Policies in configuration order.
    pub policies: Vec<Policy>,
    /// Proxies in front of this one whose `x-forwarded-for` entries are trusted (`remote.ip`).
    pub trusted_proxies: u32,
    /// What happens to a path that is not in normal form.
    pub path_mode: PathMode,
    /// Some rule looks at the request principal: it is read with the path, method and
    /// host, in the same hostcall.
    pub reads_request_principal: bool,
}

/// `pathNormalization`: the filter authorizes the normalized path and then either
/// forwards it (`rewrite`, the default) or refuses requests whose path was not already
/// normal (`reject`, 400). Either way the upstream sees exactly the authorized path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathMode {
    /// Forward the normalized path.
    #[default]
    Rewrite,
    /// Answer 400 to a path that is not normalized.
    Reject,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    policies: Vec<Value>,
    #[serde(default)]
    trusted_proxies: u32,
    path_normalization: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    name: String,
    action: Option<String>,
    provider: Option<RawProvider>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProvider {
    cluster: String,
    authority: Option<String>,
    #[serde(alias = "path")]
    path_prefix: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    fail_open: bool,
    status_on_error: Option<Value>,
    #[serde(default)]
    include_request_headers_in_check: Vec<String>,
    #[serde(default, alias = "headersToUpstream")]
    headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    headers_to_downstream_on_deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    from: Vec<RawFrom>,
    #[serde(default)]
    to: Vec<RawTo>,
    #[serde(default)]
    when: Vec<RawCondition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrom {
    #[serde(default)]
    source: RawSource,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTo {
    #[serde(default)]
    operation: RawOperation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSource {
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    not_principals: Vec<String>,
    #[serde(default)]
    request_principals: Vec<String>,
    #[serde(default)]
    not_request_principals: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    not_namespaces: Vec<String>,
    #[serde(default)]
    ip_blocks: Vec<String>,
    #[serde(default)]
    not_ip_blocks: Vec<String>,
    #[serde(default)]
    remote_ip_blocks: Vec<String>,
    #[serde(default)]
    not_remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOperation {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    not_hosts: Vec<String>,
    #[serde(default)]
    ports: Vec<Value>,
    #[serde(default)]
    not_ports: Vec<Value>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    not_methods: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    not_paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCondition {
    key: String,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    not_values: Vec<String>,
}

/// Collects errors with their paths.
#[derive(Default)]
struct Errors(Vec<String>);

// === impl Config ===

impl Config {
    /// Parses and validates the plugin configuration (empty = no policies: allow all).
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            RawConfig::default()
        } else {
            serde_json::from_slice(bytes).map_err(|e| ConfigError(vec![format!("authz config: {e}")]))?
        };
        let mut errs = Errors::default();
        let path_mode = match raw.path_normalization.as_deref() {
            None | Some("rewrite") => PathMode::Rewrite,
            Some("reject") => PathMode::Reject,
            Some(other) => {
                errs.push("pathNormalization", format!("{other:?} is not one of \"rewrite\", \"reject\""));
                PathMode::Rewrite
            }
        };
        let mut names = HashSet::new();
        let mut policies = Vec::with_capacity(raw.policies.len());
        for (i, v) in raw.policies.into_iter().enumerate() {
            let at = format!("policies[{i}]");
            match serde_json::from_value::<RawPolicy>(v) {
                Ok(p) => {
                    if !p.name.is_empty() && !names.insert(p.name.clone()) {
                        errs.push(&format!("{at}.name"), format!("duplicate policy name {:?}", p.name));
                    }
                    if let Some(p) = policy(&at, p, &mut errs) {
                        policies.push(p);
                    }
                }
                Err(e) => errs.push(&at, e.to_string()),
            }
        }
        if errs.0.is_empty() {
            let reads_request_principal = policies.iter().flat_map(|p| &p.rules).any(Rule::reads_request_principal);
            Ok(Config { policies, trusted_proxies: raw.trusted_proxies, path_mode, reads_request_principal })
        } else {
            Err(ConfigError(errs.0))
        }
    }
}

// === impl ConfigError ===

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

// === impl Errors ===

impl Errors {
    fn push(&mut self, at: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{at}: {msg}"));
    }
}

fn policy(at: &str, p: RawPolicy, errs: &mut Errors) -> Option<Policy> {
    let before = errs.0.len();
    if p.name.trim().is_empty() {
        errs.push(&format!("{at}.name"), "must not be empty");
    }
    let action = match p.action.as_deref() {
        None | Some("ALLOW") => Action::Allow,
        Some("DENY") => Action::Deny,
        Some("AUDIT") => Action::Audit,
        Some("CUSTOM") => Action::Custom,
        Some(other) => {
            errs.push(&format!("{at}.action"), format!("{other:?} is not one of ALLOW, DENY, AUDIT, CUSTOM"));
            Action::Allow
        }
    };
    let provider = match (action, p.provider) {
        (Action::Custom, Some(raw)) => provider(&format!("{at}.provider"), raw, errs),
        (Action::Custom, None) => {
            errs.push(&format!("{at}.provider"), "action CUSTOM needs a provider (the ext_authz cluster)");
            None
        }
        (_, Some(_)) => {
            errs.push(&format!("{at}.provider"), "only action CUSTOM takes a provider");
            None
        }
        (_, None) => None,
    };
    if p.dry_run && action == Action::Custom {
        errs.push(&format!("{at}.dryRun"), "dry-run is supported for ALLOW and DENY policies, not CUSTOM");
    }
    let rules: Vec<Rule> =
        p.rules.into_iter().enumerate().map(|(i, r)| rule(&format!("{at}.rules[{i}]"), r, errs)).collect();
    (errs.0.len() == before).then_some(Policy { name: p.name, action, provider, dry_run: p.dry_run, rules })
}

fn provider(at: &str, p: RawProvider, errs: &mut Errors) -> Option<Provider> {
    if p.cluster.trim().is_empty() {
        errs.push(&format!("{at}.cluster"), "must name the cluster of the authorization service");
    }
    let timeout_ms = match p.timeout.as_deref().map(parse_duration_ms) {
        None => DEFAULT_EXT_TIMEOUT_MS,
        Some(Ok(ms)) => u32::try_from(ms).unwrap_or(u32::MAX),
        Some(Err(e)) => {
            errs.push(&format!("{at}.timeout"), e);
            DEFAULT_EXT_TIMEOUT_MS
        }
    };
    let status_on_error = match &p.status_on_error {
        None => 403,
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match n {
                Some(n @ 200..=599) => n as u16,
                _ => {
                    errs.push(&format!("{at}.statusOnError"), format!("{v} is not an HTTP status (200-599)"));
                    403
                }
            }
        }
    };
    let path_prefix = p.path_prefix.unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        errs.push(&format!("{at}.pathPrefix"), format!("{path_prefix:?} must start with '/'"));
    }
    let lower = |v: Vec<String>| v.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    Some(Provider {
        authority: p.authority.unwrap_or_else(|| p.cluster.clone()),
        cluster: p.cluster,
        path_prefix,
        timeout_ms,
        fail_open: p.fail_open,
        status_on_error,
        include_request_headers: lower(p.include_request_headers_in_check),
        headers_to_upstream: lower(p.headers_to_upstream_on_allow),
        headers_to_downstream_on_deny: lower(p.headers_to_downstream_on_deny),
    })
}

fn rule(at: &str, r: RawRule, errs: &mut Errors) -> Rule {
    let from = r.from.into_iter().enumerate().map(|(i, f)| source(&format!("{at}.from[{i}].source"), f.source, errs));
    let from = from.collect();
    let to =
        r.to.into_iter().enumerate().map(|(i, t)| operation(&format!("{at}.to[{i}].operation"), t.operation, errs));
    let to = to.collect();
    let when = r.when.into_iter().enumerate().filter_map(|(i, c)| condition(&format!("{at}.when[{i}]"), c, errs));
    Rule { from, to, when: when.collect() }
}

fn source(at: &str, s: RawSource, errs: &mut Errors) -> Source {
    let principal = |v: &str| StringMatch::parse(v.strip_prefix("spiffe://").unwrap_or(v));
    Source {
        principals: strings(at, "principals", s.principals, s.not_principals, errs, principal),
        request_principals: strings(
            at,
            "requestPrincipals",
            s.request_principals,
            s.not_request_principals,
            errs,
            StringMatch::parse,
        ),
        namespaces: strings(at, "namespaces", s.namespaces, s.not_namespaces, errs, StringMatch::parse),
        ip_blocks: cidrs(at, "ipBlocks", s.ip_blocks, s.not_ip_blocks, errs),
        remote_ip_blocks: cidrs(at, "remoteIpBlocks", s.remote_ip_blocks, s.not_remote_ip_blocks, errs),
    }
}

fn operation(at: &str, o: RawOperation, errs: &mut Errors) -> Operation {
    let host = |v: &str| StringMatch::parse(v).lowercased();
    Operation {
        hosts: strings(at, "hosts", o.hosts, o.not_hosts, errs, host),
        ports: Field {
            values: ports(&format!("{at}.ports"), &o.ports, errs),
            not_values: ports(&format!("{at}.notPorts"), &o.not_ports, errs),
        },
        methods: strings(at, "methods", o.methods, o.not_methods, errs, StringMatch::parse),
        paths: Field {
            values: paths(&format!("{at}.paths"), &o.paths, errs),
            not_values: paths(&format!("{at}.notPaths"), &o.not_paths, errs),
        },
    }
}

/// `name` / `notName` string lists (checked for Istio's wildcard rules).
fn strings(
    at: &str,
    name: &str,
    values: Vec<String>,
    not_values: Vec<String>,
    errs: &mut Errors,
    parse: impl Fn(&str) -> StringMatch,
) -> Field<StringMatch> {
    let mut list = |field: String, vs: Vec<String>| -> Vec<StringMatch> {
        let mut out = Vec::with_capacity(vs.len());
        for (i, v) in vs.iter().enumerate() {
            match check_wildcards(v) {
                Ok(()) => out.push(parse(v)),
                Err(e) => errs.push(&format!("{at}.{field}[{i}]"), e),
            }
        }
        out
    };
    let not_name = format!("not{}{}", name[..1].to_ascii_uppercase(), &name[1..]);
    Field { values: list(name.to_string(), values), not_values: list(not_name, not_values) }
}

fn check_wildcards(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty value (use \"*\" to require presence)".into());
    }
    let inner = v.strip_prefix('*').unwrap_or(v);
    let inner = inner.strip_suffix('*').unwrap_or(inner);
    if inner.contains('*') || (v.len() > 1 && v.starts_with('*') && v.ends_with('*')) {
        return Err(format!("{v:?}: '*' may only be the whole value, a prefix (\"*abc\") or a suffix (\"abc*\")"));
    }
    Ok(())
}

fn cidrs(at: &str, name: &str, values: Vec<String>, not_values: Vec<String>, errs: &mut Errors) -> Field<Cidr> {
    let mut list = |field: &str, vs: Vec<String>| -> Vec<Cidr> {
        let mut out = Vec::with_capacity(vs.len());
        for (i, v) in vs.iter().enumerate() {
            match Cidr::parse(v) {
                Ok(c) => out.push(c),
                Err(e) => errs.push(&format!("{at}.{field}[{i}]"), e),
            }
        }
        out
    };
    let not_name = format!("not{}{}", name[..1].to_ascii_uppercase(), &name[1..]);
    Field { values: list(name, values), not_values: list(&not_name, not_values) }
}

fn port_of(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p > 0)
}

fn ports(at: &str, vs: &[Value], errs: &mut Errors) -> Vec<u16> {
    let mut out = Vec::with_capacity(vs.len());
    for (i, v) in vs.iter().enumerate() {
        match port_of(v) {
            Some(p) => out.push(p),
            None => errs.push(&format!("{at}[{i}]"), format!("{v} is not a port (1-65535)")),
        }
    }
    out
}

fn paths(at: &str, vs: &[String], errs: &mut Errors) -> Vec<PathMatch> {
    let mut out = Vec::with_capacity(vs.len());
    for (i, v) in vs.iter().enumerate() {
        match path_match(v) {
            Ok(m) => out.push(m),
            Err(e) => errs.push(&format!("{at}[{i}]"), e),
        }
    }
    out
}

/// A `paths` entry: `*`, `/exact`, `/prefix*`, `*suffix`, or a `{*}`/`{**}` template.
/// Exact and prefix values must be in normal form (requests are normalized first, so
/// `/a//b` could never match: an error instead of a silent hole).
fn path_match(v: &str) -> Result<PathMatch, String> {
    if v.contains('{') || v.contains('}') {
        return template(v).map(PathMatch::Template);
    }
    check_wildcards(v)?;
    let m = StringMatch::parse(v);
    let literal = match &m {
        StringMatch::Exact(p) | StringMatch::Prefix(p) => Some(p),
        _ => None,
    };
    if let Some(p) = literal {
        if !p.starts_with('/') {
            return Err(format!("{v:?} must start with '/' (or be \"*\" or a \"*suffix\")"));
        }
        let n = normalize(p);
        if n != *p {
            return Err(format!("{v:?} never matches: request paths are normalized first (it would read {n:?})"));
        }
    }
    Ok(PathMatch::Str(m))
}

fn template(v: &str) -> Result<Vec<Segment>, String> {
    let Some(body) = v.strip_prefix('/') else {
        return Err(format!("template {v:?} must start with '/'"));
    };
    let parts: Vec<&str> = body.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        match *p {
            "{*}" => out.push(Segment::One),
            "{**}" if i + 1 == parts.len() => out.push(Segment::Rest),
            "{**}" => return Err(format!("template {v:?}: {{**}} must be the last segment")),
            s if s.contains(['{', '}', '*']) => {
                return Err(format!("template {v:?}: operators must be whole segments, {{*}} or {{**}}"))
            }
            s if s.is_empty() || s == "." || s == ".." => {
                return Err(format!("template {v:?} is not in normal form (empty or dot segment)"))
            }
            s => out.push(Segment::Literal(s.to_string())),
        }
    }
    Ok(out)
}

/// A `when` condition; `None` after recording the error.
fn condition(at: &str, c: RawCondition, errs: &mut Errors) -> Option<Condition> {
    let key = match parse_key(&c.key) {
        Ok(k) => k,
        Err(e) => {
            errs.push(&format!("{at}.key"), e);
            return None;
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        errs.push(at, format!("condition {:?} needs values or notValues", c.key));
        return None;
    }
    let before = errs.0.len();
    let values = match key {
        Key::SourceIp | Key::RemoteIp | Key::DestinationIp => {
            let list = |name: &str, vs: &[String], errs: &mut Errors| -> Vec<Cidr> {
                vs.iter()
                    .enumerate()
                    .filter_map(|(i, v)| Cidr::parse(v).map_err(|e| errs.push(&format!("{at}.{name}[{i}]"), e)).ok())
                    .collect()
            };
            Values::Ip(Field {
                values: list("values", &c.values, errs),
                not_values: list("notValues", &c.not_values, errs),
            })
        }
        Key::DestinationPort => {
            let to_values = |vs: &[String]| vs.iter().map(|s| Value::String(s.clone())).collect::<Vec<_>>();
            Values::Port(Field {
                values: ports(&format!("{at}.values"), &to_values(&c.values), errs),
                not_values: ports(&format!("{at}.notValues"), &to_values(&c.not_values), errs),
            })
        }
        Key::SourcePrincipal => {
            let p = |v: &str| StringMatch::parse(v.strip_prefix("spiffe://").unwrap_or(v));
            Values::Str(strings(at, "values", c.values, c.not_values, errs, p))
        }
        _ => Values::Str(strings(at, "values", c.values, c.not_values, errs, StringMatch::parse)),
    };
    (errs.0.len() == before).then_some(Condition { key, values })
}

/// Parses an Istio condition key; unknown and `experimental.*` keys are errors.
pub fn parse_key(key: &str) -> Result<Key, String> {
    let simple = match key {
        "source.ip" => Some(Key::SourceIp),
        "remote.ip" => Some(Key::RemoteIp),
        "source.namespace" => Some(Key::SourceNamespace),
        "source.principal" => Some(Key::SourcePrincipal),
        "request.auth.principal" => Some(Key::RequestPrincipal),
        "request.auth.audiences" => Some(Key::Audiences),
        "request.auth.presenter" => Some(Key::Presenter),
        "destination.ip" => Some(Key::DestinationIp),
        "destination.port" => Some(Key::DestinationPort),
        "connection.sni" => Some(Key::Sni),
        _ => None,
    };
    if let Some(k) = simple {
        return Ok(k);
    }
    if let Some(rest) = key.strip_prefix("request.headers") {
        let names = brackets(rest).ok_or_else(|| format!("{key:?}: expected request.headers[<name>]"))?;
        return match names.as_slice() {
            [name] if is_token(name.strip_prefix(':').unwrap_or(name)) => Ok(Key::Header(name.to_ascii_lowercase())),
            _ => Err(format!("{key:?}: expected request.headers[<name>] with one valid header name")),
        };
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        let names =
            brackets(rest).ok_or_else(|| format!("{key:?}: expected request.auth.claims[<claim>]([<nested>]…)"))?;
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err(format!("{key:?}: expected request.auth.claims[<claim>]([<nested>]…)"));
        }
        return Ok(Key::Claim(names));
    }
    if key.starts_with("experimental.") {
        return Err(format!("{key:?}: experimental keys are not supported"));
    }
    Err(format!(
        "unknown condition key {key:?} (supported: request.headers[<name>], source.ip, remote.ip, source.namespace, \
         source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, \
         request.auth.claims[<claim>], destination.ip, destination.port, connection.sni)"
    ))
}

/// `[a][b]` → `["a", "b"]`; `None` when the text is not only bracket groups.
fn brackets(mut s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let inner = s.strip_prefix('[')?;
        let end = inner.find(']')?;
        out.push(inner[..end].to_string());
        s = &inner[end + 1..];
    }
    Some(out)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests;
