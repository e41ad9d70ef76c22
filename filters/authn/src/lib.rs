//! The `authn` filter: Istio `RequestAuthentication` (JWT) on wasmesh. Host glue only;
//! the decisions are in [`policy`], the crypto in [`jwk`], the config in [`config`].
//!
//! Per request: remove every inbound header this filter may output (injection defence),
//! find tokens, and — no token: continue without identity; an invalid token: 401 with
//! `www-authenticate: Bearer realm="…", error="invalid_token"` and the precise reason;
//! a valid one: publish `request.auth.principal` (`<iss>/<sub>`), `request.auth.claims`
//! (payload JSON), `request.auth.audiences` (`,`-joined), `request.auth.presenter`, add
//! the claim/payload headers, and remove the token header unless `forwardOriginalToken`.
//! A `jwksUri` is fetched with `dispatch_http_call` (the request pauses meanwhile).

pub mod config;
pub mod jwk;
pub mod policy;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};

use config::{Config, KeySource, Location};
use policy::{Identity, JwksCache, Keys, Outcome};

/// Per-request properties this filter publishes (read by `authz` and logs).
pub mod props {
    pub use wasmesh_sdk::props::{
        REQUEST_AUTH_AUDIENCES as AUDIENCES, REQUEST_AUTH_CLAIMS as CLAIMS, REQUEST_AUTH_PRESENTER as PRESENTER,
        REQUEST_AUTH_PRINCIPAL as PRINCIPAL,
    };
}

/// Most JWKS fetches one request may cause (cold cache, then an unknown `kid`).
const MAX_FETCHES_PER_REQUEST: u32 = 2;
/// Largest JWKS body read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn log(level: LogLevel, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

/// Envoy `jwt_authn`-like counters (`allowed`, `denied`, `jwks_fetch_success|failed`),
/// plus requests without a token.
struct Metrics {
    allowed: Counter,
    anonymous: Counter,
    fetch_ok: Counter,
    fetch_failed: Counter,
}

impl Metrics {
    fn new() -> Option<Metrics> {
        Some(Metrics {
            allowed: Counter::new("wasmesh_authn_allowed_total", &[]).ok()?,
            anonymous: Counter::new("wasmesh_authn_no_token_total", &[]).ok()?,
            fetch_ok: Counter::new("wasmesh_authn_jwks_fetch_success_total", &[]).ok()?,
            fetch_failed: Counter::new("wasmesh_authn_jwks_fetch_failed_total", &[]).ok()?,
        })
    }

    /// Counts a 401 by reason code (a small fixed set).
    fn denied(reason: &str) {
        if let Ok(c) = Counter::new("wasmesh_authn_denied_total", &[("reason", reason)]) {
            let _ = c.add(1);
        }
    }
}

fn count(c: Option<&Counter>) {
    if let Some(c) = c {
        let _ = c.add(1);
    }
}

fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads the answer of a JWKS fetch for rule `rule` (in `on_http_call_response`) into its cache.
fn store_jwks_response(
    cfg: &Config,
    caches: &RefCell<Vec<JwksCache>>,
    metrics: Option<&Metrics>,
    rule: usize,
    body_size: usize,
    now: u64,
) {
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::{BufferType, MapType};
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten();
    let result = if status.as_deref() != Some("200") {
        Err(format!("status {}", status.as_deref().unwrap_or("none")))
    } else if body_size > MAX_JWKS_BYTES {
        Err(format!("body of {body_size} bytes is over {MAX_JWKS_BYTES}"))
    } else {
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten();
        jwk::Jwks::parse(&String::from_utf8_lossy(&body.unwrap_or_default()))
    };
    let uri = match cfg.rules.get(rule).map(|r| &r.keys) {
        Some(KeySource::Remote(r)) => r.uri.as_str(),
        _ => "",
    };
    let ok = result.is_ok();
    if let Some(c) = caches.borrow_mut().get_mut(rule) {
        if let Err(e) = c.fetched(result, now) {
            log(LogLevel::Warn, &format!("authn: JWKS fetch from {uri} failed: {e}"));
        }
    }
    count(if ok { metrics.map(|m| &m.fetch_ok) } else { metrics.map(|m| &m.fetch_failed) });
}

/// Sends the JWKS fetch of `r` from the current context; the call token, or `None` (logged).
fn send_fetch(r: &config::RemoteJwks) -> Option<u32> {
    let headers = vec![
        (":method", "GET"),
        (":path", r.path.as_str()),
        (":authority", r.authority.as_str()),
        (":scheme", r.scheme.as_str()),
        ("accept", "application/json"),
    ];
    match proxy_wasm::hostcalls::dispatch_http_call(
        &r.cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(r.timeout_ms),
    ) {
        Ok(token) => Some(token),
        Err(e) => {
            log(LogLevel::Warn, &format!("authn: JWKS fetch from {} via cluster {} not sent: {e:?}", r.uri, r.cluster));
            None
        }
    }
}

/// How often the root context checks whether a remote JWKS needs a (re)fetch.
const REFRESH_TICK: Duration = Duration::from_secs(1);

/// One VM's configuration and remote-JWKS caches (one per rule). The root keeps remote
/// key sets warm: fetched soon after start and refreshed before they expire, so requests
/// rarely wait for a fetch.
#[derive(Default)]
struct Root {
    config: Rc<Config>,
    caches: Rc<RefCell<Vec<JwksCache>>>,
    metrics: Option<Rc<Metrics>>,
    /// Background fetches in flight: call token → rule.
    refreshing: Vec<(u32, usize)>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(i) = self.refreshing.iter().position(|(t, _)| *t == token) else { return };
        let (_, rule) = self.refreshing.swap_remove(i);
        store_jwks_response(&self.config, &self.caches, self.metrics.as_deref(), rule, body_size, now_ms());
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        ) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("authn: cannot read the configuration: {e:?}"));
                return false;
            }
        };
        match Config::parse(&bytes) {
            Ok(c) => {
                self.caches = Rc::new(RefCell::new((0..c.rules.len()).map(|_| JwksCache::default()).collect()));
                self.config = Rc::new(c);
                if self.metrics.is_none() {
                    self.metrics = Metrics::new().map(Rc::new);
                }
                self.refreshing.clear();
                if self.config.rules.iter().any(|r| matches!(r.keys, KeySource::Remote(_))) {
                    let _ = proxy_wasm::hostcalls::set_tick_period(REFRESH_TICK);
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
        for (ri, rule) in self.config.rules.iter().enumerate() {
            let KeySource::Remote(r) = &rule.keys else { continue };
            let wants = self.caches.borrow().get(ri).is_some_and(|c| c.wants_refresh(r, now));
            if !wants {
                continue;
            }
            match send_fetch(r) {
                Some(token) => {
                    if let Some(c) = self.caches.borrow_mut().get_mut(ri) {
                        c.refresh_started(now);
                    }
                    self.refreshing.push((token, ri));
                }
                None => {
                    count(self.metrics.as_deref().map(|m| &m.fetch_failed));
                    if let Some(c) = self.caches.borrow_mut().get_mut(ri) {
                        let _ = c.fetched(Err("not sent".into()), now);
                    }
                }
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Authn {
            config: self.config.clone(),
            caches: self.caches.clone(),
            metrics: self.metrics.clone(),
            pending: None,
            fetches: 0,
        }))
    }
}

/// One request.
struct Authn {
    config: Rc<Config>,
    caches: Rc<RefCell<Vec<JwksCache>>>,
    metrics: Option<Rc<Metrics>>,
    /// (call token, rule) of the JWKS fetch this request waits for.
    pending: Option<(u32, usize)>,
    fetches: u32,
}

impl Context for Authn {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some((want, rule)) = self.pending.take() else { return };
        if want != token {
            return;
        }
        store_jwks_response(&self.config, &self.caches, self.metrics.as_deref(), rule, body_size, now_ms());
        if self.run() == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Authn {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.config.rules.is_empty() {
            return Action::Continue;
        }
        // Header-injection defence: whatever a client sent under a name this filter
        // outputs is dropped before anything is decided.
        for h in &self.config.output_headers {
            self.set_http_request_header(h, None);
        }
        self.run()
    }
}

struct View<'a>(&'a Authn);

impl policy::RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.0.get_http_request_header(name)
    }
    fn path(&self) -> Option<String> {
        self.0.get_http_request_header(":path")
    }
}

impl Authn {
    /// Decides (again, after a fetch) and acts; `Pause` while a fetch or a local reply is under way.
    fn run(&mut self) -> Action {
        let found = policy::extract(&self.config, &View(self));
        let now_ms = now_ms();
        let outcome = {
            let cfg = self.config.clone();
            let caches = self.caches.clone();
            let may_fetch = self.fetches < MAX_FETCHES_PER_REQUEST;
            let mut keys = |ri: usize, jwt: &policy::Jwt| match &cfg.rules[ri].keys {
                KeySource::Inline(k) => Keys::Ready(k.clone()),
                KeySource::Remote(r) => match caches.borrow().get(ri) {
                    // Out of fetches for this request: decide with what is cached.
                    Some(c) => match c.keys_for(r, jwt, now_ms) {
                        Keys::Fetch if !may_fetch => c.cached(),
                        k => k,
                    },
                    None => Keys::Unavailable,
                },
            };
            policy::decide(&self.config, &found, now_ms / 1000, &mut keys)
        };
        match outcome {
            Outcome::NoToken => {
                count(self.metrics.as_deref().map(|m| &m.anonymous));
                Action::Continue
            }
            Outcome::Verified(id) => {
                count(self.metrics.as_deref().map(|m| &m.allowed));
                self.publish(&id);
                Action::Continue
            }
            Outcome::Rejected(e) => {
                Metrics::denied(e.code());
                self.reject(&e.to_string())
            }
            Outcome::FetchKeys(ri) => {
                if self.fetches >= MAX_FETCHES_PER_REQUEST {
                    Metrics::denied(policy::JwtError::JwksFetchFail.code());
                    return self.reject(&policy::JwtError::JwksFetchFail.to_string());
                }
                self.fetches += 1;
                self.fetch(ri, now_ms)
            }
        }
    }

    fn fetch(&mut self, ri: usize, now_ms: u64) -> Action {
        let KeySource::Remote(r) = &self.config.rules[ri].keys else {
            return self.reject(&policy::JwtError::JwksFetchFail.to_string());
        };
        let r = r.clone();
        if let Some(c) = self.caches.borrow_mut().get_mut(ri) {
            c.dispatched(now_ms);
        }
        match send_fetch(&r) {
            Some(token) => {
                self.pending = Some((token, ri));
                Action::Pause
            }
            None => {
                count(self.metrics.as_deref().map(|m| &m.fetch_failed));
                if let Some(c) = self.caches.borrow_mut().get_mut(ri) {
                    let _ = c.fetched(Err("not sent".into()), now_ms);
                }
                self.run()
            }
        }
    }

    fn publish(&mut self, id: &Identity) {
        let set = |k: &str, v: &[u8]| {
            let _ = wasmesh_sdk::set_property(k, v);
        };
        set(props::PRINCIPAL, id.principal.as_bytes());
        set(props::CLAIMS, id.claims_json.as_bytes());
        set(props::AUDIENCES, id.audiences.join(",").as_bytes());
        if let Some(p) = &id.presenter {
            set(props::PRESENTER, p.as_bytes());
        }
        let rule = &self.config.rules[id.rule];
        if !rule.forward_original_token {
            if let Location::Header { name, .. } = &id.location {
                self.set_http_request_header(name, None);
            }
        }
        for (h, v) in &id.headers {
            self.set_http_request_header(h, Some(v));
        }
        for h in &id.refused {
            log(
                LogLevel::Warn,
                &format!("authn: claim for header {h} not forwarded (not a scalar, or unsafe characters)"),
            );
        }
    }

    fn reject(&mut self, reason: &str) -> Action {
        let scheme = self.get_http_request_header(":scheme").unwrap_or_else(|| "http".into());
        let authority = self.get_http_request_header(":authority").unwrap_or_default();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let www = policy::www_authenticate(&scheme, &authority, &path);
        self.send_http_response(
            401,
            vec![("www-authenticate", www.as_str()), ("content-type", "text/plain")],
            Some(reason.as_bytes()),
        );
        Action::Pause
    }
}
