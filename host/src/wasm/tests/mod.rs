//! Tests of the wasm host: hostile and edge cases with inline WAT modules (`wat`), and
//! real filters built with the official proxy-wasm SDK from `tests/filters` (`filters`),
//! driving `HttpStream` directly inside a current-thread runtime + `LocalSet`.

#![allow(clippy::unwrap_used)]

mod filters;
mod fuzz;
mod wat;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::*;
use crate::config::{Direction, FailurePolicy, Filter, FilterLimits};

/// Runs `f` on a current-thread runtime inside a `LocalSet` (like a worker).
pub(super) fn run<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

/// A runtime with its own registry.
pub(super) fn runtime() -> (Arc<WasmRuntime>, prometheus::Registry) {
    let reg = prometheus::Registry::new();
    let node = NodeInfo {
        id: "node-1".into(),
        cluster: "mesh".into(),
        metadata: BTreeMap::from([("app".to_owned(), "demo".to_owned())]),
    };
    let rt = WasmRuntime::new(RuntimeOptions { cache_dir: None, node }, &reg).unwrap();
    (rt, reg)
}

/// A filter config with defaults.
pub(super) fn filter(name: &str) -> Filter {
    Filter {
        name: name.into(),
        module: format!("{name}.wasm"),
        root_id: String::new(),
        vm_id: String::new(),
        config: None,
        vm_config: None,
        env: BTreeMap::new(),
        failure: FailurePolicy::Closed,
        limits: FilterLimits::default(),
    }
}

/// The built test filter `name` (see `tests/filters/Cargo.toml`); panics with the build
/// command when it is missing.
pub(super) fn test_filter(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/filters/wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => panic!(
            "test filter {} is missing ({e}). Build the test filters first:\n  cargo build --release \
             --target wasm32-wasip1 --manifest-path tests/filters/Cargo.toml --target-dir /work/main/target/filters",
            path.display()
        ),
    }
}

/// Stream facts of a plaintext stream from 127.0.0.1:5555.
pub(super) fn info(max_body: u64) -> StreamInfo {
    StreamInfo {
        connection: Arc::new(ConnectionInfo {
            id: 7,
            source: "127.0.0.1:5555".parse().unwrap(),
            destination: "127.0.0.1:8080".parse().unwrap(),
            tls: None,
        }),
        listener: "inbound".into(),
        direction: Direction::Inbound,
        start: SystemTime::now(),
        max_buffered_body_bytes: max_body,
    }
}

/// A request head.
pub(super) fn request(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::get(path).header("host", "example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// A response head.
pub(super) fn response(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// Value of a counter/gauge sample of the host's registry with these labels.
pub(super) fn metric(reg: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for fam in reg.gather() {
        if fam.name() != name {
            continue;
        }
        for m in fam.get_metric() {
            let ok = labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v));
            if ok {
                return Some(match fam.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    _ => m.get_gauge().get_value(),
                });
            }
        }
    }
    None
}

/// Value of a filter-defined counter/gauge sample with these labels.
pub(super) fn filter_metric(rt: &WasmRuntime, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = rt.custom.render_all();
    let line = text.lines().find(|l| {
        l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' ']))
            && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
    })?;
    line.rsplit(' ').next()?.parse().ok()
}

/// Host services backed by real loopback HTTP/1 connections.
#[derive(Default)]
pub(super) struct TestHost {
    pub clusters: HashMap<String, SocketAddr>,
    pub access_log: RefCell<Vec<String>>,
    /// Offer gRPC calls (over HTTP/2 with prior knowledge).
    pub grpc: bool,
}

impl HostServices for TestHost {
    fn http_call(
        &self,
        cluster: &str,
        req: http::Request<Bytes>,
        timeout: Option<Duration>,
    ) -> LocalBoxFuture<'static, Result<http::Response<Bytes>, CalloutError>> {
        let addr = self.clusters.get(cluster).copied();
        Box::pin(async move {
            let addr = addr.ok_or(CalloutError::UnknownCluster)?;
            let call = async move {
                let fail = |e: &dyn std::fmt::Display| CalloutError::Failed(e.to_string());
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| fail(&e))?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| fail(&e))?;
                tokio::task::spawn_local(conn);
                let (mut parts, body) = req.into_parts();
                let host = parts.uri.authority().map(|a| a.to_string()).unwrap_or_default();
                parts.uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").parse().unwrap();
                parts.headers.insert("host", host.parse().unwrap());
                let resp =
                    send.send_request(http::Request::from_parts(parts, Full::new(body))).await.map_err(|e| fail(&e))?;
                let (p, b) = resp.into_parts();
                let body = b.collect().await.map_err(|e| fail(&e))?.to_bytes();
                Ok(http::Response::from_parts(p, body))
            };
            match timeout {
                Some(t) => tokio::time::timeout(t, call).await.map_err(|_| CalloutError::Timeout)?,
                None => call.await,
            }
        })
    }

    fn has_cluster(&self, name: &str) -> bool {
        self.clusters.contains_key(name)
    }

    fn supports_grpc(&self) -> bool {
        self.grpc
    }

    fn grpc_call(
        &self,
        cluster: &str,
        req: http::Request<Bytes>,
        timeout: Option<Duration>,
    ) -> LocalBoxFuture<'static, Result<(http::Response<Bytes>, http::HeaderMap), CalloutError>> {
        let addr = self.clusters.get(cluster).copied();
        Box::pin(async move {
            let addr = addr.ok_or(CalloutError::UnknownCluster)?;
            let call = async move {
                let fail = |e: &dyn std::fmt::Display| CalloutError::Failed(e.to_string());
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| fail(&e))?;
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .map_err(|e| fail(&e))?;
                tokio::task::spawn_local(conn);
                let (parts, body) = req.into_parts();
                let resp =
                    send.send_request(http::Request::from_parts(parts, Full::new(body))).await.map_err(|e| fail(&e))?;
                let (p, b) = resp.into_parts();
                let collected = b.collect().await.map_err(|e| fail(&e))?;
                let trailers = collected.trailers().cloned().unwrap_or_default();
                Ok((http::Response::from_parts(p, collected.to_bytes()), trailers))
            };
            match timeout {
                Some(t) => tokio::time::timeout(t, call).await.map_err(|_| CalloutError::Timeout)?,
                None => call.await,
            }
        })
    }

    fn access_log(&self, line: &str) {
        self.access_log.borrow_mut().push(line.to_owned());
    }
}

/// A loopback HTTP/1 server answering `/check`: 200 `ok` for `x-token: good`, else 403.
pub(super) async fn auth_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::task::spawn_local(async move {
        for _ in 0..64 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let good = req.headers().get("x-token").is_some_and(|v| v == "good");
                let (status, body) = if good { (200, "ok") } else { (403, "nope") };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap(),
                )
            });
            tokio::task::spawn_local(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    addr
}

/// Awaits `f` for at most 5 s.
pub(super) async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f).await.expect("timed out")
}

/// A body of one data frame then trailers.
struct TrailerBody {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for TrailerBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match (this.data.take(), this.trailers.take()) {
            (Some(d), t) => {
                this.trailers = t;
                Some(Ok(http_body::Frame::data(d)))
            }
            (None, Some(t)) => Some(Ok(http_body::Frame::trailers(t))),
            (None, None) => None,
        };
        std::task::Poll::Ready(frame)
    }
}

/// A loopback HTTP/2 gRPC server for `/test.Echo/Say`: answers the reversed message and
/// the `x-md` metadata (`"olleh|1"`), or status 7 `denied` (trailers-only) for `fail`.
pub(super) async fn grpc_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::task::spawn_local(async move {
        for _ in 0..64 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let path_ok = req.uri().path() == "/test.Echo/Say"
                    && req.headers().get("content-type").is_some_and(|v| v == "application/grpc");
                let md = req.headers().get("x-md").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
                let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                let msg = body.get(5..).unwrap_or_default();
                let mut resp = http::Response::builder().header("content-type", "application/grpc");
                let out = if !path_ok || msg == b"fail" {
                    resp = resp.header("grpc-status", "7").header("grpc-message", "denied");
                    TrailerBody { data: None, trailers: None }
                } else {
                    let mut reply: Vec<u8> = msg.iter().rev().copied().collect();
                    reply.extend_from_slice(format!("|{md}").as_bytes());
                    let mut framed = vec![0u8];
                    framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                    framed.extend_from_slice(&reply);
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", "0".parse().unwrap());
                    TrailerBody { data: Some(Bytes::from(framed)), trailers: Some(t) }
                };
                Ok::<_, std::convert::Infallible>(resp.body(out).unwrap())
            });
            tokio::task::spawn_local(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    addr
}

/// A worker with `host` and one chain of `plugins`.
pub(super) fn worker(
    rt: &Arc<WasmRuntime>,
    host: Rc<TestHost>,
    plugins: Vec<Arc<Plugin>>,
) -> (WorkerWasm, Rc<WorkerChain>, Arc<ChainSpec>) {
    let mut w = WorkerWasm::new(rt.clone(), host);
    let spec = Arc::new(ChainSpec { plugins });
    let chain = w.chain(&spec);
    (w, chain, spec)
}

/// The header value as a string (panics when absent).
pub(super) fn hv(h: &http::HeaderMap, k: &str) -> String {
    h.get(k).unwrap_or_else(|| panic!("header {k} missing in {h:?}")).to_str().unwrap().to_owned()
}
