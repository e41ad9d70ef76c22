//! The `router` filter (not written yet: passes every request through).

use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pass))
    }
}

struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}
