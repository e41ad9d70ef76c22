//! The listener set of a running proxy: which sockets are bound, and the per-worker
//! command channels that add or retire listeners when a reload changes them. New
//! sockets are bound before old ones close, so a re-addressed listener never has a gap.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::mpsc::UnboundedSender;

use super::socket;
use super::worker::WorkerListener;
use crate::config::Config;

/// A command to one worker.
pub enum WorkerCommand {
    /// Start accepting on this socket.
    Add(WorkerListener),
    /// Stop accepting on the socket of listener `name` bound at `bound`.
    Remove {
        /// Listener name.
        name: Arc<str>,
        /// Its bound address.
        bound: SocketAddr,
    },
}

/// One bound listener.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BoundListener {
    /// Listener name.
    pub name: String,
    /// The address as configured (may have port 0).
    pub configured: String,
    /// The address actually bound.
    pub bound: SocketAddr,
}

/// The process's listeners and the way to reach each worker.
pub struct ListenerSet {
    workers: Mutex<Vec<UnboundedSender<WorkerCommand>>>,
    bound: ArcSwap<Vec<BoundListener>>,
}

/// Sockets bound for a reload, not yet handed to the workers. Dropping it closes them.
pub struct PreparedListeners {
    added: Vec<(BoundListener, Vec<WorkerListener>)>,
    removed: Vec<BoundListener>,
}

// === impl ListenerSet ===

impl ListenerSet {
    /// The set as bound at start.
    pub fn new(bound: Vec<BoundListener>, workers: Vec<UnboundedSender<WorkerCommand>>) -> Self {
        ListenerSet { workers: Mutex::new(workers), bound: ArcSwap::from_pointee(bound) }
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.load().iter().find(|l| l.name == name).map(|l| l.bound)
    }

    /// Every bound listener.
    pub fn all(&self) -> Vec<BoundListener> {
        self.bound.load().as_ref().clone()
    }

    /// Binds the sockets `next` needs that are not bound yet (new listeners, new
    /// addresses). Nothing running changes until [`ListenerSet::commit`].
    pub fn prepare(&self, next: &Config) -> io::Result<PreparedListeners> {
        let current = self.bound.load();
        let workers = self.workers.lock().map(|w| w.len()).unwrap_or(1).max(1);
        let mut added = Vec::new();
        for l in &next.listeners {
            if current.iter().any(|b| b.name == l.name && b.configured == l.address) {
                continue;
            }
            let addr: SocketAddr = l
                .address
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("listener {}: {e}", l.name)))?;
            let sockets = socket::bind_reuseport(addr, workers)
                .map_err(|e| io::Error::new(e.kind(), format!("listener \"{}\" on {addr}: {e}", l.name)))?;
            let bound = sockets.first().and_then(|s| s.local_addr().ok()).unwrap_or(addr);
            let open = Arc::new(AtomicUsize::new(0));
            let name: Arc<str> = Arc::from(l.name.as_str());
            let per_worker = sockets
                .into_iter()
                .map(|socket| WorkerListener { name: name.clone(), socket, open: open.clone() })
                .collect();
            added.push((BoundListener { name: l.name.clone(), configured: l.address.clone(), bound }, per_worker));
        }
        let removed = current
            .iter()
            .filter(|b| !next.listeners.iter().any(|l| l.name == b.name && l.address == b.configured))
            .cloned()
            .collect();
        Ok(PreparedListeners { added, removed })
    }

    /// Hands new sockets to the workers, then retires the old ones (call after the
    /// generation that names the new listeners is published).
    pub fn commit(&self, prepared: PreparedListeners) {
        let Ok(workers) = self.workers.lock() else { return };
        let mut bound: Vec<BoundListener> = self.bound.load().as_ref().clone();
        for (listener, sockets) in prepared.added {
            for (tx, wl) in workers.iter().zip(sockets) {
                let _ = tx.send(WorkerCommand::Add(wl));
            }
            tracing::info!(listener = %listener.name, address = %listener.bound, "listener added");
            bound.push(listener);
        }
        for old in prepared.removed {
            let name: Arc<str> = Arc::from(old.name.as_str());
            for tx in workers.iter() {
                let _ = tx.send(WorkerCommand::Remove { name: name.clone(), bound: old.bound });
            }
            tracing::info!(listener = %old.name, address = %old.bound, "listener retired");
            bound.retain(|b| !(b.name == old.name && b.bound == old.bound));
        }
        self.bound.store(Arc::new(bound));
    }
}

// === impl PreparedListeners ===

impl PreparedListeners {
    /// True when the reload changes no listener.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}
