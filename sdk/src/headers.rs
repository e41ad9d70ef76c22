//! A header map read in one hostcall and looked up in place: the proxy-wasm SDK's
//! `get_http_request_headers` turns every header into two owned `String`s, which costs
//! more than the hostcall when a filter only looks at a few of them.

use proxy_wasm::types::MapType;

/// One header map in the ABI's pairs encoding (`u32` count, `count` × (`u32` name
/// length, `u32` value length), then each name and value followed by a NUL byte),
/// indexed once so lookups do not re-parse it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderBlock {
    bytes: Vec<u8>,
    /// (name start, name end, value start, value end) per whole entry, in order.
    index: Vec<(usize, usize, usize, usize)>,
    /// One bit per [`name_bit`] of the names present: most lookups are for headers a
    /// request does not carry (trace context, overrides), answered without a scan.
    names: u64,
}

/// The request headers (pseudo-headers included), in one hostcall.
pub fn request_headers() -> HeaderBlock {
    read(MapType::HttpRequestHeaders)
}

/// The response headers (`:status` included), in one hostcall.
pub fn response_headers() -> HeaderBlock {
    read(MapType::HttpResponseHeaders)
}

/// Runs `f` on the value of request header `name` (one hostcall, no copy); `f` gets
/// `None` when the header is absent, empty or not UTF-8.
pub fn with_request_header<R>(name: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    with_value(MapType::HttpRequestHeaders, name, f)
}

/// Runs `f` on the value of response header `name` (as [`with_request_header`]).
pub fn with_response_header<R>(name: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    with_value(MapType::HttpResponseHeaders, name, f)
}

/// The value of request header `name` (`None`: absent, empty or not UTF-8).
pub fn request_header(name: &str) -> Option<String> {
    with_request_header(name, |v| v.map(str::to_string))
}

/// The value of response header `name` (`None`: absent, empty or not UTF-8).
pub fn response_header(name: &str) -> Option<String> {
    with_response_header(name, |v| v.map(str::to_string))
}

/// The response status (`:status`), parsed in place; `None` outside the response phases.
pub fn response_status() -> Option<u16> {
    with_response_header(":status", |v| v.and_then(|s| s.parse().ok()))
}

fn with_value<R>(map: MapType, name: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    crate::abi::with_header_value(map, name, |v| f(v.and_then(|b| std::str::from_utf8(b).ok())))
}

fn read(map: MapType) -> HeaderBlock {
    crate::abi::get_header_map_pairs(map).map(HeaderBlock::from_bytes).unwrap_or_default()
}

impl HeaderBlock {
    /// A block from encoded bytes (what the host returns); a malformed tail is ignored.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let index = entries(&bytes);
        let names = index.iter().fold(0, |acc, &(ks, ke, ..)| acc | bytes.get(ks..ke).map_or(0, name_bit));
        HeaderBlock { bytes, index, names }
    }

    /// The value of header `name` (ASCII case-insensitive; the first of repeated ones);
    /// `None` when absent or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of header `name` in order (ASCII case-insensitive); values that are not
    /// UTF-8 are skipped.
    pub fn get_all<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s str> + use<'s, 'n> {
        self.matching(name).filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// Whether header `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn find(&self, name: &str) -> Option<&[u8]> {
        self.matching(name).next()
    }

    /// The values of the entries named `name`.
    fn matching<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s [u8]> + use<'s, 'n> {
        let name = name.as_bytes();
        let absent = self.names & name_bit(name) == 0;
        // Lengths first: most names are ruled out without touching their bytes.
        self.index[..if absent { 0 } else { self.index.len() }]
            .iter()
            .filter(move |&&(ks, ke, ..)| {
                ke - ks == name.len() && self.bytes.get(ks..ke).is_some_and(|k| k.eq_ignore_ascii_case(name))
            })
            .filter_map(|&(_, _, vs, ve)| self.bytes.get(vs..ve))
    }

    /// The (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.index.iter().map(|&(ks, ke, vs, ve)| (&self.bytes[ks..ke], &self.bytes[vs..ve]))
    }
}

/// A header name's bit in [`HeaderBlock::names`]: from its length and last byte
/// (ASCII case folded), which tell apart most names a filter looks up.
fn name_bit(name: &[u8]) -> u64 {
    let last = name.last().map_or(0, u8::to_ascii_lowercase) as usize;
    1 << ((name.len().wrapping_mul(7) ^ last) & 63)
}

/// The byte ranges of every whole entry; stops at the first malformed one.
fn entries(b: &[u8]) -> Vec<(usize, usize, usize, usize)> {
    let u32_at = |at: usize| b.get(at..at + 4).and_then(|x| <[u8; 4]>::try_from(x).ok()).map(u32::from_le_bytes);
    let count = u32_at(0).unwrap_or(0) as usize;
    // Sizes start at 4; data after all the sizes. A count the block cannot hold is malformed.
    let Some(mut data) = count.checked_mul(8).and_then(|n| n.checked_add(4)).filter(|&d| d <= b.len()) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (Some(klen), Some(vlen)) = (u32_at(4 + i * 8), u32_at(8 + i * 8)) else { break };
        // Name, NUL, value: every end checked against the block (and for overflow).
        let ends = || {
            let ke = data.checked_add(klen as usize)?;
            let ve = ke.checked_add(1)?.checked_add(vlen as usize)?;
            (ve <= b.len()).then_some((ke, ve))
        };
        let Some((ke, ve)) = ends() else { break };
        out.push((data, ke, ke + 1, ve));
        data = ve + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn finds_headers_case_insensitively_first_of_repeats() {
        let b = HeaderBlock::from_bytes(encode(&[
            (":path", "/a"),
            ("x-b3-traceid", "abc"),
            ("cookie", "1"),
            ("cookie", "2"),
            ("empty", ""),
        ]));
        assert_eq!(b.get(":path"), Some("/a"));
        assert_eq!(b.get("X-B3-TraceId"), Some("abc"));
        assert_eq!(b.get("cookie"), Some("1"));
        assert_eq!(b.get("empty"), Some(""));
        assert_eq!(b.get("missing"), None);
        assert!(b.contains("EMPTY") && !b.contains("missing"));
        assert_eq!(b.iter().count(), 5);
        assert_eq!(b.get_all("Cookie").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(b.get_all("missing").count(), 0);
    }

    #[test]
    fn every_present_name_is_found_whatever_its_case_and_absent_ones_are_not() {
        let names: Vec<String> = (1..80).map(|n| format!("x-{}", "k".repeat(n))).collect();
        let pairs: Vec<(&str, &str)> = names.iter().step_by(2).map(|n| (n.as_str(), "v")).collect();
        let b = HeaderBlock::from_bytes(encode(&pairs));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(b.contains(n), i % 2 == 0, "{n}");
            assert_eq!(b.contains(&n.to_ascii_uppercase()), i % 2 == 0, "{n} in upper case");
        }
    }

    #[test]
    fn malformed_or_empty_blocks_yield_what_is_whole() {
        assert_eq!(HeaderBlock::default().get("a"), None);
        let mut truncated = encode(&[("a", "1"), ("b", "2")]);
        truncated.truncate(truncated.len() - 3);
        let b = HeaderBlock::from_bytes(truncated);
        assert_eq!(b.get("a"), Some("1"));
        assert_eq!(b.get("b"), None);
        // A count far larger than the data: no panic, nothing past the end.
        let mut lying = encode(&[("a", "1")]);
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderBlock::from_bytes(lying).iter().count(), 0);
        // A name length past the end: that entry and everything after it are dropped.
        let mut long = encode(&[("a", "1"), ("b", "2")]);
        long[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let b = HeaderBlock::from_bytes(long);
        assert_eq!((b.get("a"), b.get("b")), (Some("1"), None));
    }
}
