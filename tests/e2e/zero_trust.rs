//! The zero-trust example (`examples/zero-trust`) through two real proxies: sidecar A
//! (outbound, plaintext in, mutual TLS out as the frontend's SPIFFE identity) calls
//! sidecar B (inbound, mutual TLS, authn → authz). The configs are the example's YAML
//! files with only paths and ports substituted, so the example is what is tested.

use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, Request};
use ring::signature::RsaKeyPair;
use serde_json::{json, Value};
use wasmesh_tests::client::full;
use wasmesh_tests::jwt;
use wasmesh_tests::pki::{client_config, tls_get, Ca};
use wasmesh_tests::{repo_root, temp_dir, Client, Reply, TestProxy, Upstream};

const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const API_ID: &str = "spiffe://cluster.local/ns/shop/sa/api";
const INTRUDER_ID: &str = "spiffe://cluster.local/ns/shop/sa/intruder";
const ISS: &str = "https://auth.shop.local";

/// An RS256 token like the example's `token-*.jwt`: issuer, audience `api`, `groups`.
fn token(k: &RsaKeyPair, sub: &str, group: &str) -> String {
    let now = jwt::now();
    let claims = json!({"iss": ISS, "sub": sub, "aud": "api", "iat": now, "exp": now + 600, "groups": [group]});
    jwt::sign(k, "shop-1", &claims)
}

/// The example file `name` with each `(from, to)` replaced; every `from` must occur, so
/// an edit to the example that this test would silently stop covering fails here.
fn example(name: &str, subst: &[(&str, String)]) -> String {
    let path = repo_root().join("examples/zero-trust").join(name);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (from, to) in subst {
        assert!(text.contains(from), "{name} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

fn certs_dir(dir: &Path) -> String {
    format!("{}/", dir.display())
}

async fn post(c: &Client, url: &str, id: &str, bearer: Option<&str>) -> Reply {
    let mut b = Request::builder().method(Method::POST).uri(url).header("x-request-id", id);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    c.send(b.body(full(r#"{"item":"book"}"#)).expect("request")).await
}

/// The audit records of `audit.log` with request id `id`, waiting (bounded) for at least
/// `want` of them: the access log is written off the request path.
async fn audit(log: &Path, id: &str, want: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let records: Vec<Value> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "audit" && v["request_id"] == id)
            .collect();
        if records.len() >= want || started.elapsed() > Duration::from_secs(10) {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_a_calls_sidecar_b_over_mtls_and_b_enforces_identity_jwt_and_audit() {
    let dir = temp_dir("zero-trust");
    let ca = Ca::new("zero-trust test CA");
    ca.write(&dir, "ca.pem");
    ca.leaf(&dir, "frontend", &[], &[FRONTEND_ID]);
    ca.leaf(&dir, "api", &["localhost", "127.0.0.1"], &[API_ID]);
    let intruder = ca.leaf(&dir, "intruder", &[], &[INTRUDER_ID]);
    let k = jwt::key();
    let app = Upstream::start("app").await;
    // The identity provider: the standard upstream answers any other path with its name.
    let idp = Upstream::start(&jwt::jwks(&k, "shop-1")).await;
    let log = dir.join("audit.log");

    let b_yaml = example(
        "sidecar-b.yaml",
        &[
            ("certs/", certs_dir(&dir)),
            ("address: 127.0.0.1:15100", "address: 127.0.0.1:0".into()),
            ("address: 127.0.0.1:15006", "address: 127.0.0.1:0".into()),
            ("address: 127.0.0.1:8081", format!("address: \"{}\"", app.addr)),
            ("address: 127.0.0.1:15080", format!("address: \"{}\"", idp.addr)),
            ("path: stdout", format!("path: \"{}\"", log.display())),
        ],
    );
    let b = TestProxy::start(&b_yaml, 2);
    let b_addr = b.addr("inbound");
    let a_yaml = example(
        "sidecar-a.yaml",
        &[
            ("certs/", certs_dir(&dir)),
            ("address: 127.0.0.1:15000", "address: 127.0.0.1:0".into()),
            ("address: 127.0.0.1:15001", "address: 127.0.0.1:0".into()),
            ("address: 127.0.0.1:15006", format!("address: \"{b_addr}\"")),
        ],
    );
    let a = TestProxy::start(&a_yaml, 1);
    let url = a.url("outbound", "/api/orders");
    let c = Client::http1();

    // GET /api/* from the frontend's identity: allowed, and it crossed B over TLS.
    let r = c.get_with(&url, &[("x-request-id", "zt-get")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "app");
    assert_eq!(r.header("x-echo-x-forwarded-proto").as_deref(), Some("https"));
    let rec = audit(&log, "zt-get", 1).await;
    assert_eq!(rec.len(), 1, "{rec:#?}");
    assert_eq!(rec[0]["decision"], "audit");
    assert_eq!(rec[0]["policy"], "audit-all");
    assert_eq!(rec[0]["principal"], "cluster.local/ns/shop/sa/frontend");

    // POST without a token: denied by default, audited, never reaches the app.
    let hits = app.hits();
    let r = post(&c, &url, "zt-post-anon", None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), "RBAC: access denied");
    assert_eq!(app.hits(), hits);
    let rec = audit(&log, "zt-post-anon", 2).await;
    assert!(rec.iter().any(|v| v["decision"] == "deny" && v["policy"].is_null()), "{rec:#?}");

    // POST with a writer token: allowed; the app sees the verified subject, not the token.
    let r = post(&c, &url, "zt-post-writer", Some(&token(&k, "alice", "shop-writers"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-echo-x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(r.header("x-echo-authorization"), None);
    let rec = audit(&log, "zt-post-writer", 1).await;
    assert_eq!(rec[0]["request_principal"], "https://auth.shop.local/alice", "{rec:#?}");

    // A valid token without the claim: 403. A forged token: 401 from authn.
    let r = post(&c, &url, "zt-post-reader", Some(&token(&k, "bob", "shop-readers"))).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let forged = token(&k, "mallory", "shop-writers").replace(".ey", ".eyJ4IjoxfQ.ey");
    let r = post(&c, &url, "zt-post-forged", Some(&forged)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Change one signature character well inside the signature (the last character may
    // carry unused bits, so changing it can leave the signature intact).
    let original = token(&k, "mallory", "shop-writers");
    let at = original.len() - 10;
    let flipped = if original.as_bytes()[at] == b'A' { 'B' } else { 'A' };
    let tampered = format!("{}{flipped}{}", &original[..at], &original[at + 1..]);
    let r = post(&c, &url, "zt-post-tampered", Some(&tampered)).await;
    assert!(r.status == 401 || r.status == 403, "{} {}", r.status, r.text());

    // Anything else: default deny, audited.
    let r = c.get_with(&a.url("outbound", "/admin"), &[("x-request-id", "zt-admin")]).await;
    assert_eq!(r.status, 403);
    let r = c.request(Method::DELETE, &url, full("")).await;
    assert_eq!(r.status, 403);
    let rec = audit(&log, "zt-admin", 2).await;
    assert!(rec.iter().any(|v| v["decision"] == "deny"), "{rec:#?}");

    // Straight to B without a client certificate: refused at the TLS layer.
    let hits = app.hits();
    let direct = tls_get(b_addr, "localhost", client_config(&ca, None, &[]), "/api/orders").await;
    assert!(direct.is_err(), "{direct:?}");
    let m = c.get(&b.admin_url("/metrics")).await.text();
    assert!(m.contains("wasmesh_downstream_tls_handshake_errors_total{listener=\"inbound\"} 1"), "{m}");
    // A mesh certificate with another identity: the connection is accepted, GET is not.
    let other = tls_get(b_addr, "localhost", client_config(&ca, Some(&intruder), &[]), "/api/orders").await;
    assert_eq!(other.as_ref().map(|r| r.0.as_u16()), Ok(403), "{other:?}");
    assert_eq!(app.hits(), hits);
}
