//! The admin HTTP endpoint: health, readiness, metrics, config and cluster dumps.
