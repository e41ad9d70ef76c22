//! End-to-end tests: one binary, one file per behaviour.

mod authn;
mod authz;
mod balancing;
mod basics;
mod capture;
mod dashboards;
mod failures;
mod filters;
mod istio_fields;
mod limits;
mod reload;
mod router;
mod streaming;
mod telemetry;
mod tls;
mod traffic;
mod zero_trust;
