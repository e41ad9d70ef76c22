//! Write wasmesh filters: the official `proxy-wasm` SDK, plus typed plugin config, safe
//! wrappers for wasmesh's host extensions (routing, retries, ejection, access log), and
//! labelled metrics.
//!
//! A filter written only against `proxy_wasm` runs on wasmesh and on Envoy alike; the
//! [`upstream`], [`route`] and [`ext`] helpers steer what only wasmesh offers.
//!
//! # Example
//!
//! ```no_run
//! use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
//! use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
//! use wasmesh_sdk::{config, metrics::Counter, upstream};
//!
//! #[derive(serde::Deserialize, Default, Clone)]
//! struct Config { canary_header: String }
//!
//! struct Root { config: Config, hits: Option<Counter> }
//! impl Context for Root {}
//! impl RootContext for Root {
//!     fn on_configure(&mut self, _size: usize) -> bool {
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
}

/// Sets a property (a dotted name, e.g. [`props::UPSTREAM_CLUSTER`]).
pub fn set_property(name: &str, value: &[u8]) -> Result<(), Status> {
    proxy_wasm::hostcalls::set_property(vec![name], Some(value))
}

/// Reads a property by dotted name.
pub fn get_property(name: &str) -> Result<Option<Vec<u8>>, Status> {
    proxy_wasm::hostcalls::get_property(vec![name])
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
}

/// Metrics with Prometheus labels, in the `name{key="value"}` convention wasmesh's host
/// turns into labelled series.
pub mod metrics {
    use proxy_wasm::types::{MetricType, Status};

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
            proxy_wasm::hostcalls::define_metric(MetricType::Counter, &labelled_name(name, labels)).map(Counter)
        }
        /// Adds `n`.
        pub fn add(&self, n: u64) -> Result<(), Status> {
            proxy_wasm::hostcalls::increment_metric(self.0, i64::try_from(n).unwrap_or(i64::MAX))
        }
    }

    impl Gauge {
        /// Defines (or finds) the series `name` with `labels`.
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Result<Self, Status> {
            proxy_wasm::hostcalls::define_metric(MetricType::Gauge, &labelled_name(name, labels)).map(Gauge)
        }
        /// Sets the value.
        pub fn set(&self, v: u64) -> Result<(), Status> {
            proxy_wasm::hostcalls::record_metric(self.0, v)
        }
    }

    impl Histogram {
        /// Defines (or finds) the series `name` with `labels`.
        pub fn new(name: &str, labels: &[(&str, &str)]) -> Result<Self, Status> {
            proxy_wasm::hostcalls::define_metric(MetricType::Histogram, &labelled_name(name, labels)).map(Histogram)
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
            assert_eq!(labelled_name("hits", &[("route", "a\"b"), ("code", "200")]), r#"hits{route="a\"b",code="200"}"#);
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    struct Cfg {
        name: String,
    }

    #[test]
    fn config_errors_say_what_is_wrong() {
        assert_eq!(super::config::parse::<Cfg>(br#"{"name":"x"}"#).ok(), Some(Cfg { name: "x".into() }));
        let err = super::config::parse::<Cfg>(br#"{"nam":"x"}"#).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("missing field `name`"), "{err}");
    }
}
