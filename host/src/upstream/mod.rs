//! Clusters, endpoints, subsets, load balancers, DNS and connection pools.
//! `Cluster` (shared by workers) picks an `EndpointState`; a worker's `WorkerPools` sends.
//! Never imports `wasm` or `proxy`.

mod cluster;
mod endpoint;
mod error;
mod hash;
mod lb;
mod limits;
mod metrics;
mod pool;
mod resolve;

pub use cluster::{Cluster, PickRequest};
pub use endpoint::{ActiveRequest, EndpointState};
pub use error::{BoxError, UpstreamError};
pub use limits::{LimitTable, Overflow, PoolLimits};
pub use metrics::UpstreamMetrics;
pub use pool::{PooledBody, UpstreamBody, WorkerPools};
