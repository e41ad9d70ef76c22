//! The `authz` filter: Istio `AuthorizationPolicy` (ALLOW, DENY, AUDIT, CUSTOM via an
//! HTTP ext_authz service) with dry-run, audit records and decision metrics. Put it after
//! `authn` (it reads the `request.auth.*` properties authn sets) and before `router`.
//!
//! The path is normalized before anything matches on it, and the request is forwarded with
//! exactly that path (`pathNormalization: rewrite`, the default) or refused when it was not
//! already normal (`reject`): no `//admin`, `%2F` or `/a/../admin` bypass.

pub mod config;
pub mod path;
pub mod policy;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use serde_json::Value;
use wasmesh_sdk::audit::{self, Record as AuditRecord};
use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{stream, PropertyBatch};

use crate::config::{Config, PathMode};
use crate::policy::{Decision, Evaluation, Hit, Label, Provider, Request};
use wasmesh_sdk::callbacks::{self, Callbacks};
use wasmesh_sdk::headers::{self, HeaderBlock};

/// Body of an RBAC denial (Envoy's text).
const DENIED_BODY: &[u8] = b"RBAC: access denied";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// `wasmesh_authz_decisions_total{policy,decision}`: one series per policy (plus
/// `default`) and decision label, defined at configure time.
#[derive(Default)]
struct Metrics {
    counters: Vec<Option<Counter>>,
}

#[derive(Default)]
struct Root {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
}

/// A CUSTOM check in flight.
struct Pending {
    token: u32,
    custom: Hit,
    eval: Evaluation,
}

struct Stream {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
    req: Option<HostRequest>,
    pending: Option<Pending>,
}

/// The request as the policies see it; everything but method, host and path is read
/// from the host only when a policy (or an audit record) asks for it.
struct HostRequest {
    method: String,
    host: String,
    path: String,
    /// The target's query (`?…`, or empty), for the CUSTOM check.
    query: String,
    trusted_proxies: u32,
    /// The request headers, read (in one hostcall) when a policy or the CUSTOM check
    /// first looks at one: most requests need only method, host and path.
    headers: OnceCell<HeaderBlock>,
    source: OnceCell<Option<IpAddr>>,
    remote: OnceCell<Option<IpAddr>>,
    destination: OnceCell<Option<SocketAddr>>,
    sni: OnceCell<Option<String>>,
    peer: OnceCell<Option<String>>,
    request_principal: OnceCell<Option<String>>,
    claims: OnceCell<Option<Value>>,
    audiences: OnceCell<Vec<String>>,
    presenter: OnceCell<Option<String>>,
}

// === impl Metrics ===

impl Metrics {
    fn define(config: &Config) -> Metrics {
        let mut counters = Vec::new();
        let names = config.policies.iter().map(|p| p.name.as_str()).chain(std::iter::once("default"));
        for name in names {
            for label in Label::ALL {
                let labels = [("policy", name), ("decision", label.as_str())];
                counters.push(Counter::new("wasmesh_authz_decisions_total", &labels).ok());
            }
        }
        Metrics { counters }
    }

    /// Counts `label` for `policy` (`None` = the default decision).
    fn count(&self, policies: usize, policy: Option<usize>, label: Label) {
        let slot = policy.unwrap_or(policies);
        let i = Label::ALL.iter().position(|l| *l == label).unwrap_or(0);
        if let Some(Some(c)) = self.counters.get(slot * Label::ALL.len() + i) {
            c.add(1).ok();
        }
    }
}

// === impl Root ===

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // The callbacks this filter implements; the host skips the others (Envoy ignores this).
        let _ = callbacks::only(Callbacks::REQUEST_HEADERS);
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::from_json(&bytes) {
            Ok(c) => {
                self.metrics = Rc::new(Metrics::define(&c));
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                hostcalls::log(LogLevel::Error, &format!("authz: invalid configuration: {e}")).ok();
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: Rc::clone(&self.config),
            metrics: Rc::clone(&self.metrics),
            req: None,
            pending: None,
        }))
    }
}

// === impl Stream ===

impl Stream {
    fn count(&self, policy: Option<usize>, label: Label) {
        self.metrics.count(self.config.policies.len(), policy, label);
    }

    /// Writes one audit record for `hit` (`None` = the default decision).
    fn audit(&self, hit: Option<Hit>, decision: &'static str, dry_run: bool, reason: Option<String>) {
        let Some(req) = &self.req else { return };
        let policy = hit.and_then(|h| self.config.policies.get(h.policy));
        let request_id = req.header("x-request-id");
        let record = AuditRecord {
            kind: "audit",
            time: wasmesh_sdk::rfc3339(wasmesh_sdk::now_ms()),
            request_id: request_id.as_deref(),
            principal: req.peer_principal(),
            request_principal: req.request_principal(),
            source_ip: req.source_ip().map(|ip| ip.to_string()),
            method: &req.method,
            host: &req.host,
            path: &req.path,
            policy: policy.map(|p| p.name.as_str()),
            action: policy.map(|p| p.action.as_str()),
            rule: hit.map(|h| h.rule),
            decision,
            dry_run,
            reason,
        };
        audit::write(&record);
    }

    /// Reports AUDIT matches and the dry-run (shadow) decision; enforces nothing.
    fn report(&self, eval: &Evaluation) {
        for hit in &eval.audits {
            self.count(Some(hit.policy), Label::Audit);
            self.audit(Some(*hit), "audit", false, None);
        }
        match eval.dry_run {
            Some(Decision::Allow { by }) => {
                self.count(by.map(|h| h.policy), Label::DryRunAllow);
                self.log_dry_run("allow", by);
            }
            Some(Decision::Deny { by }) => {
                self.count(by.map(|h| h.policy), Label::DryRunDeny);
                self.log_dry_run("deny", by);
                self.audit(by, "deny", true, Some(deny_reason(by, &self.config)));
            }
            None => {}
        }
    }

    fn log_dry_run(&self, decision: &str, by: Option<Hit>) {
        let policy = by.and_then(|h| self.config.policies.get(h.policy)).map_or("default", |p| p.name.as_str());
        let path = self.req.as_ref().map_or("", |r| r.path.as_str());
        hostcalls::log(LogLevel::Info, &format!("authz dry-run: would {decision} {path} (policy {policy})")).ok();
    }

    /// Applies the ALLOW/DENY decision: `Continue`, or a 403 `RBAC` and `Pause`.
    fn enforce(&mut self, decision: Decision) -> Action {
        match decision {
            Decision::Allow { by } => {
                self.count(by.map(|h| h.policy), Label::Allow);
                Action::Continue
            }
            Decision::Deny { by } => {
                self.count(by.map(|h| h.policy), Label::Deny);
                self.audit(by, "deny", false, Some(deny_reason(by, &self.config)));
                stream::add_response_flag("RBAC").ok();
                self.send_http_response(403, vec![("content-type", "text/plain")], Some(DENIED_BODY));
                Action::Pause
            }
        }
    }

    /// Sends the CUSTOM check; `Err` when it could not be dispatched.
    fn dispatch_check(&mut self, p: &Provider) -> Result<u32, String> {
        let req = self.req.as_ref().ok_or("no request")?;
        let check_path = format!("{}{}{}", p.path_prefix, req.path, req.query);
        let mut headers: Vec<(&str, String)> = vec![
            (":method", req.method.clone()),
            (":path", check_path),
            (":authority", p.authority.clone()),
            (":scheme", "http".into()),
            ("x-forwarded-host", req.host.clone()),
        ];
        let mut wanted: Vec<&str> = vec!["authorization"];
        wanted.extend(p.include_request_headers.iter().map(String::as_str));
        for name in wanted {
            if let Some(v) = req.header(name) {
                headers.push((name, v.into_owned()));
            }
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let timeout = Duration::from_millis(u64::from(p.timeout_ms));
        self.dispatch_http_call(&p.cluster, headers, None, vec![], timeout).map_err(|s| format!("{s:?}"))
    }

    /// The CUSTOM check failed (no answer): fail open, or deny with `statusOnError`.
    fn check_failed(&mut self, custom: Hit, eval: Evaluation, why: &str) -> Action {
        let Some(p) = self.config.policies.get(custom.policy).and_then(|p| p.provider.clone()) else {
            return self.enforce(eval.decision);
        };
        hostcalls::log(LogLevel::Warn, &format!("authz: ext_authz check on {} failed: {why}", p.cluster)).ok();
        if p.fail_open {
            return self.enforce(eval.decision);
        }
        self.count(Some(custom.policy), Label::Deny);
        self.audit(Some(custom), "deny", false, Some(format!("ext_authz check failed: {why}")));
        stream::add_response_flag("UAEX").ok();
        self.send_http_response(u32::from(p.status_on_error), vec![], None);
        Action::Pause
    }
}

fn deny_reason(by: Option<Hit>, config: &Config) -> String {
    match by.and_then(|h| config.policies.get(h.policy)) {
        Some(p) => format!("matched {} policy {}", p.action.as_str(), p.name),
        None => "no ALLOW policy matched".to_string(),
    }
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        let Some(pending) = self.pending.take_if(|p| p.token == token) else { return };
        let Pending { custom, eval, .. } = pending;
        let action = if num_headers == 0 {
            self.check_failed(custom, eval, "no response (connect failure, reset or timeout)")
        } else {
            let headers = self.get_http_call_response_headers();
            let status = headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse::<u32>().ok());
            let provider = self.config.policies.get(custom.policy).and_then(|p| p.provider.clone());
            match (status, provider) {
                (Some(200), Some(p)) => {
                    self.count(Some(custom.policy), Label::ExtAllow);
                    for (k, v) in &headers {
                        if p.headers_to_upstream.iter().any(|h| h.eq_ignore_ascii_case(k)) {
                            self.set_http_request_header(k, Some(v));
                        }
                    }
                    self.enforce(eval.decision)
                }
                // A 5xx from the authorization service is an error, as in Envoy: `failOpen`
                // and `statusOnError` apply.
                (Some(code), Some(_)) if code >= 500 => {
                    self.check_failed(custom, eval, &format!("the service answered {code}"))
                }
                (Some(code), Some(p)) => {
                    let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
                    let forward: Vec<(&str, &str)> = headers
                        .iter()
                        .filter(|(k, _)| !k.starts_with(':') && !is_hop_by_hop(k))
                        .filter(|(k, _)| {
                            p.headers_to_downstream_on_deny.is_empty()
                                || p.headers_to_downstream_on_deny.iter().any(|h| h.eq_ignore_ascii_case(k))
                        })
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    self.count(Some(custom.policy), Label::Deny);
                    self.audit(Some(custom), "deny", false, Some(format!("ext_authz returned {code}")));
                    stream::add_response_flag("UAEX").ok();
                    self.send_http_response(code, forward, Some(&body));
                    Action::Pause
                }
                _ => self.check_failed(custom, eval, "malformed response"),
            }
        };
        if action == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Path, method and host in one hostcall (a set the host knows by id); the other
        // headers only if a policy asks.
        let head = match self.config.reads_request_principal {
            true => HEAD_AND_PRINCIPAL.with(PropertyBatch::read),
            false => HEAD.with(PropertyBatch::read),
        };
        let text = |i: usize| head.get(i).and_then(|b| std::str::from_utf8(b).ok());
        let target = text(0).unwrap_or("/");
        let (raw_path, query) = path::split_query(target);
        let normalized = if raw_path == "*" { raw_path.to_string() } else { path::normalize(raw_path) };
        if normalized != raw_path {
            match self.config.path_mode {
                PathMode::Rewrite => {
                    self.set_http_request_header(":path", Some(&format!("{normalized}{query}")));
                }
                PathMode::Reject => {
                    self.send_http_response(400, vec![("content-type", "text/plain")], Some(b"non-normalized path"));
                    return Action::Pause;
                }
            }
        }
        let method = text(1).unwrap_or_default().to_string();
        let host = text(2).unwrap_or_default().to_string();
        let query = query.to_string();
        let req = HostRequest::new(method, host, normalized, query, self.config.trusted_proxies);
        if let Some(p) = head.get(3).filter(|b| !b.is_empty()) {
            // Read with the head (policies match on it); absent, it is looked up later.
            let _ = req.request_principal.set(policy::request_principal_from(Some(p), || None));
        }
        self.req = Some(req);
        let Some(req) = self.req.as_ref() else { return Action::Continue };
        if self.config.policies.is_empty() {
            return Action::Continue;
        }
        let eval = policy::evaluate(&self.config.policies, req);
        self.report(&eval);
        let Some(custom) = eval.custom else {
            return self.enforce(eval.decision);
        };
        let provider = self.config.policies.get(custom.policy).and_then(|p| p.provider.clone());
        let Some(provider) = provider else { return self.enforce(eval.decision) };
        match self.dispatch_check(&provider) {
            Ok(token) => {
                self.pending = Some(Pending { token, custom, eval });
                Action::Pause
            }
            Err(e) => self.check_failed(custom, eval, &format!("dispatch failed: {e}")),
        }
    }
}

/// What every request needs: `:path`, `:method`, `:authority` (`host` as fallback); then
/// the request principal, read in the same batch for policies that match on it.
const HEAD_PATHS: [&str; 4] = ["request.path", "request.method", "request.host", "request.auth.principal"];

thread_local! {
    static HEAD: PropertyBatch = PropertyBatch::new(&HEAD_PATHS[..3]);
    static HEAD_AND_PRINCIPAL: PropertyBatch = PropertyBatch::new(&HEAD_PATHS);
}

fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "content-length", "transfer-encoding", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

// === impl HostRequest ===

impl HostRequest {
    fn new(method: String, host: String, path: String, query: String, trusted_proxies: u32) -> HostRequest {
        HostRequest {
            method,
            host,
            path,
            query,
            trusted_proxies,
            headers: OnceCell::new(),
            source: OnceCell::new(),
            remote: OnceCell::new(),
            destination: OnceCell::new(),
            sni: OnceCell::new(),
            peer: OnceCell::new(),
            request_principal: OnceCell::new(),
            claims: OnceCell::new(),
            audiences: OnceCell::new(),
            presenter: OnceCell::new(),
        }
    }
}

/// A property by dotted name; on a host that resolves `request.*` itself (wasmesh) a
/// value another filter set is found under `filter_state.<name>`.
fn prop(name: &str) -> Option<Vec<u8>> {
    let direct = wasmesh_sdk::get_property(name).ok().flatten().filter(|b| !b.is_empty());
    direct.or_else(|| hostcalls::get_property(vec!["filter_state", name]).ok().flatten().filter(|b| !b.is_empty()))
}

fn prop_text(name: &str) -> Option<String> {
    prop(name).map(wasmesh_sdk::text)
}

impl Request for HostRequest {
    fn method(&self) -> &str {
        &self.method
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut found = self.headers.get_or_init(headers::request_headers).get_all(name);
        let first = found.next()?;
        match found.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in found {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    fn source_ip(&self) -> Option<IpAddr> {
        *self.source.get_or_init(|| prop_text("source.address").as_deref().and_then(audit::parse_ip))
    }

    fn remote_ip(&self) -> Option<IpAddr> {
        *self.remote.get_or_init(|| {
            let xff = self.header("x-forwarded-for");
            policy::remote_ip(xff.as_deref(), self.source_ip(), self.trusted_proxies)
        })
    }

    fn destination_ip(&self) -> Option<IpAddr> {
        self.destination().map(|d| d.ip())
    }

    fn destination_port(&self) -> Option<u16> {
        self.destination().map(|d| d.port()).or_else(|| {
            let n = stream::get_decimal_property("destination.port").ok().flatten()?;
            u16::try_from(n).ok()
        })
    }

    fn sni(&self) -> Option<&str> {
        self.sni.get_or_init(|| prop_text("connection.requested_server_name")).as_deref()
    }

    fn peer_principal(&self) -> Option<&str> {
        self.peer
            .get_or_init(|| {
                let uri = prop_text("source.principal").or_else(|| prop_text("connection.uri_san_peer_certificate"))?;
                policy::principal_from_uri(&uri).map(str::to_string)
            })
            .as_deref()
    }

    fn request_principal(&self) -> Option<&str> {
        self.request_principal
            .get_or_init(|| policy::request_principal_from(prop("request.auth.principal").as_deref(), || self.claims()))
            .as_deref()
    }

    fn claims(&self) -> Option<&Value> {
        self.claims
            .get_or_init(|| prop("request.auth.claims").and_then(|b| serde_json::from_slice::<Value>(&b).ok()))
            .as_ref()
    }

    fn audiences(&self) -> &[String] {
        self.audiences
            .get_or_init(|| policy::audiences_from(prop("request.auth.audiences").as_deref(), || self.claims()))
    }

    fn presenter(&self) -> Option<&str> {
        self.presenter
            .get_or_init(|| {
                prop_text("request.auth.presenter").or_else(|| self.claims()?.get("azp")?.as_str().map(str::to_string))
            })
            .as_deref()
    }
}

impl HostRequest {
    fn destination(&self) -> Option<SocketAddr> {
        *self.destination.get_or_init(|| prop_text("destination.address")?.parse::<SocketAddr>().ok())
    }
}
