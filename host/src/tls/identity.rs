//! What a handshake established: version, SNI, ALPN, cipher, and the identities in the
//! certificates (Envoy's `connection.*` / `upstream.*` TLS attributes).

use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, CommonState, HandshakeKind, ProtocolVersion, ServerConnection};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

use super::spiffe;

/// The identity a certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// URI SANs, in certificate order (`connection.uri_san_peer_certificate`).
    pub uri_sans: Vec<String>,
    /// DNS SANs, in certificate order (`connection.dns_san_peer_certificate`).
    pub dns_sans: Vec<String>,
    /// Subject distinguished name in RFC 2253 form, as Envoy prints it:
    /// `CN=web,O=example,C=US` (last RDN first; empty when the subject is).
    pub subject: String,
    /// Lowercase hex SHA-256 of the DER certificate
    /// (`connection.sha256_peer_certificate_digest`).
    pub sha256_digest: String,
    /// The SPIFFE ID: set when the certificate has exactly one URI SAN and it is a valid
    /// SPIFFE workload ID (an SVID with several URI SANs is invalid and yields none).
    pub spiffe_id: Option<String>,
    /// End of the certificate's validity, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// What a completed TLS handshake established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3` (empty before the handshake completes).
    pub version: &'static str,
    /// The server name the client asked for (SNI); `None` when it sent none.
    pub sni: Option<String>,
    /// The negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// IANA name of the cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The peer's certificate identity: the client's on a listener (mTLS), the server's
    /// upstream.
    pub peer: Option<PeerIdentity>,
    /// The identity of the certificate this side presented, when known.
    pub local: Option<PeerIdentity>,
    /// Mutual TLS (`connection.mtls`): on a listener, the client presented a verified
    /// certificate; upstream, a client certificate was configured (`mutual`) and the
    /// server presented one.
    pub mtls: bool,
    /// Whether the session was resumed rather than fully authenticated in this handshake.
    pub resumed: bool,
}

impl PeerIdentity {
    /// The identity in a DER certificate; `None` if it cannot be parsed.
    pub fn from_der(der: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let mut id = PeerIdentity {
            subject: rfc2253(cert.subject()),
            sha256_digest: hex(&Sha256::digest(der.as_ref())),
            not_after_unix: cert.validity().not_after.timestamp(),
            ..PeerIdentity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => id.uri_sans.push((*u).to_string()),
                    GeneralName::DNSName(d) => id.dns_sans.push((*d).to_string()),
                    _ => {}
                }
            }
        }
        if let [only] = id.uri_sans.as_slice() {
            if spiffe::is_workload_id(only) {
                id.spiffe_id = Some(only.clone());
            }
        }
        Some(id)
    }

    /// Istio principal (`td/ns/x/sa/y`): the SPIFFE ID without `spiffe://`.
    pub fn principal(&self) -> Option<&str> {
        self.spiffe_id.as_deref().and_then(spiffe::principal)
    }

    /// The SPIFFE ID parsed in Istio's `ns/<ns>/sa/<sa>` form.
    pub fn spiffe(&self) -> Option<spiffe::SpiffeId> {
        self.spiffe_id.as_deref().and_then(spiffe::parse)
    }
}

/// Facts of a server-side connection after the handshake. `local` is not filled here:
/// use [`super::ServerTls::facts`] for that.
pub fn facts(conn: &ServerConnection) -> TlsFacts {
    let mut f = common(conn);
    f.sni = conn.server_name().map(str::to_string);
    f.mtls = f.peer.is_some();
    f
}

/// Facts of a client-side (upstream) connection after the handshake: `peer` is the
/// upstream server's identity. `sni`, `local` and `mtls` are not knowable from the
/// connection: [`super::ClientTls::facts`] fills them from the configuration.
pub fn upstream_facts(conn: &ClientConnection) -> TlsFacts {
    common(conn)
}

fn common(conn: &CommonState) -> TlsFacts {
    TlsFacts {
        version: match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        },
        sni: None,
        alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| s.suite().as_str().map_or_else(|| format!("{:?}", s.suite()), str::to_string))
            .unwrap_or_default(),
        peer: conn.peer_certificates().and_then(|c| c.first()).and_then(PeerIdentity::from_der),
        local: None,
        mtls: false,
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
    }
}

/// A distinguished name as RFC 2253 writes it: RDNs in reverse order joined by `,`,
/// multi-valued RDNs by `+`, special characters escaped, non-string values as `#hex`.
fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            let attrs: Vec<String> = rdn
                .iter()
                .map(|a| {
                    let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                        .map_or_else(|_| a.attr_type().to_id_string(), str::to_string);
                    let value = match a.as_str() {
                        Ok(v) => escape_rdn_value(v),
                        Err(_) => format!("#{}", hex(a.as_slice())),
                    };
                    format!("{key}={value}")
                })
                .collect();
            attrs.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 2253 §2.4 escaping of an attribute value.
fn escape_rdn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
