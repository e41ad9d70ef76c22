//! Hot reload under load: new behaviour within a bounded time, zero failed requests,
//! and every bad change refused while the good config keeps serving.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmesh_tests::{cluster_yaml, temp_dir, wasm_module, write_atomic, Client, TestProxy, Upstream};

fn config(up: &Upstream, module: &std::path::Path, filter_config: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n      - name: rewrite\n        module: \"{}\"\n        root_id: add_header\n        config: {filter_config}\nclusters:\n{}",
        module.display(),
        cluster_yaml("web", "round_robin", &[(up.addr, &[])])
    )
}

/// Steady load from `n` clients until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, n: usize) -> Load {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..n)
            .map(|_| {
                let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let c = Client::http1();
                    // Bounded: at most 20 000 requests per client.
                    for _ in 0..20_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let req = http::Request::get(&url).body(wasmesh_tests::client::full("")).expect("req");
                        match c.try_send(req).await {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                            _ => failed.fetch_add(1, Ordering::SeqCst),
                        };
                    }
                })
            })
            .collect();
        Load { stop, ok, failed, tasks }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

/// Polls until the response header `name` equals `want` (10 s budget).
async fn until_header(url: &str, name: &str, want: &str) -> Duration {
    let started = Instant::now();
    let c = Client::http1();
    while started.elapsed() < Duration::from_secs(10) {
        if c.get(url).await.header(name).as_deref() == Some(want) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name}: {want} not seen within 10 s");
}

async fn reload_status(proxy: &TestProxy) -> serde_json::Value {
    serde_json::from_slice(&Client::http1().get(&proxy.admin_url("/reload")).await.body).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_module_changes_apply_under_load_with_zero_failures() {
    let up = Upstream::start("web").await;
    let dir = temp_dir("reload");
    let path = dir.join("wasmesh.yaml");
    let module = wasm_module("header_rewrite");
    write_atomic(&path, config(&up, &module, "{ response_set: { x-version: one } }").as_bytes());
    let proxy = TestProxy::start_file(&path, 2);
    let url = proxy.url("main", "/");
    assert_eq!(Client::http1().get(&url).await.header("x-version").as_deref(), Some("one"));

    let load = Load::start(url.clone(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // (b) The filter's config changes.
    write_atomic(&path, config(&up, &module, "{ response_set: { x-version: two } }").as_bytes());
    until_header(&url, "x-version", "two").await;

    // (d) Bad changes are refused and the running config keeps serving.
    write_atomic(&path, b"listeners: [ this is: not yaml");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(Client::http1().get(&url).await.header("x-version").as_deref(), Some("two"));
    let status = reload_status(&proxy).await;
    assert_eq!(status["last_reload"]["result"], "rejected", "{status}");

    // on_configure returns false (unknown field in the filter's config).
    write_atomic(&path, config(&up, &module, "{ no_such_field: 1 }").as_bytes());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(Client::http1().get(&url).await.header("x-version").as_deref(), Some("two"));
    let status = reload_status(&proxy).await;
    assert_eq!(status["last_reload"]["result"], "rejected", "{status}");

    // A broken module file.
    let broken = dir.join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0garbage").expect("write");
    write_atomic(&path, config(&up, &broken, "{ response_set: { x-version: three } }").as_bytes());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(Client::http1().get(&url).await.header("x-version").as_deref(), Some("two"));

    // A module file of its own, then (a) that file replaced in place by another
    // filter (the `headers` test filter) with the config untouched.
    let swapped = dir.join("filter.wasm");
    std::fs::copy(&module, &swapped).expect("copy");
    write_atomic(&path, config(&up, &swapped, "{ response_set: { x-version: four } }").as_bytes());
    until_header(&url, "x-version", "four").await;
    write_atomic(&swapped, &std::fs::read(wasm_module("headers")).expect("read"));
    until_header(&url, "x-wasm-response", "1").await;

    let (ok, failed) = load.finish().await;
    assert!(ok > 100, "load ran: {ok} ok");
    assert_eq!(failed, 0, "{failed} requests failed during reloads ({ok} ok)");
    let metrics = Client::http1().get(&proxy.admin_url("/metrics")).await.text();
    assert!(metrics.contains(r#"wasmesh_reload_total{result="rejected"}"#), "{metrics}");
    assert!(metrics.contains(r#"wasmesh_reload_total{result="applied"}"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_without_change_is_a_no_op() {
    let up = Upstream::start("web").await;
    let dir = temp_dir("noop");
    let path = dir.join("wasmesh.yaml");
    write_atomic(&path, config(&up, &wasm_module("header_rewrite"), "{ response_set: { x-version: one } }").as_bytes());
    let proxy = TestProxy::start_file(&path, 1);
    let c = Client::http1();
    let req = http::Request::post(proxy.admin_url("/reload")).body(wasmesh_tests::client::full("")).expect("req");
    let r = c.send(req).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["result"], "unchanged");
    let status = reload_status(&proxy).await;
    assert_eq!(status["generation"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_change_moves_traffic() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = temp_dir("route");
    let path = dir.join("wasmesh.yaml");
    let yaml = |default: &str| {
        format!(
            "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: {default}\nclusters:\n{}{}",
            cluster_yaml("a", "round_robin", &[(a.addr, &[])]),
            cluster_yaml("b", "round_robin", &[(b.addr, &[])])
        )
    };
    write_atomic(&path, yaml("a").as_bytes());
    let proxy = TestProxy::start_file(&path, 2);
    let url = proxy.url("main", "/");
    assert_eq!(Client::http1().get(&url).await.text(), "a");
    let load = Load::start(url.clone(), 2);
    write_atomic(&path, yaml("b").as_bytes());
    let started = Instant::now();
    while Client::http1().get(&url).await.text() != "b" {
        assert!(started.elapsed() < Duration::from_secs(10), "route change not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} failed, {ok} ok");
}

/// Polls `f` until it is true (10 s budget).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_moved_and_removed_by_reload() {
    let up = Upstream::start("web").await;
    let dir = temp_dir("listeners");
    let path = dir.join("wasmesh.yaml");
    let yaml = |listeners: &[(&str, String)]| {
        let mut s = String::from("admin: { address: \"127.0.0.1:0\" }\nlisteners:\n");
        for (name, addr) in listeners {
            s.push_str(&format!("  - name: {name}\n    address: \"{addr}\"\n    default_cluster: web\n"));
        }
        s.push_str("clusters:\n");
        s.push_str(&cluster_yaml("web", "round_robin", &[(up.addr, &[])]));
        s
    };
    write_atomic(&path, yaml(&[("main", "127.0.0.1:0".into())]).as_bytes());
    let proxy = TestProxy::start_file(&path, 2);
    let old_main = proxy.addr("main");
    let c = Client::http1();
    // Added.
    write_atomic(&path, yaml(&[("main", "127.0.0.1:0".into()), ("second", "127.0.0.1:0".into())]).as_bytes());
    eventually("second listener", async || proxy.proxy().listener_addr("second").is_some()).await;
    let second = proxy.addr("second");
    assert_eq!(c.get(&format!("http://{second}/")).await.status, 200);
    // Moved: the new address serves, the old one closes.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let moved = format!("127.0.0.1:{port}");
    write_atomic(&path, yaml(&[("main", moved.clone()), ("second", "127.0.0.1:0".into())]).as_bytes());
    eventually("main moved", async || proxy.proxy().listener_addr("main").map(|a| a.port()) == Some(port)).await;
    assert_eq!(Client::http1().get(&format!("http://{moved}/")).await.status, 200);
    eventually("old address closed", async || tokio::net::TcpStream::connect(old_main).await.is_err()).await;
    // Removed.
    write_atomic(&path, yaml(&[("main", moved.clone())]).as_bytes());
    eventually("second removed", async || tokio::net::TcpStream::connect(second).await.is_err()).await;
    assert_eq!(Client::http1().get(&format!("http://{moved}/")).await.status, 200);
}
