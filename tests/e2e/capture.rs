//! Collects the lines the proxy writes to its access-log sink (`wasmesh::access`):
//! one process-wide subscriber, installed once for this test binary (the audit records
//! of authz and authn).

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

struct Capture(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        if let Ok(mut lines) = self.0.lock() {
            lines.push(m.0);
        }
    }
}

/// The access-log lines so far (all tests of this binary).
pub fn lines() -> Vec<String> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    let lines = LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let only_access = tracing_subscriber::filter::filter_fn(|m| m.target() == "wasmesh::access");
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()).with_filter(only_access));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global tracing subscriber in the e2e binary");
        lines
    });
    lines.lock().map(|l| l.clone()).unwrap_or_default()
}

/// The audit records so far whose `request_id` starts with `prefix`.
pub fn audit_records(prefix: &str) -> Vec<serde_json::Value> {
    lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "audit" && v["request_id"].as_str().is_some_and(|id| id.starts_with(prefix)))
        .collect()
}
