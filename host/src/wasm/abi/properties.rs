//! Imports: proxy_get_property, proxy_set_property (resolution in `wasm::properties`).

use bytes::Bytes;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::properties;
use crate::wasm::state::HostState;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_get_property", |mut c: C<'_>, ptr: u32, len: u32, ret_ptr: u32, ret_len: u32| -> R {
        let found = memory::answer_from_scratch(&mut c, ret_ptr, ret_len, |c, out| {
            memory::with_bytes(c, ptr, len, |path, st| properties::get_into(st, path, out))
        })?;
        match found {
            Ok(true) => Ok(Status::Ok.raw()),
            Ok(false) => Ok(Status::NotFound.raw()),
            Err(s) => Ok(s.raw()),
        }
    })?;
    l.func_wrap("env", "proxy_set_property", |mut c: C<'_>, ptr: u32, len: u32, vptr: u32, vlen: u32| -> R {
        // The path is read in place; the value is copied once, into the filter state.
        memory::with_two(&mut c, (ptr, len), (vptr, vlen), |path, value, st| {
            properties::set(st, path, Bytes::copy_from_slice(value))
        })?;
        Ok(Status::Ok.raw())
    })?;
    Ok(())
}
