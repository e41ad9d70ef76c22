//! Envoy response flags (`UF`, `UT`, `NR`, …): why a request ended the way it did.

use std::fmt;

macro_rules! flags {
    ($( $(#[$doc:meta])* $name:ident = $bit:expr, $code:literal; )*) => {
        /// A set of Envoy response flags, printed as Envoy's comma-separated short codes.
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct ResponseFlags(u32);

        impl ResponseFlags {
            $( $(#[$doc])* pub const $name: ResponseFlags = ResponseFlags(1 << $bit); )*

            /// Every flag with its Envoy short code, in Envoy's print order.
            pub const ALL: &'static [(ResponseFlags, &'static str)] = &[ $( (Self::$name, $code), )* ];
        }
    };
}

flags! {
    /// Local reply because no healthy upstream endpoint was available.
    NO_HEALTHY_UPSTREAM = 0, "UH";
    /// Upstream connection failure.
    UPSTREAM_CONNECTION_FAILURE = 1, "UF";
    /// Upstream overflow (circuit breaking).
    UPSTREAM_OVERFLOW = 2, "UO";
    /// No route / no cluster configured for the request.
    NO_ROUTE_FOUND = 3, "NR";
    /// The upstream did not answer within the timeout.
    UPSTREAM_REQUEST_TIMEOUT = 4, "UT";
    /// Local reset of the downstream stream.
    LOCAL_RESET = 5, "LR";
    /// Upstream reset the stream.
    UPSTREAM_REMOTE_RESET = 6, "UR";
    /// Upstream connection terminated before the response.
    UPSTREAM_CONNECTION_TERMINATION = 7, "UC";
    /// Request delayed by fault injection.
    DELAY_INJECTED = 8, "DI";
    /// Request aborted by fault injection.
    FAULT_INJECTED = 9, "FI";
    /// Retries exhausted.
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 10, "URX";
    /// Request denied by an external authorization service.
    UNAUTHORIZED_EXTERNAL_SERVICE = 11, "UAEX";
    /// Denied by the RBAC policy.
    UNAUTHORIZED_RBAC = 12, "RBAC";
    /// Downstream connection terminated mid-request.
    DOWNSTREAM_CONNECTION_TERMINATION = 13, "DC";
    /// Downstream request header/body timeout or protocol error.
    DOWNSTREAM_PROTOCOL_ERROR = 14, "DPE";
    /// Upstream protocol error.
    UPSTREAM_PROTOCOL_ERROR = 15, "UPE";
    /// Stream idle timeout.
    STREAM_IDLE_TIMEOUT = 16, "SI";
    /// The endpoint was ejected by outlier detection.
    UPSTREAM_OVERFLOW_EJECTED = 17, "UE";
    /// Downstream stream ran over the buffer limit.
    DOWNSTREAM_BUFFER_LIMIT = 18, "DBL";
    /// A Wasm filter failed and its failure policy answered.
    WASM_FAILURE = 19, "WF";
}

// === impl ResponseFlags ===

impl ResponseFlags {
    /// No flag set.
    pub const NONE: ResponseFlags = ResponseFlags(0);

    /// True when no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set here.
    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0 && !other.is_empty()
    }

    /// Adds the flags of `other`.
    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// The raw bits (stable within one process only).
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Parses one Envoy short code such as `UF`.
    pub fn from_code(code: &str) -> Option<ResponseFlags> {
        Self::ALL.iter().find(|(_, c)| *c == code).map(|(f, _)| *f)
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

impl fmt::Display for ResponseFlags {
    /// Envoy's form: codes joined by `,`, or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, code) in Self::ALL {
            if self.contains(*flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(code)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_envoy_codes() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        let f = ResponseFlags::UPSTREAM_CONNECTION_FAILURE | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
        assert_eq!(f.to_string(), "UF,URX");
        assert_eq!(ResponseFlags::from_code("UT"), Some(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT));
        assert_eq!(ResponseFlags::from_code("XX"), None);
    }
}
