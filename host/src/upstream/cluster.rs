//! The runtime `Cluster`: endpoints with their subsets and load balancers, behind an
//! `ArcSwap` so a DNS refresh swaps the whole set at once. Shared by all workers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::endpoint::{ClusterShared, EndpointState};
use super::error::UpstreamError;
use super::lb::{self, Balancer, Filter};
use super::metrics::{ClusterMetrics, UpstreamMetrics};
use super::resolve::{self, Target};
use crate::config::{self, HashAlgorithm, HashSettings, LbPolicy, UpstreamProtocol};
use crate::tls::ClientTls;

/// A cluster as workers use it: pick an endpoint, read its settings.
///
/// Endpoint choice skips unhealthy and ejected endpoints; when *every* endpoint of the
/// host set is unavailable it picks among all of them (Envoy's panic threshold at its
/// simplest), so a fully ejected cluster degrades to plain balancing instead of
/// refusing all traffic. `NoHealthyUpstream` therefore means an empty host set.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    protocol: UpstreamProtocol,
    lb: LbPolicy,
    hash: HashSettings,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    dns_refresh: Option<Duration>,
    pub(crate) pool: PoolConfig,
    specs: Vec<EndpointSpec>,
    subsets: Vec<config::Subset>,
    set: ArcSwap<EndpointSet>,
    shared: Arc<ClusterShared>,
    tls: Option<Arc<ClientTls>>,
}

/// What a request asks of the load balancer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickRequest<'a> {
    /// Named subset to choose from (`wasmesh.upstream.subset`); `None` = all endpoints.
    pub subset: Option<&'a str>,
    /// Consistent-hash key; `None` makes a consistent-hash cluster pick at random.
    pub hash_key: Option<&'a [u8]>,
    /// Endpoints earlier attempts of this request went to: avoided while another
    /// available endpoint exists (Istio `retryIgnorePreviousHosts`, Envoy's
    /// previous_hosts retry predicate).
    pub exclude: &'a [SocketAddr],
}

/// Connection-pool settings of a cluster, as each worker's pool applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolConfig {
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle_per_endpoint: usize,
}

/// One configured endpoint (the DNS refresh re-resolves from these).
#[derive(Debug)]
struct EndpointSpec {
    address: String,
    target: Target,
    labels: BTreeMap<String, String>,
    weight: u32,
}

/// The endpoints and their precomputed host sets (all, and one per subset).
#[derive(Debug)]
struct EndpointSet {
    /// Every endpoint, in config order.
    all: HostSet,
    subsets: HashMap<String, HostSet>,
}

/// Endpoints and the balancer built over them.
#[derive(Debug)]
struct HostSet {
    endpoints: Vec<Arc<EndpointState>>,
    balancer: Balancer,
}

// === impl Cluster ===

impl Cluster {
    /// Builds the runtime cluster: checks the settings, resolves host names (blocking —
    /// call it on the control side), precomputes subsets and balancers, and resolves the
    /// metric handles.
    pub fn build(cfg: &config::Cluster, metrics: &UpstreamMetrics) -> Result<Arc<Cluster>, UpstreamError> {
        Self::build_with_tls(cfg, metrics, None)
    }

    /// [`Cluster::build`] for a cluster reached over TLS (`tls` from the cluster's
    /// `tls:` settings).
    pub fn build_with_tls(
        cfg: &config::Cluster,
        metrics: &UpstreamMetrics,
        tls: Option<Arc<ClientTls>>,
    ) -> Result<Arc<Cluster>, UpstreamError> {
        let invalid = |message: String| UpstreamError::InvalidConfig { cluster: cfg.name.clone(), message };
        if cfg.lb == LbPolicy::ConsistentHash {
            if cfg.hash.table_size == 0 {
                return Err(invalid("hash.table_size must be at least 1".into()));
            }
            if cfg.hash.algorithm == HashAlgorithm::Maglev && u64::from(cfg.hash.table_size) > lb::MAX_MAGLEV_TABLE {
                return Err(invalid(format!(
                    "hash.table_size {} is over the maglev maximum {}",
                    cfg.hash.table_size,
                    lb::MAX_MAGLEV_TABLE
                )));
            }
        }
        let mut specs = Vec::with_capacity(cfg.endpoints.len());
        for (i, e) in cfg.endpoints.iter().enumerate() {
            if e.weight == 0 {
                return Err(invalid(format!("endpoints[{i}] \"{}\": weight must be at least 1", e.address)));
            }
            if cfg.endpoints[..i].iter().any(|o| o.address == e.address) {
                return Err(invalid(format!("endpoints[{i}] \"{}\" is listed twice", e.address)));
            }
            let target = resolve::parse(&e.address).map_err(|m| invalid(format!("endpoints[{i}]: {m}")))?;
            specs.push(EndpointSpec { address: e.address.clone(), target, labels: e.labels.clone(), weight: e.weight });
        }
        for (i, s) in cfg.subsets.iter().enumerate() {
            if s.name.is_empty() || cfg.subsets[..i].iter().any(|o| o.name == s.name) {
                return Err(invalid(format!("subsets[{i}]: the name \"{}\" is empty or used twice", s.name)));
            }
        }

        let shared = Arc::new(ClusterShared {
            name: cfg.name.clone(),
            active_requests: AtomicU64::new(0),
            metrics: metrics.cluster(&cfg.name),
        });
        let mut endpoints = Vec::with_capacity(specs.len());
        for spec in &specs {
            let addr = match &spec.target {
                Target::Ip(a) => *a,
                Target::Name { host, port } => resolve::resolve_blocking(host, *port).map_err(|source| {
                    UpstreamError::Resolve { cluster: cfg.name.clone(), address: spec.address.clone(), source }
                })?,
            };
            endpoints.push(Arc::new(spec.endpoint(addr, &shared).map_err(invalid)?));
        }
        let set = EndpointSet::build(endpoints, &cfg.subsets, cfg.lb, &cfg.hash);
        shared.metrics.endpoints.set(i64::try_from(specs.len()).unwrap_or(i64::MAX));

        let cluster = Arc::new(Cluster {
            name: cfg.name.clone(),
            protocol: cfg.protocol,
            lb: cfg.lb,
            hash: cfg.hash.clone(),
            connect_timeout: cfg.connect_timeout.get(),
            request_timeout: cfg.request_timeout.non_zero(),
            dns_refresh: cfg.dns_refresh.non_zero(),
            pool: PoolConfig {
                protocol: cfg.protocol,
                connect_timeout: cfg.connect_timeout.get(),
                idle_timeout: cfg.pool.idle_timeout.get(),
                max_idle_per_endpoint: usize::try_from(cfg.pool.max_idle_per_endpoint).unwrap_or(usize::MAX),
            },
            specs,
            subsets: cfg.subsets.clone(),
            set: ArcSwap::from_pointee(set),
            shared,
            tls,
        });
        metrics.track(&cluster);
        Ok(cluster)
    }

    /// The TLS settings for dialing endpoints (`None`: plaintext).
    pub fn tls(&self) -> Option<&Arc<ClientTls>> {
        self.tls.as_ref()
    }

    /// Picks an endpoint for one request (lock-free). Unknown subset → `UnknownSubset`;
    /// empty host set → `NoHealthyUpstream`.
    pub fn pick(&self, req: &PickRequest<'_>) -> Result<Arc<EndpointState>, UpstreamError> {
        let set = self.set.load();
        let hosts = match req.subset {
            None => &set.all,
            Some(name) => set
                .subsets
                .get(name)
                .ok_or_else(|| UpstreamError::UnknownSubset { cluster: self.name.clone(), subset: name.to_string() })?,
        };
        let eps = &hosts.endpoints;
        let fresh = |e: &EndpointState| e.is_available() && !req.exclude.contains(&e.addr());
        hosts
            .balancer
            .pick_where(eps, req.hash_key, fresh)
            // Every available endpoint was tried already: balance as without the exclusion.
            .or_else(|| (!req.exclude.is_empty()).then(|| hosts.balancer.pick(eps, req.hash_key, Filter::Available))?)
            .or_else(|| hosts.balancer.pick(eps, req.hash_key, Filter::Any))
            .and_then(|i| eps.get(i).cloned())
            .ok_or_else(|| UpstreamError::NoHealthyUpstream { cluster: self.name.clone() })
    }

    /// Metric handles of this cluster.
    pub(crate) fn metrics(&self) -> &ClusterMetrics {
        &self.shared.metrics
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Upstream HTTP protocol.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Load-balancing policy.
    pub fn lb(&self) -> LbPolicy {
        self.lb
    }

    /// Consistent-hash settings (meaningful with `LbPolicy::ConsistentHash`).
    pub fn hash(&self) -> &HashSettings {
        &self.hash
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whole-exchange timeout; `None` when disabled.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// Requests in flight on this cluster, over every endpoint and worker
    /// (`wasmesh.cluster.<name>.active_requests`).
    pub fn active_requests(&self) -> u64 {
        self.shared.active_requests.load(Ordering::Relaxed)
    }

    /// Endpoints that are healthy and not ejected (`wasmesh.cluster.<name>.healthy_endpoints`).
    pub fn healthy_endpoints(&self) -> usize {
        self.set.load().all.endpoints.iter().filter(|e| e.is_available()).count()
    }

    /// Every endpoint, in config order.
    pub fn endpoints(&self) -> Vec<Arc<EndpointState>> {
        self.set.load().all.endpoints.clone()
    }

    /// The endpoint currently resolved to `addr`, if any (for ejection by address).
    pub fn endpoint(&self, addr: SocketAddr) -> Option<Arc<EndpointState>> {
        self.set.load().all.endpoints.iter().find(|e| e.addr() == addr).cloned()
    }

    /// Names of the configured subsets, in config order.
    pub fn subset_names(&self) -> impl Iterator<Item = &str> {
        self.subsets.iter().map(|s| s.name.as_str())
    }

    /// The JSON view for the admin `/clusters` page.
    pub fn snapshot(&self) -> serde_json::Value {
        let set = self.set.load();
        let subsets: Vec<serde_json::Value> = self
            .subsets
            .iter()
            .map(|s| {
                let members: Vec<&str> = set
                    .subsets
                    .get(&s.name)
                    .map(|h| h.endpoints.iter().map(|e| e.address()).collect())
                    .unwrap_or_default();
                serde_json::json!({ "name": s.name, "labels": s.labels, "endpoints": members })
            })
            .collect();
        let mut v = serde_json::json!({
            "name": self.name,
            "lb": self.lb,
            "protocol": self.protocol,
            "active_requests": self.active_requests(),
            "healthy_endpoints": self.healthy_endpoints(),
            "endpoints": set.all.endpoints.iter().map(|e| e.snapshot()).collect::<Vec<_>>(),
            "subsets": subsets,
        });
        if self.lb == LbPolicy::ConsistentHash {
            v["hash"] = serde_json::json!({ "algorithm": self.hash.algorithm, "table_size": self.hash.table_size });
        }
        v
    }

    /// Starts the task that re-resolves host-name endpoints every `dns_refresh`; `None`
    /// when every endpoint is an IP literal or the refresh is disabled (0). The task
    /// holds only a weak reference and ends once the cluster is dropped (or when the
    /// handle is aborted). Must be called inside a tokio runtime.
    pub fn spawn_dns_refresh(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.dns_refresh?;
        if !self.specs.iter().any(|s| matches!(s.target, Target::Name { .. })) {
            return None;
        }
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate: build just resolved
            loop {
                tick.tick().await;
                let Some(cluster) = weak.upgrade() else { break };
                cluster.refresh_dns().await;
            }
        }))
    }

    /// Re-resolves every host-name endpoint now; returns true when the endpoint set was
    /// swapped. A failed lookup keeps the old address (and is logged and counted).
    pub async fn refresh_dns(&self) -> bool {
        let mut resolved = Vec::with_capacity(self.specs.len());
        for spec in &self.specs {
            resolved.push(match &spec.target {
                Target::Ip(a) => Some(*a),
                Target::Name { host, port } => match resolve::resolve(host, *port).await {
                    Ok(a) => Some(a),
                    Err(error) => {
                        tracing::warn!(cluster = %self.name, address = %spec.address, %error, "DNS refresh failed");
                        self.shared.metrics.dns_failures.inc();
                        None
                    }
                },
            });
        }
        self.apply_resolved(&resolved)
    }

    /// Swaps in a new endpoint set when any address in `resolved` (one per spec, `None` =
    /// keep) differs; endpoints whose address did not change keep their state.
    fn apply_resolved(&self, resolved: &[Option<SocketAddr>]) -> bool {
        let current = self.set.load_full();
        let mut changed = false;
        let mut endpoints = Vec::with_capacity(self.specs.len());
        for ((spec, old), new) in self.specs.iter().zip(&current.all.endpoints).zip(resolved) {
            let keep = match new {
                None => true,
                Some(a) => old.same_identity(&spec.address, *a),
            };
            match (keep, new) {
                (false, Some(a)) => match spec.endpoint(*a, &self.shared) {
                    Ok(e) => {
                        tracing::info!(cluster = %self.name, address = %spec.address, from = %old.addr(), to = %a, "endpoint re-resolved");
                        changed = true;
                        endpoints.push(Arc::new(e));
                    }
                    Err(_) => endpoints.push(old.clone()),
                },
                _ => endpoints.push(old.clone()),
            }
        }
        if changed {
            self.set.store(Arc::new(EndpointSet::build(endpoints, &self.subsets, self.lb, &self.hash)));
        }
        changed
    }
}

// === impl EndpointSpec ===

impl EndpointSpec {
    fn endpoint(&self, addr: SocketAddr, shared: &Arc<ClusterShared>) -> Result<EndpointState, String> {
        EndpointState::new(self.address.clone(), addr, self.labels.clone(), self.weight, shared.clone())
            .map_err(|e| format!("endpoint \"{}\": {e}", self.address))
    }
}

// === impl EndpointSet ===

impl EndpointSet {
    fn build(
        endpoints: Vec<Arc<EndpointState>>,
        subsets: &[config::Subset],
        policy: LbPolicy,
        hash: &HashSettings,
    ) -> EndpointSet {
        let subsets = subsets
            .iter()
            .map(|s| {
                let members: Vec<Arc<EndpointState>> = endpoints
                    .iter()
                    .filter(|e| s.labels.iter().all(|(k, v)| e.labels().get(k) == Some(v)))
                    .cloned()
                    .collect();
                (s.name.clone(), HostSet::new(members, policy, hash))
            })
            .collect();
        EndpointSet { all: HostSet::new(endpoints, policy, hash), subsets }
    }
}

// === impl HostSet ===

impl HostSet {
    fn new(endpoints: Vec<Arc<EndpointState>>, policy: LbPolicy, hash: &HashSettings) -> HostSet {
        let balancer = Balancer::build(policy, hash, &endpoints);
        HostSet { endpoints, balancer }
    }
}

#[cfg(test)]
mod tests;
