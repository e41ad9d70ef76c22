//! Trace context: extraction from W3C (`traceparent`/`tracestate`) and B3 (multi-header
//! and single `b3`) request headers, the sampling decision, and the headers that make
//! this hop's span the upstream's parent. Invalid headers are ignored (a new trace
//! starts), never trusted half-way.

use super::rng::{percent_hit, Rng};

/// The trace-context request headers this module reads and rewrites, in the order
/// [`extract`] asks for their values by index.
pub const HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Indices into [`HEADERS`].
const TRACEPARENT: usize = 0;
const TRACESTATE: usize = 1;
const B3: usize = 2;
const X_B3_TRACEID: usize = 3;
const X_B3_SPANID: usize = 4;
const X_B3_PARENTSPANID: usize = 5;
const X_B3_SAMPLED: usize = 6;
const X_B3_FLAGS: usize = 7;

/// A header format written to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// W3C `traceparent` + `tracestate`.
    W3c,
    /// B3 multi-header (`x-b3-traceid`, `x-b3-spanid`, …).
    B3,
    /// B3 single header (`b3`).
    B3Single,
}

/// A remote span: the parent of this hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// Trace id (128-bit; 64-bit B3 ids are zero-extended).
    pub trace_id: u128,
    /// The parent's span id.
    pub span_id: u64,
}

/// What the incoming request headers say about tracing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The parent span, when a header carried a valid one.
    pub parent: Option<SpanContext>,
    /// The parent's sampling decision, if it made one.
    pub sampled: Option<bool>,
    /// Debug flag (`x-b3-flags: 1`, `b3: …-d`): always sample.
    pub debug: bool,
    /// W3C `tracestate` (kept only alongside a valid `traceparent`).
    pub tracestate: Option<String>,
    /// Which header forms the request carried (they are rewritten too).
    pub seen_w3c: bool,
    /// `x-b3-*` headers were present.
    pub seen_b3: bool,
    /// A `b3` header was present.
    pub seen_b3_single: bool,
}

/// This hop's span context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Trace id (the parent's, or new).
    pub trace_id: u128,
    /// This hop's span id (new).
    pub span_id: u64,
    /// The parent's span id; `None` for a root span.
    pub parent_span_id: Option<u64>,
    /// Sampled (spans are recorded and the decision is propagated).
    pub sampled: bool,
    /// Debug (propagated as B3 debug).
    pub debug: bool,
    /// W3C `tracestate` passed through.
    pub tracestate: Option<String>,
}

// === impl Propagation ===

impl Propagation {
    /// Parses the config value (`w3c`, `b3`, `b3_single`).
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "w3c" => Some(Propagation::W3c),
            "b3" => Some(Propagation::B3),
            "b3_single" => Some(Propagation::B3Single),
            _ => None,
        }
    }
}

// === impl Hop ===

impl Hop {
    /// Starts this hop: continues the parent's trace (or a new one), with a new span id
    /// and the sampling decision (see [`decide`]).
    pub fn start(incoming: &Incoming, forced: bool, percent: f64, rng: &mut Rng) -> Hop {
        let (trace_id, parent_span_id) = match incoming.parent {
            Some(p) => (p.trace_id, Some(p.span_id)),
            None => (rng.trace_id(), None),
        };
        Hop {
            trace_id,
            span_id: rng.span_id(),
            parent_span_id,
            sampled: decide(incoming, forced, percent, trace_id),
            debug: incoming.debug,
            tracestate: incoming.tracestate.clone(),
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(self.trace_id, 32)
    }

    /// Request-header edits for the upstream: sets, and removals of stale headers.
    /// Writes every configured format plus every format the request came with, so no
    /// stale parent id reaches the upstream.
    pub fn outgoing_headers(&self, formats: &[Propagation], incoming: &Incoming) -> Outgoing {
        let mut out = Outgoing { text: String::with_capacity(160), edits: Vec::with_capacity(8) };
        let sampled = if self.sampled { "1" } else { "0" };
        // B3 keeps 64-bit trace ids at 16 digits.
        let b3_digits = if self.trace_id >> 64 == 0 { 16 } else { 32 };
        if formats.contains(&Propagation::W3c) || incoming.seen_w3c {
            out.set(TRACEPARENT, |t| {
                t.push_str("00-");
                push_hex(t, self.trace_id, 32);
                t.push('-');
                push_hex(t, self.span_id.into(), 16);
                t.push_str(if self.sampled { "-01" } else { "-00" });
            });
            match &self.tracestate {
                Some(state) => out.set(TRACESTATE, |t| t.push_str(state)),
                None => out.remove(TRACESTATE),
            }
        }
        if formats.contains(&Propagation::B3) || incoming.seen_b3 {
            out.set(X_B3_TRACEID, |t| push_hex(t, self.trace_id, b3_digits));
            out.set(X_B3_SPANID, |t| push_hex(t, self.span_id.into(), 16));
            match self.parent_span_id {
                Some(p) => out.set(X_B3_PARENTSPANID, |t| push_hex(t, p.into(), 16)),
                None => out.remove(X_B3_PARENTSPANID),
            }
            if self.debug {
                // B3: debug implies an accept decision; do not also send X-B3-Sampled.
                out.set(X_B3_FLAGS, |t| t.push('1'));
                out.remove(X_B3_SAMPLED);
            } else {
                out.set(X_B3_SAMPLED, |t| t.push_str(sampled));
                out.remove(X_B3_FLAGS);
            }
        }
        if formats.contains(&Propagation::B3Single) || incoming.seen_b3_single {
            let state = if self.debug { "d" } else { sampled };
            out.set(B3, |t| {
                push_hex(t, self.trace_id, b3_digits);
                t.push('-');
                push_hex(t, self.span_id.into(), 16);
                t.push('-');
                t.push_str(state);
                if let Some(p) = self.parent_span_id {
                    t.push('-');
                    push_hex(t, p.into(), 16);
                }
            });
        }
        out
    }
}

/// The trace headers to write upstream, their values in one buffer (a request sets up to
/// four and removes as many; one allocation instead of one per value).
#[derive(Debug, Default)]
pub struct Outgoing {
    text: String,
    /// Header (index into [`HEADERS`]) and the value's range in `text`; `None` removes
    /// the header.
    edits: Vec<(usize, Option<(usize, usize)>)>,
}

impl Outgoing {
    fn set(&mut self, header: usize, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        self.edits.push((header, Some((start, self.text.len()))));
    }

    fn remove(&mut self, header: usize) {
        self.edits.push((header, None));
    }

    /// The edits in order: `(index in HEADERS, name, Some(value))` sets, `(…, None)`
    /// removes.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &'static str, Option<&str>)> + '_ {
        self.edits.iter().map(|&(i, range)| (i, HEADERS[i], range.and_then(|(a, b)| self.text.get(a..b))))
    }
}

/// Appends the low `digits * 4` bits of `v` as `digits` lower-case hex digits.
fn push_hex(out: &mut String, v: u128, digits: usize) {
    // wasm32 has no 128-bit shifts (each is a libcall): the halves are written as u64s,
    // only those the digits reach (span ids and 64-bit trace ids: the low one).
    let digits = digits.min(32);
    if digits > 16 {
        push_ascii(out, &hex16((v >> 64) as u64)[32 - digits..]);
    }
    let low = hex16(v as u64);
    push_ascii(out, &low[16 - digits.min(16)..]);
}

/// Appends hex digits made by [`hex16`].
fn push_ascii(out: &mut String, digits: &[u8]) {
    debug_assert!(digits.is_ascii());
    // SAFETY: `hex16` writes only the ASCII bytes `0-9a-f`, which are valid UTF-8; a
    // validating conversion cost more than the formatting itself.
    out.push_str(unsafe { std::str::from_utf8_unchecked(digits) });
}

/// `v` as 16 lower-case hex digits, computed on whole words (a table lookup per byte
/// cost ~28 guest instructions a byte).
fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex8((v >> 32) as u32));
    out[8..].copy_from_slice(&hex8(v as u32));
    out
}

/// `x` as 8 lower-case hex digits: each nibble spread into its own byte (most
/// significant first), then turned into ASCII without a branch.
fn hex8(x: u32) -> [u8; 8] {
    let x = u64::from(x);
    let x = ((x & 0xffff_0000) << 16) | (x & 0x0000_ffff);
    let x = ((x & 0x0000_ff00_0000_ff00) << 8) | (x & 0x0000_00ff_0000_00ff);
    let x = ((x & 0x00f0_00f0_00f0_00f0) << 4) | (x & 0x000f_000f_000f_000f);
    // 1 in each byte whose nibble is 10 or more (adding 6 carries it into bit 4).
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// The low `digits * 4` bits of `v` as `digits` lower-case hex digits (zero-padded;
/// `format!`'s u128 path costs more in a guest).
pub fn hex(v: u128, digits: usize) -> String {
    let mut s = String::with_capacity(digits);
    push_hex(&mut s, v, digits);
    s
}

/// A span id as 16 hex digits.
pub fn hex64(v: u64) -> String {
    hex(u128::from(v), 16)
}

/// The sampling decision: debug or forced (`x-client-trace-id`, `x-envoy-force-trace`)
/// → yes; else the parent's decision; else `percent` %, drawn from the trace id so every
/// hop that must decide for the same trace decides alike.
pub fn decide(incoming: &Incoming, forced: bool, percent: f64, trace_id: u128) -> bool {
    if incoming.debug || forced {
        return true;
    }
    match incoming.sampled {
        Some(s) => s,
        None => percent_hit(trace_id as u64, percent),
    }
}

/// Reads the trace context from request headers (`get` returns the value of
/// `HEADERS[i]`). Precedence: `traceparent`, then `b3`, then `x-b3-*`.
pub fn extract<'a>(get: impl Fn(usize) -> Option<&'a str>) -> Incoming {
    let mut inc = Incoming::default();
    let traceparent = get(TRACEPARENT);
    let b3 = get(B3);
    let x_trace = get(X_B3_TRACEID);
    let x_span = get(X_B3_SPANID);
    let x_sampled = get(X_B3_SAMPLED);
    let x_flags = get(X_B3_FLAGS);
    inc.seen_w3c = traceparent.is_some();
    inc.seen_b3_single = b3.is_some();
    inc.seen_b3 = x_trace.is_some() || x_span.is_some() || x_sampled.is_some() || x_flags.is_some();

    if let Some((ctx, flags)) = traceparent.and_then(parse_traceparent) {
        inc.parent = Some(ctx);
        inc.sampled = Some(flags & 1 == 1);
        inc.tracestate = get(TRACESTATE).filter(|s| !s.trim().is_empty() && s.len() <= 512).map(str::to_string);
    } else if let Some(single) = b3.and_then(parse_b3_single) {
        inc.parent = single.ctx;
        match single.sampling {
            Some(Sampling::Debug) => inc.debug = true,
            Some(Sampling::Yes) => inc.sampled = Some(true),
            Some(Sampling::No) => inc.sampled = Some(false),
            None => {}
        }
    } else {
        if let (Some(t), Some(s)) = (x_trace, x_span) {
            if let (Some(trace_id), Some(span_id)) = (parse_b3_trace_id(t), parse_id64(s)) {
                inc.parent = Some(SpanContext { trace_id, span_id });
            }
        }
        inc.sampled = match x_sampled.map(str::trim) {
            Some("1") | Some("true") => Some(true),
            Some("0") | Some("false") => Some(false),
            Some("d") => {
                inc.debug = true;
                None
            }
            _ => None,
        };
    }
    if x_flags.map(str::trim) == Some("1") {
        inc.debug = true;
    }
    inc
}

/// Parses a W3C `traceparent`: `version-traceid-parentid-flags`, lower-case hex,
/// non-zero ids, version `ff` invalid; a version above `00` may carry more fields.
pub fn parse_traceparent(s: &str) -> Option<(SpanContext, u8)> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex_lower(&s[0..2])? as u8;
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = hex_lower(&s[3..35])?;
    let span_id = hex_lower(&s[36..52])? as u64;
    let flags = hex_lower(&s[53..55])? as u8;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((SpanContext { trace_id, span_id }, flags))
}

/// A B3 sampling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// `1`.
    Yes,
    /// `0`.
    No,
    /// `d` (debug).
    Debug,
}

/// A parsed single `b3` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3Single {
    /// Trace and span id (absent for a sampling-only header such as `b3: 0`).
    pub ctx: Option<SpanContext>,
    /// Sampling state.
    pub sampling: Option<Sampling>,
    /// Parent span id (informational).
    pub parent_span_id: Option<u64>,
}

/// Parses `b3: {traceid}-{spanid}[-{sampling}[-{parentspanid}]]` or `b3: {sampling}`.
pub fn parse_b3_single(s: &str) -> Option<B3Single> {
    let s = s.trim();
    let sampling = |v: &str| match v {
        "1" => Some(Sampling::Yes),
        "0" => Some(Sampling::No),
        "d" => Some(Sampling::Debug),
        _ => None,
    };
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [only] => Some(B3Single { ctx: None, sampling: Some(sampling(only)?), parent_span_id: None }),
        [t, sp, rest @ ..] if rest.len() <= 2 => {
            let ctx = SpanContext { trace_id: parse_b3_trace_id(t)?, span_id: parse_id64(sp)? };
            let state = match rest.first() {
                Some(v) => Some(sampling(v)?),
                None => None,
            };
            let parent_span_id = match rest.get(1) {
                Some(p) => Some(parse_id64(p)?),
                None => None,
            };
            Some(B3Single { ctx: Some(ctx), sampling: state, parent_span_id })
        }
        _ => None,
    }
}

/// A B3 trace id: 16 or 32 hex digits, not zero.
fn parse_b3_trace_id(s: &str) -> Option<u128> {
    let s = s.trim();
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    hex_any(s).filter(|v| *v != 0)
}

/// A 64-bit id: exactly 16 hex digits, not zero.
fn parse_id64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() != 16 {
        return None;
    }
    hex_any(s).map(|v| v as u64).filter(|v| *v != 0)
}

fn hex_lower(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

fn hex_any(s: &str) -> Option<u128> {
    // from_str_radix accepts a leading `+`: check the digits first.
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests;
