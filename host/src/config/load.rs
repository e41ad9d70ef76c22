//! Reading the YAML file into `Config`, with the field path and line in every error.

use std::fmt;
use std::path::Path;

use super::lines::LineIndex;
use super::Config;

/// One configuration problem: where (field path, line) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path such as `clusters[1].endpoints[0].address` (empty for the whole file).
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the offending value and what was expected.
    pub message: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file, when the config came from one.
    pub file: Option<String>,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

// === impl ConfigError ===

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

// === impl ConfigErrors ===

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        match &self.file {
            Some(file) => write!(f, "{file}: {n} configuration error(s)")?,
            None => write!(f, "{n} configuration error(s)")?,
        }
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Reads, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: Some(path.display().to_string()),
        errors: vec![ConfigError { path: String::new(), line: None, message: format!("cannot read file: {e}") }],
    })?;
    parse_str(&text).map_err(|mut e| {
        e.file = Some(path.display().to_string());
        e
    })
}

/// Parses and validates configuration text.
pub fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    let lines = LineIndex::build(text);
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = clean_path(&err.path().to_string());
        let inner = err.into_inner();
        let line = inner.location().map(|l| l.line()).or_else(|| lines.line_of(&path));
        let message = strip_path(&path, &strip_location(&inner.to_string())).to_string();
        ConfigErrors { file: None, errors: vec![ConfigError { path, line, message }] }
    })?;
    let errors = super::validate(&config, &lines);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors { file: None, errors })
    }
}

/// serde_path_to_error writes `.` for the root; we write nothing.
fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// serde_yaml_ng starts its message with its own path, which is `path` or an ancestor
/// of it (an unknown field is reported at its struct); we print the path ourselves.
fn strip_path<'m>(path: &str, msg: &'m str) -> &'m str {
    let mut p = path;
    while !p.is_empty() {
        if let Some(rest) = msg.strip_prefix(p).and_then(|r| r.strip_prefix(": ")) {
            return rest;
        }
        p = match p.rfind(['.', '[']) {
            Some(i) => &p[..i],
            None => "",
        };
    }
    msg
}

/// serde_yaml_ng appends " at line L column C"; we print the line ourselves.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
