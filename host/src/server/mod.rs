//! Workers (a thread per core), listeners and HTTP/1.1 + HTTP/2 serving, plus the
//! control thread (admin endpoint, DNS refresh). `Proxy` is a running instance.

mod conn;
mod listeners;
mod socket;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::generation::{BuildContext, BuildError, Generation};
use crate::proxy::ProxyMetrics;
use crate::reload::{ReloadOutcome, Reloader};
use crate::upstream::UpstreamMetrics;
use crate::wasm::{RuntimeOptions, WasmRuntime};

/// How to start a proxy, beyond its config.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Worker threads; 0 uses the config's `workers`, then the number of cores.
    pub workers: usize,
    /// Directory relative module paths are resolved against (the config file's).
    pub base_dir: PathBuf,
    /// On-disk cache of compiled modules.
    pub cache_dir: Option<PathBuf>,
    /// The config file, when the proxy should reload it on change, SIGHUP or
    /// `POST /reload`.
    pub config_path: Option<PathBuf>,
}

/// Why the proxy did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config could not be built into a generation.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The Wasm runtime could not start.
    #[error("wasm runtime: {0}")]
    Wasm(String),
    /// A socket could not be bound.
    #[error("cannot bind {what} on {address}: {source}")]
    Bind {
        /// Which socket.
        what: String,
        /// Address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The access-log file could not be opened.
    #[error("access_log.path: {0}")]
    AccessLog(std::io::Error),
    /// A thread could not be spawned.
    #[error("cannot start thread: {0}")]
    Thread(std::io::Error),
}

/// Process-wide state shared by workers and the control thread.
pub struct Shared {
    /// The current generation.
    pub generation: Arc<ArcSwap<Generation>>,
    /// The Wasm runtime.
    pub wasm: Arc<WasmRuntime>,
    /// This proxy's metrics registry.
    pub registry: prometheus::Registry,
    /// Proxy metric families.
    pub proxy_metrics: ProxyMetrics,
    /// Upstream metric families.
    pub upstream_metrics: UpstreamMetrics,
    /// True once every worker runs, false again when draining.
    pub ready: AtomicBool,
    /// Where filters' access-log lines go.
    pub access_log: crate::telemetry::AccessLogSink,
    /// Bound listeners and the channels to the workers that serve them.
    pub listeners: listeners::ListenerSet,
    /// Rebuilds the generation from the config file (when started from one).
    pub reloader: Option<Arc<Reloader>>,
    drain_timeout_ms: AtomicU64,
    workers_running: AtomicUsize,
}

/// Builds everything a start (or reload) would — clusters, compiled modules, filters'
/// `on_vm_start`/`on_configure` — without binding a socket; for `wasmesh validate`.
pub fn check_config(config: Config, base_dir: &std::path::Path) -> Result<(), StartError> {
    let registry = crate::telemetry::new_registry();
    let wasm = WasmRuntime::new(RuntimeOptions { cache_dir: None, node: node_info(&config.node) }, &registry)
        .map_err(|e| StartError::Wasm(e.to_string()))?;
    let ctx = BuildContext {
        wasm: &wasm,
        upstream_metrics: &UpstreamMetrics::new(&registry),
        proxy_metrics: &ProxyMetrics::new(&registry),
        base_dir,
        number: 1,
        previous: None,
    };
    Generation::build(Arc::new(config), &ctx)?;
    Ok(())
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    admin: SocketAddr,
    drain_tx: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    control: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

// === impl Shared ===

impl Shared {
    /// How long draining may take.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms.load(Ordering::Relaxed))
    }

    /// Publishes a new generation: requests that start from now on use it; requests in
    /// flight finish on the one they started with.
    pub fn publish(&self, next: Arc<Generation>) {
        self.drain_timeout_ms.store(next.config.drain_timeout.0, Ordering::Relaxed);
        self.generation.store(next);
    }

    /// Reloads the config file now (SIGHUP, `POST /reload`); `None` without a file.
    pub fn reload(&self) -> Option<ReloadOutcome> {
        self.reloader.as_ref().map(|r| r.reload(self))
    }
}

// === impl Proxy ===

impl Proxy {
    /// Builds the first generation, binds every socket, starts workers and the admin
    /// endpoint. Returns once the proxy accepts traffic.
    pub fn start(config: Config, opts: StartOptions) -> Result<Proxy, StartError> {
        let registry = crate::telemetry::new_registry();
        let wasm = WasmRuntime::new(
            RuntimeOptions { cache_dir: opts.cache_dir.clone(), node: node_info(&config.node) },
            &registry,
        )
        .map_err(|e| StartError::Wasm(e.to_string()))?;
        let proxy_metrics = ProxyMetrics::new(&registry);
        let upstream_metrics = UpstreamMetrics::new(&registry);
        let config = Arc::new(config);
        let generation = Generation::build(
            config.clone(),
            &BuildContext {
                wasm: &wasm,
                upstream_metrics: &upstream_metrics,
                proxy_metrics: &proxy_metrics,
                base_dir: &opts.base_dir,
                number: 1,
                previous: None,
            },
        )?;
        let reloader = opts
            .config_path
            .clone()
            .map(|path| Arc::new(Reloader::new(path, opts.base_dir.clone(), &registry, &generation)));
        let workers = match (opts.workers, config.workers) {
            (0, 0) => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            (0, n) | (n, _) => n,
        };

        // Bind everything before starting anything, so a port clash fails cleanly.
        let admin_addr: SocketAddr = config.admin.address.parse().map_err(|e| StartError::Bind {
            what: "admin".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")),
        })?;
        let admin_socket = std::net::TcpListener::bind(admin_addr)
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .map_err(|source| StartError::Bind { what: "admin".into(), address: admin_addr, source })?;
        let admin = admin_socket.local_addr().map_err(|source| StartError::Bind {
            what: "admin".into(),
            address: admin_addr,
            source,
        })?;
        let mut per_worker: Vec<Vec<worker::WorkerListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for l in &generation.listeners {
            let sockets = socket::bind_reuseport(l.address, workers).map_err(|source| StartError::Bind {
                what: format!("listener \"{}\"", l.name),
                address: l.address,
                source,
            })?;
            let addr = sockets.first().and_then(|s| s.local_addr().ok()).unwrap_or(l.address);
            let configured = config.listeners.iter().find(|c| *c.name == *l.name).map(|c| c.address.clone());
            bound.push(listeners::BoundListener {
                name: l.name.to_string(),
                configured: configured.unwrap_or_else(|| l.address.to_string()),
                bound: addr,
            });
            let open = Arc::new(AtomicUsize::new(0));
            for (i, s) in sockets.into_iter().enumerate() {
                per_worker[i].push(worker::WorkerListener { name: l.name.clone(), socket: s, open: open.clone() });
            }
        }

        let access_log = crate::telemetry::AccessLogSink::new(config.access_log.path.as_deref(), &registry)
            .map_err(StartError::AccessLog)?;
        let (senders, mut receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| tokio::sync::mpsc::unbounded_channel::<listeners::WorkerCommand>()).unzip();
        let bound_names: Vec<(String, SocketAddr)> = bound.iter().map(|b| (b.name.clone(), b.bound)).collect();
        let shared = Arc::new(Shared {
            listeners: listeners::ListenerSet::new(bound, senders),
            access_log,
            generation: Arc::new(ArcSwap::from_pointee(generation)),
            wasm,
            registry,
            proxy_metrics,
            upstream_metrics,
            ready: AtomicBool::new(false),
            reloader,
            drain_timeout_ms: AtomicU64::new(config.drain_timeout.0),
            workers_running: AtomicUsize::new(0),
        });
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut handles = Vec::with_capacity(workers);
        for (i, listeners) in per_worker.into_iter().enumerate() {
            let shared = shared.clone();
            let drain = drain_rx.clone();
            let commands = receivers.remove(0);
            let h = std::thread::Builder::new()
                .name(format!("wasmesh-worker-{i}"))
                .spawn(move || {
                    shared.workers_running.fetch_add(1, Ordering::SeqCst);
                    worker::run(i, listeners, shared.clone(), drain, commands);
                    shared.workers_running.fetch_sub(1, Ordering::SeqCst);
                })
                .map_err(StartError::Thread)?;
            handles.push(h);
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let control_shared = shared.clone();
        let control = std::thread::Builder::new()
            .name("wasmesh-control".into())
            .spawn(move || control_main(control_shared, admin_socket, stop_rx, started_tx))
            .map_err(StartError::Thread)?;
        // The file watcher is live before `start` returns: no change can slip in between.
        let _ = started_rx.recv_timeout(Duration::from_secs(10));
        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!(workers, admin = %admin, listeners = ?bound_names, "wasmesh started");
        Ok(Proxy { shared, admin, drain_tx, workers: handles, control: Some((control, stop_tx)) })
    }

    /// The bound address of listener `name` (the real port when configured as 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared.listeners.addr(name)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Process-wide state (generation, registry).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and
    /// stops every thread. Blocks until done.
    pub fn shutdown(mut self) {
        self.shared.ready.store(false, Ordering::SeqCst);
        let _ = self.drain_tx.send(true);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some((h, stop)) = self.control.take() {
            let _ = stop.send(());
            let _ = h.join();
        }
        tracing::info!("wasmesh stopped");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.drain_tx.send(true);
        if let Some((_, stop)) = self.control.take() {
            let _ = stop.send(());
        }
    }
}

/// The control thread: admin endpoint and DNS refresh tasks.
fn control_main(
    shared: Arc<Shared>,
    admin: std::net::TcpListener,
    stop: tokio::sync::oneshot::Receiver<()>,
    started: std::sync::mpsc::Sender<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start control runtime");
            return;
        }
    };
    rt.block_on(async move {
        let dns: Vec<_> =
            shared.generation.load().clusters.values().filter_map(|c| c.cluster.spawn_dns_refresh()).collect();
        let admin_task = tokio::spawn(crate::admin::serve(admin, shared.clone()));
        let watcher = crate::reload::spawn_watcher(shared.clone());
        let _ = started.send(());
        let rotation = tokio::spawn(rotate_certificates(shared.clone()));
        let _ = stop.await;
        admin_task.abort();
        rotation.abort();
        if let Some((w, task)) = watcher {
            task.abort();
            drop(w);
        }
        for t in dns {
            t.abort();
        }
    });
}

/// The `node` property filters see: the config's node, with a default id.
fn node_info(node: &crate::config::Node) -> crate::wasm::NodeInfo {
    let id = if node.id.is_empty() {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        format!("wasmesh~{}", if host.is_empty() { "localhost" } else { &host })
    } else {
        node.id.clone()
    };
    crate::wasm::NodeInfo { id, cluster: node.cluster.clone(), metadata: node.metadata.clone() }
}

/// How often certificate and key files are checked for rotation.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Re-reads every listener's and cluster's PEM files periodically; changed files swap in
/// for new handshakes (existing connections are untouched), bad files keep the old ones.
async fn rotate_certificates(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(CERT_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let generation = shared.generation.load_full();
        for l in &generation.listeners {
            if let Some(tls) = &l.tls {
                match tls.reload() {
                    Ok(true) => tracing::info!(listener = %l.name, "listener certificates rotated"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(listener = %l.name, error = %e, "certificate rotation failed; keeping the old ones")
                    }
                }
            }
        }
        for (name, c) in &generation.clusters {
            if let Some(tls) = c.cluster.tls() {
                match tls.reload() {
                    Ok(true) => tracing::info!(cluster = %name, "upstream TLS material rotated"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(cluster = %name, error = %e, "upstream TLS rotation failed; keeping the old")
                    }
                }
            }
        }
    }
}
