//! The proxy-wasm host: engine, module cache, plugins, per-worker VMs, filter chains.
