//! The authn filter's configuration (Istio `RequestAuthentication` field names): JSON →
//! validated [`Config`]. Every error names its field path
//! (`jwtRules[0].jwks: JWKS has no usable signing key (…)`).

use std::rc::Rc;

use serde::Deserialize;
use wasmesh_sdk::config::parse_duration_ms;

use crate::jwk::Jwks;

/// Istio's default when the rule says nothing (`Authorization: Bearer <token>`).
pub const DEFAULT_HEADER: &str = "authorization";
/// Istio's default prefix of [`DEFAULT_HEADER`].
pub const DEFAULT_PREFIX: &str = "Bearer ";
/// Istio's default query parameter.
pub const DEFAULT_PARAM: &str = "access_token";

/// The validated configuration, shared (via `Rc`) by every stream of a VM.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Allowed clock skew for `exp`/`nbf`, seconds (Envoy `clock_skew_seconds`, 60).
    pub clock_skew_s: u64,
    /// Every header named by an `outputClaimToHeaders`/`outputPayloadToHeader` of any
    /// rule, lowercased: removed from every inbound request before anything is decided.
    pub output_headers: Vec<String>,
}

/// One `jwtRules[]` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `issuer`: must equal the token's `iss`.
    pub issuer: String,
    /// `audiences`: any may match the token's `aud`; empty = any audience.
    pub audiences: Vec<String>,
    /// Where the keys come from.
    pub keys: KeySource,
    /// Where tokens are looked for, in order.
    pub locations: Vec<Location>,
    /// `forwardOriginalToken`: keep the token header (default: removed).
    pub forward_original_token: bool,
    /// `outputPayloadToHeader` (lowercased).
    pub output_payload_to_header: Option<String>,
    /// `outputClaimToHeaders`.
    pub output_claim_to_headers: Vec<ClaimHeader>,
}

/// The rule's JWKS.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `jwks`: parsed once at configuration.
    Inline(Rc<Jwks>),
    /// `jwksUri` fetched through cluster `jwksCluster`.
    Remote(RemoteJwks),
}

/// A remote JWKS and how it is fetched and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// `jwksUri` as given.
    pub uri: String,
    /// `jwksCluster`: the configured cluster the fetch goes to.
    pub cluster: String,
    /// `:scheme` of the fetch.
    pub scheme: String,
    /// `:authority` of the fetch.
    pub authority: String,
    /// `:path` of the fetch.
    pub path: String,
    /// `timeout` (Istio, default 5s), ms.
    pub timeout_ms: u64,
    /// `jwksCacheDuration` (Envoy `remote_jwks.cache_duration`, default 10m), ms.
    pub cache_ms: u64,
    /// `jwksRefetchInterval`: least time between two fetches caused by an unknown `kid`
    /// (default 10s), ms.
    pub refetch_ms: u64,
}

/// A place a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `fromHeaders[]{name, prefix}` (name lowercased).
    Header {
        /// Header name.
        name: String,
        /// Value prefix (compared ASCII case-insensitively), e.g. `Bearer `.
        prefix: String,
    },
    /// `fromParams[]`: a query parameter.
    Param(String),
    /// `fromCookies[]`: a cookie.
    Cookie(String),
}

/// One `outputClaimToHeaders[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// `header` (lowercased).
    pub header: String,
    /// `claim` split on `.` (nested claims).
    pub claim: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    jwt_rules: Vec<RawRule>,
    clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    jwks: Option<String>,
    jwks_uri: Option<String>,
    jwks_cluster: Option<String>,
    timeout: Option<String>,
    jwks_cache_duration: Option<String>,
    jwks_refetch_interval: Option<String>,
    #[serde(default)]
    from_headers: Vec<RawHeader>,
    #[serde(default)]
    from_params: Vec<String>,
    #[serde(default)]
    from_cookies: Vec<String>,
    #[serde(default)]
    forward_original_token: bool,
    output_payload_to_header: Option<String>,
    #[serde(default)]
    output_claim_to_headers: Vec<RawClaimHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default)]
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimHeader {
    header: String,
    claim: String,
}

/// True for an HTTP field name a filter may set (RFC 9110 token, no pseudo-header).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn duration(path: &str, v: &Option<String>, default_ms: u64) -> Result<u64, String> {
    match v {
        None => Ok(default_ms),
        Some(s) => parse_duration_ms(s).map_err(|e| format!("{path}: {e}")),
    }
}

/// Splits `scheme://authority/path?query` into (scheme, authority, path+query).
fn split_uri(uri: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = uri.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return None;
    }
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    Some((scheme.to_string(), authority.to_string(), path))
}

impl Config {
    /// Parses and validates the plugin configuration JSON.
    pub fn parse(json: &[u8]) -> Result<Config, String> {
        let raw: RawConfig = if json.iter().all(u8::is_ascii_whitespace) {
            RawConfig::default()
        } else {
            serde_json::from_slice(json).map_err(|e| format!("invalid authn configuration: {e}"))?
        };
        let clock_skew_s = duration("clockSkew", &raw.clock_skew, 60_000)?.div_ceil(1000);
        let mut rules = Vec::with_capacity(raw.jwt_rules.len());
        for (i, r) in raw.jwt_rules.into_iter().enumerate() {
            rules.push(Self::rule(&format!("jwtRules[{i}]"), r)?);
        }
        let mut output_headers: Vec<String> = Vec::new();
        for r in &rules {
            for h in r.output_claim_to_headers.iter().map(|c| &c.header).chain(&r.output_payload_to_header) {
                if !output_headers.contains(h) {
                    output_headers.push(h.clone());
                }
            }
        }
        // An output header that is also a token source would strip the token itself.
        for (i, r) in rules.iter().enumerate() {
            for l in &r.locations {
                if let Location::Header { name, .. } = l {
                    if output_headers.contains(name) {
                        return Err(format!(
                            "jwtRules[{i}].fromHeaders: header {name:?} is also an output header (outputClaimToHeaders/outputPayloadToHeader)"
                        ));
                    }
                }
            }
        }
        Ok(Config { rules, clock_skew_s, output_headers })
    }

    fn rule(p: &str, r: RawRule) -> Result<Rule, String> {
        if r.issuer.trim().is_empty() {
            return Err(format!("{p}.issuer: required"));
        }
        for (j, a) in r.audiences.iter().enumerate() {
            if a.is_empty() {
                return Err(format!("{p}.audiences[{j}]: empty audience"));
            }
        }
        let keys = match (&r.jwks, &r.jwks_uri) {
            (Some(_), Some(_)) => return Err(format!("{p}: set only one of jwks and jwksUri")),
            (None, None) => {
                return Err(format!("{p}: one of jwks (inline JSON) or jwksUri (+ jwksCluster) is required"))
            }
            (Some(j), None) => {
                if r.jwks_cluster.is_some() {
                    return Err(format!("{p}.jwksCluster: only used with jwksUri"));
                }
                KeySource::Inline(Rc::new(Jwks::parse(j).map_err(|e| format!("{p}.jwks: {e}"))?))
            }
            (None, Some(uri)) => {
                let (scheme, authority, path) = split_uri(uri)
                    .ok_or_else(|| format!("{p}.jwksUri: {uri:?} is not an http(s)://host[:port]/path URI"))?;
                let cluster = match r.jwks_cluster.as_deref() {
                    Some(c) if !c.trim().is_empty() => c.to_string(),
                    _ => {
                        return Err(format!(
                            "{p}.jwksCluster: required with jwksUri (the cluster the JWKS is fetched through)"
                        ))
                    }
                };
                let timeout_ms = duration(&format!("{p}.timeout"), &r.timeout, 5_000)?;
                if timeout_ms == 0 {
                    return Err(format!("{p}.timeout: must be more than 0"));
                }
                KeySource::Remote(RemoteJwks {
                    uri: uri.clone(),
                    cluster,
                    scheme,
                    authority,
                    path,
                    timeout_ms,
                    cache_ms: duration(&format!("{p}.jwksCacheDuration"), &r.jwks_cache_duration, 600_000)?.max(1),
                    refetch_ms: duration(&format!("{p}.jwksRefetchInterval"), &r.jwks_refetch_interval, 10_000)?,
                })
            }
        };
        if r.timeout.is_some() && matches!(keys, KeySource::Inline(_)) {
            return Err(format!("{p}.timeout: only used with jwksUri"));
        }
        let mut locations = Vec::new();
        for (j, h) in r.from_headers.iter().enumerate() {
            let name = h.name.to_ascii_lowercase();
            if !valid_header_name(&name) {
                return Err(format!("{p}.fromHeaders[{j}].name: {:?} is not a valid header name", h.name));
            }
            locations.push(Location::Header { name, prefix: h.prefix.clone() });
        }
        for (j, q) in r.from_params.iter().enumerate() {
            if q.is_empty() {
                return Err(format!("{p}.fromParams[{j}]: empty parameter name"));
            }
            locations.push(Location::Param(q.clone()));
        }
        for (j, c) in r.from_cookies.iter().enumerate() {
            if c.is_empty() || c.contains([';', '=', ' ']) {
                return Err(format!("{p}.fromCookies[{j}]: {c:?} is not a cookie name"));
            }
            locations.push(Location::Cookie(c.clone()));
        }
        if locations.is_empty() {
            locations.push(Location::Header { name: DEFAULT_HEADER.into(), prefix: DEFAULT_PREFIX.into() });
            locations.push(Location::Param(DEFAULT_PARAM.into()));
        }
        let output_payload_to_header = match &r.output_payload_to_header {
            None => None,
            Some(h) => {
                let h = h.to_ascii_lowercase();
                if !valid_header_name(&h) {
                    return Err(format!("{p}.outputPayloadToHeader: {h:?} is not a valid header name"));
                }
                Some(h)
            }
        };
        let mut output_claim_to_headers = Vec::new();
        for (j, c) in r.output_claim_to_headers.iter().enumerate() {
            let header = c.header.to_ascii_lowercase();
            if !valid_header_name(&header) {
                return Err(format!("{p}.outputClaimToHeaders[{j}].header: {:?} is not a valid header name", c.header));
            }
            let claim: Vec<String> = c.claim.split('.').map(str::to_string).collect();
            if claim.iter().any(String::is_empty) {
                return Err(format!(
                    "{p}.outputClaimToHeaders[{j}].claim: {:?} is not a claim name (nested: a.b.c)",
                    c.claim
                ));
            }
            output_claim_to_headers.push(ClaimHeader { header, claim });
        }
        Ok(Rule {
            issuer: r.issuer,
            audiences: r.audiences,
            keys,
            locations,
            forward_original_token: r.forward_original_token,
            output_payload_to_header,
            output_claim_to_headers,
        })
    }
}
