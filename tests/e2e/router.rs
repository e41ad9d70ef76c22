//! The `router` filter (builtin:router) through the real proxy: VirtualService rules
//! steering cluster and subset, weighted splits, rewrites, redirects, direct responses,
//! header edits, CORS, mirrors and strict mode.

use std::net::SocketAddr;

use wasmesh_tests::client::full;
use wasmesh_tests::{cluster_yaml, Client, TestProxy, Upstream};

/// Endpoints with their labels, as `cluster_yaml` takes them.
type Endpoints<'a> = &'a [(SocketAddr, &'a [(&'a str, &'a str)])];

/// A listener `main` (default cluster `web`) with the router configured by `routes_json`,
/// node metadata `app: web`, and `clusters` (name, endpoints with labels, subsets YAML).
fn router_yaml(router_json: &str, clusters: &[(&str, Endpoints<'_>, &str)]) -> String {
    let mut s = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nnode: {{ metadata: {{ app: web, NAMESPACE: prod }} }}\n\
         listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n\
         \x20     - name: router\n        module: builtin:router\n        config: {router_json}\nclusters:\n"
    );
    for (name, eps, subsets) in clusters {
        s.push_str(&cluster_yaml(name, "round_robin", eps));
        s.push_str(subsets);
    }
    s
}

const SUBSETS: &str = "    subsets: [ { name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } } ]\n";

struct Mesh {
    web: Upstream,
    v1: Upstream,
    v2: Upstream,
    api: Upstream,
    shadow: Upstream,
}

impl Mesh {
    async fn start() -> Mesh {
        Mesh {
            web: Upstream::start("web").await,
            v1: Upstream::start("v1").await,
            v2: Upstream::start("v2").await,
            api: Upstream::start("api").await,
            shadow: Upstream::start("shadow").await,
        }
    }

    fn proxy(&self, router_json: &str) -> TestProxy {
        let y = router_yaml(
            router_json,
            &[
                ("web", &[(self.web.addr, &[])], ""),
                ("reviews", &[(self.v1.addr, &[("version", "v1")]), (self.v2.addr, &[("version", "v2")])], SUBSETS),
                ("api", &[(self.api.addr, &[])], ""),
                ("shadow", &[(self.shadow.addr, &[])], ""),
            ],
        );
        TestProxy::start(&y, 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_match_picks_cluster_and_subset() {
    let m = Mesh::start().await;
    let proxy = m.proxy(
        r#"{"routes": [
          {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
          {"match": [{"uri": {"prefix": "/reviews"}}], "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
          {"match": [{"uri": {"prefix": "/mine"}, "sourceLabels": {"app": "other"}}], "route": [{"destination": {"host": "api"}}]}
        ]}"#,
    );
    for c in [Client::http1(), Client::http2()] {
        assert_eq!(c.get_with(&proxy.url("main", "/reviews"), &[("end-user", "jason")]).await.text(), "v2");
        assert_eq!(c.get(&proxy.url("main", "/reviews/1")).await.text(), "v1");
        // sourceLabels select other workloads: the rule is skipped, the default cluster serves.
        assert_eq!(c.get(&proxy.url("main", "/mine")).await.text(), "web");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_follows_the_weights() {
    let m = Mesh::start().await;
    let proxy = m.proxy(
        r#"{"routes": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 75},
                                   {"destination": {"host": "reviews", "subset": "v2"}, "weight": 25}]}]}"#,
    );
    let c = Client::http1();
    let mut v1 = 0;
    for _ in 0..400 {
        if c.get(&proxy.url("main", "/")).await.text() == "v1" {
            v1 += 1;
        }
    }
    assert!((250..=350).contains(&v1), "v1 got {v1}/400, want ~300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_headers_and_cors_on_a_forwarded_route() {
    let m = Mesh::start().await;
    let proxy = m.proxy(
        r#"{"routes": [{"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/", "authority": "api.internal"}, "timeout": "2s",
            "headers": {"request": {"set": {"x-route": "api"}}, "response": {"add": {"x-resp": "1"}}},
            "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}], "allowMethods": ["GET"], "exposeHeaders": ["x-resp"]},
            "route": [{"destination": {"host": "api"}}]}]}"#,
    );
    let c = Client::http1();
    // The upstream answers /status/418 with 418: the path was rewritten.
    let r = c.get_with(&proxy.url("main", "/api/status/418"), &[("origin", "https://a.example")]).await;
    assert_eq!(r.status.as_u16(), 418);
    assert_eq!(r.header("x-resp").as_deref(), Some("1"));
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://a.example"));
    assert_eq!(r.header("access-control-expose-headers").as_deref(), Some("x-resp"));
    let r = c.get(&proxy.url("main", "/api/anything")).await;
    assert_eq!(r.text(), "api");
    assert_eq!(r.header("x-echo-x-route").as_deref(), Some("api"));
    assert_eq!(r.header("x-echo-x-envoy-original-path").as_deref(), Some("/api/anything"));
    assert_eq!(r.header("x-echo-host").as_deref(), Some("api.internal"));
    // A preflight from an allowed origin is answered by the proxy.
    let hits = m.api.hits();
    let req = http::Request::builder()
        .method("OPTIONS")
        .uri(proxy.url("main", "/api/x"))
        .header("origin", "https://a.example")
        .header("access-control-request-method", "GET")
        .body(full(""))
        .expect("request");
    let r = c.send(req).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.header("access-control-allow-methods").as_deref(), Some("GET"));
    assert_eq!(m.api.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_direct_response_and_strict_mode() {
    let m = Mesh::start().await;
    let proxy = m.proxy(
        r#"{"strict": true, "routes": [
          {"match": [{"uri": {"exact": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 302}},
          {"match": [{"uri": {"exact": "/health"}}], "directResponse": {"status": 203, "body": {"string": "fine"}}},
          {"match": [{"uri": {"prefix": "/ghost"}}], "route": [{"destination": {"host": "no-such-cluster"}}]}
        ]}"#,
    );
    let c = Client::http1();
    let r = c.get(&proxy.url("main", "/old?q=1")).await;
    assert_eq!(r.status.as_u16(), 302);
    let loc = r.header("location").unwrap_or_default();
    assert!(loc.starts_with("http://") && loc.ends_with("/new?q=1"), "{loc}");
    for client in [Client::http1(), Client::http2()] {
        let r = client.request(http::Method::POST, &proxy.url("main", "/health"), full("body")).await;
        assert_eq!((r.status.as_u16(), r.text()), (203, "fine".to_string()));
    }
    assert_eq!(c.get(&proxy.url("main", "/nothing")).await.status.as_u16(), 404);
    // The host checks cluster names per request: 503 with flag NR.
    assert_eq!(c.get(&proxy.url("main", "/ghost")).await.status.as_u16(), 503);
    assert_eq!(m.web.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_reach_the_shadow_cluster() {
    let m = Mesh::start().await;
    let proxy = m.proxy(
        r#"{"routes": [{"match": [{"uri": {"prefix": "/"}}], "mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 100.0},
            "route": [{"destination": {"host": "api"}}]}]}"#,
    );
    let c = Client::http2();
    let r = c.request(http::Method::POST, &proxy.url("main", "/echo"), full("payload")).await;
    assert_eq!(r.text(), "payload");
    assert_eq!(c.get(&proxy.url("main", "/x")).await.text(), "api");
    let mut waited = 0;
    while m.shadow.hits() < 2 && waited < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(m.shadow.hits(), 2);
    assert_eq!(m.api.hits(), 2);
}

#[test]
fn a_bad_router_config_is_refused_with_the_field_path() {
    let y = router_yaml(
        r#"{"routes": [{"match": [{"uri": {"regex": "("}}], "route": [{"destination": {"host": "web"}}]}]}"#,
        &[],
    );
    let y = y.replace("clusters:\n", "clusters:\n  - name: web\n    endpoints: [ { address: \"127.0.0.1:9\" } ]\n");
    let config = wasmesh::config::parse_str(&y).expect("the YAML itself is valid");
    let opts = wasmesh::server::StartOptions {
        workers: 1,
        base_dir: wasmesh_tests::repo_root(),
        cache_dir: None,
        config_path: None,
    };
    match wasmesh::server::Proxy::start(config, opts) {
        Ok(_) => panic!("a router config with a bad regex must be refused"),
        Err(e) => eprintln!("refused: {e}"),
    }
}
