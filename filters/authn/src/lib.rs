//! The `authn` filter: Istio `RequestAuthentication` (JWT) on wasmesh. Host glue only;
//! the decisions are in [`policy`], the crypto in [`jwk`], the config in [`config`].
//!
//! Per request: remove every inbound header this filter may output (injection defence),
//! find tokens, and — no token: continue without identity; an invalid token: 401 with
//! `www-authenticate: Bearer realm="…", error="invalid_token"` and the precise reason,
//! plus one audit record (the `authz` shape, `wasmesh_sdk::audit`) in the access-log sink;
//! a valid one: publish `request.auth.principal` (`<iss>/<sub>`), `request.auth.claims`
//! (payload JSON), `request.auth.audiences` (`,`-joined), `request.auth.presenter`, add
//! the claim/payload headers, and remove the token header unless `forwardOriginalToken`.
//! A `jwksUri` is fetched with `dispatch_http_call` (the request pauses meanwhile; other
//! requests needing the same keys wait for that one fetch and are resumed by whichever
//! context receives its answer, through `set_effective_context`).

pub mod config;
pub mod jwk;
pub mod policy;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;

use wasmesh_sdk::audit;
use wasmesh_sdk::headers::request_header;
use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use config::{Config, KeySource, Location};
use policy::{AuditRequest, JwksCache, Keys, Outcome, Rejection, TokenCache, Verified};
use wasmesh_sdk::callbacks::{self, Callbacks};

/// Per-request properties this filter publishes (read by `authz` and logs).
pub mod props {
    pub use wasmesh_sdk::props::{
        REQUEST_AUTH_AUDIENCES as AUDIENCES, REQUEST_AUTH_CLAIMS as CLAIMS, REQUEST_AUTH_PRESENTER as PRESENTER,
        REQUEST_AUTH_PRINCIPAL as PRINCIPAL,
    };
}

/// Most JWKS fetches one request may cause (cold cache, then an unknown `kid`).
const MAX_FETCHES_PER_REQUEST: u32 = 2;
/// Verified tokens remembered per worker VM (Envoy's `jwt_cache_size` default is 100).
const TOKEN_CACHE_SIZE: usize = 128;
/// Largest JWKS body read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root { id, ..Root::default() }) });
}}

fn log(level: LogLevel, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

/// Envoy `jwt_authn`-like counters (`allowed`, `denied`, `jwks_fetch_success|failed`),
/// plus requests without a token, plus [`DECISIONS`] per rule.
struct Metrics {
    allowed: Counter,
    anonymous: Counter,
    fetch_ok: Counter,
    fetch_failed: Counter,
    /// [`DECISIONS`] `{policy=<issuer>,decision="allow",reason="verified"}`, per rule.
    verified: Vec<Option<Counter>>,
    /// [`DECISIONS`] `{policy="request-authentication",decision="allow",reason="no_token"}`.
    no_token: Option<Counter>,
}

/// `wasmesh_authn_decisions_total{policy,decision,reason}` (like authz's
/// `wasmesh_authz_decisions_total{policy,decision}`): `policy` is the deciding rule's
/// issuer or `request-authentication`; `decision` `allow` or `deny`; `reason` `verified`,
/// `no_token` or the denial's code.
const DECISIONS: &str = "wasmesh_authn_decisions_total";

fn decision_counter(policy: &str, decision: &str, reason: &str) -> Option<Counter> {
    Counter::new(DECISIONS, &[("policy", policy), ("decision", decision), ("reason", reason)]).ok()
}

impl Metrics {
    fn new(config: &Config) -> Option<Metrics> {
        Some(Metrics {
            allowed: Counter::new("wasmesh_authn_allowed_total", &[]).ok()?,
            anonymous: Counter::new("wasmesh_authn_no_token_total", &[]).ok()?,
            fetch_ok: Counter::new("wasmesh_authn_jwks_fetch_success_total", &[]).ok()?,
            fetch_failed: Counter::new("wasmesh_authn_jwks_fetch_failed_total", &[]).ok()?,
            verified: config.rules.iter().map(|r| decision_counter(&r.issuer, "allow", "verified")).collect(),
            no_token: decision_counter(policy::AUDIT_POLICY, "allow", "no_token"),
        })
    }

    /// Counts a 401 by reason code (a small fixed set) and deciding rule.
    fn denied(policy: &str, reason: &str) {
        let denied = Counter::new("wasmesh_authn_denied_total", &[("reason", reason)]).ok();
        count(denied.as_ref());
        count(decision_counter(policy, "deny", reason).as_ref());
    }
}

fn count(c: Option<&Counter>) {
    if let Some(c) = c {
        let _ = c.add(1);
    }
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What every context of a VM shares: the configuration, the JWKS caches, the counters,
/// and the requests whose keys arrived, to be decided by the root's next (fast) tick.
#[derive(Clone, Default)]
struct Shared {
    config: Rc<Config>,
    caches: Rc<RefCell<Vec<JwksCache>>>,
    metrics: Option<Rc<Metrics>>,
    ready: Rc<RefCell<VecDeque<u32>>>,
    tokens: Rc<RefCell<TokenCache>>,
}

impl Shared {
    fn count(&self, pick: impl Fn(&Metrics) -> &Counter) {
        count(self.metrics.as_deref().map(pick));
    }

    fn remote(&self, rule: usize) -> Option<&config::RemoteJwks> {
        match &self.config.rules.get(rule)?.keys {
            KeySource::Remote(r) => Some(r),
            KeySource::Inline(_) => None,
        }
    }

    /// Sends the JWKS fetch of `rule` from the current context (`owner`); false if it
    /// could not be sent (recorded as a failed fetch; its waiters are returned in `woken`).
    fn send_fetch(&self, rule: usize, owner: u32, now: u64, woken: &mut Vec<u32>) -> bool {
        let Some(r) = self.remote(rule) else { return false };
        let headers = vec![
            (":method", "GET"),
            (":path", r.path.as_str()),
            (":authority", r.authority.as_str()),
            (":scheme", r.scheme.as_str()),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_millis(r.timeout_ms);
        match hostcalls::dispatch_http_call(&r.cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                if let Some(c) = self.caches.borrow_mut().get_mut(rule) {
                    c.started(token, owner, now);
                }
                true
            }
            Err(e) => {
                log(
                    LogLevel::Warn,
                    &format!("authn: JWKS fetch from {} via cluster {} not sent: {e:?}", r.uri, r.cluster),
                );
                self.count(|m| &m.fetch_failed);
                if let Some(c) = self.caches.borrow_mut().get_mut(rule) {
                    woken.extend(c.fetched(Err("not sent".into()), now).1);
                }
                false
            }
        }
    }

    /// In `on_http_call_response`: if `token` is a JWKS fetch, stores its answer, queues
    /// the requests that waited for it, and returns true.
    fn complete_fetch(&self, token: u32, body_size: usize) -> bool {
        let rule = self.caches.borrow().iter().position(|c| c.in_flight.is_some_and(|f| f.token == token));
        let Some(rule) = rule else { return false };
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten();
        let result = if status.as_deref() != Some("200") {
            Err(format!("status {}", status.as_deref().unwrap_or("none (no answer)")))
        } else if body_size > MAX_JWKS_BYTES {
            Err(format!("body of {body_size} bytes is over {MAX_JWKS_BYTES}"))
        } else {
            let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten();
            jwk::Jwks::parse(&String::from_utf8_lossy(&body.unwrap_or_default()))
        };
        let ok = result.is_ok();
        if ok {
            // Tokens of keys that were removed must not stay valid through the cache.
            self.tokens.borrow_mut().clear();
        }
        let waiters = match self.caches.borrow_mut().get_mut(rule) {
            Some(c) => {
                let (r, w) = c.fetched(result, now_ms());
                if let Err(e) = r {
                    let uri = self.remote(rule).map(|r| r.uri.as_str()).unwrap_or_default();
                    log(LogLevel::Warn, &format!("authn: JWKS fetch from {uri} failed: {e}"));
                }
                w
            }
            None => Vec::new(),
        };
        self.count(|m| if ok { &m.fetch_ok } else { &m.fetch_failed });
        self.wake(waiters);
        true
    }

    /// Queues the waiting requests for the root, which decides for a few per tick (each
    /// decision verifies a signature: deciding for many in one callback could overrun the
    /// host's per-callback deadline), and speeds its tick up until the queue is empty.
    fn wake(&self, waiters: Vec<u32>) {
        if waiters.is_empty() {
            return;
        }
        self.ready.borrow_mut().extend(waiters);
        let _ = hostcalls::set_tick_period(WAKE_TICK);
    }

    /// In the root's tick: decides for up to [`WAKE_BATCH`] queued requests, each in its
    /// own context (they may not fetch: they use what is cached). True when the queue is empty.
    fn decide_ready(&self, root: u32) -> bool {
        for _ in 0..WAKE_BATCH {
            let Some(w) = self.ready.borrow_mut().pop_front() else { break };
            // A request that is gone meanwhile is skipped.
            if hostcalls::set_effective_context(w).is_err() {
                continue;
            }
            let mut budget = 0;
            if self.decide(w, &mut budget) == Action::Continue {
                let _ = hostcalls::resume_http_request();
            }
        }
        let _ = hostcalls::set_effective_context(root);
        self.ready.borrow().is_empty()
    }

    /// Decides for the request of the effective context `me` and acts on it; `Pause`
    /// while it waits for keys or after a local reply. `budget`: fetches it may still send.
    fn decide(&self, me: u32, budget: &mut u32) -> Action {
        let found = policy::extract(&self.config, &HostView);
        let now = now_ms();
        let may_fetch = *budget > 0;
        let outcome = {
            let mut keys = |ri: usize, jwt: &policy::Jwt| match &self.config.rules[ri].keys {
                KeySource::Inline(k) => Keys::Ready(k.clone()),
                KeySource::Remote(r) => match self.caches.borrow().get(ri) {
                    // Out of fetches for this request: decide with what is cached.
                    Some(c) => match c.keys_for(r, jwt, now) {
                        Keys::Fetch if !may_fetch => c.cached(),
                        k => k,
                    },
                    None => Keys::Unavailable,
                },
            };
            match self.tokens.try_borrow_mut() {
                Ok(mut cache) => policy::decide_cached(&self.config, &found, now / 1000, &mut keys, &mut cache),
                Err(_) => policy::decide(&self.config, &found, now / 1000, &mut keys),
            }
        };
        match outcome {
            Outcome::NoToken => {
                self.count(|m| &m.anonymous);
                count(self.metrics.as_deref().and_then(|m| m.no_token.as_ref()));
                Action::Continue
            }
            Outcome::Verified(id) => {
                self.count(|m| &m.allowed);
                count(self.metrics.as_deref().and_then(|m| m.verified.get(id.rule)?.as_ref()));
                self.publish(&id);
                Action::Continue
            }
            Outcome::Rejected(r) => self.reject(&r, now),
            Outcome::WaitKeys(ri) => {
                if let Some(c) = self.caches.borrow_mut().get_mut(ri) {
                    if !c.waiters.contains(&me) {
                        c.waiters.push(me);
                    }
                }
                Action::Pause
            }
            Outcome::FetchKeys(ri) => {
                *budget = budget.saturating_sub(1);
                let mut woken = Vec::new();
                if self.send_fetch(ri, me, now, &mut woken) {
                    // `on_done` hands the fetch over if this stream goes away first.
                    let _ = callbacks::only(Callbacks::REQUEST_HEADERS | Callbacks::DONE);
                    return Action::Pause;
                }
                self.wake(woken);
                self.decide(me, budget)
            }
        }
    }

    fn publish(&self, id: &Verified) {
        let set = |k: &str, v: &[u8]| {
            let _ = wasmesh_sdk::set_property(k, v);
        };
        set(props::PRINCIPAL, id.principal.as_bytes());
        set(props::CLAIMS, id.claims_json.as_bytes());
        set(props::AUDIENCES, id.audiences_joined.as_bytes());
        if let Some(p) = &id.presenter {
            set(props::PRESENTER, p.as_bytes());
        }
        let rule = &self.config.rules[id.rule];
        if !rule.forward_original_token {
            if let Location::Header { name, .. } = &id.location {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
            }
        }
        for (h, v) in &id.headers {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, h, Some(v));
        }
        for h in &id.refused {
            log(
                LogLevel::Warn,
                &format!("authn: claim for header {h} not forwarded (not a scalar, or unsafe characters)"),
            );
        }
    }

    /// Refuses the request of the effective context: counts it, writes its audit record
    /// and sends the 401.
    fn reject(&self, r: &Rejection, now_ms: u64) -> Action {
        let reason = r.error.to_string();
        Metrics::denied(r.policy(&self.config), r.error.code());
        let source = wasmesh_sdk::get_property("source.address").ok().flatten();
        let req = AuditRequest {
            request_id: request_header("x-request-id"),
            source_ip: source.and_then(|b| audit::parse_ip(&String::from_utf8_lossy(&b))).map(|ip| ip.to_string()),
            method: request_header(":method").unwrap_or_default(),
            host: request_header(":authority").unwrap_or_default(),
            path: request_header(":path").unwrap_or_default(),
        };
        audit::write(&r.audit_record(&self.config, &req, now_ms));
        let scheme = request_header(":scheme").unwrap_or_else(|| "http".into());
        let www = policy::www_authenticate(&scheme, &req.host, &req.path);
        let _ = hostcalls::send_http_response(
            401,
            vec![("www-authenticate", www.as_str()), ("content-type", "text/plain")],
            Some(reason.as_bytes()),
        );
        Action::Pause
    }
}

/// The request of the effective context, for token extraction.
struct HostView;

impl policy::RequestView for HostView {
    fn header(&self, name: &str) -> Option<String> {
        request_header(name)
    }
    fn path(&self) -> Option<String> {
        request_header(":path")
    }
}

/// How often the root context checks whether a remote JWKS needs a (re)fetch.
const REFRESH_TICK: Duration = Duration::from_secs(1);
/// The root's tick while requests wait to be decided after a fetch.
const WAKE_TICK: Duration = Duration::from_millis(1);
/// Requests decided per tick after a fetch.
const WAKE_BATCH: usize = 4;

/// One VM's root: parses the configuration and keeps remote key sets warm (fetched after
/// start and refreshed before they expire, so requests rarely wait for a fetch).
#[derive(Default)]
struct Root {
    id: u32,
    shared: Shared,
    /// When the remote sets were last checked for a refresh (ms).
    last_refresh_check: u64,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.shared.complete_fetch(token, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // The callbacks this filter implements; the host skips the others (Envoy ignores this).
        // `on_done` only for a stream that sends a JWKS fetch (`decide`).
        let _ = callbacks::only(Callbacks::REQUEST_HEADERS);
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("authn: cannot read the configuration: {e:?}"));
                return false;
            }
        };
        match Config::parse(&bytes) {
            Ok(c) => {
                let remote = c.rules.iter().any(|r| matches!(r.keys, KeySource::Remote(_)));
                let metrics = Metrics::new(&c).map(Rc::new);
                self.shared = Shared {
                    caches: Rc::new(RefCell::new((0..c.rules.len()).map(|_| JwksCache::default()).collect())),
                    config: Rc::new(c),
                    metrics,
                    ready: Rc::default(),
                    tokens: Rc::new(RefCell::new(TokenCache::new(TOKEN_CACHE_SIZE))),
                };
                if remote {
                    let _ = hostcalls::set_tick_period(REFRESH_TICK);
                }
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("authn: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        if !self.shared.ready.borrow().is_empty() && self.shared.decide_ready(self.id) {
            let _ = hostcalls::set_tick_period(REFRESH_TICK);
        }
        if now.saturating_sub(self.last_refresh_check) < REFRESH_TICK.as_millis() as u64 {
            return;
        }
        self.last_refresh_check = now;
        for ri in 0..self.shared.config.rules.len() {
            let Some(r) = self.shared.remote(ri) else { continue };
            let wants = self.shared.caches.borrow().get(ri).is_some_and(|c| c.wants_refresh(r, now));
            if wants {
                let mut woken = Vec::new();
                self.shared.send_fetch(ri, self.id, now, &mut woken);
                self.shared.wake(woken);
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Authn { id, shared: self.shared.clone(), budget: MAX_FETCHES_PER_REQUEST }))
    }
}

/// One request.
struct Authn {
    id: u32,
    shared: Shared,
    /// JWKS fetches this request may still send.
    budget: u32,
}

impl Context for Authn {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        // The only calls a request sends are JWKS fetches it then waits for. An answer that
        // is no longer the fetch under way (overdue and replaced) is not stored, but this
        // request still decides again (it may wait for the newer fetch).
        self.shared.complete_fetch(token, body_size);
        if self.shared.decide(self.id, &mut self.budget) == Action::Continue {
            self.resume_http_request();
        }
    }

    fn on_done(&mut self) -> bool {
        // A request that goes away with its fetch under way (the call is cancelled) leaves
        // the waiters to the root context, whose next tick fetches for them. (Not sent from
        // here: the SDK would route the answer to this context, which is going away.)
        for c in self.shared.caches.borrow_mut().iter_mut() {
            if c.in_flight.is_some_and(|f| f.owner == self.id) {
                c.in_flight = None;
            }
        }
        true
    }
}

impl HttpContext for Authn {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.shared.config.rules.is_empty() {
            return Action::Continue;
        }
        // Header-injection defence: whatever a client sent under a name this filter
        // outputs is dropped before anything is decided.
        for h in &self.shared.config.output_headers {
            self.set_http_request_header(h, None);
        }
        self.shared.decide(self.id, &mut self.budget)
    }
}
