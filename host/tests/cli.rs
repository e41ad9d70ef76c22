//! The `wasmesh` binary as a user runs it: validate exit codes, run + SIGTERM drain.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wasmesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmesh"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmesh-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn validate_accepts_the_shipped_configs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in ["config/reference.yaml", "config/demo.yaml", "examples/configs/istio-tasks.yaml"] {
        let out = wasmesh().arg("validate").arg(root.join(f)).output().expect("run");
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn validate_names_field_and_line_and_exits_1() {
    let path = write_config(
        "bad",
        "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    default_cluster: nope\nclusters:\n  - name: web\n    endpoints:\n      - address: \"10.0.0.1:99999\"\n",
    );
    let out = wasmesh().arg("validate").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners[0].default_cluster"), "{err}");
    assert!(err.contains("\"nope\""), "{err}");
    assert!(err.contains("(line 4)"), "{err}");
    assert!(err.contains("clusters[0].endpoints[0].address"), "{err}");
    assert!(err.contains("10.0.0.1:99999"), "{err}");
    assert!(err.contains("(line 8)"), "{err}");
}

#[test]
fn validate_reports_unknown_fields_with_line() {
    let path = write_config("unknown", "admin:\n  address: 127.0.0.1:9901\n  colour: blue\n");
    let out = wasmesh().arg("validate").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("colour"), "{err}");
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn run_refuses_a_bad_config_and_drains_on_sigterm() {
    let bad = write_config("run-bad", "listeners: 5\n");
    let out = wasmesh().args(["run", "--config"]).arg(&bad).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let good = write_config(
        "run-good",
        "admin: { address: \"127.0.0.1:0\" }\nlisteners:\n  - name: main\n    address: \"127.0.0.1:0\"\nclusters: []\n",
    );
    let mut child = wasmesh()
        .args(["run", "--workers", "1", "--log-format", "json", "--config"])
        .arg(&good)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    let mut saw_start = false;
    while started.elapsed() < Duration::from_secs(30) {
        match lines.next() {
            Some(Ok(line)) if line.contains("wasmesh started") => {
                saw_start = true;
                break;
            }
            Some(Ok(_)) => continue,
            _ => break,
        }
    }
    assert!(saw_start, "no start line");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn validate_runs_the_filters_configure() {
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/filters/wasm32-wasip1/release/header_rewrite.wasm");
    assert!(module.exists(), "run `cargo xtask filters` first");
    let yaml = |cfg: &str| {
        format!(
            "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    filters:\n      - name: rw\n        module: \"{}\"\n        config: {cfg}\n",
            module.display()
        )
    };
    let good = write_config("filter-good", &yaml("{ request_set: { x-a: b } }"));
    let out = wasmesh().arg("validate").arg(&good).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = write_config("filter-bad", &yaml("{ no_such_field: 1 }"));
    let out = wasmesh().arg("validate").arg(&bad).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners[0].filters[0] \"rw\""), "{err}");
    // The filter's own explanation (its last error log line) is part of the message.
    assert!(err.contains("no_such_field"), "{err}");
}
