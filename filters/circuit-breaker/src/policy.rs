//! Pure circuit-breaker decisions (no hostcalls): connection-pool limits and outlier
//! detection (consecutive errors, ejection time growth, max ejection / min health percent).

/// Istio `connectionPool` limits (`None` = unlimited): the host applies the first three
/// (`wasmesh.pool_limits`, serialized as it reads them), the retry filter the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PoolLimits {
    /// `tcp.maxConnections` (Envoy `max_connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// `http.http1MaxPendingRequests` (Envoy `max_pending_requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u64>,
    /// `http.http2MaxRequests` (Envoy `max_requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u64>,
    /// `http.maxRetries` (Envoy `max_retries`): handed to the retry filter.
    #[serde(skip)]
    pub max_retries: Option<u64>,
}

/// Outlier detection settings (Istio `outlierDetection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// `consecutive5xxErrors` (0 = off).
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors` (0 = off).
    pub consecutive_gateway: u32,
    /// `splitExternalLocalOriginErrors`.
    pub split_local_origin: bool,
    /// `consecutiveLocalOriginFailures` (used when split; 0 = off).
    pub consecutive_local_origin: u32,
    /// `interval`: an endpoint healthy for this long sheds one ejection from its multiplier.
    pub interval_ms: u64,
    /// `baseEjectionTime`.
    pub base_ejection_ms: u64,
    /// Envoy `max_ejection_time` (cap of the grown ejection time).
    pub max_ejection_ms: u64,
    /// `maxEjectionPercent`.
    pub max_ejection_percent: u32,
    /// `minHealthPercent`.
    pub min_health_percent: u32,
    /// Envoy `always_eject_one_host`: eject one endpoint even over `maxEjectionPercent`.
    pub always_eject_one: bool,
}

/// What one attempt's response says about the endpoint that served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A non-5xx response.
    Success,
    /// A 5xx from the upstream itself.
    Upstream5xx {
        /// 500–599.
        status: u16,
    },
    /// Locally detected: connect failure (`UF`), reset (`UR`/`UC`), per-try timeout (`UT`).
    LocalOrigin,
    /// Says nothing about the endpoint (overflow `UO`, no healthy upstream `UH`, no address).
    Ignore,
}

/// The per-endpoint record kept in shared data (all workers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointState {
    /// Consecutive 5xx (including local-origin failures unless split).
    pub consecutive_5xx: u32,
    /// Consecutive gateway errors (502/503/504, local-origin unless split).
    pub consecutive_gateway: u32,
    /// Consecutive local-origin failures (split mode).
    pub consecutive_local: u32,
    /// Ejections in a row (the ejection-time multiplier).
    pub ejections: u32,
    /// Ejected until this time (ms since the epoch); 0 = never ejected.
    pub ejected_until_ms: u64,
}

/// The cluster's endpoint counts, from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// `wasmesh.cluster.<c>.endpoints`.
    pub endpoints: u64,
    /// `wasmesh.cluster.<c>.healthy_endpoints`.
    pub healthy: u64,
}

/// The result of recording one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    None,
    /// Eject the endpoint for this long.
    Eject {
        /// Ejection duration in ms.
        duration_ms: u64,
    },
    /// A threshold was reached but `maxEjectionPercent` / `minHealthPercent` forbid it.
    Suppressed,
}

/// Encoded size of an [`EndpointState`].
pub const STATE_LEN: usize = 24;

// === impl PoolLimits ===

impl PoolLimits {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        *self == PoolLimits::default()
    }

    /// Whether a limit the host applies is set (`maxRetries` is the retry filter's).
    pub fn has_pool_limits(&self) -> bool {
        PoolLimits { max_retries: None, ..*self } != PoolLimits::default()
    }
}

// === impl Observation ===

impl Observation {
    /// Classifies an attempt from `:status` and its response flags. Flags accumulate over
    /// attempts, so a flag counts only with the status the host synthesises for it.
    pub fn classify(status: u16, flags: &[&str]) -> Observation {
        let has = |f: &str| flags.contains(&f);
        if has("FI") {
            // An injected abort never reached an endpoint.
            return Observation::Ignore;
        }
        match status {
            503 if has("UO") || has("UH") => Observation::Ignore,
            503 if has("UF") => Observation::LocalOrigin,
            502 if has("UR") || has("UC") => Observation::LocalOrigin,
            504 if has("UT") => Observation::LocalOrigin,
            500..=599 => Observation::Upstream5xx { status },
            0 => Observation::Ignore,
            _ => Observation::Success,
        }
    }
}

// === impl EndpointState ===

impl EndpointState {
    /// Decodes the shared-data record (a malformed record reads as fresh).
    pub fn decode(b: &[u8]) -> EndpointState {
        if b.len() != STATE_LEN {
            return EndpointState::default();
        }
        let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| <[u8; 4]>::try_from(s).ok()).map_or(0, u32::from_le_bytes);
        let until = b.get(16..24).and_then(|s| <[u8; 8]>::try_from(s).ok()).map_or(0, u64::from_le_bytes);
        EndpointState {
            consecutive_5xx: u32_at(0),
            consecutive_gateway: u32_at(4),
            consecutive_local: u32_at(8),
            ejections: u32_at(12),
            ejected_until_ms: until,
        }
    }

    /// Encodes the record (four LE u32 counters, then the LE u64 deadline).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(STATE_LEN);
        for n in [self.consecutive_5xx, self.consecutive_gateway, self.consecutive_local, self.ejections] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.extend_from_slice(&self.ejected_until_ms.to_le_bytes());
        v
    }

    /// Records `obs` at `now_ms`; returns the new state and what to do. `health` is read
    /// only when a threshold is reached.
    pub fn record(
        mut self,
        cfg: &Outlier,
        obs: Observation,
        now_ms: u64,
        health: impl FnOnce() -> Health,
    ) -> (EndpointState, Verdict) {
        if obs == Observation::Ignore {
            return (self, Verdict::None);
        }
        // Responses from an ejected endpoint (requests already in flight) change nothing.
        if now_ms < self.ejected_until_ms {
            return (self, Verdict::None);
        }
        self.decay(cfg, now_ms);
        match obs {
            Observation::Success | Observation::Ignore => {
                self.consecutive_5xx = 0;
                self.consecutive_gateway = 0;
                self.consecutive_local = 0;
                return (self, Verdict::None);
            }
            Observation::LocalOrigin if cfg.split_local_origin => {
                self.consecutive_local = self.consecutive_local.saturating_add(1);
            }
            Observation::LocalOrigin => {
                self.consecutive_5xx = self.consecutive_5xx.saturating_add(1);
                self.consecutive_gateway = self.consecutive_gateway.saturating_add(1);
            }
            Observation::Upstream5xx { status } => {
                if cfg.split_local_origin {
                    // An answer from the upstream proves it is reachable.
                    self.consecutive_local = 0;
                }
                self.consecutive_5xx = self.consecutive_5xx.saturating_add(1);
                if matches!(status, 502..=504) {
                    self.consecutive_gateway = self.consecutive_gateway.saturating_add(1);
                } else {
                    self.consecutive_gateway = 0;
                }
            }
        }
        let tripped = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        if !(tripped(self.consecutive_5xx, cfg.consecutive_5xx)
            || tripped(self.consecutive_gateway, cfg.consecutive_gateway)
            || (cfg.split_local_origin && tripped(self.consecutive_local, cfg.consecutive_local_origin)))
        {
            return (self, Verdict::None);
        }
        // A threshold is reached: the counts start over whether or not we may eject.
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        self.consecutive_local = 0;
        if !cfg.may_eject(health()) {
            return (self, Verdict::Suppressed);
        }
        self.ejections = self.ejections.saturating_add(1);
        let duration_ms = cfg.ejection_ms(self.ejections);
        self.ejected_until_ms = now_ms.saturating_add(duration_ms);
        (self, Verdict::Eject { duration_ms })
    }

    /// Envoy: each `interval` an endpoint stays un-ejected sheds one ejection from the
    /// multiplier, so a host that recovered starts again from `baseEjectionTime`.
    fn decay(&mut self, cfg: &Outlier, now_ms: u64) {
        if self.ejections == 0 || self.ejected_until_ms == 0 || cfg.interval_ms == 0 {
            return;
        }
        let healthy_for = now_ms.saturating_sub(self.ejected_until_ms);
        let shed = u32::try_from(healthy_for / cfg.interval_ms).unwrap_or(u32::MAX);
        if shed > 0 {
            self.ejections = self.ejections.saturating_sub(shed);
            // Shed intervals are spent: move the reference point forward.
            self.ejected_until_ms = self.ejected_until_ms.saturating_add(u64::from(shed) * cfg.interval_ms);
        }
    }
}

// === impl Outlier ===

impl Outlier {
    /// Istio's defaults: 5 consecutive 5xx, gateway errors off, 10s interval, 30s base
    /// ejection, 10 % max ejection, 0 % min health; Envoy's 300s max ejection time.
    pub fn istio_default() -> Outlier {
        Outlier {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            split_local_origin: false,
            consecutive_local_origin: 5,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 10,
            min_health_percent: 0,
            always_eject_one: false,
        }
    }

    /// The ejection time for the `n`-th ejection in a row: `base × n`, capped at
    /// `max(base, maxEjectionTime)` (Envoy).
    pub fn ejection_ms(&self, n: u32) -> u64 {
        self.base_ejection_ms.saturating_mul(u64::from(n.max(1))).min(self.max_ejection_ms.max(self.base_ejection_ms))
    }

    /// Whether one more ejection is allowed: `(ejected + 1) / endpoints ≤ maxEjectionPercent`
    /// (or the first one with `alwaysEjectOneHost`), and the healthy share is at least
    /// `minHealthPercent` (below it Istio stops ejecting).
    pub fn may_eject(&self, h: Health) -> bool {
        if h.endpoints == 0 {
            return false;
        }
        let healthy = h.healthy.min(h.endpoints);
        let ejected = h.endpoints - healthy;
        if healthy.saturating_mul(100) < u64::from(self.min_health_percent).saturating_mul(h.endpoints) {
            return false;
        }
        let within =
            (ejected + 1).saturating_mul(100) <= u64::from(self.max_ejection_percent).saturating_mul(h.endpoints);
        within || (self.always_eject_one && ejected == 0)
    }
}

#[cfg(test)]
mod tests;
