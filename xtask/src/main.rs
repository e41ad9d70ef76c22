//! `cargo xtask <task>`: the project's set-up and test entry points.
//!
//! - `cargo xtask demo`  — build and run the demo (proxy + two backend versions).
//! - `cargo xtask test`  — everything CI checks: fmt, clippy, filters, tests, bench smoke.
//! - `cargo xtask bench` — the benchmark table (`--smoke` for a few-second check).
//! - `cargo xtask filters` — build the Wasm filters only.
//! - `cargo xtask certs <dir>` — the zero-trust example's CA, SPIFFE certificates and JWT key.

mod bench;
mod certs;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The wasm target every filter is built for.
const WASM_TARGET: &str = "wasm32-wasip1";

/// Cargo workspaces of Wasm filters, relative to the repo root (built in this order).
const WASM_WORKSPACES: &[&str] = &["filters", "tests/filters", "examples"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root()?;
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(),
        Some("filters") => build_filters(),
        Some("bench") => bench::run(&args[1..]),
        Some("certs") => certs::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|filters|bench [--smoke]|certs <dir>>");
            bail!("unknown task")
        }
    }
}

fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

/// Runs a command, failing with its command line when it does not succeed.
fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", describe(cmd));
    let status = cmd.status().with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Installs the wasm target if rustup lacks it.
fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        Err(e) => bail!("rustup is needed to install the {WASM_TARGET} target: {e}"),
    }
}

/// Filters written with non-Rust SDKs: (directory, npm build script output).
const NPM_FILTERS: &[&str] = &["examples/assemblyscript-add-header"];

/// Builds every Wasm filter workspace (release, wasm32-wasip1) into `target/filters`,
/// and the AssemblyScript example with npm.
fn build_filters() -> Result<()> {
    ensure_wasm_target()?;
    for ws in WASM_WORKSPACES {
        let manifest = Path::new(ws).join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        run(cargo()
            .args(["build", "--release", "--target", WASM_TARGET, "--target-dir", "target/filters", "--manifest-path"])
            .arg(&manifest))?;
    }
    std::fs::create_dir_all("target/filters/assemblyscript")?;
    for dir in NPM_FILTERS {
        if !Path::new(dir).join("node_modules").exists() {
            run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir))?;
        }
        run(Command::new("npm").args(["run", "--silent", "build"]).current_dir(dir))?;
    }
    Ok(())
}

fn clippy_filters() -> Result<()> {
    for ws in WASM_WORKSPACES {
        let manifest = Path::new(ws).join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        run(cargo()
            .args(["clippy", "--release", "--target", WASM_TARGET, "--target-dir", "target/filters", "--manifest-path"])
            .arg(&manifest)
            .args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}

fn demo(extra: &[String]) -> Result<()> {
    build_filters()?;
    run(cargo().args(["run", "-p", "wasmesh", "--", "demo"]).args(extra))
}

fn test() -> Result<()> {
    build_filters()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    for ws in WASM_WORKSPACES {
        let manifest = Path::new(ws).join("Cargo.toml");
        if manifest.exists() {
            run(cargo().args(["fmt", "--all", "--manifest-path"]).arg(&manifest).args(["--", "--check"]))?;
        }
    }
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    clippy_filters()?;
    // The filters' policy and config logic is plain Rust: its unit tests run natively.
    run(cargo().args([
        "test",
        "--target-dir",
        "target/filters-native",
        "--manifest-path",
        "filters/Cargo.toml",
        "--workspace",
    ]))?;
    run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    bench::run(&["--smoke".to_string()])
}
