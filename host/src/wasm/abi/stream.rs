//! Imports: proxy_continue_stream, proxy_close_stream, proxy_send_local_response,
//! proxy_continue_request / proxy_continue_response (v0.1.0), proxy_set_effective_context,
//! proxy_done, proxy_get_status.
//!
//! Stream control only records a signal on the current stream and wakes it; the stream
//! acts after the guest call returns (Envoy's after-VM-call actions).

use bytes::Bytes;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::flags::ResponseFlags;
use crate::wasm::maps::decode_pairs;
use crate::wasm::state::{Ctx, HostState, Scope, Signals};
use crate::wasm::types::LocalReply;

/// Applies `f` to the signals of the current stream (no stream: nothing happens).
fn signal(st: &HostState, f: impl FnOnce(&mut Signals)) {
    let Some(stream) = st.current_stream() else {
        tracing::debug!("stream control outside a stream; ignored");
        return;
    };
    if let Ok(mut s) = stream.try_borrow_mut() {
        f(&mut s.signals);
        s.wake();
    }
}

fn continue_stream(st: &HostState, ty: u32) -> u32 {
    match ty {
        0 => signal(st, |s| s.continue_request = true),
        1 => signal(st, |s| s.continue_response = true),
        // L4 streams do not exist on an HTTP filter; the SDK accepts only Ok.
        2 | 3 => {}
        _ => return Status::BadArgument.raw(),
    }
    Status::Ok.raw()
}

/// True when the current stream's request is gRPC (`content-type: application/grpc…`).
fn is_grpc(st: &HostState) -> bool {
    let Some(stream) = st.current_stream() else { return false };
    let Ok(s) = stream.try_borrow() else { return false };
    s.request
        .as_ref()
        .and_then(|r| r.headers.get(http::header::CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_continue_stream", |c: C<'_>, ty: u32| -> R { Ok(continue_stream(c.data(), ty)) })?;
    l.func_wrap("env", "proxy_continue_request", |c: C<'_>| -> R { Ok(continue_stream(c.data(), 0)) })?;
    l.func_wrap("env", "proxy_continue_response", |c: C<'_>| -> R { Ok(continue_stream(c.data(), 1)) })?;
    l.func_wrap("env", "proxy_close_stream", |c: C<'_>, ty: u32| -> R {
        if ty > 3 {
            return Ok(Status::BadArgument.raw());
        }
        if ty <= 1 {
            signal(c.data(), |s| s.close = true);
        }
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>, code: u32, dptr: u32, dlen: u32, bptr: u32, blen: u32, hptr: u32, hlen: u32, grpc: i32| -> R {
            let details = memory::read_string(&mut c, dptr, dlen)?;
            let body = memory::read(&mut c, bptr, blen)?;
            let raw = memory::read(&mut c, hptr, hlen)?;
            let Some(pairs) = decode_pairs(&raw) else {
                return Ok(Status::BadArgument.raw());
            };
            if !(100..=999).contains(&code) {
                return Ok(Status::BadArgument.raw());
            }
            let mut headers: Vec<(String, String)> = pairs
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned()))
                .collect();
            // Like Envoy, the gRPC status only applies to gRPC requests.
            if grpc >= 0 && is_grpc(c.data()) {
                headers.push(("grpc-status".into(), grpc.to_string()));
            }
            let reply = LocalReply {
                status: code as u16,
                headers,
                body: Bytes::from(body),
                details,
                flags: ResponseFlags::NONE,
            };
            signal(c.data(), |s| s.local_reply = Some(reply));
            Ok(Status::Ok.raw())
        },
    )?;
    l.func_wrap("env", "proxy_set_effective_context", |mut c: C<'_>, ctx: u32| -> R {
        let st = c.data_mut();
        if st.contexts.contains_key(&ctx) {
            st.current = ctx;
            Ok(Status::Ok.raw())
        } else {
            Ok(Status::BadArgument.raw())
        }
    })?;
    l.func_wrap("env", "proxy_done", |c: C<'_>| -> R {
        // Finishes a context whose on_done returned false, after this guest call returns.
        let st = c.data();
        let ctx = st.current;
        if matches!(st.contexts.get(&ctx), Some(Ctx::Http(h)) if h.done_pending) && st.host.is_some() {
            let vm = st.vm.clone();
            tokio::task::spawn_local(async move {
                if let Some(vm) = vm.upgrade() {
                    vm.complete_done(ctx);
                }
            });
        }
        // The Rust SDK accepts only Ok here.
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap("env", "proxy_get_status", |mut c: C<'_>, ret_code: u32, ret_ptr: u32, ret_len: u32| -> R {
        let (code, msg) = match &c.data().scope {
            Scope::CallResponse(r) => (r.status as u32, r.message.clone()),
            Scope::Grpc(g) => (g.status, g.status_message.clone()),
            _ => (0, String::new()),
        };
        memory::write_u32(&mut c, ret_code, code)?;
        memory::return_bytes(&mut c, msg.as_bytes(), ret_ptr, ret_len)?;
        Ok(Status::Ok.raw())
    })?;
    Ok(())
}
