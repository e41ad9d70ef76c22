//! Test filter `local_reply`: `/deny…` answers 403 with `x-denied: 1` and body `denied`;
//! `/close` closes the stream; responses with `x-replace-response` become 502.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Reply) });
}}

struct Reply;

impl Context for Reply {}

impl HttpContext for Reply {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if path.starts_with("/deny") {
            self.send_http_response(403, vec![("x-denied", "1")], Some(b"denied"));
            return Action::Pause;
        }
        if path == "/close" {
            proxy_wasm::hostcalls::reset_http_request().ok();
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.get_http_response_header("x-replace-response").is_some() {
            self.send_http_response(502, vec![], Some(b"replaced"));
            return Action::Pause;
        }
        Action::Continue
    }
}
