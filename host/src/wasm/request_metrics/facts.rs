//! The facts of a finished request a template's labels can name, computed by the proxy
//! from the stream: what Istio's standard labels need beyond the workloads a filter
//! knows up front.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use serde::Deserialize;

use crate::wasm::properties::{flags_text, RESPONSE_FLAG};
use crate::wasm::state::StreamShared;

/// A fact a label can take its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Fact {
    /// Status sent downstream, decimal (absent: no response).
    ResponseCode,
    /// Response flags as Envoy short codes joined with `,` (absent: none).
    ResponseFlags,
    /// `grpc` for a request with `content-type: application/grpc…`, else `http`.
    RequestProtocol,
    /// `grpc-status` of a gRPC response (header or trailer), decimal.
    GrpcResponseStatus,
    /// The destination service host: the host of an Istio cluster name
    /// (`outbound|9080|v1|reviews.default.svc.cluster.local`), else the cluster name, else
    /// the request's authority without its port.
    DestinationService,
    /// The service name: `reviews` of `reviews.default.svc…`, else the whole host.
    DestinationServiceName,
    /// The namespace of a `<name>.<namespace>.svc…` host (absent for other hosts).
    DestinationServiceNamespace,
    /// `mutual_tls` when the downstream presented a verified certificate, else `none`.
    ConnectionSecurityPolicy,
    /// First URI SAN of the downstream peer's certificate.
    PeerPrincipal,
    /// First URI SAN of the listener's certificate.
    LocalPrincipal,
}

/// What the metrics of a stream need from its heads, taken while the proxy has them
/// (no copy of a head is kept for this).
#[derive(Debug, Default)]
pub(crate) struct HeadFacts {
    /// `:authority` (or `host`) as the filters left it.
    pub authority: Option<Box<str>>,
    /// A gRPC request.
    pub grpc: bool,
    /// `grpc-status` of the response (header, or trailer when it came later).
    pub grpc_status: Option<u32>,
    /// Status of the response head that went through the filters.
    pub status: Option<u16>,
}

/// Which facts a template uses (bit `1 << fact as u32`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FactSet(u16);

/// A request's values of the facts a template uses, borrowed from the stream; the key
/// of the template's series cache. Facts the template does not use are left empty, so
/// they do not split its series.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Facts<'a> {
    pub code: Option<u16>,
    pub flags: Option<Cow<'a, str>>,
    pub grpc: bool,
    pub grpc_status: Option<u32>,
    pub host: Option<&'a str>,
    pub mtls: bool,
    pub peer: Option<&'a str>,
    pub local: Option<&'a str>,
}

/// [`Facts`] kept by the series cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OwnedFacts {
    code: Option<u16>,
    flags: Option<Box<str>>,
    grpc: bool,
    grpc_status: Option<u32>,
    host: Option<Box<str>>,
    mtls: bool,
    peer: Option<Box<str>>,
    local: Option<Box<str>>,
}

// === impl HeadFacts ===

impl HeadFacts {
    /// Notes the request's authority and whether it is gRPC.
    pub fn note_request(&mut self, head: &http::request::Parts) {
        let authority = match head.uri.authority() {
            Some(a) => Some(a.as_str()),
            None => head.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()),
        };
        self.authority = authority.map(Box::from);
        self.grpc =
            head.headers.get(http::header::CONTENT_TYPE).is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
    }

    /// Notes the response status and, for gRPC, a `grpc-status` header.
    pub fn note_response(&mut self, head: &http::response::Parts) {
        self.status = Some(head.status.as_u16());
        self.grpc_status = None;
        if self.grpc {
            self.note_trailers(&head.headers);
        }
    }

    /// Notes a gRPC response's `grpc-status` trailer.
    pub fn note_trailers(&mut self, trailers: &http::HeaderMap) {
        let status = trailers.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok());
        if self.grpc && status.is_some() {
            self.grpc_status = status;
        }
    }
}

// === impl Fact ===

impl Fact {
    /// This fact's value for `f` (`None`: the request does not have it).
    pub fn value<'f>(self, f: &'f Facts<'_>) -> Option<Cow<'f, str>> {
        match self {
            Fact::ResponseCode => f.code.map(|c| c.to_string().into()),
            Fact::ResponseFlags => f.flags.as_deref().map(Cow::Borrowed),
            Fact::RequestProtocol => Some(Cow::Borrowed(if f.grpc { "grpc" } else { "http" })),
            Fact::GrpcResponseStatus => f.grpc_status.filter(|_| f.grpc).map(|s| s.to_string().into()),
            Fact::DestinationService => f.host.map(Cow::Borrowed),
            Fact::DestinationServiceName => f.host.map(|h| Cow::Borrowed(service_name_namespace(h).0)),
            Fact::DestinationServiceNamespace => f.host.and_then(|h| service_name_namespace(h).1).map(Cow::Borrowed),
            Fact::ConnectionSecurityPolicy => Some(Cow::Borrowed(if f.mtls { "mutual_tls" } else { "none" })),
            Fact::PeerPrincipal => f.peer.map(Cow::Borrowed),
            Fact::LocalPrincipal => f.local.map(Cow::Borrowed),
        }
    }
}

// === impl FactSet ===

impl FactSet {
    /// Adds `fact`.
    pub fn insert(&mut self, fact: Fact) {
        self.0 |= 1 << fact as u16;
    }

    fn has(self, fact: Fact) -> bool {
        self.0 & (1 << fact as u16) != 0
    }

    fn any(self, facts: &[Fact]) -> bool {
        facts.iter().any(|f| self.has(*f))
    }

    /// The values of these facts for the finished stream `s`.
    pub fn of<'a>(self, s: &'a StreamShared, head: &'a HeadFacts) -> Facts<'a> {
        let tls = s.info.connection.tls.as_ref();
        let mut f = Facts::default();
        if self.has(Fact::ResponseCode) {
            f.code = head.status.or(s.upstream.response_code).filter(|c| *c != 0);
        }
        if self.has(Fact::ResponseFlags) && (!s.upstream.flags.is_empty() || s.filter_state.contains_key(RESPONSE_FLAG))
        {
            f.flags = Some(flags_text(s).into()).filter(|t: &Cow<'_, str>| !t.is_empty());
        }
        // Always: gRPC label sets also carry the message counters.
        f.grpc = head.grpc;
        if self.has(Fact::GrpcResponseStatus) && f.grpc {
            f.grpc_status = head.grpc_status;
        }
        if self.any(&[Fact::DestinationService, Fact::DestinationServiceName, Fact::DestinationServiceNamespace]) {
            let cluster = match &s.upstream.cluster {
                Some(c) => Some(&**c),
                None => s.filter_state.get("wasmesh.upstream.cluster").and_then(|b| std::str::from_utf8(b).ok()),
            };
            f.host = service_host(cluster, head.authority.as_deref());
        }
        if self.has(Fact::ConnectionSecurityPolicy) {
            f.mtls = tls.is_some_and(|t| t.peer_certificate_presented);
        }
        if self.has(Fact::PeerPrincipal) {
            f.peer = tls.and_then(|t| t.peer_uri_sans.first()).map(String::as_str);
        }
        if self.has(Fact::LocalPrincipal) {
            f.local = tls.and_then(|t| t.local_uri_sans.first()).map(String::as_str);
        }
        f
    }
}

// === impl Facts ===

impl Facts<'_> {
    /// A hash of these values (the cache's; [`OwnedFacts::matches`] decides).
    pub fn hash_value(&self) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.hash(&mut h);
        h.finish()
    }

    /// An owned copy, for the cache.
    pub fn to_owned_facts(&self) -> OwnedFacts {
        let boxed = |s: &str| Box::<str>::from(s);
        OwnedFacts {
            code: self.code,
            flags: self.flags.as_deref().map(boxed),
            grpc: self.grpc,
            grpc_status: self.grpc_status,
            host: self.host.map(boxed),
            mtls: self.mtls,
            peer: self.peer.map(boxed),
            local: self.local.map(boxed),
        }
    }
}

impl Hash for Facts<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.code.hash(h);
        self.flags.as_deref().hash(h);
        (self.grpc, self.grpc_status, self.mtls).hash(h);
        self.host.hash(h);
        self.peer.hash(h);
        self.local.hash(h);
    }
}

// === impl OwnedFacts ===

impl OwnedFacts {
    /// Whether `f` holds the same values.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        self.code == f.code
            && self.grpc == f.grpc
            && self.grpc_status == f.grpc_status
            && self.mtls == f.mtls
            && self.flags.as_deref() == f.flags.as_deref()
            && self.host.as_deref() == f.host
            && self.peer.as_deref() == f.peer
            && self.local.as_deref() == f.local
    }
}

/// The destination service host (see [`Fact::DestinationService`]).
pub(crate) fn service_host<'a>(cluster: Option<&'a str>, authority: Option<&'a str>) -> Option<&'a str> {
    if let Some(c) = cluster.filter(|c| !c.is_empty()) {
        // Istio's `direction|port|subset|host` names the host last; other names are hosts.
        let mut parts = c.split('|');
        match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(_), Some(_), Some(host), None) => {
                if !host.is_empty() {
                    return Some(host);
                }
            }
            _ => return Some(c),
        }
    }
    authority.filter(|a| !a.is_empty()).map(strip_port)
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => authority,
    }
}

/// Service name and namespace of a host: `reviews.default.svc…` → (`reviews`,
/// `default`); any other host is its own name, without a namespace.
pub(crate) fn service_name_namespace(host: &str) -> (&str, Option<&str>) {
    let mut it = host.split('.');
    match (it.next(), it.next(), it.next()) {
        (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => (name, Some(ns)),
        _ => (host, None),
    }
}
