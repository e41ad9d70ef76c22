//! Header fix-ups a proxy owes both sides: hop-by-hop removal (RFC 9110 §7.6.1),
//! `x-forwarded-for`/`x-forwarded-proto`, and `x-request-id`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes hop-by-hop headers, including every header named in `Connection`.
/// `keep_upgrade` keeps `Connection: upgrade` + `Upgrade` for a protocol upgrade that
/// is being tunnelled. `te: trailers` survives (gRPC needs it end to end).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names; most requests carry none of these, most responses only
    // `connection: keep-alive`. The names found are kept on the stack (each distinct name
    // is listed once and there are `HOP_BY_HOP` of them), so the usual case allocates nothing.
    let mut present: [Option<HeaderName>; HOP_BY_HOP] = Default::default();
    for (slot, name) in present.iter_mut().zip(headers.keys().filter(|n| is_hop_by_hop(n))) {
        *slot = Some(name.clone());
    }
    if present[0].is_none() {
        return;
    }
    // Other headers `Connection` names (hop-by-hop ones go anyway): usually none.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|n| !is_hop_by_hop(n) && !is_end_to_end_essential(n))
        .collect();
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    let upgrade = keep_upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    for name in named.iter().chain(present.iter().flatten()) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
}

/// How many names [`is_hop_by_hop`] accepts.
const HOP_BY_HOP: usize = 9;

/// A hop-by-hop header by name (RFC 9110 §7.6.1 plus the de-facto `keep-alive`,
/// `proxy-connection`). One string match: most names differ in length from all of them.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// A `Connection` header may not remove these: they are end-to-end by definition.
fn is_end_to_end_essential(name: &HeaderName) -> bool {
    name == header::HOST || name == header::CONTENT_LENGTH || name == header::CONTENT_TYPE
}

/// True when the request asks for a protocol upgrade (HTTP/1.1 `Connection: upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// An IP address as a header value (for [`add_forwarded`]; made once per connection).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Appends the peer (`peer`, from [`ip_value`]) to `x-forwarded-for` and sets
/// `x-forwarded-proto`.
pub fn add_forwarded(headers: &mut HeaderMap, peer: &HeaderValue, scheme: &'static str) {
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + peer.len());
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        _ => Some(peer.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
}

/// Ensures an `x-request-id` (a UUIDv4 when absent or empty) and returns it.
pub fn ensure_request_id(headers: &mut HeaderMap, generate: bool) -> Option<HeaderValue> {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if !v.is_empty() => Some(v.clone()),
        _ if generate => {
            // A version-4 UUID from the worker's fast PRNG (seeded once from the OS): no
            // syscall per request. Request ids need uniqueness, not secrecy.
            let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid.hyphenated().encode_lower(&mut buf);
            let v = HeaderValue::from_str(id).ok()?;
            headers.insert(X_REQUEST_ID.clone(), v.clone());
            Some(v)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert_eq!(h.get("x-app").map(|v| v.as_bytes()), Some(&b"kept"[..]));
    }

    #[test]
    fn keeps_upgrade_when_tunnelling() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        assert_eq!(h.get("connection").map(|v| v.as_bytes()), Some(&b"upgrade"[..]));
    }

    #[test]
    fn hop_by_hop_names() {
        let all = [
            header::CONNECTION,
            header::PROXY_AUTHENTICATE,
            header::PROXY_AUTHORIZATION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
        ];
        for name in &all {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert_eq!(all.len(), HOP_BY_HOP);
        // All of them at once (more than one value each) are all removed.
        let mut h = HeaderMap::new();
        for name in &all {
            h.append(name.clone(), HeaderValue::from_static("a"));
            h.append(name.clone(), HeaderValue::from_static("b"));
        }
        h.insert(header::HOST, HeaderValue::from_static("h"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::HOST]);
        for name in [header::HOST, header::CONTENT_LENGTH, HeaderName::from_static("x-te")] {
            assert!(!is_hop_by_hop(&name), "{name}");
        }
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut h = map(&[("connection", "host"), ("host", "a")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("host").is_some());
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        add_forwarded(&mut h, &ip_value("127.0.0.1".parse().expect("ip")), "http");
        assert_eq!(h.get("x-forwarded-for").map(|v| v.as_bytes()), Some(&b"10.0.0.1, 127.0.0.1"[..]));
        assert_eq!(h.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"http"[..]));
        let mut h = map(&[("x-forwarded-for", " ")]);
        add_forwarded(&mut h, &ip_value("::1".parse().expect("ip")), "https");
        assert_eq!(h.get("x-forwarded-for").map(|v| v.as_bytes()), Some(&b"::1"[..]), "a blank value is replaced");
        assert_eq!(h.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"https"[..]));
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut h, true).map(|v| v.as_bytes().to_vec()), Some(b"abc".to_vec()));
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h, true).expect("generated");
        assert_eq!(id.len(), 36);
        let mut h = HeaderMap::new();
        assert!(ensure_request_id(&mut h, false).is_none());
    }
}
