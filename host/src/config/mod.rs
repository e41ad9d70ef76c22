//! Typed configuration: the YAML file as serde structs, its defaults, and its validation.
//! Flow: `load` (parse, with path + line in every error) → `validate` (cross-references)
//! → `Generation::build`. Nothing at runtime reads `Config` again.

mod duration;
mod lines;
mod load;
mod schema;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::Millis;
pub use lines::LineIndex;
pub use load::{load_file, parse_str, ConfigError, ConfigErrors};
pub use schema::json_schema;
pub use validate::validate;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin endpoint (health, metrics, config dump). Binds to loopback by default.
    #[serde(default)]
    pub admin: Admin,
    /// Worker threads; 0 means one per available core. `--workers` overrides it.
    #[serde(default)]
    pub workers: usize,
    /// How long in-flight requests may finish after SIGTERM/SIGINT before the process exits.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Millis,
    /// Identity of this proxy, exposed to filters as the `node` property.
    #[serde(default)]
    pub node: Node,
    /// Where the proxy accepts traffic.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Where the proxy sends traffic.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Where access-log lines (from filters' `wasmesh.access_log`) go.
    #[serde(default)]
    pub access_log: AccessLog,
}

/// The access-log sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// A file to append lines to, or `stdout`; absent: the process log (target
    /// `wasmesh::access`). Read at start; a reload does not move it.
    #[serde(default)]
    pub path: Option<String>,
}

/// The admin endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Socket address of the admin HTTP server, e.g. `127.0.0.1:9901`.
    #[serde(default = "defaults::admin_address")]
    pub address: String,
}

/// This proxy's identity (Envoy's node).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Node id; defaults to `wasmesh~<hostname>`.
    #[serde(default)]
    pub id: String,
    /// Logical cluster this node belongs to (Envoy `cluster_name`).
    #[serde(default)]
    pub cluster: String,
    /// Free-form metadata (e.g. `NAMESPACE`, `WORKLOAD_NAME`, `app`, `version`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A listener: an address, its HTTP settings, and its filter chain.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Socket address to bind, e.g. `0.0.0.0:8080` or `[::1]:8080`.
    pub address: String,
    /// Which way traffic flows through this listener (Istio's `reporter`).
    #[serde(default)]
    pub direction: Direction,
    /// Downstream protocols accepted: `auto` serves HTTP/1.1 and HTTP/2 (prior knowledge
    /// on plaintext, ALPN with TLS).
    #[serde(default)]
    pub protocol: DownstreamProtocol,
    /// Cluster that receives requests no filter routed elsewhere.
    #[serde(default)]
    pub default_cluster: Option<String>,
    /// HTTP limits and timeouts.
    #[serde(default)]
    pub http: HttpSettings,
    /// TLS termination (absent: plaintext).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// The filter chain, in request order.
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// Traffic direction of a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Traffic into the local workload (Istio `reporter=destination`).
    #[default]
    Inbound,
    /// Traffic from the local workload out (Istio `reporter=source`).
    Outbound,
}

/// Downstream HTTP protocols.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DownstreamProtocol {
    /// HTTP/1.1 and HTTP/2, detected per connection.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// HTTP limits and timeouts of a listener. Defaults follow Envoy's edge advice.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Most request header bytes accepted (HTTP/1 answers 431 over it).
    #[serde(default = "defaults::max_request_headers_kb")]
    pub max_request_headers_kb: u32,
    /// Most request headers accepted (HTTP/1 answers 431 over it).
    #[serde(default = "defaults::max_headers_count")]
    pub max_headers_count: u32,
    /// Time a client has to send the whole request head (slowloris defence).
    #[serde(default = "defaults::request_headers_timeout")]
    pub request_headers_timeout: Millis,
    /// A connection with no active request is closed after this long.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Millis,
    /// Most concurrent HTTP/2 streams per connection.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// HTTP/2 initial stream window in bytes.
    #[serde(default = "defaults::initial_stream_window_size")]
    pub initial_stream_window_size: u32,
    /// HTTP/2 initial connection window in bytes.
    #[serde(default = "defaults::initial_connection_window_size")]
    pub initial_connection_window_size: u32,
    /// Most bytes of a body the proxy buffers for filters that pause on it (413/500 over it).
    #[serde(default = "defaults::max_buffered_body_bytes")]
    pub max_buffered_body_bytes: u64,
    /// Generate `x-request-id` when the request has none.
    #[serde(default = "defaults::yes")]
    pub generate_request_id: bool,
    /// Append the peer address to `x-forwarded-for` and set `x-forwarded-proto`.
    #[serde(default = "defaults::yes")]
    pub add_forwarded_headers: bool,
    /// Most connections open at once on this listener (per process).
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// PEM trust bundle for client certificates (required for `mutual`).
    #[serde(default)]
    pub client_ca: Option<String>,
    /// Client certificate policy.
    #[serde(default)]
    pub mode: TlsMode,
    /// Extra certificates, each served to clients whose SNI names one of its
    /// `server_names`; any other client gets `cert`/`key`.
    #[serde(default)]
    pub sni: Vec<SniCertificate>,
    /// ALPN protocols offered, most preferred first; empty means by the listener's
    /// protocol (`h2`, `http/1.1` for `auto`).
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Lowest TLS version accepted (`TLSv1.2` or `TLSv1.3`).
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// A certificate a TLS listener serves to clients asking for one of its names (SNI).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// Server names this certificate answers: exact (`api.example.com`) or one
    /// leading wildcard label (`*.example.com`); matched case-insensitively.
    pub server_names: Vec<String>,
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
}

/// TLS protocol versions (TLS 1.0 and 1.1 are never offered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 and later.
    #[default]
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// TLS towards a cluster's endpoints (Istio DestinationRule `tls`; Envoy
/// UpstreamTlsContext).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// `simple` verifies the upstream's certificate; `mutual` also presents `cert`/`key`.
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// PEM trust bundle the upstream's certificate chain must lead to.
    pub ca: String,
    /// PEM client certificate chain file (required for `mutual`).
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM client private key file (required for `mutual`).
    #[serde(default)]
    pub key: Option<String>,
    /// Server name sent in SNI, and verified when `subject_alt_names` is empty;
    /// default: the endpoint's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// Identities the upstream certificate must carry, one of them as a URI SAN (e.g.
    /// `spiffe://cluster.local/ns/default/sa/web`) or DNS SAN; when set, they replace the
    /// host-name check.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// ALPN protocols offered, most preferred first; empty means by the cluster's
    /// protocol (`h2` for `http2`, `http/1.1` for `http1`).
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Lowest TLS version accepted (`TLSv1.2` or `TLSv1.3`).
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// Upstream TLS modes (Istio `ClientTLSSettings.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTlsMode {
    /// Verify the upstream's certificate; present none (SIMPLE).
    #[default]
    Simple,
    /// Verify the upstream's certificate and present `cert`/`key` (MUTUAL).
    Mutual,
}

/// Client-certificate policy of a TLS listener (Istio PeerAuthentication).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Server-authenticated TLS; no client certificate asked.
    #[default]
    Simple,
    /// Client certificate required and verified against `client_ca`.
    Mutual,
    /// Plaintext and TLS on one port, detected from the first bytes.
    Permissive,
}

/// One filter of a listener's chain: a proxy-wasm plugin.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Unique name within the chain (`plugin_name`).
    pub name: String,
    /// `builtin:<name>` for a filter embedded in the binary, or a path to a `.wasm` file
    /// (relative paths are relative to the config file).
    pub module: String,
    /// Root context id handed to the module (`plugin_root_id`).
    #[serde(default)]
    pub root_id: String,
    /// VM id; plugins with the same module and vm_id share a VM and its shared data.
    #[serde(default)]
    pub vm_id: String,
    /// Plugin configuration handed to `on_configure`: a string is passed as-is, anything
    /// else as JSON.
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub config: Option<serde_yaml_ng::Value>,
    /// VM configuration handed to `on_vm_start` (same encoding as `config`).
    #[serde(default)]
    #[schemars(with = "serde_json::Value")]
    pub vm_config: Option<serde_yaml_ng::Value>,
    /// Environment variables visible to the module through WASI.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What a request sees when this filter fails (trap, deadline, crash).
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: FilterLimits,
}

/// Failure policy of a filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// The request is answered 503 (Istio's FAIL_CLOSE).
    #[default]
    Closed,
    /// The filter is skipped for that request (Istio's FAIL_OPEN).
    Open,
}

/// Sandbox limits of one filter's VMs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterLimits {
    /// Linear memory cap per VM, in MiB.
    #[serde(default = "defaults::memory_mb")]
    pub memory_mb: u32,
    /// CPU time one callback may take before it is interrupted.
    #[serde(default = "defaults::callback_deadline")]
    pub callback_deadline: Millis,
}

/// An upstream cluster: endpoints, how to balance across them, and how to reach them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique name; filters route to it by this name.
    pub name: String,
    /// Upstream HTTP protocol.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Load-balancing policy.
    #[serde(default)]
    pub lb: LbPolicy,
    /// Consistent-hash settings (used when `lb: consistent_hash`).
    #[serde(default)]
    pub hash: HashSettings,
    /// Time allowed to establish a connection to an endpoint.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Millis,
    /// Time allowed for a whole request/response exchange (0 disables it).
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: Millis,
    /// How often DNS names among the endpoints are re-resolved.
    #[serde(default = "defaults::dns_refresh")]
    pub dns_refresh: Millis,
    /// Connection pool settings (per worker).
    #[serde(default)]
    pub pool: PoolSettings,
    /// The endpoints: `ip:port` or `hostname:port`.
    pub endpoints: Vec<Endpoint>,
    /// Named subsets selected by endpoint labels (DestinationRule subsets).
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// TLS towards the endpoints (absent: plaintext).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

/// Upstream HTTP protocol of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Load-balancing policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each endpoint in turn (weighted).
    #[default]
    RoundRobin,
    /// A uniformly random endpoint (weighted).
    Random,
    /// The less loaded of two random endpoints (power of two choices).
    LeastRequest,
    /// A hash of a key the request provides picks the endpoint; few keys move when
    /// endpoints change.
    ConsistentHash,
}

/// Consistent-hash settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashSettings {
    /// `ring_hash` or `maglev`.
    #[serde(default)]
    pub algorithm: HashAlgorithm,
    /// Ring points per unit of endpoint weight (ring hash), or the lookup table size
    /// (maglev, rounded up to a prime).
    #[serde(default = "defaults::hash_table_size")]
    pub table_size: u32,
    /// Where the key comes from when no filter set `wasmesh.upstream.hash_key`:
    /// `source_ip`, or a one-entry map such as `{ header: x-user }`.
    #[serde(default, with = "serde_yaml_ng::with::singleton_map")]
    #[schemars(with = "HashKey")]
    pub key: HashKey,
    /// With `key: { cookie: name }`: the cookie the proxy sets when a request has none,
    /// so the client sticks to its endpoint from then on (Istio `httpCookie`).
    #[serde(default)]
    pub cookie: CookieSettings,
}

/// The session-affinity cookie the proxy generates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CookieSettings {
    /// Cookie `Path`.
    #[serde(default = "defaults::cookie_path")]
    pub path: String,
    /// Cookie lifetime (`Max-Age`); 0 makes a session cookie.
    #[serde(default)]
    pub ttl: Millis,
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self { path: defaults::cookie_path(), ttl: Millis(0) }
    }
}

/// Consistent-hash algorithms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// Ketama-style ring of virtual nodes.
    #[default]
    RingHash,
    /// Google's Maglev lookup table.
    Maglev,
}

/// Default source of the consistent-hash key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    /// The downstream peer's IP address.
    #[default]
    SourceIp,
    /// The value of this request header.
    Header(String),
    /// The value of this query parameter.
    QueryParameter(String),
    /// The value of this cookie.
    Cookie(String),
}

/// Connection pool settings of a cluster (per worker).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// Idle keep-alive connections kept per endpoint.
    #[serde(default = "defaults::max_idle_per_endpoint")]
    pub max_idle_per_endpoint: u32,
    /// An idle pooled connection is closed after this long.
    #[serde(default = "defaults::pool_idle_timeout")]
    pub idle_timeout: Millis,
}

/// One upstream endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `ip:port` or `hostname:port`.
    pub address: String,
    /// Labels that subsets select on, e.g. `version: v1`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Relative load-balancing weight.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// A named subset of a cluster's endpoints.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// Name filters use in `wasmesh.upstream.subset`.
    pub name: String,
    /// Endpoints carrying all these labels belong to the subset.
    pub labels: BTreeMap<String, String>,
}

// === defaults ===

impl Default for Admin {
    fn default() -> Self {
        Self { address: defaults::admin_address() }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_request_headers_kb: defaults::max_request_headers_kb(),
            max_headers_count: defaults::max_headers_count(),
            request_headers_timeout: defaults::request_headers_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_concurrent_streams: defaults::max_concurrent_streams(),
            initial_stream_window_size: defaults::initial_stream_window_size(),
            initial_connection_window_size: defaults::initial_connection_window_size(),
            max_buffered_body_bytes: defaults::max_buffered_body_bytes(),
            generate_request_id: true,
            add_forwarded_headers: true,
            max_connections: defaults::max_connections(),
        }
    }
}

impl Default for FilterLimits {
    fn default() -> Self {
        Self { memory_mb: defaults::memory_mb(), callback_deadline: defaults::callback_deadline() }
    }
}

impl Default for HashSettings {
    fn default() -> Self {
        Self {
            algorithm: HashAlgorithm::default(),
            table_size: defaults::hash_table_size(),
            key: HashKey::default(),
            cookie: CookieSettings::default(),
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_idle_per_endpoint: defaults::max_idle_per_endpoint(), idle_timeout: defaults::pool_idle_timeout() }
    }
}

/// Default values, one function each so serde and `Default` agree.
mod defaults {
    use super::Millis;

    pub fn admin_address() -> String {
        "127.0.0.1:9901".into()
    }
    pub fn drain_timeout() -> Millis {
        Millis(15_000)
    }
    pub fn max_request_headers_kb() -> u32 {
        60
    }
    pub fn max_headers_count() -> u32 {
        100
    }
    pub fn request_headers_timeout() -> Millis {
        Millis(10_000)
    }
    pub fn idle_timeout() -> Millis {
        Millis(3_600_000)
    }
    pub fn max_concurrent_streams() -> u32 {
        100
    }
    pub fn initial_stream_window_size() -> u32 {
        64 * 1024
    }
    pub fn initial_connection_window_size() -> u32 {
        1024 * 1024
    }
    pub fn max_buffered_body_bytes() -> u64 {
        1024 * 1024
    }
    pub fn max_connections() -> u32 {
        10_000
    }
    pub fn yes() -> bool {
        true
    }
    pub fn memory_mb() -> u32 {
        64
    }
    pub fn callback_deadline() -> Millis {
        Millis(100)
    }
    pub fn connect_timeout() -> Millis {
        Millis(1_000)
    }
    pub fn request_timeout() -> Millis {
        Millis(15_000)
    }
    pub fn dns_refresh() -> Millis {
        Millis(5_000)
    }
    pub fn cookie_path() -> String {
        "/".into()
    }
    pub fn hash_table_size() -> u32 {
        1024
    }
    pub fn max_idle_per_endpoint() -> u32 {
        128
    }
    pub fn pool_idle_timeout() -> Millis {
        Millis(90_000)
    }
    pub fn weight() -> u32 {
        1
    }
}
