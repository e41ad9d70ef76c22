//! The `/metrics` response body: the host's metrics, then the filters' metrics a
//! bounded chunk at a time, rendered as hyper asks for more — a scrape of many series
//! never holds the whole exposition in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::wasm::{FilterMetricsCursor, WasmRuntime};

/// Bytes rendered per chunk of filter metrics.
const CHUNK: usize = 64 * 1024;

/// Streams the Prometheus text exposition of one proxy.
pub struct MetricsBody {
    host: Option<Bytes>,
    wasm: Arc<WasmRuntime>,
    cursor: FilterMetricsCursor,
    done: bool,
}

impl MetricsBody {
    /// The host's metrics (already rendered), followed by the filter metrics of `wasm`.
    pub fn new(host: Bytes, wasm: Arc<WasmRuntime>) -> Self {
        MetricsBody { host: Some(host), wasm, cursor: FilterMetricsCursor::default(), done: false }
    }
}

impl Body for MetricsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(host) = this.host.take() {
            return Poll::Ready(Some(Ok(Frame::data(host))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let mut out = Vec::with_capacity(CHUNK + 4096);
        this.done = !this.wasm.render_filter_metrics(&mut this.cursor, &mut out, CHUNK);
        if out.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.host.is_none()
    }
}
