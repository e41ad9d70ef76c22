//! Istio traffic management as built-in filters through the real proxy: retries masking
//! a broken endpoint, fault injection (delay and abort, flags DI/FI), circuit breaking
//! (pool overflow UO and outlier ejection), in the documented chain order.

use std::time::{Duration, Instant};

use wasmesh_tests::upstream::closed_port;
use wasmesh_tests::{cluster_yaml, Client, TestProxy, Upstream};

/// One listener whose chain is `filters` (YAML list items), default cluster `web` with
/// `endpoints`.
fn chain(filters: &str, endpoints: &[std::net::SocketAddr]) -> String {
    chain_lb(filters, "round_robin", endpoints)
}

/// [`chain`] with load balancer `lb`.
fn chain_lb(filters: &str, lb: &str, endpoints: &[std::net::SocketAddr]) -> String {
    let eps: Vec<_> = endpoints.iter().map(|a| (*a, &[][..])).collect();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n{filters}clusters:\n{}",
        cluster_yaml("web", lb, &eps)
    )
}

async fn metrics(proxy: &TestProxy) -> String {
    Client::http1().get(&proxy.admin_url("/metrics")).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_masks_a_dead_and_a_sick_endpoint() {
    let good = Upstream::start("good").await;
    let sick = Upstream::start_failing("sick", 503).await;
    let dead = closed_port().await;
    let filters = "      - name: retry\n        module: builtin:retry\n        config: { attempts: 3, retryOn: \"connect-failure,5xx\", backoff: 1ms }\n";
    let proxy = TestProxy::start(&chain(filters, &[good.addr, sick.addr, dead]), 1);
    let c = Client::http1();
    for i in 0..30 {
        let r = c.get(&proxy.url("main", "/")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "good");
    }
    assert!(sick.hits() > 0, "the sick endpoint was tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_endpoint_than_the_one_that_failed() {
    // Random balancing over a good and a sick endpoint with a single retry: only the
    // previous-hosts rule (Istio retryIgnorePreviousHosts, on by default) makes every
    // request succeed; picking afresh would retry the sick one about half the time.
    let good = Upstream::start("good").await;
    let sick = Upstream::start_failing("sick", 503).await;
    let filters = "      - name: retry\n        module: builtin:retry\n        config: { attempts: 1, retryOn: \"5xx\", backoff: 1ms }\n";
    let proxy = TestProxy::start(&chain_lb(filters, "random", &[good.addr, sick.addr]), 1);
    let c = Client::http1();
    for i in 0..40 {
        let r = c.get(&proxy.url("main", "/")).await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "good".to_string()), "request {i}");
    }
    assert!(sick.hits() > 5, "random balancing sent first attempts to the sick endpoint: {}", sick.hits());
    assert!(sick.hits() <= 40, "no request tried the sick endpoint twice: {}", sick.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_answer_with_urx() {
    let sick = Upstream::start_failing("sick", 503).await;
    let filters = "      - name: retry\n        module: builtin:retry\n        config: { attempts: 2, retryOn: \"5xx\", backoff: 1ms }\n";
    let proxy = TestProxy::start(&chain(filters, &[sick.addr]), 1);
    let r = Client::http1().get(&proxy.url("main", "/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(sick.hits(), 3, "1 try + 2 retries");
    let m = metrics(&proxy).await;
    assert!(m.contains("URX"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_replays_a_post_body() {
    let echo_then_fail = Upstream::start_failing("sick", 503).await;
    let good = Upstream::start("good").await;
    let filters = "      - name: retry\n        module: builtin:retry\n        config: { attempts: 2, retryOn: \"5xx\", retryNonIdempotent: true, backoff: 1ms }\n";
    let proxy = TestProxy::start(&chain(filters, &[echo_then_fail.addr, good.addr]), 1);
    let c = Client::http1();
    for _ in 0..4 {
        let r = c
            .request(http::Method::POST, &proxy.url("main", "/echo"), wasmesh_tests::client::full("payload-123"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "payload-123", "the replayed body reached the second endpoint intact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sends_the_head_as_the_filters_left_it() {
    let sick = Upstream::start_failing("sick", 503).await;
    let good = Upstream::start("good").await;
    let filters = "      - name: router\n        module: builtin:router\n        config: { routes: [ { name: all, route: [ { destination: { host: web } } ], headers: { request: { set: { x-routed: \"yes\" }, remove: [ x-drop ] } } } ] }\n      - name: retry\n        module: builtin:retry\n        config: { attempts: 2, retryOn: \"5xx\", backoff: 1ms }\n";
    let proxy = TestProxy::start(&chain(filters, &[sick.addr, good.addr]), 1);
    let c = Client::http1();
    for i in 0..4 {
        let req = http::Request::get(proxy.url("main", &format!("/anything?n={i}")))
            .header("x-drop", "1")
            .header("x-app", "kept")
            .body(wasmesh_tests::client::full(""))
            .expect("request");
        let r = c.send(req).await;
        assert_eq!(r.status, 200, "request {i}");
        let h = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(h("x-echo-x-routed").as_deref(), Some("yes"), "request {i}");
        assert_eq!(h("x-echo-x-app").as_deref(), Some("kept"), "request {i}");
        assert_eq!(h("x-echo-x-drop"), None, "request {i}");
    }
    assert!(sick.hits() >= 2, "round robin sent some first attempts to the failing endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_requests_are_retried_only_with_an_idempotency_key() {
    let sick = Upstream::start_failing("sick", 503).await;
    let filters = "      - name: retry\n        module: builtin:retry\n        config: { attempts: 2, retryOn: \"5xx\", backoff: 1ms }\n";
    let proxy = TestProxy::start(&chain(filters, &[sick.addr]), 1);
    let c = Client::http1();
    let url = proxy.url("main", "/echo");
    let r = c.request(http::Method::POST, &url, wasmesh_tests::client::full("once")).await;
    assert_eq!(r.status, 503);
    assert_eq!(sick.hits(), 1, "a POST is not replayed");
    let keyed = http::Request::post(&url)
        .header("idempotency-key", "k-1")
        .body(wasmesh_tests::client::full("again"))
        .expect("request");
    assert_eq!(c.send(keyed).await.status, 503);
    assert_eq!(sick.hits(), 4, "with an idempotency key: the first try and two retries");
    assert_eq!(c.get(&url).await.status, 503);
    assert_eq!(sick.hits(), 7, "a GET is retried");
    let m = metrics(&proxy).await;
    assert!(m.contains("wasmesh_retry_non_idempotent_total 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay_and_abort_with_flags() {
    let up = Upstream::start("web").await;
    let filters = "      - name: fault\n        module: builtin:fault\n        config:\n          rules:\n            - match: [ { uri: { prefix: /slow } } ]\n              delay: { fixedDelay: 300ms, percentage: { value: 100 } }\n            - match: [ { uri: { prefix: /broken } } ]\n              abort: { httpStatus: 418, percentage: { value: 100 } }\n";
    let proxy = TestProxy::start(&chain(filters, &[up.addr]), 1);
    let c = Client::http1();
    let started = Instant::now();
    // Delays pause the stream, never the worker: a concurrent fast request is not held up.
    let slow = {
        let (c, u) = (c.clone(), proxy.url("main", "/slow"));
        tokio::spawn(async move { c.get(&u).await.status })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fast_started = Instant::now();
    assert_eq!(c.get(&proxy.url("main", "/fast")).await.status, 200);
    assert!(fast_started.elapsed() < Duration::from_millis(200), "worker blocked by a delay");
    assert_eq!(slow.await.expect("join"), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = c.get(&proxy.url("main", "/broken")).await;
    assert_eq!(r.status, 418);
    let m = metrics(&proxy).await;
    assert!(m.contains(r#"response_flags="FI""#), "{m}");
    assert!(m.contains(r#"response_flags="DI""#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflows_with_uo() {
    let up = Upstream::start("web").await;
    let filters = "      - name: circuit-breaker\n        module: builtin:circuit-breaker\n        config:\n          clusters:\n            web:\n              connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } }\n";
    let proxy = TestProxy::start(&chain(filters, &[up.addr]), 1);
    let url = proxy.url("main", "/delay/800");
    let mut held = Vec::new();
    for _ in 0..6 {
        let (c, u) = (Client::http1(), url.clone());
        held.push(tokio::spawn(async move { c.get(&u).await.status.as_u16() }));
    }
    let mut statuses = Vec::new();
    for h in held {
        statuses.push(h.await.expect("join"));
    }
    assert!(statuses.contains(&503), "no overflow among {statuses:?}");
    assert!(statuses.contains(&200), "nothing served among {statuses:?}");
    let m = metrics(&proxy).await;
    assert!(m.contains(r#"response_flags="UO""#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_overflow_is_answered_by_the_host_per_cluster() {
    // `"*"` covers `web`. One worker: a request counts as in flight before the next one
    // is looked at, so the split is exact.
    let up = Upstream::start("web").await;
    let filters = "      - name: circuit-breaker\n        module: builtin:circuit-breaker\n        config:\n          clusters:\n            \"*\": { connectionPool: { http: { http2MaxRequests: 2 } } }\n";
    let proxy = TestProxy::start(&chain(filters, &[up.addr]), 1);
    let url = proxy.url("main", "/delay/1500");
    let held: Vec<_> = (0..5)
        .map(|_| {
            let (c, u) = (Client::http1(), url.clone());
            tokio::spawn(async move { c.get(&u).await })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for h in held {
        let r = h.await.expect("join");
        match r.status.as_u16() {
            200 => served += 1,
            503 => {
                assert!(r.text().ends_with("reset reason: overflow"), "{}", r.text());
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((served, refused), (2, 3));
    let m = metrics(&proxy).await;
    assert!(m.contains(r#"wasmesh_circuit_breaker_overflow_total{cluster="web",reason="max_requests"} 3"#), "{m}");
    assert!(m.contains(r#"response_flags="UO""#), "{m}");
    // Once they finished, requests pass again.
    assert_eq!(Client::http1().get(&proxy.url("main", "/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_the_failing_endpoint() {
    let good = Upstream::start("good").await;
    let sick = Upstream::start_failing("sick", 502).await;
    let filters = "      - name: circuit-breaker\n        module: builtin:circuit-breaker\n        config:\n          clusters:\n            web:\n              outlierDetection: { consecutiveGatewayErrors: 2, consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50 }\n";
    let proxy = TestProxy::start(&chain(filters, &[good.addr, sick.addr]), 1);
    let c = Client::http1();
    for _ in 0..8 {
        let _ = c.get(&proxy.url("main", "/")).await;
    }
    let sick_before = sick.hits();
    for i in 0..20 {
        let r = c.get(&proxy.url("main", "/")).await;
        assert_eq!(r.status, 200, "request {i} after ejection");
    }
    assert_eq!(sick.hits(), sick_before, "the ejected endpoint got traffic");
    let clusters = c.get(&proxy.admin_url("/clusters")).await.text();
    assert!(clusters.contains("ejected"), "{clusters}");
}
