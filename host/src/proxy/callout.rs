//! `HostServices` for the Wasm host: filters' `http_call`s go to configured clusters
//! through this worker's pools; `wasmesh.access_log` lines go to the log.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Limited};

use super::body;
use crate::generation::Generation;
use crate::telemetry::AccessLogSink;
use crate::upstream::{PickRequest, WorkerPools};
use crate::wasm::{CalloutError, HostServices};

/// Largest callout response body a filter may receive.
const MAX_CALLOUT_BODY: usize = 4 * 1024 * 1024;

/// The proxy's side of the Wasm host's cross-cutting calls.
pub struct CalloutHost {
    generation: Arc<ArcSwap<Generation>>,
    pools: Rc<WorkerPools>,
    access_log: AccessLogSink,
}

// === impl CalloutHost ===

impl CalloutHost {
    /// For one worker.
    pub fn new(generation: Arc<ArcSwap<Generation>>, pools: Rc<WorkerPools>, access_log: AccessLogSink) -> Self {
        CalloutHost { generation, pools, access_log }
    }
}

impl HostServices for CalloutHost {
    fn http_call(
        &self,
        cluster: &str,
        req: http::Request<Bytes>,
        timeout: Option<Duration>,
    ) -> LocalBoxFuture<'static, Result<http::Response<Bytes>, CalloutError>> {
        let generation = self.generation.load_full();
        let pools = self.pools.clone();
        let cluster = cluster.to_string();
        async move {
            let entry = generation.clusters.get(&cluster).ok_or(CalloutError::UnknownCluster)?;
            let endpoint =
                entry.cluster.pick(&PickRequest::default()).map_err(|e| CalloutError::Failed(e.to_string()))?;
            let (parts, b) = req.into_parts();
            let req = http::Request::from_parts(parts, body::full(b));
            let _active = endpoint.track();
            let send = pools.send(&entry.cluster, &endpoint, req);
            let resp = match timeout {
                Some(t) => tokio::time::timeout(t, send).await.map_err(|_| CalloutError::Timeout)?,
                None => send.await,
            }
            .map_err(|e| CalloutError::Failed(e.to_string()))?;
            let (parts, b) = resp.into_parts();
            let collected = Limited::new(b, MAX_CALLOUT_BODY)
                .collect()
                .await
                .map_err(|e| CalloutError::Failed(format!("reading callout response: {e}")))?;
            Ok(http::Response::from_parts(parts, collected.to_bytes()))
        }
        .boxed_local()
    }

    fn has_cluster(&self, name: &str) -> bool {
        self.generation.load().clusters.contains_key(name)
    }

    fn cluster_stat(&self, cluster: &str, stat: &str) -> Option<u64> {
        let generation = self.generation.load();
        let c = &generation.clusters.get(cluster)?.cluster;
        match stat {
            "active_requests" => Some(c.active_requests()),
            "healthy_endpoints" => Some(c.healthy_endpoints() as u64),
            "endpoints" => Some(c.endpoints().len() as u64),
            // `pending_requests`: requests wait inside hyper's pool, which exposes no queue
            // length, so it is unknown (filters then assume HTTP/1 queueing).
            _ => None,
        }
    }

    fn access_log(&self, line: &str) {
        self.access_log.write(line);
    }
}
