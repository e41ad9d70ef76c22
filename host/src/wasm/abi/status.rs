//! The proxy-wasm status codes, and which of them the official Rust SDK tolerates per
//! hostcall. Returning a status outside a hostcall's row makes the SDK panic (= trap), so
//! every hostcall picks its answers from its row below (reference §1.7).
//!
//! | hostcall | statuses the Rust SDK accepts |
//! |---|---|
//! | log, get_log_level, get_current_time, set_tick_period | Ok |
//! | get_buffer_bytes | Ok, NotFound |
//! | set_buffer_bytes | Ok |
//! | get/set_header_map_pairs, add/replace/remove_header_map_value | Ok |
//! | get_header_map_value | Ok, NotFound |
//! | get_property | Ok, NotFound, SerializationFailure, InternalFailure |
//! | set_property | Ok |
//! | get_shared_data | Ok, NotFound |
//! | set_shared_data | Ok, CasMismatch |
//! | register_shared_queue | Ok |
//! | resolve_shared_queue, enqueue_shared_queue | Ok, NotFound |
//! | dequeue_shared_queue | Ok, Empty, NotFound |
//! | continue_stream, close_stream, send_local_response, done, get_status | Ok |
//! | http_call | Ok, BadArgument, InternalFailure |
//! | grpc_call, grpc_stream | Ok, ParseFailure, InternalFailure |
//! | grpc_send | Ok, BadArgument, NotFound |
//! | grpc_cancel, grpc_close | Ok, NotFound |
//! | set_effective_context | Ok, BadArgument |
//! | call_foreign_function | Ok, NotFound, BadArgument, SerializationFailure, InternalFailure |
//! | define_metric | Ok |
//! | get_metric, increment_metric | Ok, NotFound, BadArgument |
//! | record_metric | Ok, NotFound |
//!
//! Hostcalls the SDK does not import (`get_buffer_status`, `get_header_map_size`) follow
//! the spec. A bad guest pointer is not a status: it traps (STYLE habit 6).

/// `proxy_status_t` (ABI v0.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(dead_code)] // the full spec table, some values unused by this host
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key, id or buffer does not exist (now).
    NotFound = 1,
    /// An argument is invalid (unknown type, missing field, unknown cluster…).
    BadArgument = 2,
    /// The value cannot be encoded.
    SerializationFailure = 3,
    /// The input cannot be parsed.
    ParseFailure = 4,
    /// A guest pointer is out of bounds (spec value; this host traps instead).
    InvalidMemoryAccess = 6,
    /// Nothing to dequeue.
    Empty = 7,
    /// The compare-and-swap value does not match.
    CasMismatch = 8,
    /// The host failed to act.
    InternalFailure = 10,
    /// Not implemented by this host.
    Unimplemented = 12,
}

// === impl Status ===

impl Status {
    /// The raw value returned to the guest.
    pub fn raw(self) -> u32 {
        self as u32
    }
}

/// WASI preview1 errno values this host returns.
#[allow(dead_code)]
pub mod errno {
    /// Success.
    pub const SUCCESS: u32 = 0;
    /// Bad file descriptor.
    pub const BADF: u32 = 8;
    /// Bad address (only used when a trap is not appropriate).
    pub const FAULT: u32 = 21;
    /// Invalid argument.
    pub const INVAL: u32 = 28;
    /// Not supported.
    pub const NOTSUP: u32 = 58;
}
