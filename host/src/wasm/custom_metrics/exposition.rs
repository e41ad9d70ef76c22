//! Filter metrics in the Prometheus text format, a bounded chunk at a time: a scrape
//! of many series streams out instead of being built whole in memory.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::PoisonError;

use super::series::{Cells, Series};
use super::{help, lock, CustomMetrics, Family};

/// How far a scrape has got: the next family and the next of its series.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    family: usize,
    member: usize,
}

impl CustomMetrics {
    /// Appends the next families and series to `out` until it holds at least `budget`
    /// bytes (one series may overshoot it). Returns false once everything defined is
    /// written; series defined meanwhile are included when their family is not yet.
    pub fn render_next(&self, cursor: &mut Cursor, out: &mut Vec<u8>, budget: usize) -> bool {
        let catalog = lock(&self.catalog);
        let all = self.series.read().unwrap_or_else(PoisonError::into_inner);
        while let Some(family) = catalog.families.get(cursor.family) {
            if cursor.member == 0 {
                header(family, out);
            }
            while let Some(series) = family.members.get(cursor.member).and_then(|&id| all.get(id as usize)) {
                cursor.member += 1;
                sample(family, series, out);
                if out.len() >= budget {
                    return true;
                }
            }
            cursor.family += 1;
            cursor.member = 0;
        }
        false
    }

    /// Every filter metric in the text format (tests and small exports).
    #[cfg(test)]
    pub fn render_all(&self) -> String {
        let (mut cursor, mut out) = (Cursor::default(), Vec::new());
        while self.render_next(&mut cursor, &mut out, usize::MAX) {}
        String::from_utf8(out).unwrap_or_default()
    }
}

fn header(family: &Family, out: &mut Vec<u8>) {
    for part in ["# HELP ", &family.name, " ", &help(&family.name), "\n# TYPE ", &family.name, " "] {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(family.kind.type_name().as_bytes());
    out.push(b'\n');
}

fn sample(family: &Family, series: &Series, out: &mut Vec<u8>) {
    let mut num = itoa::Buffer::new();
    match &series.cells {
        Cells::Counter(c) => line(out, &family.name, "", &series.labels, None, num.format(c.load(Relaxed))),
        Cells::Gauge(g) => line(out, &family.name, "", &series.labels, None, num.format(g.load(Relaxed))),
        Cells::Histogram(h) => {
            let mut cumulative = 0u64;
            for (le, count) in family.le.iter().zip(h.counts.iter()) {
                cumulative += count.load(Relaxed);
                line(out, &family.name, "_bucket", &series.labels, Some(le), num.format(cumulative));
            }
            line(out, &family.name, "_sum", &series.labels, None, num.format(h.sum.load(Relaxed)));
            line(out, &family.name, "_count", &series.labels, None, num.format(cumulative));
        }
    }
}

/// `name{suffix}{labels,le="…"} value\n` (no braces when there are no labels).
fn line(out: &mut Vec<u8>, name: &str, suffix: &str, labels: &str, le: Option<&str>, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    if !labels.is_empty() || le.is_some() {
        out.push(b'{');
        out.extend_from_slice(labels.as_bytes());
        if let Some(le) = le {
            if !labels.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(b"le=\"");
            out.extend_from_slice(le.as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MetricKind;
    use super::*;

    #[test]
    fn text_format_of_each_kind() {
        let m = CustomMetrics::new(prometheus::Registry::new());
        let c = m.define(MetricKind::Counter, r#"reqs_total{code="200",app="x"}"#);
        m.increment(c, 3);
        let g = m.define(MetricKind::Gauge, "depth");
        m.record(g, 4);
        let h = m.define(MetricKind::Histogram, r#"size_bytes{app="x"}"#);
        for v in [0, 7, 5000] {
            m.record(h, v);
        }
        let text = m.render_all();
        let expected = "\
# HELP reqs_total filter metric reqs_total
# TYPE reqs_total counter
reqs_total{code=\"200\",app=\"x\"} 3
# HELP depth filter metric depth
# TYPE depth gauge
depth 4
# HELP size_bytes filter metric size_bytes
# TYPE size_bytes histogram
size_bytes_bucket{app=\"x\",le=\"1\"} 1
size_bytes_bucket{app=\"x\",le=\"10\"} 2
size_bytes_bucket{app=\"x\",le=\"100\"} 2
size_bytes_bucket{app=\"x\",le=\"1000\"} 2
size_bytes_bucket{app=\"x\",le=\"10000\"} 3
size_bytes_bucket{app=\"x\",le=\"100000\"} 3
size_bytes_bucket{app=\"x\",le=\"1000000\"} 3
size_bytes_bucket{app=\"x\",le=\"10000000\"} 3
size_bytes_bucket{app=\"x\",le=\"100000000\"} 3
size_bytes_bucket{app=\"x\",le=\"1000000000\"} 3
size_bytes_bucket{app=\"x\",le=\"+Inf\"} 3
size_bytes_sum{app=\"x\"} 5007
size_bytes_count{app=\"x\"} 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn chunks_resume_where_they_stopped_and_see_new_series() {
        let m = CustomMetrics::new(prometheus::Registry::new());
        for i in 0..100 {
            let id = m.define(MetricKind::Counter, &format!("c_total{{i=\"{i}\"}}"));
            m.increment(id, i);
        }
        let whole = m.render_all();
        let (mut cursor, mut streamed, mut chunks) = (Cursor::default(), Vec::new(), 0);
        loop {
            let mut chunk = Vec::new();
            let more = m.render_next(&mut cursor, &mut chunk, 128);
            assert!(chunk.len() < 128 + 64, "a chunk overshoots by at most one series");
            streamed.extend_from_slice(&chunk);
            chunks += 1;
            if chunks == 3 {
                // Defined mid-scrape, in the family being written: included.
                let late = m.define(MetricKind::Counter, r#"c_total{i="late"}"#);
                m.increment(late, 1);
            }
            if !more {
                break;
            }
        }
        assert!(chunks > 10, "{chunks}");
        let streamed = String::from_utf8(streamed).unwrap();
        assert_eq!(streamed, m.render_all());
        assert!(streamed.starts_with(&whole[..whole.len() - 1]) && streamed.ends_with("c_total{i=\"late\"} 1\n"));
    }
}
