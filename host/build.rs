//! Builds the built-in filters (`filters/`, wasm32-wasip1) and embeds them in the binary
//! as `builtin:<name>`. Set `WASMESH_SKIP_BUILTINS=1` to embed none (e.g. for docs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in filters: (name in config, crate directory, wasm file stem).
const FILTERS: &[(&str, &str, &str)] = &[
    ("router", "router", "router"),
    ("retry", "retry", "retry"),
    ("fault", "fault", "fault"),
    ("circuit-breaker", "circuit-breaker", "circuit_breaker"),
    ("authn", "authn", "authn"),
    ("authz", "authz", "authz"),
    ("telemetry", "telemetry", "telemetry"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("host/ lives in the workspace root").to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=WASMESH_SKIP_BUILTINS");
    println!("cargo:rerun-if-changed={}", root.join("filters").display());
    println!("cargo:rerun-if-changed={}", root.join("sdk/src").display());
    println!("cargo:rerun-if-changed={}", root.join("sdk/Cargo.toml").display());

    let mut entries = String::from("&[\n");
    if std::env::var_os("WASMESH_SKIP_BUILTINS").is_none() {
        let target_dir = root.join("target/filters");
        // A failed filter build must not stop the host from building (someone may be
        // mid-edit on one filter): embed what exists and say so loudly. `cargo xtask
        // filters`/`test` build the filters first and fail hard.
        if let Err(e) = build_filters(&root, &target_dir) {
            println!("cargo:warning={e}; embedding the previously built filters that exist");
        }
        for (name, _, stem) in FILTERS {
            let wasm = target_dir.join("wasm32-wasip1/release").join(format!("{stem}.wasm"));
            if wasm.exists() {
                entries.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", wasm.display().to_string()));
            } else {
                println!("cargo:warning=built-in filter {name} is missing ({})", wasm.display());
            }
        }
    }
    entries.push(']');
    std::fs::write(out.join("builtins.rs"), entries).expect("write builtins.rs");
}

/// Runs a nested cargo on the filters workspace with its own target dir (no lock shared
/// with the outer build) and an environment cleaned of the outer build's settings.
fn build_filters(root: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip1", "--target-dir"])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(root.join("filters/Cargo.toml"))
        .current_dir(root);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_") && k != "CARGO_HOME"
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo to build the built-in filters: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the built-in filters failed ({status}); is the wasm32-wasip1 target installed? (`rustup target add wasm32-wasip1`)"
        ))
    }
}
