//! Test filter `trap`: misbehaves on demand through the `x-trap` request header:
//! `panic` (a Rust panic = wasm trap), `loop` (never returns), `alloc` (grows memory
//! without bound), `exit` (WASI proc_exit). Otherwise adds `x-trap-ok: 1`.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Trap) });
}}

struct Trap;

impl Context for Trap {}

impl HttpContext for Trap {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        match self.get_http_request_header("x-trap").as_deref() {
            Some("panic") => panic!("asked to panic"),
            Some("loop") => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Some("alloc") => {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                loop {
                    keep.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&keep);
                }
            }
            Some("exit") => std::process::exit(3),
            _ => {
                self.set_http_request_header("x-trap-ok", Some("1"));
                Action::Continue
            }
        }
    }
}
