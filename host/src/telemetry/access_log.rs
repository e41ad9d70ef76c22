//! The access-log sink: one line per call, written off the request path by a writer
//! thread (file or stdout), or to the process log. A full buffer drops lines and counts
//! them rather than slowing requests down.

use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use prometheus::{IntCounter, Registry};

use super::register;

/// Lines buffered for the writer thread before new ones are dropped.
const BUFFER_LINES: usize = 16 * 1024;

/// Where access-log lines go (cheap to clone; `Send + Sync`).
#[derive(Clone)]
pub struct AccessLogSink {
    tx: Option<SyncSender<String>>,
    dropped: IntCounter,
}

// === impl AccessLogSink ===

impl AccessLogSink {
    /// A sink for `path` (`None`: the process log; `stdout`; else a file appended to).
    pub fn new(path: Option<&str>, registry: &Registry) -> std::io::Result<Self> {
        let dropped = register(
            registry,
            IntCounter::new("wasmesh_access_log_dropped_total", "Access-log lines dropped because the writer lagged")
                .expect("static metric definition"),
        );
        let writer: Box<dyn Write + Send> = match path {
            None => return Ok(AccessLogSink { tx: None, dropped }),
            Some("stdout") => Box::new(std::io::stdout()),
            Some(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        };
        let (tx, rx) = sync_channel::<String>(BUFFER_LINES);
        std::thread::Builder::new().name("wasmesh-access-log".into()).spawn(move || {
            let mut out = std::io::BufWriter::new(writer);
            while let Ok(line) = rx.recv() {
                let _ = writeln!(out, "{line}");
                // Drain what is queued, then flush once.
                while let Ok(more) = rx.try_recv() {
                    let _ = writeln!(out, "{more}");
                }
                let _ = out.flush();
            }
        })?;
        Ok(AccessLogSink { tx: Some(tx), dropped })
    }

    /// Writes one line (never blocks).
    pub fn write(&self, line: &str) {
        match &self.tx {
            None => tracing::info!(target: "wasmesh::access", "{line}"),
            Some(tx) => match tx.try_send(line.to_string()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_appends_lines() {
        let path = std::env::temp_dir().join(format!("wasmesh-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = AccessLogSink::new(path.to_str(), &Registry::new()).expect("sink");
        sink.write("one");
        sink.write("two");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text == "one\ntwo\n" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "got {text:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&path);
    }
}
