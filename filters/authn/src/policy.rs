//! The authn decision, with no host calls: finding tokens, decoding and checking JWTs
//! (Envoy `jwt_authn` semantics and messages), the remote-JWKS cache policy, and what a
//! verified token publishes, and the audit record of a rejection.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde_json::{Map, Value};
use wasmesh_sdk::audit::Record;

use crate::config::{Config, KeySource, Location, RemoteJwks, Rule};
use crate::jwk::{verify, Alg, Jwks};

/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// After a failed fetch with no keys cached, requests fail fast this long (Envoy
/// `failed_refetch_duration`, 1 s) instead of each waiting for another fetch.
pub const FAILED_FETCH_BACKOFF_MS: u64 = 1_000;

/// Why a token is refused. `Display` gives Envoy's `jwt_authn` messages (what Istio
/// users see in the 401 body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Over [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not three dot-separated parts.
    BadFormat,
    /// Header is not base64url.
    HeaderBadBase64,
    /// Header is not a JSON object.
    HeaderBadJson,
    /// No string `alg`.
    HeaderBadAlg,
    /// `alg` is `none` or unsupported.
    AlgNotImplemented,
    /// `kid` is not a string.
    HeaderBadKid,
    /// The header has a `crit` parameter (no extension is understood).
    HeaderCrit,
    /// Payload is not base64url.
    PayloadBadBase64,
    /// Payload is not a JSON object.
    PayloadBadJson,
    /// `iss` is not a string.
    IssNotString,
    /// `sub` is not a string.
    SubNotString,
    /// `aud` is not a string or a list of strings.
    AudNotString,
    /// `exp` is not a number.
    ExpNotInteger,
    /// `nbf` is not a number.
    NbfNotInteger,
    /// Signature is not base64url.
    SignatureBadBase64,
    /// No rule has this issuer.
    UnknownIssuer,
    /// No allowed audience.
    AudienceNotAllowed,
    /// `exp` passed (beyond the skew).
    Expired,
    /// `nbf` in the future (beyond the skew).
    NotYetValid,
    /// The signature does not verify.
    VerificationFail,
    /// No key with this `kid`/`alg`.
    KidAlgMismatch,
    /// The JWKS could not be fetched.
    JwksFetchFail,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtError::TooLarge => "Jwt is too large (more than 8192 bytes)",
            JwtError::BadFormat => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            JwtError::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            JwtError::HeaderBadJson => "Jwt header is an invalid JSON",
            JwtError::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            JwtError::AlgNotImplemented => "Jwt header [alg] is not supported",
            JwtError::HeaderBadKid => "Jwt header [kid] field is not a string",
            JwtError::HeaderCrit => "Jwt header [crit] extensions are not supported",
            JwtError::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            JwtError::PayloadBadJson => "Jwt payload is an invalid JSON",
            JwtError::IssNotString => "Jwt payload [iss] field is not a string",
            JwtError::SubNotString => "Jwt payload [sub] field is not a string",
            JwtError::AudNotString => "Jwt payload [aud] field is not a string or string list",
            JwtError::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            JwtError::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            JwtError::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            JwtError::UnknownIssuer => "Jwt issuer is not configured",
            JwtError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            JwtError::Expired => "Jwt is expired",
            JwtError::NotYetValid => "Jwt not yet valid",
            JwtError::VerificationFail => "Jwt verification fails",
            JwtError::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtError::JwksFetchFail => "Jwks remote fetch is failed",
        })
    }
}

impl JwtError {
    /// A short stable code (the `reason` label of `wasmesh_authn_denied_total`).
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::TooLarge => "too_large",
            JwtError::BadFormat
            | JwtError::HeaderBadBase64
            | JwtError::HeaderBadJson
            | JwtError::HeaderBadKid
            | JwtError::HeaderCrit
            | JwtError::PayloadBadBase64
            | JwtError::PayloadBadJson
            | JwtError::IssNotString
            | JwtError::SubNotString
            | JwtError::AudNotString
            | JwtError::ExpNotInteger
            | JwtError::NbfNotInteger
            | JwtError::SignatureBadBase64 => "malformed",
            JwtError::HeaderBadAlg | JwtError::AlgNotImplemented => "bad_alg",
            JwtError::UnknownIssuer => "unknown_issuer",
            JwtError::AudienceNotAllowed => "audience",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::VerificationFail => "signature",
            JwtError::KidAlgMismatch => "unknown_key",
            JwtError::JwksFetchFail => "jwks_fetch_failed",
        }
    }
}

/// A decoded (not yet verified) token.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// `alg`.
    pub alg: Alg,
    /// `kid`.
    pub kid: Option<String>,
    /// The payload object.
    pub claims: Map<String, Value>,
    /// The payload's base64url text as received (for `outputPayloadToHeader`).
    pub payload_b64: String,
    /// `header.payload`, the signed bytes.
    pub signing_input: String,
    /// The raw signature.
    pub signature: Vec<u8>,
    /// `iss` ("" when absent).
    pub iss: String,
    /// `sub` ("" when absent).
    pub sub: String,
    /// `aud` as a list.
    pub aud: Vec<String>,
    /// `exp`, seconds.
    pub exp: Option<u64>,
    /// `nbf`, seconds.
    pub nbf: Option<u64>,
}

fn b64d(s: &str) -> Option<Vec<u8>> {
    // Envoy tolerates padding; the alphabet is strict base64url.
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn numeric_date(v: Option<&Value>, err: JwtError) -> Result<Option<u64>, JwtError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f.floor().min(u64::MAX as f64) as u64)),
            _ => Err(err),
        },
        Some(_) => Err(err),
    }
}

/// Decodes a compact JWS. Checks format, header, payload types; not the signature.
pub fn decode(token: &str) -> Result<Jwt, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::BadFormat);
    };
    if h.is_empty() || p.is_empty() {
        return Err(JwtError::BadFormat);
    }
    let header: Map<String, Value> =
        serde_json::from_slice(&b64d(h).ok_or(JwtError::HeaderBadBase64)?).map_err(|_| JwtError::HeaderBadJson)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => Alg::parse(a).ok_or(JwtError::AlgNotImplemented)?,
        _ => return Err(JwtError::HeaderBadAlg),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::HeaderBadKid),
    };
    if header.contains_key("crit") {
        return Err(JwtError::HeaderCrit);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64d(p).ok_or(JwtError::PayloadBadBase64)?).map_err(|_| JwtError::PayloadBadJson)?;
    let signature = b64d(s).ok_or(JwtError::SignatureBadBase64)?;
    let text = |k: &str, e: JwtError| match claims.get(k) {
        None => Ok(String::new()),
        Some(Value::String(v)) => Ok(v.clone()),
        Some(_) => Err(e),
    };
    let iss = text("iss", JwtError::IssNotString)?;
    let sub = text("sub", JwtError::SubNotString)?;
    let aud = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(l)) => {
            l.iter().map(|v| v.as_str().map(str::to_string).ok_or(JwtError::AudNotString)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(JwtError::AudNotString),
    };
    let exp = numeric_date(claims.get("exp"), JwtError::ExpNotInteger)?;
    let nbf = numeric_date(claims.get("nbf"), JwtError::NbfNotInteger)?;
    Ok(Jwt {
        alg,
        kid,
        payload_b64: p.to_string(),
        signing_input: token[..h.len() + 1 + p.len()].to_string(),
        signature,
        claims,
        iss,
        sub,
        aud,
        exp,
        nbf,
    })
}

/// Envoy's audience normalisation: no `http(s)://`, no trailing `/`.
fn norm_aud(a: &str) -> &str {
    let a = a.strip_prefix("https://").or_else(|| a.strip_prefix("http://")).unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

/// Time and audience checks of a decoded token against its rule (done before the
/// signature, as Envoy does, so an expired token never causes a JWKS fetch).
pub fn check_claims(jwt: &Jwt, rule: &Rule, now_s: u64, skew_s: u64) -> Result<(), JwtError> {
    if let Some(exp) = jwt.exp {
        if now_s > exp.saturating_add(skew_s) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = jwt.nbf {
        if now_s.saturating_add(skew_s) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if !rule.audiences.is_empty() && !jwt.aud.iter().any(|a| rule.audiences.iter().any(|r| norm_aud(r) == norm_aud(a)))
    {
        return Err(JwtError::AudienceNotAllowed);
    }
    Ok(())
}

/// Verifies the signature with the keys that fit `kid`/`alg`.
pub fn check_signature(jwt: &Jwt, jwks: &Jwks) -> Result<(), JwtError> {
    let mut any = false;
    for k in jwks.candidates(jwt.alg, jwt.kid.as_deref()) {
        any = true;
        if verify(jwt.alg, &k.key, jwt.signing_input.as_bytes(), &jwt.signature) {
            return Ok(());
        }
    }
    Err(if any { JwtError::VerificationFail } else { JwtError::KidAlgMismatch })
}

/// True when some key of the set may verify this token (else an unknown `kid` refetch).
pub fn has_candidate(jwt: &Jwt, jwks: &Jwks) -> bool {
    jwks.candidates(jwt.alg, jwt.kid.as_deref()).next().is_some()
}

/// A token found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    /// Index of the rule whose location held it.
    pub rule: usize,
    /// Where (one of that rule's locations).
    pub location: &'a Location,
    /// The token text.
    pub token: String,
}

/// What the request offers for token extraction.
pub trait RequestView {
    /// First value of header `name` (lowercase).
    fn header(&self, name: &str) -> Option<String>;
    /// The `:path` (with query).
    fn path(&self) -> Option<String>;
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    let q = q.split('#').next().unwrap_or(q);
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (pct_decode(k) == name).then(|| pct_decode(v))
    })
}

fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Every token the rules' locations find, in rule then location order (duplicates of
/// the same token text are kept once).
pub fn extract<'a>(cfg: &'a Config, req: &dyn RequestView) -> Vec<Found<'a>> {
    let mut found: Vec<Found<'a>> = Vec::new();
    // Read only if a rule looks there (each is a hostcall).
    let path = std::cell::OnceCell::new();
    let cookies = std::cell::OnceCell::new();
    for (i, rule) in cfg.rules.iter().enumerate() {
        for loc in &rule.locations {
            let token = match loc {
                Location::Header { name, prefix } => req.header(name).and_then(|v| {
                    let v = v.trim();
                    let head = v.get(..prefix.len())?;
                    head.eq_ignore_ascii_case(prefix).then(|| v[prefix.len()..].trim().to_string())
                }),
                Location::Param(p) => path.get_or_init(|| req.path()).as_deref().and_then(|x| query_param(x, p)),
                Location::Cookie(c) => {
                    cookies.get_or_init(|| req.header("cookie")).as_deref().and_then(|x| cookie(x, c))
                }
            };
            if let Some(token) = token.filter(|t| !t.is_empty()) {
                if !found.iter().any(|f| f.token == token && f.rule == i) {
                    found.push(Found { rule: i, location: loc, token });
                }
            }
        }
    }
    found
}

/// The keys a rule has now, as told by the caller.
pub enum Keys {
    /// Usable keys.
    Ready(Rc<Jwks>),
    /// Fetch first (then decide again).
    Fetch,
    /// A fetch is under way: wait for it (then decide again).
    Wait,
    /// No keys and no fetch allowed now.
    Unavailable,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Outcome {
    /// No token: continue without identity (authz decides).
    NoToken,
    /// A verified token.
    Verified(Verified),
    /// Refuse with 401.
    Rejected(Rejection),
    /// Fetch the JWKS of this rule, then call [`decide`] again.
    FetchKeys(usize),
    /// Wait for the fetch under way for this rule, then call [`decide`] again.
    WaitKeys(usize),
}

/// Why a request is refused, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The failed check.
    pub error: JwtError,
    /// The rule (index in `jwtRules`) whose checks the token failed; `None` when no rule
    /// took it (malformed, unknown issuer).
    pub rule: Option<usize>,
}

/// The audit record's `policy` when no rule took the token.
pub const AUDIT_POLICY: &str = "request-authentication";

/// The request fields of an audit record.
#[derive(Debug, Clone, Default)]
pub struct AuditRequest {
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// Peer IP.
    pub source_ip: Option<String>,
    /// `:method`.
    pub method: String,
    /// `:authority`.
    pub host: String,
    /// `:path` (the query is left out of the record: it may hold the token).
    pub path: String,
}

impl Rejection {
    /// The `policy` of its audit record and metric: the deciding rule's issuer, or
    /// [`AUDIT_POLICY`].
    pub fn policy<'a>(&self, cfg: &'a Config) -> &'a str {
        self.rule.and_then(|i| cfg.rules.get(i)).map_or(AUDIT_POLICY, |r| r.issuer.as_str())
    }

    /// Its audit record (`decision: deny`, no principal; `now_ms` since the epoch).
    pub fn audit_record<'a>(&self, cfg: &'a Config, req: &'a AuditRequest, now_ms: u64) -> Record<'a> {
        Record {
            kind: "audit",
            time: wasmesh_sdk::rfc3339(now_ms),
            request_id: req.request_id.as_deref(),
            principal: None,
            request_principal: None,
            source_ip: req.source_ip.clone(),
            method: &req.method,
            host: &req.host,
            path: req.path.split('?').next().unwrap_or_default(),
            policy: Some(self.policy(cfg)),
            action: None,
            rule: self.rule,
            decision: "deny",
            dry_run: false,
            reason: Some(self.error.to_string()),
        }
    }
}

/// What a verified token publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The rule that verified it.
    pub rule: usize,
    /// `<iss>/<sub>` (`request.auth.principal`).
    pub principal: String,
    /// The payload JSON (`request.auth.claims`).
    pub claims_json: String,
    /// `aud` (`request.auth.audiences`).
    pub audiences: Vec<String>,
    /// `aud` joined with `,` (the published `request.auth.audiences` property).
    pub audiences_joined: String,
    /// `azp` (`request.auth.presenter`).
    pub presenter: Option<String>,
    /// Headers to add to the upstream request (claims and payload), already checked.
    pub headers: Vec<(String, String)>,
    /// Claim headers not forwarded because the value was unsafe or not a scalar (for the log).
    pub refused: Vec<String>,
}

/// A verified token's identity (shared with the token cache) and where this request
/// carried the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// What the token proves.
    pub identity: Rc<Identity>,
    /// Where the token came from (removed unless `forwardOriginalToken`).
    pub location: Location,
}

impl std::ops::Deref for Verified {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

/// Tokens already verified (Envoy `jwt_cache_config`): a repeated token skips decoding
/// and the signature check; its time and audience claims are still checked every time.
/// Bounded (oldest evicted first); tokens over [`TokenCache::MAX_CACHED_TOKEN`] bytes are
/// not kept.
///
/// Keyed by the token's hash; a hit is confirmed by comparing the whole token 8 bytes at
/// a time (Wasm's `memcmp` goes byte by byte: ~7k instructions for an ES256 token). Only
/// verified tokens get in, so a caller cannot fill it with colliding keys; two real
/// tokens that collide just take turns in one slot.
#[derive(Debug, Default)]
pub struct TokenCache {
    cap: usize,
    map: FxHashMap<u64, CachedToken>,
    order: VecDeque<u64>,
}

#[derive(Debug)]
struct CachedToken {
    token: Box<[u8]>,
    rule: usize,
    jwt: Jwt,
    identity: Rc<Identity>,
}

impl TokenCache {
    /// Longest token kept.
    pub const MAX_CACHED_TOKEN: usize = 4096;

    /// A cache of at most `cap` tokens (0: nothing is kept).
    pub fn new(cap: usize) -> TokenCache {
        TokenCache { cap, ..TokenCache::default() }
    }

    /// Tokens kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets every token (e.g. when a key set changed: a removed key revokes its tokens).
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    fn key(token: &str) -> u64 {
        FxBuildHasher.hash_one(token.as_bytes())
    }

    /// The entry of exactly this token.
    fn get(&self, token: &str) -> Option<&CachedToken> {
        self.map.get(&Self::key(token)).filter(|e| bytes_eq(&e.token, token.as_bytes()))
    }

    fn insert(&mut self, token: &str, rule: usize, jwt: Jwt, identity: Rc<Identity>) {
        if self.cap == 0 || token.len() > Self::MAX_CACHED_TOKEN {
            return;
        }
        let key = Self::key(token);
        let entry = CachedToken { token: token.as_bytes().into(), rule, jwt, identity };
        if let Some(slot) = self.map.get_mut(&key) {
            // The same token (or one colliding with it): keep its place in the order.
            *slot = entry;
            return;
        }
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => drop(self.map.remove(&old)),
                None => break,
            }
        }
        self.order.push_back(key);
        self.map.insert(key, entry);
    }
}

/// `a == b`, comparing 8 bytes per step.
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, ra) = a.as_chunks::<8>();
    let (wb, rb) = b.as_chunks::<8>();
    wa.iter().zip(wb).all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y)) && ra == rb
}

/// [`decide_cached`] without a token cache.
pub fn decide(cfg: &Config, found: &[Found<'_>], now_s: u64, keys: &mut dyn FnMut(usize, &Jwt) -> Keys) -> Outcome {
    decide_cached(cfg, found, now_s, keys, &mut TokenCache::new(0))
}

/// Decides on the found tokens. `keys(rule, jwt)` tells what keys rule `rule` has for
/// this token; `cache` remembers verified tokens. The first token that verifies wins;
/// otherwise the first failure is the reason (a token whose issuer no rule knows only
/// counts if nothing else was found).
pub fn decide_cached(
    cfg: &Config,
    found: &[Found<'_>],
    now_s: u64,
    keys: &mut dyn FnMut(usize, &Jwt) -> Keys,
    cache: &mut TokenCache,
) -> Outcome {
    if found.is_empty() {
        return Outcome::NoToken;
    }
    let mut first_err: Option<Rejection> = None;
    let note = |error: JwtError, rule: Option<usize>, first: &mut Option<Rejection>| {
        if first.as_ref().is_none_or(|r| r.error == JwtError::UnknownIssuer) {
            *first = Some(Rejection { error, rule });
        }
    };
    for f in found {
        if let Some(hit) = cache.get(&f.token) {
            let rule = &cfg.rules[hit.rule];
            if hit.rule == f.rule || rule.locations.contains(f.location) {
                match check_claims(&hit.jwt, rule, now_s, cfg.clock_skew_s) {
                    Ok(()) => {
                        return Outcome::Verified(Verified {
                            identity: hit.identity.clone(),
                            location: f.location.clone(),
                        });
                    }
                    Err(e) => {
                        note(e, Some(hit.rule), &mut first_err);
                        continue;
                    }
                }
            }
        }
        let jwt = match decode(&f.token) {
            Ok(j) => j,
            Err(e) => {
                note(e, None, &mut first_err);
                continue;
            }
        };
        // The token's issuer picks the rule (Envoy: provider by issuer); the rule whose
        // location held it is preferred.
        let rule_idx = if cfg.rules[f.rule].issuer == jwt.iss {
            Some(f.rule)
        } else {
            cfg.rules.iter().position(|r| r.issuer == jwt.iss && r.locations.contains(f.location))
        };
        let Some(ri) = rule_idx else {
            note(JwtError::UnknownIssuer, None, &mut first_err);
            continue;
        };
        let rule = &cfg.rules[ri];
        if let Err(e) = check_claims(&jwt, rule, now_s, cfg.clock_skew_s) {
            note(e, Some(ri), &mut first_err);
            continue;
        }
        let jwks = match keys(ri, &jwt) {
            Keys::Ready(k) => k,
            Keys::Fetch => return Outcome::FetchKeys(ri),
            Keys::Wait => return Outcome::WaitKeys(ri),
            Keys::Unavailable => {
                note(JwtError::JwksFetchFail, Some(ri), &mut first_err);
                continue;
            }
        };
        match check_signature(&jwt, &jwks) {
            Ok(()) => {
                let id = Rc::new(identity(ri, rule, &jwt));
                cache.insert(&f.token, ri, jwt, id.clone());
                return Outcome::Verified(Verified { identity: id, location: f.location.clone() });
            }
            Err(e) => note(e, Some(ri), &mut first_err),
        }
    }
    Outcome::Rejected(first_err.unwrap_or(Rejection { error: JwtError::VerificationFail, rule: None }))
}

/// A claim as a header value: strings as they are, numbers and booleans as text, lists
/// of those joined by `,`; `None` for objects, null, and anything with a character
/// outside visible ASCII and space (CR/LF injection, control characters, non-ASCII).
pub fn claim_header_value(v: &Value) -> Option<String> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let s = match v {
        Value::Array(l) => l.iter().map(scalar).collect::<Option<Vec<_>>>()?.join(","),
        v => scalar(v)?,
    };
    s.bytes().all(|b| (0x20..0x7f).contains(&b)).then_some(s)
}

/// Looks up a nested claim (`["a", "b"]` → `claims.a.b`).
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for k in rest {
        v = v.as_object()?.get(k)?;
    }
    Some(v)
}

fn identity(ri: usize, rule: &Rule, jwt: &Jwt) -> Identity {
    let mut headers = Vec::new();
    let mut refused = Vec::new();
    for ch in &rule.output_claim_to_headers {
        match claim(&jwt.claims, &ch.claim).map(claim_header_value) {
            Some(Some(v)) => headers.push((ch.header.clone(), v)),
            Some(None) => refused.push(ch.header.clone()),
            None => {}
        }
    }
    if let Some(h) = &rule.output_payload_to_header {
        headers.push((h.clone(), jwt.payload_b64.clone()));
    }
    Identity {
        rule: ri,
        principal: format!("{}/{}", jwt.iss, jwt.sub),
        claims_json: Value::Object(jwt.claims.clone()).to_string(),
        audiences: jwt.aud.clone(),
        audiences_joined: jwt.aud.join(","),
        presenter: jwt.claims.get("azp").and_then(Value::as_str).map(str::to_string),
        headers,
        refused,
    }
}

/// The `www-authenticate` value of a 401 (Envoy: the realm is the request URL without
/// its query). Characters that could break the quoted string are dropped.
pub fn www_authenticate(scheme: &str, authority: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let realm: String = format!("{scheme}://{authority}{path}")
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
}

/// A JWKS fetch under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// The call token.
    pub token: u32,
    /// The context that sent it (its answer arrives there).
    pub owner: u32,
    /// When it was sent (ms).
    pub since: u64,
}

/// The remote-JWKS cache of one rule (per worker VM). One fetch at a time: requests that
/// need keys while one is under way wait for it (Envoy does the same per worker).
#[derive(Debug, Default)]
pub struct JwksCache {
    /// The last good key set and when it was fetched (ms).
    pub keys: Option<(Rc<Jwks>, u64)>,
    /// When the last fetch was started (ms).
    pub last_dispatch: Option<u64>,
    /// When the last fetch failed (ms), cleared on success.
    pub last_failure: Option<u64>,
    /// The fetch under way, cleared by its answer.
    pub in_flight: Option<InFlight>,
    /// HTTP contexts waiting for the fetch under way.
    pub waiters: Vec<u32>,
}

impl JwksCache {
    /// True while a fetch is under way and not overdue (its timeout + 1 s: an answer
    /// that never comes, e.g. its request was cancelled, does not block later fetches).
    pub fn fetching(&self, remote: &RemoteJwks, now_ms: u64) -> bool {
        self.in_flight.is_some_and(|f| now_ms.saturating_sub(f.since) < remote.timeout_ms.saturating_add(1_000))
    }

    /// What the rule has for `jwt` at `now_ms`:
    /// - no keys: fetch (or wait for the fetch under way), unless a fetch failed less than
    ///   [`FAILED_FETCH_BACKOFF_MS`] ago;
    /// - keys older than `cache_ms`: fetch, but while a fetch is under way (or failed just
    ///   now) the stale keys are used;
    /// - fresh keys without a key for this `kid`/`alg`: refetch (or wait for the fetch under
    ///   way) at most once per `refetch_ms` (key rotation), else use the keys (the token
    ///   then fails: unknown kid).
    pub fn keys_for(&self, remote: &RemoteJwks, jwt: &Jwt, now_ms: u64) -> Keys {
        let since = |t: Option<u64>| t.map(|t| now_ms.saturating_sub(t));
        let fetching = self.fetching(remote, now_ms);
        let recently_failed = since(self.last_failure).is_some_and(|d| d < FAILED_FETCH_BACKOFF_MS);
        match &self.keys {
            None if fetching => Keys::Wait,
            None if recently_failed => Keys::Unavailable,
            None => Keys::Fetch,
            Some((k, at)) => {
                if !has_candidate(jwt, k) {
                    if fetching {
                        return Keys::Wait;
                    }
                    if since(self.last_dispatch).is_none_or(|d| d >= remote.refetch_ms) && !recently_failed {
                        return Keys::Fetch;
                    }
                } else if now_ms.saturating_sub(*at) >= remote.cache_ms && !fetching && !recently_failed {
                    return Keys::Fetch;
                }
                Keys::Ready(k.clone())
            }
        }
    }

    /// The root's background refresh: wanted when requests wait with no fetch under way
    /// (its request went away, or it is overdue), or when there are no keys or they are
    /// past 90% of `cache_ms` — unless a fetch is under way or one failed less than
    /// [`FAILED_FETCH_BACKOFF_MS`] ago.
    pub fn wants_refresh(&self, remote: &RemoteJwks, now_ms: u64) -> bool {
        if self.fetching(remote, now_ms) {
            return false;
        }
        if !self.waiters.is_empty() {
            return true;
        }
        if self.last_failure.is_some_and(|t| now_ms.saturating_sub(t) < FAILED_FETCH_BACKOFF_MS) {
            return false;
        }
        match &self.keys {
            None => true,
            Some((_, at)) => now_ms.saturating_sub(*at) >= remote.cache_ms / 10 * 9,
        }
    }

    /// The cached keys, fresh or not, without fetching (`Unavailable` when none).
    pub fn cached(&self) -> Keys {
        match &self.keys {
            Some((k, _)) => Keys::Ready(k.clone()),
            None => Keys::Unavailable,
        }
    }

    /// Records that context `owner` sent fetch `token` now.
    pub fn started(&mut self, token: u32, owner: u32, now_ms: u64) {
        self.in_flight = Some(InFlight { token, owner, since: now_ms });
        self.last_dispatch = Some(now_ms);
    }

    /// Records a fetch's answer (or failure to send): a parsed set replaces the cache; a
    /// failure keeps old keys. Returns the waiters to wake.
    pub fn fetched(&mut self, result: Result<Jwks, String>, now_ms: u64) -> (Result<(), String>, Vec<u32>) {
        self.in_flight = None;
        let waiters = std::mem::take(&mut self.waiters);
        let r = match result {
            Ok(k) => {
                self.keys = Some((Rc::new(k), now_ms));
                self.last_failure = None;
                Ok(())
            }
            Err(e) => {
                self.last_failure = Some(now_ms);
                Err(e)
            }
        };
        (r, waiters)
    }
}

/// Keys of a rule with an inline JWKS (`Some`), or `None` for a remote one.
pub fn inline_keys(rule: &Rule) -> Option<Rc<Jwks>> {
    match &rule.keys {
        KeySource::Inline(k) => Some(k.clone()),
        KeySource::Remote(_) => None,
    }
}

#[cfg(test)]
mod bytes_eq_tests {
    use super::bytes_eq;

    #[test]
    fn compares_every_byte_of_the_words_and_the_tail() {
        let a: Vec<u8> = (0..29u8).collect();
        assert!(bytes_eq(&a, &a.clone()));
        for at in 0..a.len() {
            let mut b = a.clone();
            b[at] ^= 0x20;
            assert!(!bytes_eq(&a, &b), "differs at {at}");
        }
        assert!(!bytes_eq(&a, &a[..28]));
        assert!(bytes_eq(b"", b""));
    }
}
