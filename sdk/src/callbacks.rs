//! Which HTTP callbacks the host calls for this filter (`wasmesh.http_callbacks`).
//!
//! A proxy-wasm module exports every HTTP callback whether the filter implements it or
//! not, so a host has to enter the VM for every phase and run every body chunk through
//! it. Telling wasmesh what the filter implements skips those calls — and when no filter
//! of a chain reads the response body, the body passes through untouched. From a root
//! context (`on_configure`) the set holds for every stream to come; from an HTTP context
//! it replaces that stream's set, in time if done in that direction's headers callback
//! (e.g. declare headers only for all streams, and ask for the bodies from the request
//! headers of the few streams whose bodies matter: no call for the others). Leaving out [`Callbacks::DONE`] means "done at
//! once" (the SDK's default `on_done`); `on_delete` is always called. A stream that comes
//! to hold something its `on_done` releases (a counter slot, a pending call) adds `DONE`
//! to its own set then, so the other streams skip that call. The host keeps a head
//! readable after its phase only for a filter that wants a later callback. Hosts without the
//! extension (Envoy) answer `NotFound` and call everything, which is always correct:
//! ignore the error.

use std::ops::BitOr;

use proxy_wasm::types::Status;

/// A set of HTTP callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Callbacks(u32);

impl Callbacks {
    /// No callback (`on_delete` is still called).
    pub const NONE: Callbacks = Callbacks(0);
    /// `on_http_request_headers`.
    pub const REQUEST_HEADERS: Callbacks = Callbacks(1);
    /// `on_http_request_body`.
    pub const REQUEST_BODY: Callbacks = Callbacks(2);
    /// `on_http_request_trailers`.
    pub const REQUEST_TRAILERS: Callbacks = Callbacks(4);
    /// `on_http_response_headers`.
    pub const RESPONSE_HEADERS: Callbacks = Callbacks(8);
    /// `on_http_response_body`.
    pub const RESPONSE_BODY: Callbacks = Callbacks(16);
    /// `on_http_response_trailers`.
    pub const RESPONSE_TRAILERS: Callbacks = Callbacks(32);
    /// `on_done`.
    pub const DONE: Callbacks = Callbacks(64);
    /// `on_log`.
    pub const LOG: Callbacks = Callbacks(128);
    /// Request and response headers.
    pub const HEADERS: Callbacks = Callbacks(1 | 8);

    /// The set as the foreign function's argument.
    pub fn mask(self) -> u32 {
        self.0
    }
}

impl BitOr for Callbacks {
    type Output = Callbacks;

    fn bitor(self, other: Callbacks) -> Callbacks {
        Callbacks(self.0 | other.0)
    }
}

/// Asks the host to call only `set` (see the module docs for the scope).
pub fn only(set: Callbacks) -> Result<(), Status> {
    proxy_wasm::hostcalls::call_foreign_function("wasmesh.http_callbacks", Some(&set.mask().to_le_bytes())).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_the_host_bits() {
        assert_eq!(Callbacks::HEADERS, Callbacks::REQUEST_HEADERS | Callbacks::RESPONSE_HEADERS);
        let all = [
            Callbacks::REQUEST_HEADERS,
            Callbacks::REQUEST_BODY,
            Callbacks::REQUEST_TRAILERS,
            Callbacks::RESPONSE_HEADERS,
            Callbacks::RESPONSE_BODY,
            Callbacks::RESPONSE_TRAILERS,
            Callbacks::DONE,
            Callbacks::LOG,
        ]
        .into_iter()
        .fold(Callbacks(0), BitOr::bitor);
        assert_eq!(all.mask(), 255);
    }
}
