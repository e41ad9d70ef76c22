//! The process-wide part of the host: one wasmtime `Engine` with an epoch ticker, the
//! module cache (memory by sha256, optional disk by sha256 + engine hash), the linker with
//! every hostcall, shared data, shared queues and metrics.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Linker, Module};

use super::custom_metrics::CustomMetrics;
use super::metrics::WasmMetrics;
use super::request_metrics::RequestMetrics;
use super::shared::{SharedData, SharedQueues};
use super::state::HostState;
use super::WasmError;

/// How often the engine epoch advances; callback deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Wasm stack limit per VM.
const MAX_WASM_STACK: usize = 1024 * 1024;

/// Options of the runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Directory of serialized compiled modules; `None` keeps the cache in memory only.
    pub cache_dir: Option<PathBuf>,
    /// This proxy's identity, exposed as the `node` property.
    pub node: NodeInfo,
}

/// The proxy's identity as filters see it (`node.id`, `node.cluster`, `node.metadata`).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Cluster name of the node.
    pub cluster: String,
    /// Free-form metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The process-wide wasm runtime (`Send + Sync`).
pub struct WasmRuntime {
    engine: Engine,
    engine_hash: String,
    cache_dir: Option<PathBuf>,
    modules: Mutex<HashMap<[u8; 32], Module>>,
    pub(crate) linker: Linker<HostState>,
    pub(crate) node: NodeInfo,
    pub(crate) shared_data: SharedData,
    pub(crate) queues: SharedQueues,
    pub(crate) metrics: WasmMetrics,
    pub(crate) custom: Arc<CustomMetrics>,
    /// Request-metric templates filters declared (`wasmesh.define_request_metrics`).
    pub(crate) request_metrics: RequestMetrics,
    ticker_stop: Arc<AtomicBool>,
}

// === impl WasmRuntime ===

impl WasmRuntime {
    /// Builds the engine, starts its epoch ticker thread, links the hostcalls and
    /// registers the wasm metrics in `registry`.
    pub fn new(opts: RuntimeOptions, registry: &prometheus::Registry) -> Result<Arc<Self>, WasmError> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .parallel_compilation(true);
        if std::env::var_os("WASMESH_PERFMAP").is_some() {
            // Names guest functions in `perf report` (/tmp/perf-<pid>.map); for profiling.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(e.to_string()))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());

        let mut linker = Linker::new(&engine);
        super::abi::add_to_linker(&mut linker).map_err(|e| WasmError::Engine(e.to_string()))?;

        if let Some(dir) = &opts.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| WasmError::Cache { path: dir.clone(), error: e.to_string() })?;
        }
        let metrics = WasmMetrics::new(registry)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), ticker_stop.clone())?;
        let custom = Arc::new(CustomMetrics::new(registry.clone()));
        Ok(Arc::new(WasmRuntime {
            engine,
            engine_hash,
            cache_dir: opts.cache_dir,
            modules: Mutex::new(HashMap::new()),
            linker,
            node: opts.node,
            shared_data: SharedData::default(),
            queues: SharedQueues::default(),
            metrics,
            custom: custom.clone(),
            request_metrics: RequestMetrics::new(custom),
            ticker_stop,
        }))
    }

    /// Appends the next chunk of the filter metrics' text exposition to `out` (about
    /// `budget` bytes); false once everything is written.
    pub(crate) fn render_filter_metrics(
        &self,
        cursor: &mut super::FilterMetricsCursor,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> bool {
        self.custom.render_next(cursor, out, budget)
    }

    /// The engine (shared by every module and store).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes` or takes the compiled module from the memory or disk cache.
    /// Returns the module and its sha256.
    pub fn module(&self, name: &str, bytes: &[u8]) -> Result<(Module, [u8; 32]), WasmError> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(m) = lock(&self.modules).get(&sha) {
            self.metrics.modules.with_label_values(&["memory"]).inc();
            return Ok((m.clone(), sha));
        }
        let path = self.cache_path(&sha);
        let module = match path.as_deref().and_then(|p| self.load_cached(p)) {
            Some(m) => {
                self.metrics.modules.with_label_values(&["disk"]).inc();
                m
            }
            None => {
                let m = Module::new(&self.engine, bytes)
                    .map_err(|e| WasmError::Compile { plugin: name.to_owned(), error: format!("{e:#}") })?;
                self.metrics.modules.with_label_values(&["compiled"]).inc();
                if let Some(p) = &path {
                    store_cached(&m, p);
                }
                m
            }
        };
        lock(&self.modules).insert(sha, module.clone());
        Ok((module, sha))
    }

    /// Drops compiled modules no plugin uses any more (call after a reload).
    pub fn retain_modules(&self, live: &[[u8; 32]]) {
        lock(&self.modules).retain(|k, _| live.contains(k));
    }

    fn cache_path(&self, sha: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{}-{}.cwasm", hex(sha), self.engine_hash)))
    }

    /// Reads a serialized module: `[artifact][sha256(artifact)]`; a checksum mismatch
    /// (truncated or corrupt file) is a miss.
    fn load_cached(&self, path: &Path) -> Option<Module> {
        let data = std::fs::read(path).ok()?;
        if data.len() < 32 {
            return None;
        }
        let (artifact, sum) = data.split_at(data.len() - 32);
        if Sha256::digest(artifact).as_slice() != sum {
            tracing::warn!(path = %path.display(), "corrupt module cache entry ignored");
            return None;
        }
        // SAFETY: the artifact was produced by `Module::serialize` of this engine
        // configuration (the file name carries the engine hash) and written by this
        // process family into the operator's cache directory; its checksum matched, so it
        // is the bytes we wrote. wasmtime still checks the header and engine compatibility.
        match unsafe { Module::deserialize(&self.engine, artifact) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "module cache entry rejected");
                None
            }
        }
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

fn store_cached(m: &Module, path: &Path) {
    let Ok(mut bytes) = m.serialize() else { return };
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        tracing::warn!(path = %path.display(), error = %e, "cannot write module cache entry");
        let _ = std::fs::remove_file(&tmp);
    }
}

fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), WasmError> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| WasmError::Engine(format!("cannot start the epoch thread: {e}")))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
