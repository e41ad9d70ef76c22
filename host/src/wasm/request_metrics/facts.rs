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

/// A request's values of the facts a template uses, borrowed from the stream (the series
/// cache keeps them as `Facts<'static>`); the key of the template's series cache. Facts
/// the template does not use are left empty, so they do not split its series.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Facts<'a> {
    pub code: Option<u16>,
    pub flags: Option<Cow<'a, str>>,
    pub grpc: bool,
    pub grpc_status: Option<u32>,
    pub host: Option<Cow<'a, str>>,
    pub mtls: bool,
    pub peer: Option<Cow<'a, str>>,
    pub local: Option<Cow<'a, str>>,
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
            Fact::DestinationService => f.host.as_deref().map(Cow::Borrowed),
            Fact::DestinationServiceName => f.host.as_deref().map(|h| Cow::Borrowed(service_name_namespace(h).0)),
            Fact::DestinationServiceNamespace => {
                f.host.as_deref().and_then(|h| service_name_namespace(h).1).map(Cow::Borrowed)
            }
            Fact::ConnectionSecurityPolicy => Some(Cow::Borrowed(if f.mtls { "mutual_tls" } else { "none" })),
            Fact::PeerPrincipal => f.peer.as_deref().map(Cow::Borrowed),
            Fact::LocalPrincipal => f.local.as_deref().map(Cow::Borrowed),
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
            f.host = service_host(cluster, head.authority.as_deref()).map(Cow::Borrowed);
        }
        if self.has(Fact::ConnectionSecurityPolicy) {
            f.mtls = tls.is_some_and(|t| t.peer_certificate_presented);
        }
        if self.has(Fact::PeerPrincipal) {
            f.peer = tls.and_then(|t| t.peer_uri_sans.first()).map(|p| Cow::Borrowed(p.as_str()));
        }
        if self.has(Fact::LocalPrincipal) {
            f.local = tls.and_then(|t| t.local_uri_sans.first()).map(|l| Cow::Borrowed(l.as_str()));
        }
        f
    }
}

// === impl Facts ===

impl Facts<'_> {
    /// A hash of these values (the cache's; equality decides).
    pub fn hash_value(&self) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.hash(&mut h);
        h.finish()
    }

    /// An owned copy, for the cache.
    pub fn to_static(&self) -> Facts<'static> {
        let owned = |s: &Option<Cow<'_, str>>| s.as_deref().map(|s| Cow::Owned(s.to_owned()));
        Facts {
            code: self.code,
            flags: owned(&self.flags),
            grpc: self.grpc,
            grpc_status: self.grpc_status,
            host: owned(&self.host),
            mtls: self.mtls,
            peer: owned(&self.peer),
            local: owned(&self.local),
        }
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
