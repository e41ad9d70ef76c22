//! Native tests of config, JWKS, token checks, extraction and the cache policy. Tokens
//! are signed here with `ring` (EC/Ed25519/HMAC keys generated per run; the RSA key is
//! a fixed 2048-bit test key because ring cannot generate RSA keys).

use std::collections::HashMap;
use std::rc::Rc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

use crate::config::{Config, KeySource, Location, RemoteJwks};
use crate::jwk::Jwks;
use crate::policy::{
    self, decide, extract, AuditRequest, Found, JwksCache, JwtError, Keys, Outcome, Rejection, RequestView,
    AUDIT_POLICY,
};

const NOW: u64 = 1_700_000_000;
const OCT: &str = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
const ISS: &str = "https://issuer.example";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Test keys for every algorithm, with their JWKs.
struct Keyring {
    rsa: RsaKeyPair,
    p256: EcdsaKeyPair,
    p384: EcdsaKeyPair,
    ed: Ed25519KeyPair,
    secret: Vec<u8>,
}

impl Keyring {
    fn new() -> Keyring {
        let rng = SystemRandom::new();
        let pem = include_str!("../testdata/rsa2048.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).expect("pem");
        let rsa = RsaKeyPair::from_pkcs8(&der).expect("rsa");
        let p256_doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("p256");
        let p256 = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, p256_doc.as_ref(), &rng)
            .expect("p256");
        let p384_doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("p384");
        let p384 = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, p384_doc.as_ref(), &rng)
            .expect("p384");
        let ed_doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed");
        let ed = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).expect("ed");
        Keyring { rsa, p256, p384, ed, secret: b"a shared secret of 32 bytes!!!!!".to_vec() }
    }

    fn rsa_jwk(&self, kid: &str) -> Value {
        let p: ring::rsa::PublicKeyComponents<Vec<u8>> = self.rsa.public().into();
        json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&p.n), "e": b64(&p.e)})
    }

    fn ec_jwk(pk: &[u8], crv: &str, kid: &str) -> Value {
        let l = (pk.len() - 1) / 2;
        json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64(&pk[1..1 + l]), "y": b64(&pk[1 + l..])})
    }

    /// A JWKS with one key per family, kids `rsa`, `p256`, `p384`, `ed`, `hs`.
    fn jwks(&self) -> String {
        json!({"keys": [
            self.rsa_jwk("rsa"),
            Self::ec_jwk(self.p256.public_key().as_ref(), "P-256", "p256"),
            Self::ec_jwk(self.p384.public_key().as_ref(), "P-384", "p384"),
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(self.ed.public_key().as_ref())},
            {"kty": "oct", "kid": "hs", "k": b64(&self.secret)},
            {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},
        ]})
        .to_string()
    }

    /// Signs `claims` with `alg`; the header names `kid` (the family's kid when `None`).
    fn sign(&self, alg: &str, kid: Option<&str>, claims: &Value) -> String {
        let family = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => "rsa",
            "ES256" => "p256",
            "ES384" => "p384",
            "EdDSA" => "ed",
            _ => "hs",
        };
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid.unwrap_or(family)});
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let rng = SystemRandom::new();
        let sig = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
                let pad: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; self.rsa.public().modulus_len()];
                self.rsa.sign(pad, &rng, input.as_bytes(), &mut sig).expect("rsa sign");
                sig
            }
            "ES256" => self.p256.sign(&rng, input.as_bytes()).expect("es256").as_ref().to_vec(),
            "ES384" => self.p384.sign(&rng, input.as_bytes()).expect("es384").as_ref().to_vec(),
            "EdDSA" => self.ed.sign(input.as_bytes()).as_ref().to_vec(),
            "HS256" => ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.secret), input.as_bytes())
                .as_ref()
                .to_vec(),
            "HS384" => ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA384, &self.secret), input.as_bytes())
                .as_ref()
                .to_vec(),
            _ => ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA512, &self.secret), input.as_bytes())
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": ["web", "https://api.example/"], "azp": "cli",
        "exp": NOW + 600, "nbf": NOW - 10, "groups": ["a", "b"], "nested": {"team": {"name": "core"}},
        "evil": "x\r\nx-injected: 1", "admin": true})
}

fn config_with(rule_extra: Value, jwks: &str) -> Config {
    let mut rule = json!({"issuer": ISS, "jwks": jwks});
    if let (Some(r), Some(extra)) = (rule.as_object_mut(), rule_extra.as_object()) {
        for (k, v) in extra {
            r.insert(k.clone(), v.clone());
        }
    }
    Config::parse(json!({"jwtRules": [rule]}).to_string().as_bytes()).expect("config")
}

struct Req {
    headers: HashMap<String, String>,
    path: String,
}

impl RequestView for Req {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).cloned()
    }
    fn path(&self) -> Option<String> {
        Some(self.path.clone())
    }
}

fn bearer(token: &str) -> Req {
    Req { headers: HashMap::from([("authorization".to_string(), format!("Bearer {token}"))]), path: "/".into() }
}

fn run(cfg: &Config, req: &Req, now: u64) -> Outcome {
    let found = extract(cfg, req);
    let mut keys = |ri: usize, _jwt: &policy::Jwt| match &cfg.rules[ri].keys {
        KeySource::Inline(k) => Keys::Ready(k.clone()),
        KeySource::Remote(_) => Keys::Unavailable,
    };
    decide(cfg, &found, now, &mut keys)
}

fn rejected(o: Outcome) -> JwtError {
    match o {
        Outcome::Rejected(r) => r.error,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn verified(o: Outcome) -> policy::Verified {
    match o {
        Outcome::Verified(id) => id,
        other => panic!("expected a verified token, got {other:?}"),
    }
}

#[test]
fn every_algorithm_verifies_and_publishes_the_identity() {
    let k = Keyring::new();
    let cfg = config_with(json!({}), &k.jwks());
    for alg in
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"]
    {
        let t = k.sign(alg, None, &claims());
        let id = verified(run(&cfg, &bearer(&t), NOW));
        assert_eq!(id.principal, format!("{ISS}/alice"), "{alg}");
        assert_eq!(id.audiences, vec!["web".to_string(), "https://api.example/".to_string()]);
        assert_eq!(id.presenter.as_deref(), Some("cli"));
        let c: Value = serde_json::from_str(&id.claims_json).expect("claims json");
        assert_eq!(c["nested"]["team"]["name"], "core");
        assert_eq!(id.location, Location::Header { name: "authorization".into(), prefix: "Bearer ".into() });
        // Any tampering breaks it.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c2 = claims();
        c2["sub"] = json!("mallory");
        parts[1] = b64(c2.to_string().as_bytes());
        assert_eq!(rejected(run(&cfg, &bearer(&parts.join(".")), NOW)), JwtError::VerificationFail, "{alg}");
    }
}

#[test]
fn time_claims_honour_the_clock_skew() {
    let k = Keyring::new();
    let cfg = config_with(json!({}), &k.jwks());
    assert_eq!(cfg.clock_skew_s, 60);
    let mut c = claims();
    c["exp"] = json!(NOW - 30);
    verified(run(&cfg, &bearer(&k.sign("RS256", None, &c)), NOW)); // within the 60 s skew
    c["exp"] = json!(NOW - 61);
    let t = k.sign("RS256", None, &c);
    assert_eq!(rejected(run(&cfg, &bearer(&t), NOW)), JwtError::Expired);
    assert_eq!(JwtError::Expired.to_string(), "Jwt is expired");
    let mut c = claims();
    c["nbf"] = json!(NOW + 30);
    verified(run(&cfg, &bearer(&k.sign("ES256", None, &c)), NOW));
    c["nbf"] = json!(NOW + 120);
    assert_eq!(rejected(run(&cfg, &bearer(&k.sign("ES256", None, &c)), NOW)), JwtError::NotYetValid);
    // A configured skew of 0 is strict.
    let strict = Config::parse(
        json!({"clockSkew": "0s", "jwtRules": [{"issuer": ISS, "jwks": k.jwks()}]}).to_string().as_bytes(),
    )
    .expect("config");
    let mut c = claims();
    c["exp"] = json!(NOW - 1);
    assert_eq!(rejected(run(&strict, &bearer(&k.sign("EdDSA", None, &c)), NOW)), JwtError::Expired);
    // exp must be a number.
    c["exp"] = json!("tomorrow");
    assert_eq!(rejected(run(&cfg, &bearer(&k.sign("EdDSA", None, &c)), NOW)), JwtError::ExpNotInteger);
}

#[test]
fn issuer_and_audience_must_match() {
    let k = Keyring::new();
    let cfg = config_with(json!({"audiences": ["api.example"]}), &k.jwks());
    // `https://api.example/` in the token matches `api.example` (Envoy normalisation).
    verified(run(&cfg, &bearer(&k.sign("RS256", None, &claims())), NOW));
    let mut c = claims();
    c["aud"] = json!("other");
    assert_eq!(rejected(run(&cfg, &bearer(&k.sign("RS256", None, &c)), NOW)), JwtError::AudienceNotAllowed);
    c.as_object_mut().map(|o| o.remove("aud"));
    assert_eq!(rejected(run(&cfg, &bearer(&k.sign("RS256", None, &c)), NOW)), JwtError::AudienceNotAllowed);
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert_eq!(rejected(run(&cfg, &bearer(&k.sign("RS256", None, &c)), NOW)), JwtError::UnknownIssuer);
    c["iss"] = json!(42);
    assert_eq!(rejected(run(&cfg, &bearer(&k.sign("RS256", None, &c)), NOW)), JwtError::IssNotString);
}

#[test]
fn malformed_tokens_are_rejected_with_envoys_reasons() {
    let k = Keyring::new();
    let cfg = config_with(json!({}), &k.jwks());
    let r = |t: &str| rejected(run(&cfg, &bearer(t), NOW));
    assert_eq!(r("garbage"), JwtError::BadFormat);
    assert_eq!(
        JwtError::BadFormat.to_string(),
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    assert_eq!(r("a.b"), JwtError::BadFormat);
    assert_eq!(r("a.b.c.d"), JwtError::BadFormat);
    assert_eq!(r("!!!.e30.c2ln"), JwtError::HeaderBadBase64);
    assert_eq!(r(&format!("{}.e30.c2ln", b64(b"not json"))), JwtError::HeaderBadJson);
    let h = |v: Value| b64(v.to_string().as_bytes());
    assert_eq!(r(&format!("{}.e30.c2ln", h(json!({"typ": "JWT"})))), JwtError::HeaderBadAlg);
    assert_eq!(r(&format!("{}.{}.", h(json!({"alg": "none"})), h(claims()))), JwtError::AlgNotImplemented);
    assert_eq!(r(&format!("{}.{}.", h(json!({"alg": "None"})), h(claims()))), JwtError::AlgNotImplemented);
    assert_eq!(r(&format!("{}.e30.c2ln", h(json!({"alg": "RS256", "kid": 7})))), JwtError::HeaderBadKid);
    assert_eq!(r(&format!("{}.e30.c2ln", h(json!({"alg": "RS256", "crit": ["b64"]})))), JwtError::HeaderCrit);
    assert_eq!(r(&format!("{}.%%%.c2ln", h(json!({"alg": "RS256"})))), JwtError::PayloadBadBase64);
    assert_eq!(r(&format!("{}.{}.c2ln", h(json!({"alg": "RS256"})), b64(b"[1]"))), JwtError::PayloadBadJson);
    assert_eq!(r(&format!("{}.{}.%%", h(json!({"alg": "RS256"})), h(claims()))), JwtError::SignatureBadBase64);
    // An empty signature never verifies.
    let t = k.sign("RS256", None, &claims());
    let unsigned = &t[..t.rfind('.').map(|i| i + 1).unwrap_or(0)];
    assert_eq!(r(unsigned), JwtError::VerificationFail);
    // Oversized: rejected before parsing, whatever the content.
    let big = format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c");
    assert_eq!(r(&big), JwtError::TooLarge);
}

#[test]
fn algorithm_confusion_and_kid_mismatch_fail() {
    let k = Keyring::new();
    // Only the RSA key: an HS256 token "signed" with the RSA modulus as the secret must
    // not verify (the RSA key does not fit HS256).
    let only_rsa = json!({"keys": [k.rsa_jwk("rsa")]}).to_string();
    let cfg = config_with(json!({}), &only_rsa);
    let header = b64(json!({"alg": "HS256", "kid": "rsa"}).to_string().as_bytes());
    let payload = b64(claims().to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let secret = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.rsa.public()).n;
    let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret), input.as_bytes());
    let forged = format!("{input}.{}", b64(mac.as_ref()));
    assert_eq!(rejected(run(&cfg, &bearer(&forged), NOW)), JwtError::KidAlgMismatch);
    // Unknown kid.
    let t = k.sign("RS256", Some("rotated"), &claims());
    assert_eq!(rejected(run(&cfg, &bearer(&t), NOW)), JwtError::KidAlgMismatch);
    // A token signed by another key with a known kid.
    let t = k.sign("ES256", Some("rsa"), &claims());
    assert_eq!(rejected(run(&cfg, &bearer(&t), NOW)), JwtError::KidAlgMismatch);
}

#[test]
fn no_token_passes_without_identity_and_tokens_are_found_everywhere() {
    let k = Keyring::new();
    let cfg = config_with(json!({}), &k.jwks());
    let empty = Req { headers: HashMap::new(), path: "/x?y=1".into() };
    assert!(matches!(run(&cfg, &empty, NOW), Outcome::NoToken));
    // Another auth scheme is not a bearer token.
    let basic = Req { headers: HashMap::from([("authorization".into(), "Basic dTpw".into())]), path: "/".into() };
    assert!(matches!(run(&cfg, &basic, NOW), Outcome::NoToken));
    let t = k.sign("RS256", None, &claims());
    // The scheme is case-insensitive.
    let lower = Req { headers: HashMap::from([("authorization".into(), format!("bearer {t}"))]), path: "/".into() };
    verified(run(&cfg, &lower, NOW));
    // Default query parameter.
    let q = Req { headers: HashMap::new(), path: format!("/p?x=1&access_token={t}") };
    assert_eq!(verified(run(&cfg, &q, NOW)).location, Location::Param("access_token".into()));
    // Custom header + cookie + param.
    let cfg = config_with(
        json!({"fromHeaders": [{"name": "X-Jwt"}], "fromCookies": ["session"], "fromParams": ["tok"]}),
        &k.jwks(),
    );
    let h = Req { headers: HashMap::from([("x-jwt".into(), t.clone())]), path: "/".into() };
    verified(run(&cfg, &h, NOW));
    let c = Req { headers: HashMap::from([("cookie".into(), format!("a=b; session={t}; c=d"))]), path: "/".into() };
    assert_eq!(verified(run(&cfg, &c, NOW)).location, Location::Cookie("session".into()));
    let p = Req { headers: HashMap::new(), path: format!("/?tok={t}") };
    verified(run(&cfg, &p, NOW));
    // The default locations are replaced: Authorization is no longer read.
    assert!(matches!(run(&cfg, &bearer(&t), NOW), Outcome::NoToken));
    // A bad token and a good one: the good one wins.
    let both = Req {
        headers: HashMap::from([("x-jwt".into(), "garbage".into()), ("cookie".into(), format!("session={t}"))]),
        path: "/".into(),
    };
    verified(run(&cfg, &both, NOW));
}

#[test]
fn claims_reach_headers_only_when_safe() {
    let k = Keyring::new();
    let cfg = config_with(
        json!({"outputClaimToHeaders": [
            {"header": "X-Sub", "claim": "sub"},
            {"header": "x-team", "claim": "nested.team.name"},
            {"header": "x-groups", "claim": "groups"},
            {"header": "x-admin", "claim": "admin"},
            {"header": "x-evil", "claim": "evil"},
            {"header": "x-obj", "claim": "nested"},
            {"header": "x-missing", "claim": "nope.nothing"}],
         "outputPayloadToHeader": "x-jwt-payload"}),
        &k.jwks(),
    );
    // Every output header is stripped from inbound requests.
    let mut out = cfg.output_headers.clone();
    out.sort();
    assert_eq!(out, ["x-admin", "x-evil", "x-groups", "x-jwt-payload", "x-missing", "x-obj", "x-sub", "x-team"]);
    let t = k.sign("RS256", None, &claims());
    let id = verified(run(&cfg, &bearer(&t), NOW));
    let h: HashMap<_, _> = id.headers.iter().cloned().collect();
    assert_eq!(h.get("x-sub").map(String::as_str), Some("alice"));
    assert_eq!(h.get("x-team").map(String::as_str), Some("core"));
    assert_eq!(h.get("x-groups").map(String::as_str), Some("a,b"));
    assert_eq!(h.get("x-admin").map(String::as_str), Some("true"));
    assert_eq!(h.get("x-jwt-payload").map(String::as_str), t.split('.').nth(1));
    assert!(!h.contains_key("x-evil"), "CR/LF never forwarded");
    assert!(!h.contains_key("x-obj") && !h.contains_key("x-missing"));
    assert_eq!(id.refused, vec!["x-evil".to_string(), "x-obj".to_string()]);
    assert_eq!(policy::claim_header_value(&json!("tab\there")), None);
    assert_eq!(policy::claim_header_value(&json!("caf\u{e9}")), None);
    assert_eq!(policy::claim_header_value(&json!(12)), Some("12".into()));
    // An invalid token yields no identity at all (so no headers).
    assert_eq!(rejected(run(&cfg, &bearer("a.b.c"), NOW)), JwtError::HeaderBadBase64);
}

#[test]
fn remote_jwks_cache_refetches_on_unknown_kid_with_a_rate_limit() {
    let k = Keyring::new();
    let remote = RemoteJwks {
        uri: "http://jwks/keys".into(),
        cluster: "jwks".into(),
        scheme: "http".into(),
        authority: "jwks".into(),
        path: "/keys".into(),
        timeout_ms: 5_000,
        cache_ms: 600_000,
        refetch_ms: 10_000,
    };
    let jwt = |kid: &str| policy::decode(&k.sign("RS256", Some(kid), &claims())).expect("decode");
    let mut c = JwksCache::default();
    assert!(matches!(c.cached(), Keys::Unavailable));
    // Cold: fetch. A failed fetch fails fast for a second, then is tried again.
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 0), Keys::Fetch));
    c.started(7, 1, 0);
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 5), Keys::Wait), "one fetch at a time: wait for it");
    c.waiters.push(2);
    let (r, woken) = c.fetched(Err("down".into()), 10);
    assert!(r.is_err());
    assert_eq!(woken, vec![2], "the waiters are woken on the answer");
    assert!(c.in_flight.is_none());
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 500), Keys::Unavailable));
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 1_011), Keys::Fetch));
    let set = json!({"keys": [k.rsa_jwk("rsa")]}).to_string();
    c.started(8, 1, 1_011);
    c.fetched(Jwks::parse(&set), 1_020).0.expect("parsed");
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 2_000), Keys::Ready(_)));
    assert!(matches!(c.cached(), Keys::Ready(_)));
    // Unknown kid soon after a fetch: no refetch (rate limit) → the keys as they are.
    assert!(matches!(c.keys_for(&remote, &jwt("new"), 5_000), Keys::Ready(_)));
    // After the interval: one refetch.
    assert!(matches!(c.keys_for(&remote, &jwt("new"), 11_011), Keys::Fetch));
    c.started(9, 1, 11_011);
    // Known kids keep working meanwhile; the new kid waits for the fetch.
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 11_012), Keys::Ready(_)));
    assert!(matches!(c.keys_for(&remote, &jwt("new"), 11_012), Keys::Wait));
    let rotated = json!({"keys": [k.rsa_jwk("rsa"), k.rsa_jwk("new")]}).to_string();
    c.fetched(Jwks::parse(&rotated), 11_020).0.expect("parsed");
    match c.keys_for(&remote, &jwt("new"), 11_030) {
        Keys::Ready(keys) => assert!(policy::check_signature(&jwt("new"), &keys).is_ok()),
        _ => panic!("rotated key not used"),
    }
    // Expired cache: refetch; a failed refetch keeps the stale keys in use.
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 11_020 + 600_000), Keys::Fetch));
    c.started(10, 1, 11_020 + 600_000);
    assert!(
        matches!(c.keys_for(&remote, &jwt("rsa"), 11_020 + 600_000), Keys::Ready(_)),
        "stale keys are used while the refresh is under way"
    );
    assert!(c.fetched(Err("down".into()), 11_020 + 600_001).0.is_err());
    assert!(matches!(c.keys_for(&remote, &jwt("rsa"), 11_020 + 600_002), Keys::Ready(_)));
}

#[test]
fn background_refresh_keeps_keys_warm_without_piling_up() {
    let remote = RemoteJwks {
        uri: "http://jwks/keys".into(),
        cluster: "jwks".into(),
        scheme: "http".into(),
        authority: "jwks".into(),
        path: "/keys".into(),
        timeout_ms: 5_000,
        cache_ms: 100_000,
        refetch_ms: 10_000,
    };
    let mut c = JwksCache::default();
    assert!(c.wants_refresh(&remote, 0), "cold: fetch at once");
    c.started(1, 0, 0);
    assert!(!c.wants_refresh(&remote, 1_000), "one in flight");
    assert!(c.wants_refresh(&remote, 6_001), "in flight past its timeout: try again");
    c.waiters.push(5);
    c.in_flight = None; // its request went away
    assert!(c.wants_refresh(&remote, 1_001), "orphaned waiters: the root fetches for them");
    c.waiters.clear();
    assert!(c.fetched(Err("down".into()), 6_001).0.is_err());
    assert!(!c.wants_refresh(&remote, 6_500), "backoff after a failure");
    assert!(c.wants_refresh(&remote, 7_001));
    c.started(2, 0, 7_001);
    c.fetched(Jwks::parse(OCT), 7_010).0.expect("parsed");
    assert!(!c.wants_refresh(&remote, 7_010 + 89_999));
    assert!(c.wants_refresh(&remote, 7_010 + 90_000), "refreshed at 90% of the cache duration");
    // A background fetch counts for the unknown-kid rate limit.
    let k = Keyring::new();
    let jwt = policy::decode(&k.sign("HS256", Some("other"), &claims())).expect("decode");
    assert!(matches!(c.keys_for(&remote, &jwt, 7_010 + 5_000), Keys::Ready(_)));
    assert!(matches!(c.keys_for(&remote, &jwt, 7_001 + 10_000), Keys::Fetch));
}

#[test]
fn decide_asks_for_a_fetch_only_for_a_plausible_token() {
    let k = Keyring::new();
    let cfg = Config::parse(
        json!({"jwtRules": [{"issuer": ISS, "jwksUri": "http://keys.example:8080/jwks.json", "jwksCluster": "keys"}]})
            .to_string()
            .as_bytes(),
    )
    .expect("config");
    let cache = JwksCache::default();
    let KeySource::Remote(remote) = &cfg.rules[0].keys else { panic!("remote") };
    assert_eq!((remote.authority.as_str(), remote.path.as_str()), ("keys.example:8080", "/jwks.json"));
    let mut keys = |_ri: usize, jwt: &policy::Jwt| cache.keys_for(remote, jwt, 0);
    let good = extract(&cfg, &bearer(&k.sign("RS256", None, &claims())));
    assert!(matches!(decide(&cfg, &good, NOW, &mut keys), Outcome::FetchKeys(0)));
    // Expired tokens and garbage are refused without any fetch.
    let mut c = claims();
    c["exp"] = json!(NOW - 3600);
    let expired = extract(&cfg, &bearer(&k.sign("RS256", None, &c)));
    assert!(matches!(
        decide(&cfg, &expired, NOW, &mut keys),
        Outcome::Rejected(policy::Rejection { error: JwtError::Expired, rule: Some(0) })
    ));
    let param = Location::Param("access_token".into());
    let garbage = vec![Found { rule: 0, location: &param, token: "x".into() }];
    assert!(matches!(
        decide(&cfg, &garbage, NOW, &mut keys),
        Outcome::Rejected(policy::Rejection { error: JwtError::BadFormat, rule: None })
    ));
}

#[test]
fn config_errors_name_the_field() {
    let e = |v: Value| Config::parse(v.to_string().as_bytes()).err().unwrap_or_default();
    assert!(e(json!({"jwtRules": [{"jwks": "{}"}]})).contains("jwtRules[0].issuer: required"));
    assert!(e(json!({"jwtRules": [{"issuer": "i"}]})).contains("jwtRules[0]: one of jwks"));
    assert!(e(json!({"jwtRules": [{"issuer": "i", "jwks": "{}", "jwksUri": "http://a/b"}]})).contains("only one of"));
    assert!(e(json!({"jwtRules": [{"issuer": "i", "jwksUri": "http://a/b"}]}))
        .contains("jwtRules[0].jwksCluster: required"));
    assert!(e(json!({"jwtRules": [{"issuer": "i", "jwksUri": "ftp://a/b", "jwksCluster": "c"}]}))
        .contains("jwtRules[0].jwksUri"));
    assert!(
        e(json!({"jwtRules": [{"issuer": "i", "jwks": "nope"}]})).contains("jwtRules[0].jwks: JWKS is not valid JSON")
    );
    assert!(e(
        json!({"jwtRules": [{"issuer": "i", "jwks": "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!\",\"e\":\"AQAB\"}]}"}]})
    )
    .contains("keys[0]: \"n\" is not base64url"));
    assert!(e(json!({"jwtRules": [{"issuer": "i", "jwks": "{\"keys\":[]}"}]})).contains("no usable signing key"));
    assert!(e(json!({"jwtRules": [{"issuer": "i", "jwks": "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"alg\":\"RS256\"}]}"}]}))
        .contains("does not fit"));
    assert!(e(json!({"clockSkew": "soon", "jwtRules": []})).contains("clockSkew"));
    assert!(e(json!({"jwtRules": [{"issuer": "i", "jwks": OCT, "outputClaimToHeaders": [{"header": "bad header", "claim": "sub"}]}]}))
        .contains("jwtRules[0].outputClaimToHeaders[0].header"));
    assert!(e(
        json!({"jwtRules": [{"issuer": "i", "jwks": OCT, "outputClaimToHeaders": [{"header": "x", "claim": "a..b"}]}]})
    )
    .contains("outputClaimToHeaders[0].claim"));
    assert!(e(json!({"jwtRules": [{"issuer": "i", "jwks": OCT, "bogus": 1}]})).contains("unknown field `bogus`"));
    let k = Keyring::new();
    let clash = json!({"jwtRules": [{"issuer": "i", "jwks": k.jwks(), "fromHeaders": [{"name": "x-token"}],
        "outputClaimToHeaders": [{"header": "X-Token", "claim": "sub"}]}]});
    assert!(e(clash).contains("also an output header"));
    // An empty configuration is valid and checks nothing.
    assert!(Config::parse(b"").expect("empty").rules.is_empty());
}

#[test]
fn jwks_skips_what_it_cannot_use() {
    let k = Keyring::new();
    let set = Jwks::parse(&k.jwks()).expect("jwks");
    assert_eq!(set.keys.len(), 5, "the encryption key is skipped");
    let only_unknown = json!({"keys": [{"kty": "XYZ"}, {"kty": "EC", "crv": "P-521", "x": "", "y": ""}]}).to_string();
    assert!(Jwks::parse(&only_unknown).is_err());
    let _ = Rc::new(set);
    let weak = json!({"keys": [{"kty": "RSA", "n": b64(&[0xC1; 128]), "e": "AQAB"}]}).to_string();
    let err = Jwks::parse(&weak).err().unwrap_or_default();
    assert!(err.contains("RSA key of 1024 bits is under 2048"), "{err}");
}

#[test]
fn www_authenticate_names_the_request_url() {
    assert_eq!(
        policy::www_authenticate("http", "web.example", "/api/x?token=secret"),
        "Bearer realm=\"http://web.example/api/x\", error=\"invalid_token\""
    );
    assert_eq!(
        policy::www_authenticate("http", "a\"b\r\n", "/"),
        "Bearer realm=\"http://ab/\", error=\"invalid_token\""
    );
}

#[test]
fn verified_tokens_are_cached_but_time_is_checked_every_time() {
    let k = Keyring::new();
    let cfg = config_with(json!({"audiences": ["web"]}), &k.jwks());
    let mut cache = policy::TokenCache::new(2);
    let mut lookups = 0;
    let inline = |ri: usize| match &cfg.rules[ri].keys {
        KeySource::Inline(k) => Keys::Ready(k.clone()),
        KeySource::Remote(_) => Keys::Unavailable,
    };
    let mut c = claims();
    c["exp"] = json!(NOW + 100);
    let t = k.sign("ES256", None, &c);
    let found = extract(&cfg, &bearer(&t));
    let run = |now: u64, cache: &mut policy::TokenCache, lookups: &mut u32| {
        let mut keys = |ri: usize, _: &policy::Jwt| {
            *lookups += 1;
            inline(ri)
        };
        policy::decide_cached(&cfg, &found, now, &mut keys, cache)
    };
    let first = verified(run(NOW, &mut cache, &mut lookups));
    assert_eq!((lookups, cache.len()), (1, 1));
    let second = verified(run(NOW + 1, &mut cache, &mut lookups));
    assert_eq!(lookups, 1, "a cached token is not verified again");
    assert_eq!(first, second);
    // Expiry still applies to a cached token.
    assert_eq!(rejected(run(NOW + 100 + 61, &mut cache, &mut lookups)), JwtError::Expired);
    // Bounded: the oldest token goes first.
    for sub in ["b", "c"] {
        let mut c = claims();
        c["sub"] = json!(sub);
        let f = extract(&cfg, &bearer(&k.sign("ES256", None, &c)));
        let mut keys = |ri: usize, _: &policy::Jwt| inline(ri);
        verified(policy::decide_cached(&cfg, &f, NOW, &mut keys, &mut cache));
    }
    assert_eq!(cache.len(), 2);
    verified(run(NOW, &mut cache, &mut lookups));
    assert_eq!(lookups, 2, "evicted, so verified again");
    // A tampered token is a different string: never a cache hit.
    let mut parts: Vec<&str> = t.split('.').collect();
    let forged = b64(claims().to_string().as_bytes());
    parts[1] = &forged;
    let forged = parts.join(".");
    let f = extract(&cfg, &bearer(&forged));
    let mut keys = |ri: usize, _: &policy::Jwt| inline(ri);
    assert_eq!(rejected(policy::decide_cached(&cfg, &f, NOW, &mut keys, &mut cache)), JwtError::VerificationFail);
    // Same length, one signature character changed (in the 8-byte words, then in the
    // tail): still not the cached token.
    let sig_start = t.rfind('.').expect("three parts") + 1;
    for at in [sig_start + 2, t.len() - 1] {
        let mut bytes = t.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).expect("ascii");
        let f = extract(&cfg, &bearer(&altered));
        let mut keys = |ri: usize, _: &policy::Jwt| inline(ri);
        assert!(
            matches!(policy::decide_cached(&cfg, &f, NOW, &mut keys, &mut cache), Outcome::Rejected(_)),
            "altered at {at}"
        );
    }
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn a_rejection_names_its_rule_and_makes_one_audit_record() {
    let k = Keyring::new();
    let cfg = config_with(json!({"audiences": ["web"]}), &k.jwks());
    let reject = |req: &Req| match run(&cfg, req, NOW) {
        Outcome::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    };
    // A token the rule took and refused names the rule; its issuer is the policy.
    let mut c = claims();
    c["exp"] = json!(NOW - 3600);
    let expired = reject(&bearer(&k.sign("RS256", None, &c)));
    assert_eq!(expired, Rejection { error: JwtError::Expired, rule: Some(0) });
    assert_eq!(expired.policy(&cfg), ISS);
    let unknown_kid = reject(&bearer(&k.sign("RS256", Some("nope"), &claims())));
    assert_eq!(unknown_kid, Rejection { error: JwtError::KidAlgMismatch, rule: Some(0) });
    // A token no rule took: the generic policy.
    let garbage = reject(&bearer("garbage"));
    assert_eq!((&garbage.error, garbage.rule, garbage.policy(&cfg)), (&JwtError::BadFormat, None, AUDIT_POLICY));
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert_eq!(reject(&bearer(&k.sign("RS256", None, &c))), Rejection { error: JwtError::UnknownIssuer, rule: None });

    let req = AuditRequest {
        request_id: Some("rid-7".into()),
        source_ip: Some("10.1.2.3".into()),
        method: "GET".into(),
        host: "web.example".into(),
        path: "/api?access_token=secret".into(),
    };
    let record = serde_json::to_string(&expired.audit_record(&cfg, &req, 1_764_000_000_123)).unwrap_or_default();
    assert!(!record.contains('\n') && !record.contains("secret"), "{record}");
    let v: Value = serde_json::from_str(&record).unwrap_or_default();
    assert_eq!(
        v,
        json!({"type": "audit", "time": "2025-11-24T16:00:00.123Z", "request_id": "rid-7", "principal": null,
            "request_principal": null, "source_ip": "10.1.2.3", "method": "GET", "host": "web.example",
            "path": "/api", "policy": ISS, "action": null, "rule": 0, "decision": "deny", "dry_run": false,
            "reason": "Jwt is expired"})
    );
    let v = serde_json::to_value(garbage.audit_record(&cfg, &AuditRequest::default(), 0)).unwrap_or_default();
    assert_eq!((&v["policy"], &v["rule"]), (&json!("request-authentication"), &Value::Null));
    assert!(v["reason"].as_str().is_some_and(|r| r.starts_with("Jwt is not in the form")), "{v}");
}

/// Records which request values `extract` read (each a hostcall in the filter).
struct CountingReq {
    inner: Req,
    reads: std::cell::RefCell<Vec<String>>,
}

impl RequestView for CountingReq {
    fn header(&self, name: &str) -> Option<String> {
        self.reads.borrow_mut().push(name.to_string());
        self.inner.header(name)
    }
    fn path(&self) -> Option<String> {
        self.reads.borrow_mut().push(":path".to_string());
        self.inner.path()
    }
}

#[test]
fn extract_reads_the_path_and_cookies_only_for_rules_that_look_there() {
    let parse = |rule: Value| Config::parse(json!({"jwtRules": [rule]}).to_string().as_bytes()).expect("config");
    let req = |r| CountingReq { inner: r, reads: Default::default() };
    let uri = "http://keys.example:8080/jwks.json";
    // Header only: no path, no cookie.
    let cfg = parse(json!({"issuer": ISS, "jwksUri": uri, "jwksCluster": "k", "fromHeaders": [{"name": "x-jwt"}]}));
    let r = req(bearer("t"));
    assert!(extract(&cfg, &r).is_empty());
    assert_eq!(r.reads.take(), ["x-jwt"]);
    // Istio's defaults (Authorization bearer, then `access_token`): the path, once; no cookie.
    let cfg = parse(json!({"issuer": ISS, "jwksUri": uri, "jwksCluster": "k"}));
    let r = req(bearer("t"));
    assert_eq!(extract(&cfg, &r).len(), 1);
    assert_eq!(r.reads.take(), ["authorization", ":path"]);
    // A cookie location reads the cookie header.
    let cfg = parse(json!({"issuer": ISS, "jwksUri": uri, "jwksCluster": "k", "fromCookies": ["session"]}));
    let r = req(Req { headers: HashMap::from([("cookie".into(), "session=tok".into())]), path: "/".into() });
    assert_eq!(extract(&cfg, &r).len(), 1);
    assert_eq!(r.reads.take(), ["cookie"]);
}
