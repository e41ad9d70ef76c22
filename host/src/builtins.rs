//! Filters embedded in the binary, addressed as `builtin:<name>` in config (built from
//! `filters/` by `host/build.rs`).

/// (name, module bytes) of every embedded filter.
const BUILTINS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The module bytes of the builtin filter `name`.
pub fn module(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Names of every builtin filter.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_is_a_wasm_module() {
        for name in super::names() {
            let bytes = super::module(name).unwrap_or_default();
            assert!(bytes.starts_with(b"\0asm"), "{name} is not a wasm module");
        }
    }
}
