//! TLS through the real proxy: termination with simple, mutual and permissive modes,
//! the peer's SPIFFE identity reaching filters, and upstream TLS with identity checks
//! (the MITM defence).

use wasmesh_tests::pki::{client_config, server_config, tls_get, Ca};
use wasmesh_tests::{cluster_yaml, temp_dir, wasm_module, Client, TestProxy, Upstream};

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

struct Pki {
    dir: std::path::PathBuf,
    ca: Ca,
}

fn pki(name: &str) -> Pki {
    let dir = temp_dir(name);
    let ca = Ca::new("wasmesh test CA");
    ca.write(&dir, "ca.pem");
    ca.leaf(&dir, "server", &["localhost", "127.0.0.1"], &[SERVER_ID]);
    ca.leaf(&dir, "client", &[], &[CLIENT_ID]);
    Pki { dir, ca }
}

fn tls_listener_yaml(p: &Pki, up: &Upstream, mode: &str, filters: &str) -> String {
    let d = p.dir.display();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\n    tls: {{ cert: \"{d}/server.pem\", key: \"{d}/server.key\", client_ca: \"{d}/ca.pem\", mode: {mode} }}\n    filters:\n{filters}clusters:\n{}",
        cluster_yaml("web", "round_robin", &[(up.addr, &[])])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_terminates_over_h1_and_h2() {
    let p = pki("tls-simple");
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(
        &tls_listener_yaml(&p, &up, "simple", "      []\n").replace("    filters:\n      []\n", ""),
        1,
    );
    for alpn in [&["http/1.1"][..], &["h2"][..]] {
        let (status, headers, body) =
            tls_get(proxy.addr("main"), "localhost", client_config(&p.ca, None, alpn), "/").await.expect("tls request");
        assert_eq!(status, 200, "{alpn:?}");
        assert_eq!(body, "web");
        assert_eq!(headers.get("x-echo-x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"https"[..]));
    }
    // A client that does not trust the CA fails the handshake.
    let other = Ca::new("other CA");
    assert!(tls_get(proxy.addr("main"), "localhost", client_config(&other, None, &[]), "/").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_cert_and_filters_see_the_spiffe_id() {
    let p = pki("tls-mutual");
    let up = Upstream::start("web").await;
    let filter = format!("      - name: h\n        module: \"{}\"\n", wasm_module("headers").display());
    let proxy = TestProxy::start(&tls_listener_yaml(&p, &up, "mutual", &filter), 1);
    let addr = proxy.addr("main");
    // No client certificate: refused.
    let no_cert = tls_get(addr, "localhost", client_config(&p.ca, None, &[]), "/").await;
    assert!(no_cert.is_err() || no_cert.as_ref().is_ok_and(|r| r.0 != 200), "{no_cert:?}");
    // A certificate from another CA: refused.
    let other = Ca::new("other CA");
    let foreign = other.leaf(&p.dir, "foreign", &[], &[CLIENT_ID]);
    let r = tls_get(addr, "localhost", client_config(&p.ca, Some(&foreign), &[]), "/").await;
    assert!(r.is_err() || r.as_ref().is_ok_and(|r| r.0 != 200), "{r:?}");
    // The right certificate: served, and the filter sees the peer identity.
    let client = wasmesh_tests::pki::Leaf { cert: p.dir.join("client.pem"), key: p.dir.join("client.key") };
    let (status, headers, _) =
        tls_get(addr, "localhost", client_config(&p.ca, Some(&client), &[]), "/").await.expect("mtls request");
    assert_eq!(status, 200);
    let all: Vec<String> =
        headers.iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes()))).collect();
    assert!(all.iter().any(|h| h.contains(CLIENT_ID)), "peer SPIFFE id not visible to the filter: {all:#?}");
    let m = Client::http1().get(&proxy.admin_url("/metrics")).await.text();
    assert!(m.contains("wasmesh_downstream_tls_handshake_errors_total{listener=\"main\"}"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_serves_plaintext_and_tls_on_one_port() {
    let p = pki("tls-permissive");
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&tls_listener_yaml(&p, &up, "permissive", "").replace("    filters:\n", ""), 1);
    let plain = Client::http1().get(&proxy.url("main", "/")).await;
    assert_eq!(plain.status, 200);
    let (status, _, _) =
        tls_get(proxy.addr("main"), "localhost", client_config(&p.ca, None, &[]), "/").await.expect("tls");
    assert_eq!(status, 200);
}

fn upstream_tls_yaml(p: &Pki, up: &Upstream, sans: &str) -> String {
    let d = p.dir.display();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\nclusters:\n{}    tls: {{ mode: simple, ca: \"{d}/ca.pem\", subject_alt_names: [{sans}] }}\n",
        cluster_yaml("web", "round_robin", &[(up.addr, &[])])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_talks_only_to_the_expected_identity() {
    let p = pki("tls-upstream");
    let server = wasmesh_tests::pki::Leaf { cert: p.dir.join("server.pem"), key: p.dir.join("server.key") };
    let up = Upstream::start_tls("secure", server_config(&server)).await;
    let good = TestProxy::start(&upstream_tls_yaml(&p, &up, &format!("\"{SERVER_ID}\"")), 1);
    let r = Client::http1().get(&good.url("main", "/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "secure");
    // Expecting another identity: the handshake fails, the request never reaches it.
    let hits = up.hits();
    let bad = TestProxy::start(&upstream_tls_yaml(&p, &up, "\"spiffe://cluster.local/ns/default/sa/someone-else\""), 1);
    let r = Client::http1().get(&bad.url("main", "/")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(up.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use wasmesh_tests::pki::client_config_trusting;

    let p = pki("tls-rotate");
    let up = Upstream::start("web").await;
    let proxy = TestProxy::start(&tls_listener_yaml(&p, &up, "simple", "").replace("    filters:\n", ""), 1);
    let addr = proxy.addr("main");
    let new_ca = Ca::new("rotated CA");
    let both = client_config_trusting(&[&p.ca, &new_ca], None, &[]);
    let (stop, ok, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, both) = (stop.clone(), ok.clone(), failed.clone(), both.clone());
        tokio::spawn(async move {
            // New connection per request, so every request does a handshake (bounded).
            for _ in 0..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match tls_get(addr, "localhost", both.clone(), "/").await {
                    Ok((s, _, _)) if s == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rotate: a certificate from the new CA replaces the old one on disk.
    let staging = temp_dir("tls-rotate-staging");
    let leaf = new_ca.leaf(&staging, "server", &["localhost", "127.0.0.1"], &[SERVER_ID]);
    wasmesh_tests::write_atomic(&p.dir.join("server.key"), &std::fs::read(&leaf.key).expect("key"));
    wasmesh_tests::write_atomic(&p.dir.join("server.pem"), &std::fs::read(&leaf.cert).expect("cert"));
    let only_new = client_config_trusting(&[&new_ca], None, &[]);
    let started = Instant::now();
    loop {
        if tls_get(addr, "localhost", only_new.clone(), "/").await.is_ok_and(|r| r.0 == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "rotated certificate never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = load.await;
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(ok > 20, "load ran: {ok}");
    assert_eq!(failed, 0, "{failed} requests failed during rotation ({ok} ok)");
}
