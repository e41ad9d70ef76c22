//! The one place that turns a failed exchange into a downstream response: status,
//! body, response flag and Envoy-style `response_code_details`, as a table.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::{self, ProxyBody};
use crate::flags::ResponseFlags;
use crate::upstream::UpstreamError;

/// Why the proxy answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No filter routed the request and the listener has no default cluster.
    #[error("no route")]
    NoRoute,
    /// A filter (or the listener) named a cluster that does not exist.
    #[error("unknown cluster \"{0}\"")]
    UnknownCluster(String),
    /// Picking or talking to the upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream did not answer within the route timeout.
    #[error("upstream request timeout")]
    Timeout,
    /// The request could not be turned into an upstream request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The proxy is shutting down.
    #[error("proxy draining")]
    Draining,
}

/// A reply the proxy makes itself.
#[derive(Debug, Clone)]
pub struct LocalReply {
    /// Status code.
    pub status: StatusCode,
    /// Body (plain text).
    pub body: Bytes,
    /// Response flags for logs and metrics.
    pub flags: ResponseFlags,
    /// Envoy's `response_code_details`.
    pub details: std::borrow::Cow<'static, str>,
    /// Extra headers (from filters).
    pub headers: Vec<(String, String)>,
    /// Reset the stream instead of answering (a filter called `close_stream`).
    pub reset: bool,
}

// === impl ExchangeError ===

impl ExchangeError {
    /// The table: error → status, body, flag, details.
    pub fn reply(&self) -> LocalReply {
        let (status, body, flags, details): (StatusCode, &'static str, ResponseFlags, &'static str) = match self {
            ExchangeError::NoRoute => (StatusCode::NOT_FOUND, "", ResponseFlags::NO_ROUTE_FOUND, "route_not_found"),
            ExchangeError::UnknownCluster(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "", ResponseFlags::NO_ROUTE_FOUND, "cluster_not_found")
            }
            ExchangeError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream request timeout",
                ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                "upstream_response_timeout",
            ),
            ExchangeError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "bad request", ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, "bad_request")
            }
            ExchangeError::Draining => {
                (StatusCode::SERVICE_UNAVAILABLE, "proxy is draining", ResponseFlags::LOCAL_RESET, "draining")
            }
            ExchangeError::Upstream(e) => {
                let flags = e.flags();
                let (body, details) = if flags.contains(ResponseFlags::NO_HEALTHY_UPSTREAM) {
                    ("no healthy upstream", "no_healthy_upstream")
                } else if flags.contains(ResponseFlags::UPSTREAM_OVERFLOW) {
                    (
                        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                        "upstream_overflow",
                    )
                } else if flags.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE) {
                    (
                        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                        "upstream_reset_before_response_started{connection_failure}",
                    )
                } else if flags.contains(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT) {
                    ("upstream request timeout", "upstream_response_timeout")
                } else if flags.contains(ResponseFlags::NO_ROUTE_FOUND) {
                    ("", "cluster_not_found")
                } else {
                    (
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                        "upstream_reset_before_response_started{connection_termination}",
                    )
                };
                (e.status(), body, flags, details)
            }
        };
        LocalReply {
            status,
            body: Bytes::from_static(body.as_bytes()),
            flags,
            details: details.into(),
            headers: Vec::new(),
            reset: false,
        }
    }
}

// === impl LocalReply ===

impl LocalReply {
    /// From a filter's `send_local_response`.
    pub fn from_filter(reply: crate::wasm::LocalReply) -> Self {
        let reset = reply.details == "wasm_close_stream";
        LocalReply {
            reset,
            status: StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: reply.body,
            flags: reply.flags,
            details: if reply.details.is_empty() { "via_filter".into() } else { reply.details.into() },
            headers: reply.headers,
        }
    }

    /// Builds the downstream response.
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut resp = Response::new(body::full(self.body.clone()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        let filter_sets_type = self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !self.body.is_empty() && !filter_sets_type {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                h.append(k, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_maps_each_error() {
        let cases: Vec<(ExchangeError, u16, &str)> = vec![
            (ExchangeError::NoRoute, 404, "NR"),
            (ExchangeError::UnknownCluster("x".into()), 503, "NR"),
            (ExchangeError::Timeout, 504, "UT"),
            (ExchangeError::BadRequest("x".into()), 400, "DPE"),
        ];
        for (err, status, flag) in cases {
            let r = err.reply();
            assert_eq!(r.status.as_u16(), status, "{err}");
            assert_eq!(r.flags.to_string(), flag, "{err}");
        }
    }
}
