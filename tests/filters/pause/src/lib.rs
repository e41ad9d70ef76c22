//! Test filter `pause`: pauses every request in `on_request_headers` and resumes it from
//! the root context's tick (after adding `x-resumed-by: tick` through
//! `set_effective_context`). Buffers the request body (Pause until end of stream), then
//! replaces it with its upper-case form and adds `x-body-size`.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { waiting: Rc::new(RefCell::new(Vec::new())) }) });
}}

struct Root {
    waiting: Rc<RefCell<Vec<u32>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.set_tick_period(std::time::Duration::from_millis(20));
        true
    }

    fn on_tick(&mut self) {
        let ids: Vec<u32> = self.waiting.borrow_mut().drain(..).collect();
        for id in ids {
            if proxy_wasm::hostcalls::set_effective_context(id).is_ok() {
                proxy_wasm::hostcalls::set_map_value(
                    proxy_wasm::types::MapType::HttpRequestHeaders,
                    "x-resumed-by",
                    Some("tick"),
                )
                .ok();
                proxy_wasm::hostcalls::resume_http_request().ok();
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pause { id, waiting: self.waiting.clone() }))
    }
}

struct Pause {
    id: u32,
    waiting: Rc<RefCell<Vec<u32>>>,
}

impl Context for Pause {}

impl HttpContext for Pause {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.get_http_request_header("x-no-pause").is_some() {
            return Action::Continue;
        }
        self.waiting.borrow_mut().push(self.id);
        Action::Pause
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if !eos {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        let upper = body.to_ascii_uppercase();
        self.set_http_request_body(0, size, &upper);
        self.set_property(vec!["test", "body_size"], Some(size.to_string().as_bytes()));
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        if !eos {
            return Action::Pause;
        }
        let mut body = self.get_http_response_body(0, size).unwrap_or_default();
        body.extend_from_slice(b"!");
        self.set_http_response_body(0, size, &body);
        Action::Continue
    }
}
