//! Spans and their OTLP/HTTP JSON encoding (`ExportTraceServiceRequest`): hex trace and
//! span ids, enums as integers, 64-bit integers as decimal strings.

use std::borrow::Cow;

use serde::Serialize;

use super::trace::{self, Hop};
use super::Record;

/// Instrumentation scope name of exported spans.
pub const SCOPE_NAME: &str = "wasmesh-telemetry";

/// Span kind (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Inbound hop (`SPAN_KIND_SERVER` = 2).
    Server,
    /// Outbound hop (`SPAN_KIND_CLIENT` = 3).
    Client,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// `stringValue`.
    Str(String),
    /// `intValue`.
    Int(i64),
    /// `boolValue`.
    Bool(bool),
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Trace id.
    pub trace_id: u128,
    /// Span id.
    pub span_id: u64,
    /// Parent span id (`None`: root).
    pub parent_span_id: Option<u64>,
    /// W3C tracestate.
    pub trace_state: Option<String>,
    /// Operation name.
    pub name: String,
    /// Kind.
    pub kind: SpanKind,
    /// Start, Unix ns.
    pub start_unix_ns: u64,
    /// End, Unix ns.
    pub end_unix_ns: u64,
    /// Attributes in order.
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
    /// Error status (5xx, or a gRPC error).
    pub error: bool,
}

/// Per-VM facts every span carries.
#[derive(Debug, Clone, Default)]
pub struct SpanStatics {
    /// `node_id` attribute (the proxy's node id).
    pub node_id: String,
    /// `istio.canonical_service`.
    pub canonical_service: Option<String>,
    /// `istio.canonical_revision`.
    pub canonical_revision: Option<String>,
    /// `istio.namespace`.
    pub namespace: Option<String>,
    /// Longest `http.url` kept, in characters (Envoy's `max_path_tag_length`); 0: no limit.
    pub max_path_tag_length: usize,
}

// === impl SpanKind ===

impl SpanKind {
    fn otlp(self) -> u8 {
        match self {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        }
    }
}

// === impl Span ===

impl Span {
    /// This hop's span for a finished request, with Istio's/Envoy's attributes.
    /// `now_unix_ns` is the end time when the record lacks one.
    pub fn from_record(hop: &Hop, kind: SpanKind, r: &Record, statics: &SpanStatics, now_unix_ns: u64) -> Span {
        let start = r.start_unix_ns.unwrap_or(now_unix_ns);
        let end = match r.duration_ns {
            Some(d) => start.saturating_add(d),
            None => now_unix_ns.max(start),
        };
        let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        let authority = r.authority.clone().unwrap_or_default();
        let path = r.path.clone().unwrap_or_else(|| "/".to_string());
        let mut attributes = vec![
            ("component", AttrValue::Str("proxy".into())),
            ("node_id", AttrValue::Str(statics.node_id.clone())),
            ("guid:x-request-id", AttrValue::Str(s(&r.request_id))),
            ("http.method", AttrValue::Str(s(&r.method))),
            ("http.url", AttrValue::Str(truncate(format!("http://{authority}{path}"), statics.max_path_tag_length))),
            ("http.protocol", AttrValue::Str(s(&r.protocol))),
            ("user_agent", AttrValue::Str(s(&r.user_agent))),
            ("downstream_cluster", AttrValue::Str("-".into())),
            ("peer.address", AttrValue::Str(s(&r.downstream_remote_address))),
            ("request_size", AttrValue::Int(r.bytes_received.unwrap_or(0) as i64)),
            ("response_size", AttrValue::Int(r.bytes_sent.unwrap_or(0) as i64)),
            ("upstream_cluster", AttrValue::Str(s(&r.upstream_cluster))),
            ("upstream_cluster.name", AttrValue::Str(s(&r.upstream_cluster))),
            ("http.status_code", AttrValue::Int(i64::from(r.response_code.unwrap_or(0)))),
            ("response_flags", AttrValue::Str(r.flags_text())),
        ];
        if let Some(h) = &r.upstream_host {
            attributes.push(("upstream_address", AttrValue::Str(h.clone())));
        }
        let mut attributes: Vec<(Cow<'static, str>, AttrValue)> =
            attributes.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect();
        if let Some(g) = r.grpc_status.filter(|_| r.is_grpc()) {
            attributes.push(("grpc.status_code".into(), AttrValue::Int(g as i64)));
        }
        for (k, v) in [
            ("istio.canonical_service", &statics.canonical_service),
            ("istio.canonical_revision", &statics.canonical_revision),
            ("istio.namespace", &statics.namespace),
        ] {
            if let Some(v) = v {
                attributes.push((k.into(), AttrValue::Str(v.clone())));
            }
        }
        let error = r.response_code.is_none_or(|c| c >= 500) || (r.is_grpc() && r.grpc_status.is_some_and(|g| g != 0));
        if error {
            attributes.push(("error".into(), AttrValue::Bool(true)));
        }
        Span {
            trace_id: hop.trace_id,
            span_id: hop.span_id,
            parent_span_id: hop.parent_span_id,
            trace_state: hop.tracestate.clone(),
            name: format!("{authority}/*"),
            kind,
            start_unix_ns: start,
            end_unix_ns: end,
            attributes,
            error,
        }
    }

    fn to_json(&self) -> JsonSpan<'_> {
        JsonSpan {
            trace_id: trace::hex(self.trace_id, 32),
            span_id: trace::hex64(self.span_id),
            parent_span_id: self.parent_span_id.map(trace::hex64),
            trace_state: self.trace_state.as_deref(),
            name: &self.name,
            kind: self.kind.otlp(),
            start_time_unix_nano: self.start_unix_ns.to_string(),
            end_time_unix_nano: self.end_unix_ns.to_string(),
            attributes: self.attributes.iter().map(|(k, v)| attribute(k, v)).collect(),
            status: JsonStatus { code: self.error.then_some(2) },
        }
    }
}

// The OTLP JSON shapes, serialized from borrowed fields (a `serde_json::Value` tree cost
// ~80 µs per span in profiles).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_state: Option<&'a str>,
    name: &'a str,
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<JsonAttribute<'a>>,
    status: JsonStatus,
}

#[derive(Serialize)]
struct JsonStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u8>,
}

#[derive(Serialize)]
struct JsonAttribute<'a> {
    key: &'a str,
    value: JsonValue<'a>,
}

#[derive(Serialize)]
enum JsonValue<'a> {
    #[serde(rename = "stringValue")]
    Str(&'a str),
    /// 64-bit integers are decimal strings in OTLP JSON.
    #[serde(rename = "intValue")]
    Int(String),
    #[serde(rename = "boolValue")]
    Bool(bool),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonRequest<'a> {
    resource_spans: [JsonResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResourceSpans<'a> {
    resource: JsonResource<'a>,
    scope_spans: [JsonScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct JsonResource<'a> {
    attributes: [JsonAttribute<'a>; 1],
}

#[derive(Serialize)]
struct JsonScopeSpans<'a> {
    scope: JsonScope,
    spans: Vec<JsonSpan<'a>>,
}

#[derive(Serialize)]
struct JsonScope {
    name: &'static str,
    version: &'static str,
}

/// Cuts `s` to at most `max` characters (0: no limit).
fn truncate(mut s: String, max: usize) -> String {
    if max > 0 {
        if let Some((i, _)) = s.char_indices().nth(max) {
            s.truncate(i);
        }
    }
    s
}

fn attribute<'a>(key: &'a str, v: &'a AttrValue) -> JsonAttribute<'a> {
    let value = match v {
        AttrValue::Str(s) => JsonValue::Str(s),
        AttrValue::Int(i) => JsonValue::Int(i.to_string()),
        AttrValue::Bool(b) => JsonValue::Bool(*b),
    };
    JsonAttribute { key, value }
}

/// Encodes one export request body: one resource (`service.name` = `service_name`), one
/// scope, all `spans`.
pub fn encode(service_name: &str, spans: &[Span]) -> String {
    let request = JsonRequest {
        resource_spans: [JsonResourceSpans {
            resource: JsonResource {
                attributes: [JsonAttribute { key: "service.name", value: JsonValue::Str(service_name) }],
            },
            scope_spans: [JsonScopeSpans {
                scope: JsonScope { name: SCOPE_NAME, version: env!("CARGO_PKG_VERSION") },
                spans: spans.iter().map(Span::to_json).collect(),
            }],
        }],
    };
    // Only strings, integers and booleans: serializing cannot fail.
    serde_json::to_string(&request).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn hop(parent: Option<u64>) -> Hop {
        Hop {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            parent_span_id: parent,
            sampled: true,
            debug: false,
            tracestate: parent.map(|_| "k=v".to_string()),
        }
    }

    fn record(code: Option<u16>) -> Record {
        Record {
            start_unix_ns: Some(1_000_000_000),
            duration_ns: Some(25_000_000),
            method: Some("GET".into()),
            path: Some("/reviews/0?x=1".into()),
            protocol: Some("HTTP/1.1".into()),
            authority: Some("reviews:9080".into()),
            request_id: Some("req-1".into()),
            response_code: code,
            response_flags: if code.is_none() { vec!["UF".into()] } else { vec![] },
            upstream_cluster: Some("reviews".into()),
            bytes_received: Some(120),
            bytes_sent: Some(2048),
            ..Record::default()
        }
    }

    fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
        span["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["key"] == key))
            .map(|x| &x["value"])
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn span_batch_encodes_as_otlp_json() {
        let statics = SpanStatics {
            node_id: "sidecar~10.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local".into(),
            canonical_service: Some("reviews".into()),
            ..SpanStatics::default()
        };
        let a = Span::from_record(&hop(Some(0x1122334455667788)), SpanKind::Server, &record(Some(200)), &statics, 0);
        let b = Span::from_record(&hop(None), SpanKind::Client, &record(None), &statics, 5_000_000_000);
        let body = encode("reviews.bookinfo", &[a, b]);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let rs = &v["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "reviews.bookinfo");
        let ss = &rs["scopeSpans"][0];
        assert_eq!(ss["scope"]["name"], SCOPE_NAME);
        let spans = ss["spans"].as_array().cloned().unwrap_or_default();
        assert_eq!(spans.len(), 2);
        let s = &spans[0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00f067aa0ba902b7");
        assert_eq!(s["parentSpanId"], "1122334455667788");
        assert_eq!(s["traceState"], "k=v");
        assert_eq!(s["name"], "reviews:9080/*");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1000000000");
        assert_eq!(s["endTimeUnixNano"], "1025000000");
        assert_eq!(s["status"], json!({}));
        assert_eq!(attr(s, "http.method")["stringValue"], "GET");
        assert_eq!(attr(s, "http.url")["stringValue"], "http://reviews:9080/reviews/0?x=1");
        assert_eq!(attr(s, "http.status_code")["intValue"], "200");
        assert_eq!(attr(s, "upstream_cluster")["stringValue"], "reviews");
        assert_eq!(attr(s, "guid:x-request-id")["stringValue"], "req-1");
        assert_eq!(attr(s, "component")["stringValue"], "proxy");
        assert_eq!(attr(s, "node_id")["stringValue"], statics.node_id.as_str());
        assert_eq!(attr(s, "response_flags")["stringValue"], "-");
        assert_eq!(attr(s, "istio.canonical_service")["stringValue"], "reviews");
        assert_eq!(attr(s, "error"), &Value::Null);
        let c = &spans[1];
        assert_eq!(c["kind"], 3);
        assert!(c.get("parentSpanId").is_none() && c.get("traceState").is_none());
        assert_eq!(c["status"]["code"], 2, "no response is an error");
        assert_eq!(attr(c, "error")["boolValue"], true);
        assert_eq!(attr(c, "response_flags")["stringValue"], "UF");
        assert_eq!(attr(c, "http.status_code")["intValue"], "0");
    }

    #[test]
    fn missing_times_fall_back_to_now() {
        let mut r = record(Some(503));
        r.start_unix_ns = None;
        r.duration_ns = None;
        let s = Span::from_record(&hop(None), SpanKind::Server, &r, &SpanStatics::default(), 7);
        assert_eq!((s.start_unix_ns, s.end_unix_ns), (7, 7));
        assert!(s.error);
        let mut g = record(Some(200));
        g.content_type = Some("application/grpc".into());
        g.grpc_status = Some(5);
        assert!(Span::from_record(&hop(None), SpanKind::Server, &g, &SpanStatics::default(), 7).error);
    }

    #[test]
    fn long_urls_are_cut_at_max_path_tag_length() {
        let mut r = record(Some(200));
        r.path = Some(format!("/{}", "é".repeat(300)));
        let statics = SpanStatics { max_path_tag_length: 256, ..SpanStatics::default() };
        let s = Span::from_record(&hop(None), SpanKind::Server, &r, &statics, 0);
        let url = s.attributes.iter().find(|(k, _)| k == "http.url").map(|(_, v)| v.clone());
        match url {
            Some(AttrValue::Str(u)) => {
                assert_eq!(u.chars().count(), 256);
                assert!(u.starts_with("http://reviews:9080/é"));
            }
            other => panic!("http.url missing: {other:?}"),
        }
        assert_eq!(truncate("abc".into(), 0), "abc");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }
}
