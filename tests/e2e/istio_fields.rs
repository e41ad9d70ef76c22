//! Istio fields that had no end-to-end test (docs/istio-coverage.md): the VirtualService
//! route `timeout`, `retries.perTryTimeout`, Envoy's header-controlled faults and the
//! HTTPMatchRequest conditions `method`, `queryParams`, `withoutHeaders`, `ignoreUriCase`.

use std::time::{Duration, Instant};

use wasmesh_tests::client::full;
use wasmesh_tests::{cluster_yaml, Client, TestProxy, Upstream};

/// Listener `main` (default cluster `web` = `web`) with `filters` (YAML list items), plus
/// cluster `alt` when given.
fn chain(filters: &str, web: &Upstream, alt: Option<&Upstream>) -> String {
    let mut y = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n{filters}clusters:\n{}",
        cluster_yaml("web", "round_robin", &[(web.addr, &[])])
    );
    if let Some(alt) = alt {
        y.push_str(&cluster_yaml("alt", "round_robin", &[(alt.addr, &[])]));
    }
    y
}

fn filter(name: &str, config: &str) -> String {
    format!("      - name: {name}\n        module: builtin:{name}\n        config: {config}\n")
}

async fn metrics(proxy: &TestProxy) -> String {
    Client::http1().get(&proxy.admin_url("/metrics")).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_cuts_a_slow_upstream_with_504_ut() {
    let up = Upstream::start("web").await;
    let router = r#"{"routes": [{"match": [{"uri": {"prefix": "/delay/"}}], "timeout": "200ms", "route": [{"destination": {"host": "web"}}]}]}"#;
    let proxy = TestProxy::start(&chain(&filter("router", router), &up, None), 1);
    let c = Client::http1();
    let started = Instant::now();
    let r = c.get(&proxy.url("main", "/delay/3000")).await;
    // The cluster's own request_timeout is 15 s: only the route timeout answers this fast.
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(1500), "answered after {:?}", started.elapsed());
    assert!(metrics(&proxy).await.contains(r#"response_flags="UT""#));
    // A request that finishes within the timeout on the same route is served.
    assert_eq!(c.get(&proxy.url("main", "/delay/10")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_zero_disables_the_cluster_timeout() {
    // Istio: `timeout: 0s` means no timeout. The cluster's own request_timeout (200 ms
    // here) still applies to routes that set none.
    let up = Upstream::start("web").await;
    let router = r#"{"routes": [
        {"match": [{"headers": {"x-no-timeout": {"exact": "1"}}}], "timeout": "0s", "route": [{"destination": {"host": "web"}}]},
        {"route": [{"destination": {"host": "web"}}]}]}"#;
    let yaml = chain(&filter("router", router), &up, None)
        .replace("    connect_timeout: 500ms\n", "    connect_timeout: 500ms\n    request_timeout: 200ms\n");
    assert!(yaml.contains("request_timeout: 200ms"), "{yaml}");
    let proxy = TestProxy::start(&yaml, 1);
    let c = Client::http1();
    let r = c.get_with(&proxy.url("main", "/delay/600"), &[("x-no-timeout", "1")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "web"), "timeout 0s: served after 600 ms");
    let started = Instant::now();
    let r = c.get(&proxy.url("main", "/delay/600")).await;
    assert_eq!(r.status, 504, "no route timeout: the cluster's 200 ms applies: {}", r.text());
    assert!(started.elapsed() < Duration::from_millis(550), "answered after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_each_slow_attempt() {
    let up = Upstream::start("web").await;
    let retry = r#"{ attempts: 2, perTryTimeout: 150ms, retryOn: "reset", backoff: 1ms }"#;
    let proxy = TestProxy::start(&chain(&filter("retry", retry), &up, None), 1);
    let started = Instant::now();
    let r = Client::http1().get(&proxy.url("main", "/delay/2000")).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(up.hits(), 3, "1 try + 2 retries, each cut by perTryTimeout");
    assert!(elapsed < Duration::from_millis(1500), "answered after {elapsed:?}");
    let m = metrics(&proxy).await;
    assert!(m.contains("URX"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_controlled_faults_abort_and_delay() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&chain(&filter("fault", "{ headerControl: true }"), &up, None), 1);
    let c = Client::http1();
    let r = c.get_with(&proxy.url("main", "/"), &[("x-envoy-fault-abort-request", "418")]).await;
    assert_eq!(r.status, 418);
    assert_eq!(up.hits(), 0, "an aborted request never reaches the upstream");
    let started = Instant::now();
    let r = c.get_with(&proxy.url("main", "/"), &[("x-envoy-fault-delay-request", "300")]).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "delay header ignored: {:?}", started.elapsed());
    // 0 % asked for by header: no abort.
    let r = c
        .get_with(
            &proxy.url("main", "/"),
            &[("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "0")],
        )
        .await;
    assert_eq!(r.status, 200);
    let m = metrics(&proxy).await;
    assert!(m.contains(r#"response_flags="FI""#) && m.contains(r#"response_flags="DI""#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_on_method_query_params_without_headers_and_uri_case() {
    let (web, alt) = (Upstream::start("web").await, Upstream::start("alt").await);
    let router = r#"{"routes": [
      {"match": [{"uri": {"exact": "/CaSe"}, "ignoreUriCase": true}], "route": [{"destination": {"host": "alt"}}]},
      {"match": [{"uri": {"prefix": "/q"}, "queryParams": {"v": {"exact": "2"}}}], "route": [{"destination": {"host": "alt"}}]},
      {"match": [{"uri": {"prefix": "/h"}, "headers": {"x-beta": {}}, "withoutHeaders": {"x-opt-out": {}}}], "route": [{"destination": {"host": "alt"}}]},
      {"match": [{"uri": {"prefix": "/m"}, "method": {"regex": "PUT|DELETE"}}], "route": [{"destination": {"host": "alt"}}]}]}"#;
    let proxy = TestProxy::start(&chain(&filter("router", router), &web, Some(&alt)), 1);
    let c = Client::http1();
    let name = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let (c, url) = (c.clone(), proxy.url("main", path));
        async move { c.get_with(&url, headers).await.text() }
    };
    assert_eq!(name("/case", &[]).await, "alt");
    assert_eq!(name("/CASE?x=1", &[]).await, "alt");
    assert_eq!(name("/cases", &[]).await, "web");
    assert_eq!(name("/q?a=1&v=2", &[]).await, "alt");
    assert_eq!(name("/q?v=3", &[]).await, "web");
    assert_eq!(name("/h", &[("x-beta", "1")]).await, "alt");
    assert_eq!(name("/h", &[("x-beta", "1"), ("x-opt-out", "yes")]).await, "web");
    assert_eq!(name("/h", &[]).await, "web");
    assert_eq!(c.request(http::Method::PUT, &proxy.url("main", "/m"), full("")).await.text(), "alt");
    assert_eq!(c.request(http::Method::POST, &proxy.url("main", "/m"), full("")).await.text(), "web");
    assert_eq!(name("/m", &[]).await, "web");
}
