//! `cargo xtask bench [--smoke] [options]`: runs the benchmark harness `bench/bench.py`
//! (python3, stdlib only), which installs its tools, starts the upstream and the proxies,
//! drives the load and writes `bench/RESULTS.md` plus raw JSON in `bench/out/`.
//! `--help` lists the options; `bench/README.md` explains the method and the figures.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `python3 bench/bench.py <args>` from the repo root; fails when the harness fails
/// (a flagged run: non-2xx, socket errors, a proxy that died or did not start).
pub fn run(args: &[String]) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .context("xtask has no parent directory")?;
    let script = root.join("bench").join("bench.py");
    if !script.exists() {
        bail!("{} is missing", script.display());
    }
    let status = Command::new("python3")
        .arg(&script)
        .args(args)
        .current_dir(&root)
        .status()
        .context("cannot run python3 (the bench harness needs python3 >= 3.9)")?;
    if !status.success() {
        bail!("bench/bench.py {} failed with {status}", args.join(" "));
    }
    Ok(())
}
