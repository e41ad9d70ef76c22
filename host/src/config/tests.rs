//! Unit tests of loading, line indexing, validation and the JSON Schema.

use std::path::PathBuf;

use super::*;

/// Every error `text` produces, as the user sees it (`path: message (line N)`).
fn errs(text: &str) -> Vec<String> {
    match parse_str(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// The single error of `text`.
fn err(text: &str) -> String {
    let all = errs(text);
    assert_eq!(all.len(), 1, "expected exactly one error, got {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

/// A valid config: one listener, one cluster with two labelled endpoints.
const BASE: &str = "\
listeners:
  - name: main
    address: 127.0.0.1:8080
    default_cluster: web
clusters:
  - name: web
    endpoints:
      - address: 127.0.0.1:9001
        labels: { version: v1 }
      - address: 127.0.0.1:9002
        labels: { version: v2 }
";

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

// === line index ===

#[test]
fn line_index_maps_keys_items_and_flow_entries() {
    let text = "\
admin:
  address: 127.0.0.1:9901
node:
  metadata:
    app: web
listeners:
  - name: a
    address: 127.0.0.1:1
    filters:
      - name: f
        module: builtin:x
      - { name: g, module: y.wasm }
clusters:
  - name: c
    endpoints: [ { address: \"h:1\" },
                 { address: \"h:2\" } ]
";
    let idx = LineIndex::build(text);
    let cases = [
        ("admin", 1),
        ("admin.address", 2),
        ("node.metadata.app", 5),
        ("listeners", 6),
        ("listeners[0]", 7),
        ("listeners[0].name", 7),
        ("listeners[0].address", 8),
        ("listeners[0].filters[0].module", 11),
        ("listeners[0].filters[1]", 12),
        ("listeners[0].filters[1].module", 12),
        ("clusters[0].endpoints[0].address", 15),
        ("clusters[0].endpoints[1].address", 16),
    ];
    for (path, line) in cases {
        assert_eq!(idx.line_of(path), Some(line), "{path}");
    }
}

#[test]
fn line_index_falls_back_to_the_nearest_ancestor() {
    let idx = LineIndex::build(BASE);
    // Defaults are not in the text: their nearest written ancestor answers.
    assert_eq!(idx.line_of("listeners[0].http.max_headers_count"), Some(2));
    assert_eq!(idx.line_of("clusters[0].endpoints[1].weight"), Some(10));
    assert_eq!(idx.line_of("clusters[0].subsets[3].labels"), Some(6));
    assert_eq!(idx.line_of("admin.address"), None);
    assert_eq!(idx.line_of(""), None);
}

#[test]
fn line_index_keeps_what_precedes_a_yaml_error() {
    let idx = LineIndex::build("workers: 2\nlisteners: [\n  { name: a\n");
    assert_eq!(idx.line_of("workers"), Some(1));
    assert_eq!(idx.line_of("listeners"), Some(2));
    assert!(LineIndex::build("").is_empty());
}

#[test]
fn line_index_uses_the_paths_serde_path_to_error_prints() {
    // A wrong type deep in the file: serde_path_to_error names the path; the index
    // must know that exact string.
    let text = BASE.to_string() + "    subsets:\n      - name: s\n        labels: { version: [1] }\n";
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let path = match serde_path_to_error::deserialize::<_, Config>(de) {
        Ok(_) => String::new(),
        Err(e) => e.path().to_string(),
    };
    assert_eq!(path, "clusters[0].subsets[0].labels.version");
    assert_eq!(LineIndex::build(&text).line_of(&path), Some(14));
}

// === serde errors: path, value, line ===

#[test]
fn unknown_field_lists_the_expected_fields() {
    let text = BASE.replace("    default_cluster: web\n", "    default_clustr: web\n");
    assert_eq!(
        err(&text),
        "listeners[0].default_clustr: unknown field `default_clustr`, expected one of `name`, \
         `address`, `direction`, `protocol`, `default_cluster`, `http`, `tls`, `filters` (line 4)"
    );
}

#[test]
fn wrong_type_names_the_value_and_the_type() {
    let text =
        BASE.replace("        labels: { version: v2 }\n", "        labels: { version: v2 }\n        weight: heavy\n");
    assert_eq!(err(&text), "clusters[0].endpoints[1].weight: invalid type: string \"heavy\", expected u32 (line 12)");
}

#[test]
fn bad_enum_variant_lists_the_variants() {
    let text = BASE.replace("    default_cluster: web\n", "    direction: sideways\n");
    assert_eq!(
        err(&text),
        "listeners[0].direction: unknown variant `sideways`, expected `inbound` or `outbound` (line 4)"
    );
}

#[test]
fn bad_duration_names_the_value() {
    let text = BASE.replace("  - name: web\n", "  - name: web\n    connect_timeout: 2 parsecs\n");
    let e = err(&text);
    assert!(e.starts_with("clusters[0].connect_timeout: invalid duration \"2 parsecs\": "), "{e}");
    assert!(e.ends_with(" (line 7)"), "{e}");
}

#[test]
fn missing_field_names_the_struct_and_line() {
    let text = BASE.replace("    address: 127.0.0.1:8080\n", "");
    assert_eq!(err(&text), "listeners[0]: missing field `address` (line 2)");
}

#[test]
fn yaml_syntax_error_has_a_line_and_keeps_its_context() {
    assert_eq!(
        err("workers: 2\nlisteners: [\n  { name: a\n"),
        "listeners[0].?: did not find expected ',' or '}', while parsing a flow mapping at \
         line 3 column 3 (line 4)"
    );
}

#[test]
fn duplicate_key_points_at_the_second_one() {
    let text = format!("{BASE}workers: 1\nworkers: 2\n");
    assert_eq!(err(&text), "workers: duplicate field `workers` (line 13)");
    let text = BASE.replace("    default_cluster: web\n", "    default_cluster: web\n    name: again\n");
    assert_eq!(err(&text), "listeners[0].name: duplicate field `name` (line 5)");
}

#[test]
fn hash_key_is_written_as_a_one_entry_map() {
    let text = BASE
        .replace("  - name: web\n", "  - name: web\n    lb: consistent_hash\n    hash: { key: { header: x-user } }\n");
    let config = parse_str(&text).map_err(|e| e.to_string());
    let key = config.map(|c| c.clusters[0].hash.key.clone());
    assert_eq!(key, Ok(HashKey::Header("x-user".into())));
    // And it serializes back to the same form.
    let yaml = serde_yaml_ng::to_string(&HashSettings::default()).unwrap_or_default();
    assert!(yaml.contains("key: source_ip"), "{yaml}");
    let h = HashSettings { key: HashKey::Cookie("sid".into()), ..HashSettings::default() };
    let yaml = serde_yaml_ng::to_string(&h).unwrap_or_default();
    assert!(yaml.contains("key:\n  cookie: sid"), "{yaml}");
}

// === validation: one test per class ===

#[test]
fn valid_base_config_has_no_errors() {
    assert_eq!(errs(BASE), Vec::<String>::new());
}

#[test]
fn duplicate_listener_name() {
    let text = BASE.replace("clusters:\n", "  - name: main\n    address: 127.0.0.1:8081\nclusters:\n");
    assert_eq!(
        err(&text),
        "listeners[1].name: duplicate listener name \"main\" (already used by listeners[0]) (line 5)"
    );
}

#[test]
fn duplicate_cluster_name() {
    let text = format!("{BASE}  - name: web\n    endpoints: [ {{ address: \"10.0.0.1:80\" }} ]\n");
    assert_eq!(err(&text), "clusters[1].name: duplicate cluster name \"web\" (already used by clusters[0]) (line 12)");
}

#[test]
fn duplicate_filter_in_chain() {
    let text = BASE.replace(
        "    default_cluster: web\n",
        "    default_cluster: web\n    filters:\n      - { name: a, module: builtin:x }\n      - { name: a, module: builtin:y }\n",
    );
    assert_eq!(
        err(&text),
        "listeners[0].filters[1].name: duplicate filter name \"a\" in the chain of listener \
         \"main\" (already used by listeners[0].filters[0]) (line 7)"
    );
}

#[test]
fn duplicate_subset_name() {
    let text = format!(
        "{BASE}    subsets:\n      - {{ name: s, labels: {{ version: v1 }} }}\n      - {{ name: s, labels: {{ version: v2 }} }}\n"
    );
    assert_eq!(
        err(&text),
        "clusters[0].subsets[1].name: duplicate subset name \"s\" in cluster \"web\" (already \
         used by clusters[0].subsets[0]) (line 14)"
    );
}

#[test]
fn listener_address_must_be_ip_and_port() {
    for bad in ["localhost:8080", "127.0.0.1", "127.0.0.1:70000", ":80"] {
        let text = BASE.replace("127.0.0.1:8080", &format!("\"{bad}\""));
        assert_eq!(
            err(&text),
            format!(
                "listeners[0].address: invalid socket address \"{bad}\" (expected IP:port such \
                 as 0.0.0.0:8080 or [::1]:8080) (line 3)"
            )
        );
    }
    let ok = BASE.replace("127.0.0.1:8080", "\"[::1]:8080\"");
    assert_eq!(errs(&ok), Vec::<String>::new());
}

#[test]
fn listeners_clash_on_the_same_port() {
    let text = BASE.replace("clusters:\n", "  - name: other\n    address: 0.0.0.0:8080\nclusters:\n");
    assert_eq!(
        err(&text),
        "listeners[1].address: address \"0.0.0.0:8080\" clashes with listener \"main\" \
         (listeners[0].address) on port 8080 (expected a distinct address:port) (line 6)"
    );
    // Different IPs (neither a wildcard) and port 0 do not clash.
    let apart = BASE.replace(
        "clusters:\n",
        "  - name: b\n    address: 127.0.0.2:8080\n  - name: c\n    address: 127.0.0.1:0\n  - name: d\n    address: 127.0.0.1:0\nclusters:\n",
    );
    assert_eq!(errs(&apart), Vec::<String>::new());
}

#[test]
fn listener_clashes_with_admin() {
    let text = format!("admin:\n  address: 127.0.0.1:8080\n{BASE}");
    assert_eq!(
        err(&text),
        "listeners[0].address: address \"127.0.0.1:8080\" clashes with the admin endpoint \
         (admin.address) on port 8080 (expected a distinct address:port) (line 5)"
    );
}

#[test]
fn admin_address_must_be_valid() {
    let text = format!("admin:\n  address: admin.local:9901\n{BASE}");
    assert_eq!(
        err(&text),
        "admin.address: invalid socket address \"admin.local:9901\" (expected IP:port such as \
         0.0.0.0:8080 or [::1]:8080) (line 2)"
    );
}

#[test]
fn default_cluster_must_exist() {
    let text = BASE.replace("default_cluster: web", "default_cluster: wbe");
    assert_eq!(err(&text), "listeners[0].default_cluster: unknown cluster \"wbe\" (expected one of: \"web\") (line 4)");
}

#[test]
fn cluster_needs_endpoints() {
    let text = "clusters:\n  - name: empty\n    endpoints: []\n";
    assert_eq!(err(text), "clusters[0].endpoints: cluster \"empty\" has no endpoints (expected at least one) (line 3)");
}

#[test]
fn endpoint_address_shapes() {
    let suffix = " (expected ip:port or hostname:port) (line 8)";
    let cases = [
        ("10.0.0.1:99999", "port 99999 is out of range 1..=65535"),
        ("10.0.0.1:0", "port 0 is out of range 1..=65535"),
        ("10.0.0.1", "no port"),
        ("web.local", "no port"),
        ("web.local:http", "port \"http\" is not a number"),
        ("-web.local:80", "\"-web.local\" is neither an IP address nor a valid hostname"),
        ("web_1:80", "\"web_1\" is neither an IP address nor a valid hostname"),
        ("10.0.0.999:80", "\"10.0.0.999\" is neither an IP address nor a valid hostname"),
        ("::1:80", "an IPv6 address needs brackets, e.g. [::1]:8080"),
        ("[fe80::zz]:80", "\"fe80::zz\" is not an IPv6 address"),
    ];
    for (addr, why) in cases {
        let text = BASE.replace("127.0.0.1:9001", &format!("\"{addr}\""));
        assert_eq!(
            err(&text),
            format!("clusters[0].endpoints[0].address: invalid socket address \"{addr}\": {why}{suffix}")
        );
    }
    for good in ["web.default.svc.cluster.local:8080", "[::1]:80", "db-1:5432", "example.com.:443"] {
        let text = BASE.replace("127.0.0.1:9001", &format!("\"{good}\""));
        assert_eq!(errs(&text), Vec::<String>::new(), "{good}");
    }
}

#[test]
fn endpoint_weight_at_least_one() {
    let text =
        BASE.replace("        labels: { version: v1 }\n", "        labels: { version: v1 }\n        weight: 0\n");
    assert_eq!(err(&text), "clusters[0].endpoints[0].weight: 0 is too small (expected at least 1) (line 10)");
}

#[test]
fn subset_needs_labels_and_a_match() {
    let text = format!(
        "{BASE}    subsets:\n      - name: none\n        labels: {{}}\n      - name: v3\n        labels: {{ version: v3, zone: a }}\n"
    );
    assert_eq!(
        errs(&text),
        vec![
            "clusters[0].subsets[0].labels: subset \"none\" has no labels (expected at least one \
             label to select endpoints) (line 14)"
                .to_string(),
            "clusters[0].subsets[1].labels: subset \"v3\" selects no endpoint of cluster \"web\" \
             (labels version=v3, zone=a) (line 16)"
                .to_string(),
        ]
    );
}

#[test]
fn filter_module_and_name() {
    let text = BASE.replace(
        "    default_cluster: web\n",
        "    default_cluster: web\n    filters:\n      - { name: \"\", module: builtin:ok }\n      - { name: b, module: \"builtin:\" }\n      - { name: c, module: \" \" }\n      - { name: d, module: filters/d.wasm }\n",
    );
    assert_eq!(
        errs(&text),
        vec![
            "listeners[0].filters[0].name: empty filter name (expected a non-empty name) (line 6)",
            "listeners[0].filters[1].module: invalid built-in module \"builtin:\" (expected \
             builtin:<name>, name of letters, digits, '-' or '_') (line 7)",
            "listeners[0].filters[2].module: empty module (expected builtin:<name> or a path to a \
             .wasm file) (line 8)",
        ]
    );
}

#[test]
fn filter_limits() {
    let text = BASE.replace(
        "    default_cluster: web\n",
        "    default_cluster: web\n    filters:\n      - name: f\n        module: builtin:f\n        limits:\n          memory_mb: 5000\n          callback_deadline: 0ms\n",
    );
    assert_eq!(
        errs(&text),
        vec![
            "listeners[0].filters[0].limits.memory_mb: 5000 is out of range (expected 1..=4096) (line 9)",
            "listeners[0].filters[0].limits.callback_deadline: 0ms leaves no time for any callback \
             (expected a duration > 0) (line 10)",
        ]
    );
}

#[test]
fn cluster_timeouts() {
    let text = BASE.replace("  - name: web\n", "  - name: web\n    connect_timeout: 0s\n    dns_refresh: 0\n");
    assert_eq!(
        errs(&text),
        vec![
            "clusters[0].connect_timeout: 0ms leaves no time to connect (expected a duration > 0) (line 7)",
            "clusters[0].dns_refresh: 0ms would re-resolve without pause (expected a duration > 0) (line 8)",
        ]
    );
}

#[test]
fn hash_table_size() {
    let text = BASE.replace(
        "  - name: web\n",
        "  - name: web\n    lb: consistent_hash\n    hash:\n      algorithm: maglev\n      table_size: 1\n",
    );
    assert_eq!(
        err(&text),
        "clusters[0].hash.table_size: maglev table size 1 is smaller than the 2 endpoints \
         (expected at least 2) (line 10)"
    );
    let text = BASE.replace("  - name: web\n", "  - name: web\n    hash: { table_size: 70000 }\n");
    assert_eq!(err(&text), "clusters[0].hash.table_size: 70000 is out of range (expected 1..=65536) (line 7)");
    let text = BASE.replace("  - name: web\n", "  - name: web\n    hash: { key: { cookie: \"\" } }\n");
    assert_eq!(err(&text), "clusters[0].hash.key.cookie: empty cookie name (expected a non-empty name) (line 7)");
}

#[test]
fn http_settings() {
    let text = BASE.replace(
        "    default_cluster: web\n",
        "    default_cluster: web\n    http:\n      max_headers_count: 0\n      max_request_headers_kb: 9000\n      initial_stream_window_size: 1000\n      initial_connection_window_size: 2147483648\n      max_concurrent_streams: 0\n      request_headers_timeout: 0s\n",
    );
    assert_eq!(
        errs(&text),
        vec![
            "listeners[0].http.max_headers_count: 0 is too small (expected at least 1) (line 6)",
            "listeners[0].http.max_request_headers_kb: 9000 is out of range (expected 1..=8192) (line 7)",
            "listeners[0].http.initial_stream_window_size: 1000 is out of range (expected 65535..=2147483647) (line 8)",
            "listeners[0].http.initial_connection_window_size: 2147483648 is out of range (expected 65535..=2147483647) (line 9)",
            "listeners[0].http.max_concurrent_streams: 0 is too small (expected at least 1) (line 10)",
            "listeners[0].http.request_headers_timeout: 0ms times out every request head at once (expected a duration > 0) (line 11)",
        ]
    );
}

#[test]
fn mutual_tls_requires_client_ca() {
    let text = BASE.replace(
        "    default_cluster: web\n",
        "    default_cluster: web\n    tls:\n      cert: c.pem\n      key: k.pem\n      mode: mutual\n",
    );
    assert_eq!(
        err(&text),
        "listeners[0].tls.mode: mode \"mutual\" requires client_ca (a PEM bundle to verify client \
         certificates) (line 8)"
    );
    let ok = text.replace("      mode: mutual\n", "      mode: mutual\n      client_ca: ca.pem\n");
    assert_eq!(errs(&ok), Vec::<String>::new());
}

#[test]
fn empty_names_rejected() {
    let text = "\
listeners:
  - name: \"\"
    address: 127.0.0.1:1
    default_cluster: \"\"
    tls: { cert: \"\", key: k.pem }
clusters:
  - name: \" \"
    endpoints: [ { address: \"a:1\" } ]
";
    assert_eq!(
        errs(text),
        vec![
            "listeners[0].name: empty listener name (expected a non-empty name) (line 2)",
            "listeners[0].default_cluster: empty cluster name (expected a non-empty name) (line 4)",
            "listeners[0].tls.cert: empty certificate path (expected a non-empty name) (line 5)",
            "clusters[0].name: empty cluster name (expected a non-empty name) (line 7)",
        ]
    );
}

#[test]
fn workers_at_most_1024() {
    let text = format!("workers: 2000\n{BASE}");
    assert_eq!(
        err(&text),
        "workers: 2000 worker threads is too many (expected 0 for one per core, or at most 1024) (line 1)"
    );
}

#[test]
fn every_error_is_reported_at_once_in_file_order() {
    let text = "\
workers: 5000
admin:
  address: nowhere
listeners:
  - name: a
    address: 127.0.0.1:80
    default_cluster: missing
  - name: a
    address: 127.0.0.1:80
clusters:
  - name: c
    endpoints:
      - address: 10.0.0.1:99999
        weight: 0
    subsets:
      - { name: s, labels: { v: x } }
";
    let e = parse_str(text).err().map(|e| e.errors).unwrap_or_default();
    let got: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.path.as_str(), e.line)).collect();
    assert_eq!(
        got,
        vec![
            ("workers", Some(1)),
            ("admin.address", Some(3)),
            ("listeners[0].default_cluster", Some(7)),
            ("listeners[1].name", Some(8)),
            ("listeners[1].address", Some(9)),
            ("clusters[0].endpoints[0].address", Some(13)),
            ("clusters[0].endpoints[0].weight", Some(14)),
            ("clusters[0].subsets[0].labels", Some(16)),
        ]
    );
    let shown = parse_str(text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(shown.starts_with("8 configuration error(s)\n  workers: "), "{shown}");
}

// === shipped files ===

#[test]
fn reference_and_demo_configs_are_valid() {
    for name in ["reference.yaml", "demo.yaml"] {
        let path = config_dir().join(name);
        if let Err(e) = load_file(&path) {
            panic!("{e}");
        }
    }
}

#[test]
fn reference_config_spells_out_the_defaults() {
    // Every value in reference.yaml is the default: parsing it equals parsing a config
    // that names only the required fields.
    let reference = load_file(&config_dir().join("reference.yaml")).map_err(|e| e.to_string());
    let minimal = parse_str(
        "listeners: [ { name: main, address: \"0.0.0.0:8080\", default_cluster: web } ]\n\
         clusters:\n  - name: web\n    endpoints:\n\
         \x20     - { address: \"127.0.0.1:9001\", labels: { version: v1 } }\n\
         \x20     - { address: \"127.0.0.1:9002\", labels: { version: v2 } }\n\
         \x20   subsets: [ { name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } } ]\n",
    )
    .map_err(|e| e.to_string());
    let as_json = |c: Result<Config, String>| c.and_then(|c| serde_json::to_value(c).map_err(|e| e.to_string()));
    assert_eq!(as_json(reference), as_json(minimal));
}

#[test]
fn demo_config_is_the_documented_demo() {
    let c = match load_file(&config_dir().join("demo.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.admin.address, "127.0.0.1:9901");
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!((l.name.as_str(), l.address.as_str()), ("demo", "127.0.0.1:8080"));
    assert_eq!(l.direction, Direction::Inbound);
    assert_eq!(l.default_cluster.as_deref(), Some("demo-app"));
    let cl = &c.clusters[0];
    assert_eq!(cl.lb, LbPolicy::RoundRobin);
    let eps: Vec<(&str, Option<&str>)> =
        cl.endpoints.iter().map(|e| (e.address.as_str(), e.labels.get("version").map(String::as_str))).collect();
    assert_eq!(eps, vec![("127.0.0.1:9081", Some("v1")), ("127.0.0.1:9082", Some("v2"))]);
    let subsets: Vec<&str> = cl.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subsets, vec!["v1", "v2"]);
}

// === JSON Schema ===

/// Fails when `config/schema.json` differs from `json_schema()`. To refresh it, run
/// `WASMESH_BLESS=1 cargo test -p wasmesh --lib config::tests::schema_json_is_current`.
#[test]
fn schema_json_is_current() {
    let path = config_dir().join("schema.json");
    let generated = json_schema();
    if std::env::var_os("WASMESH_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(&path, text) {
            panic!("cannot write {}: {e}", path.display());
        }
    }
    let on_disk: serde_json::Value =
        std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is stale: run WASMESH_BLESS=1 cargo test -p wasmesh --lib config::tests::schema_json_is_current",
        path.display()
    );
}

#[test]
fn schema_describes_fields_defaults_and_unknown_field_rejection() {
    let s = json_schema();
    assert_eq!(s["title"], "wasmesh configuration");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["properties"]["drain_timeout"]["default"], "15s");
    let listener = &s["$defs"]["Listener"];
    assert_eq!(listener["additionalProperties"], false);
    let required = listener["required"].as_array().cloned().unwrap_or_default();
    assert!(required.contains(&"address".into()), "{listener}");
    let desc = listener["properties"]["address"]["description"].as_str().unwrap_or_default();
    assert!(desc.contains("Socket address to bind"), "{desc}");
}
