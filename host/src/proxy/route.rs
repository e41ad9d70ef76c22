//! Where a request goes: the filters' routing intents (`wasmesh.*` properties) over the
//! listener's default, and the consistent-hash key a request provides.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::HashKey;
use crate::generation::ListenerSpec;
use crate::wasm::HttpStream;

/// Property a filter sets to pick the cluster.
pub const PROP_CLUSTER: &str = "wasmesh.upstream.cluster";
/// Property a filter sets to pick the subset.
pub const PROP_SUBSET: &str = "wasmesh.upstream.subset";
/// Property a filter sets to give the consistent-hash key.
pub const PROP_HASH_KEY: &str = "wasmesh.upstream.hash_key";
/// Property a filter sets to override the route timeout (milliseconds, decimal text).
pub const PROP_TIMEOUT_MS: &str = "wasmesh.route.timeout_ms";

/// Property a filter sets to keep this many request-body bytes for a retry.
pub const PROP_BUFFER_FOR_RETRY: &str = "wasmesh.request.buffer_for_retry";
/// Property a filter sets for the timeout of each attempt (milliseconds).
pub const PROP_PER_TRY_TIMEOUT_MS: &str = "wasmesh.upstream.per_try_timeout_ms";

/// The routing decision for one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Target cluster, if any.
    pub cluster: Option<Arc<str>>,
    /// Subset within it.
    pub subset: Option<String>,
    /// Consistent-hash key.
    pub hash_key: Option<Vec<u8>>,
    /// Route timeout set by a filter: `None` keeps the cluster's `request_timeout`.
    pub timeout: Option<RouteTimeout>,
}

/// A filter's route timeout (`wasmesh.route.timeout_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTimeout {
    /// `0`: no timeout at all (Istio's `timeout: 0s`).
    Disabled,
    /// The whole exchange, retries included, ends after this long.
    After(Duration),
}

impl RouteTimeout {
    /// The timeout of a request with this override and the cluster's default.
    pub fn apply(override_: Option<RouteTimeout>, cluster: Option<Duration>) -> Option<Duration> {
        match override_ {
            None => cluster,
            Some(RouteTimeout::Disabled) => None,
            Some(RouteTimeout::After(d)) => Some(d),
        }
    }
}

/// Reads the filters' intents, falling back to the listener's default cluster.
pub fn decide(stream: Option<&HttpStream>, listener: &ListenerSpec) -> Decision {
    let text = |name: &str| {
        stream.and_then(|s| s.property(name)).and_then(|b| String::from_utf8(b.to_vec()).ok()).filter(|s| !s.is_empty())
    };
    let default = listener.default_cluster.as_ref().map(|d| &d.name);
    let cluster = match stream {
        Some(s) => s.with_property(PROP_CLUSTER, |v| {
            match v.and_then(|b| std::str::from_utf8(b).ok()).filter(|c| !c.is_empty()) {
                // Most requests go where the listener sends them: its name is shared.
                Some(c) if default.is_some_and(|d| **d == *c) => default.cloned(),
                Some(c) => Some(Arc::from(c)),
                None => default.cloned(),
            }
        }),
        None => default.cloned(),
    };
    Decision {
        cluster,
        subset: text(PROP_SUBSET),
        hash_key: stream.and_then(|s| s.property(PROP_HASH_KEY)).map(|b| b.to_vec()),
        timeout: text(PROP_TIMEOUT_MS).and_then(|t| t.trim().parse::<u64>().ok()).map(|ms| match ms {
            0 => RouteTimeout::Disabled,
            ms => RouteTimeout::After(Duration::from_millis(ms)),
        }),
    }
}

/// Decimal text property as a number.
fn number(stream: &HttpStream, name: &str) -> Option<u64> {
    let b = stream.property(name)?;
    std::str::from_utf8(&b).ok()?.trim().parse().ok()
}

/// Request-body bytes to keep for replay (0: retries impossible).
pub fn retry_buffer_bytes(stream: &HttpStream) -> u64 {
    number(stream, PROP_BUFFER_FOR_RETRY).unwrap_or(0)
}

/// The per-try timeout a filter asked for.
pub fn per_try_timeout(stream: &HttpStream) -> Option<Duration> {
    number(stream, PROP_PER_TRY_TIMEOUT_MS).filter(|ms| *ms > 0).map(Duration::from_millis)
}

/// A fresh affinity cookie value and its `Set-Cookie` header.
pub fn new_affinity_cookie(
    name: &str,
    settings: &crate::config::CookieSettings,
) -> (String, Option<http::HeaderValue>) {
    let value = uuid::Uuid::new_v4().simple().to_string();
    let mut header = format!("{name}={value}; Path={}; HttpOnly", settings.path);
    if settings.ttl.0 > 0 {
        header.push_str(&format!("; Max-Age={}", settings.ttl.0.div_ceil(1000)));
    }
    let header = http::HeaderValue::from_str(&header).ok();
    (value, header)
}

/// The consistent-hash key the request carries for `source`, if present.
pub fn hash_key_from_request(source: &HashKey, parts: &http::request::Parts, peer: IpAddr) -> Option<Vec<u8>> {
    match source {
        HashKey::SourceIp => Some(peer.to_string().into_bytes()),
        HashKey::Header(name) => parts.headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()),
        HashKey::QueryParameter(name) => parts.uri.query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| v.as_bytes().to_vec())
            })
        }),
        HashKey::Cookie(name) => parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn route_timeouts_override_disable_or_keep_the_cluster_default() {
        let cluster = Some(Duration::from_secs(15));
        let two = Duration::from_secs(2);
        assert_eq!(RouteTimeout::apply(None, cluster), cluster);
        assert_eq!(RouteTimeout::apply(Some(RouteTimeout::After(two)), cluster), Some(two));
        assert_eq!(RouteTimeout::apply(Some(RouteTimeout::Disabled), cluster), None);
        assert_eq!(RouteTimeout::apply(Some(RouteTimeout::After(two)), None), Some(two));
    }

    #[test]
    fn hash_key_sources() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let p = parts("/a?user=bob&x=1", &[("x-user", "alice"), ("cookie", "a=1; session=s42")]);
        assert_eq!(hash_key_from_request(&HashKey::SourceIp, &p, ip), Some(b"10.1.2.3".to_vec()));
        assert_eq!(hash_key_from_request(&HashKey::Header("x-user".into()), &p, ip), Some(b"alice".to_vec()));
        assert_eq!(hash_key_from_request(&HashKey::QueryParameter("user".into()), &p, ip), Some(b"bob".to_vec()));
        assert_eq!(hash_key_from_request(&HashKey::Cookie("session".into()), &p, ip), Some(b"s42".to_vec()));
        assert_eq!(hash_key_from_request(&HashKey::Cookie("nope".into()), &p, ip), None);
    }
}
