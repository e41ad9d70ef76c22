//! Wasm filters through the real proxy: header edits both ways, local replies, pause and
//! resume, callouts to a cluster, body rewriting, failure policies, and a filter written
//! with a non-Rust SDK (AssemblyScript).

use std::time::{Duration, Instant};

use http::Method;
use wasmesh_tests::client::full;
use wasmesh_tests::{cluster_yaml, wasm_module, Client, TestProxy, Upstream};

/// A listener `main` → cluster `web`, with `filters` (YAML list items, indented 6).
fn chain_yaml(up: &Upstream, filters: &str, extra_clusters: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n{filters}clusters:\n{}{extra_clusters}",
        cluster_yaml("web", "round_robin", &[(up.addr, &[])])
    )
}

fn filter(name: &str, module: &str, extra: &str) -> String {
    format!("      - name: {name}\n        module: \"{}\"\n{extra}", wasm_module(module).display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_filter_edits_both_directions_over_h1_and_h2() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&chain_yaml(&up, &filter("h", "headers", "        config: hello\n"), ""), 2);
    for c in [Client::http1(), Client::http2()] {
        let r = c.get_with(&proxy.url("main", "/x"), &[("x-in", "ping"), ("x-remove", "gone")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-echo-x-wasm-added").as_deref(), Some("1"), "{:?}", r.headers);
        assert_eq!(r.header("x-echo-x-remove"), None);
        assert_eq!(r.header("x-wasm-response").as_deref(), Some("1"));
    }
    let m = Client::http1().get(&proxy.admin_url("/metrics")).await.text();
    assert!(m.contains("test_headers_requests_total{filter=\"headers\"} 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_local_reply_and_close_stream() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&chain_yaml(&up, &filter("lr", "local_reply", ""), ""), 1);
    let r = Client::http1().get(&proxy.url("main", "/deny/me")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-denied").as_deref(), Some("1"));
    assert_eq!(r.text(), "denied");
    assert_eq!(up.hits(), 0, "denied requests never reach the upstream");
    let req = http::Request::get(proxy.url("main", "/close")).body(full("")).expect("req");
    assert!(Client::http2().try_send(req).await.is_err(), "close_stream resets the stream");
    assert_eq!(Client::http1().get(&proxy.url("main", "/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resumes_from_tick_and_rewrites_the_body() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&chain_yaml(&up, &filter("p", "pause", ""), ""), 1);
    let r = Client::http1().request(Method::POST, &proxy.url("main", "/echo"), full("hello wasm")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "HELLO WASM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_to_a_cluster_gates_the_request() {
    let up = Upstream::start("web").await;
    let auth = Upstream::start("auth").await;
    let extra = cluster_yaml("auth", "round_robin", &[(auth.addr, &[])]);
    let proxy = TestProxy::start(&chain_yaml(&up, &filter("c", "callout", ""), &extra), 1);
    let r = Client::http1().get_with(&proxy.url("main", "/"), &[("x-token", "t1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(auth.hits(), 1);
    assert_eq!(r.header("x-echo-x-auth-status").as_deref(), Some("200"), "{:?}", r.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_filter_fails_closed_or_open_and_recovers() {
    let up = Upstream::start("web").await;
    let closed = TestProxy::start(&chain_yaml(&up, &filter("t", "trap", "        failure: closed\n"), ""), 1);
    let c = Client::http1();
    let r = c.get_with(&closed.url("main", "/"), &[("x-trap", "panic")]).await;
    assert_eq!(r.status, 503);
    // A fresh VM serves the next request (rebuilt after the trap, with backoff).
    let started = Instant::now();
    loop {
        let r = c.get(&closed.url("main", "/")).await;
        if r.status == 200 {
            assert_eq!(r.header("x-echo-x-trap-ok").as_deref(), Some("1"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "VM never came back: {}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = TestProxy::start(&chain_yaml(&up, &filter("t", "trap", "        failure: open\n"), ""), 1);
    let r = c.get_with(&open.url("main", "/"), &[("x-trap", "panic")]).await;
    assert_eq!(r.status, 200, "fail open skips the filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_filter_is_interrupted_and_others_keep_flowing() {
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(
        &chain_yaml(&up, &filter("t", "trap", "        limits: { callback_deadline: 100ms }\n"), ""),
        1,
    );
    let started = Instant::now();
    let r = Client::http1().get_with(&proxy.url("main", "/"), &[("x-trap", "loop")]).await;
    assert_eq!(r.status, 503);
    assert!(started.elapsed() < Duration::from_millis(1500), "loop answered after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assemblyscript_filter_runs_unchanged() {
    let up = Upstream::start("web").await;
    let module = wasmesh_tests::repo_root().join("target/filters/assemblyscript/add_header.wasm");
    assert!(module.exists(), "run `cargo xtask filters` first");
    let f = format!(
        "      - name: as\n        module: \"{}\"\n        root_id: add_header\n        config: from-as\n",
        module.display()
    );
    let proxy = TestProxy::start(&chain_yaml(&up, &f, ""), 1);
    let c = Client::http1();
    for i in 0..20 {
        let r = c.get(&proxy.url("main", "/")).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("x-as-filter").as_deref(), Some("from-as"), "request {i}");
    }
    let r = c.get_with(&proxy.url("main", "/"), &[("x-as-deny", "1")]).await;
    assert_eq!(r.status, 403);
}
