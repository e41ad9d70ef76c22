//! One VM: a wasmtime `Store` + instance of a module on one worker, hosting the root
//! contexts of every plugin with the same (module, vm_id) and their HTTP contexts. Every
//! guest call goes through `Vm::call`, which sets the epoch deadline, the effective
//! context and the callback scope, and turns a trap into a `Failed` that breaks the VM for
//! good (the worker rebuilds a new one, see `chain::VmPool`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{Instance, Store, StoreLimitsBuilder, Trap, TypedFunc, WasmParams, WasmResults};

use super::abi::memory::GuestFault;
use super::abi::wasi::ProcExit;
use super::interest::Interest;
use super::plugin::Plugin;
use super::request_metrics::{Owner, Template};
use super::runtime::{WasmRuntime, EPOCH_TICK};
use super::state::{CallResponse, Ctx, GrpcResult, HostState, HttpCtx, RootCtx, Scope, StreamShared};
use super::types::{CalloutError, HostServices};

/// A VM is identified by its module's sha256 and its vm_id.
pub(crate) type VmKey = ([u8; 32], Arc<str>);

/// How long a context whose `on_done` returned false may take to call `proxy_done`.
const DONE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a VM could not start.
#[derive(Debug)]
pub(crate) struct StartError {
    pub message: String,
    /// Failure kind (`trap`, `deadline`, `start`, …).
    pub kind: &'static str,
    /// True when the failure was already counted in `wasmesh_wasm_failures_total`.
    pub counted: bool,
}

impl StartError {
    fn new(message: impl Into<String>, kind: &'static str) -> Self {
        StartError { message: message.into(), kind, counted: false }
    }
}

/// A guest call failed; the VM is broken from now on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failed {
    pub kind: &'static str,
}

/// An HTTP callback and its arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HttpCb {
    RequestHeaders(u32, bool),
    RequestBody(u32, bool),
    RequestTrailers(u32),
    ResponseHeaders(u32, bool),
    ResponseBody(u32, bool),
    ResponseTrailers(u32),
}

pub(crate) struct Vm {
    rt: Arc<WasmRuntime>,
    inner: RefCell<Option<Inner>>,
    broken: Cell<bool>,
    broken_at: Cell<Option<Instant>>,
    created: Instant,
    roots: RefCell<Vec<(Arc<Plugin>, u32)>>,
    /// `wasmesh_wasm_vms` / `wasmesh_wasm_memory_bytes` of the building plugin, and the
    /// memory size last reported.
    gauges: Option<(prometheus::IntGauge, prometheus::IntGauge)>,
    memory_reported: Cell<i64>,
    /// Root contexts of plugins no chain uses any more, deleted once their last HTTP
    /// context is gone (a paused stream may still need its root's timer).
    retired: RefCell<Vec<(Arc<Plugin>, u32)>>,
}

struct Inner {
    store: Store<HostState>,
    cb: Callbacks,
}

/// `proxy_on_http_call_response(ctx, token, headers, body, trailers)`.
type CallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

enum HeadersFn {
    V2(TypedFunc<(u32, u32, u32), u32>),
    V1(TypedFunc<(u32, u32), u32>),
}

#[derive(Default)]
struct Callbacks {
    context_create: Option<TypedFunc<(u32, u32), ()>>,
    vm_start: Option<TypedFunc<(u32, u32), u32>>,
    configure: Option<TypedFunc<(u32, u32), u32>>,
    done: Option<TypedFunc<u32, u32>>,
    log: Option<TypedFunc<u32, ()>>,
    delete: Option<TypedFunc<u32, ()>>,
    tick: Option<TypedFunc<u32, ()>>,
    queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    request_headers: Option<HeadersFn>,
    request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    response_headers: Option<HeadersFn>,
    response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    http_call_response: Option<CallResponseFn>,
    grpc_receive: Option<TypedFunc<(u32, u32, u32), ()>>,
    grpc_close: Option<TypedFunc<(u32, u32, u32), ()>>,
}

// === impl Vm ===

impl Vm {
    /// Instantiates the module of `plugins[0]`, runs its start functions, then creates
    /// and configures a root context per plugin. `host: None` builds a validation VM.
    pub fn new(
        rt: &Arc<WasmRuntime>,
        host: Option<Rc<dyn HostServices>>,
        plugins: &[Arc<Plugin>],
    ) -> Result<Rc<Vm>, StartError> {
        let Some(first) = plugins.first().cloned() else {
            return Err(StartError::new("no plugin", "start"));
        };
        let vm = Rc::new(Vm {
            rt: rt.clone(),
            inner: RefCell::new(None),
            broken: Cell::new(false),
            broken_at: Cell::new(None),
            created: Instant::now(),
            roots: RefCell::new(Vec::new()),
            retired: RefCell::new(Vec::new()),
            gauges: host.as_ref().map(|_| {
                let vms = rt.metrics.vms.with_label_values(&[&first.name]);
                vms.inc();
                (vms, rt.metrics.memory.with_label_values(&[&first.name]))
            }),
            memory_reported: Cell::new(0),
        });
        let mem_bytes = (first.limits.memory_mb as usize).saturating_mul(1 << 20);
        let limits = StoreLimitsBuilder::new()
            .memory_size(mem_bytes)
            .trap_on_grow_failure(true)
            .instances(1)
            .memories(1)
            .tables(16)
            .table_elements(1_000_000)
            .build();
        let queue_tx = host.as_ref().map(|_| spawn_queue_task(Rc::downgrade(&vm)));
        let state = HostState {
            rt: rt.clone(),
            host,
            vm: Rc::downgrade(&vm),
            vm_id: first.vm_id.clone(),
            first: first.clone(),
            limits,
            memory: None,
            allocator: None,
            answer_buffer: None,
            scratch: Vec::new(),
            property_sets: Vec::new(),
            contexts: Default::default(),
            current: 0,
            scope: Scope::None,
            next_ctx: 0,
            last_error_log: None,
            next_token: 0,
            queue_owners: Default::default(),
            queue_tx,
        };
        let mut store = Store::new(rt.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(start_ticks(&first));
        let err = |e: wasmtime::Error| StartError::new(format!("{e:#}"), classify(&e));
        let instance = first.pre.instantiate(&mut store).map_err(err)?;
        let cb = Callbacks::lookup(&instance, &mut store).map_err(|e| StartError::new(e, "start"))?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<u32, u32>(&mut store, "malloc"))
            .ok();
        store.data_mut().allocator = alloc.map(Rc::new);
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        if let Some(init) =
            typed::<(), ()>(&instance, &mut store, "_initialize").map_err(|e| StartError::new(e, "start"))?
        {
            exit_ok(init.call(&mut store, ())).map_err(err)?;
            if let Some(main) =
                typed::<(u32, u32), u32>(&instance, &mut store, "main").map_err(|e| StartError::new(e, "start"))?
            {
                exit_ok(main.call(&mut store, (0, 0)).map(drop)).map_err(err)?;
            }
        } else if let Some(start) =
            typed::<(), ()>(&instance, &mut store, "_start").map_err(|e| StartError::new(e, "start"))?
        {
            exit_ok(start.call(&mut store, ())).map_err(err)?;
        }
        *vm.inner.borrow_mut() = Some(Inner { store, cb });
        vm.report_memory();
        for p in plugins {
            vm.add_root(p)?;
        }
        Ok(vm)
    }

    /// True once a guest call failed: the VM is never called again.
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// When the VM broke and when it was built (for the rebuild backoff).
    pub fn lifetime(&self) -> (Instant, Option<Instant>) {
        (self.created, self.broken_at.get())
    }

    /// The root context of `plugin`, creating and configuring it if needed.
    pub fn root_of(&self, plugin: &Arc<Plugin>) -> Result<u32, StartError> {
        if let Some((_, id)) = self.roots.borrow().iter().find(|(p, _)| Arc::ptr_eq(p, plugin)) {
            return Ok(*id);
        }
        self.add_root(plugin)
    }

    fn add_root(&self, plugin: &Arc<Plugin>) -> Result<u32, StartError> {
        let id = self
            .new_ctx(Ctx::Root(RootCtx {
                plugin: plugin.clone(),
                tick: None,
                calls: Default::default(),
                interest: Interest::ALL,
                request_metrics: None,
            }))
            .ok_or(StartError::new("VM is not running", "start"))?;
        let failed = |f: Failed| StartError {
            message: format!("plugin {} failed while starting ({})", plugin.name, f.kind),
            kind: f.kind,
            counted: true,
        };
        self.call(plugin, id, Scope::None, |c| c.context_create.as_ref(), (id, 0)).map_err(failed)?;
        let steps = [
            (Scope::VmStart, plugin.vm_config.len() as u32, "on_vm_start"),
            (Scope::Configure, plugin.config.len() as u32, "on_configure"),
        ];
        for (scope, size, callback) in steps {
            let ok = match scope {
                Scope::VmStart => self.call(plugin, id, scope, |c| c.vm_start.as_ref(), (id, size)),
                _ => self.call(plugin, id, scope, |c| c.configure.as_ref(), (id, size)),
            }
            .map_err(failed)?;
            if ok == Some(0) {
                // The guest's last warning/error line usually says why.
                let reason = self.last_error_log().map(|m| format!(": {m}")).unwrap_or_default();
                self.break_vm();
                return Err(StartError::new(
                    format!("plugin {}: {callback} returned false{reason}", plugin.name),
                    "start",
                ));
            }
        }
        self.roots.borrow_mut().push((plugin.clone(), id));
        Ok(id)
    }

    fn new_ctx(&self, ctx: Ctx) -> Option<u32> {
        let mut guard = self.inner.try_borrow_mut().ok()?;
        let st = guard.as_mut()?.store.data_mut();
        st.next_ctx += 1;
        let id = st.next_ctx;
        st.contexts.insert(id, ctx);
        Some(id)
    }

    /// Creates an HTTP context of `plugin` for a stream (`None`: its root declared no
    /// callback, so it takes no part in streams).
    pub fn create_http(&self, plugin: &Arc<Plugin>, stream: &Rc<RefCell<StreamShared>>) -> Result<Option<u32>, Failed> {
        if self.is_broken() {
            return Err(Failed { kind: "unavailable" });
        }
        let root = self.root_of(plugin).map_err(|e| Failed { kind: e.kind })?;
        // A stream starts with the callbacks its filter named from the root context; a
        // filter that named none gets no context (nothing would call it). Its request
        // metrics are the proxy's to record either way.
        let (interest, metrics) = self.root_settings(root);
        if let Some(template) = metrics {
            stream.borrow_mut().metrics.get_or_insert_default().set(Owner::new(self, root), template);
        }
        if interest.is_none() {
            return Ok(None);
        }
        let id = self
            .new_ctx(Ctx::Http(HttpCtx {
                root,
                plugin: plugin.clone(),
                stream: stream.clone(),
                calls: Default::default(),
                done_pending: false,
                interest,
            }))
            .ok_or(Failed { kind: "unavailable" })?;
        if let Err(f) = self.call(plugin, id, Scope::None, |c| c.context_create.as_ref(), (id, root)) {
            self.remove_ctx(id);
            return Err(f);
        }
        Ok(Some(id))
    }

    /// Runs an HTTP callback; returns the raw action (0 = continue; absent callbacks
    /// continue).
    pub fn call_http(&self, plugin: &Arc<Plugin>, ctx: u32, cb: HttpCb) -> Result<u32, Failed> {
        if !self.wants(ctx, cb) {
            return Ok(0);
        }
        let b = |v: bool| v as u32;
        let r = match cb {
            HttpCb::RequestHeaders(n, eos) => self.call_headers(plugin, ctx, true, n, b(eos))?,
            HttpCb::ResponseHeaders(n, eos) => self.call_headers(plugin, ctx, false, n, b(eos))?,
            HttpCb::RequestBody(n, eos) => {
                self.call(plugin, ctx, Scope::None, |c| c.request_body.as_ref(), (ctx, n, b(eos)))?
            }
            HttpCb::ResponseBody(n, eos) => {
                self.call(plugin, ctx, Scope::None, |c| c.response_body.as_ref(), (ctx, n, b(eos)))?
            }
            HttpCb::RequestTrailers(n) => {
                self.call(plugin, ctx, Scope::None, |c| c.request_trailers.as_ref(), (ctx, n))?
            }
            HttpCb::ResponseTrailers(n) => {
                self.call(plugin, ctx, Scope::None, |c| c.response_trailers.as_ref(), (ctx, n))?
            }
        };
        Ok(r.unwrap_or(0))
    }

    fn call_headers(
        &self,
        plugin: &Arc<Plugin>,
        ctx: u32,
        request: bool,
        n: u32,
        eos: u32,
    ) -> Result<Option<u32>, Failed> {
        // A module exports one of the two shapes (or neither: both calls answer `None`).
        match self.call(plugin, ctx, Scope::None, |c| headers_v2(c, request), (ctx, n, eos))? {
            Some(action) => Ok(Some(action)),
            None => self.call(plugin, ctx, Scope::None, |c| headers_v1(c, request), (ctx, n)),
        }
    }

    /// True when HTTP context `ctx` is to see the body of that direction: the module
    /// exports the callback and the filter wants it called.
    pub fn wants_body(&self, ctx: u32, response: bool) -> bool {
        self.exported_and_wanted(
            ctx,
            |cb| if response { cb.response_body.is_some() } else { cb.request_body.is_some() },
            |i| i.wants_body(response),
        )
    }

    /// True when HTTP context `ctx` is to see the body or trailers of that direction.
    pub fn wants_body_or_trailers(&self, ctx: u32, response: bool) -> bool {
        self.exported_and_wanted(
            ctx,
            |cb| match response {
                true => cb.response_body.is_some() || cb.response_trailers.is_some(),
                false => cb.request_body.is_some() || cb.request_trailers.is_some(),
            },
            |i| i.wants_body_or_trailers(response),
        )
    }

    /// Whether the module exports a callback (`exported`) that `ctx` wants called
    /// (`wanted`); true while the VM is busy (the safe answer).
    fn exported_and_wanted(
        &self,
        ctx: u32,
        exported: impl FnOnce(&Callbacks) -> bool,
        wanted: impl FnOnce(Interest) -> bool,
    ) -> bool {
        let Ok(guard) = self.inner.try_borrow() else { return true };
        guard.as_ref().is_some_and(|i| exported(&i.cb) && wanted(ctx_interest(i, ctx)))
    }

    /// Whether HTTP context `ctx` is to be called for `cb`.
    pub fn wants(&self, ctx: u32, cb: HttpCb) -> bool {
        self.interest(ctx).wants(cb)
    }

    /// Whether HTTP context `ctx` may still read the head of a direction once that
    /// direction's headers phase is over: it wants a later callback, or a call it made
    /// is still to be answered. True while the VM is busy (the safe answer).
    pub fn reads_after_headers(&self, ctx: u32, response: bool) -> bool {
        let Ok(guard) = self.inner.try_borrow() else { return true };
        let Some(inner) = guard.as_ref() else { return false };
        match inner.store.data().contexts.get(&ctx) {
            Some(Ctx::Http(h)) => !h.calls.is_empty() || h.interest.reads_after_headers(response),
            _ => false,
        }
    }

    /// A root context's callbacks and request metrics for its streams.
    fn root_settings(&self, root: u32) -> (Interest, Option<Arc<Template>>) {
        let Ok(guard) = self.inner.try_borrow() else { return (Interest::ALL, None) };
        match guard.as_ref().map(|i| i.store.data().contexts.get(&root)) {
            Some(Some(Ctx::Root(r))) => (r.interest, r.request_metrics.clone()),
            _ => (Interest::ALL, None),
        }
    }

    /// The callbacks context `ctx` wants (all when unknown).
    fn interest(&self, ctx: u32) -> Interest {
        self.inner.try_borrow().ok().and_then(|g| g.as_ref().map(|i| ctx_interest(i, ctx))).unwrap_or(Interest::ALL)
    }

    /// on_done, on_log, on_delete for an HTTP context, then forgets it (cancelling its
    /// outstanding calls).
    pub fn finish_http(&self, plugin: &Arc<Plugin>, ctx: u32) {
        if !self.is_broken() {
            let wants_done = self.interest(ctx).wants_done();
            if wants_done && matches!(self.call(plugin, ctx, Scope::None, |c| c.done.as_ref(), ctx), Ok(Some(0))) {
                // The filter finishes later with proxy_done (e.g. after a last callout).
                if self.defer_done(ctx) {
                    return;
                }
            }
            self.log_and_delete(plugin, ctx);
        }
        self.remove_ctx(ctx);
        self.report_memory();
    }

    /// `on_log` (when the filter wants it) and `on_delete` of an HTTP context.
    fn log_and_delete(&self, plugin: &Arc<Plugin>, ctx: u32) {
        let logged = match self.interest(ctx).wants_log() {
            true => self.call(plugin, ctx, Scope::None, |c| c.log.as_ref(), ctx),
            false => Ok(None),
        };
        let _ = logged.and_then(|_| self.call(plugin, ctx, Scope::None, |c| c.delete.as_ref(), ctx));
    }

    /// Marks `ctx` as waiting for `proxy_done`, with a timeout; false when it cannot wait
    /// (validation VM, unknown context).
    fn defer_done(&self, ctx: u32) -> bool {
        let Ok(mut guard) = self.inner.try_borrow_mut() else { return false };
        let Some(inner) = guard.as_mut() else { return false };
        let st = inner.store.data_mut();
        if st.host.is_none() {
            return false;
        }
        let vm = st.vm.clone();
        let token = st.token();
        let Some(Ctx::Http(h)) = st.contexts.get_mut(&ctx) else { return false };
        h.done_pending = true;
        let timeout = tokio::task::spawn_local(async move {
            tokio::time::sleep(DONE_TIMEOUT).await;
            if let Some(vm) = vm.upgrade() {
                vm.complete_done(ctx);
            }
        });
        h.calls.insert(token, timeout.abort_handle());
        true
    }

    /// `on_log` + `on_delete` of a context whose `on_done` returned false, once.
    pub fn complete_done(&self, ctx: u32) {
        let plugin = {
            let Ok(mut guard) = self.inner.try_borrow_mut() else { return };
            let Some(inner) = guard.as_mut() else { return };
            match inner.store.data_mut().contexts.get_mut(&ctx) {
                Some(Ctx::Http(h)) if h.done_pending => {
                    h.done_pending = false;
                    h.plugin.clone()
                }
                _ => return,
            }
        };
        if !self.is_broken() {
            self.log_and_delete(&plugin, ctx);
        }
        self.remove_ctx(ctx);
        self.report_memory();
    }

    /// Updates `wasmesh_wasm_memory_bytes` with this VM's current linear memory size.
    pub fn report_memory(&self) {
        let Some((_, gauge)) = &self.gauges else { return };
        let Ok(mut guard) = self.inner.try_borrow_mut() else { return };
        let Some(inner) = guard.as_mut() else { return };
        let Some(mem) = inner.store.data().memory else { return };
        let size = mem.data_size(&inner.store) as i64;
        gauge.add(size - self.memory_reported.replace(size));
    }

    /// Forgets a context without calling the guest.
    pub fn remove_ctx(&self, ctx: u32) {
        {
            let Ok(mut guard) = self.inner.try_borrow_mut() else { return };
            let Some(inner) = guard.as_mut() else { return };
            let st = inner.store.data_mut();
            match st.contexts.remove(&ctx) {
                Some(Ctx::Http(h)) => h.calls.values().for_each(tokio::task::AbortHandle::abort),
                Some(Ctx::Root(r)) => {
                    if let Some(t) = &r.tick {
                        t.abort();
                    }
                    r.calls.values().for_each(tokio::task::AbortHandle::abort);
                    st.queue_owners.retain(|_, root| *root != ctx);
                }
                None => {}
            }
        }
        if !self.retired.borrow().is_empty() {
            self.reap();
        }
    }

    /// Retires `plugin`'s root context (no chain uses the plugin any more): it gets
    /// `on_done` + `on_delete` once its last HTTP context is finished.
    pub fn retire(&self, plugin: &Arc<Plugin>) {
        let found = {
            let mut roots = self.roots.borrow_mut();
            roots.iter().position(|(p, _)| Arc::ptr_eq(p, plugin)).map(|i| roots.remove(i))
        };
        if let Some(root) = found {
            self.retired.borrow_mut().push(root);
            self.reap();
        }
    }

    /// Deletes retired root contexts that have no HTTP context left.
    fn reap(&self) {
        let idle: Vec<(Arc<Plugin>, u32)> = {
            let Ok(guard) = self.inner.try_borrow() else { return };
            let Some(inner) = guard.as_ref() else { return };
            let contexts = &inner.store.data().contexts;
            let busy = |root: u32| contexts.values().any(|c| matches!(c, Ctx::Http(h) if h.root == root));
            let mut retired = self.retired.borrow_mut();
            let (idle, keep): (Vec<_>, Vec<_>) = retired.drain(..).partition(|(_, id)| !busy(*id));
            *retired = keep;
            idle
        };
        for (plugin, id) in idle {
            if !self.is_broken() {
                let _ = self
                    .call(&plugin, id, Scope::None, |c| c.done.as_ref(), id)
                    .and_then(|_| self.call(&plugin, id, Scope::None, |c| c.delete.as_ref(), id));
            }
            self.remove_ctx(id);
        }
    }

    /// `on_tick` of a root context.
    pub fn tick(&self, ctx: u32) {
        if let Some(plugin) = self.plugin_of(ctx) {
            let _ = self.call(&plugin, ctx, Scope::None, |c| c.tick.as_ref(), ctx);
        }
    }

    /// `on_queue_ready` for every root context that registered `queue`.
    pub fn queue_ready(&self, queue: u32) {
        let owner = {
            let Ok(guard) = self.inner.try_borrow() else { return };
            guard.as_ref().and_then(|i| i.store.data().queue_owners.get(&queue).copied())
        };
        if let Some(ctx) = owner {
            if let Some(plugin) = self.plugin_of(ctx) {
                let _ = self.call(&plugin, ctx, Scope::None, |c| c.queue_ready.as_ref(), (ctx, queue));
            }
        }
    }

    /// Delivers the one answer of `http_call` `token` made from `ctx`.
    pub fn deliver_call(&self, ctx: u32, token: u32, result: Result<http::Response<Bytes>, CalloutError>) {
        let Some(plugin) = self.plugin_of(ctx) else { return };
        {
            let Ok(mut guard) = self.inner.try_borrow_mut() else { return };
            if let Some(inner) = guard.as_mut() {
                match inner.store.data_mut().contexts.get_mut(&ctx) {
                    Some(Ctx::Root(r)) => drop(r.calls.remove(&token)),
                    Some(Ctx::Http(h)) => drop(h.calls.remove(&token)),
                    None => return,
                }
            }
        }
        let (scope, args) = match result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let n = parts.headers.len() as u32 + 1;
                let body_len = body.len() as u32;
                let scope = Scope::CallResponse(Box::new(CallResponse {
                    status: parts.status.as_u16(),
                    head: Some(parts),
                    body,
                    trailers: http::HeaderMap::new(),
                    message: String::new(),
                }));
                (scope, (ctx, token, n, body_len, 0))
            }
            Err(e) => {
                let scope = Scope::CallResponse(Box::new(CallResponse {
                    status: 0,
                    head: None,
                    body: Bytes::new(),
                    trailers: http::HeaderMap::new(),
                    message: e.to_string(),
                }));
                (scope, (ctx, token, 0, 0, 0))
            }
        };
        let _ = self.call(&plugin, ctx, scope, |c| c.http_call_response.as_ref(), args);
    }

    /// Delivers the one answer of unary `grpc_call` `token` made from `ctx`: the message
    /// through `on_grpc_receive` (status OK), anything else through `on_grpc_close`.
    pub fn deliver_grpc(&self, ctx: u32, token: u32, result: GrpcResult) {
        let Some(plugin) = self.plugin_of(ctx) else { return };
        {
            let Ok(mut guard) = self.inner.try_borrow_mut() else { return };
            if let Some(inner) = guard.as_mut() {
                match inner.store.data_mut().contexts.get_mut(&ctx) {
                    Some(Ctx::Root(r)) => drop(r.calls.remove(&token)),
                    Some(Ctx::Http(h)) => drop(h.calls.remove(&token)),
                    None => return,
                }
            }
        }
        let (ok, size, status) = (result.status == 0, result.message.len() as u32, result.status);
        let scope = Scope::Grpc(Box::new(result));
        if ok {
            let _ = self.call(&plugin, ctx, scope, |c| c.grpc_receive.as_ref(), (ctx, token, size));
        } else {
            let _ = self.call(&plugin, ctx, scope, |c| c.grpc_close.as_ref(), (ctx, token, status));
        }
    }

    fn plugin_of(&self, ctx: u32) -> Option<Arc<Plugin>> {
        let guard = self.inner.try_borrow().ok()?;
        match guard.as_ref()?.store.data().contexts.get(&ctx)? {
            Ctx::Root(r) => Some(r.plugin.clone()),
            Ctx::Http(h) => Some(h.plugin.clone()),
        }
    }

    /// Runs one guest callback picked by `pick` (absent: `Ok(None)`).
    fn call<P, R>(
        &self,
        plugin: &Plugin,
        ctx: u32,
        scope: Scope,
        pick: impl FnOnce(&Callbacks) -> Option<&TypedFunc<P, R>>,
        args: P,
    ) -> Result<Option<R>, Failed>
    where
        P: WasmParams,
        R: WasmResults,
    {
        if self.broken.get() {
            return Err(Failed { kind: "unavailable" });
        }
        let Ok(mut guard) = self.inner.try_borrow_mut() else {
            // A guest call is already running on this VM (a host service re-entered).
            tracing::error!(plugin = %plugin.name, "re-entrant guest call refused");
            return Err(Failed { kind: "reentrant" });
        };
        let Some(inner) = guard.as_mut() else {
            return Err(Failed { kind: "unavailable" });
        };
        let Inner { store, cb } = inner;
        let Some(f) = pick(cb) else { return Ok(None) };
        let st = store.data_mut();
        let (prev_ctx, prev_scope) = (st.current, std::mem::replace(&mut st.scope, scope));
        st.current = ctx;
        store.set_epoch_deadline(deadline_ticks(plugin.limits.callback_deadline.0));
        let res = f.call(&mut *store, args);
        let st = store.data_mut();
        st.current = prev_ctx;
        st.scope = prev_scope;
        drop(guard);
        match res {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let kind = classify(&e);
                tracing::error!(plugin = %plugin.name, kind, error = %format!("{e:?}"), "wasm plugin failed");
                self.rt.metrics.failures.with_label_values(&[&plugin.name, kind]).inc();
                self.break_vm();
                Err(Failed { kind })
            }
        }
    }

    /// Marks the VM broken: stops its timers and wakes every stream it serves.
    /// The guest's last warning/error log line, if any.
    fn last_error_log(&self) -> Option<String> {
        let guard = self.inner.try_borrow().ok()?;
        guard.as_ref()?.store.data().last_error_log.clone()
    }

    fn break_vm(&self) {
        if self.broken.replace(true) {
            return;
        }
        self.broken_at.set(Some(Instant::now()));
        let Ok(guard) = self.inner.try_borrow() else { return };
        let Some(inner) = guard.as_ref() else { return };
        for ctx in inner.store.data().contexts.values() {
            match ctx {
                Ctx::Root(r) => {
                    if let Some(t) = &r.tick {
                        t.abort();
                    }
                }
                Ctx::Http(h) => {
                    if let Ok(mut s) = h.stream.try_borrow_mut() {
                        s.signals.vm_failed = true;
                        s.wake();
                    }
                }
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some((vms, memory)) = &self.gauges {
            vms.dec();
            memory.sub(self.memory_reported.get());
        }
    }
}

// === impl Callbacks ===

impl Callbacks {
    fn lookup(inst: &Instance, store: &mut Store<HostState>) -> Result<Callbacks, String> {
        let headers = |store: &mut Store<HostState>, name: &str| -> Result<Option<HeadersFn>, String> {
            if inst.get_func(&mut *store, name).is_none() {
                return Ok(None);
            }
            if let Ok(f) = inst.get_typed_func(&mut *store, name) {
                return Ok(Some(HeadersFn::V2(f)));
            }
            inst.get_typed_func(&mut *store, name)
                .map(|f| Some(HeadersFn::V1(f)))
                .map_err(|e| format!("export {name} has the wrong signature: {e}"))
        };
        Ok(Callbacks {
            context_create: typed(inst, store, "proxy_on_context_create")?,
            vm_start: typed(inst, store, "proxy_on_vm_start")?,
            configure: typed(inst, store, "proxy_on_configure")?,
            done: typed(inst, store, "proxy_on_done")?,
            log: typed(inst, store, "proxy_on_log")?,
            delete: typed(inst, store, "proxy_on_delete")?,
            tick: typed(inst, store, "proxy_on_tick")?,
            queue_ready: typed(inst, store, "proxy_on_queue_ready")?,
            request_headers: headers(store, "proxy_on_request_headers")?,
            request_body: typed(inst, store, "proxy_on_request_body")?,
            request_trailers: typed(inst, store, "proxy_on_request_trailers")?,
            response_headers: headers(store, "proxy_on_response_headers")?,
            response_body: typed(inst, store, "proxy_on_response_body")?,
            response_trailers: typed(inst, store, "proxy_on_response_trailers")?,
            http_call_response: typed(inst, store, "proxy_on_http_call_response")?,
            grpc_receive: typed(inst, store, "proxy_on_grpc_receive")?,
            grpc_close: typed(inst, store, "proxy_on_grpc_close")?,
        })
    }
}

/// The headers callback of the request or the response side, in its ABI shape.
fn headers_fn(c: &Callbacks, request: bool) -> Option<&HeadersFn> {
    if request {
        c.request_headers.as_ref()
    } else {
        c.response_headers.as_ref()
    }
}

/// The v0.1.0 headers callback `(ctx, headers)`.
fn headers_v1(c: &Callbacks, request: bool) -> Option<&TypedFunc<(u32, u32), u32>> {
    match headers_fn(c, request) {
        Some(HeadersFn::V1(f)) => Some(f),
        _ => None,
    }
}

/// The v0.2 headers callback `(ctx, headers, end_of_stream)`.
fn headers_v2(c: &Callbacks, request: bool) -> Option<&TypedFunc<(u32, u32, u32), u32>> {
    match headers_fn(c, request) {
        Some(HeadersFn::V2(f)) => Some(f),
        _ => None,
    }
}

/// An optional export with a checked signature: absent → `None`, wrong type → error.
fn typed<P: WasmParams, R: WasmResults>(
    inst: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, String> {
    if inst.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    inst.get_typed_func::<P, R>(&mut *store, name)
        .map(Some)
        .map_err(|e| format!("export {name} has the wrong signature: {e}"))
}

/// A start function that ends with `proc_exit(0)` (WASI command model) succeeded.
fn exit_ok(r: wasmtime::Result<()>) -> wasmtime::Result<()> {
    match r {
        Err(e) if e.downcast_ref::<ProcExit>().is_some_and(|p| p.0 == 0) => Ok(()),
        other => other,
    }
}

fn deadline_ticks(ms: u64) -> u64 {
    let tick = EPOCH_TICK.as_millis() as u64;
    ms.div_ceil(tick).max(1)
}

fn start_ticks(p: &Plugin) -> u64 {
    deadline_ticks(p.limits.callback_deadline.0.saturating_mul(10).max(1000))
}

/// Names the cause of a failed guest call (the `kind` label).
pub(crate) fn classify(e: &wasmtime::Error) -> &'static str {
    if let Some(t) = e.downcast_ref::<Trap>() {
        return match t {
            Trap::Interrupt => "deadline",
            Trap::StackOverflow => "stack_overflow",
            _ => "trap",
        };
    }
    if e.downcast_ref::<ProcExit>().is_some() {
        return "proc_exit";
    }
    if e.downcast_ref::<GuestFault>().is_some() {
        return "memory_fault";
    }
    let s = format!("{e:#}");
    if s.contains("growing memory") || s.contains("memory growth") || s.contains("memory minimum size") {
        return "memory_limit";
    }
    "trap"
}

/// The task that turns queue wake-ups (from any thread) into `on_queue_ready` calls.
fn spawn_queue_task(vm: std::rc::Weak<Vm>) -> tokio::sync::mpsc::UnboundedSender<u32> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    tokio::task::spawn_local(async move {
        while let Some(id) = rx.recv().await {
            let Some(vm) = vm.upgrade() else { return };
            if vm.is_broken() {
                return;
            }
            vm.queue_ready(id);
        }
    });
    tx
}

/// How long a VM rebuild waits after `failures` consecutive failures.
pub(crate) fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(250);
    let exp = failures.saturating_sub(1).min(10);
    (base * 2u32.pow(exp)).min(Duration::from_secs(30))
}

/// The callbacks context `ctx` of a running VM wants (all when it does not exist).
fn ctx_interest(inner: &Inner, ctx: u32) -> Interest {
    match inner.store.data().contexts.get(&ctx) {
        Some(Ctx::Http(h)) => h.interest,
        Some(Ctx::Root(r)) => r.interest,
        None => Interest::ALL,
    }
}
