//! Errors of building TLS configurations; each names the file and what is wrong.

/// Why a TLS configuration could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file, as configured.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file is malformed.
    #[error("{path}: invalid PEM: {reason}")]
    Pem {
        /// The file, as configured.
        path: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("{path}: no certificate found")]
    NoCertificate {
        /// The file, as configured.
        path: String,
    },
    /// A key file holds no private key block (PKCS#8, PKCS#1 or SEC1).
    #[error("{path}: no private key found")]
    NoKey {
        /// The file, as configured.
        path: String,
    },
    /// The private key is of a kind the crypto provider cannot use.
    #[error("{path}: unsupported private key: {reason}")]
    BadKey {
        /// The file, as configured.
        path: String,
        /// Why.
        reason: String,
    },
    /// The private key is not the one of the certificate.
    #[error("{key}: key does not match certificate {cert}")]
    KeyMismatch {
        /// Certificate file, as configured.
        cert: String,
        /// Key file, as configured.
        key: String,
    },
    /// A certificate could not be parsed or used.
    #[error("{path}: invalid certificate: {reason}")]
    BadCertificate {
        /// The file, as configured.
        path: String,
        /// Why.
        reason: String,
    },
    /// A trust bundle yielded no usable CA certificate.
    #[error("{path}: no usable CA certificate ({reason})")]
    BadTrustBundle {
        /// The file, as configured.
        path: String,
        /// Why.
        reason: String,
    },
    /// A server name (SNI) is not a DNS name or IP address.
    #[error("invalid server name \"{name}\" (expected a DNS name or an IP address)")]
    InvalidServerName {
        /// The name.
        name: String,
    },
    /// The settings contradict each other (e.g. `mutual` without a CA).
    #[error("{0}")]
    Settings(String),
    /// rustls refused the assembled configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}
