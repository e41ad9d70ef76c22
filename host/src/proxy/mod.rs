//! One request's journey: header fix-ups, the filter chain, the upstream exchange,
//! local replies. `exchange` is the path; `local_reply` the one error → response table.

mod body;
mod callout;
mod exchange;
mod headers;
mod local_reply;
pub mod metrics;
pub(crate) mod route;
mod upgrade;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use body::{BoxError, ProxyBody};
pub use exchange::{handle, ConnCtx};
pub use local_reply::{ExchangeError, LocalReply};
pub use metrics::ProxyMetrics;
pub use route::{PROP_CLUSTER, PROP_HASH_KEY, PROP_SUBSET, PROP_TIMEOUT_MS};

use crate::generation::Generation;
use crate::telemetry::AccessLogSink;
use crate::upstream::WorkerPools;
use crate::wasm::{WasmRuntime, WorkerWasm};

/// What one worker thread owns for the request path (never shared across threads).
pub struct WorkerCtx {
    /// The current generation; a request loads it once at its start.
    pub generation: Arc<ArcSwap<Generation>>,
    /// This worker's Wasm VMs.
    pub wasm: RefCell<WorkerWasm>,
    /// This worker's upstream connection pools.
    pub pools: Rc<WorkerPools>,
}

// === impl WorkerCtx ===

impl WorkerCtx {
    /// Sets up a worker's request-path state.
    pub fn new(generation: Arc<ArcSwap<Generation>>, wasm: Arc<WasmRuntime>, access_log: AccessLogSink) -> Rc<Self> {
        let pools = Rc::new(WorkerPools::new());
        let host = Rc::new(callout::CalloutHost::new(generation.clone(), pools.clone(), access_log));
        Rc::new(WorkerCtx { generation, wasm: RefCell::new(WorkerWasm::new(wasm, host)), pools })
    }
}
