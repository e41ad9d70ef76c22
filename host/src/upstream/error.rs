//! `UpstreamError`: why no upstream response came back, with its response flag, status
//! and retryability, plus the classification of hyper-util client errors.

use std::io;

use http::StatusCode;

use crate::config::UpstreamProtocol;
use crate::flags::ResponseFlags;

/// A boxed error that can cross threads (bodies, error sources).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the upstream layer could not build a cluster or deliver a response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No cluster of that name exists.
    #[error("unknown cluster \"{0}\"")]
    UnknownCluster(String),
    /// The cluster has no subset of that name.
    #[error("cluster \"{cluster}\" has no subset \"{subset}\"")]
    UnknownSubset {
        /// Cluster name.
        cluster: String,
        /// The subset asked for.
        subset: String,
    },
    /// The cluster (or the chosen subset) has no endpoint at all.
    #[error("no healthy upstream in cluster \"{cluster}\"")]
    NoHealthyUpstream {
        /// Cluster name.
        cluster: String,
    },
    /// The connection could not be established: refused, unreachable, connect timeout.
    #[error("upstream connect failure: {source}")]
    ConnectFailure {
        /// The underlying error.
        source: BoxError,
    },
    /// The connection was closed or reset before a full response head arrived.
    #[error("upstream {} before response headers: {source}", if *.remote { "reset" } else { "connection closed" })]
    Reset {
        /// True for a reset by the peer (TCP RST, HTTP/2 stream reset: `UR`); false for
        /// a plain connection termination (`UC`).
        remote: bool,
        /// The underlying error.
        source: BoxError,
    },
    /// No response head within the timeout (produced by callers that wrap a send in a
    /// timeout, or by an I/O timeout below hyper).
    #[error("upstream request timeout")]
    Timeout,
    /// A limit (circuit breaker) refused the request before it was sent.
    #[error("upstream overflow in cluster \"{cluster}\"")]
    Overflow {
        /// Cluster name.
        cluster: String,
    },
    /// The upstream answered something that is not valid HTTP.
    #[error("upstream protocol error: {source}")]
    Protocol {
        /// The underlying error.
        source: BoxError,
    },
    /// The request could not be sent as given (bad URI, unsupported version, or its
    /// body failed while streaming, e.g. the downstream went away).
    #[error("request could not be sent upstream: {source}")]
    Request {
        /// The underlying error.
        source: BoxError,
    },
    /// The cluster configuration cannot be built (bad address, weight, table size…).
    #[error("invalid cluster \"{cluster}\": {message}")]
    InvalidConfig {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        message: String,
    },
    /// An endpoint's host name did not resolve when the cluster was built.
    #[error("cluster \"{cluster}\": cannot resolve \"{address}\": {source}")]
    Resolve {
        /// Cluster name.
        cluster: String,
        /// The configured address.
        address: String,
        /// The resolver's error.
        source: io::Error,
    },
}

// === impl UpstreamError ===

impl UpstreamError {
    /// The Envoy response flag this failure is reported with.
    pub fn flags(&self) -> ResponseFlags {
        match self {
            Self::UnknownCluster(_) | Self::UnknownSubset { .. } => ResponseFlags::NO_ROUTE_FOUND,
            Self::NoHealthyUpstream { .. } => ResponseFlags::NO_HEALTHY_UPSTREAM,
            Self::ConnectFailure { .. } => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            Self::Reset { remote: true, .. } => ResponseFlags::UPSTREAM_REMOTE_RESET,
            Self::Reset { remote: false, .. } => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            Self::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            Self::Overflow { .. } => ResponseFlags::UPSTREAM_OVERFLOW,
            Self::Protocol { .. } => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            Self::Request { .. } => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            Self::InvalidConfig { .. } | Self::Resolve { .. } => ResponseFlags::NONE,
        }
    }

    /// The HTTP status a local reply for this failure carries.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownCluster(_) | Self::UnknownSubset { .. } => StatusCode::NOT_FOUND,
            Self::NoHealthyUpstream { .. } | Self::ConnectFailure { .. } | Self::Overflow { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Reset { .. } | Self::Protocol { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Request { .. } => StatusCode::BAD_REQUEST,
            Self::InvalidConfig { .. } | Self::Resolve { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// True when another attempt (possibly on another endpoint) may succeed: connect
    /// failures, resets before the response head, and timeouts. Whether a retry is
    /// *allowed* (method, budget) is the retry filter's policy, not decided here.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::ConnectFailure { .. } | Self::Reset { .. } | Self::Timeout)
    }

    /// Classifies an error of an exchange on an established connection (connecting is
    /// classified by the pool: always a connect failure).
    ///
    /// The source chain is walked and the first `hyper::Error` or `io::Error` that says
    /// something decides.
    /// An unrecognised error (e.g. an HTTP/2 error hyper does not expose) is a reset:
    /// remote (`UR`) on HTTP/2, a connection termination (`UC`) on HTTP/1.
    pub fn from_exchange(err: hyper::Error, protocol: UpstreamProtocol) -> Self {
        let kind = classify_chain(&err);
        let source: BoxError = Box::new(err);
        match kind {
            Kind::Connect => Self::ConnectFailure { source },
            Kind::Closed => Self::Reset { remote: false, source },
            Kind::RemoteReset => Self::Reset { remote: true, source },
            Kind::Timeout => Self::Timeout,
            Kind::Protocol => Self::Protocol { source },
            Kind::Request => Self::Request { source },
            Kind::Unknown => Self::Reset { remote: protocol == UpstreamProtocol::Http2, source },
        }
    }
}

/// What a source chain says about a failed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Closed,
    RemoteReset,
    Timeout,
    Protocol,
    Request,
    Unknown,
}

/// Walks `err`'s source chain (bounded) and returns the first decisive kind.
fn classify_chain(err: &(dyn std::error::Error + 'static)) -> Kind {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    for _ in 0..16 {
        let Some(e) = current else { break };
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Kind::Timeout;
            }
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() || h.is_parse_version_h2() {
                return Kind::Protocol;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                // An I/O cause below (e.g. ECONNRESET) is more precise; look for it first.
                return match io_kind_below(e) {
                    Some(k) => k,
                    None => Kind::Closed,
                };
            }
            if h.is_user() {
                return Kind::Request;
            }
        } else if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(k) = io_kind(io) {
                return k;
            }
        }
        current = e.source();
    }
    Kind::Unknown
}

/// The kind of the first decisive `io::Error` strictly below `err`.
fn io_kind_below(err: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    let mut current = err.source();
    for _ in 0..16 {
        let e = current?;
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(k) = io_kind(io) {
                return Some(k);
            }
        }
        current = e.source();
    }
    None
}

fn io_kind(io: &io::Error) -> Option<Kind> {
    match io.kind() {
        io::ErrorKind::ConnectionRefused => Some(Kind::Connect),
        io::ErrorKind::ConnectionReset => Some(Kind::RemoteReset),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            Some(Kind::Closed)
        }
        io::ErrorKind::TimedOut => Some(Kind::Timeout),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(msg: &str) -> BoxError {
        msg.into()
    }

    #[test]
    fn flags_status_retryable_table() {
        let cases: Vec<(UpstreamError, &str, u16, bool)> = vec![
            (UpstreamError::UnknownCluster("x".into()), "NR", 404, false),
            (UpstreamError::UnknownSubset { cluster: "c".into(), subset: "s".into() }, "NR", 404, false),
            (UpstreamError::NoHealthyUpstream { cluster: "c".into() }, "UH", 503, false),
            (UpstreamError::ConnectFailure { source: boxed("refused") }, "UF", 503, true),
            (UpstreamError::Reset { remote: false, source: boxed("eof") }, "UC", 502, true),
            (UpstreamError::Reset { remote: true, source: boxed("rst") }, "UR", 502, true),
            (UpstreamError::Timeout, "UT", 504, true),
            (UpstreamError::Overflow { cluster: "c".into() }, "UO", 503, false),
            (UpstreamError::Protocol { source: boxed("garbage") }, "UPE", 502, false),
        ];
        for (err, flag, status, retry) in cases {
            assert_eq!(err.flags().to_string(), flag, "{err}");
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.retryable(), retry, "{err}");
        }
    }

    #[test]
    fn io_chain_kinds() {
        let e = io::Error::new(io::ErrorKind::ConnectionReset, "rst");
        assert_eq!(classify_chain(&e), Kind::RemoteReset);
        let e = io::Error::new(io::ErrorKind::TimedOut, "slow");
        assert_eq!(classify_chain(&e), Kind::Timeout);
        let e = io::Error::other("other");
        assert_eq!(classify_chain(&e), Kind::Unknown);
    }
}
