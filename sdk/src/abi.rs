//! Direct calls of three proxy-wasm imports, for the SDK's hot paths: the proxy-wasm Rust
//! SDK builds a `Vec<&str>` and a serialized path per property call and turns header maps
//! into owned `String`s. Same imports, same wire format, fewer copies.

use std::ptr::null_mut;

use proxy_wasm::types::{MapType, Status};

#[link(wasm_import_module = "env")]
extern "C" {
    // The ABI's imports, declared with the proxy-wasm SDK's own signatures.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> Status;
}

/// Takes ownership of a buffer the host filled: `None` when it returned none.
///
/// # Safety
/// `data`/`size` must come from the host's answer to one of this module's calls, which
/// allocates through `proxy_on_memory_allocate(size)`; the proxy-wasm SDK answers that
/// with a forgotten `Vec<u8>` of capacity `size`, which this reclaims.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: see the function's contract; `size` bytes were written by the host.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// The encoded pairs of a header map (`None`: not available in this phase, or empty).
pub(crate) fn get_header_map_pairs(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a length into the two out-parameters, which
    // live on this stack frame for the call.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if status != Status::Ok || size == 0 {
        return None;
    }
    // SAFETY: the host's answer to this call.
    unsafe { owned(data, size) }
}

/// A property by its serialized path (segments joined by NUL; a dotted name is one
/// segment). `Ok(None)` when absent.
pub(crate) fn get_property(path: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: `path` is valid for reads of its length during the call; the host writes
    // a pointer and a length into the two out-parameters on this stack frame.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status {
        // SAFETY: the host's answer to this call.
        Status::Ok => Ok(unsafe { owned(data, size) }),
        Status::NotFound => Ok(None),
        other => Err(other),
    }
}

/// Sets a property by its serialized path.
pub(crate) fn set_property(path: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for reads of their lengths during the call.
    match unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) } {
        Status::Ok => Ok(()),
        other => Err(other),
    }
}
