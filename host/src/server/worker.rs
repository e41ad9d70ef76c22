//! A worker: one OS thread, one current-thread runtime, its own sockets, VMs and pools.
//! A request never leaves the worker that accepted it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use super::conn::{self, LocalExec};
use super::Shared;
use crate::proxy::{ConnCtx, WorkerCtx};
use crate::wasm::ConnectionInfo;

/// A listener socket handed to one worker, with the process-wide connection count.
pub struct WorkerListener {
    /// Listener name.
    pub name: Arc<str>,
    /// This worker's reuse-port socket.
    pub socket: std::net::TcpListener,
    /// Open connections on this listener across all workers.
    pub open: Arc<AtomicUsize>,
}

/// Connection builders per listener, rebuilt when the generation changes.
type BuilderCache = Rc<RefCell<HashMap<Arc<str>, (u64, Rc<auto::Builder<LocalExec>>)>>>;

/// Connection ids, unique in the process.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Live connections of this worker, for drain.
#[derive(Default)]
struct Live {
    count: Cell<usize>,
    idle: Notify,
}

/// Runs a worker until drain completes (or its deadline passes).
pub fn run(index: usize, listeners: Vec<WorkerListener>, shared: Arc<Shared>, drain: watch::Receiver<bool>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = WorkerCtx::new(shared.generation.clone(), shared.wasm.clone());
        let live = Rc::new(Live::default());
        let builders: BuilderCache = Rc::default();
        for l in listeners {
            let socket = match TcpListener::from_std(l.socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(worker = index, listener = %l.name, error = %e, "cannot register socket");
                    continue;
                }
            };
            tokio::task::spawn_local(accept_loop(
                socket,
                l.name,
                l.open,
                worker.clone(),
                shared.clone(),
                live.clone(),
                builders.clone(),
                drain.clone(),
            ));
        }
        let mut drain = drain;
        while !*drain.borrow() {
            if drain.changed().await.is_err() {
                break;
            }
        }
        let deadline = shared.drain_timeout();
        let wait = async {
            while live.count.get() > 0 {
                live.idle.notified().await;
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!(
                worker = index,
                open = live.count.get(),
                "drain deadline passed; closing remaining connections"
            );
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    socket: TcpListener,
    name: Arc<str>,
    open: Arc<AtomicUsize>,
    worker: Rc<WorkerCtx>,
    shared: Arc<Shared>,
    live: Rc<Live>,
    builders: BuilderCache,
    mut drain: watch::Receiver<bool>,
) {
    let local_addr = socket.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            r = socket.accept() => r,
            _ = drain.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let generation = shared.generation.load_full();
        let Some(spec) = generation.listener(&name).cloned() else {
            continue;
        };
        if open.load(Ordering::Relaxed) >= spec.http.max_connections as usize {
            spec.stats.connections_rejected.inc();
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let builder = {
            let mut cache = builders.borrow_mut();
            match cache.get(&name) {
                Some((number, b)) if *number == generation.number => b.clone(),
                _ => {
                    let b = Rc::new(conn::builder(&spec.http, spec.protocol));
                    cache.insert(name.clone(), (generation.number, b.clone()));
                    b
                }
            }
        };
        let info = Arc::new(ConnectionInfo {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            source: peer,
            destination: tcp.local_addr().ok().or(local_addr).unwrap_or(peer),
            tls: None,
        });
        let ctx = Rc::new(ConnCtx { info, listener: name.clone(), scheme: "http" });
        let idle = spec.http.idle_timeout.get();
        let stats = spec.stats.clone();
        stats.connections_total.inc();
        stats.connections_active.inc();
        open.fetch_add(1, Ordering::Relaxed);
        live.count.set(live.count.get() + 1);
        let (worker, live, open, drain) = (worker.clone(), live.clone(), open.clone(), drain.clone());
        tokio::task::spawn_local(async move {
            conn::serve(tcp, builder, worker, ctx, idle, drain).await;
            stats.connections_active.dec();
            open.fetch_sub(1, Ordering::Relaxed);
            live.count.set(live.count.get().saturating_sub(1));
            if live.count.get() == 0 {
                live.idle.notify_waiters();
            }
        });
    }
}
