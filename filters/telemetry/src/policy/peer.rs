//! Istio's HTTP metadata exchange: `x-envoy-peer-metadata` carries the sender's node
//! metadata as a base64 serialized `google.protobuf.Struct` (`NAMESPACE`,
//! `WORKLOAD_NAME`, `CLUSTER_ID`, `LABELS{app, version, service.istio.io/canonical-*}`, …),
//! `x-envoy-peer-metadata-id` its node id. Clients send theirs on the request, servers on
//! the response; each side strips what it read. Decoding is bounded and never trusts
//! lengths.

use super::labels::Workload;

/// The metadata header.
pub const HEADER: &str = "x-envoy-peer-metadata";
/// The node-id header.
pub const ID_HEADER: &str = "x-envoy-peer-metadata-id";
/// Longest header value decoded (Istio's are ~2 KiB).
pub const MAX_HEADER_LEN: usize = 16 * 1024;

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// Encodes `w` as the value of [`HEADER`] (Istio's layout: flat keys plus `LABELS`).
pub fn encode(w: &Workload) -> String {
    let mut labels = Vec::new();
    for (k, v) in [
        ("app", &w.app),
        ("version", &w.version),
        (CANONICAL_NAME, &w.canonical_service),
        (CANONICAL_REVISION, &w.canonical_revision),
    ] {
        if let Some(v) = v {
            put_entry(&mut labels, k, &string_value(v));
        }
    }
    let mut top = Vec::new();
    for (k, v) in [("NAMESPACE", &w.namespace), ("WORKLOAD_NAME", &w.name), ("CLUSTER_ID", &w.cluster)] {
        if let Some(v) = v {
            put_entry(&mut top, k, &string_value(v));
        }
    }
    if !labels.is_empty() {
        // Value.struct_value = 5, length-delimited.
        let mut value = vec![0x2a];
        put_varint(&mut value, labels.len() as u64);
        value.extend_from_slice(&labels);
        put_entry(&mut top, "LABELS", &value);
    }
    base64_encode(&top)
}

/// Decodes a [`HEADER`] value; `None` when it is not a well-formed Struct.
pub fn decode(header: &str) -> Option<Workload> {
    if header.len() > MAX_HEADER_LEN {
        return None;
    }
    let bytes = base64_decode(header.trim())?;
    let mut w = Workload::default();
    let mut label_app = None;
    let mut label_version = None;
    for (key, value) in struct_fields(&bytes)? {
        match key {
            "NAMESPACE" => w.namespace = value_string(value),
            "WORKLOAD_NAME" => w.name = value_string(value),
            "CLUSTER_ID" => w.cluster = value_string(value),
            // Flat labels (wasmesh node metadata is flat; also older Istio).
            "app" => label_app = label_app.or(value_string(value)),
            "version" => label_version = label_version.or(value_string(value)),
            "LABELS" => {
                let inner = value_struct(value)?;
                for (k, v) in struct_fields(inner)? {
                    match k {
                        "app" => label_app = value_string(v),
                        "version" => label_version = value_string(v),
                        CANONICAL_NAME => w.canonical_service = value_string(v),
                        CANONICAL_REVISION => w.canonical_revision = value_string(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    w.app = label_app;
    w.version = label_version;
    Some(w)
}

// --- protobuf (just enough of google.protobuf.Struct / Value) ---

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_delimited(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `Value` with `string_value` (field 3).
fn string_value(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    put_len_delimited(&mut v, 0x1a, s.as_bytes());
    v
}

/// One `Struct.fields` map entry (field 1): `{key = 1, value = 2}`.
fn put_entry(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let mut entry = Vec::with_capacity(key.len() + value.len() + 4);
    put_len_delimited(&mut entry, 0x0a, key.as_bytes());
    put_len_delimited(&mut entry, 0x12, value);
    put_len_delimited(out, 0x0a, &entry);
}

/// A protobuf reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// Next field: `(number, wire type, payload if length-delimited)`; skips the payload
    /// of other wire types.
    fn field(&mut self) -> Option<(u64, u8, Option<&'a [u8]>)> {
        let tag = self.varint()?;
        let (num, wt) = (tag >> 3, (tag & 7) as u8);
        let payload = match wt {
            0 => {
                self.varint()?;
                None
            }
            1 => {
                self.take(8)?;
                None
            }
            2 => {
                let n = usize::try_from(self.varint()?).ok()?;
                Some(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                None
            }
            _ => return None,
        };
        Some((num, wt, payload))
    }
}

/// The `(key, Value bytes)` entries of a serialized Struct.
fn struct_fields(buf: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        let (num, _, payload) = r.field()?;
        let (1, Some(entry)) = (num, payload) else { continue };
        let mut e = Reader { buf: entry };
        let (mut key, mut value) = (None, None);
        while !e.buf.is_empty() {
            match e.field()? {
                (1, _, Some(k)) => key = Some(std::str::from_utf8(k).ok()?),
                (2, _, Some(v)) => value = Some(v),
                _ => {}
            }
        }
        if let (Some(k), Some(v)) = (key, value) {
            out.push((k, v));
        }
    }
    Some(out)
}

/// The payload of a Value's field `num` when it is length-delimited.
fn value_field(value: &[u8], num: u64) -> Option<&[u8]> {
    let mut r = Reader { buf: value };
    let mut found = None;
    while !r.buf.is_empty() {
        if let (n, 2, Some(p)) = r.field()? {
            if n == num {
                found = Some(p);
            }
        }
    }
    found
}

fn value_string(value: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(value_field(value, 3)?).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

fn value_struct(value: &[u8]) -> Option<&[u8]> {
    value_field(value, 5)
}

// --- base64 (standard alphabet; padding written, optional when read) ---

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover symbol (6 bits) cannot end a valid encoding.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            name: Some("productpage-v1".into()),
            namespace: Some("bookinfo".into()),
            principal: None,
            app: Some("productpage".into()),
            version: Some("v1".into()),
            cluster: Some("Kubernetes".into()),
            canonical_service: Some("productpage".into()),
            canonical_revision: Some("v1".into()),
        }
    }

    #[test]
    fn round_trips() {
        let w = workload();
        assert_eq!(decode(&encode(&w)), Some(w));
        assert_eq!(decode(&encode(&Workload::default())), Some(Workload::default()));
    }

    #[test]
    fn encodes_istios_struct_layout() {
        let w = Workload { namespace: Some("ns".into()), app: Some("a".into()), ..Workload::default() };
        let bytes = base64_decode(&encode(&w)).unwrap_or_default();
        // fields { key: "NAMESPACE" value { string_value: "ns" } }
        let mut want = vec![0x0a, 0x11, 0x0a, 0x09];
        want.extend_from_slice(b"NAMESPACE");
        want.extend_from_slice(&[0x12, 0x04, 0x1a, 0x02, b'n', b's']);
        // fields { key: "LABELS" value { struct_value { fields { key: "app" value { string_value: "a" } } } } }
        want.extend_from_slice(&[0x0a, 0x18, 0x0a, 0x06]);
        want.extend_from_slice(b"LABELS");
        want.extend_from_slice(&[0x12, 0x0e, 0x2a, 0x0c, 0x0a, 0x0a, 0x0a, 0x03]);
        want.extend_from_slice(b"app");
        want.extend_from_slice(&[0x12, 0x03, 0x1a, 0x01, b'a']);
        assert_eq!(bytes, want);
    }

    #[test]
    fn decodes_unpadded_headers_and_skips_other_fields() {
        let mut top = Vec::new();
        // A number value (fixed64) and a bool value (varint) for keys we ignore.
        put_entry(&mut top, "STS_PORT", &[0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
        put_entry(&mut top, "ENABLED", &[0x20, 0x01]);
        put_entry(&mut top, "WORKLOAD_NAME", &string_value("ratings-v1"));
        put_entry(&mut top, "app", &string_value("ratings"));
        let header = base64_encode(&top);
        let w = decode(header.trim_end_matches('=')).unwrap_or_default();
        assert_eq!(w.name.as_deref(), Some("ratings-v1"));
        assert_eq!(w.app.as_deref(), Some("ratings"));
    }

    #[test]
    fn rejects_garbage_safely() {
        for bad in ["!!!", "A", "CgA=", "Cg", "////", "CvX//w"] {
            let _ = decode(bad); // must not panic
        }
        assert_eq!(decode("!!!"), None);
        assert_eq!(decode("A"), None, "one symbol is not base64");
        // An entry claiming more bytes than there are.
        assert_eq!(decode(&base64_encode(&[0x0a, 0x7f, 0x0a])), None);
        // A varint that never ends.
        assert_eq!(decode(&base64_encode(&[0xff; 12])), None);
        assert_eq!(decode(&"A".repeat(MAX_HEADER_LEN + 4)), None);
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(base64_decode("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(base64_decode("Zm9vYg=="), Some(b"foob".to_vec()));
    }
}
