//! A worker: one OS thread, one current-thread runtime, its own sockets, VMs and pools.
//! A request never leaves the worker that accepted it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{watch, Notify};

use super::conn::{self, LocalExec};
use super::listeners::WorkerCommand;
use super::Shared;
use crate::config::TlsMode;
use crate::proxy::{ConnCtx, WorkerCtx};
use crate::tls::{peek_is_tls_within, TlsFacts};
use crate::wasm::{ConnectionInfo, TlsInfo};

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
pub fn run(
    index: usize,
    listeners: Vec<WorkerListener>,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
    mut commands: UnboundedReceiver<WorkerCommand>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = WorkerCtx::new(shared.generation.clone(), shared.wasm.clone(), shared.access_log.clone());
        let live = Rc::new(Live::default());
        let builders: BuilderCache = Rc::default();
        // Per listener socket: a switch that retires it (reload removed or moved it).
        let mut retire: HashMap<(Arc<str>, Option<SocketAddr>), watch::Sender<bool>> = HashMap::new();
        let start = |l: WorkerListener, retire: &mut HashMap<(Arc<str>, Option<SocketAddr>), watch::Sender<bool>>| {
            let bound = l.socket.local_addr().ok();
            let socket = match TcpListener::from_std(l.socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(worker = index, listener = %l.name, error = %e, "cannot register socket");
                    return;
                }
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            retire.insert((l.name.clone(), bound), stop_tx);
            tokio::task::spawn_local(accept_loop(
                socket,
                l.name,
                l.open,
                worker.clone(),
                shared.clone(),
                live.clone(),
                builders.clone(),
                drain.clone(),
                stop_rx,
            ));
        };
        for l in listeners {
            start(l, &mut retire);
        }
        let mut drain = drain.clone();
        while !*drain.borrow() {
            tokio::select! {
                changed = drain.changed() => if changed.is_err() { break },
                cmd = commands.recv() => match cmd {
                    Some(WorkerCommand::Add(l)) => start(l, &mut retire),
                    Some(WorkerCommand::Remove { name, bound }) => {
                        if let Some(stop) = retire.remove(&(name, Some(bound))) {
                            let _ = stop.send(true);
                        }
                    }
                    None => {}
                },
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
    mut retired: watch::Receiver<bool>,
) {
    let local_addr = socket.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            r = socket.accept() => r,
            _ = drain.changed() => return,
            _ = retired.changed() => return,
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
        let mut info = ConnectionInfo {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            source: peer,
            destination: tcp.local_addr().ok().or(local_addr).unwrap_or(peer),
            tls: None,
        };
        let idle = spec.http.idle_timeout.get();
        let handshake_timeout = spec.http.request_headers_timeout.get();
        let tls = spec.tls.clone();
        let stats = spec.stats.clone();
        stats.connections_total.inc();
        stats.connections_active.inc();
        open.fetch_add(1, Ordering::Relaxed);
        live.count.set(live.count.get() + 1);
        let (worker, live, open, drain, name) =
            (worker.clone(), live.clone(), open.clone(), drain.clone(), name.clone());
        tokio::task::spawn_local(async move {
            match tls {
                None => {
                    let ctx = Rc::new(ConnCtx::new(info, name, "http"));
                    conn::serve(tcp, builder, worker, ctx, idle, drain).await;
                }
                Some(tls) => {
                    // Permissive: plaintext and TLS on one port, told apart by the first bytes.
                    let speaks_tls = tls.mode() != TlsMode::Permissive
                        || peek_is_tls_within(&tcp, handshake_timeout).await.unwrap_or(false);
                    if !speaks_tls {
                        let ctx = Rc::new(ConnCtx::new(info, name, "http"));
                        conn::serve(tcp, builder, worker, ctx, idle, drain).await;
                    } else {
                        match tokio::time::timeout(handshake_timeout, tls.acceptor().accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                info.tls = Some(tls_info(&tls.facts(stream.get_ref().1)));
                                let ctx = Rc::new(ConnCtx::new(info, name, "https"));
                                conn::serve(stream, builder, worker, ctx, idle, drain).await;
                            }
                            Ok(Err(e)) => {
                                stats.tls_handshake_errors.inc();
                                tracing::debug!(listener = %name, peer = %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                stats.tls_handshake_errors.inc();
                                tracing::debug!(listener = %name, peer = %peer, "TLS handshake timed out");
                            }
                        }
                    }
                }
            }
            stats.connections_active.dec();
            open.fetch_sub(1, Ordering::Relaxed);
            live.count.set(live.count.get().saturating_sub(1));
            if live.count.get() == 0 {
                live.idle.notify_waiters();
            }
        });
    }
}

/// The TLS facts filters see as `connection.*` properties.
fn tls_info(f: &TlsFacts) -> TlsInfo {
    let peer = f.peer.as_ref();
    let local = f.local.as_ref();
    TlsInfo {
        version: f.version.to_string(),
        sni: f.sni.clone(),
        alpn: f.alpn.clone(),
        peer_certificate_presented: f.mtls,
        peer_uri_sans: peer.map(|p| p.uri_sans.clone()).unwrap_or_default(),
        peer_dns_sans: peer.map(|p| p.dns_sans.clone()).unwrap_or_default(),
        peer_subject: peer.map(|p| p.subject.clone()),
        peer_sha256: peer.map(|p| p.sha256_digest.clone()),
        local_uri_sans: local.map(|p| p.uri_sans.clone()).unwrap_or_default(),
        local_dns_sans: local.map(|p| p.dns_sans.clone()).unwrap_or_default(),
        local_subject: local.map(|p| p.subject.clone()),
    }
}
