//! Body types of the exchange: what goes downstream, and the channel that carries a
//! body through the filter chain when filters see it.

use bytes::Bytes;
use http_body::Frame;
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

/// Boxes a hyper body, so streaming passes through with no copy.
pub fn incoming(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// Frames sent into a channel body; a small bound gives back-pressure.
pub type FrameSender = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// A body fed frame by frame by a pump task (used when filters see the body).
pub fn channel() -> (FrameSender, ProxyBody) {
    let (tx, rx) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
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
}
