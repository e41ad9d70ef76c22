//! The `retry` filter: Istio `HTTPRetry` / Envoy retry policy on top of wasmesh's retry
//! mechanism. Put it last in the chain (after the router) so it sees every attempt first.
//!
//! Request headers: pick the policy by `wasmesh.route.name`, set the per-try timeout and
//! ask the host to keep the body for replay. Response headers: classify the attempt,
//! decide with [`policy`], and either call `wasmesh.retry_upstream(backoff)` or pass the
//! response on (flag `URX` when retries ran out, `UO` when the budget refused one).

pub mod config;
pub mod policy;

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use wasmesh_sdk::{ext, headers, props, shared, stream};

use crate::config::Config;
use crate::policy::{Decision, Outcome, Rng};
use wasmesh_sdk::callbacks::{self, Callbacks};

/// CAS attempts on the shared budget counter before giving up (and not retrying).
const CAS_ATTEMPTS: u32 = 8;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Envoy's retry stats (`upstream_rq_retry`, `_retry_overflow`, `_retry_limit_exceeded`),
/// plus the non-idempotent requests a retry was refused to.
#[derive(Clone, Copy)]
struct Metrics {
    retries: Counter,
    overflow: Counter,
    limit_exceeded: Counter,
    non_idempotent: Counter,
}

#[derive(Default)]
struct Root {
    config: Rc<Config>,
    metrics: Option<Metrics>,
    seed: u64,
}

struct Stream {
    config: Rc<Config>,
    metrics: Option<Metrics>,
    /// Index into `config.routes`, `None` = the default policy.
    route: Option<usize>,
    rng: Rng,
    /// The shared key of the budget slot this stream holds while its retry is in flight.
    budget_slot: Option<String>,
    /// Retries this stream asked for.
    retries_issued: u32,
}

// === impl Root ===

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // The callbacks this filter implements; the host skips the others (Envoy ignores this).
        // `on_done` only for a stream holding a budget slot (`acquire_budget`).
        let _ = callbacks::only(Callbacks::HEADERS);
        let Some(c) = wasmesh_sdk::config::configure("retry", Config::from_json) else { return false };
        self.config = Rc::new(c);
        self.metrics = (|| {
            Some(Metrics {
                retries: Counter::new("wasmesh_retry_retries_total", &[]).ok()?,
                overflow: Counter::new("wasmesh_retry_overflow_total", &[]).ok()?,
                limit_exceeded: Counter::new("wasmesh_retry_limit_exceeded_total", &[]).ok()?,
                non_idempotent: Counter::new("wasmesh_retry_non_idempotent_total", &[]).ok()?,
            })
        })();
        self.seed = self.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0x5EED);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: Rc::clone(&self.config),
            metrics: self.metrics,
            route: None,
            rng: Rng::new(self.seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            budget_slot: None,
            retries_issued: 0,
        }))
    }
}

// === impl Stream ===

impl Stream {
    fn policy(&self) -> &policy::RetryPolicy {
        match self.route {
            Some(i) => self.config.routes.get(i).map(|(_, p)| p).unwrap_or(&self.config.default),
            None => &self.config.default,
        }
    }

    /// Takes a budget slot for a retry to `cluster`; `false` = the budget is spent.
    fn acquire_budget(&mut self) -> bool {
        // The circuit-breaker filter (when configured) hands over the cluster's maxRetries.
        let max_retries = stream::get_decimal_property(props::CIRCUIT_BREAKER_MAX_RETRIES).ok().flatten();
        let budget = self.config.budget;
        if budget.is_none() && max_retries.is_none() {
            return true;
        }
        let cluster = stream::upstream_cluster().ok().flatten().unwrap_or_default();
        let active =
            stream::get_decimal_property(&props::cluster_stat(&cluster, "active_requests")).ok().flatten().unwrap_or(0);
        let key = format!("wasmesh.retry.active_retries.{cluster}");
        let taken = shared::update(&key, CAS_ATTEMPTS, |cur| {
            let retries = cur.and_then(stream::decode_u64_le).unwrap_or(0);
            if policy::retry_admitted(budget, max_retries, active, retries) {
                (Some((retries + 1).to_le_bytes().to_vec()), true)
            } else {
                (None, false)
            }
        });
        match taken {
            Ok(true) => {
                self.budget_slot = Some(key);
                let _ = callbacks::only(Callbacks::HEADERS | Callbacks::DONE);
                true
            }
            Ok(false) => false,
            Err(s) => {
                log_warn(&format!("retry: budget counter {key} unavailable ({s:?}); not retrying"));
                false
            }
        }
    }

    fn count(&self, which: impl FnOnce(&Metrics) -> Counter) {
        if let Some(m) = &self.metrics {
            which(m).add(1).ok();
        }
    }

    fn release_budget(&mut self) {
        if let Some(key) = self.budget_slot.take() {
            if let Err(s) = shared::add(&key, -1, CAS_ATTEMPTS) {
                log_warn(&format!("retry: could not release budget slot {key} ({s:?})"));
            }
        }
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        self.release_budget();
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if !self.config.routes.is_empty() {
            if let Ok(Some(name)) = wasmesh_sdk::get_property(props::ROUTE_NAME) {
                self.route = self.config.routes.iter().position(|(n, _)| n.as_bytes() == name.as_slice());
            }
        }
        let p = self.policy();
        let (attempts, per_try, buffer) = (p.attempts, p.per_try_timeout_ms, p.max_buffer_bytes);
        if let Some(ms) = per_try {
            set(props::PER_TRY_TIMEOUT_MS, &ms.to_string());
        }
        if attempts > 0 && buffer > 0 {
            set(props::BUFFER_FOR_RETRY, &buffer.to_string());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        // This response ends the attempt a held slot was taken for.
        self.release_budget();
        let status = headers::response_status().unwrap_or(0);
        let grpc = headers::with_response_header("grpc-status", |g| g.and_then(|s| s.trim().parse::<u32>().ok()));
        let plain = Outcome::Response { status, grpc_status: grpc };
        // Most responses are final without a look at the flags (a hostcall each).
        let outcome = if Outcome::flags_matter(status) || self.policy().retries(plain) {
            let flags = stream::response_flags().unwrap_or_default();
            let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
            Outcome::classify(status, &flag_refs, grpc)
        } else {
            plain
        };
        if !self.policy().retries(outcome) {
            return Action::Continue;
        }
        // The host's count, never below our own: a host that miscounts cannot cause endless retries.
        let host_count = stream::get_decimal_property(props::REQUEST_ATTEMPT_COUNT).ok().flatten().unwrap_or(1);
        let attempt = host_count.max(u64::from(self.retries_issued) + 1);
        // The method as sent upstream, read only when a retry is in question (the request
        // head stays readable: this filter wants a later callback).
        let idempotent = headers::with_request_header(":method", |method| {
            policy::is_idempotent(method.unwrap_or_default(), || {
                headers::with_request_header("idempotency-key", |k| k.is_some())
            })
        });
        match self.policy().decide(outcome, idempotent, attempt) {
            Decision::Pass => {}
            Decision::NonIdempotent => self.count(|m| m.non_idempotent),
            Decision::Exhausted => {
                add_flag("URX");
                self.count(|m| m.limit_exceeded);
            }
            Decision::Retry { retry_number } => {
                if !self.acquire_budget() {
                    // Envoy marks a retry refused by the budget/circuit breaker as overflow.
                    add_flag("UO");
                    self.count(|m| m.overflow);
                    return Action::Continue;
                }
                let r = self.rng.next_u64();
                let delay = self.policy().backoff.delay_ms(retry_number, r);
                match ext::retry_upstream(delay) {
                    Ok(()) => {
                        self.retries_issued = self.retries_issued.saturating_add(1);
                        self.count(|m| m.retries);
                    }
                    Err(Status::BadArgument) => {
                        // The body outgrew maxBufferBytes: this response is final.
                        self.release_budget();
                        log_debug("retry: request body was not buffered; passing the failure on");
                    }
                    Err(s) => {
                        self.release_budget();
                        log_warn(&format!("retry: wasmesh.retry_upstream failed ({s:?})"));
                    }
                }
            }
        }
        Action::Continue
    }
}

fn set(name: &str, value: &str) {
    if let Err(s) = wasmesh_sdk::set_property(name, value.as_bytes()) {
        log_warn(&format!("retry: could not set {name} ({s:?})"));
    }
}

fn add_flag(flag: &str) {
    stream::add_response_flag_or_warn("retry", flag);
}

fn log_warn(msg: &str) {
    proxy_wasm::hostcalls::log(LogLevel::Warn, msg).ok();
}

fn log_debug(msg: &str) {
    proxy_wasm::hostcalls::log(LogLevel::Debug, msg).ok();
}
