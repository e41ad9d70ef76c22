//! Serving one downstream connection: HTTP/1.1 and HTTP/2 (prior knowledge) with the
//! listener's limits, an idle timeout, and graceful shutdown on drain.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{DownstreamProtocol, HttpSettings};
use crate::proxy::{self, ConnCtx, WorkerCtx};

/// Runs `!Send` futures on the worker's `LocalSet`.
#[derive(Clone, Copy, Debug)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Builds the connection builder for a listener's settings.
pub fn builder(http: &HttpSettings, protocol: DownstreamProtocol) -> auto::Builder<LocalExec> {
    let mut b = auto::Builder::new(LocalExec);
    match protocol {
        DownstreamProtocol::Http1 => b = b.http1_only(),
        DownstreamProtocol::Http2 => b = b.http2_only(),
        DownstreamProtocol::Auto => {}
    }
    let header_bytes = (http.max_request_headers_kb as usize * 1024).max(8192);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(http.request_headers_timeout.get())
        .max_buf_size(header_bytes)
        .max_headers(http.max_headers_count as usize)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http.max_concurrent_streams)
        .initial_stream_window_size(http.initial_stream_window_size)
        .initial_connection_window_size(http.initial_connection_window_size)
        .max_header_list_size(header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Tracks requests in flight on one connection, for the idle timeout.
#[derive(Default)]
struct Activity {
    in_flight: Cell<usize>,
    last: Cell<Option<Instant>>,
}

/// Serves `io` until the client closes, the idle timeout fires, or drain completes.
pub async fn serve<I>(
    io: I,
    builder: Rc<auto::Builder<LocalExec>>,
    worker: Rc<WorkerCtx>,
    ctx: Rc<ConnCtx>,
    idle_timeout: Duration,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Rc::new(Activity::default());
    activity.last.set(Some(Instant::now()));
    let act = activity.clone();
    let service = service_fn(move |req| {
        let worker = worker.clone();
        let ctx = ctx.clone();
        let act = act.clone();
        act.in_flight.set(act.in_flight.get() + 1);
        async move {
            let resp = proxy::handle(worker, ctx, req).await;
            act.in_flight.set(act.in_flight.get().saturating_sub(1));
            act.last.set(Some(Instant::now()));
            resp
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut idle, if !shutting_down => {
                let last = activity.last.get().unwrap_or_else(Instant::now);
                if activity.in_flight.get() == 0 && last.elapsed() >= idle_timeout {
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                } else {
                    idle.as_mut().reset(last + idle_timeout.max(Duration::from_millis(1)));
                    if activity.in_flight.get() > 0 {
                        idle.as_mut().reset(Instant::now() + idle_timeout);
                    }
                }
            }
            changed = drain.changed(), if !shutting_down => {
                if changed.is_err() || *drain.borrow() {
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}
