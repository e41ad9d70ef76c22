//! The `fault` filter: Istio `HTTPFaultInjection` (delay, abort) plus Envoy's
//! header-controlled faults. Put it before the router (first in the chain after telemetry)
//! so a fault never reaches, or waits for, the upstream.
//!
//! A delay never blocks the worker: the stream is paused and `wasmesh.resume_after(ms)`
//! resumes it. When a delay is followed by an abort (or the host lacks `resume_after`),
//! the root context keeps a timer list and acts on `on_tick` through
//! `proxy_set_effective_context`, which is plain proxy-wasm.

pub mod config;
pub mod policy;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::hostcalls;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::rng::SplitMix64;
use wasmesh_sdk::{headers, now_ms, shared, stream};

use crate::config::Config;
use crate::policy::{abort_reply, AbortKind, Plan, RequestView};
use wasmesh_sdk::callbacks::{self, Callbacks};

/// Shared-data key of the active-fault counter (all workers).
const ACTIVE_KEY: &str = "wasmesh.fault.active_faults";
/// CAS attempts on the active-fault counter.
const CAS_ATTEMPTS: u32 = 8;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Envoy's fault stats (`delays_injected`, `aborts_injected`, `faults_overflow`).
#[derive(Clone, Copy)]
struct Metrics {
    delays: Counter,
    aborts: Counter,
    overflow: Counter,
}

/// Work the root does on `on_tick` for a paused stream.
struct Timer {
    due_ms: u64,
    context_id: u32,
    /// `None` = resume the request; `Some` = send the abort.
    abort: Option<(AbortKind, bool)>,
}

#[derive(Default)]
struct Timers(RefCell<Vec<Timer>>);

#[derive(Default)]
struct Root {
    config: Rc<Config>,
    timers: Rc<Timers>,
    metrics: Option<Metrics>,
    seed: u64,
}

struct Stream {
    id: u32,
    config: Rc<Config>,
    timers: Rc<Timers>,
    metrics: Option<Metrics>,
    rng: SplitMix64,
    counted_active: bool,
}

/// The request as the fault rules see it: its path, headers read on demand.
struct Req(String);

// === impl Root ===

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // The callbacks this filter implements; the host skips the others (Envoy ignores this).
        // `on_done` only for the streams that hold something to release (`Stream::hold`).
        let _ = callbacks::only(Callbacks::REQUEST_HEADERS);
        let Some(c) = wasmesh_sdk::config::configure("fault", Config::from_json) else { return false };
        self.config = Rc::new(c);
        self.seed = now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xFA17;
        self.metrics = (|| {
            Some(Metrics {
                delays: Counter::new("wasmesh_fault_delays_injected_total", &[]).ok()?,
                aborts: Counter::new("wasmesh_fault_aborts_injected_total", &[]).ok()?,
                overflow: Counter::new("wasmesh_fault_faults_overflow_total", &[]).ok()?,
            })
        })();
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        let due: Vec<Timer> = {
            let mut list = self.timers.0.borrow_mut();
            let (due, rest) = std::mem::take(&mut *list).into_iter().partition(|t| t.due_ms <= now);
            *list = rest;
            due
        };
        for t in due {
            if hostcalls::set_effective_context(t.context_id).is_err() {
                continue; // the stream is gone
            }
            match t.abort {
                None => {
                    hostcalls::resume_http_request().ok();
                }
                Some((kind, grpc)) => send_abort(kind, grpc, self.metrics),
            }
        }
        self.timers.arm(now);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id,
            config: Rc::clone(&self.config),
            timers: Rc::clone(&self.timers),
            metrics: self.metrics,
            rng: SplitMix64::new(self.seed ^ u64::from(id).wrapping_mul(0xBF58_476D_1CE4_E5B9)),
            counted_active: false,
        }))
    }
}

// === impl Timers ===

impl Timers {
    fn push(&self, t: Timer) {
        self.0.borrow_mut().push(t);
        self.arm(now_ms());
    }

    fn cancel(&self, context_id: u32) {
        let mut list = self.0.borrow_mut();
        list.retain(|t| t.context_id != context_id);
    }

    /// One tick at the earliest deadline (or none when the list is empty).
    fn arm(&self, now: u64) {
        let next = self.0.borrow().iter().map(|t| t.due_ms).min();
        let period = next.map_or(0, |d| d.saturating_sub(now).clamp(1, u64::from(u32::MAX)));
        hostcalls::set_tick_period(Duration::from_millis(period)).ok();
    }
}

// === impl Stream ===

impl Stream {
    /// Counts this fault against `maxActiveFaults`; `false` = over the limit, inject nothing.
    fn admit(&mut self) -> bool {
        let Some(max) = self.config.max_active_faults else { return true };
        let admitted = shared::update(ACTIVE_KEY, CAS_ATTEMPTS, |cur| {
            let n = cur.and_then(stream::decode_u64_le).unwrap_or(0);
            if n < max {
                (Some((n + 1).to_le_bytes().to_vec()), true)
            } else {
                (None, false)
            }
        })
        .unwrap_or(false);
        if admitted {
            self.counted_active = true;
            hold();
        }
        admitted
    }
}

/// This stream holds something `on_done` releases (an active-fault count, a timer): ask
/// the host to call it.
fn hold() {
    let _ = callbacks::only(Callbacks::REQUEST_HEADERS | Callbacks::DONE);
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        self.timers.cancel(self.id);
        if std::mem::take(&mut self.counted_active) {
            shared::add(ACTIVE_KEY, -1, CAS_ATTEMPTS).ok();
        }
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.config.is_inert() {
            return Action::Continue;
        }
        let config = Rc::clone(&self.config);
        let path = headers::request_header(":path").unwrap_or_default();
        let plan = {
            let mut draws = [0u64; 2];
            for d in &mut draws {
                *d = self.rng.next_u64();
            }
            let mut it = draws.into_iter();
            let req = Req(path);
            Plan::decide(&config.rules, &req, config.header_ceiling, || it.next().unwrap_or(0))
        };
        if plan.is_empty() {
            return Action::Continue;
        }
        if !self.admit() {
            if let Some(m) = self.metrics {
                m.overflow.add(1).ok();
            }
            return Action::Continue;
        }
        let grpc =
            headers::with_request_header("content-type", |c| c.is_some_and(|c| c.starts_with("application/grpc")));
        match (plan.delay_ms, plan.abort) {
            (None, Some(kind)) => {
                send_abort(kind, grpc, self.metrics);
                Action::Pause
            }
            (Some(ms), abort) => {
                add_flag("DI");
                if let Some(m) = self.metrics {
                    m.delays.add(1).ok();
                }
                let ms32 = u32::try_from(ms).unwrap_or(u32::MAX);
                let resumed_by_host = abort.is_none() && stream::resume_after(ms32).is_ok();
                if !resumed_by_host {
                    let abort = abort.map(|k| (k, grpc));
                    self.timers.push(Timer { due_ms: now_ms().saturating_add(ms), context_id: self.id, abort });
                    if !self.counted_active {
                        hold();
                    }
                }
                Action::Pause
            }
            (None, None) => Action::Continue,
        }
    }
}

// === impl Req ===

impl RequestView for Req {
    fn path(&self) -> &str {
        &self.0
    }

    fn header(&self, name: &str) -> Option<String> {
        headers::request_header(name)
    }
}

fn send_abort(kind: AbortKind, grpc_request: bool, metrics: Option<Metrics>) {
    add_flag("FI");
    if let Some(m) = metrics {
        m.aborts.add(1).ok();
    }
    let (status, headers, body) = abort_reply(kind, grpc_request);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = if body.is_empty() { None } else { Some(body) };
    if let Err(s) = hostcalls::send_http_response(u32::from(status), headers, body) {
        hostcalls::log(LogLevel::Warn, &format!("fault: could not send the abort ({s:?})")).ok();
    }
}

fn add_flag(flag: &str) {
    stream::add_response_flag_or_warn("fault", flag);
}
