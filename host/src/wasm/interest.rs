//! Which HTTP callbacks a filter wants called (`wasmesh.http_callbacks`). A module
//! built with an SDK exports every callback whether the filter implements it or not, so
//! without this the host enters the VM for every phase and runs every response body
//! through the chain. A filter sets it for all its streams from its root context
//! (`on_vm_start`/`on_configure`) or replaces it for one stream from an HTTP context
//! (before the request/response body is due: bodies are routed after each direction's
//! headers have gone through the chain); the default is
//! every callback, as in Envoy. `on_delete` is always called (an SDK frees the context
//! there); skipping `on_done` means what an SDK's default does, "done now". A filter
//! whose root declared no callback at all gets no HTTP context: nothing would ever call it.

use super::vm::HttpCb;

/// A set of HTTP callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest(u8);

/// `on_http_request_headers`.
const REQUEST_HEADERS: u8 = 1;
/// `on_http_request_body`.
const REQUEST_BODY: u8 = 2;
/// `on_http_request_trailers`.
const REQUEST_TRAILERS: u8 = 4;
/// `on_http_response_headers`.
const RESPONSE_HEADERS: u8 = 8;
/// `on_http_response_body`.
const RESPONSE_BODY: u8 = 16;
/// `on_http_response_trailers`.
const RESPONSE_TRAILERS: u8 = 32;
/// `on_done`.
const DONE: u8 = 64;
/// `on_log`.
const LOG: u8 = 128;

impl Interest {
    /// Every callback (the default).
    pub const ALL: Interest = Interest(u8::MAX);

    /// The set in a foreign-function argument: a u32 LE bit mask (1 request headers,
    /// 2 request body, 4 request trailers, 8 response headers, 16 response body,
    /// 32 response trailers, 64 `on_done`, 128 `on_log`). `None` for another length or
    /// unknown bits.
    pub fn from_args(args: &[u8]) -> Option<Interest> {
        let mask = u32::from_le_bytes(<[u8; 4]>::try_from(args).ok()?);
        u8::try_from(mask).ok().map(Interest)
    }

    /// Whether no callback at all is to be called.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// Whether `on_done` is to be called.
    pub fn wants_done(self) -> bool {
        self.0 & DONE != 0
    }

    /// Whether `on_log` is to be called.
    pub fn wants_log(self) -> bool {
        self.0 & LOG != 0
    }

    /// Whether `cb` is to be called.
    pub fn wants(self, cb: HttpCb) -> bool {
        let bit = match cb {
            HttpCb::RequestHeaders(..) => REQUEST_HEADERS,
            HttpCb::RequestBody(..) => REQUEST_BODY,
            HttpCb::RequestTrailers(..) => REQUEST_TRAILERS,
            HttpCb::ResponseHeaders(..) => RESPONSE_HEADERS,
            HttpCb::ResponseBody(..) => RESPONSE_BODY,
            HttpCb::ResponseTrailers(..) => RESPONSE_TRAILERS,
        };
        self.0 & bit != 0
    }

    /// Whether the body (or trailers) of a direction must go through this filter.
    pub fn wants_body_or_trailers(self, response: bool) -> bool {
        let bits = if response { RESPONSE_BODY | RESPONSE_TRAILERS } else { REQUEST_BODY | REQUEST_TRAILERS };
        self.0 & bits != 0
    }

    /// Whether a callback after the headers of a direction can read that direction's
    /// head: for the request, every later callback; for the response, its body,
    /// trailers, `on_done` and `on_log`.
    pub fn reads_after_headers(self, response: bool) -> bool {
        let later = if response { RESPONSE_BODY | RESPONSE_TRAILERS | DONE | LOG } else { !REQUEST_HEADERS };
        self.0 & later != 0
    }

    /// Whether the body of a direction is to be called.
    pub fn wants_body(self, response: bool) -> bool {
        self.0 & if response { RESPONSE_BODY } else { REQUEST_BODY } != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_parse_strictly() {
        assert_eq!(Interest::from_args(&255u32.to_le_bytes()), Some(Interest::ALL));
        let log_only = Interest::from_args(&128u32.to_le_bytes()).unwrap_or(Interest::ALL);
        assert!(log_only.wants_log() && !log_only.wants_done() && !log_only.wants_body_or_trailers(true));
        let headers_only = Interest::from_args(&9u32.to_le_bytes()).unwrap_or(Interest::ALL);
        assert!(headers_only.wants(HttpCb::RequestHeaders(1, false)));
        assert!(headers_only.wants(HttpCb::ResponseHeaders(1, false)));
        assert!(!headers_only.wants(HttpCb::ResponseBody(1, false)));
        assert!(!headers_only.wants_body_or_trailers(true) && !headers_only.wants_body_or_trailers(false));
        let trailers = Interest::from_args(&32u32.to_le_bytes()).unwrap_or(Interest::ALL);
        assert!(trailers.wants_body_or_trailers(true) && !trailers.wants_body(true));
        assert!(headers_only.reads_after_headers(false), "response headers come after the request head");
        assert!(!headers_only.reads_after_headers(true));
        let request_only = Interest::from_args(&1u32.to_le_bytes()).unwrap_or(Interest::ALL);
        assert!(!request_only.reads_after_headers(false) && !request_only.reads_after_headers(true));
        assert!(log_only.reads_after_headers(false) && log_only.reads_after_headers(true));
        assert_eq!(Interest::from_args(&256u32.to_le_bytes()), None, "unknown bit");
        assert_eq!(Interest::from_args(&[1, 0]), None, "short");
    }
}
