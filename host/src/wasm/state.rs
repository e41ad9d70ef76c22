//! What a VM's `Store` holds (`HostState`): its contexts, the scope of the running
//! callback, and, per HTTP stream, the state shared by every filter of that stream
//! (`StreamShared`). Hostcalls touch only this; the stream acts on it after the guest
//! call returns (STYLE habit 5).

use super::interest::Interest;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::AbortHandle;
use wasmtime::{Memory, StoreLimits, TypedFunc};

use super::plugin::Plugin;
use super::request_metrics::{StreamMetrics, Template};
use super::runtime::WasmRuntime;
use super::types::{HostServices, LocalReply, StreamInfo, UpstreamInfo};
use super::vm::Vm;

/// Data of one VM's `Store`.
pub(crate) struct HostState {
    pub rt: Arc<WasmRuntime>,
    /// `None` for the throwaway validation VM: no timers, calls or queues then.
    pub host: Option<Rc<dyn HostServices>>,
    pub vm: Weak<Vm>,
    pub vm_id: Arc<str>,
    /// Plugin whose module built this VM (log fallback, WASI env, limits).
    pub first: Arc<Plugin>,
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    /// The guest allocator (shared, so a hostcall takes it without cloning the func).
    pub allocator: Option<Rc<TypedFunc<u32, u32>>>,
    /// A guest region (address, capacity) that answers may be written to instead of a
    /// fresh allocation, when the guest offers it (`wasmesh.answer_buffer`).
    pub answer_buffer: Option<(u32, u32)>,
    /// Where answers are assembled before they are copied into the guest, reused from
    /// call to call ([`super::abi::memory::answer_from_scratch`]).
    pub scratch: Vec<u8>,
    /// Property sets the guest defined (`wasmesh.define_properties`), by id.
    pub property_sets: Vec<super::properties::PropertySet>,
    pub contexts: FxHashMap<u32, Ctx>,
    /// The effective context of the running callback (0: none).
    pub current: u32,
    pub scope: Scope,
    pub next_ctx: u32,
    /// The guest's last warning or error log line (it explains a refused configuration).
    pub last_error_log: Option<String>,
    pub next_token: u32,
    /// Queue id → root context that registered it on this VM.
    pub queue_owners: FxHashMap<u32, u32>,
    /// Sender that wakes this VM's queue task (`on_queue_ready`).
    pub queue_tx: Option<tokio::sync::mpsc::UnboundedSender<u32>>,
}

/// A context inside a VM.
pub(crate) enum Ctx {
    Root(RootCtx),
    Http(HttpCtx),
}

/// A plugin's root context.
pub(crate) struct RootCtx {
    pub plugin: Arc<Plugin>,
    pub tick: Option<AbortHandle>,
    pub calls: FxHashMap<u32, AbortHandle>,
    /// The HTTP callbacks its streams start with.
    pub interest: Interest,
    /// The request metrics its streams record (`wasmesh.request_metrics`).
    pub request_metrics: Option<Arc<Template>>,
}

/// A filter's context for one HTTP stream.
pub(crate) struct HttpCtx {
    pub root: u32,
    pub plugin: Arc<Plugin>,
    pub stream: Rc<RefCell<StreamShared>>,
    pub calls: FxHashMap<u32, AbortHandle>,
    /// `on_done` returned false: `on_log`/`on_delete` wait for `proxy_done` (or a timeout).
    pub done_pending: bool,
    /// The HTTP callbacks to call for this stream.
    pub interest: Interest,
}

/// What the running callback may read besides its context.
#[derive(Default)]
pub(crate) enum Scope {
    #[default]
    None,
    /// `on_vm_start`: `VM_CONFIGURATION` is readable.
    VmStart,
    /// `on_configure`: `PLUGIN_CONFIGURATION` is readable.
    Configure,
    /// `on_http_call_response`: the response maps and body are readable.
    CallResponse(Box<CallResponse>),
    /// `on_grpc_receive` / `on_grpc_close`: metadata maps, the message and the status.
    Grpc(Box<GrpcResult>),
}

/// The answer to a unary `grpc_call`.
pub(crate) struct GrpcResult {
    pub initial_metadata: http::HeaderMap,
    pub message: Bytes,
    pub trailing_metadata: http::HeaderMap,
    pub status: u32,
    pub status_message: String,
}

/// The answer to an `http_call`, readable during `on_http_call_response`.
pub(crate) struct CallResponse {
    /// Status and headers; `None` when the call failed.
    pub head: Option<http::response::Parts>,
    pub status: u16,
    pub body: Bytes,
    pub trailers: http::HeaderMap,
    /// Status message for `proxy_get_status` (empty on success).
    pub message: String,
}

/// State of one HTTP stream shared by all the filters of its chain (it lives outside any
/// VM; each VM's context holds an `Rc` to it).
pub(crate) struct StreamShared {
    pub info: StreamInfo,
    pub upstream: UpstreamInfo,
    /// The request head: the caller's (lent, writable) during the request-headers phase,
    /// a read-only copy afterwards.
    pub request: Option<http::request::Parts>,
    pub request_live: bool,
    pub response: Option<http::response::Parts>,
    pub response_live: bool,
    /// Trailers are rare: boxed, which keeps this struct small enough for the allocator's
    /// per-thread cache (over ~1 KiB an allocation and its free cost ~10× more).
    pub request_trailers: Option<Box<http::HeaderMap>>,
    pub request_trailers_live: bool,
    pub response_trailers: Option<Box<http::HeaderMap>>,
    pub response_trailers_live: bool,
    /// The body the active (or holding) filter sees.
    pub request_body: Option<BytesMut>,
    pub response_body: Option<BytesMut>,
    /// `set_property` values (`wasmesh.upstream.cluster`, anything else), by dotted path
    /// ([`state_key`]).
    pub filter_state: FxHashMap<StateKey, Bytes>,
    pub signals: Signals,
    pub notify: Rc<tokio::sync::Notify>,
    /// Request metrics the proxy records at the end (boxed: most chains have none).
    pub metrics: Option<Box<StreamMetrics>>,
}

/// A filter-state key: the names filters set on most requests are static (no allocation
/// per set and per stream), any other name is owned.
pub(crate) type StateKey = Cow<'static, str>;

/// Filter-state names set on most requests (routing intents, retry settings, flags, the
/// request identity). Others work the same, at the price of an allocation.
const WELL_KNOWN_KEYS: &[&str] = &[
    "wasmesh.upstream.cluster",
    "wasmesh.upstream.subset",
    "wasmesh.upstream.hash_key",
    "wasmesh.upstream.per_try_timeout_ms",
    "wasmesh.route.name",
    "wasmesh.route.timeout_ms",
    "wasmesh.request.buffer_for_retry",
    super::properties::RESPONSE_FLAG,
    "wasmesh.eject_endpoint",
    "circuit_breaker.max_retries",
    "request.auth.principal",
    "request.auth.claims",
    "request.auth.audiences",
    "request.auth.presenter",
];

/// The filter-state key for `name`.
pub(crate) fn state_key(name: &str) -> StateKey {
    match WELL_KNOWN_KEYS.iter().find(|k| **k == name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_owned()),
    }
}

/// Stream control requested by filters; acted on after the guest call returns.
#[derive(Default)]
pub(crate) struct Signals {
    pub continue_request: bool,
    pub continue_response: bool,
    pub close: bool,
    pub local_reply: Option<LocalReply>,
    /// A VM serving this stream broke while the stream waited.
    pub vm_failed: bool,
    /// `wasmesh.retry_upstream` was called with this backoff (response-headers phase).
    pub retry: Option<std::time::Duration>,
    /// Whether the proxy can make another attempt (`HttpStream::set_retry_available`).
    pub retry_available: bool,
}

// === impl HostState ===

impl HostState {
    /// The plugin the current context belongs to (the VM's first plugin if none).
    pub fn current_plugin(&self) -> &Arc<Plugin> {
        match self.contexts.get(&self.current) {
            Some(Ctx::Root(r)) => &r.plugin,
            Some(Ctx::Http(h)) => &h.plugin,
            None => &self.first,
        }
    }

    /// The stream of the current context, if it is an HTTP context.
    pub fn current_stream(&self) -> Option<&Rc<RefCell<StreamShared>>> {
        match self.contexts.get(&self.current) {
            Some(Ctx::Http(h)) => Some(&h.stream),
            _ => None,
        }
    }

    /// The root context id of the current context.
    pub fn current_root(&self) -> Option<u32> {
        match self.contexts.get(&self.current)? {
            Ctx::Root(_) => Some(self.current),
            Ctx::Http(h) => Some(h.root),
        }
    }

    /// A fresh http/grpc call token (never 0).
    pub fn token(&mut self) -> u32 {
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.next_token
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        for ctx in self.contexts.values() {
            match ctx {
                Ctx::Root(r) => {
                    if let Some(t) = &r.tick {
                        t.abort();
                    }
                    r.calls.values().for_each(AbortHandle::abort);
                }
                Ctx::Http(h) => h.calls.values().for_each(AbortHandle::abort),
            }
        }
    }
}

// === impl StreamShared ===

impl StreamShared {
    pub fn new(info: StreamInfo) -> StreamShared {
        StreamShared {
            info,
            upstream: UpstreamInfo::default(),
            request: None,
            request_live: false,
            response: None,
            response_live: false,
            request_trailers: None,
            request_trailers_live: false,
            response_trailers: None,
            response_trailers_live: false,
            request_body: None,
            response_body: None,
            filter_state: FxHashMap::default(),
            signals: Signals::default(),
            notify: Rc::new(tokio::sync::Notify::new()),
            metrics: None,
        }
    }

    /// Wakes the phase waiting on this stream (it re-checks the signals).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route;

    #[test]
    fn the_names_set_on_most_requests_key_without_allocating() {
        let proxy_reads = [
            route::PROP_CLUSTER,
            route::PROP_SUBSET,
            route::PROP_HASH_KEY,
            route::PROP_TIMEOUT_MS,
            route::PROP_BUFFER_FOR_RETRY,
            route::PROP_PER_TRY_TIMEOUT_MS,
            super::super::properties::RESPONSE_FLAG,
        ];
        for k in proxy_reads {
            assert!(matches!(state_key(k), Cow::Borrowed(b) if b == k), "{k}");
        }
        assert!(matches!(state_key("my.own.key"), Cow::Owned(s) if s == "my.own.key"));
        // Either kind finds the same entry.
        let mut state: FxHashMap<StateKey, Bytes> = FxHashMap::default();
        state.insert(state_key(route::PROP_CLUSTER), Bytes::from_static(b"a"));
        state.insert(state_key("my.own.key"), Bytes::from_static(b"b"));
        assert_eq!(state.get(route::PROP_CLUSTER).map(|b| &b[..]), Some(&b"a"[..]));
        assert_eq!(state.get("my.own.key").map(|b| &b[..]), Some(&b"b"[..]));
    }
}
