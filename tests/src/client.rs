//! Real HTTP/1.1 and HTTP/2 clients for driving the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A pooled client speaking HTTP/1.1, or HTTP/2 with prior knowledge.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Body>,
}

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

// === impl Client ===

impl Client {
    /// An HTTP/1.1 client.
    pub fn http1() -> Client {
        Client { inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http() }
    }

    /// An HTTP/2 (h2c prior knowledge) client.
    pub fn http2() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http(),
        }
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(full(Bytes::new())).expect("request")).await
    }

    /// GET `url` with extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(full(Bytes::new())).expect("request")).await
    }

    /// `method` `url` with a body.
    pub async fn request(&self, method: Method, url: &str, body: Body) -> Reply {
        self.send(Request::builder().method(method).uri(url).body(body).expect("request")).await
    }

    /// Sends `req` and reads the whole response (10 s limit).
    pub async fn send(&self, req: Request<Body>) -> Reply {
        match self.try_send(req).await {
            Ok(r) => r,
            Err(e) => panic!("request failed: {e}"),
        }
    }

    /// Sends `req` and counts the response body bytes without keeping them.
    pub async fn send_counting(&self, req: Request<Body>) -> (StatusCode, usize) {
        let resp = self.inner.request(req).await.unwrap_or_else(|e| panic!("request failed: {e:?}"));
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap_or_else(|e| panic!("body failed: {e}")).into_data() {
                n += d.len();
            }
        }
        (status, n)
    }

    /// Sends `req`; errors come back instead of panicking.
    pub async fn try_send(&self, req: Request<Body>) -> Result<Reply, String> {
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let collected = body.collect().await.map_err(|e| format!("body: {e}"))?;
            let trailers = collected.trailers().cloned();
            Ok(Reply { status: parts.status, headers: parts.headers, body: collected.to_bytes(), trailers })
        };
        tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| "timed out after 10 s".to_string())?
    }
}

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

// === impl Reply ===

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}
