//! Per worker (`!Send`): the VM pool keyed by (module sha256, vm_id) with rebuild
//! backoff, the chains built from `ChainSpec`s, and `HttpStream`, which runs one request
//! through the chain with Envoy's semantics (pause on headers stops, pause on a body
//! buffers, deferred continue/close/local reply, failure policy per filter).

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::plugin::{ChainSpec, Plugin};
use super::request_metrics::HeadFacts;
use super::runtime::WasmRuntime;
use super::state::StreamShared;
use super::types::{BodyVerdict, HostServices, LocalReply, StreamInfo, UpstreamInfo, Verdict};
use super::vm::{backoff, HttpCb, Vm, VmKey};
use crate::config::FailurePolicy;

/// A VM that lived this long before breaking resets the consecutive-failure count.
const HEALTHY_LIFETIME: Duration = Duration::from_secs(60);

/// The wasm state of one worker.
pub struct WorkerWasm {
    rt: Arc<WasmRuntime>,
    pool: Rc<RefCell<VmPool>>,
    chains: Vec<(Weak<ChainSpec>, Rc<WorkerChain>)>,
}

/// A listener's chain on one worker.
pub struct WorkerChain {
    pool: Rc<RefCell<VmPool>>,
    plugins: Vec<Arc<Plugin>>,
}

struct VmPool {
    rt: Arc<WasmRuntime>,
    host: Rc<dyn HostServices>,
    slots: FxHashMap<VmKey, VmSlot>,
}

#[derive(Default)]
struct VmSlot {
    vm: Option<Rc<Vm>>,
    plugins: Vec<Arc<Plugin>>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// One request's run through a chain. How the proxy drives it:
///
/// 1. `request_headers` (waits while a filter pauses; a timer, an http_call answer or a
///    queue callback resumes it). `Verdict::LocalReply`: answer (or reset, if its flags
///    hold `LOCAL_RESET`) and skip the rest but `finish`.
///    Before it, set `upstream_info().cluster` to the listener's default cluster, so
///    `cluster_name` (and the SDK's `upstream_cluster()`) resolve in the request phase.
/// 2. Routing reads `property("wasmesh.upstream.cluster")` and friends; set
///    `upstream_info().cluster` to the chosen cluster.
/// 3. `request_body` per chunk: `Forward` bytes go upstream, `Hold` means a filter buffers
///    (the next call sees them again). If the headers had no end of stream, the last call
///    must say `end_of_stream = true` (an empty chunk is fine), unless trailers follow:
///    then `request_trailers`, and send `take_body_tail(false)` before the trailers.
/// 4. Set `upstream_info()` facts and `set_retry_available`, then `response_headers`
///    (`Verdict::Retry(backoff)`: a filter asked for another attempt; drop this response
///    and send again), `response_body`, `response_trailers` the same way (filters run in
///    reverse order).
/// 5. `finish` (or drop): `on_done`, `on_log`, `on_delete` in every filter, once.
pub struct HttpStream {
    filters: Vec<Slot>,
    shared: Option<Rc<RefCell<StreamShared>>>,
    upstream: UpstreamInfo,
    finished: bool,
    /// Per direction: the filter (index) whose held body sits in the stream state, where
    /// its timers and callbacks can read it.
    hold: [Option<usize>; 2],
    /// Per direction and filter index: other held bodies (allocated on first use).
    held: [Vec<Option<BytesMut>>; 2],
    tail: [Option<BytesMut>; 2],
    /// Request body bytes counted by a body that bypasses the filters
    /// ([`HttpStream::count_request_body`]).
    request_bytes: Option<Arc<AtomicU64>>,
}

struct Slot {
    plugin: Arc<Plugin>,
    vm: Option<Rc<Vm>>,
    ctx: u32,
    skipped: bool,
}

impl Slot {
    /// Whether this filter is to be called where its context `wanted` (a failed VM is,
    /// to apply its failure policy).
    fn called(&self, wanted: impl FnOnce(&Vm, u32) -> bool) -> bool {
        !self.skipped && self.vm.as_ref().is_none_or(|vm| vm.is_broken() || wanted(vm, self.ctx))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request = 0,
    Response = 1,
}

enum Step {
    Continue,
    Paused,
    Reply(LocalReply),
}

// === impl WorkerWasm ===

impl WorkerWasm {
    /// The wasm state of a worker; `host` is the proxy's services on this worker.
    pub fn new(rt: Arc<WasmRuntime>, host: Rc<dyn HostServices>) -> Self {
        let pool = Rc::new(RefCell::new(VmPool { rt: rt.clone(), host, slots: FxHashMap::default() }));
        WorkerWasm { rt, pool, chains: Vec::new() }
    }

    /// The worker chain for `spec`, cached per `Arc<ChainSpec>` pointer. VMs are keyed by
    /// (module sha256, vm_id), created on first use and shared by chains.
    pub fn chain(&mut self, spec: &Arc<ChainSpec>) -> Rc<WorkerChain> {
        if let Some((_, c)) = self.chains.iter().find(|(w, _)| w.upgrade().is_some_and(|s| Arc::ptr_eq(&s, spec))) {
            return c.clone();
        }
        self.prune();
        let chain = Rc::new(WorkerChain { pool: self.pool.clone(), plugins: spec.plugins.clone() });
        // Build the VMs and root contexts now, not on the first request.
        for p in &spec.plugins {
            let vm = self.pool.borrow_mut().vm_for(p);
            if let Some(vm) = vm {
                if let Err(e) = vm.root_of(p) {
                    tracing::error!(plugin = %p.name, error = %e.message, "plugin failed to configure");
                }
            }
        }
        self.chains.push((Arc::downgrade(spec), chain.clone()));
        chain
    }

    /// Forgets chains whose spec is gone and VMs no live chain uses.
    fn prune(&mut self) {
        self.chains.retain(|(w, _)| w.strong_count() > 0);
        let live: Vec<*const Plugin> =
            self.chains.iter().flat_map(|(_, c)| c.plugins.iter().map(Arc::as_ptr)).collect();
        let mut retired = Vec::new();
        let mut pool = self.pool.borrow_mut();
        for slot in pool.slots.values_mut() {
            slot.plugins.retain(|p| {
                let keep = live.contains(&Arc::as_ptr(p));
                if !keep {
                    if let Some(vm) = &slot.vm {
                        retired.push((vm.clone(), p.clone()));
                    }
                }
                keep
            });
        }
        pool.slots.retain(|_, s| !s.plugins.is_empty());
        drop(pool);
        for (vm, plugin) in retired {
            vm.retire(&plugin);
        }
    }

    /// The runtime this worker uses.
    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.rt
    }
}

// === impl VmPool ===

impl VmPool {
    /// The healthy VM for `plugin`, rebuilding a broken one once its backoff has passed.
    fn vm_for(&mut self, plugin: &Arc<Plugin>) -> Option<Rc<Vm>> {
        let key = (plugin.sha256, plugin.vm_id.clone());
        let slot = self.slots.entry(key).or_default();
        if !slot.plugins.iter().any(|p| Arc::ptr_eq(p, plugin)) {
            slot.plugins.push(plugin.clone());
        }
        if let Some(vm) = &slot.vm {
            if !vm.is_broken() {
                return Some(vm.clone());
            }
            let (created, broken_at) = vm.lifetime();
            let broken_at = broken_at.unwrap_or_else(Instant::now);
            if broken_at.duration_since(created) > HEALTHY_LIFETIME {
                slot.failures = 0;
            }
            slot.failures += 1;
            slot.retry_at = Some(broken_at + backoff(slot.failures));
            slot.vm = None;
        }
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        match Vm::new(&self.rt, Some(self.host.clone()), &slot.plugins) {
            Ok(vm) => {
                self.rt.metrics.vm_starts.with_label_values(&[&plugin.name, "ok"]).inc();
                slot.retry_at = None;
                slot.vm = Some(vm.clone());
                Some(vm)
            }
            Err(e) => {
                tracing::error!(plugin = %plugin.name, kind = e.kind, error = %e.message, "wasm VM failed to start");
                self.rt.metrics.vm_starts.with_label_values(&[&plugin.name, "failed"]).inc();
                if !e.counted {
                    self.rt.metrics.failures.with_label_values(&[&plugin.name, e.kind]).inc();
                }
                slot.failures += 1;
                slot.retry_at = Some(Instant::now() + backoff(slot.failures));
                None
            }
        }
    }
}

// === impl WorkerChain ===

impl WorkerChain {
    /// True when the chain has no filter.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Starts a stream: one HTTP context per filter. Cheap for an empty chain (no
    /// allocation beyond the returned struct).
    pub fn stream(self: &Rc<Self>, info: StreamInfo) -> HttpStream {
        let mut stream = HttpStream {
            filters: Vec::new(),
            shared: None,
            upstream: UpstreamInfo::default(),
            finished: false,
            hold: [None, None],
            held: [Vec::new(), Vec::new()],
            tail: [None, None],
            request_bytes: None,
        };
        if self.plugins.is_empty() {
            stream.finished = true;
            return stream;
        }
        let shared = Rc::new(RefCell::new(StreamShared::new(info)));
        stream.filters.reserve_exact(self.plugins.len());
        for p in &self.plugins {
            let vm = self.pool.borrow_mut().vm_for(p);
            let (vm, ctx) = match vm.map(|vm| (vm.create_http(p, &shared), vm)) {
                Some((Ok(Some(ctx)), vm)) => (Some(vm), ctx),
                // The filter wants no callback of any stream: it is left out of this one.
                Some((Ok(None), _)) => continue,
                Some((Err(f), _)) => {
                    tracing::debug!(plugin = %p.name, kind = f.kind, "no context for the stream");
                    (None, 0)
                }
                None => {
                    let rt = &self.pool.borrow().rt;
                    rt.metrics.failures.with_label_values(&[&p.name, "unavailable"]).inc();
                    (None, 0)
                }
            };
            stream.filters.push(Slot { plugin: p.clone(), vm, ctx, skipped: false });
        }
        stream.shared = Some(shared);
        stream
    }
}

// === impl HttpStream ===

impl HttpStream {
    /// Runs `on_request_headers` in chain order on `head` (pseudo-headers map onto it).
    pub async fn request_headers(&mut self, head: &mut http::request::Parts, end_of_stream: bool) -> Verdict {
        let n = head.headers.len() as u32 + 4;
        self.lend_headers(Dir::Request, HttpCb::RequestHeaders(n, end_of_stream), head).await
    }

    /// Runs `on_response_headers` in reverse chain order on `head`.
    pub async fn response_headers(&mut self, head: &mut http::response::Parts, end_of_stream: bool) -> Verdict {
        let n = head.headers.len() as u32 + 1;
        self.lend_headers(Dir::Response, HttpCb::ResponseHeaders(n, end_of_stream), head).await
    }

    /// A headers phase: `head` is lent to the filters called for `cb`, and a copy stays
    /// in the stream state only for filters that read it later.
    async fn lend_headers<H: Head>(&mut self, dir: Dir, cb: HttpCb, head: &mut H) -> Verdict {
        let Some(shared) = self.shared.clone() else { return Verdict::Continue };
        self.publish_upstream();
        if !self.wants(cb) {
            // No filter is called: nothing to lend; a copy only for one reading it later.
            if self.reads_after_headers(dir) {
                *H::slot(&mut shared.borrow_mut()).0 = Some(head.clone());
            }
            note_head(&shared, head);
            return Verdict::Continue;
        }
        let mut lend = Lend::new(&shared, head);
        let verdict = self.headers_phase(dir, cb).await;
        lend.keep = self.reads_after_headers(dir);
        drop(lend);
        note_head(&shared, head);
        verdict
    }

    /// Runs `on_request_trailers` in chain order. A body held by a filter is released
    /// when it continues: fetch it with `take_body_tail(false)` and send it before the
    /// trailers.
    pub async fn request_trailers(&mut self, trailers: &mut http::HeaderMap) -> Verdict {
        let Some(shared) = self.shared.clone() else { return Verdict::Continue };
        self.publish_upstream();
        let _lend = TrailersLend::new(&shared, Dir::Request, trailers);
        self.trailers_phase(Dir::Request).await
    }

    /// Runs `on_response_trailers` in reverse chain order (see `request_trailers`).
    pub async fn response_trailers(&mut self, trailers: &mut http::HeaderMap) -> Verdict {
        let Some(shared) = self.shared.clone() else { return Verdict::Continue };
        self.publish_upstream();
        let lend = TrailersLend::new(&shared, Dir::Response, trailers);
        let verdict = self.trailers_phase(Dir::Response).await;
        drop(lend);
        if let Some(m) = shared.borrow_mut().metrics.as_mut() {
            m.head.note_trailers(trailers);
        }
        verdict
    }

    /// Runs `on_request_body` for one chunk. `Hold` means a filter buffers: feed the next
    /// chunk. When the headers had no end of stream, call this at least once with
    /// `end_of_stream = true` (an empty chunk is fine) unless trailers follow.
    pub async fn request_body(&mut self, chunk: Bytes, end_of_stream: bool) -> BodyVerdict {
        if self.shared.is_none() {
            return BodyVerdict::Forward(chunk);
        }
        self.publish_upstream();
        self.body_phase(Dir::Request, chunk, end_of_stream).await
    }

    /// Runs `on_response_body` for one chunk (reverse chain order).
    pub async fn response_body(&mut self, chunk: Bytes, end_of_stream: bool) -> BodyVerdict {
        if self.shared.is_none() {
            return BodyVerdict::Forward(chunk);
        }
        self.publish_upstream();
        self.body_phase(Dir::Response, chunk, end_of_stream).await
    }

    /// Copies what the proxy learned into the state filters read, with the request body
    /// bytes counted so far by a body that bypasses the filters.
    fn publish_upstream(&mut self) {
        if let Some(counted) = &self.request_bytes {
            self.upstream.request_body_bytes = counted.load(Ordering::Relaxed);
        }
        if let Some(shared) = &self.shared {
            shared.borrow_mut().upstream = self.upstream.clone();
        }
    }

    /// A counter for a request body that goes upstream without the filters (none wants
    /// it, see [`HttpStream::wants_body_or_trailers`]); filters read its count as the
    /// request size.
    pub fn count_request_body(&mut self) -> Arc<AtomicU64> {
        self.request_bytes.get_or_insert_with(Default::default).clone()
    }

    /// Body bytes released during a trailers phase (`response = false`: request side);
    /// send them before the trailers.
    pub fn take_body_tail(&mut self, response: bool) -> Option<Bytes> {
        self.tail[response as usize].take().map(BytesMut::freeze)
    }

    /// Facts the proxy learns (upstream address, cluster, flags, sizes, attempts). Its
    /// `flags` include the ones filters added (`wasmesh.response.flag`).
    pub fn upstream_info(&mut self) -> &mut UpstreamInfo {
        if let Some(shared) = &self.shared {
            let s = shared.borrow();
            if let Some(codes) = s.filter_state.get(super::properties::RESPONSE_FLAG) {
                for code in String::from_utf8_lossy(codes).split(',') {
                    if let Some(f) = crate::flags::ResponseFlags::from_code(code.trim()) {
                        self.upstream.flags.insert(f);
                    }
                }
            }
        }
        &mut self.upstream
    }

    /// `f` on a property a filter set, borrowed (see [`HttpStream::property`]).
    pub fn with_property<T>(&self, path: &str, f: impl FnOnce(Option<&[u8]>) -> T) -> T {
        match &self.shared {
            Some(s) => f(s.borrow().filter_state.get(path).map(|b| &b[..])),
            None => f(None),
        }
    }

    /// A property a filter set (e.g. `wasmesh.upstream.cluster`), by dotted path.
    pub fn property(&self, path: &str) -> Option<Bytes> {
        self.shared.as_ref()?.borrow().filter_state.get(path).cloned()
    }

    /// Sets a property as the host (e.g. the listener's default cluster as
    /// `wasmesh.upstream.cluster`, so filters see where the request goes unless they
    /// change it).
    pub fn set_property(&mut self, path: &str, value: Bytes) {
        if let Some(shared) = &self.shared {
            shared.borrow_mut().filter_state.insert(super::state::state_key(path), value);
        }
    }

    /// Removes and returns a property a filter set (e.g. `wasmesh.eject_endpoint`), so the
    /// proxy acts on it once.
    pub fn take_property(&mut self, path: &str) -> Option<Bytes> {
        self.shared.as_ref()?.borrow_mut().filter_state.remove(path)
    }

    /// `on_done`, `on_log`, `on_delete` in every filter (once; also run on drop).
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let Some(shared) = self.shared.clone() else { return };
        self.publish_upstream();
        {
            let mut s = shared.borrow_mut();
            if s.upstream.end.is_none() {
                s.upstream.end = Some(std::time::SystemTime::now());
            }
        }
        for slot in &mut self.filters {
            if let Some(vm) = slot.vm.take() {
                vm.finish_http(&slot.plugin, slot.ctx);
            }
        }
        // After `on_log`, where a filter reports its stream's gRPC message counts.
        let metrics = shared.borrow_mut().metrics.take();
        if let Some(m) = metrics {
            m.record(&shared.borrow());
        }
    }

    /// True when the chain is empty (every phase continues untouched).
    pub fn is_passthrough(&self) -> bool {
        self.shared.is_none()
    }

    fn order(&self, dir: Dir, pos: usize) -> usize {
        match dir {
            Dir::Request => pos,
            Dir::Response => self.filters.len() - 1 - pos,
        }
    }

    async fn headers_phase(&mut self, dir: Dir, cb: HttpCb) -> Verdict {
        for pos in 0..self.filters.len() {
            let i = self.order(dir, pos);
            if let Some(r) = self.run(i, dir, cb).await {
                return Verdict::LocalReply(r);
            }
            if dir == Dir::Response {
                let retry = self.shared.as_ref().and_then(|s| s.borrow_mut().signals.retry.take());
                if let Some(backoff) = retry {
                    return Verdict::Retry(backoff);
                }
            }
        }
        Verdict::Continue
    }

    /// Whether the proxy can make another attempt now (buffered request, attempts and
    /// time left). `wasmesh.retry_upstream` fails for the filter while this is false
    /// (the default).
    pub fn set_retry_available(&mut self, available: bool) {
        if let Some(s) = &self.shared {
            let mut s = s.borrow_mut();
            s.signals.retry_available = available;
            s.signals.retry = None;
        }
    }

    async fn trailers_phase(&mut self, dir: Dir) -> Verdict {
        let Some(shared) = self.shared.clone() else { return Verdict::Continue };
        let n = {
            let s = shared.borrow();
            let t = if dir == Dir::Request { &s.request_trailers } else { &s.response_trailers };
            t.as_ref().map_or(0, |t| t.len() as u32)
        };
        let cb = if dir == Dir::Request { HttpCb::RequestTrailers(n) } else { HttpCb::ResponseTrailers(n) };
        self.stash_active(&shared, dir);
        for pos in 0..self.filters.len() {
            let i = self.order(dir, pos);
            // A filter holding a body reads it during its trailers callback, then releases it.
            let held = self.take_held(dir, i);
            let had = held.is_some();
            if let Some(b) = held {
                put_body(&shared, dir, b);
            }
            if let Some(r) = self.run(i, dir, cb).await {
                return Verdict::LocalReply(r);
            }
            if had {
                let data = take_body(&shared, dir).unwrap_or_default();
                match self.push_body(dir, pos + 1, data, false).await {
                    BodyVerdict::Forward(b) => {
                        self.tail[dir as usize].get_or_insert_with(BytesMut::new).extend_from_slice(&b)
                    }
                    BodyVerdict::Hold => self.stash_active(&shared, dir),
                    BodyVerdict::LocalReply(r) => return Verdict::LocalReply(r),
                }
            }
        }
        Verdict::Continue
    }

    async fn body_phase(&mut self, dir: Dir, chunk: Bytes, eos: bool) -> BodyVerdict {
        if self.hold[dir as usize].is_none() && self.held[dir as usize].is_empty() && !self.wants_body(dir) {
            return BodyVerdict::Forward(chunk);
        }
        self.push_body(dir, 0, BytesMut::from(chunk), eos).await
    }

    /// Moves the held body of the active holder out of the stream state, before another
    /// filter's buffer takes its place.
    fn stash_active(&mut self, shared: &Rc<RefCell<StreamShared>>, dir: Dir) {
        if let Some(i) = self.hold[dir as usize].take() {
            let body = take_body(shared, dir).unwrap_or_default();
            let n = self.filters.len();
            let held = &mut self.held[dir as usize];
            if held.len() < n {
                held.resize(n, None);
            }
            held[i] = Some(body);
        }
    }

    fn take_held(&mut self, dir: Dir, i: usize) -> Option<BytesMut> {
        self.held[dir as usize].get_mut(i).and_then(Option::take)
    }

    /// Passes `data` through the filters from position `start` on. A filter holding a
    /// body gets it back with `data` appended (it sees the whole body, Envoy's
    /// StopIterationAndBuffer); filters before it see only the new bytes.
    async fn push_body(&mut self, dir: Dir, start: usize, mut data: BytesMut, eos: bool) -> BodyVerdict {
        let Some(shared) = self.shared.clone() else { return BodyVerdict::Forward(data.freeze()) };
        self.stash_active(&shared, dir);
        let limit = shared.borrow().info.max_buffered_body_bytes;
        for pos in start..self.filters.len() {
            let i = self.order(dir, pos);
            if let Some(mut held) = self.take_held(dir, i) {
                held.extend_from_slice(&data);
                data = held;
                if data.len() as u64 > limit {
                    return BodyVerdict::LocalReply(overflow(dir));
                }
            }
            if !self.slot_wants_body(i, dir) {
                continue;
            }
            let size = data.len() as u32;
            put_body(&shared, dir, data);
            let cb = match dir {
                Dir::Request => HttpCb::RequestBody(size, eos),
                Dir::Response => HttpCb::ResponseBody(size, eos),
            };
            match self.invoke(i, dir, cb) {
                Step::Continue => {}
                Step::Reply(r) => return BodyVerdict::LocalReply(r),
                Step::Paused if eos => {
                    if let Some(r) = self.wait(i, dir).await {
                        return BodyVerdict::LocalReply(r);
                    }
                }
                Step::Paused => {
                    if body_len(&shared, dir) as u64 > limit {
                        return BodyVerdict::LocalReply(overflow(dir));
                    }
                    self.hold[dir as usize] = Some(i);
                    return BodyVerdict::Hold;
                }
            }
            data = take_body(&shared, dir).unwrap_or_default();
        }
        BodyVerdict::Forward(data.freeze())
    }

    /// Whether any filter is to be called for `cb` (a failed VM is, to apply its policy).
    fn wants(&self, cb: HttpCb) -> bool {
        self.filters.iter().any(|slot| slot.called(|vm, ctx| vm.wants(ctx, cb)))
    }

    /// Whether any filter may read the head of `dir` after its headers phase (else no
    /// copy of it is kept once it moves on).
    fn reads_after_headers(&self, dir: Dir) -> bool {
        self.filters.iter().any(|slot| {
            !slot.skipped && slot.vm.as_ref().is_some_and(|vm| vm.reads_after_headers(slot.ctx, dir == Dir::Response))
        })
    }

    /// Whether filter `i` must see bodies of `dir` (a failed VM must, to apply its policy).
    fn slot_wants_body(&self, i: usize, dir: Dir) -> bool {
        self.filters[i].called(|vm, ctx| vm.wants_body(ctx, dir == Dir::Response))
    }

    /// Whether any filter is to see the body or trailers of the response (or request).
    /// When none is, the proxy passes the body through untouched and only reports its
    /// size ([`HttpStream::finish_with_response_bytes`], [`HttpStream::count_request_body`]).
    pub fn wants_body_or_trailers(&self, response: bool) -> bool {
        self.filters.iter().any(|slot| slot.called(|vm, ctx| vm.wants_body_or_trailers(ctx, response)))
    }

    /// Records the response body size for `on_log` and finishes the stream (see
    /// [`HttpStream::wants_body_or_trailers`]).
    pub fn finish_with_response_bytes(&mut self, bytes: u64) {
        self.upstream.response_body_bytes += bytes;
        self.finish();
    }

    /// Whether any filter sees bodies of `dir` (if none, chunks pass without a copy).
    fn wants_body(&self, dir: Dir) -> bool {
        (0..self.filters.len()).any(|i| self.slot_wants_body(i, dir))
    }

    /// Invokes a callback and, if the filter paused, waits until it resumes.
    async fn run(&mut self, i: usize, dir: Dir, cb: HttpCb) -> Option<LocalReply> {
        match self.invoke(i, dir, cb) {
            Step::Continue => None,
            Step::Reply(r) => Some(r),
            Step::Paused => self.wait(i, dir).await,
        }
    }

    fn invoke(&mut self, i: usize, dir: Dir, cb: HttpCb) -> Step {
        let Some(shared) = self.shared.clone() else { return Step::Continue };
        let slot = &self.filters[i];
        if slot.skipped {
            return Step::Continue;
        }
        let Some(vm) = slot.vm.clone() else { return self.fail(i) };
        set_continue(&shared, dir, false);
        let action = match vm.call_http(&slot.plugin, slot.ctx, cb) {
            Ok(a) => a,
            Err(_) => return self.fail(i),
        };
        if let Some(r) = take_reply(&shared) {
            return Step::Reply(r);
        }
        let paused = match cb {
            HttpCb::RequestHeaders(..) | HttpCb::ResponseHeaders(..) => action != 0 && action != 2,
            _ => action != 0,
        };
        if !paused || set_continue(&shared, dir, false) {
            Step::Continue
        } else {
            Step::Paused
        }
    }

    async fn wait(&mut self, i: usize, dir: Dir) -> Option<LocalReply> {
        let shared = self.shared.clone()?;
        loop {
            if let Some(r) = take_reply(&shared) {
                return Some(r);
            }
            if self.filters[i].vm.as_ref().is_none_or(|vm| vm.is_broken()) {
                return match self.fail(i) {
                    Step::Reply(r) => Some(r),
                    _ => None,
                };
            }
            if set_continue(&shared, dir, false) {
                return None;
            }
            let notify = shared.borrow().notify.clone();
            notify.notified().await;
        }
    }

    /// Applies the failure policy of filter `i`; the filter is not called again.
    fn fail(&mut self, i: usize) -> Step {
        let slot = &mut self.filters[i];
        if let Some(vm) = slot.vm.take() {
            vm.remove_ctx(slot.ctx);
        }
        // Either way the filter is out of this stream: closed has answered already.
        slot.skipped = true;
        match slot.plugin.failure {
            FailurePolicy::Closed => Step::Reply(LocalReply::wasm_failure()),
            FailurePolicy::Open => Step::Continue,
        }
    }
}

impl Drop for HttpStream {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpStream {
    /// A copy of the request head as the filters left it, when the stream keeps one for
    /// later callbacks (`None` while it is lent, or when no filter reads it later).
    pub fn request_head(&self) -> Option<http::request::Parts> {
        self.kept_request(Clone::clone)
    }

    /// Whether [`HttpStream::request_head`] has a copy to give.
    pub fn keeps_request_head(&self) -> bool {
        self.kept_request(|_| ()).is_some()
    }

    /// `f` on the request head the stream keeps after its phase, if any.
    fn kept_request<T>(&self, f: impl FnOnce(&http::request::Parts) -> T) -> Option<T> {
        let s = self.shared.as_ref()?.borrow();
        s.request.as_ref().filter(|_| !s.request_live).map(f)
    }
}

#[cfg(test)]
impl HttpStream {
    /// Whether the stream state holds a copy of the request and of the response head.
    pub(crate) fn kept_heads(&self) -> (bool, bool) {
        self.shared.as_ref().map_or((false, false), |s| {
            let s = s.borrow();
            (s.request.is_some(), s.response.is_some())
        })
    }
}

impl std::fmt::Debug for HttpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStream")
            .field("filters", &self.filters.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

fn overflow(dir: Dir) -> LocalReply {
    LocalReply::buffer_overflow(if dir == Dir::Request { 413 } else { 500 })
}

fn take_reply(shared: &Rc<RefCell<StreamShared>>) -> Option<LocalReply> {
    let mut s = shared.borrow_mut();
    if let Some(r) = s.signals.local_reply.take() {
        return Some(r);
    }
    s.signals.close.then(LocalReply::close_stream)
}

/// Sets the continue flag of `dir` to `to`; returns its previous value.
fn set_continue(shared: &Rc<RefCell<StreamShared>>, dir: Dir, to: bool) -> bool {
    let mut s = shared.borrow_mut();
    let flag = match dir {
        Dir::Request => &mut s.signals.continue_request,
        Dir::Response => &mut s.signals.continue_response,
    };
    std::mem::replace(flag, to)
}

fn put_body(shared: &Rc<RefCell<StreamShared>>, dir: Dir, data: BytesMut) {
    let mut s = shared.borrow_mut();
    match dir {
        Dir::Request => s.request_body = Some(data),
        Dir::Response => s.response_body = Some(data),
    }
}

fn take_body(shared: &Rc<RefCell<StreamShared>>, dir: Dir) -> Option<BytesMut> {
    let mut s = shared.borrow_mut();
    match dir {
        Dir::Request => s.request_body.take(),
        Dir::Response => s.response_body.take(),
    }
}

fn body_len(shared: &Rc<RefCell<StreamShared>>, dir: Dir) -> usize {
    let s = shared.borrow();
    let b = if dir == Dir::Request { &s.request_body } else { &s.response_body };
    b.as_ref().map_or(0, |b| b.len())
}

/// A head the stream state holds while filters read it.
trait Head: Clone {
    /// The stream state's slot for this head, and whether it is lent right now.
    fn slot(s: &mut StreamShared) -> (&mut Option<Self>, &mut bool);
    /// What the proxy holds while the filters have the head.
    fn placeholder() -> Self;
    /// Takes what request metrics need from this head.
    fn note(&self, facts: &mut HeadFacts);
}

/// Notes what the stream's request metrics need from `head` (as the filters left it).
fn note_head<H: Head>(shared: &Rc<RefCell<StreamShared>>, head: &H) {
    if let Some(m) = shared.borrow_mut().metrics.as_mut() {
        head.note(&mut m.head);
    }
}

impl Head for http::request::Parts {
    fn slot(s: &mut StreamShared) -> (&mut Option<Self>, &mut bool) {
        (&mut s.request, &mut s.request_live)
    }

    fn placeholder() -> Self {
        http::Request::new(()).into_parts().0
    }

    fn note(&self, facts: &mut HeadFacts) {
        facts.note_request(self);
    }
}

impl Head for http::response::Parts {
    fn slot(s: &mut StreamShared) -> (&mut Option<Self>, &mut bool) {
        (&mut s.response, &mut s.response_live)
    }

    fn placeholder() -> Self {
        http::Response::new(()).into_parts().0
    }

    fn note(&self, facts: &mut HeadFacts) {
        facts.note_response(self);
    }
}

/// Lends a head to the filters for one phase and gives it back (keeping a read-only copy
/// for later phases and `on_log` unless told no filter reads it), also when the phase
/// future is dropped.
struct Lend<'a, H: Head> {
    head: &'a mut H,
    shared: Rc<RefCell<StreamShared>>,
    /// Keep a copy in the stream state (default: yes, the safe answer).
    keep: bool,
}

impl<'a, H: Head> Lend<'a, H> {
    fn new(shared: &Rc<RefCell<StreamShared>>, head: &'a mut H) -> Self {
        let taken = std::mem::replace(head, H::placeholder());
        let mut s = shared.borrow_mut();
        let (slot, live) = H::slot(&mut s);
        *slot = Some(taken);
        *live = true;
        Lend { head, shared: shared.clone(), keep: true }
    }
}

impl<H: Head> Drop for Lend<'_, H> {
    fn drop(&mut self) {
        let Ok(mut s) = self.shared.try_borrow_mut() else { return };
        let (slot, live) = H::slot(&mut s);
        *live = false;
        if let Some(p) = slot.take() {
            *slot = self.keep.then(|| p.clone());
            *self.head = p;
        }
    }
}

/// Lends trailers to the filters for one phase and gives them back (keeping a copy for
/// later callbacks), also when the phase future is dropped.
struct TrailersLend<'a> {
    trailers: &'a mut http::HeaderMap,
    dir: Dir,
    shared: Rc<RefCell<StreamShared>>,
}

impl<'a> TrailersLend<'a> {
    fn new(shared: &Rc<RefCell<StreamShared>>, dir: Dir, trailers: &'a mut http::HeaderMap) -> Self {
        let taken = Some(Box::new(std::mem::take(trailers)));
        let mut guard = shared.borrow_mut();
        let (slot, live) = trailers_slot(&mut guard, dir);
        *slot = taken;
        *live = true;
        TrailersLend { trailers, dir, shared: shared.clone() }
    }
}

impl Drop for TrailersLend<'_> {
    fn drop(&mut self) {
        let Ok(mut guard) = self.shared.try_borrow_mut() else { return };
        let (slot, live) = trailers_slot(&mut guard, self.dir);
        *live = false;
        if let Some(h) = slot.take() {
            *slot = Some(h.clone());
            *self.trailers = *h;
        }
    }
}

/// The stream state's slot for the trailers of `dir`, and whether they are lent.
fn trailers_slot(s: &mut StreamShared, dir: Dir) -> (&mut Option<Box<http::HeaderMap>>, &mut bool) {
    match dir {
        Dir::Request => (&mut s.request_trailers, &mut s.request_trailers_live),
        Dir::Response => (&mut s.response_trailers, &mut s.response_trailers_live),
    }
}
