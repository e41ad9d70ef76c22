//! A listener's TLS server side: SNI certificate choice, client authentication per
//! mode, and rotation by swapping the whole `ServerConfig`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

use super::files::{self, Sources};
use super::identity::{self, PeerIdentity, TlsFacts};
use super::{TlsError, ALPN_H2, ALPN_HTTP1};
use crate::config::{DownstreamProtocol, ListenerTls, TlsMode, TlsVersion};

/// Server sessions remembered for stateful resumption (TLS 1.2 session ids).
const SESSION_CACHE_SIZE: usize = 1024;

/// A listener's TLS: the current `rustls::ServerConfig`, replaced whole on rotation.
/// `Send + Sync`; share it across workers in an `Arc`.
pub struct ServerTls {
    spec: Spec,
    current: ArcSwap<State>,
    /// Serialises reloads, so two never race on "what changed".
    reloading: Mutex<()>,
}

/// What a configuration is built from, besides the files' bytes.
struct Spec {
    settings: ListenerTls,
    base_dir: PathBuf,
    default_alpn: Vec<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

/// One built configuration and the file bytes it came from.
struct State {
    config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
    sources: Sources,
}

/// Picks the certificate by SNI: exact names, then `*.suffix` wildcards (one label),
/// then the default.
#[derive(Debug)]
struct SniResolver {
    default: Served,
    entries: Vec<Served>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

/// A certificate and the identity it carries.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    identity: Option<PeerIdentity>,
}

// === impl ServerTls ===

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.spec.settings.cert)
            .field("mode", &self.spec.settings.mode)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Builds a listener's TLS from its settings, reading the PEM files (relative paths
    /// against `base_dir`, normally the config file's folder). ALPN defaults to `h2`,
    /// `http/1.1`.
    pub fn build(tls: &ListenerTls, base_dir: &Path) -> Result<Arc<ServerTls>, TlsError> {
        Self::build_for_protocol(tls, base_dir, DownstreamProtocol::Auto)
    }

    /// [`ServerTls::build`] with the default ALPN following the listener's protocol:
    /// `auto` offers `h2` and `http/1.1`, `http1` only `http/1.1`, `http2` only `h2`.
    /// A non-empty `tls.alpn` wins over either.
    pub fn build_for_protocol(
        tls: &ListenerTls,
        base_dir: &Path,
        protocol: DownstreamProtocol,
    ) -> Result<Arc<ServerTls>, TlsError> {
        let default_alpn = match protocol {
            DownstreamProtocol::Auto => vec![ALPN_H2, ALPN_HTTP1],
            DownstreamProtocol::Http1 => vec![ALPN_HTTP1],
            DownstreamProtocol::Http2 => vec![ALPN_H2],
        };
        let spec = Spec {
            settings: tls.clone(),
            base_dir: base_dir.to_path_buf(),
            default_alpn: default_alpn.into_iter().map(|p| p.as_bytes().to_vec()).collect(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let sources = Sources::read(&spec.base_dir, spec.paths())?;
        let state = spec.build_state(sources, None)?;
        Ok(Arc::new(ServerTls { spec, current: ArcSwap::from_pointee(state), reloading: Mutex::new(()) }))
    }

    /// An acceptor on the current configuration; take a fresh one per connection so
    /// rotations apply to every new handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }

    /// The current rustls configuration.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// Identities of the certificates currently served: the default first, then the
    /// `sni` entries in order (e.g. for an admin `/certs` page or expiry metrics).
    pub fn served_identities(&self) -> Vec<Option<PeerIdentity>> {
        let state = self.current.load();
        let r = &state.resolver;
        std::iter::once(&r.default).chain(&r.entries).map(|s| s.identity.clone()).collect()
    }

    /// The client-certificate policy.
    pub fn mode(&self) -> TlsMode {
        self.spec.settings.mode
    }

    /// Re-reads the files and, if any changed, builds and swaps in a new configuration
    /// (`Ok(true)`); `Ok(false)` when nothing changed. When the client trust bundle
    /// changed, the new configuration also gets a new session ticketer and session
    /// cache, so sessions authenticated under the old trust cannot resume. On error the
    /// old configuration stays in force. Connections already established are unaffected.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let _serial = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.current.load_full();
        let sources = Sources::read(&self.spec.base_dir, self.spec.paths())?;
        if sources == old.sources {
            return Ok(false);
        }
        let trust_changed = self.spec.trust_path().is_some_and(|ca| sources.differs(&old.sources, ca));
        let keep = if trust_changed { None } else { Some(&*old) };
        let state = self.spec.build_state(sources, keep)?;
        self.current.store(Arc::new(state));
        Ok(true)
    }

    /// [`identity::facts`] plus the identity of the certificate this listener presented
    /// (chosen by SNI, from the current configuration).
    pub fn facts(&self, conn: &ServerConnection) -> TlsFacts {
        let mut f = identity::facts(conn);
        f.local = self.current.load().resolver.pick(f.sni.as_deref()).identity.clone();
        f
    }
}

// === impl Spec ===

impl Spec {
    /// The client trust bundle in use, if the mode verifies client certificates.
    fn trust_path(&self) -> Option<&str> {
        match self.settings.mode {
            TlsMode::Simple => None,
            TlsMode::Mutual | TlsMode::Permissive => self.settings.client_ca.as_deref(),
        }
    }

    /// Every file the configuration is built from.
    fn paths(&self) -> Vec<&str> {
        let s = &self.settings;
        let mut p = vec![s.cert.as_str(), s.key.as_str()];
        p.extend(self.trust_path());
        for e in &s.sni {
            p.push(&e.cert);
            p.push(&e.key);
        }
        p
    }

    /// A configuration from `sources`; `keep` is the state whose ticketer and session
    /// cache carry over (none: fresh ones).
    fn build_state(&self, sources: Sources, keep: Option<&State>) -> Result<State, TlsError> {
        let s = &self.settings;
        let p = &self.provider;
        let resolver = Arc::new(SniResolver::build(s, &sources, p)?);
        let versions: &[&'static rustls::SupportedProtocolVersion] = match s.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(p)).with_protocol_versions(versions)?;
        let verifier = match (s.mode, self.trust_path()) {
            (TlsMode::Simple, _) | (TlsMode::Permissive, None) => None,
            (TlsMode::Mutual, None) => {
                return Err(TlsError::Settings("mode \"mutual\" requires client_ca".into()));
            }
            (mode, Some(ca)) => {
                let roots = files::roots(&sources, ca)?;
                let b = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(p));
                let b = if mode == TlsMode::Permissive { b.allow_unauthenticated() } else { b };
                Some(b.build().map_err(|e| TlsError::BadTrustBundle { path: ca.to_string(), reason: e.to_string() })?)
            }
        };
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = if s.alpn.is_empty() {
            self.default_alpn.clone()
        } else {
            s.alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
        };
        match keep {
            Some(old) => {
                config.ticketer = Arc::clone(&old.config.ticketer);
                config.session_storage = Arc::clone(&old.config.session_storage);
            }
            None => {
                config.ticketer = rustls::crypto::ring::Ticketer::new()?;
                config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
            }
        }
        Ok(State { config: Arc::new(config), resolver, sources })
    }
}

// === impl SniResolver ===

impl SniResolver {
    fn build(s: &ListenerTls, sources: &Sources, provider: &CryptoProvider) -> Result<SniResolver, TlsError> {
        let served = |cert: &str, key: &str| -> Result<Served, TlsError> {
            let key = files::certified_key(sources, cert, key, provider)?;
            let identity = key.cert.first().and_then(PeerIdentity::from_der);
            Ok(Served { key, identity })
        };
        let mut r = SniResolver {
            default: served(&s.cert, &s.key)?,
            entries: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (i, e) in s.sni.iter().enumerate() {
            r.entries.push(served(&e.cert, &e.key)?);
            for name in &e.server_names {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                // The first entry naming a server name wins.
                match name.strip_prefix("*.") {
                    Some(suffix) => r.wildcard.entry(suffix.to_string()).or_insert(i),
                    None => r.exact.entry(name).or_insert(i),
                };
            }
        }
        Ok(r)
    }

    fn pick(&self, sni: Option<&str>) -> &Served {
        let Some(name) = sni else { return &self.default };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let found =
            self.exact.get(&name).or_else(|| name.split_once('.').and_then(|(_, suffix)| self.wildcard.get(suffix)));
        found.and_then(|&i| self.entries.get(i)).unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.pick(hello.server_name()).key))
    }
}
