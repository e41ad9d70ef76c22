//! A throwaway PKI for TLS tests: a CA and leaf certificates (DNS, IP and SPIFFE URI
//! SANs) written as PEM files into a temp folder. Keys are generated per run; none is
//! committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// PEM of the CA certificate.
    pub pem: String,
}

/// Files of one leaf certificate.
pub struct Leaf {
    /// Certificate PEM path.
    pub cert: PathBuf,
    /// Key PEM path.
    pub key: PathBuf,
}

// === impl Ca ===

impl Ca {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Ca { params, key, pem }
    }

    /// Writes the CA certificate to `dir/<name>` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.pem).expect("write ca");
        p
    }

    /// Issues a leaf for server and client auth with DNS names (an IP literal becomes an
    /// IP SAN) and URI SANs, written as `<name>.pem` / `<name>.key` in `dir`.
    pub fn leaf(&self, dir: &Path, name: &str, dns: &[&str], uris: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        for d in dns {
            params.subject_alt_names.push(match d.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*d).try_into().expect("dns name")),
            });
        }
        for u in uris {
            params.subject_alt_names.push(SanType::URI((*u).try_into().expect("uri")));
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let leaf = Leaf { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

/// A rustls client config trusting `ca`, presenting `client` if given, offering `alpn`.
pub fn client_config(ca: &Ca, client: Option<&Leaf>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    client_config_trusting(&[ca], client, alpn)
}

/// A rustls client config trusting every CA of `cas`.
pub fn client_config_trusting(cas: &[&Ca], client: Option<&Leaf>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            roots.add(c.expect("ca pem")).expect("add root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(leaf) => {
            let certs: Vec<_> =
                CertificateDer::pem_file_iter(&leaf.cert).expect("cert").map(|c| c.expect("cert")).collect();
            let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
            builder.with_client_auth_cert(certs, key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// A rustls server config presenting `leaf` (ALPN h2 and http/1.1).
pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_file_iter(&leaf.cert).expect("cert").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// One HTTP/1.1 GET over TLS to `addr` (SNI `server_name`); the status and the body, or
/// the handshake/request error as text.
pub async fn tls_get(
    addr: std::net::SocketAddr,
    server_name: &str,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(http::StatusCode, http::HeaderMap, bytes::Bytes), String> {
    use http_body_util::BodyExt;
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let tls =
            tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = hyper_util::rt::TokioIo::new(tls);
        let req = http::Request::get(format!("https://{server_name}{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(|e| format!("request: {e}"))?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("h1: {e}"))?;
            tokio::spawn(conn);
            let mut req = req;
            req.headers_mut()
                .insert(http::header::HOST, http::HeaderValue::from_str(server_name).map_err(|e| e.to_string())?);
            send.send_request(req).await.map_err(|e| format!("request: {e}"))?
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut).await.map_err(|_| "timed out".to_string())?
}
