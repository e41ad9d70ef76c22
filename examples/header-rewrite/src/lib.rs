//! Example filter written against `wasmesh-sdk`.
//!
//! Build: `cargo xtask filters` (→ `target/filters/wasm32-wasip1/release/header_rewrite.wasm`).
//! Use it in a listener chain:
//!
//! ```yaml
//! filters:
//!   - name: rewrite
//!     module: target/filters/wasm32-wasip1/release/header_rewrite.wasm
//!     config:
//!       request_set: { x-team: payments }
//!       request_remove: [x-debug]
//!       response_set: { x-served-by: wasmesh }
//! ```
//!
//! Every request increments `header_rewrite_requests_total{method="GET"}` on `/metrics`.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmesh_sdk::callbacks::{self, Callbacks};
use wasmesh_sdk::metrics::Counter;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{config, proxy_wasm};

/// The filter's configuration.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Request headers to set (replacing any value).
    #[serde(default)]
    pub request_set: BTreeMap<String, String>,
    /// Request headers to remove.
    #[serde(default)]
    pub request_remove: Vec<String>,
    /// Response headers to set.
    #[serde(default)]
    pub response_set: BTreeMap<String, String>,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    config: std::rc::Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // The callbacks this filter implements; the host skips the others (Envoy ignores this).
        let _ = callbacks::only(Callbacks::HEADERS);
        match config::from_plugin_configuration::<Config>() {
            Ok(c) => {
                self.config = std::rc::Rc::new(c);
                true
            }
            Err(e) => {
                proxy_wasm::hostcalls::log(LogLevel::Error, &e.to_string()).ok();
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite { config: self.config.clone() }))
    }
}

struct Rewrite {
    config: std::rc::Rc<Config>,
}

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        for name in &self.config.request_remove {
            self.set_http_request_header(name, None);
        }
        for (name, value) in &self.config.request_set {
            self.set_http_request_header(name, Some(value));
        }
        let method = self.get_http_request_header(":method").unwrap_or_default();
        if let Ok(c) = Counter::new("header_rewrite_requests_total", &[("method", &method)]) {
            let _ = c.add(1);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        for (name, value) in &self.config.response_set {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}
