//! Metrics the wasm host declares (filter-defined metrics live in `custom_metrics`).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::WasmError;

/// Host metrics of the wasm runtime.
#[derive(Clone)]
pub(crate) struct WasmMetrics {
    /// `wasmesh_wasm_failures_total{plugin,kind}`: traps, deadlines, exits, failed starts.
    pub failures: IntCounterVec,
    /// `wasmesh_wasm_vm_starts_total{plugin,result}`: VM (re)builds on workers.
    pub vm_starts: IntCounterVec,
    /// `wasmesh_wasm_modules_total{source}`: module loads by source (compiled/memory/disk).
    pub modules: IntCounterVec,
    /// `wasmesh_wasm_vms{plugin}`: live VMs (all workers), by the plugin that built them.
    pub vms: IntGaugeVec,
    /// `wasmesh_wasm_memory_bytes{plugin}`: linear memory of those VMs (sampled when a
    /// stream finishes).
    pub memory: IntGaugeVec,
}

// === impl WasmMetrics ===

impl WasmMetrics {
    pub fn new(registry: &Registry) -> Result<Self, WasmError> {
        let failures = IntCounterVec::new(
            Opts::new("wasmesh_wasm_failures_total", "Wasm plugin failures (trap, deadline, exit, memory, start)"),
            &["plugin", "kind"],
        )?;
        let vm_starts = IntCounterVec::new(
            Opts::new("wasmesh_wasm_vm_starts_total", "Wasm VM builds on workers"),
            &["plugin", "result"],
        )?;
        let modules =
            IntCounterVec::new(Opts::new("wasmesh_wasm_modules_total", "Wasm module loads by source"), &["source"])?;
        let vms = IntGaugeVec::new(Opts::new("wasmesh_wasm_vms", "Live wasm VMs on all workers"), &["plugin"])?;
        let memory =
            IntGaugeVec::new(Opts::new("wasmesh_wasm_memory_bytes", "Linear memory of live wasm VMs"), &["plugin"])?;
        registry.register(Box::new(vms.clone()))?;
        registry.register(Box::new(memory.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(vm_starts.clone()))?;
        registry.register(Box::new(modules.clone()))?;
        Ok(WasmMetrics { failures, vm_starts, modules, vms, memory })
    }
}
