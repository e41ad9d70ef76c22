//! Hostile and broken clients: header limits, malformed requests, slow clients,
//! smuggling attempts, and draining on shutdown.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmesh_tests::{simple_yaml, Client, TestProxy, Upstream};

/// Sends raw bytes and returns everything read until the peer closes (or 5 s pass).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn limited_yaml(up: &Upstream, http: &str) -> String {
    simple_yaml(&[up], "round_robin")
        .replace("    default_cluster: web\n", &format!("    default_cluster: web\n    http: {{ {http} }}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&limited_yaml(&up, "max_headers_count: 10"), 1);
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let resp = raw(proxy.addr("main"), req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_block_is_431() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&limited_yaml(&up, "max_request_headers_kb: 16"), 1);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n", "a".repeat(40 * 1024));
    let resp = raw(proxy.addr("main"), req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{}", &resp[..resp.len().min(200)]);
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_is_400_and_closed() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    let resp = raw(proxy.addr("main"), b"GARBAGE\x01\x02 / HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_never_smuggles() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    // CL.TE: a front end honouring Content-Length would see a second request "GET /smuggled".
    let req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = raw(proxy.addr("main"), req).await;
    let answers = resp.matches("HTTP/1.1 ").count();
    // Either rejected, or the chunked body wins and the connection closes: never two upstream requests.
    assert!(answers <= 1 || resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(up.hits() <= 1, "smuggled request reached the upstream ({} hits)", up.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_client_is_cut_off() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&limited_yaml(&up, "request_headers_timeout: 500ms"), 1);
    let mut tcp = TcpStream::connect(proxy.addr("main")).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    // Trickle a header byte every 100 ms; the proxy must close within the timeout.
    for _ in 0..40 {
        if tcp.write_all(b"x").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "slow client held the connection {:?}", started.elapsed());
    // A healthy request still works.
    assert_eq!(Client::http1().get(&proxy.url("main", "/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    let url = proxy.url("main", "/delay/700");
    let inflight = tokio::spawn(async move { Client::http1().get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = proxy.addr("main");
    let stopper = tokio::task::spawn_blocking(move || proxy.shutdown());
    let r = inflight.await.expect("join");
    assert_eq!(r.status, 200, "in-flight request finished during drain");
    stopper.await.expect("shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed after drain");
}
