//! A request through the proxy and back, over HTTP/1.1 and HTTP/2, with the header
//! fix-ups a proxy owes.

use wasmesh_tests::{simple_yaml, Client, TestProxy, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_reach_the_upstream() {
    let up = Upstream::start("web-1").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 2);
    for client in [Client::http1(), Client::http2()] {
        let r = client.get(&proxy.url("main", "/hello")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "web-1");
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    let c = Client::http1();
    let r = c.get_with(&proxy.url("main", "/"), &[("x-forwarded-for", "10.9.8.7")]).await;
    assert_eq!(r.header("x-echo-x-forwarded-for").as_deref(), Some("10.9.8.7, 127.0.0.1"));
    assert_eq!(r.header("x-echo-x-forwarded-proto").as_deref(), Some("http"));
    let id = r.header("x-echo-x-request-id").expect("request id generated");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let r = c.get_with(&proxy.url("main", "/"), &[("x-request-id", "keep-me")]).await;
    assert_eq!(r.header("x-echo-x-request-id").as_deref(), Some("keep-me"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_cross() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    let r = Client::http1()
        .get_with(&proxy.url("main", "/"), &[("connection", "x-private"), ("x-private", "secret"), ("x-public", "ok")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-x-private"), None);
    assert_eq!(r.header("x-echo-connection"), None);
    assert_eq!(r.header("x-echo-x-public").as_deref(), Some("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_health_metrics_and_dumps() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    let c = Client::http1();
    assert_eq!(c.get(&proxy.url("main", "/")).await.status, 200);
    assert_eq!(c.get(&proxy.admin_url("/healthz")).await.status, 200);
    assert_eq!(c.get(&proxy.admin_url("/ready")).await.status, 200);
    let m = c.get(&proxy.admin_url("/metrics")).await.text();
    assert!(
        m.contains(
            r#"wasmesh_http_requests_total{cluster="web",code_class="2xx",listener="main",response_flags="-"} 1"#
        ),
        "{m}"
    );
    assert!(m.contains("wasmesh_http_request_duration_seconds_bucket"), "{m}");
    assert!(!c.get(&proxy.admin_url("/stats/prometheus")).await.text().is_empty());
    let dump: serde_json::Value =
        serde_json::from_slice(&c.get(&proxy.admin_url("/config_dump")).await.body).expect("json");
    assert_eq!(dump["config"]["listeners"][0]["name"], "main");
    let clusters: serde_json::Value =
        serde_json::from_slice(&c.get(&proxy.admin_url("/clusters")).await.body).expect("json");
    assert_eq!(clusters["clusters"][0]["name"], "web");
}
