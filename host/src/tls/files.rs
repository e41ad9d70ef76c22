//! Reading PEM files: certificate chains, private keys, trust bundles, and the bytes
//! kept to tell whether a reload changed anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};

use super::TlsError;

/// The bytes of every file a TLS configuration was built from, by configured path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sources {
    files: BTreeMap<String, Vec<u8>>,
}

impl Sources {
    /// Reads `paths` (relative ones against `base`).
    pub(crate) fn read<'a>(base: &Path, paths: impl IntoIterator<Item = &'a str>) -> Result<Self, TlsError> {
        let mut files = BTreeMap::new();
        for p in paths {
            if files.contains_key(p) {
                continue;
            }
            let bytes =
                std::fs::read(resolve(base, p)).map_err(|source| TlsError::Read { path: p.to_string(), source })?;
            files.insert(p.to_string(), bytes);
        }
        Ok(Self { files })
    }

    /// The bytes of `path`, which must have been read.
    pub(crate) fn get(&self, path: &str) -> Result<&[u8], TlsError> {
        self.files.get(path).map(Vec::as_slice).ok_or_else(|| TlsError::Read {
            path: path.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not among the files read"),
        })
    }

    /// Whether `path` has different bytes (or presence) here and in `other`.
    pub(crate) fn differs(&self, other: &Sources, path: &str) -> bool {
        self.files.get(path) != other.files.get(path)
    }
}

/// `path` relative to `base` unless absolute.
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn pem_error(path: &str, e: pem::Error) -> TlsError {
    TlsError::Pem { path: path.to_string(), reason: e.to_string() }
}

/// Every `CERTIFICATE` block of a PEM file, in order (leaf first for a chain).
pub(crate) fn certs(path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_string() });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub(crate) fn key(path: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_string() },
        e => pem_error(path, e),
    })
}

/// A certificate chain and its key, checked to belong together.
pub(crate) fn certified_key(
    sources: &Sources,
    cert_path: &str,
    key_path: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs(cert_path, sources.get(cert_path)?)?;
    let key = key(key_path, sources.get(key_path)?)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey { path: key_path.to_string(), reason: e.to_string() })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch { cert: cert_path.to_string(), key: key_path.to_string() })
        }
        Err(e) => Err(TlsError::BadCertificate { path: cert_path.to_string(), reason: e.to_string() }),
    }
}

/// A trust bundle: every certificate in it must be a usable trust anchor.
pub(crate) fn roots(sources: &Sources, path: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let certs = certs(path, sources.get(path)?).map_err(|e| match e {
        TlsError::NoCertificate { path } => TlsError::BadTrustBundle { path, reason: "no certificate found".into() },
        e => e,
    })?;
    let mut store = RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        store.add(c).map_err(|e| TlsError::BadTrustBundle {
            path: path.to_string(),
            reason: format!("certificate #{} is not a valid trust anchor: {e}", i + 1),
        })?;
    }
    Ok(Arc::new(store))
}
