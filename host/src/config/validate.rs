//! Cross-field checks the types cannot express: names, references, addresses, limits.

use super::lines::LineIndex;
use super::{Config, ConfigError};

/// Every problem in `config`, each with its path and line; empty when valid.
pub fn validate(config: &Config, lines: &LineIndex) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(c) = &l.default_cluster {
            if !config.clusters.iter().any(|cl| &cl.name == c) {
                let path = format!("listeners[{i}].default_cluster");
                errors.push(ConfigError {
                    line: lines.line_of(&path),
                    path,
                    message: format!("unknown cluster \"{c}\""),
                });
            }
        }
    }
    errors
}
