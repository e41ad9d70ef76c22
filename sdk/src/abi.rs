//! Direct calls of the proxy-wasm imports on the SDK's hot paths: the proxy-wasm Rust
//! SDK builds a `Vec<&str>` and a serialized path per property call and turns header maps
//! into owned `String`s. Same imports, same wire format, fewer copies.
//!
//! Answers land in an answer buffer when the host supports it (`wasmesh.answer_buffer`):
//! the proxy-wasm ABI has the host call back into the guest's allocator for every answer
//! (`proxy_on_memory_allocate`), which costs more than most reads themselves. The buffer
//! is registered once per VM; a call offers it by setting the return-pointer slot to its
//! address, and an answer that fits is written there. Hosts without the extension (Envoy)
//! ignore it: the slot starts null there and answers are allocated as the ABI says.

use std::cell::RefCell;
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
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> Status;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> Status;
}

/// Bytes the answer buffer holds; longer answers are allocated as the ABI says.
const ANSWER_CAPACITY: usize = 4096;

/// Whether the host writes answers into the buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registration {
    NotYet,
    Registered,
    Unsupported,
}

struct AnswerBuffer {
    buf: Box<[u8]>,
    registration: Registration,
}

thread_local! {
    static ANSWER: RefCell<AnswerBuffer> =
        RefCell::new(AnswerBuffer { buf: vec![0; ANSWER_CAPACITY].into_boxed_slice(), registration: Registration::NotYet });
}

impl AnswerBuffer {
    /// Registers the buffer with the host on first use; true when the host takes it.
    fn ready(&mut self) -> bool {
        if self.registration == Registration::NotYet {
            let mut args = [0u8; 8];
            args[..4].copy_from_slice(&(self.buf.as_ptr() as usize as u32).to_le_bytes());
            args[4..].copy_from_slice(&(self.buf.len() as u32).to_le_bytes());
            let name = "wasmesh.answer_buffer";
            let (mut data, mut size) = (null_mut(), 0);
            // SAFETY: the name and arguments are valid for reads during the call; the
            // host writes a pointer and a length into the out-parameters on this frame
            // (an empty answer: null and 0).
            let status = unsafe {
                proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), &mut data, &mut size)
            };
            // SAFETY: the host's answer to this call (an unexpected one is freed).
            drop(unsafe { owned(data, size) });
            self.registration = if status == Status::Ok { Registration::Registered } else { Registration::Unsupported };
        }
        self.registration == Registration::Registered
    }
}

/// An answer: in the answer buffer (valid until the next read) or allocated.
pub(crate) enum Answer<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Answer<'_> {
    /// The answer's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Answer::Borrowed(b) => b,
            Answer::Owned(v) => v,
        }
    }

    /// The answer as an owned buffer (a copy when it sits in the answer buffer).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Answer::Borrowed(b) => b.to_vec(),
            Answer::Owned(v) => v,
        }
    }
}

/// Makes one call that answers bytes (`call` gets the two out-parameters), offering the
/// answer buffer when it is free (a read inside `take` falls back to an allocation), and
/// hands the status and the answer (`None`: none, or empty) to `take`.
fn answered<R>(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> Status,
    take: impl FnOnce(Status, Option<Answer<'_>>) -> R,
) -> R {
    ANSWER.with(|cell| {
        let mut lent = cell.try_borrow_mut().ok();
        let offered = lent.as_mut().map_or(null_mut(), |b| if b.ready() { b.buf.as_mut_ptr() } else { null_mut() });
        let (mut data, mut size) = (offered, 0usize);
        let status = call(&mut data, &mut size);
        if data.is_null() || size == 0 {
            // SAFETY: the host's answer to this call (a non-null empty one is freed).
            drop(unsafe { owned(data, size) });
            return take(status, None);
        }
        if data == offered {
            let answer = lent.as_ref().and_then(|b| b.buf.get(..size)).map(Answer::Borrowed);
            return take(status, answer);
        }
        // SAFETY: the host's answer to this call, allocated in the guest.
        take(status, unsafe { owned(data, size) }.map(Answer::Owned))
    })
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
    answered(
        // SAFETY: the host writes a pointer and a length into the two out-parameters.
        |data, size| unsafe { proxy_get_header_map_pairs(map, data, size) },
        |status, answer| answer.filter(|_| status == Status::Ok).map(Answer::into_vec),
    )
}

/// Runs `f` on the value of header `name` in `map` (`None`: absent or empty).
pub(crate) fn with_header_value<R>(map: MapType, name: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    answered(
        // SAFETY: `name` is valid for reads during the call; the host writes a pointer
        // and a length into the two out-parameters.
        |data, size| unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), data, size) },
        |status, answer| f(answer.as_ref().filter(|_| status == Status::Ok).map(Answer::bytes)),
    )
}

/// A property by its serialized path (segments joined by NUL; a dotted name is one
/// segment). `Ok(None)` when absent or empty (as the proxy-wasm SDK reads it).
pub(crate) fn get_property(path: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    answered(
        // SAFETY: `path` is valid for reads of its length during the call; the host
        // writes a pointer and a length into the two out-parameters.
        |data, size| unsafe { proxy_get_property(path.as_ptr(), path.len(), data, size) },
        |status, answer| match status {
            Status::Ok => Ok(answer.map(Answer::into_vec)),
            Status::NotFound => Ok(None),
            other => Err(other),
        },
    )
}

/// Calls a host foreign function; `f` gets its answer (`None`: an empty one).
pub(crate) fn call_foreign<R>(name: &str, args: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, Status> {
    answered(
        // SAFETY: `name` and `args` are valid for reads during the call; the host
        // writes a pointer and a length into the two out-parameters.
        |data, size| unsafe {
            proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), data, size)
        },
        |status, answer| match status {
            Status::Ok => Ok(f(answer.as_ref().map(Answer::bytes))),
            other => Err(other),
        },
    )
}

/// Sets a property by its serialized path.
pub(crate) fn set_property(path: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for reads of their lengths during the call.
    match unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) } {
        Status::Ok => Ok(()),
        other => Err(other),
    }
}
