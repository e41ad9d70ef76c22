//! The JSON Schema of the configuration file, generated from the serde structs.
//!
//! `config/schema.json` holds a copy for editors (e.g. yaml-language-server's
//! `# yaml-language-server: $schema=…`); a unit test fails when it is stale.

use super::Config;

/// The JSON Schema (draft 2020-12) of [`Config`], with every field's doc comment as its
/// description and its default value.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Config).to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), serde_json::Value::String("wasmesh configuration".into()));
    }
    schema
}
