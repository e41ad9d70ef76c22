//! The `router` filter: Istio VirtualService `http:` rules (ordered, first match wins)
//! steering wasmesh's core through its host extensions — cluster, subset, route name and
//! timeout properties — plus rewrites, redirects, direct responses, header edits, mirrors
//! and CORS. `config` parses and validates, `policy` decides, this file talks to the host.

#![forbid(unsafe_code)]

pub mod config;
pub mod policy;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{headers, route, stream, upstream};

use config::{HeaderOps, RouterConfig, Workload};
use policy::{Plan, Request, Rng};
use wasmesh_sdk::callbacks::{self, Callbacks};

/// Timeout of a mirror copy when the route sets none.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root::new(id)) });
}}

fn log(level: LogLevel, msg: &str) {
    // Logging is best effort: there is nowhere else to report a failed log call.
    let _ = hostcalls::log(level, msg);
}

fn warn_on_err<E: std::fmt::Debug>(what: &str, r: Result<(), E>) {
    if let Err(e) = r {
        log(LogLevel::Warn, &format!("router: {what} failed: {e:?}"));
    }
}

/// Configuration and RNG shared by every stream of this VM.
struct Shared {
    config: RouterConfig,
    rng: Cell<Rng>,
}

/// This workload's identity from the host's `node` property (`node.metadata.<key>`).
struct NodeMetadata;

impl Workload for NodeMetadata {
    fn label(&self, key: &str) -> Option<String> {
        match hostcalls::get_property(vec!["node", "metadata", key]) {
            Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
            _ => None,
        }
    }
    fn namespace(&self) -> Option<String> {
        self.label("NAMESPACE")
    }
}

struct Root {
    id: u32,
    shared: Rc<Shared>,
}

impl Root {
    fn new(id: u32) -> Self {
        let empty = RouterConfig::empty();
        Root { id, shared: Rc::new(Shared { config: empty, rng: Cell::new(Rng::new(0)) }) }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = wasmesh_sdk::config::configure("router", |b| config::parse(b, &NodeMetadata)) else {
            return false;
        };
        // The callbacks this configuration uses; the host skips the others (Envoy ignores
        // this).
        let mut wanted = Callbacks::REQUEST_HEADERS;
        if config.edits_responses() {
            wanted = wanted | Callbacks::RESPONSE_HEADERS;
        }
        if config.mirrors() {
            wanted = wanted | Callbacks::REQUEST_BODY | Callbacks::REQUEST_TRAILERS;
        }
        let _ = callbacks::only(wanted);
        // Clock nanos mixed with std's per-process random keys (WASI random_get on
        // wasm32-wasip1), so VMs started in the same instant still differ.
        let clock =
            self.get_current_time().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let seed = clock ^ std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), clock);
        log(LogLevel::Info, &format!("router: {} route(s), strict: {}", config.routes.len(), config.strict));
        for w in &config.warnings {
            log(LogLevel::Warn, &format!("router: {w}"));
        }
        self.shared = Rc::new(Shared { config, rng: Cell::new(Rng::new(seed)) });
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Router {
            id,
            root_id: self.id,
            shared: Rc::clone(&self.shared),
            chosen: None,
            cors_origin: None,
            mirror: None,
        }))
    }
}

/// A mirror waiting for the end of the request body.
struct PendingMirror {
    clusters: Vec<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    overflow: bool,
    timeout: Duration,
}

struct Router {
    id: u32,
    root_id: u32,
    shared: Rc<Shared>,
    /// (route index, destination index) of a forwarded request.
    chosen: Option<(usize, usize)>,
    cors_origin: Option<String>,
    mirror: Option<PendingMirror>,
}

impl Router {
    fn apply_request_ops(&self, ops: &HeaderOps) {
        for name in &ops.remove {
            self.set_http_request_header(name, None);
        }
        for (k, v) in &ops.set {
            self.set_http_request_header(k, Some(v));
        }
        for (k, v) in &ops.add {
            self.add_http_request_header(k, v);
        }
    }

    fn apply_response_ops(&self, ops: &HeaderOps) {
        for name in &ops.remove {
            self.set_http_response_header(name, None);
        }
        for (k, v) in &ops.set {
            self.set_http_response_header(k, Some(v));
        }
        for (k, v) in &ops.add {
            self.add_http_response_header(k, v);
        }
    }

    /// Fetches only the headers the rules look at (a few hostcalls instead of the whole
    /// map). A repeated header yields its first value, as proxy-wasm's `get_header` does.
    fn needed_request_headers(&self, names: &[String]) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(names.len() + 1);
        for name in names {
            if let Some(v) = headers::request_header(name) {
                out.push((name.clone(), v));
            } else if name == ":authority" {
                if let Some(v) = headers::request_header("host") {
                    out.push((name.clone(), v));
                }
            }
        }
        out
    }

    fn dispatch_mirror(&mut self) {
        let Some(m) = self.mirror.take() else { return };
        if m.overflow {
            log(LogLevel::Debug, "router: request body over mirrorBodyLimitBytes, not mirrored");
            return;
        }
        let headers: Vec<(&str, &str)> = m.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = if m.body.is_empty() { None } else { Some(m.body.as_slice()) };
        // Fire and forget: the calls are made as the root context, so that they outlive
        // this stream (a host cancels a stream's pending calls when the stream ends); the
        // responses are ignored.
        let switched = hostcalls::set_effective_context(self.root_id).is_ok();
        for cluster in &m.clusters {
            if let Err(e) = hostcalls::dispatch_http_call(cluster, headers.clone(), body, vec![], m.timeout) {
                log(LogLevel::Debug, &format!("router: mirror to {cluster} failed: {e:?}"));
            }
        }
        if switched {
            warn_on_err("restoring the stream context", hostcalls::set_effective_context(self.id));
        }
    }

    fn forward(&mut self, f: policy::Forward<'_>, original_path: &str, end_of_stream: bool) {
        let route = f.route;
        let dest = f.destination;
        if let Some(name) = &route.name {
            warn_on_err("setting wasmesh.route.name", route::set_name(name));
        }
        warn_on_err("setting wasmesh.upstream.cluster", upstream::set_cluster(&dest.cluster));
        if let Some(subset) = &dest.subset {
            warn_on_err("setting wasmesh.upstream.subset", upstream::set_subset(subset));
        }
        if let Some(ms) = route.timeout_ms {
            warn_on_err("setting wasmesh.route.timeout_ms", route::set_timeout_ms(ms));
        }
        // Destination edits first, then the route's: the route-level value wins (Envoy's
        // default order, `most_specific_header_mutations_wins: false`).
        self.apply_request_ops(&dest.headers.request);
        self.apply_request_ops(&route.headers.request);
        if let Some(path) = &f.path {
            if path != original_path {
                self.set_http_request_header("x-envoy-original-path", Some(original_path));
                self.set_http_request_header(":path", Some(path));
            }
        }
        if let Some(authority) = f.authority {
            self.set_http_request_header(":authority", Some(authority));
        }
        if !f.mirrors.is_empty() {
            let mut headers = self.get_http_request_headers();
            for (k, v) in headers.iter_mut() {
                if k == ":authority" || k.eq_ignore_ascii_case("host") {
                    *v = policy::shadow_authority(v);
                }
            }
            let timeout = match route.timeout_ms {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => MIRROR_TIMEOUT,
            };
            self.mirror = Some(PendingMirror {
                clusters: f.mirrors.iter().map(|m| m.cluster.clone()).collect(),
                headers,
                body: Vec::new(),
                overflow: false,
                timeout,
            });
            if end_of_stream {
                self.dispatch_mirror();
            }
        }
        let has_response_work =
            !dest.headers.response.is_empty() || !route.headers.response.is_empty() || f.cors_origin.is_some();
        if has_response_work {
            self.chosen = Some((f.route_index, f.destination_index));
            self.cors_origin = f.cors_origin;
        }
    }
}

impl Context for Router {}

impl HttpContext for Router {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.config;
        if cfg.routes.is_empty() && !cfg.strict {
            return Action::Continue;
        }
        let headers = self.needed_request_headers(&cfg.needed_headers);
        let port = if cfg.needs_port {
            match hostcalls::get_property(vec!["destination", "port"]) {
                Ok(Some(bytes)) => policy::decode_port(&bytes),
                _ => None,
            }
        } else {
            None
        };
        let req = Request::from_headers(&headers, port);
        let mut rng = shared.rng.get();
        let plan = policy::plan(cfg, &req, &mut rng);
        shared.rng.set(rng);
        match plan {
            Plan::Pass => Action::Continue,
            Plan::NotFound => {
                warn_on_err("setting the NR flag", stream::add_response_flag("NR"));
                self.send_http_response(404, vec![], None);
                Action::Pause
            }
            Plan::Local(reply) => {
                if let Some(name) = &reply.route.name {
                    warn_on_err("setting wasmesh.route.name", route::set_name(name));
                }
                let h: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let body = if reply.body.is_empty() { None } else { Some(reply.body) };
                self.send_http_response(reply.status, h, body);
                Action::Pause
            }
            Plan::Forward(f) => {
                let original_path = req.path.to_string();
                self.forward(f, &original_path, end_of_stream);
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let limit = self.shared.config.mirror_body_limit;
        if let Some(m) = self.mirror.as_mut() {
            if !m.overflow && body_size > 0 {
                if m.body.len().saturating_add(body_size) > limit {
                    m.overflow = true;
                    m.body = Vec::new();
                } else if let Some(chunk) = self.get_http_request_body(0, body_size) {
                    // Re-borrow: get_http_request_body needs &self.
                    if let Some(m) = self.mirror.as_mut() {
                        m.body.extend_from_slice(&chunk);
                    }
                }
            }
            if end_of_stream {
                self.dispatch_mirror();
            }
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.dispatch_mirror();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some((ri, di)) = self.chosen else { return Action::Continue };
        let shared = Rc::clone(&self.shared);
        let Some(route) = shared.config.routes.get(ri) else { return Action::Continue };
        if let config::RouteAction::Forward { destinations, .. } = &route.action {
            if let Some(dest) = destinations.get(di) {
                self.apply_response_ops(&dest.headers.response);
            }
        }
        self.apply_response_ops(&route.headers.response);
        if let (Some(cors), Some(origin)) = (&route.cors, &self.cors_origin) {
            for (k, v) in policy::actual_response_headers(cors, origin) {
                self.set_http_response_header(&k, Some(&v));
            }
        }
        Action::Continue
    }
}
