//! The contract between the wasm host and the proxy: what the proxy tells a stream
//! (`StreamInfo`, `UpstreamInfo`), what a stream answers (`Verdict`, `LocalReply`), and
//! what the proxy provides to filters (`HostServices`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;

use crate::config::Direction;
use crate::flags::ResponseFlags;

/// Services the proxy offers to filters. Implemented by the proxy, one per worker; keeps
/// `wasm` free of `proxy`/`upstream` imports.
pub trait HostServices {
    /// Sends `req` to the cluster named `cluster` (its URI is absolute:
    /// `scheme://authority/path`). `timeout` is `None` for "no timeout".
    fn http_call(
        &self,
        cluster: &str,
        req: http::Request<Bytes>,
        timeout: Option<Duration>,
    ) -> LocalBoxFuture<'static, Result<http::Response<Bytes>, CalloutError>>;
    /// True when a cluster of that name is configured.
    fn has_cluster(&self, name: &str) -> bool;
    /// Writes one line to the access log sink (`wasmesh.access_log` foreign function).
    fn access_log(&self, line: &str);
    /// A load figure of a cluster for the `wasmesh.cluster.<name>.<stat>` properties
    /// (`active_requests`, `pending_requests`, `healthy_endpoints`); `None` if unknown.
    fn cluster_stat(&self, _cluster: &str, _stat: &str) -> Option<u64> {
        None
    }
    /// True when `grpc_call` works; otherwise filters' gRPC calls fail at dispatch
    /// (`InternalFailure`).
    fn supports_grpc(&self) -> bool {
        false
    }
    /// Sends an HTTP/2 request (a gRPC call the host framed: `POST /service/method`,
    /// `content-type: application/grpc`, length-prefixed body) to cluster `cluster` and
    /// returns the response with its trailers.
    fn grpc_call(
        &self,
        _cluster: &str,
        _req: http::Request<Bytes>,
        _timeout: Option<Duration>,
    ) -> LocalBoxFuture<'static, Result<(http::Response<Bytes>, http::HeaderMap), CalloutError>> {
        Box::pin(async { Err(CalloutError::Failed("gRPC calls are not supported".into())) })
    }
}

/// Why an `http_call` produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CalloutError {
    /// No cluster of that name.
    #[error("unknown cluster")]
    UnknownCluster,
    /// No response within the timeout.
    #[error("timed out")]
    Timeout,
    /// Connect, protocol or other failure.
    #[error("callout failed: {0}")]
    Failed(String),
}

/// What properties need to know about a stream; filled by the proxy.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The downstream connection.
    pub connection: Arc<ConnectionInfo>,
    /// Name of the listener that accepted the stream.
    pub listener: Arc<str>,
    /// Listener direction (`listener_direction` property).
    pub direction: Direction,
    /// When the request started (`request.time`).
    pub start: SystemTime,
    /// Most body bytes buffered for a pausing filter (413 for requests, 500 for responses
    /// over it). The listener's `http.max_buffered_body_bytes`.
    pub max_buffered_body_bytes: u64,
}

/// The downstream connection of a stream.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Connection id, unique per process (`connection.id`).
    pub id: u64,
    /// Peer address (`source.*`).
    pub source: SocketAddr,
    /// Local address (`destination.*`).
    pub destination: SocketAddr,
    /// TLS facts; `None` for plaintext.
    pub tls: Option<TlsInfo>,
}

/// TLS facts of a connection.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3` (`connection.tls_version`).
    pub version: String,
    /// Server name the client asked for (`connection.requested_server_name`).
    pub sni: Option<String>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// True when the client presented a verified certificate (`connection.mtls`).
    pub peer_certificate_presented: bool,
    /// URI SANs of the peer certificate (SPIFFE ids).
    pub peer_uri_sans: Vec<String>,
    /// DNS SANs of the peer certificate.
    pub peer_dns_sans: Vec<String>,
    /// Subject of the peer certificate.
    pub peer_subject: Option<String>,
    /// Hex SHA-256 of the peer certificate.
    pub peer_sha256: Option<String>,
    /// URI SANs of the local certificate.
    pub local_uri_sans: Vec<String>,
    /// DNS SANs of the local certificate.
    pub local_dns_sans: Vec<String>,
    /// Subject of the local certificate.
    pub local_subject: Option<String>,
}

/// Facts the proxy learns while serving a stream; read by `upstream.*`, `response.*`
/// and `request.*` properties.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInfo {
    /// The endpoint the request was sent to.
    pub address: Option<SocketAddr>,
    /// Local address of the upstream connection.
    pub local_address: Option<SocketAddr>,
    /// The cluster chosen.
    pub cluster: Option<Arc<str>>,
    /// Route name chosen (`route_name`).
    pub route_name: Option<Arc<str>>,
    /// Response flags so far.
    pub flags: ResponseFlags,
    /// Final response status, for `response.code` when no response head went through
    /// the filters (e.g. a local reply).
    pub response_code: Option<u16>,
    /// Response code details (`response.code_details`).
    pub code_details: Option<String>,
    /// Attempts made so far (`upstream.request_attempt_count`).
    pub attempt_count: u32,
    /// Request body bytes received.
    pub request_body_bytes: u64,
    /// Request header bytes received.
    pub request_header_bytes: u64,
    /// Response body bytes sent.
    pub response_body_bytes: u64,
    /// Response header bytes sent.
    pub response_header_bytes: u64,
    /// Time from sending the request upstream to its response headers.
    pub backend_latency: Option<Duration>,
    /// When the stream ended (for `request.duration`); `None`: now.
    pub end: Option<SystemTime>,
    /// TLS version of the upstream connection.
    pub tls_version: Option<String>,
}

/// What a headers or trailers phase decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on (the head may have been modified).
    Continue,
    /// Answer locally with this response. `flags` containing `LOCAL_RESET` (details
    /// `wasm_close_stream`) means a filter closed the stream: reset it instead of answering.
    LocalReply(LocalReply),
    /// Response headers only: a filter called `wasmesh.retry_upstream`. Earlier filters did
    /// not see this response; drop it and re-send the request after the backoff.
    Retry(std::time::Duration),
}

/// What a body phase decided about one chunk.
#[derive(Debug)]
pub enum BodyVerdict {
    /// Send these bytes on (possibly empty, possibly more than the chunk).
    Forward(Bytes),
    /// A filter buffers: send nothing now, feed the next chunk.
    Hold,
    /// Answer locally.
    LocalReply(LocalReply),
}

/// A response generated by the host or a filter.
#[derive(Debug, Clone)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Headers to add.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// Response code details (`wasm_fail_stream`, or the filter's).
    pub details: String,
    /// Flags to record.
    pub flags: ResponseFlags,
}

// === impl LocalReply ===

impl LocalReply {
    /// Envoy's reply when a filter fails closed: 503, `wasm_fail_stream`, flag `WF`.
    pub fn wasm_failure() -> LocalReply {
        LocalReply {
            status: 503,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from_static(b"wasm filter failed\n"),
            details: "wasm_fail_stream".into(),
            flags: ResponseFlags::WASM_FAILURE,
        }
    }

    /// A filter called `close_stream`: the proxy resets the stream.
    pub fn close_stream() -> LocalReply {
        LocalReply {
            status: 503,
            headers: Vec::new(),
            body: Bytes::new(),
            details: "wasm_close_stream".into(),
            flags: ResponseFlags::LOCAL_RESET,
        }
    }

    /// The body buffered for a pausing filter ran over the limit.
    pub fn buffer_overflow(status: u16) -> LocalReply {
        LocalReply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: if status == 413 {
                Bytes::from_static(b"payload too large\n")
            } else {
                Bytes::from_static(b"response too large to buffer\n")
            },
            details: if status == 413 {
                "request_payload_too_large".into()
            } else {
                "response_payload_too_large".into()
            },
            flags: ResponseFlags::DOWNSTREAM_BUFFER_LIMIT,
        }
    }
}
