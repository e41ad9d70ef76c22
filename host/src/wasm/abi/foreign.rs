//! Imports: proxy_call_foreign_function, proxy_clear_route_cache (v0.1.0).
//!
//! Functions: `clear_route_cache` (accepted; routing reads properties when the upstream is
//! chosen, so there is no cache to clear), `wasmesh.access_log` (one line to the access
//! log sink), `wasmesh.retry_upstream` / `wasmesh.eject_endpoint` (recorded as filter
//! state under their own name, with the arguments as value, for the proxy to act on).
//! Anything else is `NotFound`.

use bytes::Bytes;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::state::HostState;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>, nptr: u32, nlen: u32, aptr: u32, alen: u32, ret_ptr: u32, ret_len: u32| -> R {
            let name = memory::read_string(&mut c, nptr, nlen)?;
            let args = memory::read(&mut c, aptr, alen)?;
            memory::check(&mut c, ret_ptr, 4)?;
            memory::check(&mut c, ret_len, 4)?;
            let st = c.data();
            let status = match name.as_str() {
                "clear_route_cache" => Status::Ok,
                "wasmesh.access_log" => match &st.host {
                    Some(h) => {
                        h.access_log(&String::from_utf8_lossy(&args));
                        Status::Ok
                    }
                    None => Status::InternalFailure,
                },
                "wasmesh.retry_upstream" | "wasmesh.eject_endpoint" => match st.current_stream() {
                    Some(stream) => match stream.try_borrow_mut() {
                        Ok(mut s) => {
                            s.filter_state.insert(name.clone(), Bytes::from(args));
                            Status::Ok
                        }
                        Err(_) => Status::InternalFailure,
                    },
                    None => Status::BadArgument,
                },
                _ => Status::NotFound,
            };
            if status == Status::Ok {
                memory::return_bytes(&mut c, &[], ret_ptr, ret_len)?;
            }
            Ok(status.raw())
        },
    )?;
    l.func_wrap("env", "proxy_clear_route_cache", |_c: C<'_>| -> R { Ok(Status::Ok.raw()) })?;
    Ok(())
}
