//! Metrics registry, host metrics and log setup.
