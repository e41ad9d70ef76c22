//! Hot reload: build a new generation off the workers, validate it fully, and publish it
//! atomically — or keep the running one and say precisely why. Triggers (file watch,
//! SIGHUP, admin `POST /reload`) all end in [`Reloader::reload`].

mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use sha2::{Digest, Sha256};

pub use watch::spawn_watcher;

use crate::config;
use crate::generation::{BuildContext, Generation};
use crate::server::Shared;
use crate::telemetry::register;

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Nothing changed: the running generation stays.
    Unchanged,
    /// A new generation was published.
    Applied {
        /// Its number.
        generation: u64,
    },
    /// The change was refused; the running generation stays.
    Rejected {
        /// Why, precisely.
        error: String,
    },
}

/// The last reload, for the admin endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    /// When it finished (seconds since the epoch).
    pub at_unix: f64,
    /// `applied`, `unchanged` or `rejected`.
    pub result: &'static str,
    /// The error of a rejected reload.
    pub error: Option<String>,
    /// The generation running afterwards.
    pub generation: u64,
    /// How long the reload took.
    pub duration_ms: f64,
    /// sha256 of every module of the running generation, by listener/filter.
    pub modules: Vec<(String, String)>,
}

/// Reload metrics.
struct ReloadMetrics {
    total: IntCounterVec,
    generation: IntGauge,
}

/// Rebuilds the running proxy from its config file.
pub struct Reloader {
    config_path: PathBuf,
    base_dir: PathBuf,
    state: Mutex<State>,
    metrics: ReloadMetrics,
}

struct State {
    fingerprint: String,
    last: Option<ReloadRecord>,
}

// === impl Reloader ===

impl Reloader {
    /// A reloader for the proxy started from `config_path`.
    pub fn new(config_path: PathBuf, base_dir: PathBuf, registry: &Registry, initial: &Generation) -> Self {
        let total = register(
            registry,
            IntCounterVec::new(Opts::new("wasmesh_reload_total", "Configuration reloads by result"), &["result"])
                .expect("static metric definition"),
        );
        let generation = register(
            registry,
            IntGauge::new("wasmesh_generation", "Number of the running configuration generation")
                .expect("static metric definition"),
        );
        generation.set(initial.number as i64);
        let fingerprint = fingerprint(&initial.config, &base_dir);
        Reloader {
            config_path,
            base_dir,
            state: Mutex::new(State { fingerprint, last: None }),
            metrics: ReloadMetrics { total, generation },
        }
    }

    /// The config file watched.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Files whose change triggers a reload: the config and every module file it names.
    pub fn watched_files(&self, config: &config::Config) -> Vec<PathBuf> {
        let mut files = vec![self.config_path.clone()];
        for l in &config.listeners {
            for f in &l.filters {
                if !f.module.starts_with("builtin:") {
                    files.push(self.base_dir.join(&f.module));
                }
            }
        }
        files
    }

    /// The last reload, if any.
    pub fn last(&self) -> Option<ReloadRecord> {
        self.state.lock().ok().and_then(|s| s.last.clone())
    }

    /// Reads the config file and, if anything changed, builds, validates and publishes a
    /// new generation. Never disturbs the running one on failure.
    pub fn reload(&self, shared: &Shared) -> ReloadOutcome {
        let started = Instant::now();
        // One reload at a time: a second trigger waits and then sees no change.
        let Ok(mut state) = self.state.lock() else {
            return ReloadOutcome::Rejected { error: "reload state poisoned".into() };
        };
        let outcome = self.try_reload(shared, &mut state);
        let current = shared.generation.load();
        let (result, error) = match &outcome {
            ReloadOutcome::Unchanged => ("unchanged", None),
            ReloadOutcome::Applied { .. } => ("applied", None),
            ReloadOutcome::Rejected { error } => ("rejected", Some(error.clone())),
        };
        self.metrics.total.with_label_values(&[result]).inc();
        self.metrics.generation.set(current.number as i64);
        match &outcome {
            ReloadOutcome::Applied { generation } => {
                tracing::info!(generation, ms = started.elapsed().as_secs_f64() * 1e3, "configuration reloaded")
            }
            ReloadOutcome::Rejected { error } => {
                tracing::error!(error = %error, "configuration reload rejected; keeping the running generation")
            }
            ReloadOutcome::Unchanged => tracing::debug!("reload: nothing changed"),
        }
        state.last = Some(ReloadRecord {
            at_unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            result,
            error,
            generation: current.number,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
            modules: module_hashes(&current),
        });
        outcome
    }

    fn try_reload(&self, shared: &Shared, state: &mut State) -> ReloadOutcome {
        let config = match config::load_file(&self.config_path) {
            Ok(c) => c,
            Err(e) => return ReloadOutcome::Rejected { error: e.to_string() },
        };
        let print = fingerprint(&config, &self.base_dir);
        if print == state.fingerprint {
            return ReloadOutcome::Unchanged;
        }
        let current = shared.generation.load_full();
        // New listeners and new addresses are bound first: a port clash rejects the
        // whole change before anything running is touched.
        let listeners = match shared.listeners.prepare(&config) {
            Ok(p) => p,
            Err(e) => return ReloadOutcome::Rejected { error: format!("listeners: {e}") },
        };
        let number = current.number + 1;
        let ctx = BuildContext {
            wasm: &shared.wasm,
            upstream_metrics: &shared.upstream_metrics,
            proxy_metrics: &shared.proxy_metrics,
            base_dir: &self.base_dir,
            number,
            previous: Some(&current),
        };
        match Generation::build(Arc::new(config), &ctx) {
            Ok(next) => {
                let next = Arc::new(next);
                shared.publish(next);
                if !listeners.is_empty() {
                    shared.listeners.commit(listeners);
                }
                state.fingerprint = print;
                ReloadOutcome::Applied { generation: number }
            }
            Err(e) => ReloadOutcome::Rejected { error: e.to_string() },
        }
    }
}

/// sha256 over the effective config and the bytes of every module file it names, so a
/// module rewritten in place counts as a change and an untouched file does not.
fn fingerprint(config: &config::Config, base_dir: &Path) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(config).unwrap_or_default());
    for l in &config.listeners {
        for f in &l.filters {
            if !f.module.starts_with("builtin:") {
                match std::fs::read(base_dir.join(&f.module)) {
                    Ok(bytes) => h.update(Sha256::digest(&bytes)),
                    Err(_) => h.update(b"<unreadable>"),
                }
            }
        }
    }
    hex(&h.finalize())
}

fn module_hashes(generation: &Generation) -> Vec<(String, String)> {
    generation
        .listeners
        .iter()
        .flat_map(|l| l.chain.plugins.iter().map(move |p| (format!("{}/{}", l.name, p.name), p.sha256_hex())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
