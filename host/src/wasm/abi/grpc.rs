//! Imports: proxy_grpc_call, proxy_grpc_stream, proxy_grpc_send, proxy_grpc_cancel,
//! proxy_grpc_close. gRPC callouts are not implemented yet: calls answer
//! `InternalFailure` (the Rust SDK accepts it and returns an error to the filter), ids
//! are never valid (`NotFound`).

use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::state::HostState;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: C<'_>,
         _up: u32,
         _ul: u32,
         _sp: u32,
         _sl: u32,
         _mp: u32,
         _ml: u32,
         _ip: u32,
         _il: u32,
         _gp: u32,
         _gl: u32,
         _timeout: u32,
         ret: u32|
         -> R {
            memory::check(&mut c, ret, 4)?;
            tracing::debug!(plugin = %c.data().current_plugin().name, "grpc_call is not supported");
            Ok(Status::InternalFailure.raw())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: C<'_>, _up: u32, _ul: u32, _sp: u32, _sl: u32, _mp: u32, _ml: u32, _ip: u32, _il: u32, ret: u32| -> R {
            memory::check(&mut c, ret, 4)?;
            Ok(Status::InternalFailure.raw())
        },
    )?;
    l.func_wrap("env", "proxy_grpc_send", |_c: C<'_>, _id: u32, _p: u32, _l: u32, _eos: u32| -> R {
        Ok(Status::NotFound.raw())
    })?;
    l.func_wrap("env", "proxy_grpc_cancel", |_c: C<'_>, _id: u32| -> R { Ok(Status::NotFound.raw()) })?;
    l.func_wrap("env", "proxy_grpc_close", |_c: C<'_>, _id: u32| -> R { Ok(Status::NotFound.raw()) })?;
    Ok(())
}
