//! A cluster's TLS client side: trust bundle, optional client certificate, ALPN, SNI,
//! and verification of the upstream's identity (SANs) rather than only its host name.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::files::{self, Sources};
use super::identity::{self, PeerIdentity, TlsFacts};
use super::{spiffe, TlsError, ALPN_H2, ALPN_HTTP1};
use crate::config::{Cluster, TlsVersion, UpstreamProtocol, UpstreamTls, UpstreamTlsMode};

/// A cluster's TLS: the current `rustls::ClientConfig`, replaced whole on rotation.
/// `Send + Sync`; share it across workers in an `Arc`.
pub struct ClientTls {
    spec: Spec,
    current: ArcSwap<State>,
    reloading: Mutex<()>,
}

struct Spec {
    settings: UpstreamTls,
    base_dir: PathBuf,
    default_alpn: Vec<Vec<u8>>,
    provider: Arc<CryptoProvider>,
    /// The SNI override, checked once.
    sni: Option<ServerName<'static>>,
}

struct State {
    config: Arc<ClientConfig>,
    /// Identity of the client certificate presented (`mutual`).
    local: Option<PeerIdentity>,
    sources: Sources,
}

/// Verifies the chain like webpki, then requires one of the expected identities among
/// the leaf's SANs instead of checking the host name: a sidecar talks only to the
/// identity it expects, whatever address it dialled.
#[derive(Debug)]
struct SanVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    expected: Vec<String>,
}

/// The upstream certificate does not carry any expected identity. (`Debug` prints the
/// message too: rustls shows this error with `{:?}`.)
#[derive(thiserror::Error)]
#[error("upstream certificate identities [{}] match none of the expected subject_alt_names [{}]", presented.join(", "), expected.join(", "))]
struct SanMismatch {
    expected: Vec<String>,
    presented: Vec<String>,
}

impl std::fmt::Debug for SanMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

// === impl ClientTls ===

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.spec.settings.ca)
            .field("mode", &self.spec.settings.mode)
            .field("subject_alt_names", &self.spec.settings.subject_alt_names)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds a cluster's TLS from its settings, reading the PEM files (relative paths
    /// against `base_dir`). ALPN defaults to `http/1.1`.
    pub fn build(tls: &UpstreamTls, base_dir: &Path) -> Result<Arc<ClientTls>, TlsError> {
        Self::build_for_protocol(tls, base_dir, UpstreamProtocol::Http1)
    }

    /// The TLS of `cluster`, if it has a `tls` block; ALPN defaults by its protocol.
    pub fn for_cluster(cluster: &Cluster, base_dir: &Path) -> Result<Option<Arc<ClientTls>>, TlsError> {
        cluster.tls.as_ref().map(|t| Self::build_for_protocol(t, base_dir, cluster.protocol)).transpose()
    }

    /// [`ClientTls::build`] with the default ALPN by upstream protocol: `h2` for
    /// `http2`, `http/1.1` for `http1`. A non-empty `tls.alpn` wins.
    pub fn build_for_protocol(
        tls: &UpstreamTls,
        base_dir: &Path,
        protocol: UpstreamProtocol,
    ) -> Result<Arc<ClientTls>, TlsError> {
        let default_alpn = match protocol {
            UpstreamProtocol::Http1 => ALPN_HTTP1,
            UpstreamProtocol::Http2 => ALPN_H2,
        };
        let sni = tls.sni.as_deref().map(parse_server_name).transpose()?;
        let spec = Spec {
            settings: tls.clone(),
            base_dir: base_dir.to_path_buf(),
            default_alpn: vec![default_alpn.as_bytes().to_vec()],
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            sni,
        };
        let sources = Sources::read(&spec.base_dir, spec.paths())?;
        let state = spec.build_state(sources)?;
        Ok(Arc::new(ClientTls { spec, current: ArcSwap::from_pointee(state), reloading: Mutex::new(()) }))
    }

    /// A connector on the current configuration; take one per connection attempt.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config())
    }

    /// The current rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// The configured `sni` override, if any (the server name for every endpoint).
    pub fn fixed_server_name(&self) -> Option<ServerName<'static>> {
        self.spec.sni.clone()
    }

    /// The name to hand the connector for an endpoint: the `sni` override, else the
    /// endpoint's host (an IP address sends no SNI). Brackets around IPv6 are accepted.
    pub fn server_name(&self, endpoint_host: &str) -> Result<ServerName<'static>, TlsError> {
        match &self.spec.sni {
            Some(sni) => Ok(sni.clone()),
            None => parse_server_name(endpoint_host),
        }
    }

    /// Identity of the client certificate presented (`mutual`), from the current files.
    pub fn client_identity(&self) -> Option<PeerIdentity> {
        self.current.load().local.clone()
    }

    /// Re-reads the files and swaps in a new configuration if any changed (`Ok(true)`).
    /// The new configuration has a fresh session store, so no session made under the
    /// old trust or client certificate resumes. On error the old one stays in force.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let _serial = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sources = Sources::read(&self.spec.base_dir, self.spec.paths())?;
        if sources == self.current.load().sources {
            return Ok(false);
        }
        let state = self.spec.build_state(sources)?;
        self.current.store(Arc::new(state));
        Ok(true)
    }

    /// [`identity::upstream_facts`] plus what the configuration knows: the SNI sent for
    /// `server_name`, the client certificate's identity, and `mtls` (a client
    /// certificate was configured and the upstream presented one).
    pub fn facts(&self, conn: &ClientConnection, server_name: &ServerName<'_>) -> TlsFacts {
        let mut f = identity::upstream_facts(conn);
        if let ServerName::DnsName(d) = server_name {
            f.sni = Some(d.as_ref().to_string());
        }
        f.local = self.current.load().local.clone();
        f.mtls = self.spec.settings.mode == UpstreamTlsMode::Mutual && f.peer.is_some();
        f
    }
}

// === impl Spec ===

impl Spec {
    fn paths(&self) -> Vec<&str> {
        let s = &self.settings;
        let mut p = vec![s.ca.as_str()];
        if s.mode == UpstreamTlsMode::Mutual {
            p.extend(s.cert.as_deref());
            p.extend(s.key.as_deref());
        }
        p
    }

    fn build_state(&self, sources: Sources) -> Result<State, TlsError> {
        let s = &self.settings;
        let p = &self.provider;
        let roots = files::roots(&sources, &s.ca)?;
        let versions: &[&'static rustls::SupportedProtocolVersion] = match s.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let verifier: Arc<dyn ServerCertVerifier> = if s.subject_alt_names.is_empty() {
            WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(p))
                .build()
                .map_err(|e| TlsError::BadTrustBundle { path: s.ca.clone(), reason: e.to_string() })?
        } else {
            Arc::new(SanVerifier { roots, provider: Arc::clone(p), expected: s.subject_alt_names.clone() })
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(p))
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let (mut config, local) = match (s.mode, &s.cert, &s.key) {
            (UpstreamTlsMode::Simple, ..) => (builder.with_no_client_auth(), None),
            (UpstreamTlsMode::Mutual, Some(cert), Some(key)) => {
                // Checked here for a precise error; rustls checks the pair again.
                let ck = files::certified_key(&sources, cert, key, p)?;
                let local = ck.cert.first().and_then(PeerIdentity::from_der);
                let key_der = files::key(key, sources.get(key)?)?;
                (builder.with_client_auth_cert(ck.cert.clone(), key_der)?, local)
            }
            (UpstreamTlsMode::Mutual, ..) => {
                return Err(TlsError::Settings("mode \"mutual\" requires both cert and key".into()));
            }
        };
        config.alpn_protocols = if s.alpn.is_empty() {
            self.default_alpn.clone()
        } else {
            s.alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
        };
        Ok(State { config: Arc::new(config), local, sources })
    }
}

/// A DNS name or IP address (IPv6 with or without brackets) as a rustls server name.
fn parse_server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::InvalidServerName { name: host.to_string() })
}

// === impl SanVerifier ===

impl SanVerifier {
    /// Whether the leaf carries one of the expected identities. A SPIFFE ID matches only
    /// a certificate with exactly that one URI SAN (an SVID has exactly one); other URIs
    /// match any equal URI SAN; anything else is a DNS name, matched case-insensitively,
    /// with a `*.` wildcard SAN covering one label.
    fn matches(&self, id: &PeerIdentity) -> bool {
        self.expected.iter().any(|want| {
            if want.starts_with(spiffe::SCHEME) {
                id.uri_sans.len() == 1 && id.uri_sans[0] == *want
            } else if want.contains("://") {
                id.uri_sans.iter().any(|u| u == want)
            } else {
                id.dns_sans.iter().any(|d| dns_matches(d, want))
            }
        })
    }
}

/// `presented` (a certificate DNS SAN, maybe `*.x`) covers `wanted`.
fn dns_matches(presented: &str, wanted: &str) -> bool {
    let (p, w) = (presented.trim_end_matches('.'), wanted.trim_end_matches('.'));
    if p.eq_ignore_ascii_case(w) {
        return true;
    }
    match (p.strip_prefix("*."), w.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && suffix.eq_ignore_ascii_case(rest),
        _ => false,
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Chain, validity period and EKU (serverAuth), exactly as WebPkiServerVerifier
        // does, minus the host-name check, which the SAN check below replaces.
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algs = self.provider.signature_verification_algorithms;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, algs.all)?;
        let id = PeerIdentity::from_der(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if self.matches(&id) {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = id.uri_sans.iter().chain(&id.dns_sans).cloned().collect();
        let why = SanMismatch { expected: self.expected.clone(), presented };
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(why)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
