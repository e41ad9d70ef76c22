//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`) and Istio's `ns/<ns>/sa/<sa>` form.

/// An Istio workload identity: `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// Trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes service account.
    pub service_account: String,
}

/// The URI scheme prefix of every SPIFFE ID.
pub const SCHEME: &str = "spiffe://";

/// Parses an Istio-form SPIFFE ID; `None` for anything else (another path shape, or an
/// invalid SPIFFE ID).
pub fn parse(uri: &str) -> Option<SpiffeId> {
    let (td, path) = split(uri)?;
    let mut segs = path.split('/');
    match (segs.next(), segs.next(), segs.next(), segs.next(), segs.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
            Some(SpiffeId { trust_domain: td.to_string(), namespace: ns.to_string(), service_account: sa.to_string() })
        }
        _ => None,
    }
}

/// Whether `uri` is a valid SPIFFE ID of a workload (non-empty path), per the SPIFFE ID
/// spec: lowercase trust domain of `[a-z0-9._-]`, path segments of `[A-Za-z0-9._-]`,
/// none empty, `.` or `..`, no query, fragment, port or user info.
pub fn is_workload_id(uri: &str) -> bool {
    split(uri).is_some()
}

/// Istio's principal form of a SPIFFE ID (what AuthorizationPolicy `principals` and the
/// `source.principal` attribute use): the ID without `spiffe://`.
pub fn principal(uri: &str) -> Option<&str> {
    split(uri)?;
    uri.strip_prefix(SCHEME)
}

/// `(trust_domain, path without the leading '/')` of a valid workload SPIFFE ID.
fn split(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix(SCHEME)?;
    let (td, path) = rest.split_once('/')?;
    let td_ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    let seg_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    (td_ok && uri.len() <= 2048 && path.split('/').all(seg_ok)).then_some((td, path))
}

impl SpiffeId {
    /// `spiffe://td/ns/x/sa/y`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}", self.principal())
    }

    /// Istio principal form: `td/ns/x/sa/y`.
    pub fn principal(&self) -> String {
        format!("{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}
