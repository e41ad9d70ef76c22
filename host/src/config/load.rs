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
        let yaml_line = inner.location().map(|l| l.line());
        let line = yaml_line.or_else(|| lines.line_of(&path));
        let full = inner.to_string();
        let message = strip_path(&path, &strip_location(&full, line)).to_string();
        let error = match duplicate_field(&message) {
            // serde reports a duplicate at its struct; point at the second key instead.
            Some(field) => {
                let path = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
                ConfigError { line: lines.duplicate_line_of(&path).or(line), path, message }
            }
            None => ConfigError { path, line, message },
        };
        ConfigErrors { file: None, errors: vec![error] }
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

/// The field of serde's "duplicate field `name`" message.
fn duplicate_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("duplicate field `")?.split('`').next()
}

/// serde_yaml_ng writes " at line L column C" after the problem (and libyaml may add a
/// context with its own mark); we print the line ourselves, so drop the marks on `line`
/// and keep any other (e.g. "while parsing a flow mapping at line 3 column 3").
fn strip_location(msg: &str, line: Option<usize>) -> String {
    const AT: &str = " at line ";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(AT) {
        let after = &rest[i + AT.len()..];
        let (mark_line, mark_len) = parse_mark(after);
        out.push_str(&rest[..i]);
        match mark_line {
            Some(l) if Some(l) == line => {}
            _ => out.push_str(&rest[i..i + AT.len() + mark_len]),
        }
        rest = &after[mark_len..];
    }
    out.push_str(rest);
    out
}

/// Parses `L column C` at the start of `s`: the line and the length of the mark text
/// (0 and `None` when `s` does not start with a mark).
fn parse_mark(s: &str) -> (Option<usize>, usize) {
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(s);
    let Ok(line) = s[..n].parse::<usize>() else {
        return (None, 0);
    };
    let Some(col) = s[n..].strip_prefix(" column ") else {
        return (None, 0);
    };
    let m = digits(col);
    if m == 0 {
        return (None, 0);
    }
    (Some(line), n + " column ".len() + m)
}
