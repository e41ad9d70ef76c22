//! Test filter `headers`: reads and writes request/response headers, properties, shared
//! data and a metric. Request headers it understands:
//! `x-in` (echoed as `x-echo`), `x-rewrite` (new `:path`), `x-cluster` (sets the
//! `wasmesh.upstream.cluster` property). It always adds `x-wasm-added`, `x-config` (the
//! plugin configuration), `x-plugin` (`plugin_name` property), `x-source` (`source.address`),
//! `x-authority`, `x-count` (a shared-data counter with CAS), `x-prop-*` (properties,
//! including `test.earlier`, which it sets for later filters) and removes `x-remove`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: String::new(), metric: 0 }) });
}}

struct Root {
    config: String,
    metric: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.config =
            self.get_plugin_configuration().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        self.metric = proxy_wasm::hostcalls::define_metric(
            MetricType::Counter,
            "test_headers_requests_total{filter=\"headers\"}",
        )
        .unwrap_or(0);
        self.config != "reject"
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Headers { config: self.config.clone(), metric: self.metric }))
    }
}

struct Headers {
    config: String,
    metric: u32,
}

impl Context for Headers {}

impl HttpContext for Headers {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        proxy_wasm::hostcalls::log(LogLevel::Info, "headers filter: request").ok();
        let _ = proxy_wasm::hostcalls::increment_metric(self.metric, 1);
        self.add_http_request_header("x-wasm-added", "1");
        self.set_http_request_header("x-config", Some(&self.config.clone()));
        if let Some(v) = self.get_http_request_header("x-in") {
            self.set_http_request_header("x-echo", Some(&v));
        }
        if let Some(p) = self.get_http_request_header("x-rewrite") {
            self.set_http_request_header(":path", Some(&p));
        }
        if let Some(c) = self.get_http_request_header("x-cluster") {
            self.set_property(vec!["wasmesh.upstream.cluster"], Some(c.as_bytes()));
        }
        let auth = self.get_http_request_header(":authority").unwrap_or_default();
        self.set_http_request_header("x-authority", Some(&auth));
        let plugin = self.get_property(vec!["plugin_name"]).unwrap_or_default();
        self.set_http_request_header("x-plugin", Some(&String::from_utf8_lossy(&plugin)));
        let src = self.get_property(vec!["source", "address"]).unwrap_or_default();
        self.set_http_request_header("x-source", Some(&String::from_utf8_lossy(&src)));
        self.set_http_request_header("x-remove", None);
        // A missing header is None, not a panic.
        assert!(self.get_http_request_header("x-surely-missing").is_none());
        // Count requests in shared data with compare-and-swap.
        let mut count = 0u64;
        for _ in 0..10 {
            let (data, cas) = self.get_shared_data("count");
            count = data.map(|d| String::from_utf8_lossy(&d).parse().unwrap_or(0)).unwrap_or(0) + 1;
            if self.set_shared_data("count", Some(count.to_string().as_bytes()), cas).is_ok() {
                break;
            }
        }
        self.set_http_request_header("x-count", Some(&count.to_string()));
        for (header, path) in [
            ("x-prop-url-path", vec!["request", "url_path"]),
            ("x-prop-method", vec!["request", "method"]),
            ("x-prop-node", vec!["node", "id"]),
            ("x-prop-app", vec!["node", "metadata", "app"]),
            ("x-prop-listener", vec!["xds", "listener_name"]),
            ("x-prop-from-earlier", vec!["test.earlier"]),
            ("x-prop-peer-uri-san", vec!["connection", "uri_san_peer_certificate"]),
            ("x-prop-tls-version", vec!["connection", "tls_version"]),
        ] {
            if let Some(v) = self.get_property(path) {
                self.set_http_request_header(header, Some(&String::from_utf8_lossy(&v)));
            }
        }
        if let Some(id) = self.get_property(vec!["connection", "id"]) {
            let n = u64::from_le_bytes(id.try_into().unwrap_or_default());
            self.set_http_request_header("x-prop-connection-id", Some(&n.to_string()));
        }
        self.set_property(vec!["test.earlier"], Some(self.config.as_bytes()));
        let n = self.get_http_request_headers().len();
        self.set_http_request_header("x-header-count", Some(&n.to_string()));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let status = self.get_http_response_header(":status").unwrap_or_default();
        self.set_http_response_header("x-upstream-status", Some(&status));
        self.add_http_response_header("x-wasm-response", "1");
        if self.get_http_response_header("x-make-418").is_some() {
            self.set_http_response_header(":status", Some("418"));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // Request headers stay readable in on_log; record what we saw as a property.
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let code = self.get_property(vec!["response", "code"]).unwrap_or_default();
        let mut code_num = [0u8; 8];
        if code.len() == 8 {
            code_num.copy_from_slice(&code);
        }
        let line = format!("{} {}", path, i64::from_le_bytes(code_num));
        let _ = proxy_wasm::hostcalls::call_foreign_function("wasmesh.access_log", Some(line.as_bytes()));
    }
}
