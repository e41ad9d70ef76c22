//! Open-loop HTTP/1.1 load generator for the wasmesh benchmark harness (std only).
//!
//! Why not a Debian tool: Debian has no wrk2, and `h2load --rps` ticks each client's timer
//! at 10 ms at best and starts every client together, so 5k rps arrives as bursts of
//! ~50 requests every 10 ms (measured: p50 0.69 ms straight to nginx, ~10x the real
//! figure). This tool spreads arrivals evenly instead.
//!
//! How: `--conns` connections, one thread each. Connection `c` owns the slots
//! `start + c/rate + k*conns/rate`, so together they send `rate` requests per second,
//! evenly spaced. A thread sleeps until its slot, sends, and reads the whole response.
//! Latency is measured from the actual send, except when the previous response on the
//! connection arrived after this request's slot: then the request was held back by the
//! server, and latency is measured from the slot (coordinated-omission correction, as
//! wrk2 does). Timer slack of the load generator itself is thus not counted as latency.
//!
//! Build: `rustc --edition 2021 -O -o openloop openloop.rs`.
//! Usage: `openloop --addr 127.0.0.1:8080 --path /small --rate 5000 --conns 32 --duration 5`.
//! Prints one JSON object on stdout.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Command-line settings.
struct Args {
    addr: String,
    path: String,
    rate: f64,
    conns: usize,
    duration: f64,
    /// Extra request header lines (`--header "Name: value"`, repeatable).
    headers: Vec<String>,
}

/// What one connection thread saw.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    ok_2xx: u64,
    non_2xx: u64,
    errors: u64,
    corrected: u64,
    missed: u64,
    bytes: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { addr: "127.0.0.1:8080".into(), path: "/".into(), rate: 1000.0, conns: 32, duration: 5.0, headers: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("missing value after {flag}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad value for {flag}: {e}");
        match flag.as_str() {
            "--addr" => a.addr = val,
            "--path" => a.path = val,
            "--rate" => a.rate = val.parse().map_err(|e| bad(&e))?,
            "--conns" => a.conns = val.parse().map_err(|e| bad(&e))?,
            "--duration" => a.duration = val.parse().map_err(|e| bad(&e))?,
            "--header" => a.headers.push(val),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(a.rate > 0.0) || a.conns == 0 || !(a.duration > 0.0) {
        return Err("--rate, --conns and --duration must be positive".into());
    }
    Ok(a)
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; an orderly close mid-response is an error.
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> io::Result<()> {
    let n = s.read(chunk)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads one whole response; returns (status, bytes, connection must close).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> io::Result<(u16, u64, bool)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf, chunk)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad("no status code"))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = head.starts_with("http/1.0");
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            match k.trim() {
                "content-length" => content_length = v.parse().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
    }
    buf.drain(..head_end);
    let mut body: u64 = 0;
    if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                fill(s, buf, chunk)?;
            };
            let size_txt = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            buf.drain(..line_end + 2);
            // Chunk data plus its CRLF; the last chunk is followed by (no) trailers + CRLF.
            while buf.len() < size + 2 {
                fill(s, buf, chunk)?;
            }
            buf.drain(..size + 2);
            body += size as u64;
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = content_length {
        while buf.len() < len {
            fill(s, buf, chunk)?;
        }
        buf.drain(..len);
        body = len as u64;
    } else if status >= 200 && status != 204 && status != 304 {
        // Body delimited by close.
        loop {
            match s.read(chunk) {
                Ok(0) => break,
                Ok(n) => body += n as u64,
                Err(e) => return Err(e),
            }
        }
        close = true;
        buf.clear();
    }
    Ok((status, body + head_end as u64, close))
}

fn run_conn(args: Arc<Args>, c: usize, start: Instant, end: Instant) -> Tally {
    let mut t = Tally::default();
    let extra: String = args.headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wasmesh-openloop\r\n{extra}\r\n", args.path, args.addr);
    let interval = args.conns as f64 / args.rate;
    let phase = c as f64 / args.rate;
    // Give up on slots still unsent this long after the end (a dead server).
    let hard_end = end + Duration::from_secs(2);
    let mut stream: Option<TcpStream> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(128 * 1024);
    let mut chunk = vec![0u8; 128 * 1024];
    let mut prev_done = start;
    let mut k: u64 = 0;
    loop {
        let slot = start + Duration::from_secs_f64(phase + k as f64 * interval);
        if slot >= end {
            break;
        }
        k += 1;
        let now = Instant::now();
        if now >= hard_end {
            t.missed += 1;
            continue;
        }
        if now < slot {
            thread::sleep(slot - now);
        }
        let held_back = prev_done > slot;
        if stream.is_none() {
            match connect(&args.addr) {
                Ok(s) => stream = Some(s),
                Err(_) => {
                    t.errors += 1;
                    prev_done = Instant::now();
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let sent = Instant::now();
        let result = s.write_all(request.as_bytes()).and_then(|()| read_response(s, &mut buf, &mut chunk));
        let done = Instant::now();
        prev_done = done;
        match result {
            Ok((status, bytes, close)) => {
                let from = if held_back { slot } else { sent };
                if held_back {
                    t.corrected += 1;
                }
                t.latencies_ns.push((done - from).as_nanos() as u64);
                t.bytes += bytes;
                if (200..300).contains(&status) {
                    t.ok_2xx += 1;
                } else {
                    t.non_2xx += 1;
                }
                if close {
                    stream = None;
                    buf.clear();
                }
            }
            Err(_) => {
                t.errors += 1;
                stream = None;
                buf.clear();
            }
        }
    }
    t
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("openloop: {e}");
            std::process::exit(2);
        }
    };
    // Start a little in the future so every thread is ready for its first slot.
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(args.duration);
    let handles: Vec<_> = (0..args.conns)
        .map(|c| {
            let a = Arc::clone(&args);
            thread::spawn(move || run_conn(a, c, start, end))
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        match h.join() {
            Ok(t) => {
                all.latencies_ns.extend(t.latencies_ns);
                all.ok_2xx += t.ok_2xx;
                all.non_2xx += t.non_2xx;
                all.errors += t.errors;
                all.corrected += t.corrected;
                all.missed += t.missed;
                all.bytes += t.bytes;
            }
            Err(_) => all.errors += 1,
        }
    }
    let elapsed = Instant::now().saturating_duration_since(start).as_secs_f64();
    let mut l = all.latencies_ns;
    l.sort_unstable();
    let n = l.len() as u64;
    let mean = if n > 0 { l.iter().sum::<u64>() as f64 / n as f64 / 1000.0 } else { 0.0 };
    println!(
        "{{\"requests\":{n},\"ok_2xx\":{},\"non_2xx\":{},\"errors\":{},\"missed\":{},\
         \"corrected\":{},\"bytes\":{},\"rate_target\":{},\"conns\":{},\"duration_s\":{:.3},\
         \"rate_achieved\":{:.1},\"mean_us\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\
         \"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}}}",
        all.ok_2xx,
        all.non_2xx,
        all.errors,
        all.missed,
        all.corrected,
        all.bytes,
        args.rate,
        args.conns,
        elapsed,
        n as f64 / args.duration,
        mean,
        pct(&l, 50.0),
        pct(&l, 90.0),
        pct(&l, 99.0),
        pct(&l, 99.9),
        pct(&l, 100.0),
    );
}
