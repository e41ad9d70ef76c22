//! Test filter `queue`: the root context registers shared queue `jobs`; each request
//! enqueues its `x-job` header and pauses; `on_queue_ready` (root context) dequeues, then
//! switches to the waiting stream (`set_effective_context`), adds `x-dequeued` and resumes.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { queue: 0, waiting: Rc::new(RefCell::new(Vec::new())) })
    });
}}

struct Root {
    queue: u32,
    waiting: Rc<RefCell<Vec<u32>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.queue = self.register_shared_queue("jobs");
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(job)) = self.dequeue_shared_queue(queue_id) {
            let Some(id) = self.waiting.borrow_mut().pop() else { return };
            if hostcalls::set_effective_context(id).is_ok() {
                let v = String::from_utf8_lossy(&job).into_owned();
                hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-dequeued", Some(&v)).ok();
                hostcalls::resume_http_request().ok();
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Job { id, queue: self.queue, waiting: self.waiting.clone() }))
    }
}

struct Job {
    id: u32,
    queue: u32,
    waiting: Rc<RefCell<Vec<u32>>>,
}

impl Context for Job {}

impl HttpContext for Job {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let job = self.get_http_request_header("x-job").unwrap_or_default();
        let resolved = self.resolve_shared_queue("", "jobs");
        if resolved != Some(self.queue) {
            self.set_http_request_header("x-resolve", Some("mismatch"));
            return Action::Continue;
        }
        self.waiting.borrow_mut().push(self.id);
        if self.enqueue_shared_queue(self.queue, Some(job.as_bytes())).is_err() {
            return Action::Continue;
        }
        Action::Pause
    }
}
