//! Bodies stream both ways; trailers and upgrades pass (the bounded-memory upload is in
//! the soak binary, which measures RSS with nothing else running).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmesh_tests::{simple_yaml, Client, TestProxy, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    for client in [Client::http1(), Client::http2()] {
        let r = client.get(&proxy.url("main", "/bytes/5000000")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 5_000_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_over_http2() {
    let up = Upstream::start("web").await;
    let yaml =
        simple_yaml(&[&up], "round_robin").replace("    lb: round_robin", "    lb: round_robin\n    protocol: http2");
    let proxy = TestProxy::start(&yaml, 1);
    let r = Client::http2().get(&proxy.url("main", "/trailers")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body");
    let t = r.trailers.expect("trailers arrived");
    assert_eq!(t.get("x-trailer").map(|v| v.as_bytes()), Some(&b"done"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_bytes() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr("main")).await.expect("connect");
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("101 in time").expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(b"ping-through-tunnel").await.expect("write");
    let mut got = Vec::new();
    while got.len() < 19 {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert!(n > 0, "tunnel closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, b"ping-through-tunnel");
}
