//! Pure fault decisions (no hostcalls): rule matching, percentage draws, Envoy's
//! header-controlled faults, and the local reply an abort sends.

use regex::Regex;

/// A share of requests, in millionths (Envoy `FractionalPercent` MILLION): `0.1` % → 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percent(u32);

/// Istio `StringMatch`.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// `exact`.
    Exact(String),
    /// `prefix`.
    Prefix(String),
    /// `regex` (RE2 syntax, anchored: the whole value must match).
    Regex(Regex),
    /// `{}`: the header must be present.
    Present,
}

/// One `match` block: every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// Matched on `:path` (the query string is ignored except by `prefix`).
    pub uri: Option<StringMatch>,
    /// Lower-case header names.
    pub headers: Vec<(String, StringMatch)>,
}

/// What an abort answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortKind {
    /// HTTP status (200–599).
    Http(u16),
    /// gRPC status code (0–16), sent as HTTP 200 with `grpc-status`.
    Grpc(u32),
}

/// A configured delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayFault {
    /// The delay in ms.
    pub ms: u64,
    /// Share of matching requests delayed.
    pub percent: Percent,
}

/// A configured abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortFault {
    /// The answer.
    pub kind: AbortKind,
    /// Share of matching requests aborted.
    pub percent: Percent,
}

/// One rule: when any `matches` block holds (or the list is empty), inject its faults.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// ORed match blocks; empty = every request.
    pub matches: Vec<Match>,
    /// Delay, if any.
    pub delay: Option<DelayFault>,
    /// Abort, if any.
    pub abort: Option<AbortFault>,
}

/// Faults requested by `x-envoy-fault-*` headers (already parsed; invalid values dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderFaults {
    /// `x-envoy-fault-abort-request` (HTTP status in 200..600).
    pub abort_http: Option<u16>,
    /// `x-envoy-fault-abort-grpc-request` (0–16).
    pub abort_grpc: Option<u32>,
    /// `x-envoy-fault-abort-request-percentage`.
    pub abort_percent: Option<Percent>,
    /// `x-envoy-fault-delay-request` (ms).
    pub delay_ms: Option<u64>,
    /// `x-envoy-fault-delay-request-percentage`.
    pub delay_percent: Option<Percent>,
}

/// What to inject into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Delay first (flag `DI`)…
    pub delay_ms: Option<u64>,
    /// …then abort (flag `FI`).
    pub abort: Option<AbortKind>,
}

/// The request as the policy sees it.
pub trait RequestView {
    /// `:path`.
    fn path(&self) -> &str;
    /// The value of header `name` (lower case), if present.
    fn header(&self, name: &str) -> Option<String>;
}

/// Names of gRPC status codes (Istio's `grpcStatus` is a name such as `"UNAVAILABLE"`).
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Header names of Envoy's header-controlled faults.
pub mod headers {
    /// HTTP status to abort with.
    pub const ABORT: &str = "x-envoy-fault-abort-request";
    /// gRPC status to abort with.
    pub const ABORT_GRPC: &str = "x-envoy-fault-abort-grpc-request";
    /// Percentage of requests to abort.
    pub const ABORT_PERCENT: &str = "x-envoy-fault-abort-request-percentage";
    /// Delay in ms.
    pub const DELAY: &str = "x-envoy-fault-delay-request";
    /// Percentage of requests to delay.
    pub const DELAY_PERCENT: &str = "x-envoy-fault-delay-request-percentage";
}

// === impl Percent ===

impl Percent {
    /// Every request.
    pub const ALL: Percent = Percent(1_000_000);

    /// From Istio's `percentage.value` (a double, 0–100: `0.1` means 0.1 %); `None` if out of range.
    pub fn from_value(value: f64) -> Option<Percent> {
        if !(0.0..=100.0).contains(&value) {
            return None;
        }
        // 0 ≤ value·10⁴ ≤ 10⁶: fits a u32 exactly after rounding.
        Some(Percent((value * 10_000.0).round() as u32))
    }

    /// Millionths of requests.
    pub fn millionths(self) -> u32 {
        self.0
    }

    /// Whether a request drawing the random number `r` is selected.
    pub fn hit(self, r: u64) -> bool {
        r % 1_000_000 < u64::from(self.0)
    }

    /// The smaller of the two (a header cannot raise the configured ceiling).
    pub fn min(self, other: Percent) -> Percent {
        Percent(self.0.min(other.0))
    }
}

// === impl StringMatch ===

impl StringMatch {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
            StringMatch::Present => true,
        }
    }
}

// === impl Match ===

impl Match {
    /// Whether every condition of the block holds for `req`.
    pub fn matches(&self, req: &dyn RequestView) -> bool {
        if let Some(uri) = &self.uri {
            let full = req.path();
            let ok = match uri {
                StringMatch::Prefix(_) => uri.matches(full),
                _ => uri.matches(full.split('?').next().unwrap_or(full)),
            };
            if !ok {
                return false;
            }
        }
        self.headers.iter().all(|(name, m)| req.header(name).is_some_and(|v| m.matches(&v)))
    }
}

// === impl Rule ===

impl Rule {
    /// Whether the rule applies to `req`.
    pub fn applies(&self, req: &dyn RequestView) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }
}

// === impl HeaderFaults ===

impl HeaderFaults {
    /// Reads the `x-envoy-fault-*` headers; invalid values are ignored (as in Envoy).
    pub fn parse(req: &dyn RequestView) -> HeaderFaults {
        let int = |name: &str| req.header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let pct = |name: &str| {
            req.header(name).and_then(|v| v.trim().parse::<f64>().ok()).and_then(|v| Percent::from_value(v.min(100.0)))
        };
        HeaderFaults {
            abort_http: int(headers::ABORT).and_then(|c| u16::try_from(c).ok()).filter(|c| (200..600).contains(c)),
            abort_grpc: int(headers::ABORT_GRPC).and_then(|c| u32::try_from(c).ok()).filter(|c| *c <= 16),
            abort_percent: pct(headers::ABORT_PERCENT),
            delay_ms: int(headers::DELAY),
            delay_percent: pct(headers::DELAY_PERCENT),
        }
    }

    /// Whether any fault header is present.
    pub fn any(&self) -> bool {
        self.abort_http.is_some() || self.abort_grpc.is_some() || self.delay_ms.is_some()
    }
}

// === impl Plan ===

impl Plan {
    /// Decides the faults for `req`: the first rule that applies gives the configured
    /// faults; fault headers (when `header_ceiling` is set, i.e. `headerControl: true`)
    /// replace the configured fault of the same kind, with their percentage (default 100 %)
    /// capped at the ceiling. An HTTP abort header wins over a gRPC one. `draw` gives one
    /// random number per percentage test.
    pub fn decide(
        rules: &[Rule],
        req: &dyn RequestView,
        header_ceiling: Option<Percent>,
        mut draw: impl FnMut() -> u64,
    ) -> Plan {
        let rule = rules.iter().find(|r| r.applies(req));
        let mut delay = rule.and_then(|r| r.delay);
        let mut abort = rule.and_then(|r| r.abort);
        if let Some(ceiling) = header_ceiling {
            let h = HeaderFaults::parse(req);
            if let Some(ms) = h.delay_ms {
                delay = Some(DelayFault { ms, percent: h.delay_percent.unwrap_or(Percent::ALL).min(ceiling) });
            }
            let kind = h.abort_http.map(AbortKind::Http).or(h.abort_grpc.map(AbortKind::Grpc));
            if let Some(kind) = kind {
                abort = Some(AbortFault { kind, percent: h.abort_percent.unwrap_or(Percent::ALL).min(ceiling) });
            }
        }
        Plan {
            delay_ms: delay.filter(|d| d.ms > 0 && d.percent.hit(draw())).map(|d| d.ms),
            abort: abort.filter(|a| a.percent.hit(draw())).map(|a| a.kind),
        }
    }

    /// Whether nothing is injected.
    pub fn is_empty(&self) -> bool {
        self.delay_ms.is_none() && self.abort.is_none()
    }
}

/// The local reply of an abort: `(status, headers, body)`. A gRPC abort, or an HTTP abort of
/// a gRPC request (`is_grpc_request`), is HTTP 200 with `grpc-status` (HTTP codes mapped as
/// Envoy's `httpToGrpcStatus` does).
pub fn abort_reply(kind: AbortKind, is_grpc_request: bool) -> (u16, Vec<(&'static str, String)>, &'static [u8]) {
    const BODY: &[u8] = b"fault filter abort";
    let grpc = match kind {
        AbortKind::Grpc(code) => Some(code),
        AbortKind::Http(status) if is_grpc_request => Some(http_to_grpc(status)),
        AbortKind::Http(_) => None,
    };
    match (kind, grpc) {
        (_, Some(code)) => (
            200,
            vec![
                ("content-type", "application/grpc".to_string()),
                ("grpc-status", code.to_string()),
                ("grpc-message", "fault filter abort".to_string()),
            ],
            b"",
        ),
        (AbortKind::Http(status), None) => (status, vec![("content-type", "text/plain".to_string())], BODY),
        (AbortKind::Grpc(_), None) => (200, Vec::new(), b""),
    }
}

/// Envoy `Grpc::Utility::httpToGrpcStatus`.
pub fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Parses Istio's `grpcStatus`: a code name (`"UNAVAILABLE"`) or a number 0–16.
pub fn parse_grpc_status(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(i) = GRPC_CODES.iter().position(|n| n.eq_ignore_ascii_case(t)) {
        return u32::try_from(i).ok();
    }
    t.parse::<u32>().ok().filter(|c| *c <= 16)
}

#[cfg(test)]
mod tests;
