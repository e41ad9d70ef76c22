//! Access-log lines: Envoy format strings (`%START_TIME%`, `%REQ(X?Y):N%`, …; Istio's
//! text default built in) or Istio's JSON field set, plus which requests get logged.

use std::fmt::Write as _;

use super::time::rfc3339_millis;
use super::Record;

/// Istio's default text format (`EnvoyTextLogFormat`, pilot/pkg/model/telemetry_logging.go).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \
\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

/// Istio's JSON keys (`EnvoyJSONLogFormatIstio`) in order, plus `trace_id`.
pub const JSON_KEYS: [&str; 25] = [
    "start_time",
    "route_name",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "response_code_details",
    "connection_termination_details",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
    "upstream_transport_failure_reason",
    "trace_id",
];

/// How a line is written.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    /// An Envoy format string, parsed.
    Text(Vec<Token>),
    /// One JSON object per line with [`JSON_KEYS`].
    Json,
}

/// A piece of a text format.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// Literal text.
    Lit(String),
    /// A `%COMMAND%`, truncated to `max_len` characters when given.
    Op(Op, Option<usize>),
}

/// The supported Envoy command operators.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `%START_TIME%`.
    StartTime,
    /// `%REQ(A?B)%`: header `A`, else `B` (lower-case names).
    Req(String, Option<String>),
    /// `%RESP(A?B)%`.
    Resp(String, Option<String>),
    /// `%REQ_WITHOUT_QUERY(A?B)%`: like `REQ`, without the query string.
    ReqWithoutQuery(String, Option<String>),
    /// `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`.
    UpstreamRequestAttemptCount,
    /// `%PROTOCOL%`.
    Protocol,
    /// `%RESPONSE_CODE%`.
    ResponseCode,
    /// `%RESPONSE_FLAGS%`.
    ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`.
    ResponseCodeDetails,
    /// `%CONNECTION_TERMINATION_DETAILS%` (not tracked: `-`).
    ConnectionTerminationDetails,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%` (not tracked: `-`).
    UpstreamTransportFailureReason,
    /// `%BYTES_RECEIVED%`.
    BytesReceived,
    /// `%BYTES_SENT%`.
    BytesSent,
    /// `%DURATION%` (ms).
    Duration,
    /// `%UPSTREAM_HOST%`.
    UpstreamHost,
    /// `%UPSTREAM_CLUSTER%` / `%UPSTREAM_CLUSTER_RAW%`.
    UpstreamCluster,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    UpstreamLocalAddress,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`.
    DownstreamLocalAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`.
    DownstreamRemoteAddressWithoutPort,
    /// `%REQUESTED_SERVER_NAME%`.
    RequestedServerName,
    /// `%ROUTE_NAME%`.
    RouteName,
    /// `%TRACE_ID%`.
    TraceId,
}

/// Which requests are logged. All given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessLogFilter {
    /// Only failures: no response, a status ≥ 400, or a gRPC status other than OK.
    pub only_errors: bool,
    /// Status (0 when no response) at least this.
    pub status_gte: Option<u16>,
    /// Status below this.
    pub status_lt: Option<u16>,
    /// At least one of these response flags is set (empty: no condition).
    pub response_flags: Vec<String>,
    /// Duration at least this many ms.
    pub min_duration_ms: Option<u64>,
}

// === impl LogFormat ===

impl LogFormat {
    /// Istio's default text format.
    pub fn istio_text() -> LogFormat {
        match LogFormat::parse_text(ISTIO_TEXT_FORMAT) {
            Ok(f) => f,
            // The built-in format is covered by a unit test; keep a usable fallback anyway.
            Err(_) => LogFormat::Json,
        }
    }

    /// Parses an Envoy format string; the error names the offending operator and where.
    pub fn parse_text(fmt: &str) -> Result<LogFormat, String> {
        let mut tokens = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        let mut pos = 0;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            let start = pos + i;
            let after = &rest[i + 1..];
            let Some(end) = after.find('%') else {
                return Err(format!("unterminated operator at byte {start}"));
            };
            let body = &after[..end];
            let op = parse_op(body).ok_or_else(|| format!("unknown operator %{body}% at byte {start}"))?;
            if !lit.is_empty() {
                tokens.push(Token::Lit(std::mem::take(&mut lit)));
            }
            tokens.push(op);
            let consumed = i + 1 + end + 1;
            rest = &rest[consumed..];
            pos += consumed;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            tokens.push(Token::Lit(lit));
        }
        Ok(LogFormat::Text(tokens))
    }

    /// Header names (lower case) outside [`Record`]'s fixed fields the format reads:
    /// `(request, response)`. The filter fetches only these.
    pub fn extra_headers(&self) -> (Vec<String>, Vec<String>) {
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        if let LogFormat::Text(tokens) = self {
            for t in tokens {
                match t {
                    Token::Op(Op::Req(a, b) | Op::ReqWithoutQuery(a, b), _) => {
                        for h in std::iter::once(a).chain(b) {
                            if !is_fixed_request_header(h) && !req.contains(h) {
                                req.push(h.clone());
                            }
                        }
                    }
                    Token::Op(Op::Resp(a, b), _) => {
                        for h in std::iter::once(a).chain(b) {
                            if h != "x-envoy-upstream-service-time" && !resp.contains(h) {
                                resp.push(h.clone());
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        (req, resp)
    }

    /// Renders one line (no trailing newline).
    pub fn render(&self, r: &Record) -> String {
        match self {
            LogFormat::Json => render_json(r),
            LogFormat::Text(tokens) => {
                let mut out = String::with_capacity(256);
                for t in tokens {
                    match t {
                        Token::Lit(s) => out.push_str(s),
                        Token::Op(op, max) => {
                            let v = text_value(op, r);
                            match max {
                                Some(n) => out.extend(v.chars().take(*n)),
                                None => out.push_str(&v),
                            }
                        }
                    }
                }
                out
            }
        }
    }
}

fn parse_op(body: &str) -> Option<Token> {
    let (body, max) = match body.rsplit_once("):") {
        Some((b, n)) => (format!("{b})"), Some(n.parse::<usize>().ok()?)),
        None => (body.to_string(), None),
    };
    let op = if let Some(args) = body.strip_prefix("REQ_WITHOUT_QUERY(").and_then(|b| b.strip_suffix(')')) {
        let (a, b) = header_alternatives(args)?;
        Op::ReqWithoutQuery(a, b)
    } else if let Some(args) = body.strip_prefix("REQ(").and_then(|b| b.strip_suffix(')')) {
        let (a, b) = header_alternatives(args)?;
        Op::Req(a, b)
    } else if let Some(args) = body.strip_prefix("RESP(").and_then(|b| b.strip_suffix(')')) {
        let (a, b) = header_alternatives(args)?;
        Op::Resp(a, b)
    } else {
        match body.as_str() {
            "START_TIME" => Op::StartTime,
            "PROTOCOL" => Op::Protocol,
            "RESPONSE_CODE" => Op::ResponseCode,
            "RESPONSE_FLAGS" => Op::ResponseFlags,
            "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
            "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
            "BYTES_RECEIVED" => Op::BytesReceived,
            "BYTES_SENT" => Op::BytesSent,
            "DURATION" => Op::Duration,
            "UPSTREAM_HOST" => Op::UpstreamHost,
            "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
            "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
            "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
            "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
            "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
            "ROUTE_NAME" => Op::RouteName,
            "TRACE_ID" => Op::TraceId,
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Op::UpstreamRequestAttemptCount,
            _ => return None,
        }
    };
    Some(Token::Op(op, max))
}

fn header_alternatives(args: &str) -> Option<(String, Option<String>)> {
    let valid =
        |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b':');
    let (a, b) = match args.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (args, None),
    };
    if !valid(a) || !b.is_none_or(valid) {
        return None;
    }
    Some((a.to_ascii_lowercase(), b.map(str::to_ascii_lowercase)))
}

/// Request headers held in [`Record`]'s own fields.
fn fixed_request_header<'a>(name: &str, r: &'a Record) -> Option<&'a Option<String>> {
    Some(match name {
        ":method" => &r.method,
        ":path" => &r.path,
        ":authority" | "host" => &r.authority,
        "x-envoy-original-path" => &r.original_path,
        "user-agent" => &r.user_agent,
        "x-forwarded-for" => &r.x_forwarded_for,
        "x-request-id" => &r.request_id,
        "content-type" => &r.content_type,
        _ => return None,
    })
}

fn is_fixed_request_header(name: &str) -> bool {
    fixed_request_header(name, &Record::default()).is_some()
}

fn req_header(r: &Record, name: &str) -> Option<String> {
    match fixed_request_header(name, r) {
        Some(v) => v.clone(),
        None => r.request_headers.get(name).cloned(),
    }
}

fn resp_header(r: &Record, name: &str) -> Option<String> {
    if name == "x-envoy-upstream-service-time" {
        return r.upstream_service_time.clone();
    }
    r.response_headers.get(name).cloned()
}

fn dash(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".to_string(),
    }
}

fn without_port(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.trim_start_matches('[').trim_end_matches(']'),
        _ => addr,
    }
}

fn text_value(op: &Op, r: &Record) -> String {
    match op {
        Op::StartTime => r.start_unix_ns.map_or_else(|| "-".to_string(), rfc3339_millis),
        Op::Req(a, b) => dash(req_header(r, a).or_else(|| b.as_deref().and_then(|b| req_header(r, b))).as_deref()),
        Op::Resp(a, b) => dash(resp_header(r, a).or_else(|| b.as_deref().and_then(|b| resp_header(r, b))).as_deref()),
        Op::ReqWithoutQuery(a, b) => {
            let v = req_header(r, a).or_else(|| b.as_deref().and_then(|b| req_header(r, b)));
            dash(v.as_deref().map(|v| v.split('?').next().unwrap_or(v)))
        }
        Op::UpstreamRequestAttemptCount => r.attempt_count.unwrap_or(0).to_string(),
        Op::Protocol => dash(r.protocol.as_deref()),
        Op::ResponseCode => r.response_code.unwrap_or(0).to_string(),
        Op::ResponseFlags => r.flags_text(),
        Op::ResponseCodeDetails => dash(r.code_details.as_deref()),
        Op::ConnectionTerminationDetails | Op::UpstreamTransportFailureReason => "-".to_string(),
        Op::BytesReceived => r.bytes_received.unwrap_or(0).to_string(),
        Op::BytesSent => r.bytes_sent.unwrap_or(0).to_string(),
        Op::Duration => r.duration_ms().map_or_else(|| "-".to_string(), |d| d.to_string()),
        Op::UpstreamHost => dash(r.upstream_host.as_deref()),
        Op::UpstreamCluster => dash(r.upstream_cluster.as_deref()),
        Op::UpstreamLocalAddress => dash(r.upstream_local_address.as_deref()),
        Op::DownstreamLocalAddress => dash(r.downstream_local_address.as_deref()),
        Op::DownstreamRemoteAddress => dash(r.downstream_remote_address.as_deref()),
        Op::DownstreamRemoteAddressWithoutPort => dash(r.downstream_remote_address.as_deref().map(without_port)),
        Op::RequestedServerName => dash(r.requested_server_name.as_deref()),
        Op::RouteName => dash(r.route_name.as_deref()),
        Op::TraceId => dash(r.trace_id.as_deref()),
    }
}

/// One JSON object with [`JSON_KEYS`] in order; unknown values are `null`.
pub fn render_json(r: &Record) -> String {
    use serde_json::Value;
    let s = |v: &Option<String>| v.clone().filter(|s| !s.is_empty()).map_or(Value::Null, Value::String);
    let n = |v: Option<u64>| v.map_or(Value::Null, |n| Value::Number(n.into()));
    let path = r.original_path.clone().or_else(|| r.path.clone());
    let values: [Value; 25] = [
        r.start_unix_ns.map_or(Value::Null, |t| Value::String(rfc3339_millis(t))),
        s(&r.route_name),
        s(&r.method),
        s(&path),
        s(&r.protocol),
        Value::Number(u64::from(r.response_code.unwrap_or(0)).into()),
        if r.response_flags.is_empty() { Value::Null } else { Value::String(r.flags_text()) },
        s(&r.code_details),
        Value::Null,
        n(Some(r.bytes_received.unwrap_or(0))),
        n(Some(r.bytes_sent.unwrap_or(0))),
        n(r.duration_ms()),
        s(&r.upstream_service_time),
        s(&r.x_forwarded_for),
        s(&r.user_agent),
        s(&r.request_id),
        s(&r.authority),
        s(&r.upstream_host),
        s(&r.upstream_cluster),
        s(&r.upstream_local_address),
        s(&r.downstream_local_address),
        s(&r.downstream_remote_address),
        s(&r.requested_server_name),
        Value::Null,
        s(&r.trace_id),
    ];
    let mut out = String::with_capacity(512);
    out.push('{');
    for (i, (k, v)) in JSON_KEYS.iter().zip(values.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "\"{k}\":{v}");
    }
    out.push('}');
    out
}

// === impl AccessLogFilter ===

impl AccessLogFilter {
    /// True when `r` should be logged.
    pub fn matches(&self, r: &Record) -> bool {
        let code = r.response_code.unwrap_or(0);
        if self.only_errors {
            let grpc_error = r.is_grpc() && r.grpc_status.is_some_and(|g| g != 0);
            if !(code == 0 || code >= 400 || grpc_error) {
                return false;
            }
        }
        if self.status_gte.is_some_and(|lo| code < lo) || self.status_lt.is_some_and(|hi| code >= hi) {
            return false;
        }
        if !self.response_flags.is_empty() && !self.response_flags.iter().any(|f| r.response_flags.contains(f)) {
            return false;
        }
        if let Some(min) = self.min_duration_ms {
            if r.duration_ms().unwrap_or(0) < min {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
