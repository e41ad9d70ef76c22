//! Pure retry decisions (no hostcalls): which failures a policy retries, idempotency,
//! attempt counting, jittered exponential backoff and the retry budget.

/// Retry conditions a policy accepts (Envoy `x-envoy-retry-on` / `x-envoy-retry-grpc-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Condition {
    /// Any 5xx, and every failure with no response (connect failure, reset, per-try timeout).
    FiveXx = 1 << 0,
    /// 502, 503, 504, and every failure with no response.
    GatewayError = 1 << 1,
    /// No response: reset, disconnect, per-try timeout (not connect failures).
    Reset = 1 << 2,
    /// The connection could not be established (`UF`).
    ConnectFailure = 1 << 3,
    /// HTTP/2 `REFUSED_STREAM` (the host reports it as a reset; see README).
    RefusedStream = 1 << 4,
    /// 409 Conflict.
    Retriable4xx = 1 << 5,
    /// Any status in the policy's retriable status codes.
    RetriableStatusCodes = 1 << 6,
    /// gRPC status 1.
    Cancelled = 1 << 7,
    /// gRPC status 4.
    DeadlineExceeded = 1 << 8,
    /// gRPC status 8.
    ResourceExhausted = 1 << 9,
    /// gRPC status 13.
    Internal = 1 << 10,
    /// gRPC status 14.
    Unavailable = 1 << 11,
}

/// Every accepted `retryOn` name, in the order the error message lists them.
pub const CONDITION_NAMES: &[(&str, Condition)] = &[
    ("5xx", Condition::FiveXx),
    ("gateway-error", Condition::GatewayError),
    ("reset", Condition::Reset),
    ("connect-failure", Condition::ConnectFailure),
    ("refused-stream", Condition::RefusedStream),
    ("retriable-4xx", Condition::Retriable4xx),
    ("retriable-status-codes", Condition::RetriableStatusCodes),
    ("cancelled", Condition::Cancelled),
    ("deadline-exceeded", Condition::DeadlineExceeded),
    ("resource-exhausted", Condition::ResourceExhausted),
    ("internal", Condition::Internal),
    ("unavailable", Condition::Unavailable),
];

/// Istio's default `retryOn` when a route sets no retry policy.
pub const ISTIO_DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// The parsed `retryOn` list plus the retriable status codes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryOn {
    bits: u16,
    /// Status codes retried under `retriable-status-codes` (bare codes in `retryOn` land here too).
    pub status_codes: Vec<u16>,
}

/// What one attempt produced, as seen in the response-headers phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (and maybe a `grpc-status` header).
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` response header (trailers-only gRPC responses).
        grpc_status: Option<u32>,
    },
    /// Connection could not be established (host: 503 + `UF`).
    ConnectFailure,
    /// Upstream reset/disconnect before a response (host: 502 + `UR`, or `UC`/`LR`).
    Reset,
    /// The per-try timeout fired (host: 504 + `UT`).
    PerTryTimeout,
    /// The cluster's circuit breaker overflowed (host: 503 + `UO`): never retried (Envoy too).
    Overflow,
    /// No healthy endpoint (host: 503 + `UH`): never retried, another pick cannot help.
    NoHealthyUpstream,
    /// The `fault` filter's abort (`FI`): never retried (Istio: faults skip retries).
    FaultInjected,
}

/// What the filter does with an attempt's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pass the response on: it is a success or a failure the policy does not retry.
    Pass,
    /// Retriable, but the method is not idempotent and the policy does not allow that.
    NonIdempotent,
    /// Retry; `retry_number` is 1 for the first retry.
    Retry {
        /// 1 for the first retry, 2 for the second…
        retry_number: u32,
    },
    /// Retriable, but every allowed attempt was used: pass it on with flag `URX`.
    Exhausted,
}

/// Exponential backoff with full jitter (Envoy: `[0, (2^N − 1)·base)`, capped at `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Base interval in ms (Envoy/Istio default 25).
    pub base_ms: u32,
    /// Upper bound in ms (Envoy default 10 × base).
    pub max_ms: u32,
}

/// One resolved retry policy (a route's, or the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries allowed after the first attempt (0 disables retries).
    pub attempts: u32,
    /// Timeout of each attempt, if set.
    pub per_try_timeout_ms: Option<u64>,
    /// When to retry.
    pub retry_on: RetryOn,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Retry POST/PATCH/… after they may have reached the upstream.
    pub retry_non_idempotent: bool,
    /// Request-body bytes the host keeps for replay.
    pub max_buffer_bytes: u32,
}

/// Envoy's retry budget: concurrent retries ≤ max(minRetryConcurrency, percent × active requests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Share of active requests that may be retries (0–100).
    pub percent: f64,
    /// Retries always allowed concurrently, whatever the load.
    pub min_retry_concurrency: u32,
}

/// A small, fast PRNG (SplitMix64) for jitter; not for anything secret.
pub use wasmesh_sdk::rng::SplitMix64 as Rng;

// === impl Condition ===

impl Condition {
    /// The condition named `name` in `retryOn`.
    pub fn from_name(name: &str) -> Option<Condition> {
        CONDITION_NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }
}

// === impl RetryOn ===

impl RetryOn {
    /// Parses a `retryOn` list (`"5xx,reset,503"`); bare codes are added to
    /// `extra_codes` and switch on `retriable-status-codes` (Istio semantics), and so does a
    /// non-empty `extra_codes` (`retriableStatusCodes`).
    pub fn parse(list: &str, extra_codes: &[u16]) -> Result<RetryOn, String> {
        let mut on = RetryOn { bits: 0, status_codes: extra_codes.to_vec() };
        if !extra_codes.is_empty() {
            on.bits |= Condition::RetriableStatusCodes as u16;
        }
        for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Some(c) = Condition::from_name(token) {
                on.bits |= c as u16;
            } else if token.bytes().all(|b| b.is_ascii_digit()) {
                let code: u16 = token.parse().map_err(|_| format!("status code {token:?} is not in 100..=599"))?;
                if !(100..=599).contains(&code) {
                    return Err(format!("status code {token:?} is not in 100..=599"));
                }
                on.status_codes.push(code);
                on.bits |= Condition::RetriableStatusCodes as u16;
            } else {
                let names: Vec<&str> = CONDITION_NAMES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown condition {token:?} (expected an HTTP status code or one of {})",
                    names.join(", ")
                ));
            }
        }
        on.status_codes.sort_unstable();
        on.status_codes.dedup();
        Ok(on)
    }

    /// Whether `c` is switched on.
    pub fn has(&self, c: Condition) -> bool {
        self.bits & c as u16 != 0
    }

    /// Whether the policy retries `outcome` (ignoring attempts and idempotency).
    pub fn matches(&self, outcome: Outcome) -> bool {
        use Condition::*;
        let any_no_response = self.has(FiveXx) || self.has(GatewayError);
        match outcome {
            Outcome::ConnectFailure => any_no_response || self.has(ConnectFailure),
            Outcome::Reset => any_no_response || self.has(Reset) || self.has(RefusedStream),
            Outcome::PerTryTimeout => any_no_response || self.has(Reset),
            Outcome::Overflow | Outcome::NoHealthyUpstream | Outcome::FaultInjected => false,
            Outcome::Response { status, grpc_status } => {
                (self.has(FiveXx) && (500..=599).contains(&status))
                    || (self.has(GatewayError) && matches!(status, 502..=504))
                    || (self.has(Retriable4xx) && status == 409)
                    || (self.has(RetriableStatusCodes) && self.status_codes.binary_search(&status).is_ok())
                    || grpc_status.is_some_and(|g| self.matches_grpc(g))
            }
        }
    }

    fn matches_grpc(&self, code: u32) -> bool {
        use Condition::*;
        match code {
            1 => self.has(Cancelled),
            4 => self.has(DeadlineExceeded),
            8 => self.has(ResourceExhausted),
            13 => self.has(Internal),
            14 => self.has(Unavailable),
            _ => false,
        }
    }
}

// === impl Outcome ===

impl Outcome {
    /// Classifies an attempt from its `:status`, the request's response flags so far and
    /// `grpc-status`. Flags accumulate over attempts, so a flag describes *this* attempt only
    /// when the status is the one the host synthesises with it (UF 503, UR/UC/LR 502,
    /// UT 504, UO 503, UH 503); otherwise it is a real upstream response.
    pub fn classify(status: u16, flags: &[&str], grpc_status: Option<u32>) -> Outcome {
        let has = |f: &str| flags.contains(&f);
        if has("FI") {
            // An injected abort never reached the upstream, whatever its status.
            return Outcome::FaultInjected;
        }
        match status {
            503 if has("UO") => Outcome::Overflow,
            503 if has("UH") => Outcome::NoHealthyUpstream,
            503 if has("UF") => Outcome::ConnectFailure,
            502 if has("UR") || has("UC") || has("LR") => Outcome::Reset,
            504 if has("UT") => Outcome::PerTryTimeout,
            _ => Outcome::Response { status, grpc_status },
        }
    }

    /// Whether the response flags can change what `classify` makes of `status` in a way a
    /// policy acts on: the statuses the host synthesises with a flag (502–504) do; for any
    /// other, a flag can only make it `FaultInjected`, which is never retried — so the
    /// flags need reading only when the plain response would be retried.
    pub fn flags_matter(status: u16) -> bool {
        matches!(status, 502..=504)
    }
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// Istio's default when a route sets no retry policy: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503.
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: RetryOn {
                bits: Condition::ConnectFailure as u16
                    | Condition::RefusedStream as u16
                    | Condition::Unavailable as u16
                    | Condition::Cancelled as u16
                    | Condition::RetriableStatusCodes as u16,
                status_codes: vec![503],
            },
            backoff: Backoff { base_ms: 25, max_ms: 250 },
            retry_non_idempotent: false,
            max_buffer_bytes: 64 * 1024,
        }
    }

    /// Whether `outcome` is one this policy retries (attempts left or not). `attempts: 0`
    /// switches retries off: nothing is then "exhausted" (no `URX`).
    pub fn retries(&self, outcome: Outcome) -> bool {
        self.attempts != 0 && self.retry_on.matches(outcome)
    }

    /// Decides what to do with an attempt. `attempt_count` is the host's
    /// `upstream.request_attempt_count` (1 for the first attempt).
    pub fn decide(&self, outcome: Outcome, idempotent: bool, attempt_count: u64) -> Decision {
        if !self.retries(outcome) {
            return Decision::Pass;
        }
        // A connect failure never reached the upstream: replaying it is safe for any method.
        if !idempotent && !self.retry_non_idempotent && outcome != Outcome::ConnectFailure {
            return Decision::NonIdempotent;
        }
        let retries_done = attempt_count.saturating_sub(1);
        if retries_done >= u64::from(self.attempts) {
            return Decision::Exhausted;
        }
        Decision::Retry { retry_number: u32::try_from(retries_done + 1).unwrap_or(u32::MAX) }
    }
}

// === impl Backoff ===

impl Backoff {
    /// The backoff before retry `retry_number` (1-based), fully jittered: uniform in
    /// `[0, min((2^N − 1)·base, max))` from the random `r`.
    pub fn delay_ms(&self, retry_number: u32, r: u64) -> u32 {
        let exp = retry_number.clamp(1, 32);
        let ceiling = ((1u64 << exp) - 1).saturating_mul(u64::from(self.base_ms)).min(u64::from(self.max_ms));
        if ceiling == 0 {
            return 0;
        }
        // ceiling ≤ max_ms: u32, so the remainder fits.
        u32::try_from(r % ceiling).unwrap_or(self.max_ms)
    }
}

// === impl Budget ===

impl Budget {
    /// Concurrent retries allowed with `active_requests` in flight to the cluster.
    pub fn limit(&self, active_requests: u64) -> u64 {
        // Float maths on request counts: exact far beyond any realistic load.
        let share = (active_requests as f64 * self.percent / 100.0).floor() as u64;
        share.max(u64::from(self.min_retry_concurrency))
    }

    /// Whether one more retry fits next to `active_retries` already in flight.
    pub fn allows(&self, active_requests: u64, active_retries: u64) -> bool {
        active_retries < self.limit(active_requests)
    }
}

/// Whether one more concurrent retry to a cluster is admitted: under the retry budget
/// (when set) and under the circuit breaker's `maxRetries` (when set). Neither set: yes.
pub fn retry_admitted(
    budget: Option<Budget>,
    max_retries: Option<u64>,
    active_requests: u64,
    active_retries: u64,
) -> bool {
    budget.is_none_or(|b| b.allows(active_requests, active_retries)) && max_retries.is_none_or(|m| active_retries < m)
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2). A request carrying an
/// `Idempotency-Key` header is treated as idempotent whatever its method.
pub fn is_idempotent(method: &str, has_idempotency_key: impl FnOnce() -> bool) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE") || has_idempotency_key()
}

#[cfg(test)]
mod tests;
