//! One request's journey: header fix-ups → request filters → route → upstream →
//! response filters → downstream. Filters decide (intents); this file carries it out.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::lock::Mutex;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, DownstreamBody, Driven, FrameSink, ProxyBody};
use super::headers;
use super::local_reply::{ExchangeError, LocalReply};
use super::route;
use super::upgrade;
use super::WorkerCtx;
use crate::flags::ResponseFlags;
use crate::generation::{ClusterEntry, Generation, ListenerSpec};
use crate::upstream::{PickRequest, PooledBody, UpstreamError};
use crate::wasm::{BodyVerdict, ConnectionInfo, HttpStream, StreamInfo, Verdict};

/// What one connection knows that every request on it shares.
pub struct ConnCtx {
    /// Peer, local address, TLS facts.
    pub info: Arc<ConnectionInfo>,
    /// The listener that accepted it.
    pub listener: Arc<str>,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The peer's IP as `x-forwarded-for` carries it (formatted once per connection).
    peer_ip: HeaderValue,
}

impl ConnCtx {
    /// The context of a connection accepted by `listener`.
    pub fn new(info: ConnectionInfo, listener: Arc<str>, scheme: &'static str) -> Self {
        let peer_ip = headers::ip_value(info.source.ip());
        ConnCtx { info: Arc::new(info), listener, scheme, peer_ip }
    }
}

/// The filters' view of one request, shared by the exchange and its body pumps.
type SharedStream = Rc<Mutex<HttpStream>>;

/// Serves one downstream request. Never fails: every error becomes a local reply.
pub async fn handle(
    worker: Rc<WorkerCtx>,
    conn: Rc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<DownstreamBody>, StreamReset> {
    let start = Instant::now();
    let generation = worker.generation.load_full();
    let Some(listener) = generation.listener(&conn.listener).cloned() else {
        // The listener was removed by a reload while this connection stayed open.
        return Ok(ExchangeError::Draining.reply().into_response().map(Into::into));
    };
    let mut outcome = Outcome { cluster: None, flags: ResponseFlags::NONE, set_cookie: None };
    let result = run(&worker, &conn, &generation, &listener, req, &mut outcome).await;
    let cluster = outcome.cluster.as_deref().unwrap_or("-");
    match result {
        Ok(mut resp) => {
            if let Some(cookie) = outcome.set_cookie.take() {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            listener.stats.record(cluster, resp.status().as_u16(), outcome.flags, start.elapsed().as_secs_f64());
            Ok(resp)
        }
        Err(reply) if reply.reset => {
            // A filter closed the stream: reset it (HTTP/2 RST_STREAM, HTTP/1 close).
            outcome.flags.insert(reply.flags);
            listener.stats.record(cluster, 0, outcome.flags, start.elapsed().as_secs_f64());
            Err(StreamReset)
        }
        Err(reply) => {
            outcome.flags.insert(reply.flags);
            listener.stats.record(cluster, reply.status.as_u16(), outcome.flags, start.elapsed().as_secs_f64());
            Ok(reply.into_response().map(Into::into))
        }
    }
}

/// The stream was reset on purpose (a filter called `close_stream`).
#[derive(Debug)]
pub struct StreamReset;

impl std::fmt::Display for StreamReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream closed by a filter")
    }
}

impl std::error::Error for StreamReset {}

/// Facts gathered along the way for metrics and logs.
struct Outcome {
    cluster: Option<Arc<str>>,
    flags: ResponseFlags,
    /// A `Set-Cookie` for a generated session-affinity cookie.
    set_cookie: Option<HeaderValue>,
}

async fn run(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnCtx>,
    generation: &Arc<Generation>,
    listener: &Arc<ListenerSpec>,
    mut req: Request<Incoming>,
    outcome: &mut Outcome,
) -> Result<Response<DownstreamBody>, LocalReply> {
    let upgrading = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
    let downstream_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrading);
    if listener.http.add_forwarded_headers {
        headers::add_forwarded(&mut parts.headers, &conn.peer_ip, conn.scheme);
    }
    headers::ensure_request_id(&mut parts.headers, listener.http.generate_request_id);
    ensure_host(&mut parts);

    // Request filters.
    let stream: Option<SharedStream> = if listener.chain.plugins.is_empty() {
        None
    } else {
        let chain = worker.wasm.borrow_mut().chain(&listener.chain);
        let info = StreamInfo {
            connection: conn.info.clone(),
            listener: listener.name.clone(),
            direction: listener.direction,
            start: SystemTime::now(),
            max_buffered_body_bytes: listener.http.max_buffered_body_bytes,
        };
        let mut stream = chain.stream(info);
        stream.upstream_info().request_header_bytes = header_bytes(&parts.headers);
        if let Some(default) = &listener.default_cluster {
            stream.set_property(route::PROP_CLUSTER, default.value.clone());
        }
        Some(Rc::new(Mutex::new(stream)))
    };
    let request_eos = body.is_end_stream();
    if let Some(s) = &stream {
        // Bind the verdict first: the stream's lock must be released before note_reply.
        let verdict = s.lock().await.request_headers(&mut parts, request_eos).await;
        if let Verdict::LocalReply(r) = verdict {
            return Err(note_reply(s, LocalReply::from_filter(r)).await);
        }
    }

    // Route: the filters' intent, else the listener's default.
    let decision = match &stream {
        Some(s) => route::decide(Some(&*s.lock().await), listener),
        None => route::decide(None, listener),
    };
    let Some(cluster_name) = decision.cluster else {
        return Err(fail(&stream, ExchangeError::NoRoute).await);
    };
    outcome.cluster = Some(cluster_name.clone());
    let Some(entry) = generation.clusters.get(&*cluster_name).cloned() else {
        return Err(fail(&stream, ExchangeError::UnknownCluster(cluster_name.to_string())).await);
    };
    let entry: Arc<ClusterEntry> = entry;
    if let Some(overflow) = listener.chain.overflow(&cluster_name, entry.cluster.active_requests()) {
        listener.stats.overflowed(&cluster_name, overflow.reason());
        let refused = UpstreamError::Overflow { cluster: cluster_name.to_string() };
        return Err(fail(&stream, ExchangeError::Upstream(refused)).await);
    }
    let mut hash_key = decision.hash_key.or_else(|| {
        entry.hash_key.as_ref().and_then(|k| route::hash_key_from_request(k, &parts, conn.info.source.ip()))
    });
    if hash_key.is_none() {
        // Session affinity: a client without the cookie gets one, and sticks from then on.
        if let Some(crate::config::HashKey::Cookie(name)) = &entry.hash_key {
            let (value, header) = route::new_affinity_cookie(name, &entry.cookie);
            hash_key = Some(value.into_bytes());
            outcome.set_cookie = header;
        }
    }
    let timeout = route::RouteTimeout::apply(decision.timeout, entry.request_timeout);
    parts.version = match entry.cluster.protocol() {
        crate::config::UpstreamProtocol::Http1 => Version::HTTP_11,
        crate::config::UpstreamProtocol::Http2 => Version::HTTP_2,
    };
    let pick = PickRequest { subset: decision.subset.as_deref(), hash_key: hash_key.as_deref(), exclude: &[] };
    let Some(stream) = stream else {
        // No filters: one attempt, bodies pass through untouched.
        let endpoint = entry.cluster.pick(&pick).map_err(|e| ExchangeError::Upstream(e).reply())?;
        let _active = endpoint.track();
        let send = worker.pools.send(&entry.cluster, &endpoint, Request::from_parts(parts, body::incoming(body)));
        let resp = match await_response(send, timeout, None).await {
            Ok(resp) => resp,
            Err(Failure::Exchange(e)) => return Err(e.reply()),
            Err(Failure::Filter(r)) => return Err(r),
        };
        let (mut rparts, rbody) = resp.into_parts();
        if rparts.status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(down) = downstream_upgrade {
                let up = hyper::upgrade::on(Response::from_parts(rparts.clone(), rbody));
                tokio::task::spawn_local(upgrade::tunnel(down, up));
                return Ok(Response::from_parts(rparts, body::empty().into()));
            }
        }
        headers::strip_hop_by_hop(&mut rparts.headers, false);
        return Ok(Response::from_parts(rparts, body::incoming(rbody).into()));
    };

    // With filters: attempts until a response is accepted (the retry filter asks for
    // more through `wasmesh.retry_upstream`).
    let (retry_limit, per_try, head_kept) = {
        let s = stream.lock().await;
        (route::retry_buffer_bytes(&s), route::per_try_timeout(&s), s.keeps_request_head())
    };
    let replay: Option<SharedReplay> = (retry_limit > 0).then(|| Rc::new(RefCell::new(Replay::new(retry_limit))));
    // The cluster's HTTP version, for a later attempt's head taken from the kept copy.
    let version = parts.version;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut first_body = Some(body);
    let mut body_reply: Option<tokio::sync::oneshot::Receiver<LocalReply>> = None;
    let mut attempt: u32 = 0;
    // Endpoints earlier attempts went to: a retry goes elsewhere while it can.
    let mut tried = [std::net::SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ATTEMPTS as usize];
    let mut tried_n = 0;
    loop {
        attempt += 1;
        let upstream_body = match first_body.take() {
            // No body: filters saw end_of_stream with the headers; nothing to pump.
            Some(b) if b.is_end_stream() => {
                if let Some(r) = &replay {
                    r.borrow_mut().complete = true;
                }
                body::empty()
            }
            Some(b) => {
                // Without a filter reading the body and nothing kept for a retry, it goes
                // upstream untouched (no pump task), counted for the filters' logs.
                let bypass = {
                    let mut s = stream.lock().await;
                    (replay.is_none() && !s.wants_body_or_trailers(false)).then(|| s.count_request_body())
                };
                match bypass {
                    Some(counter) => body::counted(body::incoming(b), counter),
                    None => {
                        let (tx, up_body) = body::channel();
                        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
                        let pump = pump_request(stream.clone(), body::incoming(b), tx, reply_tx, replay.clone());
                        tokio::task::spawn_local(pump);
                        body_reply = Some(reply_rx);
                        up_body
                    }
                }
            }
            None => match replay.as_ref().and_then(|r| r.borrow().body()) {
                Some(b) => b,
                None => break Err(fail_stream(&stream, ExchangeError::Timeout).await),
            },
        };
        let try_timeout = attempt_timeout(per_try, deadline);
        let sent_at = Instant::now();
        let result = match entry.cluster.pick(&PickRequest { exclude: &tried[..tried_n], ..pick }) {
            Ok(endpoint) => {
                {
                    let mut s = stream.lock().await;
                    let info = s.upstream_info();
                    info.address = Some(endpoint.addr());
                    info.attempt_count = attempt;
                }
                if let Some(slot) = tried.get_mut(tried_n) {
                    *slot = endpoint.addr();
                    tried_n += 1;
                }
                let _active = endpoint.track();
                // Without a replayable body there is no second attempt: the head moves. With
                // one, a later attempt needs the head again: from the copy the stream keeps
                // for its filters when there is one (the first attempt's head then moves),
                // else from a copy made now.
                let head = match &replay {
                    Some(_) if !head_kept => parts.clone(),
                    Some(_) if attempt > 1 => match stream.lock().await.request_head() {
                        Some(mut head) => {
                            head.version = version;
                            head
                        }
                        // The copy lives as long as the stream: answered like a replay
                        // body that is gone, should it ever be missing.
                        None => break Err(fail_stream(&stream, ExchangeError::Timeout).await),
                    },
                    _ => std::mem::replace(&mut parts, Request::new(()).into_parts().0),
                };
                let req = Request::from_parts(head, upstream_body);
                let send = worker.pools.send(&entry.cluster, &endpoint, req);
                await_response(send, try_timeout, body_reply.take()).await
            }
            Err(e) => Err(Failure::Exchange(ExchangeError::Upstream(e))),
        };
        let (mut rparts, rbody): (http::response::Parts, ProxyBody) = match result {
            Ok(resp) => {
                stream.lock().await.upstream_info().backend_latency = Some(sent_at.elapsed());
                let (p, b) = resp.into_parts();
                if p.status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(down) = downstream_upgrade {
                        let up = hyper::upgrade::on(Response::from_parts(p.clone(), b));
                        tokio::task::spawn_local(upgrade::tunnel(down, up));
                        return Ok(Response::from_parts(p, body::empty().into()));
                    }
                }
                (p, body::incoming(b))
            }
            Err(Failure::Filter(r)) => break Err(note_reply(&stream, r).await),
            Err(Failure::Exchange(e)) => {
                // The upstream failed: filters see it as a response carrying Envoy's flag,
                // so a retry filter can act on it.
                let reply = e.reply();
                stream.lock().await.upstream_info().flags.insert(reply.flags);
                let (mut p, _) = Response::new(()).into_parts();
                p.status = reply.status;
                if !reply.body.is_empty() {
                    p.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                }
                (p, body::full(reply.body))
            }
        };
        headers::strip_hop_by_hop(&mut rparts.headers, false);
        let response_eos = rbody.is_end_stream();
        let can_retry = replay.as_ref().is_some_and(|r| r.borrow().replayable())
            && deadline.is_none_or(|d| Instant::now() < d)
            && attempt < MAX_ATTEMPTS;
        let verdict = {
            let mut s = stream.lock().await;
            s.set_retry_available(can_retry);
            s.response_headers(&mut rparts, response_eos).await
        };
        eject_if_asked(&stream, &entry).await;
        match verdict {
            Verdict::Retry(backoff) if can_retry => {
                drop(rbody);
                let wait = match deadline {
                    Some(d) => backoff.min(d.saturating_duration_since(Instant::now())),
                    None => backoff,
                };
                tokio::time::sleep(wait).await;
                continue;
            }
            Verdict::LocalReply(r) => break Err(note_reply(&stream, LocalReply::from_filter(r)).await),
            _ => {
                let filtered = {
                    let mut s = stream.lock().await;
                    let info = s.upstream_info();
                    info.response_code = Some(rparts.status.as_u16());
                    info.response_header_bytes = header_bytes(&rparts.headers);
                    outcome.flags.insert(info.flags);
                    if response_eos {
                        // No body to filter: finish now instead of starting a pump.
                        s.finish();
                        break Ok(Response::from_parts(rparts, body::empty().into()));
                    }
                    s.wants_body_or_trailers(true)
                };
                if !filtered {
                    // No filter reads the body: it passes untouched; filters log its size.
                    let down_body = body::Metered::new(rbody, move |bytes| {
                        // Nothing else holds the stream once the response is on its way; if
                        // something did, dropping it still runs on_log (without the size).
                        if let Some(mut s) = stream.try_lock() {
                            s.finish_with_response_bytes(bytes);
                        }
                    });
                    break Ok(Response::from_parts(rparts, DownstreamBody::Metered(down_body)));
                }
                // The client's reads drive the response-body filters: no task, and a
                // body already read with the head leaves in the same write.
                let down_body = Driven::new(|slot| pump_response(stream, rbody, slot));
                break Ok(Response::from_parts(rparts, DownstreamBody::Filtered(down_body)));
            }
        }
    }
}

/// Acts on `wasmesh.eject_endpoint` (u32 LE milliseconds): the endpoint that served this
/// attempt leaves load balancing on every worker for that long.
async fn eject_if_asked(stream: &SharedStream, entry: &ClusterEntry) {
    let mut s = stream.lock().await;
    let Some(args) = s.take_property("wasmesh.eject_endpoint") else { return };
    let ms = args.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes).unwrap_or(0);
    let Some(addr) = s.upstream_info().address else { return };
    if ms == 0 {
        return;
    }
    if let Some(endpoint) = entry.cluster.endpoint(addr) {
        endpoint.eject(Duration::from_millis(u64::from(ms)));
        tracing::info!(cluster = entry.cluster.name(), endpoint = %addr, ms, "endpoint ejected by a filter");
    }
}

/// Bytes of a header block as HTTP/1.1 would carry it (`name: value\r\n`).
fn header_bytes(headers: &http::HeaderMap) -> u64 {
    headers.iter().map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64).sum()
}

/// Upper bound on attempts the host makes for one request, whatever filters ask.
const MAX_ATTEMPTS: u32 = 16;

/// The timeout of one attempt: the per-try timeout, cut to what is left of the route's.
fn attempt_timeout(per_try: Option<Duration>, deadline: Option<Instant>) -> Option<Duration> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
    match (per_try, left) {
        (Some(p), Some(l)) => Some(p.min(l)),
        (p, l) => p.or(l),
    }
}

/// The request body as sent, kept (up to a limit) so it can be re-sent on a retry.
struct Replay {
    limit: u64,
    bytes: u64,
    data: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
    complete: bool,
    overflow: bool,
}

type SharedReplay = Rc<RefCell<Replay>>;

// === impl Replay ===

impl Replay {
    fn new(limit: u64) -> Self {
        Replay { limit, bytes: 0, data: Vec::new(), trailers: None, complete: false, overflow: false }
    }

    fn record(&mut self, frame: &http_body::Frame<Bytes>) {
        if self.overflow {
            return;
        }
        if let Some(d) = frame.data_ref() {
            self.bytes += d.len() as u64;
            if self.bytes > self.limit {
                self.overflow = true;
                self.data.clear();
                return;
            }
            self.data.push(d.clone());
        } else if let Some(t) = frame.trailers_ref() {
            self.trailers = Some(t.clone());
        }
    }

    /// The whole body went out and fits the limit.
    fn replayable(&self) -> bool {
        self.complete && !self.overflow
    }

    /// A fresh copy of the recorded body.
    fn body(&self) -> Option<ProxyBody> {
        if !self.replayable() {
            return None;
        }
        let mut frames: Vec<Result<http_body::Frame<Bytes>, body::BoxError>> =
            self.data.iter().cloned().map(|d| Ok(http_body::Frame::data(d))).collect();
        if let Some(t) = &self.trailers {
            frames.push(Ok(http_body::Frame::trailers(t.clone())));
        }
        Some(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
    }
}

/// Records a local reply where filters' `on_log` sees it (`response.code`, flags).
async fn note_reply(stream: &SharedStream, mut reply: LocalReply) -> LocalReply {
    let mut s = stream.lock().await;
    let info = s.upstream_info();
    info.response_code = Some(reply.status.as_u16());
    info.flags.insert(reply.flags);
    info.code_details = Some(reply.details.to_string());
    // Flags filters added (`wasmesh.response.flag`) count for logs and metrics too.
    reply.flags = info.flags;
    reply
}

async fn note_reply_opt(stream: &Option<SharedStream>, reply: LocalReply) -> LocalReply {
    match stream {
        Some(s) => note_reply(s, reply).await,
        None => reply,
    }
}

/// The local reply for `err`, recorded for the filters of `stream`.
async fn fail_stream(stream: &SharedStream, err: ExchangeError) -> LocalReply {
    note_reply(stream, err.reply()).await
}

/// The local reply for `err`, recorded for the filters.
async fn fail(stream: &Option<SharedStream>, err: ExchangeError) -> LocalReply {
    note_reply_opt(stream, err.reply()).await
}

/// Why no upstream response came back.
enum Failure {
    Exchange(ExchangeError),
    Filter(LocalReply),
}

/// Waits for the upstream's response head within `timeout`, or for a request-body
/// filter's local reply, whichever comes first.
async fn await_response<F>(
    send: F,
    timeout: Option<Duration>,
    body_reply: Option<tokio::sync::oneshot::Receiver<LocalReply>>,
) -> Result<Response<PooledBody>, Failure>
where
    F: std::future::Future<Output = Result<Response<PooledBody>, UpstreamError>>,
{
    let send = async {
        match timeout {
            Some(t) => match tokio::time::timeout(t, send).await {
                Ok(r) => r.map_err(|e| Failure::Exchange(ExchangeError::Upstream(e))),
                Err(_) => Err(Failure::Exchange(ExchangeError::Timeout)),
            },
            None => send.await.map_err(|e| Failure::Exchange(ExchangeError::Upstream(e))),
        }
    };
    match body_reply {
        None => send.await,
        Some(rx) => {
            tokio::pin!(send);
            tokio::select! {
                r = &mut send => r,
                Ok(reply) = rx => Err(Failure::Filter(reply)),
            }
        }
    }
}

/// Feeds the downstream request body through the request-body filters to the upstream.
/// A filter's local reply goes to `reply_tx` and the upstream body is aborted.
async fn pump_request(
    stream: SharedStream,
    body: ProxyBody,
    tx: body::FrameSender,
    reply_tx: tokio::sync::oneshot::Sender<LocalReply>,
    replay: Option<SharedReplay>,
) {
    if let Err(reply) = pump(&stream, body, &tx, false, replay.as_ref()).await {
        let _ = reply_tx.send(note_reply(&stream, reply).await);
        let _ = tx.send(Err("request aborted by a filter".into())).await;
    }
}

/// Feeds the upstream response body through the response-body filters downstream, then
/// finishes the stream (on_done, on_log, on_delete).
async fn pump_response(stream: SharedStream, body: ProxyBody, tx: body::Slot) {
    if pump(&stream, body, &tx, true, None).await.is_err() {
        // The response head already went downstream: all that is left is a reset.
        let _ = tx.put(Err("response aborted by a filter".into())).await;
    }
    stream.lock().await.finish();
}

/// Moves one body through the body/trailer callbacks into `tx`. Filters always get an
/// end-of-stream call (an empty chunk when the body ended without one), and bytes a
/// filter held are released before trailers.
async fn pump(
    stream: &SharedStream,
    body: ProxyBody,
    tx: &impl FrameSink,
    response: bool,
    replay: Option<&SharedReplay>,
) -> Result<(), LocalReply> {
    let mut bytes = 0u64;
    let result = pump_frames(stream, body, tx, response, replay, &mut bytes).await;
    let mut s = stream.lock().await;
    let info = s.upstream_info();
    if response {
        info.response_body_bytes += bytes;
    } else {
        info.request_body_bytes += bytes;
    }
    result
}

/// The loop of [`pump`]; `bytes` counts the body bytes received.
async fn pump_frames(
    stream: &SharedStream,
    mut body: ProxyBody,
    tx: &impl FrameSink,
    response: bool,
    replay: Option<&SharedReplay>,
    bytes: &mut u64,
) -> Result<(), LocalReply> {
    let mut told_end = body.is_end_stream();
    loop {
        let frame = match body.frame().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                let _ = tx.put(Err(e)).await;
                return Ok(());
            }
            None => break,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                *bytes += data.len() as u64;
                let eos = body.is_end_stream();
                told_end |= eos;
                let verdict = {
                    let mut s = stream.lock().await;
                    if response {
                        s.response_body(data, eos).await
                    } else {
                        s.request_body(data, eos).await
                    }
                };
                match verdict {
                    BodyVerdict::Forward(b) if b.is_empty() => continue,
                    BodyVerdict::Forward(b) => http_body::Frame::data(b),
                    BodyVerdict::Hold => continue,
                    BodyVerdict::LocalReply(r) => return Err(LocalReply::from_filter(r)),
                }
            }
            Err(frame) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    told_end = true;
                    let (verdict, tail) = {
                        let mut s = stream.lock().await;
                        let v = if response {
                            s.response_trailers(&mut trailers).await
                        } else {
                            s.request_trailers(&mut trailers).await
                        };
                        (v, s.take_body_tail(response))
                    };
                    if let Verdict::LocalReply(r) = verdict {
                        return Err(LocalReply::from_filter(r));
                    }
                    if let Some(tail) = tail.filter(|t| !t.is_empty()) {
                        let frame = http_body::Frame::data(tail);
                        if let Some(r) = replay {
                            r.borrow_mut().record(&frame);
                        }
                        if tx.put(Ok(frame)).await.is_err() {
                            return Ok(());
                        }
                    }
                    http_body::Frame::trailers(trailers)
                }
                Err(_) => continue,
            },
        };
        if let Some(r) = replay {
            r.borrow_mut().record(&frame);
        }
        if tx.put(Ok(frame)).await.is_err() {
            return Ok(());
        }
    }
    if !told_end {
        let verdict = {
            let mut s = stream.lock().await;
            if response {
                s.response_body(Bytes::new(), true).await
            } else {
                s.request_body(Bytes::new(), true).await
            }
        };
        match verdict {
            BodyVerdict::Forward(b) if !b.is_empty() => {
                let frame = http_body::Frame::data(b);
                if let Some(r) = replay {
                    r.borrow_mut().record(&frame);
                }
                let _ = tx.put(Ok(frame)).await;
            }
            BodyVerdict::LocalReply(r) => return Err(LocalReply::from_filter(r)),
            _ => {}
        }
    }
    if let Some(r) = replay {
        r.borrow_mut().complete = true;
    }
    Ok(())
}

/// HTTP/2 requests carry the authority in the URI; HTTP/1.1 upstreams need `Host`.
fn ensure_host(parts: &mut http::request::Parts) {
    if !parts.headers.contains_key(header::HOST) {
        if let Some(auth) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    // The upstream URI is rebuilt by the pool; keep only path and query here.
    if parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if let Ok(uri) = pq.parse::<Uri>() {
            parts.uri = uri;
        }
    }
}
