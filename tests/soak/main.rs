//! Memory tests: they read this process's RSS, so they live in their own test binary
//! (cargo runs test binaries one after another) with nothing else allocating beside
//! them, and run one at a time within it.

use bytes::Bytes;
use futures_util::StreamExt;
use http::Method;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::Mutex;
use wasmesh_tests::{
    cluster_yaml, rss_kib, simple_yaml, temp_dir, wasm_module, write_atomic, Client, TestProxy, Upstream,
};

/// One memory test at a time: each measures the whole process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn config(up: &Upstream, module: &std::path::Path, filter_config: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n      - name: rewrite\n        module: \"{}\"\n        root_id: add_header\n        config: {filter_config}\nclusters:\n{}",
        module.display(),
        cluster_yaml("web", "round_robin", &[(up.addr, &[])])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_streams_with_bounded_memory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&simple_yaml(&[&up], "round_robin"), 1);
    const TOTAL: usize = 100 * 1024 * 1024;
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let before = rss_kib();
    let stream = futures_util::stream::iter(0..TOTAL / chunk.len())
        .map(move |_| Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.clone())));
    let body = BodyExt::boxed(StreamBody::new(stream));
    let url = proxy.url("main", "/echo");
    let req = http::Request::builder().method(Method::POST).uri(&url).body(body).expect("request");
    let (status, received) = Client::http1().send_counting(req).await;
    assert_eq!(status, 200);
    assert_eq!(received, TOTAL);
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // Client, proxy and upstream all run in this process and none may hold the body.
    assert!(grown_mib < 32, "RSS grew {grown_mib} MiB for a 100 MiB round trip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_swaps_return_memory_to_baseline() {
    let _one = ONE_AT_A_TIME.lock().await;
    let up = Upstream::start("web").await;
    let dir = temp_dir("leak");
    let path = dir.join("wasmesh.yaml");
    let module = wasm_module("header_rewrite");
    write_atomic(&path, config(&up, &module, "{ response_set: { x-version: v0 } }").as_bytes());
    let proxy = TestProxy::start_file(&path, 2);
    let url = proxy.url("main", "/");
    let c = Client::http1();
    let reload = |n: usize| {
        write_atomic(&path, config(&up, &module, &format!("{{ response_set: {{ x-version: v{n} }} }}")).as_bytes());
        let req = http::Request::post(proxy.admin_url("/reload")).body(wasmesh_tests::client::full("")).expect("req");
        let c = c.clone();
        async move {
            let r = c.send(req).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    // Warm up: allocator pools, module cache, connection pools.
    for n in 1..=100 {
        reload(n).await;
        assert_eq!(c.get(&url).await.header("x-version"), Some(format!("v{n}")));
    }
    let baseline = rss_kib();
    for n in 101..=1000 {
        reload(n).await;
        // Each generation's VMs are created by a request and dropped with the next swap.
        assert_eq!(c.get(&url).await.header("x-version"), Some(format!("v{n}")));
    }
    let after = rss_kib();
    eprintln!("RSS after 100 swaps: {baseline} KiB; after 1000: {after} KiB");
    let grown = after.saturating_sub(baseline);
    assert!(grown < 24 * 1024, "RSS grew {grown} KiB over 900 swaps");
}
