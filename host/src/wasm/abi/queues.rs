//! Imports: proxy_register_shared_queue, proxy_resolve_shared_queue,
//! proxy_enqueue_shared_queue, proxy_dequeue_shared_queue. `on_queue_ready` fires on the
//! root context that registered the queue, on every VM that registered it.

use bytes::Bytes;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::state::HostState;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_register_shared_queue", |mut c: C<'_>, nptr: u32, nlen: u32, ret: u32| -> R {
        let name = memory::read_string(&mut c, nptr, nlen)?;
        memory::check(&mut c, ret, 4)?;
        let st = c.data_mut();
        let id = st.rt.queues.register(&st.vm_id, &name, st.queue_tx.clone());
        if let Some(root) = st.current_root() {
            st.queue_owners.insert(id, root);
        }
        memory::write_u32(&mut c, ret, id)?;
        Ok(Status::Ok.raw())
    })?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vptr: u32, vlen: u32, nptr: u32, nlen: u32, ret: u32| -> R {
            let vm_id = memory::read_string(&mut c, vptr, vlen)?;
            let name = memory::read_string(&mut c, nptr, nlen)?;
            let st = c.data();
            let vm_id = if vm_id.is_empty() { st.vm_id.to_string() } else { vm_id };
            match st.rt.queues.resolve(&vm_id, &name) {
                Some(id) => {
                    memory::write_u32(&mut c, ret, id)?;
                    Ok(Status::Ok.raw())
                }
                None => Ok(Status::NotFound.raw()),
            }
        },
    )?;
    l.func_wrap("env", "proxy_enqueue_shared_queue", |mut c: C<'_>, id: u32, vptr: u32, vlen: u32| -> R {
        let value = memory::read(&mut c, vptr, vlen)?;
        if c.data().rt.queues.enqueue(id, Bytes::from(value)) {
            Ok(Status::Ok.raw())
        } else {
            Ok(Status::NotFound.raw())
        }
    })?;
    l.func_wrap("env", "proxy_dequeue_shared_queue", |mut c: C<'_>, id: u32, ret_ptr: u32, ret_len: u32| -> R {
        match c.data().rt.queues.dequeue(id) {
            Ok(Some(v)) => {
                memory::return_bytes(&mut c, &v, ret_ptr, ret_len)?;
                Ok(Status::Ok.raw())
            }
            Ok(None) => Ok(Status::Empty.raw()),
            Err(s) => Ok(s.raw()),
        }
    })?;
    Ok(())
}
