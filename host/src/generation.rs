//! The immutable snapshot built from config that workers read: listeners with their
//! compiled filter chains, and runtime clusters. Built and validated off the workers,
//! published with an `ArcSwap`; a request takes one snapshot at its start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use crate::config::{self, Config, Direction, HashKey, HttpSettings};
use crate::proxy::metrics::ListenerStats;
use crate::proxy::ProxyMetrics;
use crate::tls::{ClientTls, ServerTls};
use crate::upstream::{self, UpstreamMetrics};
use crate::wasm::{ChainSpec, Plugin, WasmRuntime};

/// Everything a generation build needs from the process.
pub struct BuildContext<'a> {
    /// The Wasm runtime (engine, module cache).
    pub wasm: &'a Arc<WasmRuntime>,
    /// Upstream metric handles.
    pub upstream_metrics: &'a UpstreamMetrics,
    /// Proxy metric families.
    pub proxy_metrics: &'a ProxyMetrics,
    /// Directory that relative module paths are resolved against.
    pub base_dir: &'a Path,
    /// Generation number to stamp.
    pub number: u64,
    /// The running generation, whose unchanged clusters, plugins and chains are reused
    /// (so their pools, VMs and state survive an unrelated change).
    pub previous: Option<&'a Generation>,
}

/// Why a generation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A listener address did not parse.
    #[error("listeners[{index}].address: {message}")]
    Address {
        /// Listener index.
        index: usize,
        /// What went wrong.
        message: String,
    },
    /// A filter module could not be read, compiled or started.
    #[error("listeners[{listener}].filters[{filter}] \"{name}\": {message}")]
    Filter {
        /// Listener index.
        listener: usize,
        /// Filter index.
        filter: usize,
        /// Filter name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// TLS material could not be loaded.
    #[error("{what}.tls: {message}")]
    Tls {
        /// Which listener or cluster.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A cluster could not be built.
    #[error("clusters[{index}] \"{name}\": {source}")]
    Cluster {
        /// Cluster index.
        index: usize,
        /// Cluster name.
        name: String,
        /// Why.
        source: upstream::UpstreamError,
    },
}

/// One immutable snapshot of the running configuration.
pub struct Generation {
    /// Monotonic number, 1 for the first.
    pub number: u64,
    /// The config it was built from (for `/config_dump` only).
    pub config: Arc<Config>,
    /// Listeners in config order.
    pub listeners: Vec<Arc<ListenerSpec>>,
    /// Clusters by name (looked up per request: Fx, the names come from the config).
    pub clusters: FxHashMap<String, Arc<ClusterEntry>>,
}

/// A listener as workers serve it.
pub struct ListenerSpec {
    /// Name.
    pub name: Arc<str>,
    /// Bound address as configured.
    pub address: SocketAddr,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Cluster for requests no filter routed.
    pub default_cluster: Option<DefaultCluster>,
    /// HTTP limits and timeouts.
    pub http: HttpSettings,
    /// Downstream protocol policy.
    pub protocol: config::DownstreamProtocol,
    /// The compiled filter chain.
    pub chain: Arc<ChainSpec>,
    /// TLS termination (`None`: plaintext).
    pub tls: Option<Arc<ServerTls>>,
    /// Metric handles for this listener.
    pub stats: ListenerStats,
}

/// A cluster as the exchange uses it.
pub struct ClusterEntry {
    /// The config it was built from (to tell whether a reload changed it).
    pub config: config::Cluster,
    /// The runtime cluster (endpoints, load balancer).
    pub cluster: Arc<upstream::Cluster>,
    /// Route timeout unless a filter overrides it (`None` = no timeout).
    pub request_timeout: Option<Duration>,
    /// Where the consistent-hash key comes from when no filter set one.
    pub hash_key: Option<HashKey>,
    /// The affinity cookie to generate when `hash_key` is a cookie the request lacks.
    pub cookie: config::CookieSettings,
}

// === impl Generation ===

impl Generation {
    /// Builds every runtime object from a validated config; fails on the first error.
    pub fn build(config: Arc<Config>, ctx: &BuildContext<'_>) -> Result<Generation, BuildError> {
        let mut clusters = FxHashMap::default();
        for (index, c) in config.clusters.iter().enumerate() {
            if let Some(prev) = ctx.previous.and_then(|p| p.clusters.get(&c.name)).filter(|e| same(&e.config, c)) {
                clusters.insert(c.name.clone(), prev.clone());
                continue;
            }
            let tls = ClientTls::for_cluster(c, ctx.base_dir).map_err(|e| BuildError::Tls {
                what: format!("clusters[{index}] \"{}\"", c.name),
                message: e.to_string(),
            })?;
            let cluster = upstream::Cluster::build_with_tls(c, ctx.upstream_metrics, tls)
                .map_err(|source| BuildError::Cluster { index, name: c.name.clone(), source })?;
            let hash_key = (c.lb == config::LbPolicy::ConsistentHash).then(|| c.hash.key.clone());
            clusters.insert(
                c.name.clone(),
                Arc::new(ClusterEntry {
                    config: c.clone(),
                    cluster,
                    request_timeout: c.request_timeout.non_zero(),
                    hash_key,
                    cookie: c.hash.cookie.clone(),
                }),
            );
        }
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (index, l) in config.listeners.iter().enumerate() {
            let address: SocketAddr = l.address.parse().map_err(|e| BuildError::Address {
                index,
                message: format!("invalid socket address \"{}\": {e}", l.address),
            })?;
            let mut plugins = Vec::with_capacity(l.filters.len());
            for (fi, f) in l.filters.iter().enumerate() {
                let err =
                    |message: String| BuildError::Filter { listener: index, filter: fi, name: f.name.clone(), message };
                let bytes = module_bytes(&f.module, ctx.base_dir).map_err(err)?;
                let sha = Sha256::digest(&bytes);
                let reused = ctx.previous.and_then(|p| p.find_plugin(l, f, sha.as_slice()));
                let plugin = match reused {
                    Some(p) => p,
                    None => Plugin::load_on(ctx.wasm, f, &bytes, Some((l.name.as_str().into(), l.direction)))
                        .map_err(|e| err(e.to_string()))?,
                };
                plugins.push(plugin);
            }
            // Same plugins in the same order: keep the chain itself, so workers keep
            // their instantiated chain.
            let chain = ctx
                .previous
                .and_then(|p| p.listener(&l.name))
                .map(|pl| pl.chain.clone())
                .filter(|c| {
                    c.plugins.len() == plugins.len() && c.plugins.iter().zip(&plugins).all(|(a, b)| Arc::ptr_eq(a, b))
                })
                .unwrap_or_else(|| Arc::new(ChainSpec { plugins }));
            // Unchanged TLS settings keep the running `ServerTls` (its session caches and
            // rotation state); changed ones build anew.
            let tls = match &l.tls {
                None => None,
                Some(t) => match ctx
                    .previous
                    .and_then(|p| p.config.listeners.iter().zip(&p.listeners).find(|(pc, _)| pc.name == l.name))
                    .filter(|(pc, _)| same(&pc.tls, &l.tls) && pc.protocol == l.protocol)
                    .and_then(|(_, ps)| ps.tls.clone())
                {
                    Some(prev) => Some(prev),
                    None => Some(ServerTls::build_for_protocol(t, ctx.base_dir, l.protocol).map_err(|e| {
                        BuildError::Tls { what: format!("listeners[{index}] \"{}\"", l.name), message: e.to_string() }
                    })?),
                },
            };
            let name: Arc<str> = Arc::from(l.name.as_str());
            listeners.push(Arc::new(ListenerSpec {
                stats: ctx.proxy_metrics.listener(&name),
                name,
                address,
                direction: l.direction,
                default_cluster: l.default_cluster.as_deref().map(DefaultCluster::new),
                http: l.http.clone(),
                protocol: l.protocol,
                chain,
                tls,
            }));
        }
        Ok(Generation { number: ctx.number, config, listeners, clusters })
    }

    /// A plugin of this generation built from the same filter config and module bytes.
    ///
    /// Only from the same listener with the same direction: a plugin's root context is
    /// one listener's (as in Envoy), so a filter may keep what it learnt about the
    /// listener (the telemetry filter keeps `listener_direction`).
    fn find_plugin(&self, listener: &config::Listener, filter: &config::Filter, sha256: &[u8]) -> Option<Arc<Plugin>> {
        let wanted = serde_json::to_value(filter).ok()?;
        self.config
            .listeners
            .iter()
            .zip(&self.listeners)
            .filter(|(lc, _)| lc.name == listener.name && lc.direction == listener.direction)
            .flat_map(|(lc, ls)| lc.filters.iter().zip(ls.chain.plugins.iter()))
            .find(|(fc, p)| p.sha256.as_slice() == sha256 && serde_json::to_value(fc).ok().as_ref() == Some(&wanted))
            .map(|(_, p)| p.clone())
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerSpec>> {
        self.listeners.iter().find(|l| &*l.name == name)
    }
}

/// Two configs are the same when they serialize the same.
fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The bytes of a filter module: embedded (`builtin:<name>`) or read from a file.
pub fn module_bytes(module: &str, base_dir: &Path) -> Result<Vec<u8>, String> {
    if let Some(name) = module.strip_prefix("builtin:") {
        return crate::builtins::module(name).map(<[u8]>::to_vec).ok_or_else(|| {
            format!("unknown builtin filter \"{name}\" (known: {})", crate::builtins::names().join(", "))
        });
    }
    let path = base_dir.join(module);
    std::fs::read(&path).map_err(|e| format!("cannot read module {}: {e}", path.display()))
}

/// A listener's default cluster: its name, and the same as the property value filters
/// see (`wasmesh.upstream.cluster`), both shared so a request copies neither.
#[derive(Debug, Clone)]
pub struct DefaultCluster {
    /// The cluster name.
    pub name: Arc<str>,
    /// The name as a property value.
    pub value: bytes::Bytes,
}

impl DefaultCluster {
    fn new(name: &str) -> DefaultCluster {
        let value = bytes::Bytes::copy_from_slice(name.as_bytes());
        // A `Bytes` made from a vector becomes shareable on its first clone (which
        // allocates): done here, so a request's clone only counts a reference.
        drop(value.clone());
        DefaultCluster { name: name.into(), value }
    }
}
