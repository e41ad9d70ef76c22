//! The `wasmesh` command line: parses arguments and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmesh::config;
use wasmesh::server::{Proxy, StartOptions};
use wasmesh::telemetry::{init_logging, LogFormat};

/// Exit code for an invalid configuration.
const EXIT_BAD_CONFIG: u8 = 1;
/// Exit code for a failure to start (bind, wasm).
const EXIT_START_FAILED: u8 = 2;

/// wasmesh: a service-mesh data plane that runs proxy-wasm filters.
#[derive(Parser)]
#[command(name = "wasmesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    /// Log level (an env-filter directive such as `info` or `wasmesh=debug`).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads (default: the config's `workers`, else one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Directory for the compiled-module cache.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Check a configuration file the way a start or reload would; exit 1 on any error.
    Validate {
        /// The configuration file.
        config: PathBuf,
    },
    /// Run the demo: two backend versions on loopback behind the proxy.
    Demo {
        /// Worker threads.
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Print the configuration's JSON Schema.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&config::json_schema()).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Run { config, workers, cache_dir } => {
            let cfg = match config::load_file(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            let base_dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
            exit(run(cfg, StartOptions { workers, base_dir, cache_dir, config_path: Some(config) }, None))
        }
        Command::Demo { workers } => {
            let cfg = match config::parse_str(DEMO_CONFIG) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("built-in demo config: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            let opts = StartOptions { workers, base_dir: PathBuf::from("."), cache_dir: None, config_path: None };
            exit(run(cfg, opts, Some(demo_banner)))
        }
    }
}

/// The demo configuration, embedded so `wasmesh demo` works from any directory.
const DEMO_CONFIG: &str = include_str!("../../config/demo.yaml");

/// Checks what a start or reload would: the file, then every cluster and filter built
/// (modules compiled, `on_vm_start` and `on_configure` run).
fn validate(path: &Path) -> ExitCode {
    let cfg = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    match wasmesh::server::check_config(cfg, &base_dir) {
        Ok(()) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

/// Starts the proxy (and the demo backends when `banner` is given) and runs until
/// SIGTERM/SIGINT, then drains.
fn run(cfg: config::Config, opts: StartOptions, banner: Option<fn(&Proxy)>) -> anyhow::Result<()> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the signal runtime")?;
    let demo_backends = banner.is_some().then(|| demo_endpoints(&cfg));
    // Handlers first: a SIGTERM right after start must drain, not kill.
    let signals = {
        let _in_runtime = rt.enter();
        Signals::install()?
    };
    let proxy = Proxy::start(cfg, opts).context("starting the proxy")?;
    rt.block_on(async {
        if let Some(backends) = demo_backends {
            for (addr, service, version) in backends {
                tokio::spawn(async move {
                    if let Err(e) = wasmesh::demo::backend(addr, service, version).await {
                        tracing::error!(%addr, error = %e, "demo backend failed");
                    }
                });
            }
        }
        if let Some(banner) = banner {
            banner(&proxy);
        }
        signals.wait_for_shutdown(&proxy).await
    })?;
    tracing::info!("signal received: draining");
    proxy.shutdown();
    Ok(())
}

/// The demo backends to start: every endpoint of every cluster in the demo config.
fn demo_endpoints(cfg: &config::Config) -> Vec<(std::net::SocketAddr, String, String)> {
    cfg.clusters
        .iter()
        .flat_map(|c| {
            c.endpoints.iter().filter_map(|e| {
                let addr = e.address.parse().ok()?;
                let version = e.labels.get("version").cloned().unwrap_or_else(|| "v1".into());
                Some((addr, c.name.clone(), version))
            })
        })
        .collect()
}

fn demo_banner(proxy: &Proxy) {
    let l = proxy.listener_addr("demo").map(|a| a.to_string()).unwrap_or_default();
    let admin = proxy.admin_addr();
    println!(
        "\nwasmesh demo is running: the router filter splits demo-app 90/10 between v1 and v2,\n\
         the telemetry filter records Istio metrics and an access-log line per request.\n\n  \
         proxy:  http://{l}\n  admin:  http://{admin}\n\nTry:\n  \
         for i in $(seq 20); do curl -s http://{l}/hello | grep '\"version\"'; done   # mostly v1, some v2\n  \
         curl -s -H 'x-user: tester' http://{l}/hello        # header-based route: always v2\n  \
         curl -s --http2-prior-knowledge http://{l}/h2        # HTTP/2 downstream\n  \
         curl -s -i http://{l}/status/503                     # the backend's own 503 passes through\n  \
         curl -s http://{admin}/metrics | grep istio_requests_total\n  \
         curl -s http://{admin}/clusters\n\nCtrl-C drains and stops.\n"
    );
}

/// The signals the proxy handles: SIGTERM/SIGINT drain and stop, SIGHUP reloads.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a runtime context).
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
        })
    }

    /// Waits for SIGTERM/SIGINT; SIGHUP reloads the config file meanwhile.
    async fn wait_for_shutdown(mut self, proxy: &Proxy) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Ok(()),
                _ = self.int.recv() => return Ok(()),
                _ = self.hup.recv() => {
                    let shared = proxy.shared().clone();
                    let outcome = tokio::task::spawn_blocking(move || shared.reload()).await;
                    tracing::info!(?outcome, "SIGHUP reload");
                }
            }
        }
    }
}
