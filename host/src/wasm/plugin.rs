//! A plugin: a compiled module linked against the hostcalls (`InstancePre`), plus the
//! configuration of one filter (name, root_id, vm_id, configs, env, failure policy,
//! limits). Built and validated off the workers; shared by them.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use wasmtime::{InstancePre, Module};

use super::runtime::{hex, WasmRuntime};
use super::state::HostState;
use super::vm::Vm;
use super::WasmError;
use crate::config::{Direction, FailurePolicy, Filter, FilterLimits};
use crate::upstream::{LimitTable, Overflow};

/// Proxy-wasm ABI versions this host accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`.
    V0_1_0,
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`.
    V0_2_1,
}

/// One configured filter, compiled and validated (`Send + Sync`).
pub struct Plugin {
    /// Filter name (`plugin_name`).
    pub name: Arc<str>,
    /// Root id (`plugin_root_id`).
    pub root_id: String,
    /// VM id (`plugin_vm_id`); plugins with the same module and vm_id share a VM.
    pub vm_id: Arc<str>,
    /// Plugin configuration handed to `on_configure`.
    pub config: Bytes,
    /// VM configuration handed to `on_vm_start`.
    pub vm_config: Bytes,
    /// WASI environment.
    pub env: Vec<(String, String)>,
    /// What a request sees when this filter fails.
    pub failure: FailurePolicy,
    /// Sandbox limits.
    pub limits: FilterLimits,
    /// sha256 of the module bytes.
    pub sha256: [u8; 32],
    /// ABI version the module declares.
    pub abi: AbiVersion,
    /// Connection-pool limits the filter declared (`wasmesh.pool_limits`, from
    /// `on_configure`), applied by the proxy before each request is sent.
    pub pool_limits: OnceLock<LimitTable>,
    /// The listener whose chain this filter is in (`listener_name`, `listener_direction`
    /// in its root context too); `None` outside a listener (tests, tools).
    pub listener: Option<(Arc<str>, Direction)>,
    pub(crate) pre: InstancePre<HostState>,
}

/// The filter chain of one listener, in request order (`Send + Sync`).
#[derive(Clone, Default)]
pub struct ChainSpec {
    /// The plugins in request order.
    pub plugins: Vec<Arc<Plugin>>,
}

// === impl Plugin ===

impl Plugin {
    /// Compiles (or loads from cache) and VALIDATES: instantiates a throwaway VM and runs
    /// `on_vm_start` + `on_configure`; `false` or a trap is an error naming the plugin.
    pub fn load(rt: &Arc<WasmRuntime>, filter: &Filter, module_bytes: &[u8]) -> Result<Arc<Plugin>, WasmError> {
        Self::load_on(rt, filter, module_bytes, None)
    }

    /// [`Plugin::load`] for the chain of `listener` (its name and direction).
    pub fn load_on(
        rt: &Arc<WasmRuntime>,
        filter: &Filter,
        module_bytes: &[u8],
        listener: Option<(Arc<str>, Direction)>,
    ) -> Result<Arc<Plugin>, WasmError> {
        let name = filter.name.clone();
        let (module, sha256) = rt.module(&name, module_bytes)?;
        let abi = abi_version(&module).ok_or_else(|| WasmError::Abi {
            plugin: name.clone(),
            error: "missing or unknown proxy-wasm ABI version export (proxy_abi_version_0_2_1, _0_2_0 or _0_1_0)"
                .into(),
        })?;
        let pre = rt
            .linker
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Link { plugin: name.clone(), error: format!("{e:#}") })?;
        let config = encode_config(&name, filter.config.as_ref())?;
        let vm_config = encode_config(&name, filter.vm_config.as_ref())?;
        let plugin = Arc::new(Plugin {
            name: name.as_str().into(),
            root_id: filter.root_id.clone(),
            vm_id: filter.vm_id.as_str().into(),
            config,
            vm_config,
            env: filter.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            failure: filter.failure,
            limits: filter.limits.clone(),
            sha256,
            abi,
            pool_limits: OnceLock::new(),
            listener,
            pre,
        });
        Vm::new(rt, None, std::slice::from_ref(&plugin)).map_err(|e| WasmError::Start {
            plugin: name.clone(),
            kind: e.kind,
            error: e.message,
        })?;
        tracing::debug!(plugin = %name, sha256 = %hex(&sha256), ?abi, "plugin loaded");
        Ok(plugin)
    }

    /// The module's sha256 in hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

impl ChainSpec {
    /// Whether a request to `cluster`, with `active` requests already in flight there,
    /// overflows a pool limit some filter of this chain declared (the first that does).
    pub fn overflow(&self, cluster: &str, active: u64) -> Option<Overflow> {
        self.plugins.iter().find_map(|p| p.pool_limits.get()?.get(cluster)?.check(active))
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("root_id", &self.root_id)
            .field("vm_id", &self.vm_id)
            .field("sha256", &self.sha256_hex())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ChainSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.plugins.iter().map(|p| &p.name)).finish()
    }
}

fn abi_version(module: &Module) -> Option<AbiVersion> {
    let mut found = None;
    for e in module.exports() {
        let v = match e.name() {
            "proxy_abi_version_0_2_1" => AbiVersion::V0_2_1,
            "proxy_abi_version_0_2_0" => AbiVersion::V0_2_0,
            "proxy_abi_version_0_1_0" => AbiVersion::V0_1_0,
            _ => continue,
        };
        found = match found {
            Some(AbiVersion::V0_2_1) => found,
            _ if v == AbiVersion::V0_2_1 => Some(v),
            Some(AbiVersion::V0_2_0) => found,
            _ => Some(v),
        };
    }
    found
}

/// A string is passed as-is, anything else as JSON, absent as empty.
fn encode_config(plugin: &str, v: Option<&serde_yaml_ng::Value>) -> Result<Bytes, WasmError> {
    match v {
        None | Some(serde_yaml_ng::Value::Null) => Ok(Bytes::new()),
        Some(serde_yaml_ng::Value::String(s)) => Ok(Bytes::from(s.clone())),
        Some(other) => serde_json::to_vec(other)
            .map(Bytes::from)
            .map_err(|e| WasmError::Config { plugin: plugin.to_owned(), error: e.to_string() }),
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Plugin>();
    is::<ChainSpec>();
    is::<WasmRuntime>();
}
