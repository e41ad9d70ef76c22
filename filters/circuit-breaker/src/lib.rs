//! The `circuit-breaker` filter: Istio DestinationRule `connectionPool` limits and
//! `outlierDetection`, per cluster.
//!
//! Pool limits are handed to the host once, at configure time (`wasmesh.pool_limits`): the
//! host knows each cluster's load where the request is sent and answers an overflow
//! itself (503, flag `UO`), so a request costs this filter no call for them. Only
//! `maxRetries` is per request: the filter hands it to `retry` as filter state.
//!
//! **Chain position: after `router` and `retry` (last).** Request headers: the router has
//! chosen `wasmesh.upstream.cluster`, whose `maxRetries` applies. Response headers run in
//! reverse chain order, so being last means this filter sees *every* attempt (before
//! `retry` may drop it) and counts each endpoint's consecutive errors in shared data; at
//! the threshold it calls `wasmesh.eject_endpoint`.

pub mod config;
pub mod policy;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{ext, now_ms, props, shared, stream};

use crate::config::Config;
use crate::policy::{EndpointState, Health, Observation, Verdict};
use wasmesh_sdk::callbacks::{self, Callbacks};

/// Per-request filter state read by the retry filter: the cluster's `maxRetries`.
pub const MAX_RETRIES_PROPERTY: &str = props::CIRCUIT_BREAKER_MAX_RETRIES;
/// CAS attempts on an endpoint's shared record.
const CAS_ATTEMPTS: u32 = 8;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Labelled counters, defined on first use and cached per VM.
#[derive(Default)]
struct Metrics(RefCell<HashMap<String, Option<Counter>>>);

#[derive(Default)]
struct Root {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
}

struct Stream {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
}

// === impl Root ===

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(c) = wasmesh_sdk::config::configure("circuit-breaker", Config::from_json) else { return false };
        for w in &c.warnings {
            hostcalls::log(LogLevel::Warn, &format!("circuit-breaker: {w}")).ok();
        }
        if c.has_pool_limits {
            if let Err(s) = ext::pool_limits(c.pool_limit_table().as_bytes()) {
                hostcalls::log(
                    LogLevel::Error,
                    &format!("circuit-breaker: the host does not apply pool limits (wasmesh.pool_limits: {s:?})"),
                )
                .ok();
                return false;
            }
        }
        // The callbacks this configuration uses: `maxRetries` is handed on with the
        // request headers, outlier detection looks at response headers. The host skips
        // the others (Envoy ignores this).
        let mut wanted = Callbacks::NONE;
        if c.has_max_retries {
            wanted = wanted | Callbacks::REQUEST_HEADERS;
        }
        if c.has_outlier {
            wanted = wanted | Callbacks::RESPONSE_HEADERS;
        }
        let _ = callbacks::only(wanted);
        self.config = Rc::new(c);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { config: Rc::clone(&self.config), metrics: Rc::clone(&self.metrics) }))
    }
}

// === impl Metrics ===

impl Metrics {
    fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        let key = wasmesh_sdk::metrics::labelled_name(name, labels);
        let mut map = self.0.borrow_mut();
        let counter = map.entry(key).or_insert_with(|| Counter::new(name, labels).ok());
        if let Some(c) = counter {
            c.add(1).ok();
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if !self.config.has_max_retries {
            return Action::Continue;
        }
        let Some(cluster) = stream::upstream_cluster().ok().flatten() else { return Action::Continue };
        if let Some(n) = self.config.policy_for(&cluster).and_then(|p| p.limits.max_retries) {
            wasmesh_sdk::set_property(MAX_RETRIES_PROPERTY, n.to_string().as_bytes()).ok();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if !self.config.has_outlier {
            return Action::Continue;
        }
        let Some(cluster) = stream::upstream_cluster().ok().flatten() else { return Action::Continue };
        let Some(cfg) = self.config.policy_for(&cluster).and_then(|p| p.outlier) else { return Action::Continue };
        let Some(addr) = text_property(props::UPSTREAM_ADDRESS).filter(|a| !a.is_empty()) else {
            return Action::Continue;
        };
        let status = wasmesh_sdk::headers::response_status().unwrap_or(0);
        let flags = stream::response_flags().unwrap_or_default();
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let obs = Observation::classify(status, &flag_refs);
        if obs == Observation::Ignore {
            return Action::Continue;
        }
        let now = now_ms();
        let health = || {
            let stat = |s: &str| stream::get_decimal_property(&props::cluster_stat(&cluster, s)).ok().flatten();
            let endpoints = stat("endpoints").unwrap_or(0);
            Health { endpoints, healthy: stat("healthy_endpoints").unwrap_or(endpoints) }
        };
        let key = format!("wasmesh.circuit_breaker.outlier.{cluster}/{addr}");
        let verdict = shared::update(&key, CAS_ATTEMPTS, |cur| {
            let state = cur.map(EndpointState::decode).unwrap_or_default();
            let (next, verdict) = state.record(&cfg, obs, now, health);
            // Successes on a clean record (the common case) write nothing.
            let write = (next != state).then(|| next.encode());
            (write, verdict)
        });
        match verdict {
            Ok(Verdict::Eject { duration_ms }) => {
                let ms = u32::try_from(duration_ms).unwrap_or(u32::MAX);
                match ext::eject_endpoint(ms) {
                    Ok(()) => {
                        self.metrics.inc("wasmesh_circuit_breaker_ejections_total", &[("cluster", &cluster)]);
                        hostcalls::log(
                            LogLevel::Info,
                            &format!("circuit-breaker: ejected {addr} of cluster {cluster} for {ms}ms"),
                        )
                        .ok();
                    }
                    Err(s) => {
                        hostcalls::log(LogLevel::Warn, &format!("circuit-breaker: could not eject {addr} ({s:?})"))
                            .ok();
                    }
                }
            }
            Ok(Verdict::Suppressed) => {
                self.metrics.inc("wasmesh_circuit_breaker_ejections_suppressed_total", &[("cluster", &cluster)]);
            }
            Ok(Verdict::None) => {}
            Err(s) => {
                hostcalls::log(LogLevel::Debug, &format!("circuit-breaker: outlier record {key} busy ({s:?})")).ok();
            }
        }
        Action::Continue
    }
}

fn text_property(name: &str) -> Option<String> {
    wasmesh_sdk::get_property(name).ok().flatten().map(wasmesh_sdk::text).filter(|s| !s.is_empty())
}
