//! Write wasmesh filters: the official `proxy-wasm` SDK, plus typed plugin config, safe
//! wrappers for wasmesh's host extensions (routing, retries, ejection, access log), and
//! labelled metrics. Name the callbacks your filter implements with
//! [`callbacks::only`] in `on_configure`: wasmesh then skips the others, and passes
//! bodies no filter reads straight through.
//!
//! A filter written only against `proxy_wasm` runs on wasmesh and on Envoy alike; the
//! [`upstream`], [`route`] and [`ext`] helpers steer what only wasmesh offers.
//!
//! # Example
//!
//! ```no_run
//! use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
//! use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
//! use wasmesh_sdk::callbacks::{self, Callbacks};
//! use wasmesh_sdk::{config, metrics::Counter, upstream};
//!
//! #[derive(serde::Deserialize, Default, Clone)]
//! struct Config { canary_header: String }
//!
//! struct Root { config: Config, hits: Option<Counter> }
//! impl Context for Root {}
//! impl RootContext for Root {
//!     fn on_configure(&mut self, _size: usize) -> bool {
//!         // Only request headers: no other callback is entered, bodies pass untouched.
//!         let _ = callbacks::only(Callbacks::REQUEST_HEADERS);
//!         match config::from_plugin_configuration::<Config>() {
//!             Ok(c) => { self.config = c; true }
//!             Err(e) => { wasmesh_sdk::proxy_wasm::hostcalls::log(LogLevel::Error, &e.to_string()).ok(); false }
//!         }
//!     }
//!     fn get_type(&self) -> Option<ContextType> { Some(ContextType::HttpContext) }
//!     fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
//!         Some(Box::new(Canary { header: self.config.canary_header.clone() }))
//!     }
//! }
//! struct Canary { header: String }
//! impl Context for Canary {}
//! impl HttpContext for Canary {
//!     fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
//!         if self.get_http_request_header(&self.header).is_some() {
//!             let _ = upstream::set_subset("v2");
//!         }
//!         Action::Continue
//!     }
//! }
//! ```

pub use proxy_wasm;

mod abi;
pub mod audit;
pub mod callbacks;
pub mod headers;

use proxy_wasm::types::Status;

/// Typed plugin configuration.
pub mod config {
    use serde::de::DeserializeOwned;

    /// Why a plugin configuration was rejected.
    #[derive(Debug)]
    pub enum ConfigError {
        /// The host returned no configuration bytes.
        Missing,
        /// The bytes are not the JSON the filter expects.
        Invalid(String),
    }

    impl std::fmt::Display for ConfigError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                ConfigError::Missing => f.write_str("plugin configuration is missing"),
                ConfigError::Invalid(e) => write!(f, "invalid plugin configuration: {e}"),
            }
        }
    }

    impl std::error::Error for ConfigError {}

    /// Parses configuration bytes (wasmesh hands maps and lists over as JSON).
    pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Parses a protobuf-JSON / Istio duration (`"25ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`,
    /// `"0.025s"`, `"100us"`) into whole milliseconds (rounded up, so `"100us"` is 1 ms).
    /// The error says what was expected.
    pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!("duration {s:?} is not a number followed by a unit"));
        }
        let nanos_per_unit: f64 = match unit {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            "" => return Err(format!("duration {s:?} has no unit (use e.g. \"25ms\", \"2s\", \"1m\")")),
            _ => return Err(format!("duration {s:?} has unknown unit {unit:?} (expected h, m, s, ms, us or ns)")),
        };
        let value: f64 = num.parse().map_err(|_| format!("duration {s:?} is not a number followed by a unit"))?;
        let ms = (value * nanos_per_unit / 1e6).ceil();
        if !ms.is_finite() || ms > 1e15 {
            return Err(format!("duration {s:?} is too large"));
        }
        // The value is finite, non-negative (no sign accepted) and below 1e15: exact in u64.
        Ok(ms as u64)
    }

    /// Like [`parse_duration_ms`], but 0 is refused with "must be at least 1ms" (for
    /// timeouts and intervals, where 0 would mean "never").
    pub fn parse_positive_duration_ms(s: &str) -> Result<u64, String> {
        match parse_duration_ms(s)? {
            0 => Err("must be at least 1ms".to_string()),
            ms => Ok(ms),
        }
    }

    /// A deserialization error at a field path (`routes[1].attempts`; `.` is the top
    /// level). Displays as `path: message`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FieldError {
        /// Where in the document the error is (serde_path_to_error's notation).
        pub path: String,
        /// What is wrong (serde_json's message).
        pub message: String,
    }

    impl std::fmt::Display for FieldError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.message)
        }
    }

    impl std::error::Error for FieldError {}

    /// Deserializes JSON configuration bytes, naming the failing field's path on an error.
    /// Empty or all-whitespace bytes give `T::default()`.
    pub fn parse_with_path<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, FieldError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de)
            .map_err(|e| FieldError { path: e.path().to_string(), message: e.into_inner().to_string() })
    }

    /// The `on_configure` glue: reads the plugin configuration (no bytes when there is
    /// none), hands it to `parse`, and on an error logs `"{filter}: invalid configuration:
    /// {e}"` at error level and gives `None` (then return `false`: the host refuses it).
    pub fn configure<T, E: std::fmt::Display>(filter: &str, parse: impl FnOnce(&[u8]) -> Result<T, E>) -> Option<T> {
        let bytes =
            proxy_wasm::hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX);
        match configure_bytes(filter, bytes, parse) {
            Ok(c) => Some(c),
            Err(msg) => {
                proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Error, &msg).ok();
                None
            }
        }
    }

    /// [`configure`] without the hostcalls: the parsed config, or the line to log.
    pub fn configure_bytes<T, E: std::fmt::Display>(
        filter: &str,
        bytes: Result<Option<Vec<u8>>, proxy_wasm::types::Status>,
        parse: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<T, String> {
        let bytes = bytes.map_err(|s| format!("{filter}: cannot read the plugin configuration ({s:?})"))?;
        parse(bytes.as_deref().unwrap_or_default()).map_err(|e| format!("{filter}: invalid configuration: {e}"))
    }

    /// Reads and parses the plugin configuration inside `on_configure`. An empty
    /// configuration parses as `T::default()`.
    pub fn from_plugin_configuration<T: DeserializeOwned + Default>() -> Result<T, ConfigError> {
        match proxy_wasm::hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) if !bytes.is_empty() => parse(&bytes),
            Ok(_) => Ok(T::default()),
            Err(_) => Err(ConfigError::Missing),
        }
    }
}

/// A small, fast PRNG (SplitMix64) for jitter, sampling and weighted choices; seed it
/// once per VM (e.g. from the clock). Not for anything secret.
pub mod rng {
    /// SplitMix64 state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SplitMix64(u64);

    impl SplitMix64 {
        /// A generator starting from `seed` (any seed works, 0 included).
        pub fn new(seed: u64) -> Self {
            SplitMix64(seed)
        }

        /// The next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn matches_the_reference_splitmix64() {
            // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
            let mut r = super::SplitMix64::new(0);
            assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
            assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
            assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
        }
    }
}

/// Milliseconds since the Unix epoch from the host clock (0 if the host gives no time).
pub fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 UTC (`2026-11-24T14:25:24.123Z`) for milliseconds since the epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

/// Property names of the wasmesh host extensions.
pub mod props {
    /// Cluster the request goes to.
    pub const UPSTREAM_CLUSTER: &str = "wasmesh.upstream.cluster";
    /// Subset within the cluster.
    pub const UPSTREAM_SUBSET: &str = "wasmesh.upstream.subset";
    /// Consistent-hash key.
    pub const UPSTREAM_HASH_KEY: &str = "wasmesh.upstream.hash_key";
    /// Route name (for logs and metrics).
    pub const ROUTE_NAME: &str = "wasmesh.route.name";
    /// Route timeout in milliseconds.
    pub const ROUTE_TIMEOUT_MS: &str = "wasmesh.route.timeout_ms";
    /// Per-try timeout in milliseconds.
    pub const PER_TRY_TIMEOUT_MS: &str = "wasmesh.upstream.per_try_timeout_ms";
    /// Bytes of request body to keep for a retry.
    pub const BUFFER_FOR_RETRY: &str = "wasmesh.request.buffer_for_retry";
    /// Write-only: adds one Envoy response flag (`UO`, `FI`, `URX`…) to this request.
    pub const RESPONSE_FLAG: &str = "wasmesh.response.flag";
    /// Read-only: the response flags so far, Envoy short codes joined by `,`.
    pub const RESPONSE_FLAGS: &str = "wasmesh.response.flags";
    /// Read-only: attempts so far (1 for the first), 8-byte LE u64.
    pub const REQUEST_ATTEMPT_COUNT: &str = "upstream.request_attempt_count";
    /// Read-only: `ip:port` of the endpoint that served this attempt.
    pub const UPSTREAM_ADDRESS: &str = "upstream.address";
    /// Set by the `authn` filter for a verified JWT: `<iss>/<sub>` (Istio `request.auth.principal`).
    pub const REQUEST_AUTH_PRINCIPAL: &str = "request.auth.principal";
    /// Set by `authn`: the verified JWT payload as JSON (Istio `request.auth.claims`).
    pub const REQUEST_AUTH_CLAIMS: &str = "request.auth.claims";
    /// Set by `authn`: the verified JWT's `aud` values joined by `,` (Istio `request.auth.audiences`).
    pub const REQUEST_AUTH_AUDIENCES: &str = "request.auth.audiences";
    /// Set by `authn`: the verified JWT's `azp` (Istio `request.auth.presenter`).
    pub const REQUEST_AUTH_PRESENTER: &str = "request.auth.presenter";

    /// Set by the `circuit-breaker` filter, read by `retry`: the cluster's `maxRetries`
    /// (Envoy `max_retries`, concurrent retries to the cluster), decimal ASCII.
    pub const CIRCUIT_BREAKER_MAX_RETRIES: &str = "circuit_breaker.max_retries";

    /// The read-only per-cluster load property `wasmesh.cluster.<cluster>.<stat>`
    /// (`stat` is `active_requests`, `healthy_endpoints` or `endpoints`).
    pub fn cluster_stat(cluster: &str, stat: &str) -> String {
        // Read per request by the circuit breaker: `format!`'s machinery costs ~1.8k Wasm
        // instructions for this, `concat` one allocation.
        ["wasmesh.cluster.", cluster, ".", stat].concat()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn cluster_stat_names_the_cluster_and_the_stat() {
            assert_eq!(super::cluster_stat("reviews", "active_requests"), "wasmesh.cluster.reviews.active_requests");
        }
    }
}

/// Sets a property (a dotted name, e.g. [`props::UPSTREAM_CLUSTER`]).
pub fn set_property(name: &str, value: &[u8]) -> Result<(), Status> {
    // One segment: the serialized path is the name itself.
    abi::set_property(name.as_bytes(), value)
}

/// Bytes from the host as text: kept as they are when valid UTF-8 (no copy), else with
/// replacement characters.
pub fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Reads a property by dotted name.
pub fn get_property(name: &str) -> Result<Option<Vec<u8>>, Status> {
    abi::get_property(name.as_bytes())
}

/// Reads several properties by dotted name in one hostcall (the host extension
/// `wasmesh.get_properties`), in order; `None` for an absent one. On a host without the
/// extension, one `get_property` each (Envoy-style segments for the standard roots).
pub fn get_properties(names: &[&str]) -> PropertyValues {
    read_properties(&batch::encode(names), names)
}

/// A set of property names read together often (every request): encoded once, and on
/// wasmesh defined once (`wasmesh.define_properties`), so the host splits the paths once
/// and each read names only the set's id.
#[derive(Debug, Clone)]
pub struct PropertyBatch {
    names: Vec<&'static str>,
    encoded: Vec<u8>,
    /// The host's id for the set: `None` before the first read, `Some(None)` when the
    /// host has no sets (the names are sent each time).
    id: std::cell::Cell<Option<Option<u32>>>,
}

impl PropertyBatch {
    /// The batch of `names`, in order.
    pub fn new(names: &[&'static str]) -> Self {
        PropertyBatch { names: names.to_vec(), encoded: batch::encode(names), id: std::cell::Cell::new(None) }
    }

    /// Reads the batch, as [`get_properties`] does.
    pub fn read(&self) -> PropertyValues {
        let id = match self.id.get() {
            Some(id) => id,
            None => {
                let defined = abi::call_foreign("wasmesh.define_properties", &self.encoded, |answer| {
                    answer.and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes)
                });
                let id = defined.ok().flatten();
                self.id.set(Some(id));
                id
            }
        };
        if let Some(id) = id {
            let by_id = abi::call_foreign("wasmesh.get_properties_by_id", &id.to_le_bytes(), |answer| {
                answer.map(|b| batch::decode(b.to_vec(), self.names.len()))
            });
            if let Ok(values) = by_id {
                return values.unwrap_or_else(|| batch::decode(Vec::new(), self.names.len()));
            }
        }
        read_properties(&self.encoded, &self.names)
    }
}

fn read_properties(encoded: &[u8], names: &[&str]) -> PropertyValues {
    match abi::call_foreign("wasmesh.get_properties", encoded, |answer| answer.map(<[u8]>::to_vec)) {
        Ok(Some(answer)) => batch::decode(answer, names.len()),
        Ok(None) if names.is_empty() => PropertyValues::default(),
        _ => PropertyValues::from_values(
            names.iter().map(|n| proxy_wasm::hostcalls::get_property(batch::segments(n)).ok().flatten()),
        ),
    }
}

/// The values of one [`get_properties`] read, in order, kept in one buffer (no
/// allocation per value).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PropertyValues {
    buf: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
}

impl PropertyValues {
    /// The `i`th value; `None` when absent (or `i` is out of range).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let (start, end) = (*self.spans.get(i)?)?;
        self.buf.get(start..end)
    }

    /// How many values (present or not) the read asked for.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when no value was asked for.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Values read one by one, gathered into one buffer.
    fn from_values(values: impl Iterator<Item = Option<Vec<u8>>>) -> Self {
        let mut out = PropertyValues::default();
        for v in values {
            let span = v.map(|v| {
                let start = out.buf.len();
                out.buf.extend_from_slice(&v);
                (start, out.buf.len())
            });
            out.spans.push(span);
        }
        out
    }
}

/// The wire format of `wasmesh.get_properties`.
pub mod batch {
    use super::PropertyValues;

    /// Marks an absent property in an answer.
    pub const ABSENT: u32 = u32::MAX;

    /// The request: `[u32 LE length][name]` per name.
    pub fn encode(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 4).sum());
        for n in names {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(n.as_bytes());
        }
        out
    }

    /// The answer: `[u32 LE length][value]` or [`ABSENT`] per name; `n` values always
    /// (missing or truncated entries are `None`). The values stay in `answer`.
    pub fn decode(answer: Vec<u8>, n: usize) -> PropertyValues {
        let mut spans = Vec::with_capacity(n);
        let mut at = 0;
        while spans.len() < n {
            let Some(len) = answer.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else { break };
            let len = u32::from_le_bytes(len);
            at += 4;
            if len == ABSENT {
                spans.push(None);
                continue;
            }
            let end = at + len as usize;
            if end > answer.len() {
                break;
            }
            spans.push(Some((at, end)));
            at = end;
        }
        spans.resize(n, None);
        PropertyValues { buf: answer, spans }
    }

    /// A dotted name as proxy-wasm path segments: `request.headers.x-a.b` →
    /// `[request, headers, x-a.b]` for Envoy's roots; anything else is one segment.
    pub fn segments(name: &str) -> Vec<&str> {
        let root = name.split('.').next().unwrap_or_default();
        match root {
            "request" | "response" | "source" | "destination" | "connection" | "upstream" | "node" | "xds" => {
                name.splitn(3, '.').collect()
            }
            _ => vec![name],
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn decode_reads_values_and_absent_markers_in_order() {
            let mut answer = Vec::new();
            answer.extend_from_slice(&3u32.to_le_bytes());
            answer.extend_from_slice(b"abc");
            answer.extend_from_slice(&ABSENT.to_le_bytes());
            answer.extend_from_slice(&0u32.to_le_bytes());
            let got = decode(answer, 3);
            assert_eq!(got.len(), 3);
            assert_eq!(
                (got.get(0), got.get(1), got.get(2), got.get(3)),
                (Some(&b"abc"[..]), None, Some(&b""[..]), None)
            );
        }

        #[test]
        fn decode_of_a_short_or_truncated_answer_still_gives_n_values() {
            let mut answer = Vec::new();
            answer.extend_from_slice(&10u32.to_le_bytes());
            answer.extend_from_slice(b"abc");
            let got = decode(answer, 2);
            assert_eq!((got.len(), got.get(0), got.get(1)), (2, None, None));
            let empty = decode(Vec::new(), 1);
            assert_eq!((empty.len(), empty.get(0)), (1, None));
        }

        #[test]
        fn values_read_one_by_one_keep_their_order_and_gaps() {
            let got = PropertyValues::from_values(
                [Some(b"ab".to_vec()), None, Some(Vec::new()), Some(b"c".to_vec())].into_iter(),
            );
            assert_eq!(got.len(), 4);
            assert_eq!(
                [got.get(0), got.get(1), got.get(2), got.get(3)],
                [Some(&b"ab"[..]), None, Some(&b""[..]), Some(&b"c"[..])]
            );
        }

        #[test]
        fn encode_prefixes_each_name_with_its_length() {
            let e = encode(&["ab", ""]);
            assert_eq!(e, [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        }

        #[test]
        fn segments_split_envoy_roots_only() {
            assert_eq!(segments("request.headers.x-a.b"), ["request", "headers", "x-a.b"]);
            assert_eq!(segments("response.code"), ["response", "code"]);
            assert_eq!(segments("wasmesh.cluster.a.b"), ["wasmesh.cluster.a.b"]);
            assert_eq!(segments("listener_direction"), ["listener_direction"]);
        }
    }
}

/// Steering the upstream choice (call in the request-headers phase).
pub mod upstream {
    use super::{props, set_property, Status};

    /// Sends the request to cluster `name`.
    pub fn set_cluster(name: &str) -> Result<(), Status> {
        set_property(props::UPSTREAM_CLUSTER, name.as_bytes())
    }

    /// Restricts the choice to subset `name` of the cluster.
    pub fn set_subset(name: &str) -> Result<(), Status> {
        set_property(props::UPSTREAM_SUBSET, name.as_bytes())
    }

    /// Gives the consistent-hash key (sticky sessions).
    pub fn set_hash_key(key: &[u8]) -> Result<(), Status> {
        set_property(props::UPSTREAM_HASH_KEY, key)
    }
}

/// Route-level settings a filter may override.
pub mod route {
    use super::{props, set_property, Status};

    /// Names the route (shows in logs and metrics).
    pub fn set_name(name: &str) -> Result<(), Status> {
        set_property(props::ROUTE_NAME, name.as_bytes())
    }

    /// Overrides the route timeout.
    pub fn set_timeout_ms(ms: u64) -> Result<(), Status> {
        set_property(props::ROUTE_TIMEOUT_MS, ms.to_string().as_bytes())
    }
}

/// wasmesh's foreign functions.
pub mod ext {
    use super::Status;

    /// Asks the host to re-send the request (response-headers phase), after `backoff_ms`.
    pub fn retry_upstream(backoff_ms: u32) -> Result<(), Status> {
        proxy_wasm::hostcalls::call_foreign_function("wasmesh.retry_upstream", Some(&backoff_ms.to_le_bytes()))
            .map(|_| ())
    }

    /// Ejects the endpoint that served this request for `duration_ms`.
    pub fn eject_endpoint(duration_ms: u32) -> Result<(), Status> {
        proxy_wasm::hostcalls::call_foreign_function("wasmesh.eject_endpoint", Some(&duration_ms.to_le_bytes()))
            .map(|_| ())
    }

    /// Writes one line to the host's access-log sink.
    pub fn access_log(line: &str) -> Result<(), Status> {
        proxy_wasm::hostcalls::call_foreign_function("wasmesh.access_log", Some(line.as_bytes())).map(|_| ())
    }

    /// Hands the host connection-pool limits by cluster, as JSON
    /// (`{"<cluster>": {"max_requests": N, "max_pending_requests": N, "max_connections":
    /// N}}`, each field optional), from `on_configure`. The host refuses (503, flag `UO`)
    /// a request of this filter's chain that would overflow them, before sending it,
    /// without calling the filter. `NotFound` from a host without the extension.
    pub fn pool_limits(json: &[u8]) -> Result<(), Status> {
        proxy_wasm::hostcalls::call_foreign_function("wasmesh.pool_limits", Some(json)).map(|_| ())
    }

    /// Defines request metrics the host records at the end of each stream that uses
    /// them, from a JSON template (metric names, and labels each a literal or a fact of
    /// the request: see docs/host-extensions.md); its id for [`use_request_metrics`].
    /// `NotFound` from a host without the extension, `BadArgument` for a malformed
    /// template (the host logs why).
    pub fn define_request_metrics(json: &[u8]) -> Result<u32, Status> {
        let answer = proxy_wasm::hostcalls::call_foreign_function("wasmesh.define_request_metrics", Some(json))?;
        answer
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_le_bytes)
            .ok_or(Status::SerializationFailure)
    }

    /// Records template `id` for every stream of this filter from now on (root context)
    /// or for this stream instead of the root's (HTTP context).
    pub fn use_request_metrics(id: u32) -> Result<(), Status> {
        proxy_wasm::hostcalls::call_foreign_function("wasmesh.request_metrics", Some(&id.to_le_bytes())).map(|_| ())
    }

    /// This stream's gRPC message counts for its request metrics (from `on_log`).
    pub fn request_messages(request: u64, response: u64) -> Result<(), Status> {
        let mut args = [0u8; 16];
        args[..8].copy_from_slice(&request.to_le_bytes());
        args[8..].copy_from_slice(&response.to_le_bytes());
        proxy_wasm::hostcalls::call_foreign_function("wasmesh.request_messages", Some(&args)).map(|_| ())
    }
}

/// This stream's wasmesh extras: pausing, response flags, typed property reads.
pub mod stream {
    use super::{get_property, props, set_property, Status};

    /// Resumes this stream after `ms` (return `Action::Pause` from the same callback;
    /// request- or response-headers phase). The worker is never blocked.
    pub fn resume_after(ms: u32) -> Result<(), Status> {
        proxy_wasm::hostcalls::call_foreign_function("wasmesh.resume_after", Some(&ms.to_le_bytes())).map(|_| ())
    }

    /// Adds the Envoy response flag `flag` (`UO`, `FI`, `DI`, `URX`…) to this request.
    pub fn add_response_flag(flag: &str) -> Result<(), Status> {
        set_property(props::RESPONSE_FLAG, flag.as_bytes())
    }

    /// [`add_response_flag`], logging a failure at warn level as `"{filter}: could not add
    /// response flag {flag} ({status:?})"` (a flag is best effort: the request goes on).
    pub fn add_response_flag_or_warn(filter: &str, flag: &str) {
        if let Err(s) = add_response_flag(flag) {
            proxy_wasm::hostcalls::log(
                proxy_wasm::types::LogLevel::Warn,
                &format!("{filter}: could not add response flag {flag} ({s:?})"),
            )
            .ok();
        }
    }

    /// The response flags so far as short codes (`["UF", "URX"]`); empty when none. Reads
    /// `wasmesh.response.flags`, else `response.flags` when the host gives it as text.
    pub fn response_flags() -> Result<Vec<String>, Status> {
        let text = |b: Vec<u8>| String::from_utf8(b).ok().filter(|t| t.bytes().all(|c| c.is_ascii_graphic()));
        let raw = match get_property(props::RESPONSE_FLAGS)? {
            Some(b) => Some(b),
            None => get_property("response.flags")?,
        };
        Ok(raw.and_then(text).map(|t| split_flags(&t)).unwrap_or_default())
    }

    /// The cluster of this request: `wasmesh.upstream.cluster` (set by a filter, or the
    /// one used in response phases), else the standard `cluster_name`.
    pub fn upstream_cluster() -> Result<Option<String>, Status> {
        let raw = match get_property(props::UPSTREAM_CLUSTER)? {
            Some(b) if !b.is_empty() => Some(b),
            _ => get_property("cluster_name")?,
        };
        Ok(raw.filter(|b| !b.is_empty()).map(crate::text))
    }

    /// Reads a property holding an 8-byte little-endian u64 (Envoy's encoding of
    /// numbers such as `upstream.request_attempt_count`); `None` if absent or malformed.
    pub fn get_u64_le_property(name: &str) -> Result<Option<u64>, Status> {
        Ok(get_property(name)?.and_then(|b| decode_u64_le(&b)))
    }

    /// Reads a numeric property such as `wasmesh.cluster.<name>.*`: decimal ASCII (the
    /// documented encoding) or, failing that, an 8-byte LE integer (Envoy's encoding);
    /// `None` if absent or neither.
    pub fn get_decimal_property(name: &str) -> Result<Option<u64>, Status> {
        Ok(get_property(name)?.and_then(|b| decode_number(&b)))
    }

    /// Decodes decimal ASCII, else an 8-byte LE integer.
    pub fn decode_number(b: &[u8]) -> Option<u64> {
        if let Some(n) = std::str::from_utf8(b).ok().and_then(|t| t.trim().parse().ok()) {
            return Some(n);
        }
        decode_u64_le(b)
    }

    /// Splits `UF,URX` into its codes (empty input or Envoy's `-` → no codes).
    pub fn split_flags(s: &str) -> Vec<String> {
        s.split(',').map(str::trim).filter(|f| !f.is_empty() && *f != "-").map(str::to_string).collect()
    }

    /// Decodes Envoy's 8-byte LE u64 property encoding.
    pub fn decode_u64_le(b: &[u8]) -> Option<u64> {
        <[u8; 8]>::try_from(b).ok().map(u64::from_le_bytes)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn decodes_property_encodings() {
            assert_eq!(decode_u64_le(&3u64.to_le_bytes()), Some(3));
            assert_eq!(decode_u64_le(b"3"), None);
            assert_eq!(split_flags("UF, URX"), vec!["UF".to_string(), "URX".to_string()]);
            assert!(split_flags("").is_empty());
            assert!(split_flags("-").is_empty());
            assert_eq!(decode_number(b"12"), Some(12));
            assert_eq!(decode_number(&7u64.to_le_bytes()), Some(7));
            assert_eq!(decode_number(b"x"), None);
        }
    }
}

/// Shared data (process-wide, all workers) with compare-and-swap updates.
pub mod shared {
    use proxy_wasm::types::Status;

    /// Read-modify-writes `key` with CAS, retrying at most `max_attempts` times on a
    /// conflict. `f` gets the current value (`None` if unset) and returns the value to
    /// store (`None` = store nothing) and a result. Gives `Err(Status::CasMismatch)` when
    /// every attempt lost the race. A key that does not exist yet is created without a
    /// CAS check (the ABI has no "create if absent"), so two first writers may race once.
    pub fn update<T>(
        key: &str,
        max_attempts: u32,
        mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> Result<T, Status> {
        for _ in 0..max_attempts.max(1) {
            let (value, cas) = proxy_wasm::hostcalls::get_shared_data(key)?;
            let (new, out) = f(value.as_deref());
            let Some(new) = new else { return Ok(out) };
            match proxy_wasm::hostcalls::set_shared_data(key, Some(&new), cas) {
                Ok(()) => return Ok(out),
                Err(Status::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Status::CasMismatch)
    }

    /// Adds `delta` to the u64 counter (8-byte LE) at `key`, saturating at 0 and
    /// `u64::MAX`; returns the new value.
    pub fn add(key: &str, delta: i64, max_attempts: u32) -> Result<u64, Status> {
        update(key, max_attempts, |cur| {
            let next = apply_delta(decode(cur), delta);
            (Some(next.to_le_bytes().to_vec()), next)
        })
    }

    /// Reads the u64 counter (8-byte LE) at `key` (0 when unset).
    pub fn get_u64(key: &str) -> Result<u64, Status> {
        Ok(decode(proxy_wasm::hostcalls::get_shared_data(key)?.0.as_deref()))
    }

    fn decode(b: Option<&[u8]>) -> u64 {
        b.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes).unwrap_or(0)
    }

    /// `cur + delta`, saturating at 0 and `u64::MAX`.
    pub fn apply_delta(cur: u64, delta: i64) -> u64 {
        if delta >= 0 {
            cur.saturating_add(delta.unsigned_abs())
        } else {
            cur.saturating_sub(delta.unsigned_abs())
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn deltas_saturate() {
            assert_eq!(super::apply_delta(0, -1), 0);
            assert_eq!(super::apply_delta(2, -1), 1);
            assert_eq!(super::apply_delta(u64::MAX, 5), u64::MAX);
        }
    }
}

/// Metrics with Prometheus labels, in the `name{key="value"}` convention wasmesh's host
/// turns into labelled series.
pub mod metrics {
    use std::cell::RefCell;

    use proxy_wasm::types::{MetricType, Status};

    thread_local! {
        /// Series already defined by this VM: `new` on the request path costs a map
        /// lookup, not a hostcall.
        static DEFINED: RefCell<rustc_hash::FxHashMap<(u8, String), u32>> = RefCell::new(Default::default());
    }

    /// Series remembered per VM; past it (a filter with high-cardinality labels) `new`
    /// asks the host each time rather than growing guest memory.
    const MAX_DEFINED: usize = 1024;

    /// Defines `name{labels}` once per VM and returns its id.
    fn define(kind: MetricType, name: &str, labels: &[(&str, &str)]) -> Result<u32, Status> {
        let key = (kind as u8, labelled_name(name, labels));
        if let Some(id) = DEFINED.with(|d| d.borrow().get(&key).copied()) {
            return Ok(id);
        }
        let id = proxy_wasm::hostcalls::define_metric(kind, &key.1)?;
        DEFINED.with(|d| {
            let mut d = d.borrow_mut();
            if d.len() < MAX_DEFINED {
                d.insert(key, id);
            }
        });
        Ok(id)
    }

    /// Writes `name{k="v",…}` with label values escaped.
    pub fn labelled_name(name: &str, labels: &[(&str, &str)]) -> String {
        if labels.is_empty() {
            return name.to_string();
        }
        let mut s = String::with_capacity(name.len() + 16 * labels.len());
        s.push_str(name);
        s.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(k);
            s.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => s.push_str("\\\\"),
                    '"' => s.push_str("\\\""),
                    '\n' => s.push_str("\\n"),
                    c => s.push(c),
                }
            }
            s.push('"');
        }
        s.push('}');
        s
    }

    /// A counter series.
    #[derive(Debug, Clone, Copy)]
    pub struct Counter(u32);
    /// A gauge series.
    #[derive(Debug, Clone, Copy)]
    pub struct Gauge(u32);
    /// A histogram series.
    #[derive(Debug, Clone, Copy)]
    pub struct Histogram(u32);

    impl Counter {
        /// Defines (or finds) the series `name` with `labels`.
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Result<Self, Status> {
            define(MetricType::Counter, name, labels).map(Counter)
        }
        /// Adds `n`.
        pub fn add(&self, n: u64) -> Result<(), Status> {
            proxy_wasm::hostcalls::increment_metric(self.0, i64::try_from(n).unwrap_or(i64::MAX))
        }
    }

    impl Gauge {
        /// Defines (or finds) the series `name` with `labels`.
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Result<Self, Status> {
            define(MetricType::Gauge, name, labels).map(Gauge)
        }
        /// Sets the value.
        pub fn set(&self, v: u64) -> Result<(), Status> {
            proxy_wasm::hostcalls::record_metric(self.0, v)
        }
    }

    impl Histogram {
        /// Defines (or finds) the series `name` with `labels`.
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Result<Self, Status> {
            define(MetricType::Histogram, name, labels).map(Histogram)
        }
        /// Records one observation.
        pub fn record(&self, v: u64) -> Result<(), Status> {
            proxy_wasm::hostcalls::record_metric(self.0, v)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn labelled_names_escape_values() {
            assert_eq!(labelled_name("hits", &[]), "hits");
            assert_eq!(
                labelled_name("hits", &[("route", "a\"b"), ("code", "200")]),
                r#"hits{route="a\"b",code="200"}"#
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        use super::rfc3339;
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
    }

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    struct Cfg {
        name: String,
    }

    #[test]
    fn durations_parse_like_istio() {
        use super::config::parse_duration_ms as d;
        assert_eq!(d("25ms"), Ok(25));
        assert_eq!(d("2s"), Ok(2000));
        assert_eq!(d("1.5s"), Ok(1500));
        assert_eq!(d("0.025s"), Ok(25));
        assert_eq!(d("1m"), Ok(60_000));
        assert_eq!(d("100us"), Ok(1));
        assert_eq!(d("0s"), Ok(0));
        assert!(d("25").err().unwrap_or_default().contains("no unit"));
        assert!(d("2 days").err().unwrap_or_default().contains("unknown unit"));
        assert!(d("-1s").err().unwrap_or_default().contains("not a number"));
        assert!(d("1.2.3s").err().unwrap_or_default().contains("not a number"));
    }

    #[test]
    fn positive_durations_refuse_zero() {
        use super::config::parse_positive_duration_ms as d;
        assert_eq!(d("1ms"), Ok(1));
        assert_eq!(d("0s"), Err("must be at least 1ms".to_string()));
        assert_eq!(d("2"), Err("duration \"2\" has no unit (use e.g. \"25ms\", \"2s\", \"1m\")".to_string()));
    }

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        #[serde(default)]
        routes: Vec<Cfg>,
    }

    #[test]
    fn path_errors_name_the_field() {
        use super::config::{parse_with_path as p, FieldError};
        assert_eq!(p::<Nested>(b" \n"), Ok(Nested::default()));
        assert_eq!(p::<Nested>(br#"{"routes":[{"name":"a"}]}"#).map(|n| n.routes.len()), Ok(1));
        let e = p::<Nested>(br#"{"routes":[{"name":"a"},{"name":3}]}"#).err();
        assert_eq!(
            e.as_ref().map(|e| (e.path.as_str(), e.to_string())),
            Some((
                "routes[1].name",
                "routes[1].name: invalid type: integer `3`, expected a string at line 1 column 33".to_string()
            ))
        );
        let e = p::<Nested>(br#"{"route":[]}"#).err().map(|e: FieldError| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("route: unknown field `route`"), "{e}");
        let e = p::<Nested>(b"3").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with(".: invalid type: integer `3`"), "{e}");
    }

    #[test]
    fn configure_logs_the_filter_and_the_error() {
        use super::config::configure_bytes as c;
        use proxy_wasm::types::Status;
        let parse = |b: &[u8]| super::config::parse_with_path::<Cfg>(b);
        assert_eq!(c("f", Ok(None), parse), Ok(Cfg::default()));
        assert_eq!(c("f", Ok(Some(br#"{"name":"x"}"#.to_vec())), parse), Ok(Cfg { name: "x".into() }));
        let e = c("f", Ok(Some(br#"{"name":1}"#.to_vec())), parse).err().unwrap_or_default();
        assert!(e.starts_with("f: invalid configuration: name: invalid type"), "{e}");
        assert_eq!(
            c("f", Err(Status::InternalFailure), parse),
            Err("f: cannot read the plugin configuration (InternalFailure)".to_string())
        );
    }

    #[test]
    fn config_errors_say_what_is_wrong() {
        assert_eq!(super::config::parse::<Cfg>(br#"{"name":"x"}"#).ok(), Some(Cfg { name: "x".into() }));
        let err = super::config::parse::<Cfg>(br#"{"nam":"x"}"#).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("missing field `name`"), "{err}");
    }
}
