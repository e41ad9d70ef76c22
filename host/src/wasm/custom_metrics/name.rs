//! A filter metric's name as the ABI carries it, `base{key="value",…}`: split into a
//! Prometheus-safe base name and its labels, and the labels rendered once in the
//! exposition format (`key="value",…`, values escaped) so a scrape only copies them.

/// A parsed `proxy_define_metric` name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MetricName {
    /// Base name, sanitized to `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    pub base: String,
    /// Label names in the order given, sanitized to `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub label_names: Vec<String>,
    /// `key="value",…` in the order given, values escaped for the text format.
    pub labels: String,
}

/// Splits `name{a="1",b="2"}` into its base name and labels.
pub(crate) fn parse(name: &str) -> MetricName {
    let (base, rest) = match name.find('{') {
        Some(i) if name.ends_with('}') => (&name[..i], Some(&name[i + 1..name.len() - 1])),
        _ => (name, None),
    };
    let mut out = MetricName { base: sanitize(base, true), label_names: Vec::new(), labels: String::new() };
    for part in rest.map(split_labels).unwrap_or_default() {
        let Some((k, v)) = part.split_once('=') else { continue };
        out.push_label(k.trim(), &v.trim().trim_matches('"').replace("\\\"", "\""));
    }
    out
}

/// A metric named `base` with labels given as unescaped `(name, value)` pairs (the
/// host's own definitions: no text form to parse).
pub(crate) fn from_pairs<'a>(base: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> MetricName {
    let mut out = MetricName { base: sanitize(base, true), label_names: Vec::new(), labels: String::new() };
    for (k, v) in pairs {
        out.push_label(k, v);
    }
    out
}

impl MetricName {
    fn push_label(&mut self, name: &str, value: &str) {
        let key = sanitize(name, false);
        if !self.labels.is_empty() {
            self.labels.push(',');
        }
        self.labels.push_str(&key);
        self.labels.push_str("=\"");
        escape_into(value, &mut self.labels);
        self.labels.push('"');
        self.label_names.push(key);
    }
}

/// Escapes a label value for the text format (`\`, `"` and newline).
fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '\\' if quoted => escaped = !escaped,
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Replaces what Prometheus does not allow in a metric (`colon`) or label name by `_`.
fn sanitize(s: &str, colon: bool) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    let mut out: String = s.chars().map(|c| if allowed(c) { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_their_order_and_are_escaped() {
        let n = parse("istio_requests_total{code=\"200\",app=\"a,b\",q=\"say \\\"hi\\\"\nx\",x:y=\"1\"}");
        assert_eq!(n.base, "istio_requests_total");
        assert_eq!(n.label_names, ["code", "app", "q", "x_y"]);
        assert_eq!(n.labels, r#"code="200",app="a,b",q="say \"hi\"\nx",x_y="1""#);
        let p =
            from_pairs("istio_requests_total", [("code", "200"), ("app", "a,b"), ("q", "say \"hi\"\nx"), ("x:y", "1")]);
        assert_eq!(p, n, "pairs render as the text form parses");
    }

    #[test]
    fn bases_are_sanitized_and_may_have_no_labels() {
        assert_eq!(parse("a.b-c").base, "a_b_c");
        assert_eq!(parse("ns:a").base, "ns:a");
        assert_eq!(parse("9lives").base, "_9lives");
        let n = parse("plain{}");
        assert_eq!((n.base.as_str(), n.labels.as_str()), ("plain", ""));
        assert!(n.label_names.is_empty());
        // An unterminated label block is part of the (sanitized) name.
        assert_eq!(parse("half{a=\"1\"").base, "half_a__1_");
    }
}
