//! Imports: proxy_set_tick_period_milliseconds (one timer per root context, `on_tick`).

use std::time::Duration;

use wasmtime::Linker;

use super::status::Status;
use super::{C, R};
use crate::wasm::state::{Ctx, HostState};

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: C<'_>, ms: u32| -> R {
        let st = c.data_mut();
        let Some(root) = st.current_root() else {
            return Ok(Status::Ok.raw());
        };
        let spawn = st.host.is_some();
        let vm = st.vm.clone();
        let Some(Ctx::Root(r)) = st.contexts.get_mut(&root) else {
            return Ok(Status::Ok.raw());
        };
        if let Some(old) = r.tick.take() {
            old.abort();
        }
        if ms > 0 && spawn {
            let period = Duration::from_millis(ms as u64);
            let task = tokio::task::spawn_local(async move {
                let start = tokio::time::Instant::now() + period;
                let mut every = tokio::time::interval_at(start, period);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(vm) = vm.upgrade() else { return };
                    if vm.is_broken() {
                        return;
                    }
                    vm.tick(root);
                }
            });
            r.tick = Some(task.abort_handle());
        }
        Ok(Status::Ok.raw())
    })?;
    Ok(())
}
