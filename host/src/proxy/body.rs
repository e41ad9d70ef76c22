//! Body types of the exchange: what goes downstream, and how a body reaches the other
//! side through the filter chain when filters see it (a channel fed by a pump task for
//! request bodies, which the upstream client needs `Send`; a pump driven by the reader
//! itself for response bodies, so no task, no channel, and the first bytes leave with
//! the response head).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use tokio::sync::mpsc;

/// Boxed error of a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends downstream (and every request upstream).
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes a hyper body (downstream request, upstream response), so streaming passes
/// through with no copy.
pub fn incoming<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// Passes `body` through untouched (and `Send`, as the upstream client needs), adding its
/// data bytes to `counter` as they go by.
pub fn counted(body: ProxyBody, counter: Arc<AtomicU64>) -> ProxyBody {
    Counted { body, counter }.boxed_unsync()
}

/// See [`counted`].
struct Counted {
    body: ProxyBody,
    counter: Arc<AtomicU64>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            self.counter.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Frames sent into a channel body; a small bound gives back-pressure.
pub type FrameSender = mpsc::Sender<FrameResult>;

/// A body fed frame by frame by a pump task (used when filters see the body).
pub fn channel() -> (FrameSender, ProxyBody) {
    let (tx, rx) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
}

/// One body frame, or the error that ends the body.
pub type FrameResult = Result<Frame<Bytes>, BoxError>;

/// The reader of a body is gone; stop producing it.
#[derive(Debug)]
pub struct Gone;

/// Where a body pump puts the frames it forwards.
pub(crate) trait FrameSink {
    /// Hands one frame on, waiting while the reader has not taken the previous one.
    async fn put(&self, frame: FrameResult) -> Result<(), Gone>;
}

impl FrameSink for FrameSender {
    async fn put(&self, frame: FrameResult) -> Result<(), Gone> {
        self.send(frame).await.map_err(|_| Gone)
    }
}

/// The one-frame hand-over between a [`Driven`] body and the pump future inside it.
#[derive(Clone, Default)]
pub struct Slot(Rc<RefCell<Option<FrameResult>>>);

impl FrameSink for Slot {
    async fn put(&self, frame: FrameResult) -> Result<(), Gone> {
        let mut frame = Some(frame);
        // Pending without a waker is right here: the only one polling this future is
        // `Driven::poll_frame`, which polls it again after taking the frame out.
        std::future::poll_fn(|_| {
            let mut slot = self.0.borrow_mut();
            if slot.is_some() {
                return Poll::Pending;
            }
            *slot = frame.take();
            Poll::Ready(Ok(()))
        })
        .await
    }
}

/// A body whose frames a future produces as the reader polls it (`!Send`: it lives on
/// the worker with the filters it runs).
pub struct Driven {
    slot: Slot,
    pump: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl Driven {
    /// A body fed by `make(slot)`, which puts its frames into `slot`.
    pub fn new<F, Fut>(make: F) -> Self
    where
        F: FnOnce(Slot) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let slot = Slot::default();
        let pump = Box::pin(make(slot.clone()));
        Driven { slot, pump: Some(pump) }
    }
}

impl Body for Driven {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let this = self.get_mut();
        if let Some(frame) = this.slot.0.borrow_mut().take() {
            return Poll::Ready(Some(frame));
        }
        let Some(pump) = this.pump.as_mut() else { return Poll::Ready(None) };
        let done = pump.as_mut().poll(cx).is_ready();
        if done {
            this.pump = None;
        }
        match this.slot.0.borrow_mut().take() {
            Some(frame) => Poll::Ready(Some(frame)),
            None if done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pump.is_none() && self.slot.0.borrow().is_none()
    }
}

/// A body passed through untouched whose size is reported once: when it ends, fails
/// or is dropped unfinished (for filters that do not read the body but log its size).
pub struct Metered {
    body: ProxyBody,
    bytes: u64,
    on_end: Option<Box<dyn FnOnce(u64)>>,
}

impl Metered {
    /// Passes `body` through; `on_end` gets the number of data bytes that went by.
    pub fn new(body: ProxyBody, on_end: impl FnOnce(u64) + 'static) -> Self {
        Metered { body, bytes: 0, on_end: Some(Box::new(on_end)) }
    }

    fn end(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes);
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                if this.body.is_end_stream() {
                    this.end();
                }
            }
            Poll::Ready(_) => this.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.end();
    }
}

/// The body of every response sent downstream.
pub enum DownstreamBody {
    /// Passed through untouched, or a local reply.
    Plain(ProxyBody),
    /// Run through the response-body filters as the client reads it.
    Filtered(Driven),
    /// Passed through untouched past filters that only log its size.
    Metered(Metered),
}

impl From<ProxyBody> for DownstreamBody {
    fn from(body: ProxyBody) -> Self {
        DownstreamBody::Plain(body)
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        match self.get_mut() {
            DownstreamBody::Plain(b) => Pin::new(b).poll_frame(cx),
            DownstreamBody::Filtered(b) => Pin::new(b).poll_frame(cx),
            DownstreamBody::Metered(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::Plain(b) => b.is_end_stream(),
            DownstreamBody::Filtered(b) => b.is_end_stream(),
            DownstreamBody::Metered(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownstreamBody::Plain(b) => b.size_hint(),
            DownstreamBody::Filtered(b) => b.size_hint(),
            DownstreamBody::Metered(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_body_carries_data_and_trailers() {
        let (tx, body) = channel();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"ab")))).await;
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            let _ = tx.send(Ok(Frame::trailers(t))).await;
        });
        let collected = body.collect().await.expect("collect");
        let trailers = collected.trailers().cloned();
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"ab"));
        assert_eq!(
            trailers.and_then(|t| t.get("grpc-status").cloned()).map(|v| v.as_bytes().to_vec()),
            Some(b"0".to_vec())
        );
    }

    #[tokio::test]
    async fn driven_body_yields_frames_in_order_then_ends() {
        let body = Driven::new(|slot| async move {
            for chunk in [&b"a"[..], b"bc", b"def"] {
                if slot.put(Ok(Frame::data(Bytes::from_static(chunk)))).await.is_err() {
                    return;
                }
            }
            let mut t = http::HeaderMap::new();
            t.insert("x-done", http::HeaderValue::from_static("1"));
            let _ = slot.put(Ok(Frame::trailers(t))).await;
        });
        let collected = body.collect().await.expect("collect");
        assert_eq!(collected.trailers().and_then(|t| t.get("x-done")).map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"abcdef"));
    }

    #[tokio::test]
    async fn metered_body_reports_its_size_once_at_the_end_or_on_drop() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        let (tx, inner) = channel();
        let body = Metered::new(inner, move |n| log.borrow_mut().push(n));
        tokio::spawn(async move {
            for chunk in [&b"abc"[..], b"defgh"] {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(chunk)))).await;
            }
        });
        assert_eq!(body.collect().await.expect("collect").to_bytes(), Bytes::from_static(b"abcdefgh"));
        assert_eq!(*seen.borrow(), [8], "reported once, at the end");

        let log = seen.clone();
        let (tx, inner) = channel();
        let mut body = Metered::new(inner, move |n| log.borrow_mut().push(n));
        tx.send(Ok(Frame::data(Bytes::from_static(b"xy")))).await.expect("send");
        assert_eq!(body.frame().await.expect("frame").expect("ok").into_data().expect("data").len(), 2);
        drop(body);
        assert_eq!(*seen.borrow(), [8, 2], "a body dropped unfinished reports what went by");
    }

    #[tokio::test]
    async fn counted_body_passes_frames_and_counts_data_bytes() {
        let counter = Arc::new(AtomicU64::new(0));
        let (tx, inner) = channel();
        let body = counted(inner, counter.clone());
        tokio::spawn(async move {
            for chunk in [&b"abc"[..], b"de"] {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(chunk)))).await;
            }
            let mut t = http::HeaderMap::new();
            t.insert("x-t", http::HeaderValue::from_static("1"));
            let _ = tx.send(Ok(Frame::trailers(t))).await;
        });
        let collected = body.collect().await.expect("collect");
        assert!(collected.trailers().is_some_and(|t| t.contains_key("x-t")));
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"abcde"));
        assert_eq!(counter.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn driven_body_waits_for_its_source() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
        let mut body = Driven::new(|slot| async move {
            if let Ok(b) = rx.await {
                let _ = slot.put(Ok(Frame::data(b))).await;
            }
        });
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert!(!body.is_end_stream());
        tx.send(Bytes::from_static(b"late")).expect("send");
        let frame = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(frame.into_data().expect("data"), Bytes::from_static(b"late"));
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }
}
