//! Test filter `grpc`: a unary gRPC call to cluster `grpc` (`test.Echo/Say`, metadata
//! `x-md: 1`, the `x-msg` request header as message), paused until the answer: success
//! adds `x-grpc-reply` (the message), failure adds `x-grpc-status` and `x-grpc-message`.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, Status};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Grpc) });
}}

struct Grpc;

impl Context for Grpc {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        if status == 0 {
            let reply = self.get_grpc_call_response_body(0, size).unwrap_or_default();
            self.set_http_request_header("x-grpc-reply", Some(&String::from_utf8_lossy(&reply)));
        } else {
            let (_, message) = self.get_grpc_status();
            self.set_http_request_header("x-grpc-status", Some(&status.to_string()));
            self.set_http_request_header("x-grpc-message", Some(&message.unwrap_or_default()));
        }
        self.resume_http_request();
    }
}

impl HttpContext for Grpc {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let msg = self.get_http_request_header("x-msg").unwrap_or_default();
        let cluster = self.get_http_request_header("x-cluster").unwrap_or_else(|| "grpc".into());
        match self.dispatch_grpc_call(
            &cluster,
            "test.Echo",
            "Say",
            vec![("x-md", b"1")],
            Some(msg.as_bytes()),
            Duration::from_secs(2),
        ) {
            Ok(_) => Action::Pause,
            Err(Status::ParseFailure) => {
                self.set_http_request_header("x-grpc-dispatch", Some("parse-failure"));
                Action::Continue
            }
            Err(e) => {
                self.set_http_request_header("x-grpc-dispatch", Some(&format!("{e:?}")));
                Action::Continue
            }
        }
    }
}
