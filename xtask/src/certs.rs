//! `cargo xtask certs <dir>`: the throwaway identities of the zero-trust example
//! (`examples/zero-trust`), generated fresh so no private key is ever committed.
//!
//! Writes into `<dir>`:
//! - `ca.pem`: the mesh CA (its key is dropped once the leaves are signed);
//! - `frontend.pem` / `frontend.key`: sidecar A, `spiffe://cluster.local/ns/shop/sa/frontend`;
//! - `api.pem` / `api.key`: sidecar B, `spiffe://cluster.local/ns/shop/sa/api`, with the
//!   SANs `localhost` and `127.0.0.1`;
//! - `jwt-signing.key`: an RSA-2048 PKCS#8 key, `jwks.json`: its public JWK (kid `shop-1`);
//! - `token-writer.jwt`: an RS256 token (issuer [`ISSUER`], audience `api`, 24 h) with
//!   `groups: ["shop-writers"]`; `token-reader.jwt`: the same with `["shop-readers"]`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::json;

/// Sidecar A's identity (the caller).
pub const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
/// Sidecar B's identity (the callee).
pub const API_ID: &str = "spiffe://cluster.local/ns/shop/sa/api";
/// The `iss` of the sample tokens.
pub const ISSUER: &str = "https://auth.shop.local";
/// The `kid` of the signing key in `jwks.json`.
const KID: &str = "shop-1";

/// Generates every file into `dir` (created if missing; existing files are replaced).
pub fn run(args: &[String]) -> Result<()> {
    let dir = args.first().context("usage: cargo xtask certs <dir>")?;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let (ca_params, ca_key) = ca()?;
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing the CA")?;
    write(dir, "ca.pem", &ca_cert.pem(), false)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    leaf(dir, &issuer, "frontend", &[], FRONTEND_ID)?;
    leaf(dir, &issuer, "api", &["localhost", "127.0.0.1"], API_ID)?;

    eprintln!("generating the RSA-2048 JWT signing key…");
    let key = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).context("generating the RSA key")?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).context("encoding the RSA key")?;
    write(dir, "jwt-signing.key", &pem, true)?;
    let jwk = json!({
        "kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    });
    write(dir, "jwks.json", &format!("{}\n", json!({ "keys": [jwk] })), false)?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let signer = SigningKey::<Sha256>::new(key);
    for (file, sub, group) in
        [("token-writer.jwt", "alice", "shop-writers"), ("token-reader.jwt", "bob", "shop-readers")]
    {
        let claims = json!({
            "iss": ISSUER, "sub": sub, "aud": "api", "iat": now, "exp": now + 24 * 3600, "groups": [group],
        });
        write(dir, file, &format!("{}\n", sign(&signer, &claims)), true)?;
    }
    eprintln!(
        "wrote the CA, the frontend and api certificates, the JWT key, jwks.json and two tokens to {}",
        dir.display()
    );
    Ok(())
}

/// A compact RS256 JWS over `claims`.
fn sign(key: &SigningKey<Sha256>, claims: &serde_json::Value) -> String {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": KID });
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = key.sign(input.as_bytes()).to_bytes();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn ca() -> Result<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "wasmesh zero-trust example CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok((params, KeyPair::generate()?))
}

/// A leaf for server and client auth: DNS/IP SANs plus one SPIFFE URI SAN, written as
/// `<name>.pem` and `<name>.key`.
fn leaf(dir: &Path, issuer: &Issuer<'_, &KeyPair>, name: &str, hosts: &[&str], spiffe: &str) -> Result<()> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for h in hosts {
        params.subject_alt_names.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*h).try_into()?),
        });
    }
    params.subject_alt_names.push(SanType::URI(spiffe.try_into()?));
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer).with_context(|| format!("signing {name}"))?;
    write(dir, &format!("{name}.pem"), &cert.pem(), false)?;
    write(dir, &format!("{name}.key"), &key.serialize_pem(), true)
}

/// Writes one file; `secret` files are readable by the owner only (Unix).
fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}
