//! Properties (`proxy_get_property`) with Envoy's names and encodings: strings raw,
//! integers 8 bytes little-endian, booleans 1 byte, timestamps and durations as int64
//! nanoseconds, maps in the pairs encoding. `set_property` writes per-request filter
//! state (by dotted path), readable by later filters and by the proxy
//! (`HttpStream::property`), e.g. `wasmesh.upstream.cluster`. wasmesh extras:
//! `wasmesh.response.flags` (short codes, `,`-joined, empty when none; also
//! `response.flags`), `wasmesh.response.flag` (set: codes accumulate), and
//! `wasmesh.cluster.<name>.<stat>` (decimal text, from `HostServices::cluster_stat`).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH, REFERER, USER_AGENT};

use super::abi::status::Status;
use super::maps::encode_pairs;
use super::plugin::Plugin;
use super::state::{state_key, HostState, StateKey, StreamShared};
use super::text::lossy;
use crate::config::Direction;

/// A property value before encoding, borrowed from the stream where it can be.
enum Value<'a> {
    Str(Cow<'a, str>),
    Bytes(Bytes),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Time(SystemTime),
    Dur(Duration),
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

// === impl Value ===

impl<'a> Value<'a> {
    fn str(s: impl Into<Cow<'a, str>>) -> Self {
        Value::Str(s.into())
    }

    /// Appends the encoded value to `out`.
    fn encode_into(self, out: &mut Vec<u8>) {
        match self {
            Value::Str(s) => out.extend_from_slice(s.as_bytes()),
            Value::Bytes(b) => out.extend_from_slice(&b),
            Value::Int(i) => out.extend_from_slice(&i.to_le_bytes()),
            Value::UInt(u) => out.extend_from_slice(&u.to_le_bytes()),
            Value::Bool(b) => out.push(b as u8),
            Value::Time(t) => {
                let ns = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i64;
                out.extend_from_slice(&ns.to_le_bytes());
            }
            Value::Dur(d) => out.extend_from_slice(&(d.as_nanos() as i64).to_le_bytes()),
            Value::Map(m) => out.extend_from_slice(&encode_pairs(&m)),
        }
    }
}

/// Most segments a path is split into without allocating.
const INLINE_SEGMENTS: usize = 6;

/// Runs `f` on a property path split into segments (`\0`-separated; a single dotted
/// segment of Envoy's roots such as `request.path` is accepted too). Borrows from `path`
/// when it is valid UTF-8, and up to [`INLINE_SEGMENTS`] segments (all real paths) are
/// passed without allocating.
pub(crate) fn with_segments<T>(path: &[u8], f: impl FnOnce(&[&str]) -> T) -> T {
    let text = lossy(path);
    if !text.as_bytes().contains(&0) {
        // One segment (the SDK's dotted names): no iterator machinery on the hot path.
        return with_one(&text, f);
    }
    let mut nonempty = text.split('\0').filter(|s| !s.is_empty());
    match (nonempty.next(), nonempty.next()) {
        (Some(one), None) => with_one(one, f),
        _ => with_parts(text.split('\0').filter(|s| !s.is_empty()), f),
    }
}

/// Runs `f` on a single segment: `root.second[.rest]` split as `splitn(3, '.')` would
/// when `root` is one of Envoy's attribute roots, else the segment whole.
fn with_one<T>(seg: &str, f: impl FnOnce(&[&str]) -> T) -> T {
    // Byte scans: these names are short, and `split_once(char)` costs more than the scan.
    let dot = |s: &str| s.bytes().position(|b| b == b'.');
    let Some((root, after)) = dot(seg).map(|i| (&seg[..i], &seg[i + 1..])).filter(|(root, _)| is_root(root)) else {
        return if seg.is_empty() { f(&[]) } else { f(&[seg]) };
    };
    match dot(after) {
        Some(j) => f(&[root, &after[..j], &after[j + 1..]]),
        None => f(&[root, after]),
    }
}

fn is_root(s: &str) -> bool {
    matches!(s, "request" | "response" | "source" | "destination" | "connection" | "upstream" | "node" | "xds")
}

/// Runs `f` on `parts`, gathered on the stack while they fit.
fn with_parts<'a, T>(mut parts: impl Iterator<Item = &'a str>, f: impl FnOnce(&[&str]) -> T) -> T {
    let mut buf = [""; INLINE_SEGMENTS];
    let mut n = 0;
    while let Some(part) = parts.next() {
        if n == buf.len() {
            let all: Vec<&str> = buf.iter().copied().chain(std::iter::once(part)).chain(parts).collect();
            return f(&all);
        }
        buf[n] = part;
        n += 1;
    }
    f(&buf[..n])
}

/// Most paths one `wasmesh.get_properties` call resolves.
pub(crate) const MAX_BATCH: usize = 64;

/// Marks an absent (or unreadable) property in a `wasmesh.get_properties` answer.
pub(crate) const ABSENT: u32 = u32::MAX;

/// `wasmesh.get_properties`: `args` is a sequence of `[u32 LE length][path]` (paths as
/// `proxy_get_property` takes them); the answer, per path in order, `[u32 LE length][value]`
/// or [`ABSENT`]. Malformed or over [`MAX_BATCH`] paths: `BadArgument`.
pub(crate) fn get_many(st: &HostState, args: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
    let reader = Reader::new(st);
    for path in paths(args)? {
        answer(out, |out| with_segments(path, |s| reader.get(s, out)));
    }
    Ok(())
}

/// Most property sets one VM defines (`wasmesh.define_properties`).
pub(crate) const MAX_SETS: usize = 64;

/// A set of property paths resolved once (`wasmesh.define_properties`).
pub(crate) struct PropertySet {
    paths: Vec<SetPath>,
    /// [`name_bit`] of every request header the set names (0: none).
    header_bits: u64,
}

/// One path of a [`PropertySet`].
pub(crate) enum SetPath {
    /// `request.headers.<name>` with a valid header name: looked up by the parsed name
    /// (filters read trace and routing headers this way on every request).
    RequestHeader(http::HeaderName),
    /// Any other path, split into segments.
    Segments(Vec<Box<str>>),
}

/// `wasmesh.define_properties`: the paths of `args` (as `wasmesh.get_properties` takes
/// them), split once and kept by the VM; answers the set's id (u32 LE) for
/// `wasmesh.get_properties_by_id`. Malformed: `BadArgument`; over [`MAX_SETS`] sets:
/// `InternalFailure` (the caller falls back to naming its paths).
pub(crate) fn define(st: &mut HostState, args: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
    if st.property_sets.len() >= MAX_SETS {
        return Err(Status::InternalFailure);
    }
    let resolve = |s: &[&str]| match s {
        ["request", "headers", name] => match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => SetPath::RequestHeader(h),
            Err(_) => SetPath::Segments(s.iter().map(|seg| Box::from(*seg)).collect()),
        },
        _ => SetPath::Segments(s.iter().map(|seg| Box::from(*seg)).collect()),
    };
    let paths: Vec<SetPath> = paths(args)?.into_iter().map(|p| with_segments(p, resolve)).collect();
    let header_bits = paths.iter().fold(0, |bits, p| match p {
        SetPath::RequestHeader(h) => bits | name_bit(h.as_str()),
        SetPath::Segments(_) => bits,
    });
    st.property_sets.push(PropertySet { paths, header_bits });
    out.extend_from_slice(&((st.property_sets.len() - 1) as u32).to_le_bytes());
    Ok(())
}

/// `wasmesh.get_properties_by_id`: `args` is a set id (u32 LE); the answer as
/// `wasmesh.get_properties` gives it for the set's paths. Unknown id: `NotFound`.
pub(crate) fn get_set(st: &HostState, args: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
    let id = <[u8; 4]>::try_from(args).map_err(|_| Status::BadArgument)?;
    let set = st.property_sets.get(u32::from_le_bytes(id) as usize).ok_or(Status::NotFound)?;
    let reader = Reader::new(st);
    let request = reader.stream.as_deref().and_then(|s| s.request.as_ref());
    let mut headers = match request {
        Some(r) if set.header_bits != 0 => request_headers(set, &r.headers),
        _ => Vec::new(),
    };
    for (i, path) in set.paths.iter().enumerate() {
        answer(out, |out| match path {
            SetPath::RequestHeader(_) => Ok(match headers.get_mut(i).and_then(Option::take) {
                Some(v) => {
                    out.extend_from_slice(v.as_bytes());
                    true
                }
                None => false,
            }),
            SetPath::Segments(segments) => with_parts(segments.iter().map(|s| &**s), |s| reader.get(s, out)),
        });
    }
    Ok(())
}

/// The values of the request headers `set` names, by path index (repeated headers
/// joined with `,`), in one pass over the head: most requests carry few of the names a
/// set asks for (trace context), and a hashed lookup per name cost more than the pass.
fn request_headers<'a>(set: &PropertySet, h: &'a HeaderMap) -> Vec<Option<Cow<'a, str>>> {
    let mut found: Vec<Option<Cow<'a, str>>> = vec![None; set.paths.len()];
    for (name, value) in h {
        if set.header_bits & name_bit(name.as_str()) == 0 {
            continue;
        }
        let slot = set.paths.iter().position(|p| matches!(p, SetPath::RequestHeader(n) if n == name));
        let Some(v) = slot.and_then(|i| found.get_mut(i)) else { continue };
        let text = lossy(value.as_bytes());
        match v {
            Some(joined) => {
                let joined = joined.to_mut();
                joined.push(',');
                joined.push_str(&text);
            }
            None => *v = Some(text),
        }
    }
    found
}

/// A header name's bit in [`PropertySet::header_bits`] (from its length and last byte).
fn name_bit(name: &str) -> u64 {
    let last = name.as_bytes().last().copied().unwrap_or(0) as usize;
    1 << ((name.len().wrapping_mul(7) ^ last) & 63)
}

/// The paths of a `wasmesh.get_properties` argument.
fn paths(mut args: &[u8]) -> Result<Vec<&[u8]>, Status> {
    let mut all = Vec::with_capacity(16);
    while !args.is_empty() {
        let (len, rest) = args.split_first_chunk::<4>().ok_or(Status::BadArgument)?;
        let len = u32::from_le_bytes(*len) as usize;
        if all.len() == MAX_BATCH || rest.len() < len {
            return Err(Status::BadArgument);
        }
        let (path, rest) = rest.split_at(len);
        all.push(path);
        args = rest;
    }
    Ok(all)
}

/// Appends one answer entry: the value `read` appends after a length placeholder, patched
/// once known, or [`ABSENT`].
fn answer(out: &mut Vec<u8>, read: impl FnOnce(&mut Vec<u8>) -> Result<bool, Status>) {
    let at = out.len();
    out.extend_from_slice(&ABSENT.to_le_bytes());
    match read(out) {
        Ok(true) => match u32::try_from(out.len() - at - 4) {
            Ok(len) if len != ABSENT => out[at..at + 4].copy_from_slice(&len.to_le_bytes()),
            _ => out.truncate(at + 4),
        },
        _ => out.truncate(at + 4),
    }
}

/// Resolves a property for the current context, appending its value to `out`; `Ok(false)`
/// is `NotFound`.
pub(crate) fn get_into(st: &HostState, path: &[u8], out: &mut Vec<u8>) -> Result<bool, Status> {
    with_segments(path, |s| Reader::new(st).get(s, out))
}

/// What property reads look at: the current context's plugin and stream, found once
/// per hostcall (a batch reads many properties).
struct Reader<'a> {
    st: &'a HostState,
    plugin: &'a Plugin,
    stream: Option<std::cell::Ref<'a, StreamShared>>,
}

impl<'a> Reader<'a> {
    fn new(st: &'a HostState) -> Self {
        Reader { st, plugin: st.current_plugin(), stream: st.current_stream().and_then(|s| s.try_borrow().ok()) }
    }

    /// Appends the value of the property at segments `s` to `out`; `Ok(false)` (nothing
    /// appended) is `NotFound`.
    fn get(&self, s: &[&str], out: &mut Vec<u8>) -> Result<bool, Status> {
        if s.is_empty() {
            return Ok(false);
        }
        let v = value(self.st, self.plugin, self.stream.as_deref(), s)?;
        Ok(v.map(|v| v.encode_into(out)).is_some())
    }
}

/// The value of the property at segments `s`.
fn value<'a>(
    st: &'a HostState,
    plugin: &'a Plugin,
    stream: Option<&'a StreamShared>,
    s: &[&'a str],
) -> Result<Option<Value<'a>>, Status> {
    let node = &st.rt.node;
    let v = match s {
        ["plugin_name"] => Some(Value::str(plugin.name.to_string())),
        ["plugin_root_id"] => Some(Value::str(plugin.root_id.clone())),
        ["plugin_vm_id"] => Some(Value::str(plugin.vm_id.to_string())),
        ["node", rest @ ..] | ["xds", "node", rest @ ..] => match rest {
            [] => return Err(Status::SerializationFailure),
            ["id"] => Some(Value::str(node.id.clone())),
            ["cluster"] => Some(Value::str(node.cluster.clone())),
            ["metadata"] => Some(Value::Map(
                node.metadata.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
            )),
            ["metadata", k] => node.metadata.get(*k).map(|v| Value::str(v.clone())),
            _ => None,
        },
        _ => match stream {
            Some(stream) => stream_property(st, stream, s),
            // A root context knows its listener (a plugin serves one).
            None => match (s, &plugin.listener) {
                (["listener_direction"] | ["xds", "listener_direction"], Some((_, d))) => Some(direction(*d)),
                (["listener_name"] | ["xds", "listener_name"], Some((name, _))) => Some(Value::str(&**name)),
                _ => None,
            },
        },
    };
    Ok(v)
}

fn stream_property<'a>(st: &'a HostState, s: &'a StreamShared, path: &[&str]) -> Option<Value<'a>> {
    let info = &s.info;
    let up = &s.upstream;
    let conn = &info.connection;
    let tls = conn.tls.as_ref();
    let resp = s.response.as_ref();
    let state = |k: &str| s.filter_state.get(k).cloned().map(Value::Bytes);
    Some(match path {
        ["cluster_name"] | ["xds", "cluster_name"] => match &up.cluster {
            Some(c) => Value::str(&**c),
            None => return state("wasmesh.upstream.cluster"),
        },
        ["route_name"] | ["xds", "route_name"] => match &up.route_name {
            Some(r) => Value::str(&**r),
            None => return state("wasmesh.route.name"),
        },
        ["listener_direction"] | ["xds", "listener_direction"] => direction(info.direction),
        ["listener_name"] | ["xds", "listener_name"] => Value::str(&*info.listener),
        ["request", rest @ ..] => return request_property(s, rest),
        ["response", rest @ ..] => match rest {
            ["code"] => Value::Int(match resp {
                Some(r) => r.status.as_u16() as i64,
                None => up.response_code? as i64,
            }),
            ["code_details"] => Value::str(up.code_details.as_deref()?),
            ["flags"] => Value::str(flags_text(s)),
            ["grpc_status"] => {
                let v = resp
                    .and_then(|r| r.headers.get("grpc-status"))
                    .or_else(|| s.response_trailers.as_ref()?.get("grpc-status"))?;
                Value::Int(v.to_str().ok()?.parse().ok()?)
            }
            ["headers"] => Value::Map(joined_map(&resp?.headers)),
            ["headers", name] => Value::str(joined(&resp?.headers, *name)?),
            ["trailers"] => Value::Map(joined_map(s.response_trailers.as_ref()?)),
            ["trailers", name] => Value::str(joined(s.response_trailers.as_ref()?, *name)?),
            ["size"] => Value::Int(up.response_body_bytes as i64),
            ["total_size"] => Value::Int((up.response_body_bytes + up.response_header_bytes) as i64),
            ["headers_bytes"] => Value::Int(up.response_header_bytes as i64),
            ["backend_latency"] => Value::Dur(up.backend_latency?),
            _ => return None,
        },
        ["source", "principal"] => Value::str(tls?.peer_uri_sans.first()?.as_str()),
        ["destination", "principal"] => Value::str(tls?.local_uri_sans.first()?.as_str()),
        ["source", "address"] => Value::str(conn.source.to_string()),
        ["source", "port"] => Value::Int(conn.source.port() as i64),
        ["destination", "address"] => Value::str(conn.destination.to_string()),
        ["destination", "port"] => Value::Int(conn.destination.port() as i64),
        ["connection", rest @ ..] => match rest {
            ["id"] => Value::UInt(conn.id),
            ["mtls"] => Value::Bool(tls.is_some_and(|t| t.peer_certificate_presented)),
            ["requested_server_name"] => Value::str(tls.and_then(|t| t.sni.as_deref()).unwrap_or_default()),
            ["tls_version"] => Value::str(tls?.version.as_str()),
            ["uri_san_peer_certificate"] => Value::str(tls?.peer_uri_sans.first()?.as_str()),
            ["dns_san_peer_certificate"] => Value::str(tls?.peer_dns_sans.first()?.as_str()),
            ["subject_peer_certificate"] => Value::str(tls?.peer_subject.as_deref()?),
            ["sha256_peer_certificate_digest"] => Value::str(tls?.peer_sha256.as_deref()?),
            ["uri_san_local_certificate"] => Value::str(tls?.local_uri_sans.first()?.as_str()),
            ["dns_san_local_certificate"] => Value::str(tls?.local_dns_sans.first()?.as_str()),
            ["subject_local_certificate"] => Value::str(tls?.local_subject.as_deref()?),
            _ => return None,
        },
        ["upstream", rest @ ..] => match rest {
            ["address"] => Value::str(up.address?.to_string()),
            ["port"] => Value::Int(up.address?.port() as i64),
            ["local_address"] => Value::str(up.local_address?.to_string()),
            ["local_port"] => Value::Int(up.local_address?.port() as i64),
            ["request_attempt_count"] => Value::UInt(up.attempt_count as u64),
            ["tls_version"] => Value::str(up.tls_version.as_deref()?),
            _ => return None,
        },
        ["filter_state", key] => return state(key),
        [first, rest @ ..] => {
            return with_dotted(first, rest, |joined| {
                if joined == "wasmesh.response.flags" {
                    return Some(Value::str(flags_text(s)));
                }
                if let Some(rest) = joined.strip_prefix("wasmesh.cluster.") {
                    // Decimal text, as the wasmesh SDK reads it (`get_decimal_property`).
                    let (cluster, stat) = rest.rsplit_once('.')?;
                    let host = st.host.as_ref()?;
                    return Some(Value::str(host.cluster_stat(cluster, stat)?.to_string()));
                }
                state(joined)
            });
        }
        [] => return None,
    })
}

/// Envoy's `listener_direction`: 1 inbound, 2 outbound.
fn direction(d: Direction) -> Value<'static> {
    Value::Int(match d {
        Direction::Inbound => 1,
        Direction::Outbound => 2,
    })
}

/// Longest dotted name [`with_dotted`] joins on the stack.
const DOTTED_ON_STACK: usize = 128;

/// Runs `f` on `first` and `rest` joined with `.` (how filter-state keys are named),
/// joined on the stack when short — real keys are — rather than in a fresh `String`.
fn with_dotted<T>(first: &str, rest: &[&str], f: impl FnOnce(&str) -> T) -> T {
    if rest.is_empty() {
        return f(first);
    }
    let len = first.len() + rest.iter().map(|r| r.len() + 1).sum::<usize>();
    let mut buf = [0u8; DOTTED_ON_STACK];
    let Some(out) = buf.get_mut(..len) else {
        let mut key = first.to_string();
        for r in rest {
            key.push('.');
            key.push_str(r);
        }
        return f(&key);
    };
    out[..first.len()].copy_from_slice(first.as_bytes());
    let mut at = first.len();
    for r in rest {
        out[at] = b'.';
        out[at + 1..at + 1 + r.len()].copy_from_slice(r.as_bytes());
        at += 1 + r.len();
    }
    // `str`s joined with ASCII dots: valid UTF-8.
    f(std::str::from_utf8(out).unwrap_or_default())
}

fn request_property<'a>(s: &'a StreamShared, rest: &[&str]) -> Option<Value<'a>> {
    let info = &s.info;
    let up = &s.upstream;
    if let ["time"] = rest {
        return Some(Value::Time(info.start));
    }
    if let ["duration"] = rest {
        let end = up.end.unwrap_or_else(SystemTime::now);
        return Some(Value::Dur(end.duration_since(info.start).unwrap_or_default()));
    }
    if let ["auth", ..] = rest {
        // `request.auth.*` is published by the authn filter (set_property → filter state).
        return with_dotted("request", rest, |key| s.filter_state.get(key).cloned().map(Value::Bytes));
    }
    let req = s.request.as_ref()?;
    let h = &req.headers;
    let hs = |name| h.get(name).and_then(|v| v.to_str().ok());
    Some(match rest {
        ["path"] => Value::str(req.uri.path_and_query().map_or("/", |p| p.as_str())),
        ["url_path"] => Value::str(req.uri.path()),
        ["host"] => Value::str(match req.uri.authority() {
            Some(a) => a.as_str(),
            None => hs(http::header::HOST).unwrap_or_default(),
        }),
        ["scheme"] => Value::str(match req.uri.scheme_str() {
            Some(s) => s,
            None if info.connection.tls.is_some() => "https",
            None => "http",
        }),
        ["method"] => Value::str(req.method.as_str()),
        ["headers"] => Value::Map(joined_map(h)),
        ["headers", name] => Value::str(joined(h, *name)?),
        ["referer"] => Value::str(hs(REFERER)?),
        ["useragent"] => Value::str(hs(USER_AGENT)?),
        ["id"] => Value::str(hs(http::HeaderName::from_static("x-request-id"))?),
        ["protocol"] => Value::str(match req.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        }),
        ["query"] => Value::str(req.uri.query().unwrap_or("")),
        ["size"] => Value::Int(match hs(CONTENT_LENGTH).and_then(|v| v.parse::<i64>().ok()) {
            Some(n) => n,
            None => up.request_body_bytes as i64,
        }),
        ["total_size"] => Value::Int((up.request_body_bytes + up.request_header_bytes) as i64),
        ["headers_bytes"] => Value::Int(up.request_header_bytes as i64),
        _ => return None,
    })
}

/// Filter state key where `set_property("wasmesh.response.flag", code)` accumulates codes.
pub(crate) const RESPONSE_FLAG: &str = "wasmesh.response.flag";

/// Response flags as short codes joined with `,` (empty when none): the proxy's flags and
/// the ones filters added.
pub(crate) fn flags_text(s: &StreamShared) -> String {
    let mut out = String::new();
    let push = |out: &mut String, code: &str| {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(code);
    };
    for (f, code) in crate::flags::ResponseFlags::ALL {
        if s.upstream.flags.contains(*f) {
            push(&mut out, code);
        }
    }
    if let Some(extra) = s.filter_state.get(RESPONSE_FLAG) {
        for c in String::from_utf8_lossy(extra).split(',').filter(|c| !c.is_empty()) {
            if !out.split(',').any(|have| have == c) {
                push(&mut out, c);
            }
        }
    }
    out
}

/// Header values of `name`, repeated ones joined with `,` (borrowed when there is one).
fn joined<'a, K: http::header::AsHeaderName>(h: &'a HeaderMap, name: K) -> Option<Cow<'a, str>> {
    let mut values = h.get_all(name).iter();
    let first = lossy(values.next()?.as_bytes());
    let Some(second) = values.next() else { return Some(first) };
    let mut out = first.into_owned();
    for v in std::iter::once(second).chain(values) {
        out.push(',');
        out.push_str(&lossy(v.as_bytes()));
    }
    Some(out.into())
}

fn joined_map(h: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.keys()
        .filter_map(|k| Some((k.as_str().as_bytes().to_vec(), joined(h, k.as_str())?.as_bytes().to_vec())))
        .collect()
}

/// `set_property`: filter state of the current stream (ignored outside a stream).
pub(crate) fn set(st: &HostState, path: &[u8], value: Bytes) {
    // A name without NULs (what SDKs send) keys as it is: segmenting it and joining the
    // segments again gives it back, for more work than the set itself.
    let text = lossy(path);
    let key: StateKey = match text.contains('\0') {
        false => state_key(&text),
        true => with_segments(path, |s| match s {
            [first, rest @ ..] => with_dotted(first, rest, state_key),
            [] => state_key(""),
        }),
    };
    match st.current_stream() {
        Some(stream) => {
            let Ok(mut s) = stream.try_borrow_mut() else { return };
            if key == RESPONSE_FLAG {
                // Flags accumulate: `NR`, then `FI` → `NR,FI`.
                let code = String::from_utf8_lossy(&value).trim().to_owned();
                let mut all = s
                    .filter_state
                    .get(RESPONSE_FLAG)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                if !code.is_empty() && !all.split(',').any(|c| c == code) {
                    if !all.is_empty() {
                        all.push(',');
                    }
                    all.push_str(&code);
                }
                s.filter_state.insert(key, Bytes::from(all));
            } else {
                s.filter_state.insert(key, value);
            }
        }
        None => tracing::debug!(key = %key, "set_property outside a stream; ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::{request_headers, PropertySet, SetPath};
    use super::{request_property, with_dotted, with_segments, StreamShared, DOTTED_ON_STACK};

    #[test]
    fn a_sets_request_headers_are_found_in_one_pass_and_joined() {
        let paths = vec![
            SetPath::RequestHeader(http::HeaderName::from_static("traceparent")),
            SetPath::Segments(vec!["request".into(), "path".into()]),
            SetPath::RequestHeader(http::HeaderName::from_static("x-b3-flags")),
            SetPath::RequestHeader(http::HeaderName::from_static("accept")),
        ];
        let header_bits = paths.iter().fold(0, |b, p| match p {
            SetPath::RequestHeader(h) => b | super::name_bit(h.as_str()),
            SetPath::Segments(_) => b,
        });
        let set = PropertySet { paths, header_bits };
        let mut h = http::HeaderMap::new();
        h.append("accept", http::HeaderValue::from_static("a/b"));
        h.append("traceparent", http::HeaderValue::from_static("00-ab"));
        h.append("accept", http::HeaderValue::from_static("c/d"));
        h.append("x-other", http::HeaderValue::from_static("1"));
        let found = request_headers(&set, &h);
        assert_eq!(found.len(), 4);
        assert_eq!(found[0].as_deref(), Some("00-ab"));
        assert_eq!(found[1], None, "not a header path");
        assert_eq!(found[2], None, "absent");
        assert_eq!(found[3].as_deref(), Some("a/b,c/d"), "repeated values joined in order");
    }

    #[test]
    fn dotted_names_join_alike_on_the_stack_and_past_it() {
        let long = "x".repeat(DOTTED_ON_STACK);
        assert_eq!(with_dotted("a", &["b", "c"], str::to_string), "a.b.c");
        assert_eq!(with_dotted("a", &[], str::to_string), "a");
        assert_eq!(with_dotted("a", &[&long], str::to_string), format!("a.{long}"));
    }

    #[test]
    fn request_auth_properties_read_what_authn_published() {
        let mut s = StreamShared::new(crate::wasm::tests::info(0));
        for (k, v) in [("request.auth.principal", "iss/sub"), ("request.auth.claims.group", "dev")] {
            s.filter_state.insert(k.into(), bytes::Bytes::from_static(v.as_bytes()));
        }
        let read = |rest: &[&str]| {
            request_property(&s, rest).map(|v| {
                let mut out = Vec::new();
                v.encode_into(&mut out);
                out
            })
        };
        assert_eq!(read(&["auth", "principal"]).as_deref(), Some(&b"iss/sub"[..]));
        assert_eq!(read(&["auth", "claims", "group"]).as_deref(), Some(&b"dev"[..]), "any depth");
        assert_eq!(read(&["auth", "audiences"]), None);
    }

    fn split(path: &[u8]) -> Vec<String> {
        with_segments(path, |s| s.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn paths_split_on_nul_and_envoy_roots_on_dots() {
        assert_eq!(split(b"request\0headers\0x-a.b"), ["request", "headers", "x-a.b"]);
        assert_eq!(split(b"request.headers.x-a.b"), ["request", "headers", "x-a.b"]);
        assert_eq!(split(b"\0response\0\0code\0"), ["response", "code"], "empty segments skipped");
        assert_eq!(split(b"wasmesh.cluster.web.active_requests"), ["wasmesh.cluster.web.active_requests"]);
        assert_eq!(split(b"plugin_name"), ["plugin_name"]);
        assert!(split(b"").is_empty());
    }

    #[test]
    fn long_or_invalid_utf8_paths_take_the_general_path_alike() {
        assert_eq!(split(b"a\0b\0c\0d\0e\0f\0g"), ["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(split(b"filter_state\0k\xff"), ["filter_state", "k\u{fffd}"]);
        assert_eq!(split(b"request.\xffx"), ["request", "\u{fffd}x"]);
    }
}
