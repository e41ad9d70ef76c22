//! The proxy-wasm host: engine, module cache, plugins, per-worker VMs, filter chains.
//! `Plugin::load` compiles and validates off the workers; each worker's `WorkerWasm`
//! (used inside the worker's `LocalSet`: timers and callouts are `spawn_local` tasks)
//! turns a `ChainSpec` into a `WorkerChain` whose `HttpStream`s run the callbacks.

pub(crate) mod abi;
mod chain;
mod custom_metrics;
mod interest;
mod maps;
mod metrics;
mod plugin;
mod properties;
mod request_metrics;
mod runtime;
mod shared;
mod state;
mod text;
mod types;
mod vm;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use chain::{HttpStream, WorkerChain, WorkerWasm};
pub(crate) use custom_metrics::Cursor as FilterMetricsCursor;
pub use plugin::{AbiVersion, ChainSpec, Plugin};
pub use runtime::{NodeInfo, RuntimeOptions, WasmRuntime};
pub use types::{
    BodyVerdict, CalloutError, ConnectionInfo, HostServices, LocalReply, StreamInfo, TlsInfo, UpstreamInfo, Verdict,
};

/// Errors of the wasm host (load, compile, link, start).
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The engine could not be built.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The module cache directory is unusable.
    #[error("module cache {path}: {error}")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// The module does not compile.
    #[error("plugin {plugin}: cannot compile the module: {error}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// Compiler error.
        error: String,
    },
    /// The module is not a proxy-wasm module this host supports.
    #[error("plugin {plugin}: {error}")]
    Abi {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        error: String,
    },
    /// The module imports something the host does not provide (or with another type).
    #[error("plugin {plugin}: cannot link the module: {error}")]
    Link {
        /// Plugin name.
        plugin: String,
        /// Linker error.
        error: String,
    },
    /// The plugin configuration cannot be encoded.
    #[error("plugin {plugin}: bad configuration: {error}")]
    Config {
        /// Plugin name.
        plugin: String,
        /// Why.
        error: String,
    },
    /// Start-up failed: a trap, `on_vm_start`/`on_configure` returning false, …
    #[error("plugin {plugin} failed to start ({kind}): {error}")]
    Start {
        /// Plugin name.
        plugin: String,
        /// Failure kind (`trap`, `deadline`, `start`, …).
        kind: &'static str,
        /// Details.
        error: String,
    },
    /// A metric could not be registered.
    #[error("wasm metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
