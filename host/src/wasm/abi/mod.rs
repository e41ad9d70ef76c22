//! The hostcalls, one file per group, each with its own `add_to_linker`. This module only
//! calls the groups. Guest memory access is in `memory`, the status table in `status`.

pub mod memory;
pub mod status;

mod buffers;
mod foreign;
mod grpc;
mod headers;
mod http_call;
mod log;
mod metrics;
mod properties;
mod queues;
mod shared_data;
mod stream;
mod timers;
pub mod wasi;

use wasmtime::{Caller, Linker};

use super::state::HostState;

/// A hostcall's caller.
pub(crate) type C<'a> = Caller<'a, HostState>;
/// A hostcall's result: a status (or errno), or a trap.
pub(crate) type R = wasmtime::Result<u32>;

/// Links every proxy-wasm v0.1.0–v0.2.1 import and the WASI preview1 subset.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker(linker)?;
    timers::add_to_linker(linker)?;
    buffers::add_to_linker(linker)?;
    headers::add_to_linker(linker)?;
    properties::add_to_linker(linker)?;
    stream::add_to_linker(linker)?;
    http_call::add_to_linker(linker)?;
    grpc::add_to_linker(linker)?;
    shared_data::add_to_linker(linker)?;
    queues::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    foreign::add_to_linker(linker)?;
    wasi::add_to_linker(linker)?;
    Ok(())
}
