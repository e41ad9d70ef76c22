//! Each load balancer's distribution, and subset selection, through the real proxy.

use std::collections::HashMap;

use wasmesh_tests::{cluster_yaml, Client, TestProxy, Upstream};

fn yaml(lb: &str, ups: &[&Upstream], extra: &str) -> String {
    let eps: Vec<_> = ups.iter().map(|u| (u.addr, &[][..])).collect();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\nclusters:\n{}{extra}",
        cluster_yaml("web", lb, &eps)
    )
}

async fn tally(proxy: &TestProxy, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let c = Client::http1();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = c.get_with(&proxy.url("main", "/"), headers).await;
        assert_eq!(r.status, 200);
        *seen.entry(r.text()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact() {
    let ups = [Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await];
    let proxy = TestProxy::start(&yaml("round_robin", &ups.iter().collect::<Vec<_>>(), ""), 2);
    let seen = tally(&proxy, 300, &[]).await;
    assert_eq!(seen.get("a"), Some(&100), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&100), "{seen:?}");
    assert_eq!(seen.get("c"), Some(&100), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_within_tolerance() {
    let ups = [Upstream::start("a").await, Upstream::start("b").await];
    let proxy = TestProxy::start(&yaml("random", &ups.iter().collect::<Vec<_>>(), ""), 1);
    let seen = tally(&proxy, 400, &[]).await;
    for name in ["a", "b"] {
        let n = *seen.get(name).unwrap_or(&0);
        // Binomial(400, 0.5): ±5 sigma is ±50.
        assert!((150..=250).contains(&n), "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    let ups = [Upstream::start("a").await, Upstream::start("b").await];
    let proxy = TestProxy::start(&yaml("least_request", &ups.iter().collect::<Vec<_>>(), ""), 1);
    // Hold 4 slow requests; they land somewhere; new requests must prefer the idle side.
    let url = proxy.url("main", "/delay/1500");
    let mut slow = Vec::new();
    for _ in 0..4 {
        let (c, u) = (Client::http1(), url.clone());
        slow.push(tokio::spawn(async move { c.get(&u).await.text() }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let hits_before = [ups[0].hits(), ups[1].hits()];
    let seen = tally(&proxy, 20, &[]).await;
    let slow_names: Vec<String> =
        futures_util::future::join_all(slow).await.into_iter().filter_map(Result::ok).collect();
    let busy_a = slow_names.iter().filter(|n| *n == "a").count();
    let busy_b = slow_names.len() - busy_a;
    let (busy, idle) = if busy_a > busy_b { ("a", "b") } else { ("b", "a") };
    if busy_a != busy_b {
        assert!(
            seen.get(idle).copied().unwrap_or(0) > seen.get(busy).copied().unwrap_or(0),
            "{seen:?} busy={busy} {hits_before:?}"
        );
    }
    assert_eq!(seen.values().sum::<usize>(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_is_sticky_per_key() {
    let ups = [Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await];
    let extra = "";
    let y = yaml("consistent_hash", &ups.iter().collect::<Vec<_>>(), extra)
        .replace("    lb: consistent_hash", "    lb: consistent_hash\n    hash: { key: { header: x-user } }");
    let proxy = TestProxy::start(&y, 2);
    let mut owners = HashMap::new();
    for user in 0..30 {
        let u = format!("user-{user}");
        let seen = tally(&proxy, 5, &[("x-user", &u)]).await;
        assert_eq!(seen.len(), 1, "key {u} spread over {seen:?}");
        owners.insert(u, seen.into_keys().next().unwrap_or_default());
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(distinct.len() >= 2, "30 keys all on one endpoint: {owners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsets_by_label() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let eps = [(v1.addr, &[("version", "v1")][..]), (v2.addr, &[("version", "v2")][..])];
    let y = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\nclusters:\n{}    subsets:\n      - {{ name: v2, labels: {{ version: v2 }} }}\n",
        cluster_yaml("web", "round_robin", &eps)
    );
    // Subsets are chosen by filters (wasmesh.upstream.subset); without one the whole
    // cluster serves. The selection itself is covered by the upstream unit tests and
    // the router filter's tests.
    let proxy = TestProxy::start(&y, 1);
    let seen = tally(&proxy, 10, &[]).await;
    assert_eq!(seen.get("v1"), Some(&5));
    assert_eq!(seen.get("v2"), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_cookie_gives_session_affinity() {
    let ups = [Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await];
    let y = yaml("consistent_hash", &ups.iter().collect::<Vec<_>>(), "").replace(
        "    lb: consistent_hash",
        "    lb: consistent_hash\n    hash: { key: { cookie: session }, cookie: { path: /app, ttl: 1h } }",
    );
    let proxy = TestProxy::start(&y, 2);
    let c = Client::http1();
    let mut owners = std::collections::HashSet::new();
    for _ in 0..6 {
        // A new client: no cookie yet, so the proxy issues one.
        let first = c.get(&proxy.url("main", "/")).await;
        let set = first.header("set-cookie").expect("affinity cookie issued");
        assert!(set.starts_with("session=") && set.contains("Path=/app") && set.contains("Max-Age=3600"), "{set}");
        let cookie = set.split(';').next().unwrap_or_default().to_string();
        // With the cookie, every request lands where the first one did.
        let seen = tally(&proxy, 8, &[("cookie", &cookie)]).await;
        assert_eq!(seen.len(), 1, "cookie {cookie} spread over {seen:?}");
        assert_eq!(seen.keys().next(), Some(&first.text()), "the first response's endpoint keeps the session");
        owners.extend(seen.into_keys());
        let again = c.get_with(&proxy.url("main", "/"), &[("cookie", &cookie)]).await;
        assert_eq!(again.header("set-cookie"), None, "no new cookie once the client has one");
    }
    assert!(owners.len() >= 2, "six sessions all on one endpoint: {owners:?}");
}
