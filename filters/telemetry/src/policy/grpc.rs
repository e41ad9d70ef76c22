//! Counting gRPC messages in a body seen chunk by chunk (for `istio_request_messages_total`
//! / `istio_response_messages_total`). Each message is a 5-byte prefix (1 flag byte, 4
//! bytes big-endian length) and its payload; only the prefixes are read.

/// Message counter for one direction of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameCounter {
    /// Payload bytes of the current message still to skip.
    skip: u64,
    /// Prefix bytes collected so far (a prefix may straddle chunks).
    prefix: [u8; 5],
    have: usize,
    /// Messages whose prefix was seen.
    pub messages: u64,
    /// Reading the body failed: stop counting.
    broken: bool,
}

// === impl FrameCounter ===

impl FrameCounter {
    /// Feeds a chunk of `len` bytes; `read(offset, n)` returns `n` bytes of the chunk from
    /// `offset` (only prefix bytes are asked for). Returns the messages counted so far.
    pub fn feed(&mut self, len: usize, mut read: impl FnMut(usize, usize) -> Option<Vec<u8>>) -> u64 {
        let mut pos = 0usize;
        while pos < len && !self.broken {
            if self.skip > 0 {
                let step = usize::try_from(self.skip).unwrap_or(usize::MAX).min(len - pos);
                pos += step;
                self.skip -= step as u64;
                continue;
            }
            let n = (5 - self.have).min(len - pos);
            match read(pos, n) {
                Some(bytes) if bytes.len() == n => {
                    self.prefix[self.have..self.have + n].copy_from_slice(&bytes);
                    self.have += n;
                    pos += n;
                }
                _ => {
                    self.broken = true;
                    break;
                }
            }
            if self.have == 5 {
                self.messages += 1;
                self.skip =
                    u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
                self.have = 0;
            }
        }
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn feed_in_chunks(body: &[u8], chunk: usize) -> (u64, usize) {
        let mut c = FrameCounter::default();
        let mut bytes_read = 0;
        for part in body.chunks(chunk) {
            c.feed(part.len(), |off, n| {
                bytes_read += n;
                part.get(off..off + n).map(<[u8]>::to_vec)
            });
        }
        (c.messages, bytes_read)
    }

    #[test]
    fn counts_messages_across_any_chunking() {
        let mut body = Vec::new();
        body.extend(message(b"hello"));
        body.extend(message(b""));
        body.extend(message(&[7; 300]));
        for chunk in [1, 2, 3, 4, 5, 6, 7, 64, 1000] {
            let (n, read) = feed_in_chunks(&body, chunk);
            assert_eq!(n, 3, "chunk size {chunk}");
            assert_eq!(read, 15, "only the 3 prefixes are read (chunk size {chunk})");
        }
    }

    #[test]
    fn a_failed_read_stops_counting() {
        let mut c = FrameCounter::default();
        assert_eq!(c.feed(10, |_, _| None), 0);
        assert_eq!(c.feed(10, |_, n| Some(vec![0; n])), 0, "stays broken");
        let mut c = FrameCounter::default();
        assert_eq!(c.feed(10, |_, n| Some(vec![0; n.saturating_sub(1)])), 0, "short reads are failures");
    }

    #[test]
    fn huge_declared_lengths_are_skipped_without_reading() {
        let mut c = FrameCounter::default();
        let mut reads = 0;
        c.feed(5, |_, n| {
            reads += 1;
            Some(vec![0, 0xff, 0xff, 0xff, 0xff][..n].to_vec())
        });
        assert_eq!(c.feed(1 << 20, |_, _| panic!("payload must not be read")), 1);
        assert_eq!(reads, 1);
    }
}
