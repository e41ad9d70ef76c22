//! Istio's standard metric labels, in Istio's emitted order, with `unknown` for what is
//! not known (as Kiali expects). The local side comes from the node metadata, the remote
//! side from metadata exchange or the plugin's `peer:` defaults; which side is which
//! follows the reporter. The labels only a request knows are the host's facts.

/// Label names in Istio's order (`istio/proxy testdata/metric/*_request_total.yaml.tmpl`).
pub const LABEL_NAMES: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Istio's value for anything not known.
pub const UNKNOWN: &str = "unknown";

/// Who reports: the client side (`source`), the server side (`destination`) or an ambient
/// waypoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// Outbound listener: the local workload is the client.
    Source,
    /// Inbound listener: the local workload is the server.
    Destination,
    /// Ambient waypoint (labelled like `destination`, reported as `waypoint`).
    Waypoint,
}

/// One side of a request: a workload's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Workload name (`WORKLOAD_NAME`).
    pub name: Option<String>,
    /// Namespace (`NAMESPACE`).
    pub namespace: Option<String>,
    /// SPIFFE principal.
    pub principal: Option<String>,
    /// `app` label.
    pub app: Option<String>,
    /// `version` label.
    pub version: Option<String>,
    /// Cluster id (`CLUSTER_ID`).
    pub cluster: Option<String>,
    /// `service.istio.io/canonical-name` (falls back to `app`, then the workload name).
    pub canonical_service: Option<String>,
    /// `service.istio.io/canonical-revision` (falls back to `version`, then `latest`).
    pub canonical_revision: Option<String>,
}

/// Where a label's value comes from: the same for every request of the filter, or a
/// fact of the request that the host fills in (`wasmesh.define_request_metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelValue {
    /// Fixed.
    Literal(String),
    /// The host's fact of this name, else `default`.
    Fact {
        /// The host's fact name (`response_code`, `peer_principal`, …).
        fact: &'static str,
        /// The value when the request does not have the fact.
        default: String,
    },
}

// === impl Reporter ===

impl Reporter {
    /// Parses the config value.
    pub fn parse(s: &str) -> Option<Reporter> {
        match s {
            "source" => Some(Reporter::Source),
            "destination" => Some(Reporter::Destination),
            "waypoint" => Some(Reporter::Waypoint),
            _ => None,
        }
    }

    /// From Envoy's `listener_direction` (1 = INBOUND, 2 = OUTBOUND). Unspecified
    /// (gateways) reports as `source`, like Istio's gateways.
    pub fn from_direction(direction: Option<i64>) -> Reporter {
        match direction {
            Some(1) => Reporter::Destination,
            _ => Reporter::Source,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }

    /// True when the local workload is the server.
    pub fn local_is_destination(self) -> bool {
        !matches!(self, Reporter::Source)
    }
}

// === impl Workload ===

impl Workload {
    /// The local workload from node metadata keys, like Istio's (`WORKLOAD_NAME`,
    /// `NAMESPACE`, `app`, `version`, `CLUSTER_ID`, `service.istio.io/canonical-*`).
    pub fn from_node_metadata(get: impl Fn(&str) -> Option<String>) -> Workload {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        Workload {
            name: get("WORKLOAD_NAME"),
            namespace: get("NAMESPACE"),
            principal: None,
            app: get("app").or_else(|| get("app.kubernetes.io/name")),
            version: get("version").or_else(|| get("app.kubernetes.io/version")),
            cluster: get("CLUSTER_ID"),
            canonical_service: get("service.istio.io/canonical-name"),
            canonical_revision: get("service.istio.io/canonical-revision"),
        }
    }

    /// Canonical service: explicit, else `app`, else the workload name.
    pub fn canonical_service(&self) -> Option<&str> {
        self.canonical_service.as_deref().or(self.app.as_deref()).or(self.name.as_deref())
    }

    /// Canonical revision: explicit, else `version`, else `latest` for a known workload.
    pub fn canonical_revision(&self) -> Option<&str> {
        self.canonical_revision
            .as_deref()
            .or(self.version.as_deref())
            .or_else(|| self.canonical_service().map(|_| "latest"))
    }
}

/// Istio's 25 labels in [`LABEL_NAMES`] order as reported by `reporter`, with `local`
/// this workload and `peer` the other side (learnt by metadata exchange, else
/// configured). What only the request knows (code, flags, protocol, service, the peer
/// certificate's principal, mTLS) is left to the host as facts.
pub fn template(reporter: Reporter, local: &Workload, peer: &Workload) -> Vec<(&'static str, LabelValue)> {
    let or_unknown = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or(UNKNOWN).to_string();
    let u = |v: Option<&str>| LabelValue::Literal(or_unknown(v));
    let fact = |fact, default: &str| LabelValue::Fact { fact, default: default.to_string() };
    let destination = reporter.local_is_destination();
    let (src, dst) = if destination { (peer, local) } else { (local, peer) };
    let (src_principal, dst_principal, policy) = if destination {
        // The downstream connection is the peer's: its certificates name both sides.
        (
            fact("peer_principal", &or_unknown(peer.principal.as_deref())),
            fact("local_principal", &or_unknown(local.principal.as_deref())),
            fact("connection_security_policy", UNKNOWN),
        )
    } else {
        // Istio: connection_security_policy is always `unknown` on source reports; the
        // downstream connection is the local app's, so its certificates say nothing.
        (u(local.principal.as_deref()), u(peer.principal.as_deref()), u(None))
    };
    let values = [
        LabelValue::Literal(reporter.as_str().to_string()),
        u(src.name.as_deref()),
        u(src.canonical_service()),
        u(src.canonical_revision()),
        u(src.namespace.as_deref()),
        src_principal,
        u(src.app.as_deref()),
        u(src.version.as_deref()),
        u(src.cluster.as_deref()),
        u(dst.name.as_deref()),
        u(dst.namespace.as_deref()),
        dst_principal,
        u(dst.app.as_deref()),
        u(dst.version.as_deref()),
        fact("destination_service", UNKNOWN),
        u(dst.canonical_service()),
        u(dst.canonical_revision()),
        fact("destination_service_name", UNKNOWN),
        fact("destination_service_namespace", &or_unknown(dst.namespace.as_deref())),
        u(dst.cluster.as_deref()),
        fact("request_protocol", "http"),
        fact("response_code", "0"),
        fact("grpc_response_status", ""),
        fact("response_flags", "-"),
        policy,
    ];
    LABEL_NAMES.into_iter().zip(values).collect()
}

/// The template as `wasmesh.define_request_metrics` takes it, recording Istio's standard
/// request metrics (`names`: requests, duration, request bytes, response bytes, request
/// messages, response messages).
pub fn template_json(labels: &[(&'static str, LabelValue)], names: [&str; 6]) -> String {
    let labels: Vec<serde_json::Value> = labels
        .iter()
        .map(|(name, v)| match v {
            LabelValue::Literal(s) => serde_json::json!([name, s]),
            LabelValue::Fact { fact, default } => serde_json::json!([name, {"fact": fact, "default": default}]),
        })
        .collect();
    let [requests, duration, request_bytes, response_bytes, request_messages, response_messages] = names;
    serde_json::json!({
        "metrics": {
            "requests": requests,
            "duration_ms": duration,
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
            "request_messages": request_messages,
            "response_messages": response_messages,
        },
        "labels": labels,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn local() -> Workload {
        Workload::from_node_metadata(|k| {
            Some(
                match k {
                    "WORKLOAD_NAME" => "reviews-v1",
                    "NAMESPACE" => "bookinfo",
                    "app" => "reviews",
                    "version" => "v1",
                    "CLUSTER_ID" => "Kubernetes",
                    _ => return None,
                }
                .to_string(),
            )
        })
    }

    /// The label values for a request with `facts` (what the host would fill in).
    fn resolve(t: &[(&'static str, LabelValue)], facts: &[(&str, &str)]) -> Vec<String> {
        let facts: HashMap<&str, &str> = facts.iter().copied().collect();
        t.iter()
            .map(|(_, v)| match v {
                LabelValue::Literal(s) => s.clone(),
                LabelValue::Fact { fact, default } => facts.get(fact).map_or(default.clone(), |v| v.to_string()),
            })
            .collect()
    }

    fn map(t: &[(&'static str, LabelValue)], facts: &[(&str, &str)]) -> HashMap<&'static str, String> {
        t.iter().map(|(n, _)| *n).zip(resolve(t, facts)).collect()
    }

    #[test]
    fn destination_report_has_every_istio_label_in_order() {
        let peer = Workload {
            name: Some("productpage-v1".into()),
            namespace: Some("bookinfo".into()),
            app: Some("productpage".into()),
            ..Workload::default()
        };
        let t = template(Reporter::Destination, &local(), &peer);
        assert_eq!(t.iter().map(|(n, _)| *n).collect::<Vec<_>>(), LABEL_NAMES);
        let v = resolve(
            &t,
            &[
                ("peer_principal", "spiffe://cluster.local/ns/bookinfo/sa/productpage"),
                ("local_principal", "spiffe://cluster.local/ns/bookinfo/sa/reviews"),
                ("destination_service", "reviews.bookinfo.svc.cluster.local"),
                ("destination_service_name", "reviews"),
                ("destination_service_namespace", "bookinfo"),
                ("request_protocol", "http"),
                ("response_code", "200"),
                ("connection_security_policy", "mutual_tls"),
            ],
        );
        let want = [
            "destination",
            "productpage-v1",
            "productpage",
            "latest",
            "bookinfo",
            "spiffe://cluster.local/ns/bookinfo/sa/productpage",
            "productpage",
            "unknown",
            "unknown",
            "reviews-v1",
            "bookinfo",
            "spiffe://cluster.local/ns/bookinfo/sa/reviews",
            "reviews",
            "v1",
            "reviews.bookinfo.svc.cluster.local",
            "reviews",
            "v1",
            "reviews",
            "bookinfo",
            "Kubernetes",
            "http",
            "200",
            "",
            "-",
            "mutual_tls",
        ];
        assert_eq!(v, want.map(String::from).to_vec());
    }

    #[test]
    fn source_report_swaps_sides_and_hides_security_policy() {
        let t = template(Reporter::Source, &local(), &Workload::default());
        let m = map(&t, &[("connection_security_policy", "mutual_tls"), ("peer_principal", "spiffe://x")]);
        assert_eq!(m["reporter"], "source");
        assert_eq!(m["source_workload"], "reviews-v1");
        assert_eq!(m["source_canonical_service"], "reviews");
        assert_eq!(m["source_principal"], "unknown", "the local app's connection names nobody");
        assert_eq!(m["destination_workload"], "unknown");
        assert_eq!(m["destination_canonical_revision"], "unknown");
        assert_eq!(m["connection_security_policy"], "unknown");
        assert_eq!(m["destination_service_namespace"], "unknown");
    }

    #[test]
    fn missing_facts_take_istio_defaults() {
        let t = template(Reporter::Destination, &Workload::default(), &Workload::default());
        let m = map(&t, &[]);
        for l in ["source_workload", "destination_workload", "destination_principal", "destination_service"] {
            assert_eq!(m[l], "unknown", "{l}");
        }
        assert_eq!(m["response_code"], "0", "no response");
        assert_eq!(m["response_flags"], "-");
        assert_eq!(m["grpc_response_status"], "", "HTTP requests carry no gRPC status");
        assert_eq!(m["request_protocol"], "http");
        // The configured identities stand in for certificates that say nothing.
        let named =
            |p: &str| Workload { principal: Some(p.into()), namespace: Some("ns".into()), ..Workload::default() };
        let t = template(Reporter::Destination, &named("spiffe://local"), &named("spiffe://peer"));
        let m = map(&t, &[]);
        assert_eq!(
            (m["source_principal"].as_str(), m["destination_principal"].as_str()),
            ("spiffe://peer", "spiffe://local")
        );
        assert_eq!(m["destination_service_namespace"], "ns", "a host outside .svc keeps the local namespace");
    }

    #[test]
    fn exchanged_peer_replaces_the_configured_one() {
        let configured = Workload { name: Some("configured".into()), ..Workload::default() };
        assert_eq!(map(&template(Reporter::Destination, &local(), &configured), &[])["source_workload"], "configured");
        let exchanged = Workload { name: Some("exchanged".into()), app: Some("web".into()), ..Workload::default() };
        let m = map(&template(Reporter::Destination, &local(), &exchanged), &[]);
        assert_eq!(m["source_workload"], "exchanged");
        assert_eq!(m["source_canonical_service"], "web");
        assert_eq!(m["destination_workload"], "reviews-v1");
    }

    #[test]
    fn the_json_names_each_fact_and_metric() {
        let t = template(Reporter::Destination, &local(), &Workload::default());
        let names = ["r_total", "d_ms", "q_bytes", "p_bytes", "qm_total", "pm_total"];
        let v: serde_json::Value = serde_json::from_str(&template_json(&t, names)).expect("valid JSON");
        assert_eq!(v["metrics"]["duration_ms"], "d_ms");
        assert_eq!(v["metrics"]["response_messages"], "pm_total");
        assert_eq!(v["labels"][0], serde_json::json!(["reporter", "destination"]));
        assert_eq!(v["labels"][21], serde_json::json!(["response_code", {"fact": "response_code", "default": "0"}]));
        assert_eq!(v["labels"].as_array().map(Vec::len), Some(25));
    }

    #[test]
    fn reporter_follows_listener_direction() {
        assert_eq!(Reporter::from_direction(Some(1)), Reporter::Destination);
        assert_eq!(Reporter::from_direction(Some(2)), Reporter::Source);
        assert_eq!(Reporter::from_direction(None), Reporter::Source);
        assert_eq!(Reporter::parse("waypoint"), Some(Reporter::Waypoint));
        assert_eq!(Reporter::parse("client"), None);
    }

    #[test]
    fn canonical_labels_fall_back_like_istio() {
        let w = Workload::from_node_metadata(|k| match k {
            "WORKLOAD_NAME" => Some("pay".into()),
            "service.istio.io/canonical-name" => Some("payments".into()),
            "app" => Some(String::new()),
            _ => None,
        });
        assert_eq!(w.canonical_service(), Some("payments"));
        assert_eq!(w.canonical_revision(), Some("latest"));
        assert_eq!(w.app, None, "empty metadata values count as missing");
        assert_eq!(Workload::default().canonical_revision(), None);
    }
}
