//! RS256 test tokens for the authn/authz tests, signed with the authn filter's fixed test
//! key (`ring` signs RSA but cannot generate RSA keys).

use ring::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};

/// Unpadded base64url.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 3);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The fixed RSA-2048 test key.
pub fn key() -> RsaKeyPair {
    let pem = include_bytes!("../../filters/authn/testdata/rsa2048.pem");
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem).expect("test key PEM");
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("test key")
}

/// The public key as a JWK with key id `kid`.
pub fn jwk(k: &RsaKeyPair, kid: &str) -> Value {
    let p: ring::rsa::PublicKeyComponents<Vec<u8>> = k.public_key().into();
    json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64url(&p.n), "e": b64url(&p.e)})
}

/// A JWKS document holding `jwk(k, kid)`.
pub fn jwks(k: &RsaKeyPair, kid: &str) -> String {
    json!({"keys": [jwk(k, kid)]}).to_string()
}

/// An RS256 token over `claims` with key id `kid`.
pub fn sign(k: &RsaKeyPair, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut sig = vec![0; k.public().modulus_len()];
    k.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig).expect("sign");
    format!("{input}.{}", b64url(&sig))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
