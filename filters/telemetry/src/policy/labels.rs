//! Istio's standard metric labels, in Istio's emitted order, with `unknown` for what is
//! not known (as Kiali expects). The local side comes from the node metadata, the remote
//! side from the plugin's `peer:` defaults; which side is which follows the reporter.

use std::rc::Rc;

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

/// The per-request inputs of the labels (the workloads are fixed per VM). Hashable: the
/// filter caches metric ids per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelKey {
    /// Who reports.
    pub reporter: Reporter,
    /// `connection.mtls`.
    pub mtls: Option<bool>,
    /// Principal of the downstream peer certificate.
    pub peer_principal: Option<String>,
    /// Principal of the local certificate.
    pub local_principal: Option<String>,
    /// Destination service host (see [`service_host`]).
    pub service_host: Option<String>,
    /// gRPC request.
    pub grpc: bool,
    /// Response code (`None`: no response, reported as `0`).
    pub response_code: Option<u16>,
    /// gRPC status.
    pub grpc_status: Option<u64>,
    /// Response flags (`-` when none).
    pub response_flags: String,
    /// The remote side learnt by metadata exchange (`None`: the configured defaults).
    pub peer: Option<Rc<Workload>>,
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

/// The destination service host: the host of an Istio-style cluster name
/// (`outbound|9080|v1|reviews.default.svc.cluster.local`), else the cluster name, else
/// the authority without its port.
pub fn service_host(cluster: Option<&str>, authority: Option<&str>) -> Option<String> {
    if let Some(c) = cluster.filter(|c| !c.is_empty()) {
        // Istio's `direction|port|subset|host` names the host last; other names are hosts.
        let mut parts = c.split('|');
        match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(_), Some(_), Some(host), None) => {
                if !host.is_empty() {
                    return Some(host.to_string());
                }
            }
            _ => return Some(c.to_string()),
        }
    }
    let a = authority.filter(|a| !a.is_empty())?;
    Some(strip_port(a).to_string())
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // [v6]:port
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => authority,
    }
}

/// Service name and namespace of a host: `reviews.default.svc…` → (`reviews`, `default`);
/// any other host (`ratings`, `api.example.com`, an IP) is its own name and keeps
/// `fallback_ns`.
pub fn service_name_namespace<'a>(host: &'a str, fallback_ns: Option<&'a str>) -> (&'a str, Option<&'a str>) {
    let mut it = host.split('.');
    match (it.next(), it.next(), it.next()) {
        (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => (name, Some(ns)),
        _ => (host, fallback_ns),
    }
}

/// The 25 label values in [`LABEL_NAMES`] order.
pub fn values(key: &LabelKey, local: &Workload, default_peer: &Workload) -> Vec<String> {
    let peer = key.peer.as_deref().unwrap_or(default_peer);
    let u = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or(UNKNOWN).to_string();
    let (src, dst) = if key.reporter.local_is_destination() { (peer, local) } else { (local, peer) };
    let (src_principal, dst_principal, policy) = if key.reporter.local_is_destination() {
        let policy = match key.mtls {
            Some(true) => "mutual_tls",
            Some(false) => "none",
            None => UNKNOWN,
        };
        (
            key.peer_principal.as_deref().or(peer.principal.as_deref()),
            key.local_principal.as_deref().or(local.principal.as_deref()),
            policy,
        )
    } else {
        // Istio: connection_security_policy is always `unknown` on source reports; the
        // downstream connection is the local app's, so its certificates say nothing.
        (local.principal.as_deref(), peer.principal.as_deref(), UNKNOWN)
    };
    let host = key.service_host.as_deref();
    let (svc_name, svc_ns) = match host {
        Some(h) => {
            let (n, ns) = service_name_namespace(h, dst.namespace.as_deref());
            (Some(n), ns)
        }
        None => (None, None),
    };
    let response_code = key.response_code.unwrap_or(0).to_string();
    let grpc_status = match (key.grpc, key.grpc_status) {
        (true, Some(s)) => s.to_string(),
        _ => String::new(),
    };
    vec![
        key.reporter.as_str().to_string(),
        u(src.name.as_deref()),
        u(src.canonical_service()),
        u(src.canonical_revision()),
        u(src.namespace.as_deref()),
        u(src_principal),
        u(src.app.as_deref()),
        u(src.version.as_deref()),
        u(src.cluster.as_deref()),
        u(dst.name.as_deref()),
        u(dst.namespace.as_deref()),
        u(dst_principal),
        u(dst.app.as_deref()),
        u(dst.version.as_deref()),
        u(host),
        u(dst.canonical_service()),
        u(dst.canonical_revision()),
        u(svc_name),
        u(svc_ns),
        u(dst.cluster.as_deref()),
        if key.grpc { "grpc" } else { "http" }.to_string(),
        response_code,
        grpc_status,
        key.response_flags.clone(),
        policy.to_string(),
    ]
}

/// `(name, value)` pairs for [`wasmesh_sdk::metrics`].
pub fn pairs(values: &[String]) -> Vec<(&'static str, &str)> {
    LABEL_NAMES.iter().copied().zip(values.iter().map(String::as_str)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn key(reporter: Reporter) -> LabelKey {
        LabelKey {
            reporter,
            mtls: Some(true),
            peer_principal: Some("spiffe://cluster.local/ns/bookinfo/sa/productpage".into()),
            local_principal: Some("spiffe://cluster.local/ns/bookinfo/sa/reviews".into()),
            service_host: service_host(Some("outbound|9080|v1|reviews.bookinfo.svc.cluster.local"), None),
            grpc: false,
            response_code: Some(200),
            grpc_status: None,
            response_flags: "-".into(),
            peer: None,
        }
    }

    fn map(values: &[String]) -> std::collections::HashMap<&'static str, &str> {
        pairs(values).into_iter().collect()
    }

    #[test]
    fn destination_report_has_every_istio_label_in_order() {
        let peer = Workload {
            name: Some("productpage-v1".into()),
            namespace: Some("bookinfo".into()),
            app: Some("productpage".into()),
            ..Workload::default()
        };
        let v = values(&key(Reporter::Destination), &local(), &peer);
        assert_eq!(v.len(), LABEL_NAMES.len());
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
        let mut k = key(Reporter::Source);
        k.service_host = service_host(Some("ratings"), Some("ignored:80"));
        k.grpc = true;
        k.grpc_status = Some(14);
        k.response_code = None;
        k.response_flags = "UF,URX".into();
        let v = values(&k, &local(), &Workload::default());
        let m = map(&v);
        assert_eq!(m["reporter"], "source");
        assert_eq!(m["source_workload"], "reviews-v1");
        assert_eq!(m["source_canonical_service"], "reviews");
        assert_eq!(m["source_principal"], "unknown");
        assert_eq!(m["destination_workload"], "unknown");
        assert_eq!(m["destination_canonical_revision"], "unknown");
        assert_eq!(m["destination_service"], "ratings");
        assert_eq!(m["destination_service_name"], "ratings");
        assert_eq!(m["destination_service_namespace"], "unknown");
        assert_eq!(m["request_protocol"], "grpc");
        assert_eq!(m["response_code"], "0");
        assert_eq!(m["grpc_response_status"], "14");
        assert_eq!(m["response_flags"], "UF,URX");
        assert_eq!(m["connection_security_policy"], "unknown");
    }

    #[test]
    fn missing_facts_are_unknown() {
        let k = LabelKey {
            reporter: Reporter::Destination,
            mtls: Some(false),
            peer_principal: None,
            local_principal: Some(String::new()),
            service_host: None,
            grpc: false,
            response_code: Some(503),
            grpc_status: Some(2),
            response_flags: "UH".into(),
            peer: None,
        };
        let v = values(&k, &Workload::default(), &Workload::default());
        let m = map(&v);
        for l in ["source_workload", "destination_workload", "destination_principal", "destination_service"] {
            assert_eq!(m[l], "unknown", "{l}");
        }
        assert_eq!(m["connection_security_policy"], "none");
        assert_eq!(m["grpc_response_status"], "", "HTTP requests carry no gRPC status");
        let mut k2 = k;
        k2.mtls = None;
        assert_eq!(
            map(&values(&k2, &Workload::default(), &Workload::default()))["connection_security_policy"],
            "unknown"
        );
    }

    #[test]
    fn exchanged_peer_replaces_the_configured_one() {
        let configured = Workload { name: Some("configured".into()), ..Workload::default() };
        let mut k = key(Reporter::Destination);
        assert_eq!(map(&values(&k, &local(), &configured))["source_workload"], "configured");
        k.peer =
            Some(Rc::new(Workload { name: Some("exchanged".into()), app: Some("web".into()), ..Workload::default() }));
        let v = values(&k, &local(), &configured);
        assert_eq!(map(&v)["source_workload"], "exchanged");
        assert_eq!(map(&v)["source_canonical_service"], "web");
        assert_eq!(map(&v)["destination_workload"], "reviews-v1");
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
    fn service_hosts_and_names() {
        assert_eq!(
            service_host(Some("outbound|80||web.prod.svc.cluster.local"), None).as_deref(),
            Some("web.prod.svc.cluster.local")
        );
        assert_eq!(
            service_host(Some("inbound|8080||"), Some("api.example.com:8443")).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(service_host(None, Some("[::1]:80")).as_deref(), Some("[::1]"));
        assert_eq!(service_host(Some(""), Some("web")).as_deref(), Some("web"));
        assert_eq!(service_host(None, None), None);
        assert_eq!(service_name_namespace("web.prod.svc.cluster.local", Some("x")), ("web", Some("prod")));
        assert_eq!(service_name_namespace("api.example.com", Some("x")), ("api.example.com", Some("x")));
        assert_eq!(service_name_namespace("127.0.0.1", None), ("127.0.0.1", None));
        assert_eq!(service_name_namespace("reviews", Some("x")), ("reviews", Some("x")));
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
