//! Test filter `callout`: dispatches an http_call to cluster `auth` (`GET /check`,
//! forwarding `x-token`), pauses, and on the response adds `x-auth-status` and
//! `x-auth-body` and resumes; a 403 from `auth` becomes a local 403. A failed call adds
//! `x-auth-status: failed`. Cluster `nope` (header `x-cluster: nope`) is unknown.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Callout) });
}}

struct Callout;

impl Context for Callout {
    fn on_http_call_response(&mut self, _token: u32, n: usize, body_size: usize, _t: usize) {
        if n == 0 {
            self.set_http_request_header("x-auth-status", Some("failed"));
            self.resume_http_request();
            return;
        }
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        if status == "403" {
            self.send_http_response(403, vec![("x-auth", "denied")], Some(&body));
            return;
        }
        self.set_http_request_header("x-auth-status", Some(&status));
        self.set_http_request_header("x-auth-body", Some(&String::from_utf8_lossy(&body)));
        self.resume_http_request();
    }
}

impl HttpContext for Callout {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let cluster = self.get_http_request_header("x-cluster").unwrap_or_else(|| "auth".into());
        let token = self.get_http_request_header("x-token").unwrap_or_default();
        let res = self.dispatch_http_call(
            &cluster,
            vec![(":method", "GET"), (":path", "/check"), (":authority", "auth.local"), ("x-token", &token)],
            None,
            vec![],
            Duration::from_secs(2),
        );
        match res {
            Ok(_) => Action::Pause,
            Err(status) => {
                self.set_http_request_header("x-auth-status", Some(&format!("dispatch-error-{status:?}")));
                Action::Continue
            }
        }
    }
}
