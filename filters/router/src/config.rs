//! The router's configuration: Istio VirtualService `http:` rules as JSON (serde, unknown
//! fields rejected), validated and compiled once (regexes, weights, durations) into the
//! [`RouterConfig`] the policy reads. Every error names the field path that is wrong.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::Deserialize;

/// Largest compiled regex program we accept (bytes); keeps a VM's memory bounded.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Default cap on the request body copied to mirrors.
pub const DEFAULT_MIRROR_BODY_LIMIT: usize = 1 << 20;

/// Why a configuration was rejected: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `routes[2].match[0].uri.regex`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found: the first one of each rule (so one bad rule does not hide the next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------
// Raw (serde) shapes: Istio's YAML field names, camelCase.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "the router config object ({routes: [...], strict: bool})",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct RawConfig {
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    workload_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    workload_namespace: Option<String>,
    #[serde(default)]
    mirror_body_limit_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an HTTPRoute object", deny_unknown_fields, rename_all = "camelCase")]
struct RawRoute {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "match")]
    matches: Vec<RawMatch>,
    #[serde(default)]
    route: Vec<RawRouteDestination>,
    #[serde(default)]
    redirect: Option<RawRedirect>,
    #[serde(default)]
    direct_response: Option<RawDirectResponse>,
    #[serde(default)]
    rewrite: Option<RawRewrite>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    headers: Option<RawHeaders>,
    #[serde(default)]
    mirror: Option<RawDestination>,
    #[serde(default)]
    mirror_percentage: Option<RawPercent>,
    #[serde(default)]
    mirrors: Vec<RawMirrorPolicy>,
    #[serde(default)]
    cors_policy: Option<RawCors>,
    // Accepted only to give a precise error pointing at the right filter.
    #[serde(default)]
    retries: Option<serde_json::Value>,
    #[serde(default)]
    fault: Option<serde_json::Value>,
    #[serde(default)]
    delegate: Option<serde_json::Value>,
    #[serde(default)]
    mirror_percent: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an HTTPMatchRequest object", deny_unknown_fields, rename_all = "camelCase")]
struct RawMatch {
    #[serde(default)]
    #[allow(dead_code)] // Istio's match name: accepted, only shown in Istio's logs
    name: Option<String>,
    #[serde(default)]
    uri: Option<RawStringMatch>,
    #[serde(default)]
    scheme: Option<RawStringMatch>,
    #[serde(default)]
    method: Option<RawStringMatch>,
    #[serde(default)]
    authority: Option<RawStringMatch>,
    #[serde(default)]
    headers: BTreeMap<String, RawStringMatch>,
    #[serde(default)]
    without_headers: BTreeMap<String, RawStringMatch>,
    #[serde(default)]
    query_params: BTreeMap<String, RawStringMatch>,
    #[serde(default)]
    ignore_uri_case: bool,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    source_labels: BTreeMap<String, String>,
    #[serde(default)]
    source_namespace: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted and ignored: the router runs on the listener it is chained on
    gateways: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted and ignored
    stat_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a StringMatch object ({exact|prefix|regex: string})", deny_unknown_fields)]
struct RawStringMatch {
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an HTTPRouteDestination object", deny_unknown_fields, rename_all = "camelCase")]
struct RawRouteDestination {
    destination: RawDestination,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    headers: Option<RawHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a Destination object", deny_unknown_fields)]
struct RawDestination {
    host: String,
    #[serde(default)]
    subset: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted and ignored: a wasmesh cluster fixes its endpoints' ports
    port: Option<RawPortSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a PortSelector object", deny_unknown_fields)]
struct RawPortSelector {
    #[allow(dead_code)]
    number: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an HTTPRedirect object", deny_unknown_fields, rename_all = "camelCase")]
struct RawRedirect {
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    derive_port: Option<String>,
    #[serde(default)]
    redirect_code: Option<u32>,
    #[serde(default)]
    prefix_rewrite: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an HTTPDirectResponse object", deny_unknown_fields)]
struct RawDirectResponse {
    status: u32,
    #[serde(default)]
    body: Option<RawBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an HTTPBody object", deny_unknown_fields)]
struct RawBody {
    #[serde(default)]
    string: Option<String>,
    #[serde(default)]
    bytes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an HTTPRewrite object", deny_unknown_fields, rename_all = "camelCase")]
struct RawRewrite {
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    uri_regex_rewrite: Option<RawRegexRewrite>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a RegexRewrite object", deny_unknown_fields)]
struct RawRegexRewrite {
    #[serde(rename = "match")]
    pattern: String,
    rewrite: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an Headers object", deny_unknown_fields)]
struct RawHeaders {
    #[serde(default)]
    request: Option<RawHeaderOps>,
    #[serde(default)]
    response: Option<RawHeaderOps>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an HeaderOperations object", deny_unknown_fields)]
struct RawHeaderOps {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a Percent object", deny_unknown_fields)]
struct RawPercent {
    value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an HTTPMirrorPolicy object", deny_unknown_fields)]
struct RawMirrorPolicy {
    destination: RawDestination,
    #[serde(default)]
    percentage: Option<RawPercent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a CorsPolicy object", deny_unknown_fields, rename_all = "camelCase")]
struct RawCors {
    #[serde(default)]
    allow_origins: Vec<RawStringMatch>,
    #[serde(default)]
    allow_origin: Vec<String>,
    #[serde(default)]
    allow_methods: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    max_age: Option<String>,
    #[serde(default)]
    allow_credentials: Option<bool>,
    #[serde(default)]
    unmatched_preflights: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Compiled shapes: what the policy reads on every request.
// ---------------------------------------------------------------------------------------

/// The validated, compiled router configuration.
#[derive(Debug)]
pub struct RouterConfig {
    /// Rules in order; the first that matches wins.
    pub routes: Vec<Route>,
    /// Unmatched requests get a local 404 with flag `NR` (else they pass through).
    pub strict: bool,
    /// Some match uses `port`: the filter must read `destination.port`.
    pub needs_port: bool,
    /// The request headers (pseudo-headers included) some rule looks at: the filter
    /// fetches only these, one by one.
    pub needed_headers: Vec<String>,
    /// Cap on the request body copied to mirrors (larger bodies are not mirrored).
    pub mirror_body_limit: usize,
    /// Valid but probably unintended settings (logged at configure time).
    pub warnings: Vec<String>,
}

/// One `http:` rule.
#[derive(Debug)]
pub struct Route {
    /// `name`, set as `wasmesh.route.name`.
    pub name: Option<String>,
    /// `match` blocks, ORed; empty matches every request.
    pub matches: Vec<Match>,
    /// What the rule does.
    pub action: RouteAction,
    /// `rewrite` (forwarding rules only).
    pub rewrite: Option<Rewrite>,
    /// `timeout` in ms (0 = none); `None` leaves the host default.
    pub timeout_ms: Option<u64>,
    /// Route-level `headers`.
    pub headers: HeaderPolicy,
    /// `mirror`/`mirrors` with their percentages.
    pub mirrors: Vec<Mirror>,
    /// `corsPolicy`.
    pub cors: Option<Cors>,
}

/// What a matched rule does.
#[derive(Debug)]
pub enum RouteAction {
    /// `route`: forward to one of the weighted destinations.
    Forward {
        /// The destinations (at least one).
        destinations: Vec<WeightedDestination>,
        /// Sum of the weights (> 0).
        total_weight: u64,
    },
    /// `redirect`: answer with a 3xx.
    Redirect(Redirect),
    /// `directResponse`: answer locally.
    Direct(DirectResponse),
}

/// One `route[]` entry.
#[derive(Debug)]
pub struct WeightedDestination {
    /// `destination.host`: the wasmesh cluster name.
    pub cluster: String,
    /// `destination.subset`.
    pub subset: Option<String>,
    /// `weight` (a single destination gets everything).
    pub weight: u64,
    /// Per-destination `headers`.
    pub headers: HeaderPolicy,
}

/// One `match` block: every present condition must hold.
#[derive(Debug, Default)]
pub struct Match {
    /// `uri`, matched on `:path` (exact/regex without the query string).
    pub uri: Option<StringMatch>,
    /// `ignoreUriCase` (exact and prefix only).
    pub ignore_uri_case: bool,
    /// `scheme`.
    pub scheme: Option<StringMatch>,
    /// `method`.
    pub method: Option<StringMatch>,
    /// `authority`.
    pub authority: Option<StringMatch>,
    /// `headers` (lowercase names); `Present` means the header must exist.
    pub headers: Vec<(String, StringMatch)>,
    /// `withoutHeaders`: none of these may match.
    pub without_headers: Vec<(String, StringMatch)>,
    /// `queryParams`.
    pub query_params: Vec<(String, StringMatch)>,
    /// `port`: the listener port (`destination.port`).
    pub port: Option<u32>,
    /// `sourceLabels`/`sourceNamespace` evaluated once against this workload: false makes
    /// the block never match.
    pub source_selected: bool,
}

/// Istio's `StringMatch`.
#[derive(Debug)]
pub enum StringMatch {
    /// `exact`.
    Exact(String),
    /// `prefix`.
    Prefix(String),
    /// `regex` (RE2 syntax, whole-string match).
    Regex(Regex),
    /// `{}`: presence only (headers).
    Present,
}

/// `rewrite`.
#[derive(Debug, Default)]
pub struct Rewrite {
    /// `uri`: replaces the matched prefix (or the whole path for exact/regex matches).
    pub uri: Option<String>,
    /// `uriRegexRewrite`: the regex and its substitution in Rust `${N}` syntax.
    pub uri_regex: Option<(Regex, String)>,
    /// `authority`.
    pub authority: Option<String>,
}

/// `redirect`.
#[derive(Debug)]
pub struct Redirect {
    /// `uri`: replaces the whole path.
    pub uri: Option<String>,
    /// `prefixRewrite`: replaces the matched prefix.
    pub prefix_rewrite: Option<String>,
    /// `authority`.
    pub authority: Option<String>,
    /// `scheme`.
    pub scheme: Option<String>,
    /// `port` / `derivePort`.
    pub port: RedirectPort,
    /// `redirectCode` (default 301).
    pub status: u32,
}

/// How a redirect picks its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    /// Keep the request's port (dropped when it is the scheme's default).
    Keep,
    /// `port: N`.
    Fixed(u32),
    /// `derivePort: FROM_PROTOCOL_DEFAULT` (no explicit port).
    ProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT` (the listener port).
    RequestPort,
}

/// `directResponse`.
#[derive(Debug)]
pub struct DirectResponse {
    /// `status`.
    pub status: u32,
    /// `body.string` or decoded `body.bytes`.
    pub body: Vec<u8>,
}

/// `headers: {request, response}`.
#[derive(Debug, Default)]
pub struct HeaderPolicy {
    /// Applied to the request sent upstream.
    pub request: HeaderOps,
    /// Applied to the response sent downstream.
    pub response: HeaderOps,
}

/// `set`, `add`, `remove` (applied in the order remove, set, add).
#[derive(Debug, Default)]
pub struct HeaderOps {
    /// Overwrite (or add) these headers.
    pub set: Vec<(String, String)>,
    /// Append these headers.
    pub add: Vec<(String, String)>,
    /// Remove these headers.
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// One mirror target.
#[derive(Debug)]
pub struct Mirror {
    /// Cluster the copy is sent to.
    pub cluster: String,
    /// Share of requests mirrored, in millionths (1_000_000 = all).
    pub per_million: u32,
}

/// `corsPolicy`.
#[derive(Debug, Default)]
pub struct Cors {
    /// `allowOrigins` (and the deprecated `allowOrigin` as exact matches).
    pub allow_origins: Vec<StringMatch>,
    /// `allowMethods`, joined with `,`.
    pub allow_methods: String,
    /// `allowHeaders`, joined with `,`.
    pub allow_headers: String,
    /// `exposeHeaders`, joined with `,`.
    pub expose_headers: String,
    /// `maxAge` in seconds.
    pub max_age_secs: Option<u64>,
    /// `allowCredentials`.
    pub allow_credentials: bool,
    /// `unmatchedPreflights: IGNORE` (answer unmatched preflights locally without CORS
    /// headers) instead of the default `FORWARD`.
    pub ignore_unmatched_preflights: bool,
}

/// Where the workload's identity comes from for `sourceLabels`/`sourceNamespace`.
pub trait Workload {
    /// The value of label `key` of this workload, if it has one.
    fn label(&self, key: &str) -> Option<String>;
    /// This workload's namespace.
    fn namespace(&self) -> Option<String>;
}

/// Labels in a map; the `NAMESPACE` entry doubles as the namespace (as in node metadata).
impl Workload for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
    fn namespace(&self) -> Option<String> {
        self.get("NAMESPACE").cloned()
    }
}

// ---------------------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------------------

/// Parses and validates the plugin configuration (JSON). Empty bytes are an empty config
/// (every request passes through). `node` supplies this workload's labels for
/// `sourceLabels` when the config has no `workloadLabels`.
pub fn parse(bytes: &[u8], node: &dyn Workload) -> Result<RouterConfig, ConfigErrors> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        // serde would read a list as the struct's fields in order: say what was meant.
        return Err(ConfigError::new(
            "",
            "the router config is an object, not a list: put a VirtualService's http: list under routes:",
        )
        .into());
    }
    // Empty bytes are the default (empty) config.
    let raw: RawConfig =
        wasmesh_sdk::config::parse_with_path(bytes).map_err(|e| ConfigError::new(e.path, e.message))?;
    compile(raw, node)
}

struct ConfigWorkload<'a> {
    labels: &'a BTreeMap<String, String>,
    namespace: Option<&'a String>,
    node: &'a dyn Workload,
}

impl Workload for ConfigWorkload<'_> {
    fn label(&self, key: &str) -> Option<String> {
        self.labels.get(key).cloned()
    }
    fn namespace(&self) -> Option<String> {
        self.namespace.cloned().or_else(|| self.node.namespace())
    }
}

fn compile(raw: RawConfig, node: &dyn Workload) -> Result<RouterConfig, ConfigErrors> {
    let overridden;
    let workload: &dyn Workload = match &raw.workload_labels {
        Some(labels) => {
            overridden = ConfigWorkload { labels, namespace: raw.workload_namespace.as_ref(), node };
            &overridden
        }
        None => node,
    };
    let ns_override = raw.workload_namespace.clone();
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut errors = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        match compile_route(r, &format!("routes[{i}]"), workload, ns_override.as_deref()) {
            Ok(route) => routes.push(route),
            Err(e) => errors.push(e),
        }
    }
    let needs_port = routes.iter().any(|r| r.matches.iter().any(|m| m.port.is_some()))
        || routes.iter().any(|r| matches!(&r.action, RouteAction::Redirect(d) if d.port == RedirectPort::RequestPort));
    let mirror_body_limit = match raw.mirror_body_limit_bytes {
        None => DEFAULT_MIRROR_BODY_LIMIT,
        Some(n) => usize::try_from(n).unwrap_or_else(|_| {
            errors.push(ConfigError::new("mirrorBodyLimitBytes", format!("{n} is too large")));
            0
        }),
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let needed_headers = needed_headers(&routes);
    let warnings = warnings(&routes);
    Ok(RouterConfig { routes, strict: raw.strict, needs_port, needed_headers, mirror_body_limit, warnings })
}

/// Settings that are valid Istio but rarely what the author meant: Istio's well-known
/// rewrite surprises and rules shadowed by an earlier catch-all.
fn warnings(routes: &[Route]) -> Vec<String> {
    let mut out = Vec::new();
    let mut catch_all: Option<usize> = None;
    for (i, r) in routes.iter().enumerate() {
        if let Some(first) = catch_all {
            out.push(format!("routes[{i}] is unreachable: routes[{first}] matches every request first"));
        }
        let takes_all = r.matches.is_empty()
            || r.matches.iter().any(|m| {
                m.source_selected
                    && match &m.uri {
                        None => true,
                        Some(StringMatch::Prefix(p)) => p == "/",
                        Some(_) => false,
                    }
                    && m.scheme.is_none()
                    && m.method.is_none()
                    && m.authority.is_none()
                    && m.headers.is_empty()
                    && m.without_headers.is_empty()
                    && m.query_params.is_empty()
                    && m.port.is_none()
            });
        if takes_all && catch_all.is_none() {
            catch_all = Some(i);
        }
        let Some(uri) = r.rewrite.as_ref().and_then(|rw| rw.uri.as_deref()) else { continue };
        let no_uri_match = r.matches.is_empty() || r.matches.iter().any(|m| m.uri.is_none());
        if no_uri_match && uri != "/" && !uri.ends_with('/') {
            out.push(format!(
                "routes[{i}].rewrite.uri: without a uri match only the leading '/' is replaced (Istio semantics): \
                 /foo becomes {uri}foo; end it with '/' or add a uri prefix match"
            ));
        }
        for (j, m) in r.matches.iter().enumerate() {
            if let Some(StringMatch::Prefix(p)) = &m.uri {
                if !p.ends_with('/') && uri.ends_with('/') {
                    out.push(format!(
                        "routes[{i}].rewrite.uri: match[{j}] prefix {p:?} has no trailing '/' but {uri:?} has one: \
                         {p}/x becomes {uri}/x"
                    ));
                }
            }
        }
    }
    out
}

impl RouterConfig {
    /// A configuration with no rules (every request passes through).
    pub fn empty() -> Self {
        RouterConfig {
            routes: Vec::new(),
            strict: false,
            needs_port: false,
            needed_headers: Vec::new(),
            mirror_body_limit: DEFAULT_MIRROR_BODY_LIMIT,
            warnings: Vec::new(),
        }
    }

    /// Some rule changes response headers (its own or a destination's ops, or CORS):
    /// the filter needs `on_http_response_headers`.
    pub fn edits_responses(&self) -> bool {
        self.routes.iter().any(|r| {
            let destination_ops = match &r.action {
                RouteAction::Forward { destinations, .. } => {
                    destinations.iter().any(|d| !d.headers.response.is_empty())
                }
                _ => false,
            };
            destination_ops || !r.headers.response.is_empty() || r.cors.is_some()
        })
    }

    /// Some rule mirrors: the filter copies request bodies for the mirrors.
    pub fn mirrors(&self) -> bool {
        self.routes.iter().any(|r| !r.mirrors.is_empty())
    }
}

/// The request headers the rules read, so the filter need not fetch the whole map.
fn needed_headers(routes: &[Route]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut need = |name: &str| {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    };
    for r in routes {
        for m in &r.matches {
            if m.uri.is_some() || !m.query_params.is_empty() {
                need(":path");
            }
            if m.method.is_some() {
                need(":method");
            }
            if m.authority.is_some() {
                need(":authority");
            }
            if m.scheme.is_some() {
                need(":scheme");
            }
            for (name, _) in m.headers.iter().chain(&m.without_headers) {
                need(name);
            }
        }
        if r.rewrite.as_ref().is_some_and(|rw| rw.uri.is_some() || rw.uri_regex.is_some()) {
            need(":path");
        }
        if matches!(r.action, RouteAction::Redirect(_)) {
            need(":path");
            need(":authority");
            need(":scheme");
        }
        if r.cors.is_some() {
            need(":method");
            need("origin");
            need("access-control-request-method");
        }
    }
    out
}

fn compile_route(
    r: RawRoute,
    path: &str,
    workload: &dyn Workload,
    ns_override: Option<&str>,
) -> Result<Route, ConfigError> {
    if r.retries.is_some() {
        return Err(ConfigError::new(
            format!("{path}.retries"),
            "retries are not handled by the router; configure the retry filter (module builtin:retry) after it",
        ));
    }
    if r.fault.is_some() {
        return Err(ConfigError::new(
            format!("{path}.fault"),
            "faults are not handled by the router; configure the fault filter (module builtin:fault) before it",
        ));
    }
    if r.delegate.is_some() {
        return Err(ConfigError::new(
            format!("{path}.delegate"),
            "delegate is not supported: inline the delegated rules",
        ));
    }
    if r.mirror_percent.is_some() {
        return Err(ConfigError::new(
            format!("{path}.mirrorPercent"),
            "deprecated in Istio; use mirrorPercentage: {value: <0..100>}",
        ));
    }
    if let Some(name) = &r.name {
        check_value(name, &format!("{path}.name"))?;
    }

    let mut matches = Vec::with_capacity(r.matches.len());
    for (j, m) in r.matches.into_iter().enumerate() {
        matches.push(compile_match(m, &format!("{path}.match[{j}]"), workload, ns_override)?);
    }

    let kinds = [
        (!r.route.is_empty(), "route"),
        (r.redirect.is_some(), "redirect"),
        (r.direct_response.is_some(), "directResponse"),
    ];
    let present: Vec<&str> = kinds.iter().filter(|(p, _)| *p).map(|(_, n)| *n).collect();
    if present.len() > 1 {
        return Err(ConfigError::new(path, format!("{} are mutually exclusive; give only one", present.join(" and "))));
    }
    let action = if let Some(red) = r.redirect {
        RouteAction::Redirect(compile_redirect(red, &format!("{path}.redirect"), &matches)?)
    } else if let Some(d) = r.direct_response {
        RouteAction::Direct(compile_direct(d, &format!("{path}.directResponse"))?)
    } else if !r.route.is_empty() {
        compile_destinations(r.route, &format!("{path}.route"))?
    } else {
        return Err(ConfigError::new(path, "needs one of route, redirect or directResponse"));
    };
    let forwards = matches!(action, RouteAction::Forward { .. });

    let rewrite = match r.rewrite {
        Some(_) if !forwards => {
            return Err(ConfigError::new(
                format!("{path}.rewrite"),
                "only applies to a route (not to redirect or directResponse)",
            ));
        }
        Some(rw) => Some(compile_rewrite(rw, &format!("{path}.rewrite"))?),
        None => None,
    };
    let timeout_ms = match &r.timeout {
        Some(t) => {
            let p = format!("{path}.timeout");
            if !forwards {
                return Err(ConfigError::new(p, "only applies to a route (not to redirect or directResponse)"));
            }
            Some(duration_ms(t, &p)?)
        }
        None => None,
    };
    let headers = match r.headers {
        Some(h) => compile_headers(h, &format!("{path}.headers"))?,
        None => HeaderPolicy::default(),
    };

    let mut mirrors = Vec::new();
    if let Some(m) = r.mirror {
        let per_million = match r.mirror_percentage {
            Some(p) => percent_per_million(p.value, &format!("{path}.mirrorPercentage.value"))?,
            None => 1_000_000,
        };
        mirrors.push(compile_mirror(m, per_million, &format!("{path}.mirror"))?);
    } else if r.mirror_percentage.is_some() {
        return Err(ConfigError::new(format!("{path}.mirrorPercentage"), "needs mirror"));
    }
    for (k, m) in r.mirrors.into_iter().enumerate() {
        let p = format!("{path}.mirrors[{k}]");
        let per_million = match m.percentage {
            Some(pc) => percent_per_million(pc.value, &format!("{p}.percentage.value"))?,
            None => 1_000_000,
        };
        mirrors.push(compile_mirror(m.destination, per_million, &format!("{p}.destination"))?);
    }
    if !mirrors.is_empty() && !forwards {
        return Err(ConfigError::new(
            format!("{path}.mirror"),
            "only applies to a route (not to redirect or directResponse)",
        ));
    }

    let cors = match r.cors_policy {
        Some(c) => Some(compile_cors(c, &format!("{path}.corsPolicy"))?),
        None => None,
    };

    Ok(Route { name: r.name, matches, action, rewrite, timeout_ms, headers, mirrors, cors })
}

fn compile_match(
    m: RawMatch,
    path: &str,
    workload: &dyn Workload,
    ns_override: Option<&str>,
) -> Result<Match, ConfigError> {
    let opt = |sm: Option<RawStringMatch>, field: &str| -> Result<Option<StringMatch>, ConfigError> {
        match sm {
            Some(sm) => Ok(Some(compile_string_match(sm, &format!("{path}.{field}"), false)?)),
            None => Ok(None),
        }
    };
    let mut uri = opt(m.uri, "uri")?;
    if m.ignore_uri_case {
        // Compare lowercase with lowercase: exact and prefix values are folded once here.
        uri = uri.map(|u| match u {
            StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase()),
            StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase()),
            other => other,
        });
    }
    let scheme = opt(m.scheme, "scheme")?;
    let method = opt(m.method, "method")?;
    let authority = opt(m.authority, "authority")?;
    let header_list =
        |map: BTreeMap<String, RawStringMatch>, field: &str| -> Result<Vec<(String, StringMatch)>, ConfigError> {
            let mut out = Vec::with_capacity(map.len());
            for (name, sm) in map {
                let p = format!("{path}.{field}.{name}");
                let lower = name.to_ascii_lowercase();
                if lower.is_empty() {
                    return Err(ConfigError::new(p, "header name is empty"));
                }
                // Istio ignores these keys in header matches (they have their own fields).
                if matches!(lower.as_str(), "uri" | "scheme" | "method" | "authority") {
                    continue;
                }
                out.push((lower, compile_string_match(sm, &p, true)?));
            }
            Ok(out)
        };
    let headers = header_list(m.headers, "headers")?;
    let without_headers = header_list(m.without_headers, "withoutHeaders")?;
    let mut query_params = Vec::with_capacity(m.query_params.len());
    for (name, sm) in m.query_params {
        let p = format!("{path}.queryParams.{name}");
        if name.is_empty() {
            return Err(ConfigError::new(p, "query parameter name is empty"));
        }
        query_params.push((name, compile_string_match(sm, &p, false)?));
    }
    if let Some(port) = m.port {
        if port == 0 || port > 65535 {
            return Err(ConfigError::new(format!("{path}.port"), format!("{port} is not a port (1..=65535)")));
        }
    }
    let labels_ok = m.source_labels.iter().all(|(k, v)| workload.label(k).as_deref() == Some(v.as_str()));
    let ns_ok = match &m.source_namespace {
        Some(ns) => {
            let mine = ns_override.map(str::to_string).or_else(|| workload.namespace());
            mine.as_deref() == Some(ns.as_str())
        }
        None => true,
    };
    Ok(Match {
        uri,
        ignore_uri_case: m.ignore_uri_case,
        scheme,
        method,
        authority,
        headers,
        without_headers,
        query_params,
        port: m.port,
        source_selected: labels_ok && ns_ok,
    })
}

fn compile_string_match(sm: RawStringMatch, path: &str, allow_empty: bool) -> Result<StringMatch, ConfigError> {
    let n = usize::from(sm.exact.is_some()) + usize::from(sm.prefix.is_some()) + usize::from(sm.regex.is_some());
    if n > 1 {
        return Err(ConfigError::new(path, "give only one of exact, prefix, regex"));
    }
    if let Some(s) = sm.exact {
        return Ok(StringMatch::Exact(s));
    }
    if let Some(s) = sm.prefix {
        return Ok(StringMatch::Prefix(s));
    }
    if let Some(s) = sm.regex {
        return Ok(StringMatch::Regex(compile_regex(&s, &format!("{path}.regex"), true)?));
    }
    if allow_empty {
        Ok(StringMatch::Present)
    } else {
        Err(ConfigError::new(path, "needs one of exact, prefix, regex"))
    }
}

/// Compiles an RE2-style regex; `whole` anchors it so it must match the entire input
/// (Envoy's `safe_regex` semantics).
fn compile_regex(pattern: &str, path: &str, whole: bool) -> Result<Regex, ConfigError> {
    let build = |p: &str| regex::RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build();
    // Compile the user's own pattern first so error positions refer to their text.
    let plain = build(pattern)
        .map_err(|e| ConfigError::new(path, format!("invalid regex {pattern:?}: {}", one_line(&e.to_string()))))?;
    if !whole {
        return Ok(plain);
    }
    build(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError::new(path, format!("invalid regex {pattern:?}: {}", one_line(&e.to_string()))))
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

fn compile_destinations(list: Vec<RawRouteDestination>, path: &str) -> Result<RouteAction, ConfigError> {
    let single = list.len() == 1;
    let mut destinations = Vec::with_capacity(list.len());
    let mut total: u64 = 0;
    for (i, d) in list.into_iter().enumerate() {
        let p = format!("{path}[{i}]");
        let weight = match d.weight {
            Some(w) if w < 0 => return Err(ConfigError::new(format!("{p}.weight"), format!("must be >= 0, got {w}"))),
            Some(w) if w > i64::from(i32::MAX) => {
                return Err(ConfigError::new(format!("{p}.weight"), format!("{w} is larger than {}", i32::MAX)))
            }
            // A single destination gets all traffic whatever its weight says (Istio).
            _ if single => 1,
            Some(w) => w.unsigned_abs(),
            None => 0,
        };
        total += weight;
        let (cluster, subset) = compile_target(d.destination, &format!("{p}.destination"))?;
        let headers = match d.headers {
            Some(h) => compile_headers(h, &format!("{p}.headers"))?,
            None => HeaderPolicy::default(),
        };
        destinations.push(WeightedDestination { cluster, subset, weight, headers });
    }
    if total == 0 {
        return Err(ConfigError::new(path, "the weights sum to 0: give at least one destination a positive weight"));
    }
    Ok(RouteAction::Forward { destinations, total_weight: total })
}

fn compile_target(d: RawDestination, path: &str) -> Result<(String, Option<String>), ConfigError> {
    if d.host.trim().is_empty() {
        return Err(ConfigError::new(format!("{path}.host"), "cluster name is empty"));
    }
    check_value(&d.host, &format!("{path}.host"))?;
    if let Some(s) = &d.subset {
        if s.is_empty() {
            return Err(ConfigError::new(format!("{path}.subset"), "subset name is empty"));
        }
        check_value(s, &format!("{path}.subset"))?;
    }
    Ok((d.host, d.subset))
}

fn compile_mirror(d: RawDestination, per_million: u32, path: &str) -> Result<Mirror, ConfigError> {
    if d.subset.is_some() {
        return Err(ConfigError::new(
            format!("{path}.subset"),
            "mirrors go through http_call, which takes a cluster, not a subset; define a cluster for the mirror",
        ));
    }
    let (cluster, _) = compile_target(d, path)?;
    Ok(Mirror { cluster, per_million })
}

fn percent_per_million(v: f64, path: &str) -> Result<u32, ConfigError> {
    if !(0.0..=100.0).contains(&v) {
        return Err(ConfigError::new(path, format!("{v} is outside 0..=100 (a percentage)")));
    }
    // In range, so the cast cannot overflow.
    Ok((v * 10_000.0).round() as u32)
}

fn compile_redirect(r: RawRedirect, path: &str, matches: &[Match]) -> Result<Redirect, ConfigError> {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        return Err(ConfigError::new(path, "uri and prefixRewrite are mutually exclusive"));
    }
    if let Some(u) = &r.uri {
        check_path_value(u, &format!("{path}.uri"))?;
    }
    if let Some(u) = &r.prefix_rewrite {
        check_value(u, &format!("{path}.prefixRewrite"))?;
        let all_prefix = !matches.is_empty() && matches.iter().all(|m| matches!(m.uri, Some(StringMatch::Prefix(_))));
        if !all_prefix {
            return Err(ConfigError::new(
                format!("{path}.prefixRewrite"),
                "needs every match block to have a uri prefix match",
            ));
        }
    }
    if let Some(a) = &r.authority {
        if a.is_empty() {
            return Err(ConfigError::new(format!("{path}.authority"), "is empty"));
        }
        check_value(a, &format!("{path}.authority"))?;
    }
    if let Some(s) = &r.scheme {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.') {
            return Err(ConfigError::new(format!("{path}.scheme"), format!("{s:?} is not a URL scheme")));
        }
    }
    let port = match (r.port, r.derive_port.as_deref()) {
        (Some(_), Some(_)) => return Err(ConfigError::new(path, "port and derivePort are mutually exclusive")),
        (Some(p), None) if p == 0 || p > 65535 => {
            return Err(ConfigError::new(format!("{path}.port"), format!("{p} is not a port (1..=65535)")))
        }
        (Some(p), None) => RedirectPort::Fixed(p),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => RedirectPort::ProtocolDefault,
        (None, Some("FROM_REQUEST_PORT")) => RedirectPort::RequestPort,
        (None, Some(other)) => {
            return Err(ConfigError::new(
                format!("{path}.derivePort"),
                format!("{other:?}: expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
            ))
        }
        (None, None) => RedirectPort::Keep,
    };
    let status = r.redirect_code.unwrap_or(301);
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Err(ConfigError::new(
            format!("{path}.redirectCode"),
            format!("{status} is not a redirect code (301, 302, 303, 307, 308)"),
        ));
    }
    Ok(Redirect {
        uri: r.uri,
        prefix_rewrite: r.prefix_rewrite,
        authority: r.authority,
        scheme: r.scheme.map(|s| s.to_ascii_lowercase()),
        port,
        status,
    })
}

fn compile_direct(d: RawDirectResponse, path: &str) -> Result<DirectResponse, ConfigError> {
    if !(200..=599).contains(&d.status) {
        return Err(ConfigError::new(format!("{path}.status"), format!("{} is outside 200..=599", d.status)));
    }
    let body = match d.body {
        None => Vec::new(),
        Some(RawBody { string: Some(_), bytes: Some(_) }) => {
            return Err(ConfigError::new(format!("{path}.body"), "string and bytes are mutually exclusive"))
        }
        Some(RawBody { string: Some(s), .. }) => s.into_bytes(),
        Some(RawBody { bytes: Some(b), .. }) => {
            base64_decode(&b).ok_or_else(|| ConfigError::new(format!("{path}.body.bytes"), "is not valid base64"))?
        }
        Some(RawBody { string: None, bytes: None }) => {
            return Err(ConfigError::new(format!("{path}.body"), "needs string or bytes"))
        }
    };
    Ok(DirectResponse { status: d.status, body })
}

fn compile_rewrite(r: RawRewrite, path: &str) -> Result<Rewrite, ConfigError> {
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        return Err(ConfigError::new(path, "uri and uriRegexRewrite are mutually exclusive"));
    }
    if let Some(u) = &r.uri {
        check_value(u, &format!("{path}.uri"))?;
    }
    if let Some(a) = &r.authority {
        if a.is_empty() {
            return Err(ConfigError::new(format!("{path}.authority"), "is empty"));
        }
        check_value(a, &format!("{path}.authority"))?;
    }
    let uri_regex = match r.uri_regex_rewrite {
        Some(rr) => {
            let p = format!("{path}.uriRegexRewrite");
            let re = compile_regex(&rr.pattern, &format!("{p}.match"), false)?;
            let sub = envoy_substitution(&rr.rewrite, re.captures_len(), &format!("{p}.rewrite"))?;
            Some((re, sub))
        }
        None => None,
    };
    Ok(Rewrite { uri: r.uri, uri_regex, authority: r.authority })
}

/// Turns an RE2/Envoy substitution (`\1` for group 1, `\\` for a backslash) into the
/// `regex` crate's syntax (`${1}`, `$$` for a dollar).
fn envoy_substitution(s: &str, groups: usize, path: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    let n = d as usize - '0' as usize;
                    if n >= groups {
                        return Err(ConfigError::new(
                            path,
                            format!(
                                "\\{n} refers to a group the regex does not have ({} groups)",
                                groups.saturating_sub(1)
                            ),
                        ));
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('\\') => out.push('\\'),
                _ => {
                    return Err(ConfigError::new(path, "a backslash must be followed by a digit or another backslash"))
                }
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn compile_headers(h: RawHeaders, path: &str) -> Result<HeaderPolicy, ConfigError> {
    let ops = |o: Option<RawHeaderOps>, p: String| -> Result<HeaderOps, ConfigError> {
        let Some(o) = o else { return Ok(HeaderOps::default()) };
        let mut out = HeaderOps::default();
        for (k, v) in o.set {
            out.set.push((header_name(&k, &format!("{p}.set.{k}"))?, header_value(v, &format!("{p}.set.{k}"))?));
        }
        for (k, v) in o.add {
            out.add.push((header_name(&k, &format!("{p}.add.{k}"))?, header_value(v, &format!("{p}.add.{k}"))?));
        }
        for (i, k) in o.remove.into_iter().enumerate() {
            out.remove.push(header_name(&k, &format!("{p}.remove[{i}]"))?);
        }
        Ok(out)
    };
    Ok(HeaderPolicy {
        request: ops(h.request, format!("{path}.request"))?,
        response: ops(h.response, format!("{path}.response"))?,
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(name: &str, path: &str) -> Result<String, ConfigError> {
    if name.starts_with(':') {
        return Err(ConfigError::new(
            path,
            format!("pseudo-header {name:?} cannot be changed here (use rewrite.uri / rewrite.authority)"),
        ));
    }
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(ConfigError::new(path, format!("{name:?} is not a valid header name")));
    }
    Ok(name.to_ascii_lowercase())
}

fn header_value(v: String, path: &str) -> Result<String, ConfigError> {
    check_value(&v, path)?;
    Ok(v)
}

/// Rejects control characters (CR, LF, NUL…) that would corrupt a header or a URL.
fn check_value(v: &str, path: &str) -> Result<(), ConfigError> {
    if v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(ConfigError::new(path, format!("{v:?} contains control characters")));
    }
    Ok(())
}

fn check_path_value(v: &str, path: &str) -> Result<(), ConfigError> {
    check_value(v, path)?;
    if !v.starts_with('/') {
        return Err(ConfigError::new(path, format!("{v:?} must start with '/'")));
    }
    Ok(())
}

fn compile_cors(c: RawCors, path: &str) -> Result<Cors, ConfigError> {
    let mut allow_origins = Vec::with_capacity(c.allow_origins.len() + c.allow_origin.len());
    for (i, o) in c.allow_origins.into_iter().enumerate() {
        allow_origins.push(compile_string_match(o, &format!("{path}.allowOrigins[{i}]"), false)?);
    }
    allow_origins.extend(c.allow_origin.into_iter().map(StringMatch::Exact));
    let join = |list: Vec<String>, field: &str| -> Result<String, ConfigError> {
        for (i, v) in list.iter().enumerate() {
            check_value(v, &format!("{path}.{field}[{i}]"))?;
        }
        Ok(list.join(","))
    };
    let max_age_secs = match &c.max_age {
        Some(s) => {
            let p = format!("{path}.maxAge");
            Some(parse_duration_nanos(s).map_err(|m| ConfigError::new(&p, m))? / 1_000_000_000)
        }
        None => None,
    };
    let ignore_unmatched_preflights = match c.unmatched_preflights.as_deref() {
        None | Some("FORWARD") | Some("UNSPECIFIED") => false,
        Some("IGNORE") => true,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.unmatchedPreflights"),
                format!("{other:?}: expected FORWARD or IGNORE"),
            ))
        }
    };
    Ok(Cors {
        allow_origins,
        allow_methods: join(c.allow_methods, "allowMethods")?,
        allow_headers: join(c.allow_headers, "allowHeaders")?,
        expose_headers: join(c.expose_headers, "exposeHeaders")?,
        max_age_secs,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        ignore_unmatched_preflights,
    })
}

fn duration_ms(s: &str, path: &str) -> Result<u64, ConfigError> {
    let nanos = parse_duration_nanos(s).map_err(|m| ConfigError::new(path, m))?;
    // A positive timeout under 1ms rounds up: 0 would mean "no timeout".
    Ok(nanos.div_ceil(1_000_000))
}

/// Parses a duration as Istio YAML writes it: `2s`, `0.5s`, `100ms`, `1m30s`, `1h`
/// (units h, m, s, ms, us/µs, ns; decimals allowed). Returns nanoseconds.
pub fn parse_duration_nanos(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. \"2s\", \"0.5s\", \"100ms\", \"1m30s\"");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t == "0" {
        return Ok(0);
    }
    let mut rest = t;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if num_len == 0 {
            return Err(bad());
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.bytes().take_while(|b| !(b.is_ascii_digit() || *b == b'.')).count();
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(bad());
        }
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad())? };
        let mut value = int.checked_mul(per_unit).ok_or_else(bad)?;
        let mut scale = per_unit;
        for d in frac_part.bytes().take(18) {
            scale /= 10;
            value += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(bad)?;
        rest = after;
    }
    u64::try_from(total).map_err(|_| bad())
}

/// Standard base64 (padding optional), as protobuf JSON encodes `bytes`.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        })
    };
    let trimmed = s.trim_end_matches('=');
    if s.len() - trimmed.len() > 2 {
        return None;
    }
    let bytes = trimmed.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
