//! The span export queue: a bounded buffer filled by requests and drained in batches by
//! the root context's timer, with a cap on export calls in flight. Requests never wait:
//! a full buffer drops the span (the caller counts it).

use std::collections::{HashMap, VecDeque};

use super::otlp::Span;

/// Buffered spans and the export calls in flight.
#[derive(Debug)]
pub struct ExportQueue {
    spans: VecDeque<Span>,
    max_buffer: usize,
    max_batch: usize,
    max_in_flight: usize,
    /// Call token → spans in that call.
    in_flight: HashMap<u32, usize>,
}

// === impl ExportQueue ===

impl ExportQueue {
    /// A queue holding at most `max_buffer` spans, exporting `max_batch` per call with at
    /// most `max_in_flight` calls outstanding.
    pub fn new(max_buffer: usize, max_batch: usize, max_in_flight: usize) -> Self {
        ExportQueue {
            spans: VecDeque::new(),
            max_buffer,
            max_batch: max_batch.max(1),
            max_in_flight: max_in_flight.max(1),
            in_flight: HashMap::new(),
        }
    }

    /// Buffers a span; `false` when the buffer is full (the span is dropped).
    pub fn push(&mut self, span: Span) -> bool {
        if self.spans.len() >= self.max_buffer {
            return false;
        }
        self.spans.push_back(span);
        true
    }

    /// Spans buffered.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when no span is buffered.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The next batch to send (oldest first), unless nothing is buffered or the calls in
    /// flight are at the cap. Report the call with [`sent`](Self::sent) or, if it could
    /// not be dispatched, count the batch as dropped.
    pub fn next_batch(&mut self) -> Option<Vec<Span>> {
        if self.spans.is_empty() || self.in_flight.len() >= self.max_in_flight {
            return None;
        }
        let n = self.spans.len().min(self.max_batch);
        Some(self.spans.drain(..n).collect())
    }

    /// Records a dispatched call carrying `n` spans.
    pub fn sent(&mut self, token: u32, n: usize) {
        self.in_flight.insert(token, n);
    }

    /// A call finished: how many spans it carried (`None`: not ours).
    pub fn finished(&mut self, token: u32) -> Option<usize> {
        self.in_flight.remove(&token)
    }
}

#[cfg(test)]
mod tests {
    use super::super::otlp::{Span, SpanKind};
    use super::*;

    fn span(id: u64) -> Span {
        Span {
            trace_id: 1,
            span_id: id,
            parent_span_id: None,
            trace_state: None,
            name: String::new(),
            kind: SpanKind::Server,
            start_unix_ns: 0,
            end_unix_ns: 0,
            attributes: Vec::new(),
            error: false,
        }
    }

    #[test]
    fn buffer_is_bounded() {
        let mut q = ExportQueue::new(3, 2, 1);
        assert!(q.push(span(1)) && q.push(span(2)) && q.push(span(3)));
        assert!(!q.push(span(4)), "full buffer drops");
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn batches_are_capped_and_in_order_with_bounded_calls_in_flight() {
        let mut q = ExportQueue::new(10, 2, 2);
        for i in 1..=5 {
            q.push(span(i));
        }
        let ids = |b: Option<Vec<Span>>| b.unwrap_or_default().iter().map(|s| s.span_id).collect::<Vec<_>>();
        assert_eq!(ids(q.next_batch()), vec![1, 2]);
        q.sent(7, 2);
        assert_eq!(ids(q.next_batch()), vec![3, 4]);
        q.sent(8, 2);
        assert!(q.next_batch().is_none(), "two calls in flight: wait");
        assert_eq!(q.finished(7), Some(2));
        assert_eq!(q.finished(7), None, "a token finishes once");
        assert_eq!(q.finished(99), None);
        assert_eq!(ids(q.next_batch()), vec![5]);
        q.sent(9, 1);
        assert!(q.is_empty());
        assert!(q.next_batch().is_none(), "nothing buffered");
        // Room again after the drain.
        assert!(q.push(span(6)));
    }
}
