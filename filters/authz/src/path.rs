//! Request-path normalization before authorization (Istio's order, after Envoy
//! CVE-2021-29492 / Istio CVE-2021-31920): decode `%2F %2f %5C %5c`, decode percent-encoded
//! unreserved characters (RFC 3986 §6.2.2.2, so `%2e%2e` is a dot segment), upper-case the
//! remaining escapes, `\` → `/`, remove dot segments (RFC 3986 §5.2.4), merge slashes.
//! The filter forwards exactly the normalized path it authorized. `normalize` is idempotent.

/// Splits a request target into (path, query-with-`?` or "").
pub fn split_query(target: &str) -> (&str, &str) {
    match target.find('?') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, ""),
    }
}

/// The normalized form of a path (no query).
pub fn normalize(path: &str) -> String {
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

/// Percent-decoding of `/`, `\` and unreserved characters; `\` → `/`; other escapes
/// upper-cased; malformed escapes kept as they are.
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
        out.push(if c == b'\\' { b'/' } else { c });
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
        assert_eq!(normalize("/bad%zz%"), "/bad%zz%");
        assert_eq!(normalize("/x%2"), "/x%2");
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

    #[test]
    fn query_is_split_off() {
        assert_eq!(split_query("/a?b=1?c"), ("/a", "?b=1?c"));
        assert_eq!(split_query("/a"), ("/a", ""));
    }
}
