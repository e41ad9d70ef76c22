//! Istio `AuthorizationPolicy` semantics, pure (no hostcalls): string, IP, port and path
//! matching, rules (`from` AND `to` AND every `when`), and the evaluation order
//! CUSTOM → DENY → ALLOW → default, with AUDIT never changing the decision and dry-run
//! policies evaluated in a shadow pass. (The audit record format is `wasmesh_sdk::audit`.)

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::Value;

/// What a policy does when one of its rules matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allow the request (once any ALLOW policy exists, unmatched requests are denied).
    Allow,
    /// Deny the request.
    Deny,
    /// Write an audit record; never changes the decision.
    Audit,
    /// Ask an external authorizer (`provider`) first.
    Custom,
}

/// Istio string matching: exact, `abc*` prefix, `*abc` suffix, `*` presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    /// The whole value.
    Exact(String),
    /// `abc*`.
    Prefix(String),
    /// `*abc`.
    Suffix(String),
    /// `*`: any non-empty value.
    Presence,
}

/// An IP address or CIDR block (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A literal segment.
    Literal(String),
    /// `{*}`: exactly one non-empty segment.
    One,
    /// `{**}` (last only): the rest of the path, possibly empty.
    Rest,
}

/// A `paths` entry: a string match or a `{*}`/`{**}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Exact / prefix / suffix / presence on the normalized path.
    Str(StringMatch),
    /// Segment-wise template.
    Template(Vec<Segment>),
}

/// A field and its `not*` twin: matches when (no values or any value matches) and no
/// not-value matches. An absent attribute matches no value (so it fails `values` and
/// passes `notValues`), as in Envoy RBAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<T> {
    /// `principals`, `paths`, `values`…
    pub values: Vec<T>,
    /// `notPrincipals`, `notPaths`, `notValues`…
    pub not_values: Vec<T>,
}

/// `Rule.From.source` (fields ANDed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// Peer principal (`td/ns/x/sa/y`, mTLS).
    pub principals: Field<StringMatch>,
    /// Request principal (`iss/sub`, JWT).
    pub request_principals: Field<StringMatch>,
    /// Peer namespace (from the peer principal).
    pub namespaces: Field<StringMatch>,
    /// Peer IP.
    pub ip_blocks: Field<Cidr>,
    /// Original client IP (from `x-forwarded-for` and `trustedProxies`).
    pub remote_ip_blocks: Field<Cidr>,
}

/// `Rule.To.operation` (fields ANDed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operation {
    /// Host (case-insensitive; with or without the port).
    pub hosts: Field<StringMatch>,
    /// Destination port.
    pub ports: Field<u16>,
    /// Method.
    pub methods: Field<StringMatch>,
    /// Normalized path (no query).
    pub paths: Field<PathMatch>,
}

/// The attribute a `when` condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `request.headers[name]` (name lower-cased).
    Header(String),
    /// `source.ip`.
    SourceIp,
    /// `remote.ip`.
    RemoteIp,
    /// `source.namespace`.
    SourceNamespace,
    /// `source.principal`.
    SourcePrincipal,
    /// `request.auth.principal`.
    RequestPrincipal,
    /// `request.auth.audiences`.
    Audiences,
    /// `request.auth.presenter`.
    Presenter,
    /// `request.auth.claims[a][b]…`.
    Claim(Vec<String>),
    /// `destination.ip`.
    DestinationIp,
    /// `destination.port`.
    DestinationPort,
    /// `connection.sni`.
    Sni,
}

/// Typed condition values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    /// String-valued keys.
    Str(Field<StringMatch>),
    /// `source.ip`, `remote.ip`, `destination.ip`.
    Ip(Field<Cidr>),
    /// `destination.port`.
    Port(Field<u16>),
}

/// A `when` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// What it reads.
    pub key: Key,
    /// What it expects.
    pub values: Values,
}

/// A rule: ≥1 `from` matches AND ≥1 `to` matches AND every `when` matches (empty lists match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Sources (ORed).
    pub from: Vec<Source>,
    /// Operations (ORed).
    pub to: Vec<Operation>,
    /// Conditions (ANDed).
    pub when: Vec<Condition>,
}

/// The external authorizer of a CUSTOM policy (Istio `envoyExtAuthzHttp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Cluster the check goes to.
    pub cluster: String,
    /// `:authority` of the check (default: the cluster name).
    pub authority: String,
    /// Prepended to the request path (`pathPrefix`).
    pub path_prefix: String,
    /// Check timeout in ms.
    pub timeout_ms: u32,
    /// Allow when the check fails (no answer, timeout).
    pub fail_open: bool,
    /// Status of the denial when the check fails and `fail_open` is off.
    pub status_on_error: u16,
    /// Request headers (lower-case) copied into the check besides `authorization`.
    pub include_request_headers: Vec<String>,
    /// Check-response headers (lower-case) copied onto the upstream request on allow.
    pub headers_to_upstream: Vec<String>,
    /// Check-response headers (lower-case) copied onto a denial (empty = all end-to-end ones).
    pub headers_to_downstream_on_deny: Vec<String>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Name (metrics label, audit records).
    pub name: String,
    /// Action.
    pub action: Action,
    /// CUSTOM only.
    pub provider: Option<Provider>,
    /// Evaluate and report, never enforce.
    pub dry_run: bool,
    /// Rules (ORed). An ALLOW policy with none allows nothing.
    pub rules: Vec<Rule>,
}

/// What the policies read from a request. `lib.rs` implements it with lazy hostcalls.
pub trait Request {
    /// `:method`.
    fn method(&self) -> &str;
    /// `:authority` / `host`.
    fn host(&self) -> &str;
    /// The normalized path without the query.
    fn path(&self) -> &str;
    /// A request header (name lower-case), repeated values joined with `,`.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
    /// Peer IP.
    fn source_ip(&self) -> Option<IpAddr>;
    /// Original client IP.
    fn remote_ip(&self) -> Option<IpAddr>;
    /// Local IP the request arrived on.
    fn destination_ip(&self) -> Option<IpAddr>;
    /// Local port the request arrived on.
    fn destination_port(&self) -> Option<u16>;
    /// SNI of the downstream TLS connection.
    fn sni(&self) -> Option<&str>;
    /// Peer principal without `spiffe://` (`td/ns/x/sa/y`).
    fn peer_principal(&self) -> Option<&str>;
    /// Request principal (`iss/sub`).
    fn request_principal(&self) -> Option<&str>;
    /// Verified JWT claims.
    fn claims(&self) -> Option<&Value>;
    /// Token audiences.
    fn audiences(&self) -> &[String];
    /// Token presenter (`azp`).
    fn presenter(&self) -> Option<&str>;
}

/// A policy and its rule that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Index into the policy list.
    pub policy: usize,
    /// Index into that policy's rules.
    pub rule: usize,
}

/// An ALLOW/DENY outcome; `by: None` is the default (no policy decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow {
        /// The deciding policy, if any.
        by: Option<Hit>,
    },
    /// Denied.
    Deny {
        /// The deciding policy, if any.
        by: Option<Hit>,
    },
}

/// The result of evaluating a request (before the CUSTOM check, which `lib.rs` runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The CUSTOM policy to consult first (the first matching one), if any.
    pub custom: Option<Hit>,
    /// The enforced ALLOW/DENY decision (applies once CUSTOM, if any, allowed).
    pub decision: Decision,
    /// Matching AUDIT policies.
    pub audits: Vec<Hit>,
    /// The decision had dry-run policies been enforced, when a dry-run policy took part
    /// in it or it differs from `decision`.
    pub dry_run: Option<Decision>,
}

/// Metric/audit decision labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// An AUDIT policy matched.
    Audit,
    /// A dry-run evaluation would allow.
    DryRunAllow,
    /// A dry-run evaluation would deny.
    DryRunDeny,
    /// The external authorizer allowed (ALLOW/DENY policies still apply).
    ExtAllow,
}

// === impl Action ===

impl Action {
    /// Istio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

// === impl StringMatch ===

impl StringMatch {
    /// Reads Istio's notation (`*`, `abc*`, `*abc`, `abc`).
    pub fn parse(s: &str) -> StringMatch {
        if s == "*" {
            StringMatch::Presence
        } else if let Some(p) = s.strip_suffix('*') {
            StringMatch::Prefix(p.to_string())
        } else if let Some(p) = s.strip_prefix('*') {
            StringMatch::Suffix(p.to_string())
        } else {
            StringMatch::Exact(s.to_string())
        }
    }

    /// Case-sensitive match.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(e) => v == e,
            StringMatch::Prefix(p) => v.starts_with(p.as_str()),
            StringMatch::Suffix(s) => v.ends_with(s.as_str()),
            StringMatch::Presence => !v.is_empty(),
        }
    }

    /// Lower-cases the pattern (for case-insensitive fields matched against lower-cased values).
    pub fn lowercased(self) -> StringMatch {
        match self {
            StringMatch::Exact(e) => StringMatch::Exact(e.to_ascii_lowercase()),
            StringMatch::Prefix(p) => StringMatch::Prefix(p.to_ascii_lowercase()),
            StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase()),
            StringMatch::Presence => StringMatch::Presence,
        }
    }
}

// === impl Cidr ===

impl Cidr {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, `v6`, `v6/n`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip.trim().parse().map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?} has a prefix length outside 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// True when `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                masked(u32::from(net).into(), self.prefix, 32) == masked(u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                masked(u128::from(net), self.prefix, 128) == masked(u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(v: u128, prefix: u8, bits: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(bits - prefix.min(bits));
    (v >> shift) << shift
}

/// Maps an IPv4-mapped IPv6 address to IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

// === impl PathMatch ===

impl PathMatch {
    /// True when the normalized `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(t) => template_matches(t, path),
        }
    }
}

fn template_matches(t: &[Segment], path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let mut segs = rest.split('/');
    for (i, seg) in t.iter().enumerate() {
        match seg {
            Segment::Rest => {
                debug_assert_eq!(i + 1, t.len());
                return true;
            }
            Segment::One => match segs.next() {
                Some(s) if !s.is_empty() => {}
                _ => return false,
            },
            Segment::Literal(l) => match segs.next() {
                Some(s) if s == l => {}
                _ => return false,
            },
        }
    }
    segs.next().is_none()
}

// === impl Field ===

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field { values: Vec::new(), not_values: Vec::new() }
    }
}

impl<T> Field<T> {
    /// No values and no not-values (always matches).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.not_values.is_empty()
    }

    /// Applies `f` (does this entry match the request?) with `values`/`notValues` semantics.
    pub fn check(&self, f: impl Fn(&T) -> bool) -> bool {
        (self.values.is_empty() || self.values.iter().any(&f)) && !self.not_values.iter().any(&f)
    }
}

fn check_str<'a>(field: &Field<StringMatch>, v: impl FnOnce() -> Option<&'a str>) -> bool {
    if field.is_empty() {
        return true;
    }
    let v = v();
    field.check(|m| v.is_some_and(|v| m.matches(v)))
}

fn check_ip(field: &Field<Cidr>, ip: impl FnOnce() -> Option<IpAddr>) -> bool {
    if field.is_empty() {
        return true;
    }
    let ip = ip();
    field.check(|c| ip.is_some_and(|ip| c.contains(ip)))
}

fn check_port(field: &Field<u16>, port: impl FnOnce() -> Option<u16>) -> bool {
    if field.is_empty() {
        return true;
    }
    let port = port();
    field.check(|p| port == Some(*p))
}

/// [`check_str`] of a value already read (a header, possibly joined).
fn check_str_owned(field: &Field<StringMatch>, v: Option<Cow<'_, str>>) -> bool {
    check_str(field, || v.as_deref())
}

/// Any of several values (audiences, list claims) matching.
fn check_any(field: &Field<StringMatch>, vs: &[Cow<'_, str>]) -> bool {
    field.is_empty() || field.check(|m| vs.iter().any(|v| m.matches(v)))
}

// === impl Source / Operation / Condition / Rule ===

impl Rule {
    /// Whether matching this rule can look at the request principal (`iss/sub`).
    pub fn reads_request_principal(&self) -> bool {
        self.from.iter().any(|s| !s.request_principals.is_empty())
            || self.when.iter().any(|c| c.key == Key::RequestPrincipal)
    }
}

// A field reads its request value only when it has something to match: the values
// behind most of them cost a hostcall.

impl Source {
    fn matches(&self, r: &dyn Request) -> bool {
        check_str(&self.principals, || r.peer_principal())
            && check_str(&self.request_principals, || r.request_principal())
            && check_str(&self.namespaces, || r.peer_principal().and_then(namespace_of))
            && check_ip(&self.ip_blocks, || r.source_ip())
            && check_ip(&self.remote_ip_blocks, || r.remote_ip())
    }
}

impl Operation {
    /// Paths first: they tell rules apart more often than methods do (policies list
    /// GET/POST on many paths), so a rule that does not apply fails on its first test.
    fn matches(&self, r: &dyn Request) -> bool {
        (self.paths.is_empty() || self.paths.check(|m| m.matches(r.path())))
            && check_str(&self.methods, || Some(r.method()))
            && (self.hosts.is_empty() || {
                let host = r.host().to_ascii_lowercase();
                let bare = strip_port(&host);
                self.hosts.check(|m| m.matches(&host) || m.matches(bare))
            })
            && check_port(&self.ports, || r.destination_port())
    }
}

impl Condition {
    fn matches(&self, r: &dyn Request) -> bool {
        match (&self.key, &self.values) {
            (Key::SourceIp, Values::Ip(f)) => check_ip(f, || r.source_ip()),
            (Key::RemoteIp, Values::Ip(f)) => check_ip(f, || r.remote_ip()),
            (Key::DestinationIp, Values::Ip(f)) => check_ip(f, || r.destination_ip()),
            (Key::DestinationPort, Values::Port(f)) => check_port(f, || r.destination_port()),
            (Key::Header(name), Values::Str(f)) => check_str_owned(f, r.header(name)),
            (Key::SourceNamespace, Values::Str(f)) => check_str(f, || r.peer_principal().and_then(namespace_of)),
            (Key::SourcePrincipal, Values::Str(f)) => check_str(f, || r.peer_principal()),
            (Key::RequestPrincipal, Values::Str(f)) => check_str(f, || r.request_principal()),
            (Key::Presenter, Values::Str(f)) => check_str(f, || r.presenter()),
            (Key::Sni, Values::Str(f)) => check_str(f, || r.sni()),
            (Key::Audiences, Values::Str(f)) => {
                let auds: Vec<Cow<'_, str>> = r.audiences().iter().map(|a| Cow::Borrowed(a.as_str())).collect();
                check_any(f, &auds)
            }
            (Key::Claim(path), Values::Str(f)) => check_any(f, &claim_values(r.claims(), path)),
            // Config validation pairs keys with their value kinds; a mismatch never matches.
            _ => false,
        }
    }
}

impl Rule {
    /// `to` first: method, path and host are at hand, while `from` and `when` values
    /// mostly cost a hostcall (the result is the same in any order).
    fn matches(&self, r: &dyn Request) -> bool {
        (self.to.is_empty() || self.to.iter().any(|o| o.matches(r)))
            && (self.from.is_empty() || self.from.iter().any(|s| s.matches(r)))
            && self.when.iter().all(|c| c.matches(r))
    }
}

/// The index of the first rule of `p` matching `r`.
pub fn first_match(p: &Policy, r: &dyn Request) -> Option<usize> {
    p.rules.iter().position(|rule| rule.matches(r))
}

/// Evaluates every policy (Istio's order; CUSTOM is only identified here).
pub fn evaluate(policies: &[Policy], r: &dyn Request) -> Evaluation {
    let custom = policies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.action == Action::Custom && !p.dry_run)
        .find_map(|(i, p)| first_match(p, r).map(|rule| Hit { policy: i, rule }));
    let audits = policies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.action == Action::Audit)
        .filter_map(|(i, p)| first_match(p, r).map(|rule| Hit { policy: i, rule }))
        .collect();
    let decision = decide(policies, r, false);
    let dry_run = if policies.iter().any(|p| p.dry_run && matches!(p.action, Action::Allow | Action::Deny)) {
        let shadow = decide(policies, r, true);
        let by_dry_run = match shadow {
            Decision::Allow { by: Some(h) } | Decision::Deny { by: Some(h) } => policies[h.policy].dry_run,
            _ => false,
        };
        (by_dry_run || shadow != decision).then_some(shadow)
    } else {
        None
    };
    Evaluation { custom, decision, audits, dry_run }
}

/// DENY → ALLOW → default, over enforced policies (plus dry-run ones when `with_dry_run`).
fn decide(policies: &[Policy], r: &dyn Request, with_dry_run: bool) -> Decision {
    let considered = |p: &&Policy| !p.dry_run || with_dry_run;
    for (i, p) in policies.iter().enumerate() {
        if p.action == Action::Deny && considered(&p) {
            if let Some(rule) = first_match(p, r) {
                return Decision::Deny { by: Some(Hit { policy: i, rule }) };
            }
        }
    }
    let mut any_allow = false;
    for (i, p) in policies.iter().enumerate() {
        if p.action == Action::Allow && considered(&p) {
            any_allow = true;
            if let Some(rule) = first_match(p, r) {
                return Decision::Allow { by: Some(Hit { policy: i, rule }) };
            }
        }
    }
    if any_allow {
        Decision::Deny { by: None }
    } else {
        Decision::Allow { by: None }
    }
}

// === helpers ===

/// The namespace in `td/ns/<ns>/sa/<sa>` (or the same with `spiffe://`).
pub fn namespace_of(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    while let Some(p) = parts.next() {
        if p == "ns" {
            return parts.next().filter(|n| !n.is_empty());
        }
    }
    None
}

/// Drops `spiffe://` (Istio policies name principals without it).
pub fn principal_from_uri(uri: &str) -> Option<&str> {
    let p = uri.strip_prefix("spiffe://").unwrap_or(uri);
    (!p.is_empty()).then_some(p)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // `[v6]:port`
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// The values of claim `path` (`[a][b]` = nested): a string, each string of a list, or a
/// number/boolean in its JSON text.
pub fn claim_values<'a>(claims: Option<&'a Value>, path: &[String]) -> Vec<Cow<'a, str>> {
    let mut v = match claims {
        Some(c) => c,
        None => return Vec::new(),
    };
    for p in path {
        match v.get(p.as_str()) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    match v {
        Value::String(s) => vec![Cow::Borrowed(s.as_str())],
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn scalar(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

/// Audiences from the `request.auth.audiences` property (a JSON list, else text split on
/// `,`), else from the `aud` claim.
pub fn audiences_from<'a>(raw: Option<&[u8]>, claims: impl FnOnce() -> Option<&'a Value>) -> Vec<String> {
    if let Some(b) = raw.filter(|b| !b.is_empty()) {
        if let Ok(Value::Array(a)) = serde_json::from_slice::<Value>(b) {
            return a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        }
        return String::from_utf8_lossy(b)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    claim_values(claims(), &["aud".to_string()]).into_iter().map(Cow::into_owned).collect()
}

/// The request principal: the property, else `iss/sub` from the claims.
pub fn request_principal_from<'a>(raw: Option<&[u8]>, claims: impl FnOnce() -> Option<&'a Value>) -> Option<String> {
    if let Some(b) = raw.filter(|b| !b.is_empty()) {
        return Some(String::from_utf8_lossy(b).into_owned());
    }
    let c = claims()?;
    Some(format!("{}/{}", c.get("iss")?.as_str()?, c.get("sub")?.as_str()?))
}

/// The original client IP: the `x-forwarded-for` entry `trusted` hops left of the peer
/// (the peer is appended when the list does not already end with it); with fewer
/// entries, the leftmost. `trusted = 0` (or no header) gives the peer itself.
pub fn remote_ip(xff: Option<&str>, peer: Option<IpAddr>, trusted: u32) -> Option<IpAddr> {
    let mut hops: Vec<Option<IpAddr>> =
        xff.map(|x| x.split(',').map(|h| h.trim().parse::<IpAddr>().ok().map(canonical)).collect()).unwrap_or_default();
    let peer = peer.map(canonical);
    if peer.is_some() && hops.last().copied().flatten() != peer {
        hops.push(peer);
    }
    if hops.is_empty() {
        return None;
    }
    let idx = hops.len().saturating_sub(1 + trusted as usize);
    // A malformed entry where the client should be: no remote IP (fails remoteIpBlocks).
    hops[idx]
}

impl Label {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Allow => "allow",
            Label::Deny => "deny",
            Label::Audit => "audit",
            Label::DryRunAllow => "dry_run_allow",
            Label::DryRunDeny => "dry_run_deny",
            Label::ExtAllow => "ext_allow",
        }
    }

    /// Every label (metrics are defined for all at configure time).
    pub const ALL: [Label; 6] =
        [Label::Allow, Label::Deny, Label::Audit, Label::DryRunAllow, Label::DryRunDeny, Label::ExtAllow];
}

#[cfg(test)]
mod tests;
