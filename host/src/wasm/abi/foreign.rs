//! Imports: proxy_call_foreign_function, proxy_clear_route_cache (v0.1.0).
//!
//! Functions: `clear_route_cache` (accepted; routing reads properties when the upstream is
//! chosen, so there is no cache to clear), `wasmesh.access_log` (one line to the access
//! log sink), `wasmesh.retry_upstream` (4-byte LE backoff ms, optional; only in the
//! response-headers phase and when the proxy can retry, else `InternalFailure`: the
//! stream answers `Verdict::Retry` and earlier filters do not see this response),
//! `wasmesh.eject_endpoint` (recorded as filter state under its own name, with the
//! arguments as value, for the proxy to act on),
//! `wasmesh.resume_after` (4-byte LE milliseconds: continues the current stream's
//! current direction after that long; cancelled with the stream),
//! `wasmesh.get_properties` (several properties in one call: see
//! `properties::get_many`), `wasmesh.define_properties` and
//! `wasmesh.get_properties_by_id` (a set of paths split once, then read by id: see
//! `properties::define`), `wasmesh.http_callbacks` (u32 LE mask of the HTTP callbacks
//! to call: from a root context for all its streams to come, from an HTTP context for
//! that stream; see `wasm::interest`), `wasmesh.answer_buffer` (u32 LE address and
//! capacity of a guest region that answers may be written to: see
//! `memory::return_bytes`), `wasmesh.pool_limits` (from a root context: a JSON table of
//! connection-pool limits by cluster that the proxy applies before each request of the
//! filter's chain is sent: see `upstream::LimitTable`). Anything else is `NotFound`.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::upstream::LimitTable;
use crate::wasm::interest::Interest;
use crate::wasm::properties;
use crate::wasm::request_metrics::{DefineError, Owner};
use crate::wasm::state::{Ctx, HostState};

/// A foreign function that answers bytes (appended to the buffer it is given).
type Answering = fn(&mut HostState, &[u8], &mut Vec<u8>) -> Result<(), Status>;

/// The foreign functions this host implements: those that answer bytes, and those that
/// act and answer only a status.
#[derive(Clone, Copy)]
enum Foreign {
    Answers(Answering),
    Acts(Act),
}

/// The foreign functions that answer only a status.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    ClearRouteCache,
    AccessLog,
    RetryUpstream,
    EjectEndpoint,
    ResumeAfter,
    HttpCallbacks,
    AnswerBuffer,
    PoolLimits,
    RequestMetrics,
    RequestMessages,
}

impl Foreign {
    fn parse(name: &[u8]) -> Option<Foreign> {
        Some(match name {
            b"wasmesh.get_properties" => Foreign::Answers(|st, args, out| properties::get_many(st, args, out)),
            b"wasmesh.define_properties" => Foreign::Answers(properties::define),
            b"wasmesh.get_properties_by_id" => Foreign::Answers(|st, args, out| properties::get_set(st, args, out)),
            b"clear_route_cache" => Foreign::Acts(Act::ClearRouteCache),
            b"wasmesh.access_log" => Foreign::Acts(Act::AccessLog),
            b"wasmesh.retry_upstream" => Foreign::Acts(Act::RetryUpstream),
            b"wasmesh.eject_endpoint" => Foreign::Acts(Act::EjectEndpoint),
            b"wasmesh.resume_after" => Foreign::Acts(Act::ResumeAfter),
            b"wasmesh.http_callbacks" => Foreign::Acts(Act::HttpCallbacks),
            b"wasmesh.answer_buffer" => Foreign::Acts(Act::AnswerBuffer),
            b"wasmesh.pool_limits" => Foreign::Acts(Act::PoolLimits),
            b"wasmesh.define_request_metrics" => Foreign::Answers(define_request_metrics),
            b"wasmesh.request_metrics" => Foreign::Acts(Act::RequestMetrics),
            b"wasmesh.request_messages" => Foreign::Acts(Act::RequestMessages),
            _ => return None,
        })
    }
}

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>, nptr: u32, nlen: u32, aptr: u32, alen: u32, ret_ptr: u32, ret_len: u32| -> R {
            // Name and arguments are read in place: most calls happen per request.
            let function = memory::with_bytes(&mut c, nptr, nlen, |name, _| Foreign::parse(name))?;
            memory::check(&mut c, ret_ptr, 4)?;
            memory::check(&mut c, ret_len, 4)?;
            let act = match function {
                None => return Ok(Status::NotFound.raw()),
                Some(Foreign::Answers(answering)) => {
                    let answered = memory::answer_from_scratch(&mut c, ret_ptr, ret_len, |c, out| {
                        memory::with_bytes(c, aptr, alen, |args, st| answering(st, args, out).map(|()| true))
                    })?;
                    return Ok(match answered {
                        Ok(_) => Status::Ok.raw(),
                        Err(s) => s.raw(),
                    });
                }
                Some(Foreign::Acts(act)) => act,
            };
            let memory_size = match act {
                Act::AnswerBuffer => memory::memory(&mut c)?.data_size(&c),
                _ => 0,
            };
            let status = memory::with_bytes(&mut c, aptr, alen, |args, st| match act {
                Act::ClearRouteCache => Status::Ok,
                Act::AccessLog => match &st.host {
                    Some(h) => {
                        h.access_log(&String::from_utf8_lossy(args));
                        Status::Ok
                    }
                    None => Status::InternalFailure,
                },
                Act::RetryUpstream => retry_upstream(st, args),
                Act::EjectEndpoint => eject_endpoint(st, args),
                Act::ResumeAfter => resume_after(st, args),
                Act::HttpCallbacks => http_callbacks(st, args),
                Act::AnswerBuffer => answer_buffer(st, args, memory_size),
                Act::PoolLimits => pool_limits(st, args),
                Act::RequestMetrics => request_metrics(st, args),
                Act::RequestMessages => request_messages(st, args),
            })?;
            if status == Status::Ok {
                memory::return_bytes(&mut c, &[], ret_ptr, ret_len)?;
            }
            Ok(status.raw())
        },
    )?;
    l.func_wrap("env", "proxy_clear_route_cache", |_c: C<'_>| -> R { Ok(Status::Ok.raw()) })?;
    Ok(())
}

/// Records the ejection request as filter state under its own name (the arguments as
/// value), for the proxy to act on after the callback.
fn eject_endpoint(st: &HostState, args: &[u8]) -> Status {
    let Some(stream) = st.current_stream() else { return Status::BadArgument };
    let Ok(mut s) = stream.try_borrow_mut() else { return Status::InternalFailure };
    s.filter_state.insert("wasmesh.eject_endpoint".into(), Bytes::copy_from_slice(args));
    Status::Ok
}

/// Continues the current stream after `args` (u32 LE) milliseconds, in the direction it
/// is in now (response once a response head exists).
fn resume_after(st: &mut HostState, args: &[u8]) -> Status {
    let Ok(ms) = <[u8; 4]>::try_from(args).map(u32::from_le_bytes) else {
        return Status::BadArgument;
    };
    if st.host.is_none() {
        return Status::InternalFailure;
    }
    let Some(stream) = st.current_stream().cloned() else {
        return Status::BadArgument;
    };
    if matches!(st.contexts.get(&st.current), Some(Ctx::Http(h)) if h.calls.len() >= super::http_call::MAX_OUTSTANDING_CALLS)
    {
        return Status::InternalFailure;
    }
    let weak = std::rc::Rc::downgrade(&stream);
    let task = tokio::task::spawn_local(async move {
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        let Some(stream) = weak.upgrade() else { return };
        let Ok(mut s) = stream.try_borrow_mut() else { return };
        if s.response.is_some() {
            s.signals.continue_response = true;
        } else {
            s.signals.continue_request = true;
        }
        s.wake();
    });
    let token = st.token();
    match st.contexts.get_mut(&st.current) {
        Some(Ctx::Http(h)) => drop(h.calls.insert(token, task.abort_handle())),
        _ => task.abort(),
    }
    Status::Ok
}

/// Registers the guest's answer buffer: `args` is its address and capacity (u32 LE
/// each), a region inside linear memory (`memory_size` bytes now; it only grows, so the
/// region stays inside); see `memory::return_bytes`.
fn answer_buffer(st: &mut HostState, args: &[u8], memory_size: usize) -> Status {
    let field = |i: usize| args.get(i..i + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes);
    let (Some(ptr), Some(cap), 8) = (field(0), field(4), args.len()) else {
        return Status::BadArgument;
    };
    let inside = (ptr as usize).checked_add(cap as usize).is_some_and(|end| end <= memory_size);
    if ptr == 0 || cap == 0 || !inside {
        return Status::BadArgument;
    }
    st.answer_buffer = Some((ptr, cap));
    Status::Ok
}

/// Sets which HTTP callbacks the current context (root: its streams to come) wants.
fn http_callbacks(st: &mut HostState, args: &[u8]) -> Status {
    let Some(interest) = Interest::from_args(args) else {
        return Status::BadArgument;
    };
    match st.contexts.get_mut(&st.current) {
        Some(Ctx::Root(r)) => r.interest = interest,
        Some(Ctx::Http(h)) => h.interest = interest,
        None => return Status::BadArgument,
    }
    Status::Ok
}

/// Records the connection-pool limits of the current root context's filter. The first
/// table holds: a VM started again later configures the same filter the same way.
fn pool_limits(st: &HostState, args: &[u8]) -> Status {
    if !matches!(st.contexts.get(&st.current), Some(Ctx::Root(_))) {
        return Status::BadArgument;
    }
    let plugin = st.current_plugin();
    match LimitTable::parse(args) {
        Ok(table) => {
            if plugin.pool_limits.get().is_some_and(|t| *t != table) {
                tracing::warn!(plugin = %plugin.name, "wasmesh.pool_limits: a different table was declared before; the first one stays");
            }
            let _ = plugin.pool_limits.set(table);
            Status::Ok
        }
        Err(e) => {
            tracing::warn!(plugin = %plugin.name, "wasmesh.pool_limits: {e}");
            Status::BadArgument
        }
    }
}

/// Defines a request-metrics template (JSON, see `request_metrics`); answers its id.
fn define_request_metrics(st: &mut HostState, args: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
    match st.rt.request_metrics.define(args) {
        Ok(id) => {
            out.extend_from_slice(&id.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            tracing::warn!(plugin = %st.current_plugin().name, "wasmesh.define_request_metrics: {e}");
            Err(match e {
                DefineError::Spec(_) => Status::BadArgument,
                DefineError::Full => Status::InternalFailure,
            })
        }
    }
}

/// Makes template `args` (u32 LE id) the request metrics of the current root context's
/// streams to come, or of the current stream.
fn request_metrics(st: &mut HostState, args: &[u8]) -> Status {
    let Ok(id) = <[u8; 4]>::try_from(args).map(u32::from_le_bytes) else { return Status::BadArgument };
    let Some(template) = st.rt.request_metrics.get(id) else { return Status::NotFound };
    let vm = st.vm.as_ptr();
    match st.contexts.get_mut(&st.current) {
        Some(Ctx::Root(r)) => r.request_metrics = Some(template),
        Some(Ctx::Http(h)) => {
            let Ok(mut s) = h.stream.try_borrow_mut() else { return Status::InternalFailure };
            s.metrics.get_or_insert_default().set(Owner::new(vm, h.root), template);
        }
        None => return Status::BadArgument,
    }
    Status::Ok
}

/// The current stream's gRPC message counts (u64 LE request, u64 LE response) for the
/// request metrics its filter uses; `NotFound` when it uses none.
fn request_messages(st: &HostState, args: &[u8]) -> Status {
    let field = |i: usize| args.get(i..i + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes);
    let (Some(req), Some(resp), 16) = (field(0), field(8), args.len()) else { return Status::BadArgument };
    let Some(Ctx::Http(h)) = st.contexts.get(&st.current) else { return Status::BadArgument };
    let Ok(mut s) = h.stream.try_borrow_mut() else { return Status::InternalFailure };
    let owner = Owner::new(st.vm.as_ptr(), h.root);
    match s.metrics.as_mut().is_some_and(|m| m.set_messages(owner, (req, resp))) {
        true => Status::Ok,
        false => Status::NotFound,
    }
}

/// Asks the proxy for another attempt instead of this response.
fn retry_upstream(st: &HostState, args: &[u8]) -> Status {
    let backoff = match args.len() {
        0 => 0,
        _ => match <[u8; 4]>::try_from(args) {
            Ok(b) => u32::from_le_bytes(b),
            Err(_) => return Status::BadArgument,
        },
    };
    let Some(stream) = st.current_stream() else {
        return Status::BadArgument;
    };
    let Ok(mut s) = stream.try_borrow_mut() else {
        return Status::InternalFailure;
    };
    if !s.response_live {
        return Status::BadArgument;
    }
    if !s.signals.retry_available {
        return Status::InternalFailure;
    }
    s.signals.retry = Some(Duration::from_millis(backoff as u64));
    Status::Ok
}
