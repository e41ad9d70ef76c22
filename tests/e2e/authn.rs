//! Istio RequestAuthentication through the real proxy (`builtin:authn`): RS256 tokens
//! against an inline JWKS and a JWKS fetched through a cluster (cache, key rotation with
//! a rate-limited refetch, fetch failure), claim headers only after verification, the
//! token header stripped, 401s with Envoy's reasons, one audit record per 401.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use wasmesh_tests::jwt::{b64url, jwk, key, now, sign};
use wasmesh_tests::upstream::closed_port;
use wasmesh_tests::{cluster_yaml, Client, TestProxy, Upstream};

use crate::capture;

const ISS: &str = "https://issuer.test";

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "sub": sub, "aud": "web", "exp": now() + 600, "org": {"team": "core"}})
}

/// One listener `main` (default cluster `web`) whose only filter is authn with `config`;
/// `extra_clusters` YAML is appended.
fn yaml(config: &Value, web: &Upstream, extra_clusters: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    filters:\n      - name: authn\n        module: builtin:authn\n        config: {config}\nclusters:\n{}{extra_clusters}",
        cluster_yaml("web", "round_robin", &[(web.addr, &[][..])])
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_jwks_verifies_strips_and_rejects() {
    capture::lines();
    let k = key();
    let web = Upstream::start("web").await;
    let config = json!({"jwtRules": [{
        "issuer": ISS, "audiences": ["web"],
        "jwks": json!({"keys": [jwk(&k, "k1")]}).to_string(),
        "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}, {"header": "x-jwt-team", "claim": "org.team"}],
    }]});
    let proxy = TestProxy::start(&yaml(&config, &web, ""), 2);
    let url = proxy.url("main", "/hello");
    let c = Client::http1();

    // No token: passes, without identity; a forged claim header never reaches the upstream.
    let r = c.get_with(&url, &[("x-jwt-sub", "admin"), ("x-request-id", "authn-rid-anon")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-echo-x-jwt-sub"), None, "inbound claim header stripped");

    // A valid token: claims as headers (the forged one replaced), the token stripped.
    let t = sign(&k, "k1", &claims("alice"));
    let r = c
        .get_with(&url, &[("authorization", &bearer(&t)), ("x-jwt-sub", "admin"), ("x-request-id", "authn-rid-ok")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-echo-x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(r.headers.get_all("x-echo-x-jwt-sub").iter().count(), 1);
    assert_eq!(r.header("x-echo-x-jwt-team").as_deref(), Some("core"));
    assert_eq!(r.header("x-echo-authorization"), None, "token removed (forwardOriginalToken false)");

    // Invalid tokens: 401 with the reason and a bearer challenge; the upstream never sees them.
    // `by_rule`: the rule (issuer) took the token and refused it; otherwise no rule took it.
    let hits = web.hits();
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let cases = [
        ("garbage".to_string(), "Jwt is not in the form of Header.Payload.Signature", false),
        (sign(&k, "k1", &expired), "Jwt is expired", true),
        (sign(&k, "k1", &json!({"iss": ISS, "sub": "a", "aud": "other"})), "Audiences in Jwt are not allowed", true),
        (
            sign(&k, "k1", &json!({"iss": "https://evil.test", "sub": "a", "aud": "web"})),
            "Jwt issuer is not configured",
            false,
        ),
        (sign(&k, "unknown", &claims("alice")), "Jwks doesn't have key to match kid or alg from Jwt", true),
        (
            format!("{}.{}.", b64url(br#"{"alg":"none"}"#), b64url(claims("root").to_string().as_bytes())),
            "Jwt header [alg] is not supported",
            false,
        ),
        (
            {
                // alice's signature over root's claims.
                let p: Vec<&str> = t.split('.').collect();
                format!("{}.{}.{}", p[0], b64url(claims("root").to_string().as_bytes()), p[2])
            },
            "Jwt verification fails",
            true,
        ),
        (format!("{}.{}.{}", "a".repeat(4000), "b".repeat(4000), "c".repeat(400)), "Jwt is too large", false),
    ];
    for (i, (token, reason, _)) in cases.iter().enumerate() {
        let rid = format!("authn-rid-{i}");
        let auth = bearer(token);
        let r = c.get_with(&url, &[("authorization", &auth), ("x-jwt-sub", "admin"), ("x-request-id", &rid)]).await;
        assert_eq!(r.status, 401, "{reason}: {}", r.text());
        assert!(r.text().starts_with(reason), "want {reason:?}, got {:?}", r.text());
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer realm=\"http://") && www.ends_with("/hello\", error=\"invalid_token\""),
            "{www}"
        );
    }
    assert_eq!(web.hits(), hits, "no rejected request reached the upstream");
    // Still serving after all that.
    assert_eq!(c.get_with(&url, &[("authorization", &bearer(&t))]).await.status, 200);

    // Each 401 wrote exactly one audit record (authz's shape, same sink); the valid and the
    // anonymous request none.
    let records = capture::audit_records("authn-rid-");
    let by_id = |id: &str| records.iter().filter(|r| r["request_id"] == id).collect::<Vec<_>>();
    for (i, (_, reason, by_rule)) in cases.iter().enumerate() {
        let rec = by_id(&format!("authn-rid-{i}"));
        assert_eq!(rec.len(), 1, "{reason}: {records:#?}");
        let rec = rec[0];
        assert_eq!((&rec["decision"], &rec["dry_run"], &rec["action"]), (&json!("deny"), &json!(false), &Value::Null));
        assert!(rec["reason"].as_str().is_some_and(|r| r.starts_with(reason)), "{rec}");
        let (policy, rule) =
            if *by_rule { (json!(ISS), json!(0)) } else { (json!("request-authentication"), Value::Null) };
        assert_eq!((&rec["policy"], &rec["rule"]), (&policy, &rule), "{rec}");
        assert_eq!((&rec["principal"], &rec["request_principal"]), (&Value::Null, &Value::Null), "{rec}");
        assert_eq!(
            (&rec["method"], &rec["path"], &rec["source_ip"]),
            (&json!("GET"), &json!("/hello"), &json!("127.0.0.1"))
        );
        assert!(rec["host"].as_str().is_some_and(|h| h.starts_with("127.0.0.1:")), "{rec}");
        assert!(rec["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{rec}");
    }
    assert!(by_id("authn-rid-ok").is_empty(), "a valid token writes no record: {records:#?}");
    assert!(by_id("authn-rid-anon").is_empty(), "no token writes no record: {records:#?}");
    let m = c.get(&proxy.admin_url("/metrics")).await.text();
    for series in [
        r#"wasmesh_authn_decisions_total{policy="https://issuer.test",decision="deny",reason="expired"} 1"#,
        r#"wasmesh_authn_decisions_total{policy="request-authentication",decision="deny",reason="malformed"} 1"#,
        r#"wasmesh_authn_decisions_total{policy="https://issuer.test",decision="allow",reason="verified"} 2"#,
        r#"wasmesh_authn_decisions_total{policy="request-authentication",decision="allow",reason="no_token"} 1"#,
        r#"wasmesh_authn_denied_total{reason="expired"} 1"#,
        r#"wasmesh_authn_denied_total{reason="malformed"} 1"#,
        r#"wasmesh_authn_denied_total{reason="too_large"} 1"#,
        r#"wasmesh_authn_denied_total{reason="signature"} 1"#,
        "wasmesh_authn_allowed_total 2",
        "wasmesh_authn_no_token_total 1",
    ] {
        assert!(m.lines().any(|l| l == series), "{series} missing in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_original_token_and_payload_header() {
    let k = key();
    let web = Upstream::start("web").await;
    let config = json!({"jwtRules": [{
        "issuer": ISS, "jwks": json!({"keys": [jwk(&k, "k1")]}).to_string(),
        "fromHeaders": [{"name": "x-token"}], "forwardOriginalToken": true,
        "outputPayloadToHeader": "x-jwt-payload",
    }]});
    let proxy = TestProxy::start(&yaml(&config, &web, ""), 1);
    let url = proxy.url("main", "/");
    let c = Client::http1();
    let t = sign(&k, "k1", &claims("bob"));
    let r = c.get_with(&url, &[("x-token", &t), ("x-jwt-payload", "forged")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-echo-x-token").as_deref(), Some(t.as_str()));
    assert_eq!(r.header("x-echo-x-jwt-payload").as_deref(), t.split('.').nth(1));
    // Without a token the forged payload header is dropped, not forwarded.
    let r = c.get_with(&url, &[("x-jwt-payload", "forged")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-x-jwt-payload"), None);
}

/// A JWKS server: serves `body` at any path (after `delay`) and counts requests.
struct JwksServer {
    addr: std::net::SocketAddr,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        Self::start_slow(body, Duration::ZERO).await
    }

    async fn start_slow(body: String, delay: Duration) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().expect("jwks addr");
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let text = b.lock().map(|s| s.clone()).unwrap_or_default();
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut r = hyper::Response::new(Full::new(Bytes::from(text)));
                            r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        JwksServer { addr, body, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_jwks_is_fetched_cached_and_refetched_for_a_new_kid() {
    let k = key();
    let web = Upstream::start("web").await;
    let jwks = JwksServer::start(json!({"keys": [jwk(&k, "k1")]}).to_string()).await;
    let config = json!({"jwtRules": [{
        "issuer": ISS, "jwksUri": "http://keys.test/.well-known/jwks.json", "jwksCluster": "keys",
        "jwksRefetchInterval": "1s",
    }]});
    let keys = cluster_yaml("keys", "round_robin", &[(jwks.addr, &[][..])]);
    let proxy = TestProxy::start(&yaml(&config, &web, &keys), 1);
    let url = proxy.url("main", "/");
    let c = Client::http1();

    let t1 = sign(&k, "k1", &claims("alice"));
    for i in 0..3 {
        let r = c.get_with(&url, &[("authorization", &bearer(&t1))]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(jwks.hits(), 1, "fetched once (the worker's VM starts with the first request), then cached");
    // No token: no fetch at all.
    assert_eq!(c.get(&url).await.status, 200);
    assert_eq!(jwks.hits(), 1);

    // Key rotation: the set now has k2. Within the refetch interval an unknown kid is
    // refused without a fetch; after it, one refetch picks the new key up.
    *jwks.body.lock().expect("lock") = json!({"keys": [jwk(&k, "k1"), jwk(&k, "k2")]}).to_string();
    let t2 = sign(&k, "k2", &claims("alice"));
    let r = c.get_with(&url, &[("authorization", &bearer(&t2))]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(jwks.hits(), 1, "rate-limited");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get_with(&url, &[("authorization", &bearer(&t2))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwks.hits(), 2, "one refetch for the new kid");
    assert_eq!(c.get_with(&url, &[("authorization", &bearer(&t1))]).await.status, 200);
    assert_eq!(jwks.hits(), 2);
    let m = c.get(&proxy.admin_url("/metrics")).await.text();
    assert!(m.lines().any(|l| l == "wasmesh_authn_jwks_fetch_success_total 2"), "{m}");
    assert!(m.lines().any(|l| l == r#"wasmesh_authn_denied_total{reason="unknown_key"} 1"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_jwks_refuses_tokens_but_not_anonymous_requests() {
    capture::lines();
    let k = key();
    let web = Upstream::start("web").await;
    let dead = closed_port().await;
    let config = json!({"jwtRules": [{
        "issuer": ISS, "jwksUri": "http://keys.test/jwks.json", "jwksCluster": "keys", "timeout": "1s",
    }]});
    let keys = cluster_yaml("keys", "round_robin", &[(dead, &[][..])]);
    let proxy = TestProxy::start(&yaml(&config, &web, &keys), 1);
    let url = proxy.url("main", "/");
    let c = Client::http1();
    let t = sign(&k, "k1", &claims("alice"));
    let r = c.get_with(&url, &[("authorization", &bearer(&t)), ("x-request-id", "authn-jwks-down")]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.text(), "Jwks remote fetch is failed");
    assert_eq!(c.get(&url).await.status, 200);
    let records = capture::audit_records("authn-jwks-down");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        (&records[0]["decision"], &records[0]["policy"], &records[0]["rule"], &records[0]["reason"]),
        (&json!("deny"), &json!(ISS), &json!(0), &json!("Jwks remote fetch is failed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_jwks_is_refreshed_in_the_background_before_it_expires() {
    let k = key();
    let web = Upstream::start("web").await;
    let jwks = JwksServer::start(json!({"keys": [jwk(&k, "k1")]}).to_string()).await;
    let config = json!({"jwtRules": [{
        "issuer": ISS, "jwksUri": "http://keys.test/jwks.json", "jwksCluster": "keys", "jwksCacheDuration": "1s",
    }]});
    let keys = cluster_yaml("keys", "round_robin", &[(jwks.addr, &[][..])]);
    let proxy = TestProxy::start(&yaml(&config, &web, &keys), 1);
    let url = proxy.url("main", "/");
    let c = Client::http1();
    let t = sign(&k, "k1", &claims("alice"));
    assert_eq!(c.get_with(&url, &[("authorization", &bearer(&t))]).await.status, 200);
    assert_eq!(jwks.hits(), 1);
    // No traffic: the root context still refreshes the set (at 90% of its lifetime).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refreshed = jwks.hits();
    assert!(refreshed >= 2, "background refreshes: {refreshed}");
    // Requests keep using the warm set without waiting for a fetch of their own.
    let r = c.get_with(&url, &[("authorization", &bearer(&t))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(jwks.hits() <= refreshed + 1, "at most the background refresh ran meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_a_cold_worker_share_one_fetch_over_http2() {
    let k = key();
    let web = Upstream::start("web").await;
    // Slow enough that every request arrives while the first fetch is under way.
    let jwks = JwksServer::start_slow(json!({"keys": [jwk(&k, "k1")]}).to_string(), Duration::from_millis(300)).await;
    let config = json!({"jwtRules": [{
        "issuer": ISS, "jwksUri": "http://keys.test/jwks.json", "jwksCluster": "keys",
        "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
    }]});
    let keys = cluster_yaml("keys", "round_robin", &[(jwks.addr, &[][..])]);
    let proxy = TestProxy::start(&yaml(&config, &web, &keys), 2);
    let url = proxy.url("main", "/");
    let c = Client::http2();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (c, url) = (c.clone(), url.clone());
        let t = sign(&k, "k1", &claims(&format!("user{i}")));
        tasks.push(tokio::spawn(async move {
            let r = c.get_with(&url, &[("authorization", &format!("Bearer {t}"))]).await;
            (r.status.as_u16(), r.header("x-echo-x-jwt-sub"))
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, sub) = t.await.expect("join");
        assert_eq!(status, 200, "request {i}");
        assert_eq!(sub.as_deref(), Some(format!("user{i}").as_str()), "each request got its own identity");
    }
    let hits = jwks.hits();
    assert!((1..=2).contains(&hits), "one fetch per worker, the other requests waited for it: {hits} fetches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_take_over_the_fetch_when_its_request_is_cancelled() {
    let k = key();
    let web = Upstream::start("web").await;
    let jwks = JwksServer::start_slow(json!({"keys": [jwk(&k, "k1")]}).to_string(), Duration::from_millis(400)).await;
    let config = json!({"jwtRules": [{
        "issuer": ISS, "jwksUri": "http://keys.test/jwks.json", "jwksCluster": "keys",
    }]});
    let keys = cluster_yaml("keys", "round_robin", &[(jwks.addr, &[][..])]);
    let proxy = TestProxy::start(&yaml(&config, &web, &keys), 1);
    let url = proxy.url("main", "/");
    let c = Client::http2();
    let t = sign(&k, "k1", &claims("alice"));
    let auth = bearer(&t);
    // The first request sends the fetch, then its client gives up (HTTP/2 RST_STREAM).
    let first = {
        let (c, url, auth) = (c.clone(), url.clone(), auth.clone());
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(150), c.get_with(&url, &[("authorization", &auth)]))
                .await
                .is_err()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let (c, url, auth) = (c.clone(), url.clone(), auth.clone());
        waiting.push(tokio::spawn(async move { c.get_with(&url, &[("authorization", &auth)]).await.status.as_u16() }));
    }
    assert!(first.await.expect("join"), "the first request was still waiting when cancelled");
    for w in waiting {
        assert_eq!(w.await.expect("join"), 200, "a waiter was left behind");
    }
    assert!(jwks.hits() <= 2, "the cancelled fetch and one taken over: {}", jwks.hits());
}
