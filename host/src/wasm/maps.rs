//! Header maps as filters see them: `http` request/response heads with the pseudo-headers
//! `:method :path :authority :scheme :status` mapped onto them, and the proxy-wasm pairs
//! serialization (count, lengths, then `key\0value\0` entries).

use std::cell::RefCell;

use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderMap;
use rustc_hash::FxHashMap;

/// Most header names [`name`] remembers per thread.
const MAX_REMEMBERED_NAMES: usize = 256;

thread_local! {
    /// Names filters set or remove, as given, parsed once: a name outside the standard
    /// set costs a validation pass and an allocation (and its free) per parse otherwise.
    static NAMES: RefCell<FxHashMap<Box<str>, HeaderName>> = RefCell::new(FxHashMap::default());
}

/// A header map a hostcall works on.
pub(crate) enum MapRef<'a> {
    /// Request head; `tls` picks the default `:scheme`.
    Request(&'a mut http::request::Parts, bool),
    /// Response head.
    Response(&'a mut http::response::Parts),
    /// Trailers or an http_call's maps.
    Plain(&'a mut HeaderMap),
}

// === impl MapRef ===

impl MapRef<'_> {
    /// Every entry, pseudo-headers first; repeated headers appear once per value
    /// (borrowed from the head).
    pub fn pairs(&self) -> Vec<(&str, &[u8])> {
        let mut out = Vec::with_capacity(self.headers().len() + 4);
        let headers = match self {
            MapRef::Request(p, tls) => {
                for k in [":authority", ":path", ":method", ":scheme"] {
                    if let Some(v) = request_pseudo(p, *tls, k) {
                        out.push((k, v));
                    }
                }
                &p.headers
            }
            MapRef::Response(p) => {
                out.push((":status", p.status.as_str().as_bytes()));
                &p.headers
            }
            MapRef::Plain(h) => &**h,
        };
        let skip_host = matches!(self, MapRef::Request(..));
        for (k, v) in headers {
            if skip_host && k == HOST {
                continue;
            }
            out.push((k.as_str(), v.as_bytes()));
        }
        out
    }

    /// The first value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let key: std::borrow::Cow<'_, str> =
            if key.bytes().any(|b| b.is_ascii_uppercase()) { key.to_ascii_lowercase().into() } else { key.into() };
        match self {
            MapRef::Request(p, tls) if key.starts_with(':') => request_pseudo(p, *tls, &key),
            MapRef::Response(p) if key == ":status" => Some(p.status.as_str().as_bytes()),
            MapRef::Response(_) if key.starts_with(':') => None,
            _ => self.headers().get(&*key).map(|v| v.as_bytes()),
        }
    }

    /// Appends a value (pseudo-headers are set instead).
    pub fn add(&mut self, key: &str, value: &[u8]) {
        if key.starts_with(':') {
            return self.set_pseudo(key, value);
        }
        if let Some((k, v)) = header(key, value) {
            self.headers_mut().append(k, v);
        }
    }

    /// Sets a value, replacing every existing one.
    pub fn replace(&mut self, key: &str, value: &[u8]) {
        if key.starts_with(':') {
            return self.set_pseudo(key, value);
        }
        if let Some((k, v)) = header(key, value) {
            self.headers_mut().insert(k, v);
        }
    }

    /// Removes every value of `key` (pseudo-headers cannot be removed).
    pub fn remove(&mut self, key: &str) {
        if key.starts_with(':') {
            return;
        }
        if let Some(k) = name(key) {
            self.headers_mut().remove(k);
        }
    }

    /// Replaces the whole map (pseudo-headers not given keep their value).
    pub fn set_pairs(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        let keep_host = match self {
            MapRef::Request(p, _) => p.headers.get(HOST).cloned(),
            _ => None,
        };
        self.headers_mut().clear();
        if let Some(h) = keep_host {
            self.headers_mut().insert(HOST, h);
        }
        for (k, v) in pairs {
            let key = super::text::lossy(&k);
            self.add(&key, &v);
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            MapRef::Request(p, _) => &p.headers,
            MapRef::Response(p) => &p.headers,
            MapRef::Plain(h) => h,
        }
    }

    fn headers_mut(&mut self) -> &mut HeaderMap {
        match self {
            MapRef::Request(p, _) => &mut p.headers,
            MapRef::Response(p) => &mut p.headers,
            MapRef::Plain(h) => h,
        }
    }

    fn set_pseudo(&mut self, key: &str, value: &[u8]) {
        let key = key.to_ascii_lowercase();
        match self {
            MapRef::Request(p, _) => set_request_pseudo(p, &key, value),
            MapRef::Response(p) if key == ":status" => {
                match std::str::from_utf8(value).ok().and_then(|s| s.parse::<u16>().ok()) {
                    Some(code) => match http::StatusCode::from_u16(code) {
                        Ok(s) => p.status = s,
                        Err(_) => tracing::debug!(code, "filter set an invalid :status"),
                    },
                    None => tracing::debug!("filter set a non-numeric :status"),
                }
            }
            _ => {}
        }
    }
}

/// `key` as a header name (`None`: not a valid one), remembered for the next time.
fn name(key: &str) -> Option<HeaderName> {
    NAMES.with(|names| {
        if let Some(n) = names.borrow().get(key) {
            return Some(n.clone());
        }
        let n = HeaderName::from_bytes(key.as_bytes()).ok()?;
        let mut names = names.borrow_mut();
        if names.len() < MAX_REMEMBERED_NAMES {
            names.insert(key.into(), n.clone());
        }
        Some(n)
    })
}

fn header(key: &str, value: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    match (name(key), HeaderValue::from_bytes(value)) {
        (Some(k), Ok(v)) => Some((k, v)),
        _ => {
            tracing::debug!(key, "filter set an invalid header; ignored");
            None
        }
    }
}

fn request_pseudo<'a>(p: &'a http::request::Parts, tls: bool, key: &str) -> Option<&'a [u8]> {
    let s: &str = match key {
        ":method" => p.method.as_str(),
        ":path" => match p.uri.path_and_query() {
            Some(pq) => pq.as_str(),
            None => p.uri.path(),
        },
        ":authority" => match p.uri.authority() {
            Some(a) => a.as_str(),
            None => return p.headers.get(HOST).map(|h| h.as_bytes()),
        },
        ":scheme" => match p.uri.scheme_str() {
            Some(s) => s,
            None if tls => "https",
            None => "http",
        },
        _ => return None,
    };
    Some(s.as_bytes())
}

fn set_request_pseudo(p: &mut http::request::Parts, key: &str, value: &[u8]) {
    match key {
        ":method" => match http::Method::from_bytes(value) {
            Ok(m) => p.method = m,
            Err(_) => tracing::debug!("filter set an invalid :method; ignored"),
        },
        ":path" => match PathAndQuery::try_from(value) {
            Ok(pq) => {
                let mut parts = p.uri.clone().into_parts();
                parts.path_and_query = Some(pq);
                if let Ok(uri) = Uri::from_parts(parts) {
                    p.uri = uri;
                }
            }
            Err(_) => tracing::debug!("filter set an invalid :path; ignored"),
        },
        ":authority" => {
            let Ok(auth) = Authority::try_from(value) else {
                tracing::debug!("filter set an invalid :authority; ignored");
                return;
            };
            if p.uri.authority().is_some() {
                let mut parts = p.uri.clone().into_parts();
                parts.authority = Some(auth.clone());
                if let Ok(uri) = Uri::from_parts(parts) {
                    p.uri = uri;
                }
            }
            if p.uri.authority().is_none() || p.headers.contains_key(HOST) {
                if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
                    p.headers.insert(HOST, v);
                }
            }
        }
        ":scheme" => {
            if p.uri.authority().is_none() {
                return;
            }
            if let Ok(scheme) = Scheme::try_from(value) {
                let mut parts = p.uri.clone().into_parts();
                parts.scheme = Some(scheme);
                if let Ok(uri) = Uri::from_parts(parts) {
                    p.uri = uri;
                }
            }
        }
        _ => {}
    }
}

/// Serializes pairs: `u32` count, `u32` key/value lengths, then `key\0value\0` entries.
pub(crate) fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let data: usize = pairs.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses the pairs encoding; `None` when it is malformed (never panics, never allocates
/// more than the input justifies). Empty input and a single `0x00` byte are empty maps.
pub(crate) fn decode_pairs(buf: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if buf.len() <= 1 {
        return Some(Vec::new());
    }
    let rd = |at: usize| -> Option<usize> {
        let b = buf.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = rd(0)?;
    let header_end = n.checked_mul(8)?.checked_add(4)?;
    if header_end > buf.len() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    let mut pos = header_end;
    for i in 0..n {
        let kl = rd(4 + i * 8)?;
        let vl = rd(8 + i * 8)?;
        let k = buf.get(pos..pos.checked_add(kl)?)?.to_vec();
        pos = pos.checked_add(kl + 1)?;
        let v = buf.get(pos..pos.checked_add(vl)?)?.to_vec();
        pos = pos.checked_add(vl + 1)?;
        if pos > buf.len() {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pairs_roundtrip_and_garbage() {
        let p = vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), b"".to_vec())];
        let enc = encode_pairs(&p);
        assert_eq!(decode_pairs(&enc), Some(p));
        assert_eq!(decode_pairs(&[0]), Some(vec![]));
        assert_eq!(decode_pairs(&[255, 255, 255, 255, 1]), None);
        assert_eq!(decode_pairs(&[1, 0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0, 1]), None);
    }

    #[test]
    fn request_pseudo_headers_map_onto_parts() {
        let (mut p, _) = http::Request::get("/a?b=1")
            .header("host", "example.com")
            .header("x-a", "1")
            .body(())
            .unwrap()
            .into_parts();
        let mut m = MapRef::Request(&mut p, false);
        assert_eq!(m.get(":authority").unwrap(), b"example.com");
        assert_eq!(m.get(":path").unwrap(), b"/a?b=1");
        assert_eq!(m.get(":scheme").unwrap(), b"http");
        m.replace(":path", b"/new");
        m.replace(":authority", b"other:8080");
        m.replace(":method", b"POST");
        m.add("X-A", b"2");
        let pairs = m.pairs();
        assert_eq!(pairs.iter().filter(|(k, _)| *k == "x-a").count(), 2);
        assert!(!pairs.iter().any(|(k, _)| *k == "host"));
        assert_eq!(p.uri, "/new");
        assert_eq!(p.method, http::Method::POST);
        assert_eq!(p.headers["host"], "other:8080");
    }

    #[test]
    fn remembered_names_parse_as_fresh_ones_and_bad_ones_stay_refused() {
        for _ in 0..2 {
            assert_eq!(name("X-B3-TraceId"), Some(HeaderName::from_static("x-b3-traceid")));
            assert_eq!(name("content-type"), Some(http::header::CONTENT_TYPE));
            assert_eq!(name("bad name"), None);
            assert_eq!(name(""), None);
        }
        // Past the limit, names still parse (they are just not remembered).
        for i in 0..MAX_REMEMBERED_NAMES + 10 {
            let n = format!("x-many-{i}");
            assert_eq!(name(&n).map(|h| h.as_str().to_string()), Some(n));
        }
        assert!(NAMES.with(|n| n.borrow().len()) <= MAX_REMEMBERED_NAMES);
    }
}
