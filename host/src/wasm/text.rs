//! Bytes from guests and headers as text, never failing: invalid UTF-8 is replaced (the
//! Rust SDK unwraps `String::from_utf8` on what the host returns, so one obs-text byte
//! from a client must not reach it raw).

use std::borrow::Cow;

/// `bytes` as text: borrowed when valid UTF-8 (the common case, checked by the standard
/// library's word-at-a-time validation), else with replacement characters.
/// `String::from_utf8_lossy` alone walks byte by byte even when nothing needs replacing.
pub(crate) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Like [`lossy`], as bytes.
pub(crate) fn lossy_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    match lossy(bytes) {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_borrowed_and_invalid_bytes_are_replaced() {
        assert!(matches!(lossy(b"bearer abc"), Cow::Borrowed("bearer abc")));
        assert_eq!(lossy(b"a\xffb"), "a\u{fffd}b");
        assert!(matches!(lossy_bytes(b"x"), Cow::Borrowed(b"x")));
        assert_eq!(&*lossy_bytes(b"\xc3("), "\u{fffd}(".as_bytes());
    }
}
