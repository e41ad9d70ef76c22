//! `cargo xtask bench`: placeholder until the bench harness lands.

/// Runs the benchmark harness.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the bench harness is not written yet")
}
