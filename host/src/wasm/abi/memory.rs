//! Guest linear memory: every read from and write into the guest goes through here.
//! Bounds are checked before anything is allocated on the host; an out-of-bounds pointer
//! is a trap (`GuestFault`), never a host panic. No `unsafe`: wasmtime's `Memory::data`
//! gives a checked slice.

use wasmtime::{Caller, Extern, Memory};

use super::status::Status;
use crate::wasm::state::HostState;

/// A guest broke the memory contract (bad pointer, missing memory or allocator). Raised as
/// a trap so the plugin fails under its policy.
#[derive(Debug, thiserror::Error)]
#[error("guest memory fault: {0}")]
pub struct GuestFault(pub String);

type Res<T> = wasmtime::Result<T>;

fn fault<T>(msg: impl Into<String>) -> Res<T> {
    Err(wasmtime::Error::new(GuestFault(msg.into())))
}

/// The guest's exported memory (cached in the state after the first lookup).
pub fn memory(caller: &mut Caller<'_, HostState>) -> Res<Memory> {
    if let Some(m) = caller.data().memory {
        return Ok(m);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => {
            caller.data_mut().memory = Some(m);
            Ok(m)
        }
        _ => fault("module exports no memory"),
    }
}

fn range(mem_len: usize, ptr: u32, len: u32) -> Option<std::ops::Range<usize>> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize)?;
    (end <= mem_len).then_some(start..end)
}

/// Copies `len` bytes at `ptr` out of the guest.
pub fn read(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> Res<Vec<u8>> {
    let mem = memory(caller)?;
    let data = mem.data(&*caller);
    match range(data.len(), ptr, len) {
        Some(r) => Ok(data[r].to_vec()),
        None => fault(format!("read of {len} bytes at {ptr:#x} is out of bounds")),
    }
}

/// Runs `f` on the `len` bytes at `ptr`, borrowed from the guest (no copy), and the host
/// state; for hostcalls that only look something up with them.
pub fn with_bytes<T>(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
    f: impl FnOnce(&[u8], &mut HostState) -> T,
) -> Res<T> {
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(&mut *caller);
    match range(data.len(), ptr, len) {
        Some(r) => Ok(f(&data[r], state)),
        None => fault(format!("read of {len} bytes at {ptr:#x} is out of bounds")),
    }
}

/// Like [`with_bytes`] for two guest regions at once (a key and a value).
pub fn with_two<T>(
    caller: &mut Caller<'_, HostState>,
    (p1, l1): (u32, u32),
    (p2, l2): (u32, u32),
    f: impl FnOnce(&[u8], &[u8], &mut HostState) -> T,
) -> Res<T> {
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(&mut *caller);
    match (range(data.len(), p1, l1), range(data.len(), p2, l2)) {
        (Some(a), Some(b)) => Ok(f(&data[a], &data[b], state)),
        _ => fault(format!("read of {l1} bytes at {p1:#x} or {l2} bytes at {p2:#x} is out of bounds")),
    }
}

/// Reads a UTF-8 string (invalid UTF-8 is replaced, never a panic).
pub fn read_string(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> Res<String> {
    let bytes = read(caller, ptr, len)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Writes `bytes` at `ptr`.
pub fn write(caller: &mut Caller<'_, HostState>, ptr: u32, bytes: &[u8]) -> Res<()> {
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    match range(data.len(), ptr, bytes.len() as u32) {
        Some(r) if bytes.len() <= u32::MAX as usize => {
            data[r].copy_from_slice(bytes);
            Ok(())
        }
        _ => fault(format!("write of {} bytes at {ptr:#x} is out of bounds", bytes.len())),
    }
}

/// Writes a little-endian u32 at `ptr`.
pub fn write_u32(caller: &mut Caller<'_, HostState>, ptr: u32, v: u32) -> Res<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Writes a little-endian u64 at `ptr`.
pub fn write_u64(caller: &mut Caller<'_, HostState>, ptr: u32, v: u64) -> Res<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Allocates exactly `data.len()` bytes inside the guest (its allocator may grow memory),
/// copies `data` in, and writes `(ptr, len)` to the two out-pointers. Empty data is
/// returned as `(0, 0)` without calling the allocator.
///
/// A guest that registered an answer buffer (`wasmesh.answer_buffer`) and offers it for
/// this call — `*ret_ptr` holds the buffer's address on entry — gets an answer that fits
/// written there instead: no call back into the guest's allocator, nothing for it to free.
pub fn return_bytes(caller: &mut Caller<'_, HostState>, data: &[u8], ret_ptr: u32, ret_len: u32) -> Res<()> {
    // Check the out-pointers first, so a bad pointer does not leak a guest allocation.
    let offered = {
        let mem = memory(caller)?;
        let bytes = mem.data(&*caller);
        match (range(bytes.len(), ret_ptr, 4), range(bytes.len(), ret_len, 4)) {
            (Some(r), Some(_)) => <[u8; 4]>::try_from(&bytes[r]).map(u32::from_le_bytes).ok(),
            _ => return fault("return pointer out of bounds"),
        }
    };
    if data.is_empty() {
        write_u32(caller, ret_ptr, 0)?;
        return write_u32(caller, ret_len, 0);
    }
    let Ok(len) = u32::try_from(data.len()) else {
        return fault("value larger than 4 GiB");
    };
    if let Some((buf, cap)) = caller.data().answer_buffer {
        if offered == Some(buf) && len <= cap {
            write(caller, buf, data)?;
            return write_u32(caller, ret_len, len);
        }
    }
    let ptr = allocate(caller, len)?;
    write(caller, ptr, data)?;
    write_u32(caller, ret_ptr, ptr)?;
    write_u32(caller, ret_len, len)
}

/// Largest scratch buffer kept between calls (a rare large answer does not pin memory).
const MAX_KEPT_SCRATCH: usize = 64 * 1024;

/// Runs `fill` on the VM's reusable scratch buffer (emptied) and, when it answers
/// `Ok(true)`, returns the bytes it wrote to the guest: assembling an answer allocates
/// nothing on the host once the buffer has grown.
pub fn answer_from_scratch(
    caller: &mut Caller<'_, HostState>,
    ret_ptr: u32,
    ret_len: u32,
    fill: impl FnOnce(&mut Caller<'_, HostState>, &mut Vec<u8>) -> Res<Result<bool, Status>>,
) -> Res<Result<bool, Status>> {
    let mut out = std::mem::take(&mut caller.data_mut().scratch);
    out.clear();
    let answered = fill(caller, &mut out)?;
    if let Ok(true) = answered {
        return_bytes(caller, &out, ret_ptr, ret_len)?;
    }
    if out.capacity() <= MAX_KEPT_SCRATCH {
        caller.data_mut().scratch = out;
    }
    Ok(answered)
}

/// Calls the guest allocator (`proxy_on_memory_allocate`, else `malloc`).
pub fn allocate(caller: &mut Caller<'_, HostState>, len: u32) -> Res<u32> {
    let Some(alloc) = caller.data().allocator.clone() else {
        return fault("module exports neither proxy_on_memory_allocate nor malloc");
    };
    let ptr = alloc.call(&mut *caller, len)?;
    let mem = memory(caller)?;
    if ptr == 0 || range(mem.data_size(&*caller), ptr, len).is_none() {
        return fault(format!("allocator returned {ptr:#x} for {len} bytes"));
    }
    Ok(ptr)
}

/// Writes guest-visible data at a host-chosen place (used by WASI, which passes buffers
/// the guest already owns): checks bounds of the whole region first.
pub fn check(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> Res<()> {
    let mem = memory(caller)?;
    match range(mem.data_size(&*caller), ptr, len) {
        Some(_) => Ok(()),
        None => fault(format!("region of {len} bytes at {ptr:#x} is out of bounds")),
    }
}
