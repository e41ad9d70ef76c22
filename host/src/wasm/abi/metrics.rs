//! Imports: proxy_define_metric, proxy_get_metric, proxy_record_metric,
//! proxy_increment_metric (metrics live in `wasm::custom_metrics`).

use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::custom_metrics::MetricKind;
use crate::wasm::state::HostState;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_define_metric", |mut c: C<'_>, ty: u32, nptr: u32, nlen: u32, ret: u32| -> R {
        let name = memory::read_string(&mut c, nptr, nlen)?;
        memory::check(&mut c, ret, 4)?;
        let Some(kind) = MetricKind::from_raw(ty) else {
            return Ok(Status::BadArgument.raw());
        };
        let id = c.data().rt.custom.define(kind, &name);
        memory::write_u32(&mut c, ret, id)?;
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap("env", "proxy_get_metric", |mut c: C<'_>, id: u32, ret: u32| -> R {
        match c.data().rt.custom.value(id) {
            Ok(v) => {
                memory::write_u64(&mut c, ret, v)?;
                Ok(Status::Ok.raw())
            }
            Err(s) => Ok(s.raw()),
        }
    })?;
    l.func_wrap("env", "proxy_record_metric", |c: C<'_>, id: u32, v: u64| -> R {
        Ok(c.data().rt.custom.record(id, v).raw())
    })?;
    l.func_wrap("env", "proxy_increment_metric", |c: C<'_>, id: u32, d: i64| -> R {
        Ok(c.data().rt.custom.increment(id, d).raw())
    })?;
    Ok(())
}
