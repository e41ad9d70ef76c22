//! The pool against real sockets on 127.0.0.1: a working HTTP/1.1 and HTTP/2 upstream,
//! and each failure the error classification must name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::upstream::UpstreamMetrics;

fn empty() -> UpstreamBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

fn cluster(addr: SocketAddr, extra: &str) -> (Arc<Cluster>, Registry) {
    let registry = Registry::new();
    let metrics = UpstreamMetrics::new(&registry);
    let yaml = format!("name: up\nconnect_timeout: 300ms\n{extra}endpoints: [{{ address: \"{addr}\" }}]\n");
    let cfg: crate::config::Cluster = serde_yaml_ng::from_str(&yaml).expect("test yaml");
    (Cluster::build(&cfg, &metrics).expect("cluster"), registry)
}

fn request(uri: &str) -> Request<UpstreamBody> {
    Request::builder().uri(uri).header(header::HOST, "svc.example").body(empty()).expect("request")
}

/// An upstream answering `<method> <path?query> host=<host> <version>`; counts connections.
async fn echo_server(http2: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let svc = service_fn(|req: Request<Incoming>| async move {
                let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("-").to_string();
                let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
                let body = format!("{} {pq} host={host} {:?}", req.method(), req.version());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                let _ = if http2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await
                } else {
                    hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await
                };
            });
        }
    });
    (addr, conns)
}

async fn body_text(resp: Response<PooledBody>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn http1_sends_to_the_endpoint_keeps_host_and_reuses_the_connection() {
    let (addr, conns) = echo_server(false).await;
    let (c, registry) = cluster(addr, "");
    let pools = WorkerPools::new();
    for i in 0..3 {
        let ep = c.pick(&Default::default()).expect("pick");
        let resp = pools.send(&c, &ep, request(&format!("http://svc.example/a?i={i}"))).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(body_text(resp).await, format!("GET /a?i={i} host=svc.example HTTP/1.1"));
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "keep-alive reuses one connection");
    let text = crate::telemetry::render(&registry);
    assert!(text.contains("wasmesh_upstream_requests_total{cluster=\"up\"} 3"), "{text}");
}

#[tokio::test]
async fn host_comes_from_the_original_authority_when_absent() {
    let (addr, _) = echo_server(false).await;
    let (c, _) = cluster(addr, "");
    let pools = WorkerPools::new();
    let ep = c.pick(&Default::default()).expect("pick");
    let req = Request::builder().uri("http://api.example:8080/x").body(empty()).expect("request");
    let resp = pools.send(&c, &ep, req).await.expect("response");
    assert_eq!(body_text(resp).await, "GET /x host=api.example:8080 HTTP/1.1");
    // An origin-form URI without Host: the endpoint is named.
    let req = Request::builder().uri("/y").body(empty()).expect("request");
    let resp = pools.send(&c, &ep, req).await.expect("response");
    assert_eq!(body_text(resp).await, format!("GET /y host={addr} HTTP/1.1"));
}

#[tokio::test]
async fn http2_cluster_uses_prior_knowledge_and_one_connection() {
    let (addr, conns) = echo_server(true).await;
    let (c, _) = cluster(addr, "protocol: http2\n");
    let pools = WorkerPools::new();
    let ep = c.pick(&Default::default()).expect("pick");
    for _ in 0..3 {
        let resp = pools.send(&c, &ep, request("/h2")).await.expect("response");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(body_text(resp).await, "GET /h2 host=svc.example HTTP/2.0");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn closed_port_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (c, registry) = cluster(addr, "");
    let ep = c.pick(&Default::default()).expect("pick");
    let err = WorkerPools::new().send(&c, &ep, request("/")).await.expect_err("nothing listens");
    assert!(matches!(err, UpstreamError::ConnectFailure { .. }), "{err:?}");
    assert_eq!((err.flags().to_string().as_str(), err.status().as_u16(), err.retryable()), ("UF", 503, true));
    let text = crate::telemetry::render(&registry);
    assert!(text.contains("wasmesh_upstream_connect_failures_total{cluster=\"up\"} 1"), "{text}");
}

#[tokio::test]
async fn connect_timeout_is_a_connect_failure() {
    // A listener with a full accept queue that never accepts: the kernel drops further
    // SYNs, so the client's connect hangs until its connect timeout (300ms here).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let (c, _) = cluster(addr, "");
    let ep = c.pick(&Default::default()).expect("pick");
    let started = Instant::now();
    let err = WorkerPools::new().send(&c, &ep, request("/")).await.expect_err("queue is full");
    let took = started.elapsed();
    assert!(matches!(err, UpstreamError::ConnectFailure { .. }), "{err:?}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "took {took:?}");
    drop((listener, fillers));
}

/// A listener that runs `handle` on each accepted connection.
async fn raw_server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

#[tokio::test]
async fn accept_then_close_is_a_reset() {
    let addr = raw_server(|stream| async move { drop(stream) }).await;
    let (c, _) = cluster(addr, "");
    let ep = c.pick(&Default::default()).expect("pick");
    let err = WorkerPools::new().send(&c, &ep, request("/")).await.expect_err("closed at once");
    assert!(matches!(err, UpstreamError::Reset { .. }), "{err:?}");
    assert_eq!(err.status().as_u16(), 502);
    assert!(["UC", "UR"].contains(&err.flags().to_string().as_str()), "{err:?}");
    assert!(err.retryable());
}

#[tokio::test]
async fn close_after_reading_the_request_is_a_connection_termination() {
    let addr = raw_server(|mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let (c, _) = cluster(addr, "");
    let ep = c.pick(&Default::default()).expect("pick");
    let err = WorkerPools::new().send(&c, &ep, request("/")).await.expect_err("closed before head");
    assert!(matches!(err, UpstreamError::Reset { remote: false, .. }), "{err:?}");
    assert_eq!(err.flags().to_string(), "UC");
}

#[tokio::test]
async fn silent_upstream_times_out_in_the_caller() {
    let addr = raw_server(|mut stream| async move {
        let mut buf = [0u8; 1024];
        // Read the request, never answer; hold the socket for longer than the test.
        let _ = stream.read(&mut buf).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let (c, _) = cluster(addr, "");
    let ep = c.pick(&Default::default()).expect("pick");
    let started = Instant::now();
    let err = WorkerPools::new()
        .send_timeout(&c, &ep, request("/"), Some(Duration::from_millis(200)))
        .await
        .expect_err("no answer");
    assert!(matches!(err, UpstreamError::Timeout), "{err:?}");
    assert_eq!((err.flags().to_string().as_str(), err.status().as_u16()), ("UT", 504));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn garbage_response_is_a_protocol_error() {
    let addr = raw_server(|mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(b"SPEAKING NONSENSE\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let (c, _) = cluster(addr, "");
    let ep = c.pick(&Default::default()).expect("pick");
    let err = WorkerPools::new().send(&c, &ep, request("/")).await.expect_err("not http");
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
    assert_eq!((err.flags().to_string().as_str(), err.status().as_u16()), ("UPE", 502));
}

#[tokio::test]
async fn changed_pool_settings_replace_the_client() {
    let (addr, conns) = echo_server(false).await;
    let pools = WorkerPools::new();
    let (a, _) = cluster(addr, "");
    let ep = a.pick(&Default::default()).expect("pick");
    pools.send(&a, &ep, request("/")).await.expect("response");
    // Same settings after a "reload": the warm connection is reused.
    let (b, _) = cluster(addr, "");
    let ep = b.pick(&Default::default()).expect("pick");
    pools.send(&b, &ep, request("/")).await.expect("response");
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // Different settings: a new client, a new connection.
    let (d, _) = cluster(addr, "pool: { max_idle_per_endpoint: 4 }\n");
    let ep = d.pick(&Default::default()).expect("pick");
    pools.send(&d, &ep, request("/")).await.expect("response");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    pools.retain(|_| false);
    assert!(format!("{pools:?}").contains("[]"));
}

#[tokio::test]
async fn http2_upstream_that_closes_fails_retryably() {
    // The HTTP/2 handshake is part of connecting: a peer that closes at once is reported
    // as a connect failure or a reset, both retryable 5xx.
    let addr = raw_server(|stream| async move { drop(stream) }).await;
    let (c, _) = cluster(addr, "protocol: http2\n");
    let ep = c.pick(&Default::default()).expect("pick");
    let err = WorkerPools::new().send(&c, &ep, request("/")).await.expect_err("closed at once");
    assert!(matches!(err, UpstreamError::ConnectFailure { .. } | UpstreamError::Reset { .. }), "{err:?}");
    assert!(err.retryable() && err.status().is_server_error(), "{err:?}");
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
    // Answers one request per connection with keep-alive, then closes it: the classic
    // keep-alive race. The next request must go out on a fresh connection, not fail.
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    let addr = raw_server(move |mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (c, _) = cluster(addr, "");
    let pools = WorkerPools::new();
    for i in 0..3 {
        let ep = c.pick(&Default::default()).expect("pick");
        let resp = pools.send(&c, &ep, request("/")).await.unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        assert_eq!(body_text(resp).await, "ok");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_expire_after_the_idle_timeout() {
    let (addr, conns) = echo_server(false).await;
    let (c, _) = cluster(addr, "pool: { idle_timeout: 150ms }\n");
    let pools = WorkerPools::new();
    let ep = c.pick(&Default::default()).expect("pick");
    body_text(pools.send(&c, &ep, request("/")).await.expect("response")).await;
    body_text(pools.send(&c, &ep, request("/")).await.expect("response")).await;
    assert_eq!(conns.load(Ordering::SeqCst), 1, "reused while fresh");
    tokio::time::sleep(Duration::from_millis(400)).await;
    body_text(pools.send(&c, &ep, request("/")).await.expect("response")).await;
    assert_eq!(conns.load(Ordering::SeqCst), 2, "a stale connection is not reused");
}

#[tokio::test]
async fn a_dropped_body_does_not_lose_the_connection() {
    let (addr, conns) = echo_server(false).await;
    let (c, _) = cluster(addr, "");
    let pools = WorkerPools::new();
    let ep = c.pick(&Default::default()).expect("pick");
    for _ in 0..3 {
        drop(pools.send(&c, &ep, request("/")).await.expect("response"));
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "a short unread body is drained and the connection reused");
}
