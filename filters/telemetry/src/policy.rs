//! Pure telemetry logic, no hostcalls: Istio metric labels, trace-context extraction and
//! propagation, sampling, OTLP/JSON span encoding and access-log formatting. `lib.rs`
//! gathers a [`Record`] from the host's properties and hands it to these modules.

pub mod access_log;
pub mod export;
pub mod flags;
pub mod grpc;
pub mod labels;
pub mod otlp;
pub mod peer;
pub mod rng;
pub mod time;
pub mod trace;

use std::collections::HashMap;

/// What the filter knows about one finished request (read in `on_log`). Every field is
/// optional: a local reply, a reset or a host that lacks a property leaves gaps, which
/// the formatters print as Istio does (`unknown`, `-`, `null`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// `request.time`: Unix nanoseconds.
    pub start_unix_ns: Option<u64>,
    /// `request.duration`: nanoseconds.
    pub duration_ns: Option<u64>,
    /// `:method`.
    pub method: Option<String>,
    /// `:path` (with query).
    pub path: Option<String>,
    /// `x-envoy-original-path`.
    pub original_path: Option<String>,
    /// `request.protocol` (`HTTP/1.1`, `HTTP/2`).
    pub protocol: Option<String>,
    /// `:authority`.
    pub authority: Option<String>,
    /// `content-type` of the request (gRPC detection).
    pub content_type: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-forwarded-for`.
    pub x_forwarded_for: Option<String>,
    /// `response.code`; `None` when no response was sent.
    pub response_code: Option<u16>,
    /// `response.grpc_status`.
    pub grpc_status: Option<u64>,
    /// Response flags as Envoy short codes (empty: none).
    pub response_flags: Vec<String>,
    /// `response.code_details`.
    pub code_details: Option<String>,
    /// `request.total_size`.
    pub bytes_received: Option<u64>,
    /// `response.total_size`.
    pub bytes_sent: Option<u64>,
    /// `x-envoy-upstream-service-time` response header (ms).
    pub upstream_service_time: Option<String>,
    /// `upstream.address`.
    pub upstream_host: Option<String>,
    /// `upstream.request_attempt_count`.
    pub attempt_count: Option<u64>,
    /// `upstream.local_address`.
    pub upstream_local_address: Option<String>,
    /// `wasmesh.upstream.cluster` (or `cluster_name`).
    pub upstream_cluster: Option<String>,
    /// `route_name`.
    pub route_name: Option<String>,
    /// `destination.address`.
    pub downstream_local_address: Option<String>,
    /// `source.address`.
    pub downstream_remote_address: Option<String>,
    /// `connection.requested_server_name`.
    pub requested_server_name: Option<String>,
    /// `connection.mtls`.
    pub mtls: Option<bool>,
    /// `connection.uri_san_peer_certificate` (or `source.principal`).
    pub peer_principal: Option<String>,
    /// `connection.uri_san_local_certificate`.
    pub local_principal: Option<String>,
    /// Trace id of this request (hex), when traced.
    pub trace_id: Option<String>,
    /// Request headers a custom log format asks for (lower-case name → value).
    pub request_headers: HashMap<String, String>,
    /// Response headers a custom log format asks for (lower-case name → value).
    pub response_headers: HashMap<String, String>,
}

// === impl Record ===

impl Record {
    /// Duration in whole milliseconds (Envoy's `%DURATION%`).
    pub fn duration_ms(&self) -> Option<u64> {
        self.duration_ns.map(|ns| ns / 1_000_000)
    }

    /// True for gRPC requests (`content-type: application/grpc…`).
    pub fn is_grpc(&self) -> bool {
        self.content_type.as_deref().is_some_and(|c| c.starts_with("application/grpc"))
    }

    /// Response flags in Envoy's form: `UF,URX`, or `-` when none.
    pub fn flags_text(&self) -> String {
        if self.response_flags.is_empty() {
            "-".to_string()
        } else {
            self.response_flags.join(",")
        }
    }
}
