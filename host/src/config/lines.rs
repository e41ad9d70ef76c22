//! Maps field paths (`clusters[1].endpoints[0].address`) to lines of the YAML text.
//!
//! Paths use serde_path_to_error's notation: mapping keys joined by `.`, sequence
//! indices as `[i]` with no dot before them, the root as the empty string.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Field path → 1-based line of its key (mapping entries) or item (sequence entries)
/// in the source text.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
    /// Line of the second occurrence of a key written twice in one mapping.
    duplicates: HashMap<String, usize>,
}

/// Builds the index from parser events, keeping a stack of open containers.
#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
    duplicates: HashMap<String, usize>,
}

/// One open mapping or sequence and where the walk is inside it.
enum Frame {
    Mapping {
        path: String,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

// === impl LineIndex ===

impl LineIndex {
    /// Indexes every mapping key and sequence item of `text`. Text the YAML parser
    /// rejects is indexed up to the error (the parse error itself carries its line).
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        // A scan error only stops the walk; what was seen before it stays indexed.
        let _ = parser.load(&mut walker, false);
        Self { lines: walker.lines, duplicates: walker.duplicates }
    }

    /// The line of `path`, or of its nearest indexed ancestor; `None` for the root or
    /// a path with no indexed ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if p.is_empty() {
                return None;
            }
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            p = parent_of(p);
        }
    }

    /// The line where the key at `path` is written a second time, if it is.
    pub fn duplicate_line_of(&self, path: &str) -> Option<usize> {
        self.duplicates.get(path).copied()
    }

    /// Number of indexed paths.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether nothing was indexed (empty or unparsable text).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
fn parent_of(path: &str) -> &str {
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return &path[..i];
        }
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// `parent` + `.key` (or `key` at the root).
fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

// === impl Walker ===

impl Walker {
    /// The path of the node that starts now, recording its line; `None` when the node
    /// is a mapping key (keys are recorded as the path of their value).
    fn enter_node(&mut self, scalar_key: Option<&str>, line: usize) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Mapping { path, key }) => match key.take() {
                None => {
                    // This node is a key: remember it; its value comes next.
                    let k = scalar_key.unwrap_or("?").to_string();
                    let full = join_key(path, &k);
                    match self.lines.entry(full) {
                        Entry::Occupied(first) => {
                            let full = first.key().clone();
                            self.duplicates.entry(full).or_insert(line);
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(line);
                        }
                    }
                    *key = Some(k);
                    return None;
                }
                Some(k) => join_key(path, &k),
            },
            Some(Frame::Sequence { path, next }) => {
                let full = format!("{path}[{next}]");
                *next += 1;
                self.lines.entry(full.clone()).or_insert(line);
                full
            }
        };
        Some(path)
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) => {
                self.enter_node(Some(&value), line);
            }
            Event::Alias(_) => {
                self.enter_node(None, line);
            }
            Event::MappingStart(..) => {
                // A complex (non-scalar) key gets the placeholder `?`, as in
                // serde_path_to_error; its contents are indexed under a path that
                // no field uses.
                let path = self.enter_node(None, line).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter_node(None, line).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}
