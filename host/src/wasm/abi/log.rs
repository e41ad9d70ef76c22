//! Imports: proxy_log, proxy_get_log_level, proxy_get_current_time_nanoseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::level_filters::LevelFilter;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::state::HostState;

/// Longest log message kept (longer ones are cut).
const MAX_LOG: u32 = 64 * 1024;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_log", |mut c: C<'_>, level: u32, ptr: u32, len: u32| -> R {
        if level > 5 {
            return Ok(Status::BadArgument.raw());
        }
        let mut msg = memory::read_string(&mut c, ptr, len.min(MAX_LOG))?;
        if len > MAX_LOG {
            memory::check(&mut c, ptr, len)?;
            msg.push('…');
        }
        let plugin = c.data().current_plugin().name.clone();
        emit(level, &plugin, &msg);
        if level >= 3 {
            c.data_mut().last_error_log = Some(msg);
        }
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap("env", "proxy_get_log_level", |mut c: C<'_>, ret: u32| -> R {
        let level = match LevelFilter::current() {
            LevelFilter::TRACE => 0,
            LevelFilter::DEBUG => 1,
            LevelFilter::INFO => 2,
            LevelFilter::WARN => 3,
            LevelFilter::ERROR => 4,
            _ => 5,
        };
        memory::write_u32(&mut c, ret, level)?;
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: C<'_>, ret: u32| -> R {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        memory::write_u64(&mut c, ret, now.as_nanos() as u64)?;
        Ok(Status::Ok.raw())
    })?;
    Ok(())
}

/// Logs a guest message at its level, tagged with the plugin name.
pub(crate) fn emit(level: u32, plugin: &str, msg: &str) {
    match level {
        0 => tracing::trace!(target: "wasm", plugin, "{msg}"),
        1 => tracing::debug!(target: "wasm", plugin, "{msg}"),
        2 => tracing::info!(target: "wasm", plugin, "{msg}"),
        3 => tracing::warn!(target: "wasm", plugin, "{msg}"),
        _ => tracing::error!(target: "wasm", plugin, "{msg}"),
    }
}
