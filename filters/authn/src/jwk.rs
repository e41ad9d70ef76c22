//! JSON Web Key Sets (RFC 7517/7518/8037) and JWS signature verification, pure Rust
//! (RustCrypto crates, no host calls): RS256/384/512, PS256/384/512, ES256/384, EdDSA
//! (Ed25519) and HS256/384/512 (`kty: oct` keys).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// A JWS algorithm this filter verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
    /// HMAC with SHA-256.
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
}

impl Alg {
    /// Parses a JOSE `alg` name; `None` for anything unsupported (including `none`).
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return None,
        })
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }
}

/// Public (or, for `oct`, shared) key material.
#[derive(Clone)]
pub enum KeyMaterial {
    /// `kty: RSA`.
    Rsa(rsa::RsaPublicKey),
    /// `kty: EC, crv: P-256`.
    P256(p256::ecdsa::VerifyingKey),
    /// `kty: EC, crv: P-384`.
    P384(p384::ecdsa::VerifyingKey),
    /// `kty: OKP, crv: Ed25519`.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// `kty: oct` (HMAC secret).
    Oct(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            KeyMaterial::Rsa(_) => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
            KeyMaterial::Oct(_) => "oct",
        })
    }
}

impl KeyMaterial {
    /// True when this key can verify `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (KeyMaterial::Rsa(_), Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512)
                | (KeyMaterial::P256(_), Alg::Es256)
                | (KeyMaterial::P384(_), Alg::Es384)
                | (KeyMaterial::Ed25519(_), Alg::EdDsa)
                | (KeyMaterial::Oct(_), Alg::Hs256 | Alg::Hs384 | Alg::Hs512)
        )
    }
}

/// One usable key of a set.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// `kid`, if the key has one.
    pub kid: Option<String>,
    /// `alg`, if the key pins one.
    pub alg: Option<Alg>,
    /// The key.
    pub key: KeyMaterial,
}

/// A parsed key set. Keys that are not for signatures (`use: enc`), of unknown types or
/// malformed are skipped (Envoy does the same); a set with no usable key is an error.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    /// Usable keys, in document order.
    pub keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

fn b64(field: &str, v: &Option<String>) -> Result<Vec<u8>, String> {
    let s = v.as_deref().ok_or_else(|| format!("missing \"{field}\""))?;
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| format!("\"{field}\" is not base64url"))
}

impl Jwks {
    /// Parses a JWKS document; the error says why no key could be used.
    pub fn parse(json: &str) -> Result<Jwks, String> {
        let raw: RawJwks =
            serde_json::from_str(json).map_err(|e| format!("JWKS is not valid JSON with a \"keys\" list: {e}"))?;
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for (i, v) in raw.keys.into_iter().enumerate() {
            match Self::parse_key(v) {
                Ok(Some(k)) => keys.push(k),
                Ok(None) => {}
                Err(e) => problems.push(format!("keys[{i}]: {e}")),
            }
        }
        if keys.is_empty() {
            if problems.is_empty() {
                return Err("JWKS has no usable signing key".to_string());
            }
            return Err(format!("JWKS has no usable signing key ({})", problems.join("; ")));
        }
        Ok(Jwks { keys })
    }

    /// `Ok(None)`: a key to skip silently (encryption key, unknown type).
    fn parse_key(v: serde_json::Value) -> Result<Option<Jwk>, String> {
        let raw: RawJwk = serde_json::from_value(v).map_err(|e| format!("not a JWK: {e}"))?;
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let alg = match raw.alg.as_deref() {
            None => None,
            Some(a) => match Alg::parse(a) {
                Some(a) => Some(a),
                None => return Ok(None),
            },
        };
        let key = match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("RSA", _) => {
                let n = rsa::BigUint::from_bytes_be(&b64("n", &raw.n)?);
                let e = rsa::BigUint::from_bytes_be(&b64("e", &raw.e)?);
                if n.bits() < 2048 {
                    // RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used".
                    return Err(format!("RSA key of {} bits is under 2048", n.bits()));
                }
                KeyMaterial::Rsa(rsa::RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?)
            }
            ("EC", Some("P-256")) => {
                let point = ec_point(&b64("x", &raw.x)?, &b64("y", &raw.y)?, 32)?;
                KeyMaterial::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| "bad P-256 point".to_string())?,
                )
            }
            ("EC", Some("P-384")) => {
                let point = ec_point(&b64("x", &raw.x)?, &b64("y", &raw.y)?, 48)?;
                KeyMaterial::P384(
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| "bad P-384 point".to_string())?,
                )
            }
            ("OKP", Some("Ed25519")) => {
                let x: [u8; 32] =
                    b64("x", &raw.x)?.try_into().map_err(|_| "Ed25519 \"x\" is not 32 bytes".to_string())?;
                KeyMaterial::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| "bad Ed25519 key".to_string())?,
                )
            }
            ("oct", _) => {
                let k = b64("k", &raw.k)?;
                if k.is_empty() {
                    return Err("empty \"k\"".to_string());
                }
                KeyMaterial::Oct(k)
            }
            _ => return Ok(None),
        };
        if let Some(a) = alg {
            if !key.fits(a) {
                return Err(format!("\"alg\" {} does not fit a {key:?} key", a.name()));
            }
        }
        Ok(Some(Jwk { kid: raw.kid, alg, key }))
    }

    /// Keys that may verify a token with `alg` and `kid` (a token without `kid` may be
    /// verified by any key of the right type, as in Envoy).
    pub fn candidates<'a>(&'a self, alg: Alg, kid: Option<&'a str>) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| {
            k.key.fits(alg) && k.alg.is_none_or(|a| a == alg) && (kid.is_none() || k.kid.as_deref() == kid)
        })
    }
}

fn ec_point(x: &[u8], y: &[u8], len: usize) -> Result<Vec<u8>, String> {
    if x.len() != len || y.len() != len {
        return Err(format!("EC coordinates must be {len} bytes"));
    }
    let mut p = Vec::with_capacity(1 + 2 * len);
    p.push(4);
    p.extend_from_slice(x);
    p.extend_from_slice(y);
    Ok(p)
}

/// Constant-time HMAC check (`verify_slice`).
macro_rules! hmac_ok {
    ($d:ty, $key:expr, $input:expr, $sig:expr) => {{
        use hmac::Mac;
        match hmac::Hmac::<$d>::new_from_slice($key) {
            Ok(mut m) => {
                m.update($input);
                m.verify_slice($sig).is_ok()
            }
            Err(_) => false,
        }
    }};
}

/// Verifies `sig` over `input` with `key` for `alg`. False on any mismatch or malformed
/// signature; never panics.
pub fn verify(alg: Alg, key: &KeyMaterial, input: &[u8], sig: &[u8]) -> bool {
    use rsa::signature::Verifier;
    match (alg, key) {
        (Alg::Rs256, KeyMaterial::Rsa(k)) => rsa_pkcs1::<sha2::Sha256>(k, input, sig),
        (Alg::Rs384, KeyMaterial::Rsa(k)) => rsa_pkcs1::<sha2::Sha384>(k, input, sig),
        (Alg::Rs512, KeyMaterial::Rsa(k)) => rsa_pkcs1::<sha2::Sha512>(k, input, sig),
        (Alg::Ps256, KeyMaterial::Rsa(k)) => rsa_pss::<sha2::Sha256>(k, input, sig),
        (Alg::Ps384, KeyMaterial::Rsa(k)) => rsa_pss::<sha2::Sha384>(k, input, sig),
        (Alg::Ps512, KeyMaterial::Rsa(k)) => rsa_pss::<sha2::Sha512>(k, input, sig),
        (Alg::Es256, KeyMaterial::P256(k)) => {
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        (Alg::Es384, KeyMaterial::P384(k)) => {
            p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        (Alg::EdDsa, KeyMaterial::Ed25519(k)) => {
            ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify_strict(input, &s).is_ok())
        }
        (Alg::Hs256, KeyMaterial::Oct(k)) => hmac_ok!(sha2::Sha256, k, input, sig),
        (Alg::Hs384, KeyMaterial::Oct(k)) => hmac_ok!(sha2::Sha384, k, input, sig),
        (Alg::Hs512, KeyMaterial::Oct(k)) => hmac_ok!(sha2::Sha512, k, input, sig),
        _ => false,
    }
}

fn rsa_pkcs1<D>(k: &rsa::RsaPublicKey, input: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    use rsa::signature::Verifier;
    let vk = rsa::pkcs1v15::VerifyingKey::<D>::new(k.clone());
    rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| vk.verify(input, &s).is_ok())
}

fn rsa_pss<D>(k: &rsa::RsaPublicKey, input: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + sha2::digest::FixedOutputReset,
{
    use rsa::signature::Verifier;
    let vk = rsa::pss::VerifyingKey::<D>::new(k.clone());
    rsa::pss::Signature::try_from(sig).is_ok_and(|s| vk.verify(input, &s).is_ok())
}
