//! Routing decisions, pure (no hostcalls): which rule matches a request, which weighted
//! destination it goes to, the rewritten path, the redirect location, CORS answers.
//! `lib.rs` gathers the request, calls [`plan`], and carries the [`Plan`] out.

use std::borrow::Cow;

use crate::config::{
    Cors, Match, Mirror, Redirect, RedirectPort, Rewrite, Route, RouteAction, RouterConfig, StringMatch,
    WeightedDestination,
};

/// The parts of a request the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:path`, query string included.
    pub path: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// `:authority` (or `host`).
    pub authority: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// All request headers, pseudo-headers included (names lowercase).
    pub headers: &'a [(String, String)],
    /// The listener port (`destination.port`), when read.
    pub port: Option<u32>,
}

impl<'a> Request<'a> {
    /// Builds the view from the request headers; `port` is the listener port if known.
    pub fn from_headers(headers: &'a [(String, String)], port: Option<u32>) -> Self {
        let mut req = Request { path: "/", method: "", authority: "", scheme: "http", headers, port };
        let mut host = None;
        for (k, v) in headers {
            match k.as_str() {
                ":path" => req.path = v,
                ":method" => req.method = v,
                ":authority" => req.authority = v,
                ":scheme" => req.scheme = v,
                _ if host.is_none() && k.eq_ignore_ascii_case("host") => host = Some(v.as_str()),
                _ => {}
            }
        }
        if req.authority.is_empty() {
            req.authority = host.unwrap_or("");
        }
        req
    }

    /// The value of header `name`; repeated headers are joined with `,` (as Envoy's
    /// header matcher sees them).
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        let mut found: Option<Cow<'a, str>> = None;
        for (k, v) in self.headers {
            if k.eq_ignore_ascii_case(name) {
                found = Some(match found {
                    None => Cow::Borrowed(v.as_str()),
                    Some(prev) => Cow::Owned(format!("{prev},{v}")),
                });
            }
        }
        found
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &'a str {
        split_query(self.path).0
    }

    /// The value of query parameter `name` (`?name` alone gives `""`), not URL-decoded.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        let q = split_query(self.path).1?;
        q.split('&').find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if kv == name => Some(""),
            _ => None,
        })
    }
}

fn split_query(path: &str) -> (&str, Option<&str>) {
    match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    }
}

// ---------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------

/// Whether `value` satisfies `m` (`Present` is satisfied by any value).
pub fn string_matches(m: &StringMatch, value: &str) -> bool {
    match m {
        StringMatch::Exact(s) => value == s,
        StringMatch::Prefix(p) => value.starts_with(p.as_str()),
        StringMatch::Regex(re) => re.is_match(value),
        StringMatch::Present => true,
    }
}

fn uri_matches(m: &StringMatch, ignore_case: bool, req: &Request<'_>) -> bool {
    match m {
        // Envoy: `path` and `safe_regex` look at the path without the query string;
        // `prefix` looks at the whole `:path`.
        StringMatch::Exact(s) if ignore_case => req.path_only().eq_ignore_ascii_case(s),
        StringMatch::Exact(s) => req.path_only() == s,
        StringMatch::Prefix(p) if ignore_case => {
            req.path.len() >= p.len() && req.path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        }
        StringMatch::Prefix(p) => req.path.starts_with(p.as_str()),
        StringMatch::Regex(re) => re.is_match(req.path_only()),
        StringMatch::Present => true,
    }
}

/// Whether one `match` block holds for `req` (all its conditions ANDed).
pub fn match_block(m: &Match, req: &Request<'_>) -> bool {
    if !m.source_selected {
        return false;
    }
    if let Some(u) = &m.uri {
        if !uri_matches(u, m.ignore_uri_case, req) {
            return false;
        }
    }
    if let Some(p) = m.port {
        if req.port != Some(p) {
            return false;
        }
    }
    if let Some(s) = &m.method {
        if !string_matches(s, req.method) {
            return false;
        }
    }
    if let Some(s) = &m.authority {
        if !string_matches(s, req.authority) {
            return false;
        }
    }
    if let Some(s) = &m.scheme {
        if !string_matches(s, req.scheme) {
            return false;
        }
    }
    for (name, sm) in &m.headers {
        match req.header(name) {
            Some(v) if string_matches(sm, &v) => {}
            _ => return false,
        }
    }
    for (name, sm) in &m.without_headers {
        if let Some(v) = req.header(name) {
            if string_matches(sm, &v) {
                return false;
            }
        }
    }
    for (name, sm) in &m.query_params {
        match req.query_param(name) {
            Some(v) if string_matches(sm, v) => {}
            _ => return false,
        }
    }
    true
}

/// The first rule that matches, with the `match` block that did (`None` when the rule
/// has no `match` and so takes everything).
pub fn find_route<'c>(cfg: &'c RouterConfig, req: &Request<'_>) -> Option<(usize, Option<&'c Match>)> {
    for (i, route) in cfg.routes.iter().enumerate() {
        if route.matches.is_empty() {
            return Some((i, None));
        }
        if let Some(m) = route.matches.iter().find(|m| match_block(m, req)) {
            return Some((i, Some(m)));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Weighted choice
// ---------------------------------------------------------------------------------------

/// A small, fast PRNG (xorshift64*), seeded once per VM.
#[derive(Debug, Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (any seed works, 0 included).
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads a weak seed (a clock) over all bits; never 0 for xorshift.
        let z = wasmesh_sdk::rng::SplitMix64::new(seed).next_u64();
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `per_million / 1_000_000`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        per_million >= 1_000_000 || (per_million > 0 && (self.next_u64() % 1_000_000) < u64::from(per_million))
    }
}

/// Index of the destination that `r` (a random number) falls on, by weight.
pub fn pick_weighted(destinations: &[WeightedDestination], total_weight: u64, r: u64) -> usize {
    if destinations.len() <= 1 || total_weight == 0 {
        return 0;
    }
    let mut x = r % total_weight;
    for (i, d) in destinations.iter().enumerate() {
        if x < d.weight {
            return i;
        }
        x -= d.weight;
    }
    destinations.len() - 1
}

// ---------------------------------------------------------------------------------------
// Rewrites and redirects
// ---------------------------------------------------------------------------------------

/// The part of the path a prefix rewrite replaces, by the `match` block that matched
/// (Envoy/Istio: the prefix for a prefix match, the whole path for exact and regex, and
/// `/` when the block has no uri condition).
fn matched_len(matched: Option<&Match>, req: &Request<'_>) -> usize {
    match matched.and_then(|m| m.uri.as_ref()) {
        Some(StringMatch::Prefix(p)) => p.len().min(req.path.len()),
        Some(StringMatch::Exact(_)) | Some(StringMatch::Regex(_)) => req.path_only().len(),
        Some(StringMatch::Present) | None => usize::from(req.path.starts_with('/')),
    }
}

fn replace_prefix(req: &Request<'_>, len: usize, replacement: &str) -> String {
    // `len` always ends on a char boundary (a matched prefix, the query split or 1);
    // `get` keeps a broken invariant from ever panicking.
    let rest = req.path.get(len..).unwrap_or("");
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    out.push_str(rest);
    out
}

/// The new `:path` after `rewrite`, or `None` when the rewrite does not touch the path.
pub fn rewrite_path(rw: &Rewrite, matched: Option<&Match>, req: &Request<'_>) -> Option<String> {
    if let Some(uri) = &rw.uri {
        return Some(replace_prefix(req, matched_len(matched, req), uri));
    }
    if let Some((re, sub)) = &rw.uri_regex {
        let (path, query) = split_query(req.path);
        let mut out = re.replace_all(path, sub.as_str()).into_owned();
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        return Some(out);
    }
    None
}

fn split_host_port(authority: &str) -> (&str, Option<u32>) {
    if authority.starts_with('[') {
        // [v6]:port
        if let Some(end) = authority.find(']') {
            let host = &authority[..=end];
            let port = authority[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

fn default_port(scheme: &str) -> Option<u32> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// The `location` of a redirect.
pub fn redirect_location(r: &Redirect, matched: Option<&Match>, req: &Request<'_>) -> String {
    let path: Cow<'_, str> = if let Some(uri) = &r.uri {
        match split_query(req.path).1 {
            // The request's query string is kept unless the new uri brings its own.
            Some(q) if !uri.contains('?') => Cow::Owned(format!("{uri}?{q}")),
            _ => Cow::Borrowed(uri.as_str()),
        }
    } else if let Some(prefix) = &r.prefix_rewrite {
        Cow::Owned(replace_prefix(req, matched_len(matched, req), prefix))
    } else {
        Cow::Borrowed(req.path)
    };
    let req_scheme = if req.scheme.is_empty() { "http" } else { req.scheme };
    let scheme = r.scheme.as_deref().unwrap_or(req_scheme);
    let (host, authority_port) = split_host_port(r.authority.as_deref().unwrap_or(req.authority));
    let port = match r.port {
        RedirectPort::Fixed(p) => Some(p),
        RedirectPort::ProtocolDefault => None,
        RedirectPort::RequestPort => req.port.or(split_host_port(req.authority).1),
        RedirectPort::Keep => match authority_port {
            // Switching scheme from a default port (http://h:80 → https) drops the port.
            Some(p) if scheme != req_scheme && default_port(req_scheme) == Some(p) => None,
            p => p,
        },
    };
    let port = port.filter(|p| default_port(scheme) != Some(*p));
    match port {
        Some(p) => format!("{scheme}://{host}:{p}{path}"),
        None => format!("{scheme}://{host}{path}"),
    }
}

// ---------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------

/// Whether `origin` is allowed by the policy (`exact: "*"` allows every origin).
pub fn origin_allowed(cors: &Cors, origin: &str) -> bool {
    cors.allow_origins.iter().any(|m| match m {
        StringMatch::Exact(s) if s == "*" => true,
        m => string_matches(m, origin),
    })
}

/// Headers answering an allowed preflight.
pub fn preflight_headers(cors: &Cors, origin: &str) -> Vec<(String, String)> {
    let mut h = vec![("access-control-allow-origin".to_string(), origin.to_string())];
    if !cors.allow_methods.is_empty() {
        h.push(("access-control-allow-methods".into(), cors.allow_methods.clone()));
    }
    if !cors.allow_headers.is_empty() {
        h.push(("access-control-allow-headers".into(), cors.allow_headers.clone()));
    }
    if let Some(age) = cors.max_age_secs {
        h.push(("access-control-max-age".into(), age.to_string()));
    }
    if cors.allow_credentials {
        h.push(("access-control-allow-credentials".into(), "true".into()));
    }
    h
}

/// Headers added to the response of an actual (non-preflight) request from an allowed
/// origin.
pub fn actual_response_headers(cors: &Cors, origin: &str) -> Vec<(String, String)> {
    let mut h = vec![("access-control-allow-origin".to_string(), origin.to_string())];
    if cors.allow_credentials {
        h.push(("access-control-allow-credentials".into(), "true".into()));
    }
    if !cors.expose_headers.is_empty() {
        h.push(("access-control-expose-headers".into(), cors.expose_headers.clone()));
    }
    h
}

/// What CORS asks of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum CorsDecision {
    /// Not a CORS request (no `origin`), or the origin is not allowed on an actual request.
    None,
    /// A preflight from an allowed origin: answer 200 locally with these headers.
    Preflight(Vec<(String, String)>),
    /// A preflight from an origin not allowed, with `unmatchedPreflights: IGNORE`:
    /// answer 200 locally without CORS headers.
    PreflightRefused,
    /// An actual request from an allowed origin: echo it on the response.
    Actual(String),
}

/// Applies `cors` to `req`.
pub fn cors_decision(cors: &Cors, req: &Request<'_>) -> CorsDecision {
    let Some(origin) = req.header("origin") else { return CorsDecision::None };
    let allowed = origin_allowed(cors, &origin);
    let preflight = req.method == "OPTIONS" && req.header("access-control-request-method").is_some();
    match (preflight, allowed) {
        (true, true) => CorsDecision::Preflight(preflight_headers(cors, &origin)),
        (true, false) if cors.ignore_unmatched_preflights => CorsDecision::PreflightRefused,
        (false, true) => CorsDecision::Actual(origin.into_owned()),
        _ => CorsDecision::None,
    }
}

// ---------------------------------------------------------------------------------------
// The whole decision
// ---------------------------------------------------------------------------------------

/// What to do with a request.
#[derive(Debug)]
pub enum Plan<'c> {
    /// No rule matched: leave the request alone (listener default cluster).
    Pass,
    /// No rule matched and the router is `strict`: local 404 with flag `NR`.
    NotFound,
    /// Answer locally (redirect, direct response, CORS preflight).
    Local(LocalReply<'c>),
    /// Forward upstream.
    Forward(Forward<'c>),
}

/// A locally generated response.
#[derive(Debug)]
pub struct LocalReply<'c> {
    /// The matched rule.
    pub route: &'c Route,
    /// Status code.
    pub status: u32,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: &'c [u8],
}

/// A request forwarded upstream.
#[derive(Debug)]
pub struct Forward<'c> {
    /// Index of the matched rule in `routes`.
    pub route_index: usize,
    /// The matched rule.
    pub route: &'c Route,
    /// Index of the chosen destination within the rule's `route`.
    pub destination_index: usize,
    /// The chosen destination.
    pub destination: &'c WeightedDestination,
    /// The rewritten `:path`, if any.
    pub path: Option<String>,
    /// The rewritten `:authority`, if any.
    pub authority: Option<&'c str>,
    /// Mirrors chosen for this request (by their percentages).
    pub mirrors: Vec<&'c Mirror>,
    /// The allowed CORS origin to echo on the response.
    pub cors_origin: Option<String>,
}

fn route_response_headers(route: &Route, into: &mut Vec<(String, String)>) {
    let ops = &route.headers.response;
    for (k, v) in &ops.set {
        into.retain(|(n, _)| n != k);
        into.push((k.clone(), v.clone()));
    }
    for (k, v) in &ops.add {
        into.push((k.clone(), v.clone()));
    }
}

/// Decides what happens to `req`: the first matching rule and everything it implies.
pub fn plan<'c>(cfg: &'c RouterConfig, req: &Request<'_>, rng: &mut Rng) -> Plan<'c> {
    let Some((route_index, matched)) = find_route(cfg, req) else {
        return if cfg.strict { Plan::NotFound } else { Plan::Pass };
    };
    let route = &cfg.routes[route_index];
    let mut cors_origin = None;
    if let Some(cors) = &route.cors {
        match cors_decision(cors, req) {
            CorsDecision::Preflight(headers) => {
                return Plan::Local(LocalReply { route, status: 200, headers, body: &[] })
            }
            CorsDecision::PreflightRefused => {
                return Plan::Local(LocalReply { route, status: 200, headers: Vec::new(), body: &[] })
            }
            CorsDecision::Actual(origin) => cors_origin = Some(origin),
            CorsDecision::None => {}
        }
    }
    let cors_headers = |h: &mut Vec<(String, String)>| {
        if let (Some(cors), Some(o)) = (&route.cors, &cors_origin) {
            h.extend(actual_response_headers(cors, o));
        }
    };
    match &route.action {
        RouteAction::Redirect(r) => {
            let mut headers = vec![("location".to_string(), redirect_location(r, matched, req))];
            route_response_headers(route, &mut headers);
            cors_headers(&mut headers);
            Plan::Local(LocalReply { route, status: r.status, headers, body: &[] })
        }
        RouteAction::Direct(d) => {
            // No default content-type: hosts add `text/plain` to a local reply with a body
            // (Envoy and wasmesh alike) unless the filter gives one.
            let mut headers = Vec::new();
            route_response_headers(route, &mut headers);
            cors_headers(&mut headers);
            Plan::Local(LocalReply { route, status: d.status, headers, body: &d.body })
        }
        RouteAction::Forward { destinations, total_weight } => {
            let destination_index =
                if destinations.len() > 1 { pick_weighted(destinations, *total_weight, rng.next_u64()) } else { 0 };
            let (path, authority) = match &route.rewrite {
                Some(rw) => (rewrite_path(rw, matched, req), rw.authority.as_deref()),
                None => (None, None),
            };
            let mirrors = route.mirrors.iter().filter(|m| rng.chance(m.per_million)).collect();
            Plan::Forward(Forward {
                route_index,
                route,
                destination_index,
                destination: &destinations[destination_index],
                path,
                authority,
                mirrors,
                cors_origin,
            })
        }
    }
}

/// The authority a mirror copy carries: the request's host with `-shadow` appended
/// (before the port), as Envoy does.
pub fn shadow_authority(authority: &str) -> String {
    let (host, port) = split_host_port(authority);
    match port {
        Some(p) => format!("{host}-shadow:{p}"),
        None => format!("{host}-shadow"),
    }
}

/// Decodes a `destination.port` property value: Envoy's 8-byte little-endian integer, or
/// decimal text.
pub fn decode_port(bytes: &[u8]) -> Option<u32> {
    if let Ok(b) = <[u8; 8]>::try_from(bytes) {
        return u32::try_from(u64::from_le_bytes(b)).ok();
    }
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests;
