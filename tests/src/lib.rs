//! The end-to-end harness: real upstream servers on 127.0.0.1, the real proxy started
//! from YAML on port 0, and real HTTP/1.1 and HTTP/2 clients.

pub mod client;
pub mod jwt;
pub mod pki;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use client::{Client, Reply};
pub use upstream::Upstream;
use wasmesh::server::{Proxy, StartOptions};

/// A proxy started for one test; stops (drains) when dropped.
pub struct TestProxy {
    proxy: Option<Proxy>,
}

// === impl TestProxy ===

impl TestProxy {
    /// Parses `yaml` (listeners on port 0 recommended) and starts the proxy with `workers`.
    pub fn start(yaml: &str, workers: usize) -> TestProxy {
        let config = match wasmesh::config::parse_str(yaml) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}\n---\n{yaml}"),
        };
        let opts = StartOptions { workers, base_dir: repo_root(), cache_dir: None, config_path: None };
        match Proxy::start(config, opts) {
            Ok(proxy) => TestProxy { proxy: Some(proxy) },
            Err(e) => panic!("proxy does not start: {e}"),
        }
    }

    /// Starts from a config file that the proxy watches and reloads.
    pub fn start_file(path: &std::path::Path, workers: usize) -> TestProxy {
        let config = match wasmesh::config::load_file(path) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}"),
        };
        let base_dir = path.parent().map(PathBuf::from).unwrap_or_default();
        let opts = StartOptions { workers, base_dir, cache_dir: None, config_path: Some(path.to_path_buf()) };
        match Proxy::start(config, opts) {
            Ok(proxy) => TestProxy { proxy: Some(proxy) },
            Err(e) => panic!("proxy does not start: {e}"),
        }
    }

    /// The running proxy.
    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("proxy is running until drop")
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.proxy().listener_addr(listener).unwrap_or_else(|| panic!("no listener {listener}"))
    }

    /// `http://<listener addr><path>`.
    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(listener), path)
    }

    /// `http://<admin addr><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy().admin_addr(), path)
    }

    /// Drains and stops, blocking until every worker exits.
    pub fn shutdown(mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown();
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown();
        }
    }
}

/// The repository root (module paths in test configs are relative to it).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// A built Wasm module from `target/filters`, or a panic saying how to build it.
pub fn wasm_module(name: &str) -> PathBuf {
    let path = repo_root().join("target/filters/wasm32-wasip1/release").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask filters` first", path.display());
    path
}

/// VmRSS of this process in KiB (the proxy runs in-process in these tests).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("wasmesh-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `text` to `path` the way editors and config tools do: a temp file renamed
/// over the target (atomic for readers).
pub fn write_atomic(path: &std::path::Path, text: &[u8]) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// YAML for one cluster named `name` with `lb` over `endpoints` (`(addr, labels)`).
pub fn cluster_yaml(name: &str, lb: &str, endpoints: &[(SocketAddr, &[(&str, &str)])]) -> String {
    let mut s = format!("  - name: {name}\n    lb: {lb}\n    connect_timeout: 500ms\n    endpoints:\n");
    for (addr, labels) in endpoints {
        s.push_str(&format!("      - address: \"{addr}\"\n"));
        if !labels.is_empty() {
            s.push_str("        labels: {");
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            s.push_str(&l.join(", "));
            s.push_str("}\n");
        }
    }
    s
}

/// The smallest useful config: one listener `main` on port 0 defaulting to cluster
/// `web` over `upstreams`, plus any extra cluster YAML.
pub fn simple_yaml(upstreams: &[&Upstream], lb: &str) -> String {
    let eps: Vec<(SocketAddr, &[(&str, &str)])> = upstreams.iter().map(|u| (u.addr, &[][..])).collect();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\n    default_cluster: web\nclusters:\n{}",
        cluster_yaml("web", lb, &eps)
    )
}
