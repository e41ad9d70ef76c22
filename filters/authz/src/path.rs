//! Request-path normalization before authorization (Istio's order, after Envoy
//! CVE-2021-29492 / Istio CVE-2021-31920): decode `%2F %2f %5C %5c`, decode percent-encoded
//! unreserved characters (RFC 3986 §6.2.2.2, so `%2e%2e` is a dot segment), upper-case the
//! remaining escapes (a stray `%` becomes `%25`), `\` → `/`, remove dot segments
//! (RFC 3986 §5.2.4), merge slashes. The filter forwards exactly the normalized path it
//! authorized. `normalize` is idempotent.

/// Splits a request target into (path, query-with-`?` or "").
pub fn split_query(target: &str) -> (&str, &str) {
    match target.find('?') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, ""),
    }
}

/// The normalized form of a path (no query).
pub fn normalize(path: &str) -> String {
    if is_normal(path) {
        return path.to_string();
    }
    rebuild(path)
}

/// Decodes `path` and rebuilds it segment by segment.
fn rebuild(path: &str) -> String {
    let decoded = decode(path);
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing = false;
    let body = decoded.strip_prefix('/').unwrap_or(&decoded);
    let parts: Vec<&str> = body.split('/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => trailing = i == last,
            ".." => {
                segs.pop();
                trailing = i == last;
            }
            s => {
                segs.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in segs.iter().filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(s);
    }
    // A trailing empty segment (`/a/`) or a trailing dot segment keeps the final slash.
    if out.is_empty() || trailing || segs.last().is_some_and(|s| s.is_empty()) {
        out.push('/');
    }
    out
}

/// Whether `path` is its own normal form (most are): absolute, nothing to decode, no
/// empty segment but a trailing one, no `.` or `..` segment.
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    if rest.bytes().any(|c| c == b'%' || c == b'\\') {
        return false;
    }
    let mut segs = rest.split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." {
            return false;
        }
    }
    true
}

/// Percent-decoding of `/`, `\` and unreserved characters; `\` → `/`; other escapes
/// upper-cased; a `%` that starts no valid escape becomes `%25`.
fn decode(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h * 16 + l;
                if v == b'/' || v == b'\\' {
                    out.push(b'/');
                } else if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v);
                } else {
                    out.push(b'%');
                    out.push(b[i + 1].to_ascii_uppercase());
                    out.push(b[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        match c {
            b'\\' => out.push(b'/'),
            // A stray `%` is encoded, so decoding can never assemble a new escape
            // (`%%32%46` must not turn into `%2F`).
            b'%' => out.extend_from_slice(b"%25"),
            c => out.push(c),
        }
        i += 1;
    }
    // Only ASCII bytes were substituted for ASCII bytes: still valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_slashes_merge() {
        assert_eq!(normalize("//admin"), "/admin");
        assert_eq!(normalize("/a//b///c"), "/a/b/c");
    }

    #[test]
    fn encoded_slashes_and_backslashes_decode() {
        assert_eq!(normalize("/api%2Fadmin"), "/api/admin");
        assert_eq!(normalize("/api%2fadmin"), "/api/admin");
        assert_eq!(normalize("/api%5Cadmin"), "/api/admin");
        assert_eq!(normalize("/api\\admin"), "/api/admin");
        assert_eq!(normalize("%2Fadmin"), "/admin");
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(normalize("/a/../admin"), "/admin");
        assert_eq!(normalize("/a/./b"), "/a/b");
        assert_eq!(normalize("/../../admin"), "/admin");
        assert_eq!(normalize("/a/b/.."), "/a/");
        assert_eq!(normalize("/a/b/."), "/a/b/");
        assert_eq!(normalize("/a/%2e%2e/admin"), "/admin");
        assert_eq!(normalize("/a/%2E./admin"), "/admin");
        assert_eq!(normalize("/a%2F..%2Fadmin"), "/admin");
        assert_eq!(normalize("/a\\..\\admin"), "/admin");
    }

    #[test]
    fn unreserved_escapes_decode_and_others_upper_case() {
        assert_eq!(normalize("/%61dmin"), "/admin");
        assert_eq!(normalize("/a%20b"), "/a%20b");
        assert_eq!(normalize("/a%3fb"), "/a%3Fb");
        assert_eq!(normalize("/a%25%32%46b"), "/a%252Fb");
        assert_eq!(normalize("/bad%zz%"), "/bad%25zz%25");
        assert_eq!(normalize("/x%2"), "/x%252");
        // No double decoding: a stray `%` cannot combine with decoded characters.
        assert_eq!(normalize("/admin%%32%46x"), "/admin%252Fx");
        assert_eq!(normalize("/%%61a"), "/%25aa");
    }

    #[test]
    fn trailing_slash_and_root_are_kept() {
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/api/"), "/api/");
        assert_eq!(normalize("/api"), "/api");
        assert_eq!(normalize("/.."), "/");
    }

    #[test]
    fn normalization_is_idempotent() {
        let cases = [
            "//admin",
            "/a/../admin",
            "/a%2F..%2Fadmin",
            "/a/.//..",
            "/a/..//../b",
            "/%252F",
            "/a%25%32%46b",
            "/x/./y/../../z//",
            "\\\\admin",
            "/a/b/..",
            "/%2e",
            "/.%2e/x",
        ];
        for c in cases {
            let once = normalize(c);
            assert_eq!(normalize(&once), once, "{c}");
        }
    }

    /// Random paths over the characters that matter: the output is always in normal form
    /// (absolute, no empty or dot segments, no encoded or back slashes) and stable.
    #[test]
    fn random_paths_normalize_to_a_fixed_point() {
        const PIECES: &[&str] = &[
            "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", "a", "%61", "%25", "%", "?", "%zz",
            "~",
        ];
        let mut seed: u64 = 0x5EED;
        let mut next = || {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut normal = 0;
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let raw: String = (0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            let n = normalize(&raw);
            for p in [&raw, &n] {
                if is_normal(p) {
                    // The shortcut only takes paths the full rebuild leaves as they are.
                    assert_eq!(&rebuild(p), p);
                    normal += 1;
                }
            }
            assert!(n.starts_with('/'), "{raw:?} → {n:?}");
            assert!(!n.contains("//") && !n.contains('\\'), "{raw:?} → {n:?}");
            let segs: Vec<&str> = n[1..].split('/').collect();
            assert!(!segs.iter().any(|s| *s == "." || *s == ".."), "{raw:?} → {n:?}");
            let upper = n.to_ascii_uppercase();
            assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%2E"), "{raw:?} → {n:?}");
            assert_eq!(normalize(&n), n, "not idempotent for {raw:?}");
            assert!(is_normal(&n) || n.contains('%'), "a normal form the shortcut misses: {n:?}");
        }
        assert!(normal > 5_000, "too few already-normal paths checked ({normal})");
    }

    #[test]
    fn query_is_split_off() {
        assert_eq!(split_query("/a?b=1?c"), ("/a", "?b=1?c"));
        assert_eq!(split_query("/a"), ("/a", ""));
    }
}
