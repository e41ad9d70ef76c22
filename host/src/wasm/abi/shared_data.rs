//! Imports: proxy_get_shared_data, proxy_set_shared_data (process-wide, by vm_id, CAS).

use bytes::Bytes;
use wasmtime::Linker;

use super::status::Status;
use super::{memory, C, R};
use crate::wasm::state::HostState;

pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kptr: u32, klen: u32, ret_ptr: u32, ret_len: u32, ret_cas: u32| -> R {
            let key = memory::read_string(&mut c, kptr, klen)?;
            memory::check(&mut c, ret_cas, 4)?;
            let st = c.data();
            match st.rt.shared_data.get(&st.vm_id, &key) {
                Some((value, cas)) => {
                    memory::return_bytes(&mut c, &value, ret_ptr, ret_len)?;
                    memory::write_u32(&mut c, ret_cas, cas)?;
                    Ok(Status::Ok.raw())
                }
                None => Ok(Status::NotFound.raw()),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kptr: u32, klen: u32, vptr: u32, vlen: u32, cas: u32| -> R {
            let key = memory::read_string(&mut c, kptr, klen)?;
            let value = memory::read(&mut c, vptr, vlen)?;
            let st = c.data();
            Ok(st.rt.shared_data.set(&st.vm_id, &key, Bytes::from(value), cas).raw())
        },
    )?;
    Ok(())
}
