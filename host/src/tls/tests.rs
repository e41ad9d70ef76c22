//! Real handshakes over 127.0.0.1 between `ServerTls`, `ClientTls` and plain rustls
//! clients, with certificates made by rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::{ListenerTls, SniCertificate, TlsMode, TlsVersion, UpstreamTls, UpstreamTlsMode};

const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
/// Bound on every network step of a test.
const STEP: Duration = Duration::from_secs(10);

// === PKI ===

/// A certificate authority.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A leaf certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("self-signed").pem();
    Ca { params, key, pem }
}

/// A leaf for both server and client auth with these SANs.
fn leaf(ca: &Ca, cn: &str, dns: &[&str], uris: &[&str]) -> Leaf {
    leaf_with(ca, cn, dns, uris, false)
}

fn leaf_with(ca: &Ca, cn: &str, dns: &[&str], uris: &[&str], expired: bool) -> Leaf {
    let mut params = CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).expect("params");
    for u in uris {
        params.subject_alt_names.push(SanType::URI((*u).try_into().expect("uri")));
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).expect("sign");
    Leaf { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().clone() }
}

/// A scratch folder under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("wasmesh-tls-{}-{n}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&p).expect("mkdir");
        Dir(p)
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).expect("write");
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listener_tls(mode: TlsMode, client_ca: Option<&str>) -> ListenerTls {
    ListenerTls {
        cert: "server.pem".into(),
        key: "server.key".into(),
        client_ca: client_ca.map(str::to_string),
        mode,
        sni: Vec::new(),
        alpn: Vec::new(),
        min_version: TlsVersion::Tls12,
    }
}

fn upstream_tls(mode: UpstreamTlsMode, sans: &[&str]) -> UpstreamTls {
    UpstreamTls {
        mode,
        ca: "ca.pem".into(),
        cert: (mode == UpstreamTlsMode::Mutual).then(|| "client.pem".into()),
        key: (mode == UpstreamTlsMode::Mutual).then(|| "client.key".into()),
        sni: None,
        subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
        alpn: Vec::new(),
        min_version: TlsVersion::Tls12,
    }
}

/// A folder with a CA (`ca.pem`), a server leaf (`server.pem/key`: DNS `web.shop.svc`
/// and the web SPIFFE ID) and a client leaf (`client.pem/key`: the frontend ID).
struct Fixture {
    dir: Dir,
    ca: Ca,
    server: Leaf,
    client: Leaf,
}

fn fixture() -> Fixture {
    let dir = Dir::new();
    let ca = ca("mesh root");
    let server = leaf(&ca, "web", &["web.shop.svc"], &[WEB_ID]);
    let client = leaf(&ca, "frontend", &["frontend.shop.svc"], &[CLIENT_ID]);
    dir.write("ca.pem", &ca.pem);
    dir.write("server.pem", &server.cert);
    dir.write("server.key", &server.key);
    dir.write("client.pem", &client.cert);
    dir.write("client.key", &client.key);
    Fixture { dir, ca, server, client }
}

// === plain rustls clients ===

fn roots(pem: &str) -> RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut r = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        r.add(c.expect("pem")).expect("root");
    }
    r
}

/// A standard webpki client trusting `ca_pem`, optionally with a client certificate.
fn plain_client(ca_pem: &str, cert: Option<&Leaf>, alpn: &[&str]) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(ca_pem));
    let mut c = match cert {
        Some(l) => b
            .with_client_auth_cert(vec![l.der.clone()], PrivateKeyDer::from_pem_slice(l.key.as_bytes()).expect("key"))
            .expect("client auth"),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(c)
}

// === handshakes ===

/// Accepts one connection with `server`, answers `ok` and returns the facts, or the
/// handshake error.
async fn serve_once(server: Arc<ServerTls>) -> (SocketAddr, tokio::task::JoinHandle<Result<TlsFacts, String>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = tokio::time::timeout(STEP, l.accept()).await.map_err(|e| e.to_string())?.expect("accept");
        let mut tls = tokio::time::timeout(STEP, server.acceptor().accept(tcp))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let facts = server.facts(tls.get_ref().1);
        let _ = tls.write_all(b"ok").await;
        let _ = tls.shutdown().await;
        Ok(facts)
    });
    (addr, task)
}

/// Connects with `client` as `name`, reads to the end; the server's outcome and the
/// client's (what it read, or its error).
async fn handshake(
    server: &Arc<ServerTls>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (Result<TlsFacts, String>, Result<Vec<u8>, String>) {
    let (addr, task) = serve_once(server.clone()).await;
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(buf)
    };
    let client_res = tokio::time::timeout(STEP, client_side).await.unwrap_or_else(|_| Err("client timed out".into()));
    let server_res = task.await.unwrap_or_else(|e| Err(e.to_string()));
    (server_res, client_res)
}

/// Connects through `ClientTls` to `addr` as endpoint host `host`; the client's facts.
async fn dial(client: &ClientTls, addr: SocketAddr, host: &str) -> Result<(TlsFacts, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = client.server_name(host).map_err(|e| e.to_string())?;
    let fut = client.connector().connect(name.clone(), tcp);
    let mut tls = tokio::time::timeout(STEP, fut).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let facts = client.facts(tls.get_ref().1, &name);
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, tls.read_to_end(&mut buf))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((facts, buf))
}

fn hex_sha256(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

// === detection ===

#[test]
fn tls_record_header_is_recognised() {
    assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
    assert!(looks_like_tls(&[0x16, 0x03, 0x03]));
    assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
    assert!(!looks_like_tls(b"PRI * HTTP/2.0\r\n"));
    assert!(!looks_like_tls(&[0x16, 0x03]), "too short to tell");
    assert!(!looks_like_tls(&[0x16, 0x02, 0x01]));
    assert!(!looks_like_tls(&[0x16, 0x03, 0x09]));
    assert!(!looks_like_tls(&[0x17, 0x03, 0x03]), "application data is not a handshake");
}

#[tokio::test]
async fn permissive_detects_plaintext_and_tls_on_one_port() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Permissive, Some("ca.pem")), f.dir.path()).expect("build");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");

    // Plaintext HTTP.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let (tcp, _) = l.accept().await.expect("accept");
    assert!(!peek_is_tls(&tcp).await.expect("peek"));
    let mut head = [0u8; 3];
    let mut tcp = tcp;
    tcp.read_exact(&mut head).await.expect("read");
    assert_eq!(&head, b"GET", "peek must not consume");

    // A client that says nothing within the bound is plaintext.
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let (tcp, _) = l.accept().await.expect("accept");
    assert!(!peek_is_tls_within(&tcp, Duration::from_millis(50)).await.expect("peek"));

    // TLS, then the handshake completes on the peeked socket: without a client cert
    // (optional) and with one (verified, identity extracted).
    for cert in [None, Some(&f.client)] {
        let client = plain_client(&f.ca.pem, cert, &[]);
        let dial = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let name = ServerName::try_from("web.shop.svc").map_err(|e| e.to_string())?;
            let mut tls =
                tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        });
        let (tcp, _) = l.accept().await.expect("accept");
        assert!(tokio::time::timeout(STEP, peek_is_tls(&tcp)).await.expect("bounded").expect("peek"));
        let mut tls = server.acceptor().accept(tcp).await.expect("handshake");
        let facts = server.facts(tls.get_ref().1);
        assert_eq!(facts.mtls, cert.is_some());
        assert_eq!(facts.peer.and_then(|p| p.spiffe_id), cert.map(|_| CLIENT_ID.to_string()));
        tls.write_all(b"ok").await.expect("write");
        tls.shutdown().await.expect("shutdown");
        assert_eq!(dial.await.expect("join"), Ok(b"ok".to_vec()));
    }
}

#[tokio::test]
async fn permissive_still_rejects_a_client_cert_from_another_ca() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Permissive, Some("ca.pem")), f.dir.path()).expect("build");
    let other = ca("other root");
    let stranger = leaf(&other, "stranger", &[], &[CLIENT_ID]);
    let (srv, _) = handshake(&server, plain_client(&f.ca.pem, Some(&stranger), &[]), "web.shop.svc").await;
    assert!(srv.is_err(), "a presented certificate is verified: {srv:?}");
}

// === strict (mutual) ===

#[tokio::test]
async fn mutual_accepts_a_valid_client_and_extracts_its_identity() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Mutual, Some("ca.pem")), f.dir.path()).expect("build");
    let (srv, cli) =
        handshake(&server, plain_client(&f.ca.pem, Some(&f.client), &["h2", "http/1.1"]), "web.shop.svc").await;
    assert_eq!(cli, Ok(b"ok".to_vec()));
    let facts = srv.expect("server handshake");
    assert_eq!(facts.version, "TLSv1.3");
    assert_eq!(facts.sni.as_deref(), Some("web.shop.svc"));
    assert_eq!(facts.alpn.as_deref(), Some("h2"));
    assert!(facts.cipher.starts_with("TLS13_"), "{}", facts.cipher);
    assert!(facts.mtls);
    assert!(!facts.resumed);
    let peer = facts.peer.expect("peer identity");
    assert_eq!(peer.uri_sans, vec![CLIENT_ID.to_string()]);
    assert_eq!(peer.dns_sans, vec!["frontend.shop.svc".to_string()]);
    assert_eq!(peer.spiffe_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(peer.principal(), Some("cluster.local/ns/shop/sa/frontend"));
    let id = peer.spiffe().expect("istio form");
    assert_eq!((id.namespace.as_str(), id.service_account.as_str()), ("shop", "frontend"));
    assert_eq!(peer.subject, "CN=frontend");
    assert_eq!(peer.sha256_digest, hex_sha256(&f.client.der));
    assert_eq!(peer.not_after_unix, rcgen::date_time_ymd(4096, 1, 1).unix_timestamp());
    let served = server.served_identities();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].as_ref().map(|s| s.sha256_digest.clone()), Some(hex_sha256(&f.server.der)));
    let local = facts.local.expect("local identity");
    assert_eq!(local.spiffe_id.as_deref(), Some(WEB_ID));
    assert_eq!(local.sha256_digest, hex_sha256(&f.server.der));
}

#[tokio::test]
async fn mutual_rejects_missing_foreign_and_expired_client_certs() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Mutual, Some("ca.pem")), f.dir.path()).expect("build");
    let other = ca("other root");
    let foreign = leaf(&other, "frontend", &[], &[CLIENT_ID]);
    let expired = leaf_with(&f.ca, "frontend", &[], &[CLIENT_ID], true);
    for (what, cert) in [("no cert", None), ("other CA", Some(&foreign)), ("expired", Some(&expired))] {
        let (srv, cli) = handshake(&server, plain_client(&f.ca.pem, cert, &[]), "web.shop.svc").await;
        assert!(srv.is_err(), "{what}: server accepted: {srv:?}");
        assert!(cli.is_err(), "{what}: client read data: {cli:?}");
    }
    // And the valid one still works on the same server.
    let (srv, _) = handshake(&server, plain_client(&f.ca.pem, Some(&f.client), &[]), "web.shop.svc").await;
    assert!(srv.is_ok(), "{srv:?}");
}

#[tokio::test]
async fn simple_asks_for_no_client_cert_and_alpn_follows_the_client() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Simple, None), f.dir.path()).expect("build");
    for (offer, want) in [(&[][..], None), (&["http/1.1"][..], Some("http/1.1")), (&["h2"][..], Some("h2"))] {
        let (srv, cli) = handshake(&server, plain_client(&f.ca.pem, None, offer), "web.shop.svc").await;
        assert_eq!(cli, Ok(b"ok".to_vec()));
        let facts = srv.expect("handshake");
        assert_eq!(facts.alpn.as_deref(), want, "client offered {offer:?}");
        assert!(!facts.mtls);
        assert_eq!(facts.peer, None);
    }
}

#[tokio::test]
async fn min_version_tls13_refuses_a_tls12_client() {
    let f = fixture();
    let mut t = listener_tls(TlsMode::Simple, None);
    t.min_version = TlsVersion::Tls13;
    let server = ServerTls::build(&t, f.dir.path()).expect("build");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12_only = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots(&f.ca.pem))
        .with_no_client_auth();
    let (srv, _) = handshake(&server, Arc::new(tls12_only), "web.shop.svc").await;
    assert!(srv.is_err(), "{srv:?}");
    let (srv, _) = handshake(&server, plain_client(&f.ca.pem, None, &[]), "web.shop.svc").await;
    assert_eq!(srv.expect("tls13").version, "TLSv1.3");
}

// === SNI ===

#[tokio::test]
async fn sni_picks_the_certificate() {
    let f = fixture();
    let api = leaf(&f.ca, "api", &["api.example.com"], &[]);
    let wild = leaf(&f.ca, "wild", &["*.wild.test"], &[]);
    f.dir.write("api.pem", &api.cert);
    f.dir.write("api.key", &api.key);
    f.dir.write("wild.pem", &wild.cert);
    f.dir.write("wild.key", &wild.key);
    let mut t = listener_tls(TlsMode::Simple, None);
    t.sni = vec![
        SniCertificate { server_names: vec!["API.example.com".into()], cert: "api.pem".into(), key: "api.key".into() },
        SniCertificate { server_names: vec!["*.wild.test".into()], cert: "wild.pem".into(), key: "wild.key".into() },
    ];
    let server = ServerTls::build(&t, f.dir.path()).expect("build");
    for (name, want) in [("api.example.com", &api), ("x.wild.test", &wild), ("web.shop.svc", &f.server)] {
        // The client verifies the host name, so success alone shows the right cert.
        let (srv, cli) = handshake(&server, plain_client(&f.ca.pem, None, &[]), name).await;
        assert_eq!(cli, Ok(b"ok".to_vec()), "{name}");
        let facts = srv.expect("handshake");
        assert_eq!(facts.sni.as_deref(), Some(name));
        assert_eq!(facts.local.map(|l| l.sha256_digest), Some(hex_sha256(&want.der)), "{name}");
    }
    // A deeper name is not covered by the one-label wildcard: default cert, which the
    // client then rejects.
    let (_, cli) = handshake(&server, plain_client(&f.ca.pem, None, &[]), "a.b.wild.test").await;
    assert!(cli.is_err(), "{cli:?}");
}

// === upstream ===

#[tokio::test]
async fn upstream_san_match_connects_and_mismatch_fails_the_handshake() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Simple, None), f.dir.path()).expect("build");

    // Expected SPIFFE identity, dialled by IP: the chain and the SAN decide.
    let ok = ClientTls::build(&upstream_tls(UpstreamTlsMode::Simple, &[WEB_ID]), f.dir.path()).expect("client");
    let (addr, task) = serve_once(server.clone()).await;
    let (facts, body) = dial(&ok, addr, "127.0.0.1").await.expect("san match");
    assert_eq!(body, b"ok");
    assert_eq!(facts.peer.and_then(|p| p.spiffe_id).as_deref(), Some(WEB_ID));
    assert_eq!(facts.alpn.as_deref(), Some("http/1.1"));
    assert!(task.await.expect("join").is_ok());

    // A DNS SAN works too.
    let dns = ClientTls::build(&upstream_tls(UpstreamTlsMode::Simple, &["WEB.shop.svc"]), f.dir.path()).expect("c");
    let (addr, task) = serve_once(server.clone()).await;
    assert!(dial(&dns, addr, "127.0.0.1").await.is_ok());
    assert!(task.await.expect("join").is_ok());

    // Another identity: the handshake fails on the client, naming the identities.
    let other = "spiffe://cluster.local/ns/shop/sa/payments";
    let bad = ClientTls::build(&upstream_tls(UpstreamTlsMode::Simple, &[other]), f.dir.path()).expect("client");
    let (addr, task) = serve_once(server.clone()).await;
    let err = dial(&bad, addr, "127.0.0.1").await.expect_err("mismatch must fail");
    assert!(err.contains("match none") && err.contains(WEB_ID), "{err}");
    assert!(task.await.expect("join").is_err());

    // The right SAN on a certificate from an untrusted CA still fails (chain first).
    let rogue_ca = ca("rogue");
    let rogue = leaf(&rogue_ca, "web", &["web.shop.svc"], &[WEB_ID]);
    f.dir.write("server.pem", &rogue.cert);
    f.dir.write("server.key", &rogue.key);
    assert!(server.reload().expect("reload"));
    // A fresh client: `ok` holds a ticket and would (legitimately) resume without
    // seeing any certificate.
    let fresh = ClientTls::build(&upstream_tls(UpstreamTlsMode::Simple, &[WEB_ID]), f.dir.path()).expect("client");
    let (addr, task) = serve_once(server.clone()).await;
    assert!(dial(&fresh, addr, "127.0.0.1").await.is_err(), "untrusted chain accepted");
    assert!(task.await.expect("join").is_err());
}

#[tokio::test]
async fn upstream_without_sans_checks_the_host_name() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Simple, None), f.dir.path()).expect("build");
    let mut t = upstream_tls(UpstreamTlsMode::Simple, &[]);
    t.sni = Some("web.shop.svc".into());
    let good = ClientTls::build(&t, f.dir.path()).expect("client");
    let (addr, task) = serve_once(server.clone()).await;
    let (facts, _) = dial(&good, addr, "127.0.0.1").await.expect("host name matches");
    assert_eq!(facts.sni.as_deref(), Some("web.shop.svc"));
    assert_eq!(task.await.expect("join").expect("server").sni.as_deref(), Some("web.shop.svc"));

    t.sni = Some("evil.example".into());
    let bad = ClientTls::build(&t, f.dir.path()).expect("client");
    let (addr, task) = serve_once(server.clone()).await;
    assert!(dial(&bad, addr, "127.0.0.1").await.is_err());
    let _ = task.await;
}

#[tokio::test]
async fn upstream_mutual_presents_the_client_identity_and_h2_for_http2_clusters() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Mutual, Some("ca.pem")), f.dir.path()).expect("build");
    let t = upstream_tls(UpstreamTlsMode::Mutual, &[WEB_ID]);
    let client =
        ClientTls::build_for_protocol(&t, f.dir.path(), crate::config::UpstreamProtocol::Http2).expect("client");
    let (addr, task) = serve_once(server.clone()).await;
    let (facts, _) = dial(&client, addr, "127.0.0.1").await.expect("mutual");
    assert!(facts.mtls);
    assert_eq!(facts.alpn.as_deref(), Some("h2"));
    assert_eq!(facts.local.and_then(|l| l.spiffe_id).as_deref(), Some(CLIENT_ID));
    let srv = task.await.expect("join").expect("server");
    assert_eq!(srv.peer.and_then(|p| p.spiffe_id).as_deref(), Some(CLIENT_ID));
    assert_eq!(srv.alpn.as_deref(), Some("h2"));
}

#[test]
fn upstream_server_name_uses_the_override_or_the_endpoint_host() {
    let f = fixture();
    let c = ClientTls::build(&upstream_tls(UpstreamTlsMode::Simple, &[]), f.dir.path()).expect("client");
    assert!(matches!(c.server_name("10.0.0.1"), Ok(ServerName::IpAddress(_))));
    assert!(matches!(c.server_name("[::1]"), Ok(ServerName::IpAddress(_))));
    assert!(matches!(c.server_name("web.shop.svc"), Ok(ServerName::DnsName(d)) if d.as_ref() == "web.shop.svc"));
    assert!(c.server_name("bad name!").is_err());
    let mut t = upstream_tls(UpstreamTlsMode::Simple, &[]);
    t.sni = Some("api.example.com".into());
    let c = ClientTls::build(&t, f.dir.path()).expect("client");
    assert!(matches!(c.server_name("10.0.0.1"), Ok(ServerName::DnsName(d)) if d.as_ref() == "api.example.com"));
    t.sni = Some("not a name".into());
    assert!(matches!(ClientTls::build(&t, f.dir.path()), Err(TlsError::InvalidServerName { .. })));
}

// === rotation ===

#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_the_old_on_bad_files() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Simple, None), f.dir.path()).expect("build");
    let client = plain_client(&f.ca.pem, None, &[]);
    let digest = |r: Result<TlsFacts, String>| r.expect("handshake").local.expect("local").sha256_digest;

    assert!(!server.reload().expect("reload"), "nothing changed");
    let (srv, _) = handshake(&server, client.clone(), "web.shop.svc").await;
    assert_eq!(digest(srv), hex_sha256(&f.server.der));

    let next = leaf(&f.ca, "web", &["web.shop.svc"], &[WEB_ID]);
    let before = server.config();
    f.dir.write("server.pem", &next.cert);
    f.dir.write("server.key", &next.key);
    assert!(server.reload().expect("reload"));
    // A certificate-only change keeps the session ticketer and cache.
    let after = server.config();
    assert!(Arc::ptr_eq(&before.ticketer, &after.ticketer));
    assert!(Arc::ptr_eq(&before.session_storage, &after.session_storage));
    let (srv, cli) = handshake(&server, client.clone(), "web.shop.svc").await;
    assert_eq!(cli, Ok(b"ok".to_vec()));
    assert_eq!(digest(srv), hex_sha256(&next.der));

    // A broken certificate file: an error naming it; the last good config stays.
    f.dir.write("server.pem", "not a certificate\n");
    let err = server.reload().expect_err("bad file").to_string();
    assert_eq!(err, "server.pem: no certificate found");
    let (srv, _) = handshake(&server, client.clone(), "web.shop.svc").await;
    assert_eq!(digest(srv), hex_sha256(&next.der));

    // A key from another certificate.
    let third = leaf(&f.ca, "web", &["web.shop.svc"], &[]);
    f.dir.write("server.pem", &third.cert);
    let err = server.reload().expect_err("mismatch").to_string();
    assert_eq!(err, "server.key: key does not match certificate server.pem");
    let (srv, _) = handshake(&server, client, "web.shop.svc").await;
    assert_eq!(digest(srv), hex_sha256(&next.der));
}

#[tokio::test]
async fn trust_change_prevents_resumption() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Mutual, Some("ca.pem")), f.dir.path()).expect("build");
    // One client config throughout: it keeps its tickets.
    let client = plain_client(&f.ca.pem, Some(&f.client), &[]);
    let (first, _) = handshake(&server, client.clone(), "web.shop.svc").await;
    assert!(!first.expect("full").resumed);
    let (second, _) = handshake(&server, client.clone(), "web.shop.svc").await;
    let second = second.expect("resumed");
    assert!(second.resumed, "the client should resume with its ticket");
    assert_eq!(second.peer.and_then(|p| p.spiffe_id).as_deref(), Some(CLIENT_ID), "identity survives resumption");

    // The trust bundle changes (a second root is added): new ticketer and cache.
    let before = server.config();
    let other = ca("new root");
    f.dir.write("ca.pem", &format!("{}{}", f.ca.pem, other.pem));
    assert!(server.reload().expect("reload"));
    let (third, _) = handshake(&server, client.clone(), "web.shop.svc").await;
    let third = third.expect("full handshake again");
    assert!(!third.resumed, "a session from before the trust change resumed");
    assert!(third.mtls);
    let after = server.config();
    assert!(!Arc::ptr_eq(&before.ticketer, &after.ticketer));
    assert!(!Arc::ptr_eq(&before.session_storage, &after.session_storage));

    // Trust no longer includes the client's CA: its old tickets must not get it in.
    f.dir.write("ca.pem", &other.pem);
    assert!(server.reload().expect("reload"));
    let (fourth, _) = handshake(&server, client, "web.shop.svc").await;
    assert!(fourth.is_err(), "client of a no longer trusted CA got in: {fourth:?}");
}

#[tokio::test]
async fn client_reload_picks_up_a_new_client_certificate() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Mutual, Some("ca.pem")), f.dir.path()).expect("build");
    let client = ClientTls::build(&upstream_tls(UpstreamTlsMode::Mutual, &[WEB_ID]), f.dir.path()).expect("client");
    assert!(!client.reload().expect("reload"));
    let renamed = "spiffe://cluster.local/ns/shop/sa/frontend-v2";
    let next = leaf(&f.ca, "frontend", &[], &[renamed]);
    f.dir.write("client.pem", &next.cert);
    f.dir.write("client.key", &next.key);
    assert!(client.reload().expect("reload"));
    let (addr, task) = serve_once(server).await;
    assert!(dial(&client, addr, "127.0.0.1").await.is_ok());
    let srv = task.await.expect("join").expect("server");
    assert_eq!(srv.peer.and_then(|p| p.spiffe_id).as_deref(), Some(renamed));
}

// === errors ===

#[test]
fn build_errors_name_the_file_and_the_problem() {
    let f = fixture();
    let base = f.dir.path();
    let mut t = listener_tls(TlsMode::Simple, None);
    t.cert = "missing.pem".into();
    let e = ServerTls::build(&t, base).expect_err("missing file").to_string();
    assert!(e.starts_with("missing.pem: cannot read: "), "{e}");

    f.dir.write("empty.pem", "# nothing here\n");
    t.cert = "empty.pem".into();
    assert_eq!(ServerTls::build(&t, base).expect_err("empty").to_string(), "empty.pem: no certificate found");

    t.cert = "server.pem".into();
    t.key = "server.pem".into();
    assert_eq!(ServerTls::build(&t, base).expect_err("no key").to_string(), "server.pem: no private key found");

    t.key = "client.key".into();
    assert_eq!(
        ServerTls::build(&t, base).expect_err("mismatch").to_string(),
        "client.key: key does not match certificate server.pem"
    );

    f.dir.write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    t.key = "server.key".into();
    t.cert = "broken.pem".into();
    let e = ServerTls::build(&t, base).expect_err("broken").to_string();
    assert!(e.starts_with("broken.pem: invalid PEM: "), "{e}");

    let t = listener_tls(TlsMode::Mutual, None);
    assert!(matches!(ServerTls::build(&t, base), Err(TlsError::Settings(_))));

    let t = listener_tls(TlsMode::Mutual, Some("empty.pem"));
    let e = ServerTls::build(&t, base).expect_err("empty bundle").to_string();
    assert_eq!(e, "empty.pem: no usable CA certificate (no certificate found)");

    let mut u = upstream_tls(UpstreamTlsMode::Mutual, &[]);
    u.key = None;
    assert!(matches!(ClientTls::build(&u, base), Err(TlsError::Settings(_))));
    let u = UpstreamTls { ca: "nope.pem".into(), ..upstream_tls(UpstreamTlsMode::Simple, &[]) };
    assert!(ClientTls::build(&u, base).expect_err("ca").to_string().starts_with("nope.pem: cannot read"));
}

#[test]
fn absolute_paths_are_used_as_is() {
    let f = fixture();
    let mut t = listener_tls(TlsMode::Simple, None);
    t.cert = f.dir.path().join("server.pem").display().to_string();
    t.key = f.dir.path().join("server.key").display().to_string();
    assert!(ServerTls::build(&t, Path::new("/nonexistent")).is_ok());
}

// === SPIFFE ===

#[test]
fn spiffe_ids_parse_in_istio_form() {
    let id = spiffe::parse("spiffe://cluster.local/ns/shop/sa/web").expect("istio form");
    assert_eq!(id.trust_domain, "cluster.local");
    assert_eq!(id.namespace, "shop");
    assert_eq!(id.service_account, "web");
    assert_eq!(id.principal(), "cluster.local/ns/shop/sa/web");
    assert_eq!(id.uri(), "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(id.to_string(), id.uri());
    assert_eq!(spiffe::principal("spiffe://td/workload/x"), Some("td/workload/x"));
    for bad in [
        "spiffe://cluster.local/ns/shop/sa",
        "spiffe://cluster.local/ns/shop/sa/web/extra",
        "spiffe://cluster.local/ns//sa/web",
        "spiffe://Cluster.local/ns/a/sa/b",
        "spiffe://td:8080/ns/a/sa/b",
        "spiffe://td/ns/a/sa/b?x=1",
        "spiffe://td/ns/../sa/b",
        "spiffe://td",
        "spiffe://td/",
        "https://td/ns/a/sa/b",
        "cluster.local/ns/a/sa/b",
    ] {
        assert_eq!(spiffe::parse(bad), None, "{bad}");
    }
    assert!(!spiffe::is_workload_id("spiffe://td/"));
    assert!(spiffe::is_workload_id("spiffe://td/anything/goes"));
}

#[test]
fn an_svid_with_two_uri_sans_has_no_spiffe_id() {
    let ca = ca("root");
    let two = leaf(&ca, "x", &[], &[WEB_ID, CLIENT_ID]);
    let id = PeerIdentity::from_der(&two.der).expect("parse");
    assert_eq!(id.uri_sans.len(), 2);
    assert_eq!(id.spiffe_id, None);
    assert_eq!(id.principal(), None);
    let plain = leaf(&ca, "x", &["a.test"], &["https://example.com/not-spiffe"]);
    assert_eq!(PeerIdentity::from_der(&plain.der).expect("parse").spiffe_id, None);
}

// === config validation of the TLS blocks ===

#[test]
fn config_validation_checks_tls_blocks() {
    let base = "listeners:\n  - name: l\n    address: \"127.0.0.1:0\"\n    default_cluster: c\n    tls:\n      \
                cert: s.pem\n      key: s.key\n      min_version: TLSv1.3\n      alpn: [h2, \"\"]\n      sni:\n        \
                - { server_names: [\"api.test\", \"*.w.test\", \"bad name\"], cert: a.pem, key: a.key }\n        \
                - { server_names: [\"API.test\"], cert: b.pem, key: b.key }\n\
                clusters:\n  - name: c\n    endpoints: [ { address: \"127.0.0.1:1\" } ]\n    tls:\n      \
                ca: ca.pem\n      mode: mutual\n      cert: c.pem\n      subject_alt_names: [\"spiffe://td/ns/a/sa/b\"]\n";
    let e = crate::config::parse_str(base).expect_err("invalid").to_string();
    for want in [
        "listeners[0].tls.alpn[1]: invalid ALPN protocol",
        "listeners[0].tls.sni[0].server_names[2]: invalid server name \"bad name\"",
        "listeners[0].tls.sni[1].server_names[0]: duplicate server name \"API.test\" (already used by listeners[0].tls.sni[0])",
        "clusters[0].tls.key: missing key",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let fixed = base
        .replace(", \"\"]", "]")
        .replace(", \"bad name\"", "")
        .replace("API.test", "other.test")
        .replace("cert: c.pem\n", "cert: c.pem\n      key: c.key\n");
    let c = crate::config::parse_str(&fixed).expect("valid");
    let t = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(t.min_version, TlsVersion::Tls13);
    assert_eq!(t.sni.len(), 2);
    let u = c.clusters[0].tls.as_ref().expect("upstream tls");
    assert_eq!(u.mode, UpstreamTlsMode::Mutual);
    assert_eq!(u.subject_alt_names, vec!["spiffe://td/ns/a/sa/b".to_string()]);
}

#[tokio::test]
async fn tls12_clients_are_served_and_reported() {
    let f = fixture();
    let server = ServerTls::build(&listener_tls(TlsMode::Mutual, Some("ca.pem")), f.dir.path()).expect("build");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(f.client.key.as_bytes()).expect("key")
    };
    let tls12 = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots(&f.ca.pem))
        .with_client_auth_cert(vec![f.client.der.clone()], key)
        .expect("client auth");
    let (srv, cli) = handshake(&server, Arc::new(tls12), "web.shop.svc").await;
    assert_eq!(cli, Ok(b"ok".to_vec()));
    let facts = srv.expect("handshake");
    assert_eq!(facts.version, "TLSv1.2");
    assert!(facts.cipher.starts_with("TLS_ECDHE_"), "{}", facts.cipher);
    assert_eq!(facts.peer.and_then(|p| p.spiffe_id).as_deref(), Some(CLIENT_ID));
}

#[test]
fn tls_handles_are_shareable_across_workers() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ServerTls>();
    send_sync::<ClientTls>();
    send_sync::<TlsFacts>();
}

#[test]
fn subjects_are_printed_like_envoy_rfc2253() {
    let ca = ca("root");
    let mut params = CertificateParams::new(vec!["a.test".to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "US");
    params.distinguished_name.push(DnType::OrganizationName, "Example, Inc.");
    params.distinguished_name.push(DnType::CommonName, " web");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &Issuer::from_params(&ca.params, &ca.key)).expect("sign");
    let id = PeerIdentity::from_der(cert.der()).expect("parse");
    assert_eq!(id.subject, "CN=\\ web,O=Example\\, Inc.,C=US");
}
