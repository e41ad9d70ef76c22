//! wasmesh: a service-mesh data plane that hosts proxy-wasm filters.
//!
//! The request path reads top to bottom: `server` accepts, `proxy` runs one exchange
//! through the listener's `wasm` filter chain, `upstream` picks an endpoint and sends.

pub mod admin;
pub mod builtins;
pub mod config;
pub mod demo;
pub mod flags;
pub mod generation;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod wasm;
