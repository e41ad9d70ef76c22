//! The `telemetry` filter: Istio's standard request metrics (exact names and labels),
//! W3C/B3 trace propagation with spans exported over OTLP/HTTP JSON, and access logs
//! (Istio's text or JSON format) through `wasmesh.access_log`. `config` parses and
//! validates, `policy` decides and formats, this file talks to the host.

pub mod config;
pub mod policy;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{ext, props, PropertyBatch};

use config::{Config, TagSource, TracingConfig};
use policy::export::ExportQueue;
use policy::grpc::FrameCounter;
use policy::labels::{self, Reporter, Workload};
use policy::otlp::{self, AttrValue, Span, SpanKind, SpanStatics};
use policy::rng::Rng;
use policy::trace::{self, Hop};
use policy::{flags, peer, Record};
use wasmesh_sdk::callbacks::{self, Callbacks};

/// Istio's standard HTTP metrics: requests, duration, request bytes, response bytes,
/// request messages, response messages (gRPC).
const ISTIO_METRICS: [&str; 6] = [
    "istio_requests_total",
    "istio_request_duration_milliseconds",
    "istio_request_bytes",
    "istio_response_bytes",
    "istio_request_messages_total",
    "istio_response_messages_total",
];
/// The filter's own span-export metrics.
const SPANS_DROPPED: &str = "wasmesh_telemetry_spans_dropped_total";
const SPANS_EXPORTED: &str = "wasmesh_telemetry_spans_exported_total";
/// Most decoded peer headers cached per VM.
const MAX_CACHED_PEERS: usize = 256;
/// Most export requests in flight per VM.
const MAX_EXPORTS_IN_FLIGHT: usize = 2;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(level: LogLevel, msg: &str) {
    // Logging is best effort: there is nowhere else to report a failed log call.
    let _ = hostcalls::log(level, msg);
}

/// Span-export counters.
struct ExportMetrics {
    dropped_buffer_full: Option<Counter>,
    dropped_export_failed: Option<Counter>,
    exported: Option<Counter>,
}

/// Everything one VM shares between its root and its streams.
struct Shared {
    config: Config,
    local: Workload,
    statics: SpanStatics,
    service_name: String,
    /// Extra request/response headers the access-log format reads.
    log_headers: (Vec<String>, Vec<String>),
    /// This workload's `x-envoy-peer-metadata` value and node id.
    local_header: String,
    node_id: String,
    /// The reporter: configured, else from the listener's direction (a root context
    /// serves one listener, whose direction a reload cannot change under it).
    reporter: Reporter,
    /// The request-metrics template of each peer learnt by metadata exchange (header
    /// value → template id; `None` when metrics are off or the host refused it).
    peers: RefCell<HashMap<String, Option<u32>>>,
    rng: RefCell<Rng>,
    /// `on_log`'s property reads: common, and as the destination.
    record_reads: [PropertyBatch; 2],
    /// The request-headers phase's reads ([`REQUEST_HEADER_PROPERTIES`]).
    request_reads: PropertyBatch,
    spans: RefCell<ExportQueue>,
    export_metrics: ExportMetrics,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
    /// The last export failed (log only on the change).
    failing: Cell<bool>,
}

/// A stream of a root without a valid config: does nothing.
struct PassThrough;

struct Stream {
    shared: Rc<Shared>,
    hop: Option<Hop>,
    /// gRPC message counters (request, response); `None` for other requests.
    frames: Option<(FrameCounter, FrameCounter)>,
}

// === impl Shared ===

impl Shared {
    fn tracing(&self) -> Option<&TracingConfig> {
        self.config.tracing.as_ref()
    }

    fn exporting(&self) -> bool {
        self.tracing().is_some_and(|t| t.cluster.is_some())
    }

    fn count(counter: Option<Counter>, n: usize) {
        if let Some(c) = counter {
            let _ = c.add(n as u64);
        }
    }

    /// Buffers a span; counts it as dropped when the buffer is full.
    fn push_span(&self, span: Span) {
        let pushed = self.spans.borrow_mut().push(span);
        if !pushed {
            Self::count(self.export_metrics.dropped_buffer_full, 1);
        }
    }

    /// The request metrics of a peer's `x-envoy-peer-metadata` (cached; `None` when
    /// malformed or metrics are off).
    fn peer_metrics(&self, header: &str) -> Option<u32> {
        if let Some(id) = self.peers.borrow().get(header) {
            return *id;
        }
        let id = self.config.metrics.then(|| peer::decode(header)).flatten().and_then(|w| self.define_metrics(&w).ok());
        let mut peers = self.peers.borrow_mut();
        if peers.len() >= MAX_CACHED_PEERS {
            peers.clear();
        }
        peers.insert(header.to_string(), id);
        id
    }

    /// Has the host record Istio's standard metrics with `peer` as the other side; the
    /// template's id.
    fn define_metrics(&self, peer: &Workload) -> Result<u32, proxy_wasm::types::Status> {
        let labels = labels::template(self.reporter, &self.local, peer);
        ext::define_request_metrics(labels::template_json(&labels, ISTIO_METRICS).as_bytes())
    }
}

// === impl Root ===

impl Root {
    fn build(&self, config: Config) -> Shared {
        let reporter =
            config.reporter.unwrap_or_else(|| Reporter::from_direction(prop_int(vec!["listener_direction"])));
        let node = |k: &str| prop_str(vec!["node", "metadata", k]);
        let local = Workload::from_node_metadata(node);
        let node_id = prop_str(vec!["node", "id"]).unwrap_or_default();
        let statics = SpanStatics {
            node_id: node_id.clone(),
            canonical_service: local.canonical_service().map(str::to_string),
            canonical_revision: local.canonical_revision().map(str::to_string),
            namespace: local.namespace.clone(),
            max_path_tag_length: config.tracing.as_ref().map_or(0, |t| t.max_path_tag_length),
        };
        let service_name = config.tracing.as_ref().and_then(|t| t.service_name.clone()).unwrap_or_else(|| {
            match (local.canonical_service(), local.namespace.as_deref()) {
                (Some(s), Some(ns)) => format!("{s}.{ns}"),
                (Some(s), None) => s.to_string(),
                _ => "wasmesh".to_string(),
            }
        });
        let log_headers = config.access_log.as_ref().map(|a| a.format.extra_headers()).unwrap_or_default();
        let exporting = config.tracing.as_ref().is_some_and(|t| t.cluster.is_some());
        let counter =
            |labels: &[(&str, &str)], name: &str| if exporting { Counter::new(name, labels).ok() } else { None };
        let export_metrics = ExportMetrics {
            dropped_buffer_full: counter(&[("reason", "buffer_full")], SPANS_DROPPED),
            dropped_export_failed: counter(&[("reason", "export_failed")], SPANS_DROPPED),
            exported: counter(&[], SPANS_EXPORTED),
        };
        let queue = match config.tracing.as_ref() {
            Some(t) => ExportQueue::new(t.max_buffer, t.max_batch, MAX_EXPORTS_IN_FLIGHT),
            None => ExportQueue::new(0, 1, 1),
        };
        Shared {
            local_header: peer::encode(&local),
            node_id,
            peers: RefCell::new(HashMap::new()),
            config,
            local,
            reporter,
            statics,
            service_name,
            log_headers,
            rng: RefCell::new(Rng::new(seed(self.now_ns()))),
            record_reads: [rec::COMMON, RECORD_PROPERTIES.len()].map(|n| PropertyBatch::new(&RECORD_PROPERTIES[..n])),
            request_reads: PropertyBatch::new(&REQUEST_HEADER_PROPERTIES),
            spans: RefCell::new(queue),
            export_metrics,
        }
    }

    fn now_ns(&self) -> u64 {
        self.get_current_time().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    }

    /// Sends buffered spans, at most [`MAX_EXPORTS_IN_FLIGHT`] requests at a time.
    fn flush(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let Some(t) = shared.tracing() else { return };
        let Some(cluster) = t.cluster.as_deref() else { return };
        loop {
            let Some(batch) = shared.spans.borrow_mut().next_batch() else { return };
            let body = otlp::encode(&shared.service_name, &batch);
            let headers = vec![
                (":method", "POST"),
                (":path", t.path.as_str()),
                (":authority", t.authority.as_str()),
                (":scheme", "http"),
                ("content-type", "application/json"),
            ];
            let timeout = Duration::from_millis(t.timeout_ms);
            match self.dispatch_http_call(cluster, headers, Some(body.as_bytes()), vec![], timeout) {
                Ok(token) => shared.spans.borrow_mut().sent(token, batch.len()),
                Err(e) => {
                    Shared::count(shared.export_metrics.dropped_export_failed, batch.len());
                    self.note_failure(&format!("dispatching to cluster {cluster:?} failed: {e:?}"));
                    return;
                }
            }
        }
    }

    fn note_failure(&self, why: &str) {
        if !self.failing.replace(true) {
            log(LogLevel::Warn, &format!("telemetry: span export failing (spans dropped): {why}"));
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, _body: usize, _trailers: usize) {
        let Some(shared) = self.shared.clone() else { return };
        let Some(n) = shared.spans.borrow_mut().finished(token) else { return };
        let status = self.get_http_call_response_header(":status");
        match status.as_deref().and_then(|s| s.parse::<u16>().ok()) {
            Some(code) if (200..300).contains(&code) => {
                Shared::count(shared.export_metrics.exported, n);
                if self.failing.replace(false) {
                    log(LogLevel::Info, "telemetry: span export recovered");
                }
                // The collector keeps up: drain a backlog without waiting for the tick.
                if !shared.spans.borrow().is_empty() {
                    self.flush();
                }
            }
            other => {
                Shared::count(shared.export_metrics.dropped_export_failed, n);
                let why = match other {
                    Some(code) => format!("collector answered {code}"),
                    None => "no response (collector down or timed out)".to_string(),
                };
                self.note_failure(&why);
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // Every problem on one line (`a; b`), as the other built-in filters log them.
        let parse = |b: &[u8]| {
            config::parse(b).map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        };
        let Some(config) = wasmesh_sdk::config::configure("telemetry", parse) else { return false };
        // The callbacks this filter implements; the host skips the others (Envoy ignores
        // this).
        let _ = callbacks::only(stream_callbacks(&config));
        let shared = self.build(config);
        if shared.config.metrics {
            // The host records the metrics at the end of each stream; the filter only
            // names them (and, per stream, the peer metadata exchange learnt).
            let defined = shared.define_metrics(&shared.config.peer).and_then(ext::use_request_metrics);
            if let Err(e) = defined {
                let why = match e {
                    proxy_wasm::types::Status::NotFound => {
                        "the host does not record request metrics (wasmesh.define_request_metrics); set metrics: { enabled: false }"
                            .to_string()
                    }
                    e => format!("the host refused the metrics template: {e:?}"),
                };
                log(LogLevel::Error, &format!("telemetry: {why}"));
                return false;
            }
        }
        let was_exporting = self.shared.as_ref().is_some_and(|s| s.exporting());
        let period = match shared.tracing().filter(|_| shared.exporting()) {
            Some(t) => Some(Duration::from_millis(t.flush_interval_ms)),
            // A reconfiguration that stops exporting stops the timer.
            None if was_exporting => Some(Duration::ZERO),
            None => None,
        };
        if let Some(p) = period {
            if let Err(e) = hostcalls::set_tick_period(p) {
                log(LogLevel::Error, &format!("telemetry: cannot set the export timer: {e:?}"));
                return false;
            }
        }
        self.shared = Some(Rc::new(shared));
        true
    }

    fn on_tick(&mut self) {
        self.flush();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on `None`; without a config (the host refused it) pass through.
        Some(match self.shared.clone() {
            Some(shared) => Box::new(Stream { shared, hop: None, frames: None }),
            None => Box::new(PassThrough),
        })
    }
}

/// The callbacks every stream needs: request headers (trace context, metadata exchange,
/// gRPC detection), response headers only for metadata exchange, `on_log` only for access
/// logs. The host records the metrics itself; a stream whose span is sampled asks for
/// `on_log`, a gRPC one for the bodies (message counts) and `on_log` (to report them),
/// from its request headers.
fn stream_callbacks(config: &Config) -> Callbacks {
    let mut base = Callbacks::REQUEST_HEADERS;
    if config.metadata_exchange {
        base = base | Callbacks::RESPONSE_HEADERS;
    }
    if config.access_log.is_some() {
        base = base | Callbacks::LOG;
    }
    base
}

/// The request headers the request phase reads, read as `request.headers.*` properties
/// in one batch: its own ([`hdr`]), then every trace-context header it reads or
/// rewrites ([`trace::HEADERS`], from [`hdr::TRACE`] on).
const REQUEST_HEADER_PROPERTIES: [&str; 12] = [
    "request.headers.content-type",
    "request.headers.x-envoy-peer-metadata",
    "request.headers.x-client-trace-id",
    "request.headers.x-envoy-force-trace",
    "request.headers.traceparent",
    "request.headers.tracestate",
    "request.headers.b3",
    "request.headers.x-b3-traceid",
    "request.headers.x-b3-spanid",
    "request.headers.x-b3-parentspanid",
    "request.headers.x-b3-sampled",
    "request.headers.x-b3-flags",
];

/// Indices into [`REQUEST_HEADER_PROPERTIES`].
mod hdr {
    pub const CONTENT_TYPE: usize = 0;
    pub const PEER_METADATA: usize = 1;
    pub const CLIENT_TRACE_ID: usize = 2;
    pub const FORCE_TRACE: usize = 3;
    /// Where [`crate::policy::trace::HEADERS`] start.
    pub const TRACE: usize = 4;
}

/// What `Stream::record` reads at `on_log`, in one `wasmesh_sdk::get_properties` call:
/// the first [`rec::COMMON`] for every request, the others (peer identity, mTLS) only
/// when this proxy is the destination; indices in [`rec`].
const RECORD_PROPERTIES: [&str; 12] = [
    props::RESPONSE_FLAGS,
    "request.headers.content-type",
    "request.duration",
    "request.host",
    "response.code",
    "request.total_size",
    "response.total_size",
    props::UPSTREAM_CLUSTER,
    "connection.mtls",
    "source.principal",
    "connection.uri_san_peer_certificate",
    "connection.uri_san_local_certificate",
];

/// Indices into [`RECORD_PROPERTIES`].
mod rec {
    /// How many every request reads.
    pub const COMMON: usize = 8;
    pub const FLAGS: usize = 0;
    pub const CONTENT_TYPE: usize = 1;
    pub const DURATION: usize = 2;
    pub const HOST: usize = 3;
    pub const CODE: usize = 4;
    pub const REQUEST_SIZE: usize = 5;
    pub const RESPONSE_SIZE: usize = 6;
    pub const CLUSTER: usize = 7;
    pub const MTLS: usize = 8;
    pub const SOURCE_PRINCIPAL: usize = 9;
    pub const PEER_URI_SAN: usize = 10;
    pub const LOCAL_URI_SAN: usize = 11;
}

// === impl Stream ===

impl Stream {
    fn now_ns(&self) -> u64 {
        self.get_current_time().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    }

    /// Reads what spans and the access-log filter need about the finished request (one
    /// hostcall for the common properties; fallbacks and gRPC status on their own).
    fn record(&self) -> Record {
        let destination = self.shared.reporter.local_is_destination();
        let v = self.shared.record_reads[destination as usize].read();
        let bytes = |i: usize| v.get(i);
        let int = |i: usize| bytes(i).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_le_bytes);
        let text =
            |i: usize| bytes(i).and_then(|b| std::str::from_utf8(b).ok()).filter(|s| !s.is_empty()).map(str::to_string);
        let flags = match bytes(rec::FLAGS) {
            Some(b) => flags::decode(b),
            None => prop_bytes(vec!["response", "flags"]).and_then(|b| flags::decode(&b)),
        };
        let content_type = text(rec::CONTENT_TYPE);
        let grpc = content_type.as_deref().is_some_and(|c| c.starts_with("application/grpc"));
        Record {
            duration_ns: int(rec::DURATION).map(|v| v.max(0) as u64),
            authority: text(rec::HOST),
            content_type,
            response_code: int(rec::CODE).and_then(|c| u16::try_from(c).ok()).filter(|c| *c != 0),
            grpc_status: if grpc {
                prop_int(vec!["response", "grpc_status"]).and_then(|g| u64::try_from(g).ok())
            } else {
                None
            },
            response_flags: flags.unwrap_or_default(),
            bytes_received: int(rec::REQUEST_SIZE).map(|v| v.max(0) as u64),
            bytes_sent: int(rec::RESPONSE_SIZE).map(|v| v.max(0) as u64),
            upstream_cluster: text(rec::CLUSTER).or_else(|| prop_str(vec!["cluster_name"])),
            mtls: if destination { bytes(rec::MTLS).and_then(|b| b.first().map(|v| *v != 0)) } else { None },
            peer_principal: if destination {
                text(rec::SOURCE_PRINCIPAL).or_else(|| text(rec::PEER_URI_SAN))
            } else {
                None
            },
            local_principal: if destination { text(rec::LOCAL_URI_SAN) } else { None },
            ..Record::default()
        }
    }

    /// Adds what spans need and, with `log`, everything the access log prints.
    fn add_details(&self, r: &mut Record, log: bool) {
        r.trace_id = self.hop.as_ref().map(Hop::trace_id_hex);
        let req = |h: &str| prop_str(vec!["request", "headers", h]);
        r.start_unix_ns = prop_int(vec!["request", "time"]).map(|v| v.max(0) as u64);
        r.method = prop_str(vec!["request", "method"]);
        r.path = prop_str(vec!["request", "path"]);
        r.protocol = prop_str(vec!["request", "protocol"]);
        r.request_id = prop_str(vec!["request", "id"]);
        r.user_agent = prop_str(vec!["request", "useragent"]);
        r.downstream_remote_address = prop_str(vec!["source", "address"]);
        r.upstream_host = prop_str(vec![props::UPSTREAM_ADDRESS]);
        if !log {
            return;
        }
        r.original_path = req("x-envoy-original-path");
        r.x_forwarded_for = req("x-forwarded-for");
        r.code_details = prop_str(vec!["response", "code_details"]);
        r.upstream_service_time = prop_str(vec!["response", "headers", "x-envoy-upstream-service-time"]);
        r.upstream_local_address = prop_str(vec!["upstream", "local_address"]);
        r.attempt_count = prop_int(vec![props::REQUEST_ATTEMPT_COUNT]).and_then(|n| u64::try_from(n).ok());
        r.route_name = prop_str(vec!["route_name"]);
        r.downstream_local_address = prop_str(vec!["destination", "address"]);
        r.requested_server_name = prop_str(vec!["connection", "requested_server_name"]);
        for h in &self.shared.log_headers.0 {
            if let Some(v) = req(h) {
                r.request_headers.insert(h.clone(), v);
            }
        }
        for h in &self.shared.log_headers.1 {
            if let Some(v) = prop_str(vec!["response", "headers", h]) {
                r.response_headers.insert(h.clone(), v);
            }
        }
    }
}

impl Context for PassThrough {}

impl HttpContext for PassThrough {}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let shared = self.shared.clone();
        if !shared.config.metrics && !shared.config.metadata_exchange && shared.tracing().is_none() {
            return Action::Continue;
        }
        // One hostcall for every header this phase reads (content type, peer metadata,
        // trace context), as a property set the host resolved to header names once.
        let values = shared.request_reads.read();
        let get = |i: usize| values.get(i).and_then(|b| std::str::from_utf8(b).ok());
        let base = stream_callbacks(&shared.config);
        let mut wanted = base;
        if shared.config.metrics && get(hdr::CONTENT_TYPE).is_some_and(|c| c.starts_with("application/grpc")) {
            self.frames = Some(Default::default());
            // Message counts read the bodies (plain HTTP bodies pass untouched) and are
            // reported to the host's metrics from `on_log`.
            wanted = wanted | Callbacks::REQUEST_BODY | Callbacks::RESPONSE_BODY | Callbacks::LOG;
        }
        if shared.config.metadata_exchange {
            if shared.reporter.local_is_destination() {
                // Learn the client and strip its headers before the app sees them.
                if let Some(h) = get(hdr::PEER_METADATA) {
                    self.use_peer_metrics(h);
                    self.set_http_request_header(peer::HEADER, None);
                    self.set_http_request_header(peer::ID_HEADER, None);
                }
            } else {
                self.set_http_request_header(peer::HEADER, Some(&shared.local_header));
                self.set_http_request_header(peer::ID_HEADER, Some(&shared.node_id));
            }
        }
        if let Some(t) = shared.tracing() {
            let incoming = trace::extract(|i| get(hdr::TRACE + i));
            let forced = get(hdr::CLIENT_TRACE_ID).is_some() || get(hdr::FORCE_TRACE).is_some();
            let hop = Hop::start(&incoming, forced, t.sampling, &mut shared.rng.borrow_mut());
            for (i, name, value) in hop.outgoing_headers(&t.propagation, &incoming).iter() {
                // Removing a header the request does not carry is a hostcall for nothing.
                if value.is_some() || get(hdr::TRACE + i).is_some() {
                    self.set_http_request_header(name, value);
                }
            }
            if hop.sampled && shared.exporting() {
                // The span is written from `on_log`.
                wanted = wanted | Callbacks::LOG;
            }
            self.hop = Some(hop);
        }
        if wanted != base {
            let _ = callbacks::only(wanted);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, _eos: bool) -> Action {
        if let Some((mut req, resp)) = self.frames.take() {
            req.feed(size, |off, n| self.get_http_request_body(off, n));
            self.frames = Some((req, resp));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _eos: bool) -> Action {
        if let Some((req, mut resp)) = self.frames.take() {
            resp.feed(size, |off, n| self.get_http_response_body(off, n));
            self.frames = Some((req, resp));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let shared = self.shared.clone();
        if shared.config.metadata_exchange {
            if shared.reporter.local_is_destination() {
                self.set_http_response_header(peer::HEADER, Some(&shared.local_header));
                self.set_http_response_header(peer::ID_HEADER, Some(&shared.node_id));
            } else if let Some(h) = wasmesh_sdk::headers::response_header(peer::HEADER) {
                // Learn the server and strip its headers before the app sees them.
                self.use_peer_metrics(&h);
                self.set_http_response_header(peer::HEADER, None);
                self.set_http_response_header(peer::ID_HEADER, None);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let shared = self.shared.clone();
        if let Some((req, resp)) = &self.frames {
            if let Err(e) = ext::request_messages(req.messages, resp.messages) {
                log(LogLevel::Warn, &format!("telemetry: wasmesh.request_messages failed: {e:?}"));
            }
        }
        let span = self.hop.as_ref().is_some_and(|h| h.sampled) && shared.exporting();
        if !span && shared.config.access_log.is_none() {
            return;
        }
        let mut r = self.record();
        let line = shared
            .config
            .access_log
            .as_ref()
            .filter(|a| a.filter.matches(&r) && shared.rng.borrow_mut().chance(a.sampling));
        if !span && line.is_none() {
            return;
        }
        self.add_details(&mut r, line.is_some());
        if let Some(hop) = self.hop.as_ref().filter(|_| span) {
            let kind = if shared.reporter.local_is_destination() { SpanKind::Server } else { SpanKind::Client };
            let mut span = Span::from_record(hop, kind, &r, &shared.statics, self.now_ns());
            for tag in shared.tracing().map(|t| t.custom_tags.as_slice()).unwrap_or_default() {
                let value = match &tag.source {
                    TagSource::Literal(v) => Some(v.clone()),
                    TagSource::Header { name, default_value } => {
                        prop_str(vec!["request", "headers", name]).or_else(|| default_value.clone())
                    }
                };
                if let Some(v) = value {
                    span.attributes.push((tag.name.clone().into(), AttrValue::Str(v)));
                }
            }
            shared.push_span(span);
        }
        if let Some(a) = line {
            if let Err(e) = ext::access_log(&a.format.render(&r)) {
                log(LogLevel::Warn, &format!("telemetry: wasmesh.access_log failed: {e:?}"));
            }
        }
    }
}

impl Stream {
    /// Records this stream's metrics with the peer of `header` (metadata exchange) as
    /// the other side.
    fn use_peer_metrics(&self, header: &str) {
        if let Some(id) = self.shared.peer_metrics(header) {
            // Best effort: without it the stream is recorded with the configured peer.
            let _ = ext::use_request_metrics(id);
        }
    }
}

// === property helpers ===

fn prop_bytes(path: Vec<&str>) -> Option<Vec<u8>> {
    hostcalls::get_property(path).ok().flatten()
}

fn prop_str(path: Vec<&str>) -> Option<String> {
    prop_bytes(path).and_then(|b| String::from_utf8(b).ok()).filter(|s| !s.is_empty())
}

/// An integer property (Envoy's 8-byte little-endian encoding).
fn prop_int(path: Vec<&str>) -> Option<i64> {
    prop_bytes(path).and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map(i64::from_le_bytes)
}

/// A per-VM seed: the WASI random source (through std's `RandomState`) mixed with the clock.
fn seed(now_ns: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ns);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_phase_reads_its_headers_at_their_indices() {
        let name = |i: usize| REQUEST_HEADER_PROPERTIES[i].strip_prefix("request.headers.");
        assert_eq!(name(hdr::CONTENT_TYPE), Some("content-type"));
        assert_eq!(name(hdr::PEER_METADATA), Some(peer::HEADER));
        assert_eq!(name(hdr::CLIENT_TRACE_ID), Some("x-client-trace-id"));
        assert_eq!(name(hdr::FORCE_TRACE), Some("x-envoy-force-trace"));
        assert_eq!(REQUEST_HEADER_PROPERTIES.len(), hdr::TRACE + trace::HEADERS.len());
        for (i, h) in trace::HEADERS.iter().enumerate() {
            assert_eq!(name(hdr::TRACE + i), Some(*h));
        }
    }
}
