//! The `authz` filter (builtin:authz) through the real proxy: Istio AuthorizationPolicy
//! ALLOW/DENY/default deny, mTLS principals, path-confusion bypass attempts, CUSTOM
//! (ext_authz) against a real authorization server, dry-run and invalid configs.

use http::Method;
use wasmesh_tests::client::full;
use wasmesh_tests::pki::{client_config, tls_get, Ca, Leaf};
use wasmesh_tests::upstream::closed_port;
use wasmesh_tests::{cluster_yaml, temp_dir, Client, TestProxy, Upstream};

use crate::capture;

/// A listener `main` (default cluster `web`) with `authz` configured by `config_json`,
/// plus extra cluster YAML.
fn authz_yaml(web: &Upstream, config_json: &str, extra_clusters: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n      - name: authz\n        module: builtin:authz\n        config: {config_json}\nclusters:\n{}{extra_clusters}",
        cluster_yaml("web", "round_robin", &[(web.addr, &[])])
    )
}

async fn metrics(proxy: &TestProxy) -> String {
    Client::http1().get(&proxy.admin_url("/metrics")).await.text()
}

/// The value of the series line starting with `series` (0 when absent).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_by_path_and_method_deny_wins_and_default_deny() {
    let web = Upstream::start("web").await;
    let cfg = r#"{"policies":[
        {"name":"read-public","action":"ALLOW","rules":[{"to":[{"operation":{"methods":["GET"],"paths":["/public/*"]}}]}]},
        {"name":"no-secret","action":"DENY","rules":[{"to":[{"operation":{"paths":["/public/secret*"]}}]}]}]}"#;
    let proxy = TestProxy::start(&authz_yaml(&web, cfg, ""), 1);
    let c = Client::http1();
    let ok = c.get(&proxy.url("main", "/public/page")).await;
    assert_eq!((ok.status.as_u16(), ok.text().as_str()), (200, "web"));
    let hits = web.hits();
    // Wrong method, path outside every ALLOW rule, and a DENY match: all 403, none reach web.
    let post = c.request(Method::POST, &proxy.url("main", "/public/page"), full("x")).await;
    let other = c.get(&proxy.url("main", "/private")).await;
    let secret = c.get(&proxy.url("main", "/public/secret.txt")).await;
    for r in [&post, &other, &secret] {
        assert_eq!(r.status, 403);
        assert_eq!(r.text(), "RBAC: access denied");
    }
    assert_eq!(web.hits(), hits, "a denied request reached the upstream");
    let m = metrics(&proxy).await;
    let series =
        |p: &str, d: &str| value(&m, &format!("wasmesh_authz_decisions_total{{policy=\"{p}\",decision=\"{d}\"}}"));
    assert_eq!(series("read-public", "allow"), 1.0, "{m}");
    assert_eq!(series("default", "deny"), 2.0, "{m}");
    assert_eq!(series("no-secret", "deny"), 1.0, "{m}");
    assert!(m.contains("response_flags=\"RBAC\""), "denials carry the RBAC flag: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_confusion_cannot_bypass_a_deny() {
    let web = Upstream::start("web").await;
    let cfg = r#"{"policies":[
        {"name":"all","action":"ALLOW","rules":[{}]},
        {"name":"no-admin","action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin*"]}}]}]}]}"#;
    let proxy = TestProxy::start(&authz_yaml(&web, cfg, ""), 1);
    let c = Client::http1();
    let hits = web.hits();
    for p in [
        "/admin",
        "//admin",
        "/%2Fadmin",
        "/x%2F..%2Fadmin",
        "/a/../admin",
        "/x/%2e%2e/admin",
        "/%61dmin",
        "/x%5C..%5Cadmin",
    ] {
        for (proto, client) in [("h1", &c), ("h2", &Client::http2())] {
            let r = client.get(&proxy.url("main", p)).await;
            assert_eq!(r.status, 403, "{p} over {proto} bypassed the DENY: {}", r.text());
        }
    }
    assert_eq!(web.hits(), hits);
    // The upstream gets exactly the normalized path that was authorized.
    let r = c.get(&proxy.url("main", "/x/..//status/418?q=1")).await;
    assert_eq!(r.status, 418, "the upstream saw a path other than /status/418");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_principal_based_allow() {
    const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
    let dir = temp_dir("authz-mtls");
    let ca = Ca::new("authz test CA");
    ca.write(&dir, "ca.pem");
    ca.leaf(&dir, "server", &["localhost", "127.0.0.1"], &["spiffe://cluster.local/ns/default/sa/server"]);
    let client = ca.leaf(&dir, "client", &[], &[CLIENT_ID]);
    let intruder = ca.leaf(&dir, "intruder", &[], &["spiffe://cluster.local/ns/other/sa/intruder"]);
    let web = Upstream::start("web").await;
    let cfg = r#"{"policies":[{"name":"only-client","rules":[{"from":[{"source":{"principals":["cluster.local/ns/default/sa/client"]}}]}]}]}"#;
    let d = dir.display();
    let yaml = authz_yaml(&web, cfg, "").replace(
        "    default_cluster: web\n",
        &format!(
            "    default_cluster: web\n    tls: {{ cert: \"{d}/server.pem\", key: \"{d}/server.key\", client_ca: \"{d}/ca.pem\", mode: mutual }}\n"
        ),
    );
    let proxy = TestProxy::start(&yaml, 1);
    let get = |leaf: &Leaf| tls_get(proxy.addr("main"), "localhost", client_config(&ca, Some(leaf), &[]), "/");
    let (status, _, body) = get(&client).await.expect("mtls request");
    assert_eq!((status.as_u16(), &body[..]), (200, &b"web"[..]));
    let (status, _, body) = get(&intruder).await.expect("mtls request");
    assert_eq!((status.as_u16(), &body[..]), (403, &b"RBAC: access denied"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_ext_authz_decides_first() {
    let web = Upstream::start("web").await;
    let cfg = r#"{"policies":[{"name":"ext","action":"CUSTOM","provider":{"cluster":"authz","pathPrefix":"/check","timeout":"2s"},"rules":[{"to":[{"operation":{"paths":["/api/*"]}}]}]}]}"#;
    let c = Client::http1();

    // The authorization server says no: its status and body reach the client.
    let deny = Upstream::start_failing("authz", 403).await;
    let proxy = TestProxy::start(&authz_yaml(&web, cfg, &cluster_yaml("authz", "round_robin", &[(deny.addr, &[])])), 1);
    let r = c.get(&proxy.url("main", "/api/x")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (403, "authz#fail=403"));
    assert_eq!(deny.hits(), 1);
    assert_eq!(web.hits(), 0);
    // A path no CUSTOM rule covers is not checked.
    assert_eq!(c.get(&proxy.url("main", "/public")).await.status, 200);
    assert_eq!(deny.hits(), 1);
    let m = metrics(&proxy).await;
    assert!(m.contains("response_flags=\"UAEX\""), "{m}");
    drop(proxy);

    // The authorization server says yes.
    let allow = Upstream::start("authz").await;
    let proxy =
        TestProxy::start(&authz_yaml(&web, cfg, &cluster_yaml("authz", "round_robin", &[(allow.addr, &[])])), 1);
    let r = c.get(&proxy.url("main", "/api/x")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "web"));
    assert_eq!(allow.hits(), 1);
    drop(proxy);

    // The authorization server is down: fail closed with statusOnError, or open if asked.
    let down = closed_port().await;
    let closed = cfg.replace("\"timeout\":\"2s\"", "\"timeout\":\"2s\",\"statusOnError\":503");
    let proxy = TestProxy::start(&authz_yaml(&web, &closed, &cluster_yaml("authz", "round_robin", &[(down, &[])])), 1);
    assert_eq!(c.get(&proxy.url("main", "/api/x")).await.status, 503);
    drop(proxy);
    let open = cfg.replace("\"timeout\":\"2s\"", "\"timeout\":\"2s\",\"failOpen\":true");
    let proxy = TestProxy::start(&authz_yaml(&web, &open, &cluster_yaml("authz", "round_robin", &[(down, &[])])), 1);
    assert_eq!(c.get(&proxy.url("main", "/api/x")).await.status, 200);
    drop(proxy);

    // A 5xx from the service is a failed check too (Envoy): statusOnError, or fail open.
    let sick = Upstream::start_failing("authz", 500).await;
    let sick_cluster = cluster_yaml("authz", "round_robin", &[(sick.addr, &[])]);
    let proxy = TestProxy::start(&authz_yaml(&web, &closed, &sick_cluster), 1);
    let r = c.get(&proxy.url("main", "/api/x")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (503, ""));
    drop(proxy);
    let proxy = TestProxy::start(&authz_yaml(&web, &open, &sick_cluster), 1);
    assert_eq!(c.get(&proxy.url("main", "/api/x")).await.status, 200);
    assert_eq!(sick.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_allow_does_not_bypass_deny() {
    let web = Upstream::start("web").await;
    let allow = Upstream::start("authz").await;
    let cfg = r#"{"policies":[
        {"name":"ext","action":"CUSTOM","provider":{"cluster":"authz"},"rules":[{}]},
        {"name":"no-admin","action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin"]}}]}]}]}"#;
    let proxy =
        TestProxy::start(&authz_yaml(&web, cfg, &cluster_yaml("authz", "round_robin", &[(allow.addr, &[])])), 1);
    let r = Client::http1().get(&proxy.url("main", "/admin")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (403, "RBAC: access denied"));
    assert_eq!(allow.hits(), 1, "the ext_authz check ran first");
    assert_eq!(web.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_and_audit_report_without_enforcing() {
    let web = Upstream::start("web").await;
    let cfg = r#"{"policies":[
        {"name":"would-deny","action":"DENY","dryRun":true,"rules":[{"to":[{"operation":{"paths":["/admin"]}}]}]},
        {"name":"watch-admin","action":"AUDIT","rules":[{"to":[{"operation":{"paths":["/admin"]}}]}]}]}"#;
    let proxy = TestProxy::start(&authz_yaml(&web, cfg, ""), 1);
    let r = Client::http1().get(&proxy.url("main", "/admin")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "web"));
    let m = metrics(&proxy).await;
    let s = "wasmesh_authz_decisions_total{policy=\"would-deny\",decision=\"dry_run_deny\"}";
    assert_eq!(value(&m, s), 1.0, "{m}");
    let s = "wasmesh_authz_decisions_total{policy=\"watch-admin\",decision=\"audit\"}";
    assert_eq!(value(&m, s), 1.0, "AUDIT matched without changing the decision: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_condition_key_refuses_the_config() {
    let web = Upstream::start("web").await;
    let cfg = r#"{"policies":[{"name":"p","rules":[{"when":[{"key":"request.header[x]","values":["1"]}]}]}]}"#;
    let config = wasmesh::config::parse_str(&authz_yaml(&web, cfg, "")).expect("the YAML itself parses");
    let opts = wasmesh::server::StartOptions {
        workers: 1,
        base_dir: wasmesh_tests::repo_root(),
        cache_dir: None,
        config_path: None,
    };
    match wasmesh::server::Proxy::start(config, opts) {
        Ok(p) => {
            p.shutdown();
            panic!("a policy with an unknown condition key was accepted");
        }
        Err(e) => assert!(e.to_string().contains("authz"), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_sees_the_token_and_adds_upstream_headers() {
    let web = Upstream::start("web").await;
    // The test authorization server echoes the check's headers back as `x-echo-*`.
    let ext = Upstream::start("authz").await;
    let cfg = r#"{"policies":[{"name":"ext","action":"CUSTOM","provider":{"cluster":"authz","pathPrefix":"/check",
        "includeRequestHeadersInCheck":["x-tenant"],"headersToUpstreamOnAllow":["x-echo-authorization","x-echo-x-tenant"]},
        "rules":[{}]}]}"#;
    let proxy = TestProxy::start(&authz_yaml(&web, cfg, &cluster_yaml("authz", "round_robin", &[(ext.addr, &[])])), 1);
    let r = Client::http1()
        .get_with(&proxy.url("main", "/x"), &[("authorization", "Bearer t0k"), ("x-tenant", "acme"), ("x-other", "no")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The upstream received the headers the check answered with.
    assert_eq!(r.header("x-echo-x-echo-authorization").as_deref(), Some("Bearer t0k"));
    assert_eq!(r.header("x-echo-x-echo-x-tenant").as_deref(), Some("acme"));
    assert_eq!(ext.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_refuses_non_normalized_paths() {
    let web = Upstream::start("web").await;
    let cfg = r#"{"pathNormalization":"reject","policies":[{"name":"all","rules":[{}]}]}"#;
    let proxy = TestProxy::start(&authz_yaml(&web, cfg, ""), 1);
    let c = Client::http1();
    assert_eq!(c.get(&proxy.url("main", "/a/b?x=1")).await.status, 200);
    for p in ["//a", "/a/../b", "/a%2Fb"] {
        assert_eq!(c.get(&proxy.url("main", p)).await.status, 400, "{p}");
    }
    assert_eq!(web.hits(), 1);
}

mod jwt {
    //! Tokens for the authn → authz chain (RS256 with authn's fixed test key).
    use ring::signature::RsaKeyPair;
    use serde_json::{json, Value};
    pub use wasmesh_tests::jwt::key;

    pub const ISS: &str = "https://issuer.test";

    pub fn jwks(k: &RsaKeyPair) -> String {
        wasmesh_tests::jwt::jwks(k, "k1")
    }

    pub fn token(k: &RsaKeyPair, sub: &str, team: &str) -> String {
        let claims: Value = json!({"iss": ISS, "sub": sub, "aud": "web", "exp": wasmesh_tests::jwt::now() + 600, "org": {"team": team}});
        format!("Bearer {}", wasmesh_tests::jwt::sign(k, "k1", &claims))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_identity_from_authn_drives_request_principals_and_claims() {
    let k = jwt::key();
    let web = Upstream::start("web").await;
    let authn = serde_json::json!({"jwtRules": [{"issuer": jwt::ISS, "audiences": ["web"], "jwks": jwt::jwks(&k)}]});
    let authz = format!(
        r#"{{"policies":[
        {{"name":"alice-only","rules":[{{"from":[{{"source":{{"requestPrincipals":["{iss}/alice"]}}}}],"to":[{{"operation":{{"paths":["/alice*"]}}}}]}}]}},
        {{"name":"core-team","rules":[{{"to":[{{"operation":{{"paths":["/team*"]}}}}],"when":[
            {{"key":"request.auth.claims[org][team]","values":["core"]}},{{"key":"request.auth.audiences","values":["web"]}}]}}]}}]}}"#,
        iss = jwt::ISS
    );
    let yaml = authz_yaml(&web, &authz, "").replace(
        "    filters:\n",
        &format!("    filters:\n      - name: authn\n        module: builtin:authn\n        config: {authn}\n"),
    );
    let proxy = TestProxy::start(&yaml, 1);
    let c = Client::http1();
    let get = |path: &'static str, token: Option<String>| {
        let url = proxy.url("main", path);
        let c = c.clone();
        async move {
            match token {
                Some(t) => c.get_with(&url, &[("authorization", &t)]).await.status.as_u16(),
                None => c.get(&url).await.status.as_u16(),
            }
        }
    };
    assert_eq!(get("/alice", None).await, 403, "no token, no request principal");
    assert_eq!(get("/alice", Some(jwt::token(&k, "alice", "core"))).await, 200);
    assert_eq!(get("/alice", Some(jwt::token(&k, "bob", "core"))).await, 403);
    assert_eq!(get("/team", Some(jwt::token(&k, "bob", "core"))).await, 200);
    assert_eq!(get("/team", Some(jwt::token(&k, "bob", "ops"))).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_blocks_see_the_peer_and_remote_ip_blocks_trust_only_configured_hops() {
    let web = Upstream::start("web").await;
    let cfg = |trusted: u32| {
        format!(
            r#"{{"trustedProxies":{trusted},"policies":[
            {{"name":"local-peer","rules":[{{"from":[{{"source":{{"ipBlocks":["127.0.0.0/8"]}}}}],"to":[{{"operation":{{"paths":["/peer"]}}}}]}}]}},
            {{"name":"office","rules":[{{"from":[{{"source":{{"remoteIpBlocks":["203.0.113.0/24"]}}}}],"to":[{{"operation":{{"paths":["/office"]}}}}]}}]}}]}}"#
        )
    };
    let c = Client::http1();
    let xff = [("x-forwarded-for", "203.0.113.9")];
    // The peer is 127.0.0.1; with no trusted proxy the client's x-forwarded-for is ignored.
    let proxy = TestProxy::start(&authz_yaml(&web, &cfg(0), ""), 1);
    assert_eq!(c.get(&proxy.url("main", "/peer")).await.status, 200);
    assert_eq!(c.get_with(&proxy.url("main", "/office"), &xff).await.status, 403);
    drop(proxy);
    // One trusted proxy (the peer): the address it saw is the client.
    let proxy = TestProxy::start(&authz_yaml(&web, &cfg(1), ""), 1);
    assert_eq!(c.get_with(&proxy.url("main", "/office"), &xff).await.status, 200);
    assert_eq!(c.get_with(&proxy.url("main", "/office"), &[("x-forwarded-for", "198.51.100.1")]).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_reach_the_access_log() {
    capture::lines();
    let web = Upstream::start("web").await;
    let cfg = r#"{"policies":[
        {"name":"watch-admin","action":"AUDIT","rules":[{"to":[{"operation":{"paths":["/other"]}}]},{"to":[{"operation":{"paths":["/admin"]}}]}]},
        {"name":"no-secret","action":"DENY","rules":[{"to":[{"operation":{"paths":["/secret"]}}]}]},
        {"name":"maybe","action":"DENY","dryRun":true,"rules":[{"to":[{"operation":{"paths":["/dry"]}}]}]}]}"#;
    let proxy = TestProxy::start(&authz_yaml(&web, cfg, ""), 1);
    let c = Client::http1();
    for (path, id, status) in [
        ("/x/../admin", "audit-rid-1", 200),
        ("/secret", "audit-rid-2", 403),
        ("/dry", "audit-rid-3", 200),
        ("/ok", "audit-rid-4", 200),
    ] {
        let r = c.get_with(&proxy.url("main", path), &[("x-request-id", id)]).await;
        assert_eq!(r.status, status, "{path}");
    }
    let records = capture::audit_records("audit-rid-");
    let by_id = |id: &str| records.iter().filter(|r| r["request_id"] == id).collect::<Vec<_>>();
    let admin = by_id("audit-rid-1");
    assert_eq!(admin.len(), 1, "{records:#?}");
    assert_eq!(admin[0]["decision"], "audit");
    assert_eq!(admin[0]["policy"], "watch-admin");
    assert_eq!(admin[0]["rule"], 1);
    assert_eq!(admin[0]["path"], "/admin", "the record shows the normalized path");
    assert_eq!(admin[0]["method"], "GET");
    assert_eq!(admin[0]["source_ip"], "127.0.0.1");
    assert!(admin[0]["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{}", admin[0]);
    let secret = by_id("audit-rid-2");
    assert_eq!(secret.len(), 1, "{records:#?}");
    assert_eq!(
        (&secret[0]["decision"], &secret[0]["policy"], &secret[0]["action"]),
        (&"deny".into(), &"no-secret".into(), &"DENY".into())
    );
    assert_eq!(secret[0]["dry_run"], false);
    let dry = by_id("audit-rid-3");
    assert_eq!(dry.len(), 1, "{records:#?}");
    assert_eq!(
        (&dry[0]["decision"], &dry[0]["policy"], &dry[0]["dry_run"]),
        (&"deny".into(), &"maybe".into(), &true.into())
    );
    assert!(by_id("audit-rid-4").is_empty(), "an allowed, unaudited request writes no record");
}
