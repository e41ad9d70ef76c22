//! Upstream failures become clear downstream answers with Envoy's response flags.

use wasmesh_tests::upstream::{accept_and_close, blackhole, closed_port};
use wasmesh_tests::{cluster_yaml, Client, TestProxy, Upstream};

fn yaml_for(addr: std::net::SocketAddr, cluster_extra: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\nclusters:\n{}{cluster_extra}",
        cluster_yaml("web", "round_robin", &[(addr, &[])])
    )
}

async fn flags_metric(proxy: &TestProxy, code_class: &str, flags: &str) -> bool {
    let m = Client::http1().get(&proxy.admin_url("/metrics")).await.text();
    m.contains(&format!(r#"code_class="{code_class}",listener="main",response_flags="{flags}"}} 1"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_503_uf() {
    let proxy = TestProxy::start(&yaml_for(closed_port().await, ""), 1);
    let r = Client::http1().get(&proxy.url("main", "/")).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("connection failure"), "{}", r.text());
    assert!(flags_metric(&proxy, "5xx", "UF").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_504_ut() {
    let (addr, _bh) = blackhole().await;
    let proxy = TestProxy::start(&yaml_for(addr, "    request_timeout: 300ms\n"), 1);
    let started = std::time::Instant::now();
    let r = Client::http1().get(&proxy.url("main", "/")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "upstream request timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(flags_metric(&proxy, "5xx", "UT").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_headers_is_502() {
    let (addr, _srv) = accept_and_close().await;
    let proxy = TestProxy::start(&yaml_for(addr, ""), 1);
    let r = Client::http1().get(&proxy.url("main", "/")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("reset"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dropping_mid_request_is_502() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&yaml_for(up.addr, ""), 1);
    let r = Client::http1().get(&proxy.url("main", "/reset")).await;
    assert_eq!(r.status, 502);
    // The proxy keeps serving afterwards.
    assert_eq!(Client::http1().get(&proxy.url("main", "/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_cluster_is_404_nr() {
    let up = Upstream::start("web").await;
    let y = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\nclusters:\n{}",
        cluster_yaml("web", "round_robin", &[(up.addr, &[])])
    );
    let proxy = TestProxy::start(&y, 1);
    let r = Client::http1().get(&proxy.url("main", "/")).await;
    assert_eq!(r.status, 404);
    assert!(flags_metric(&proxy, "4xx", "NR").await);
}
