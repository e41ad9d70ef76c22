//! Envoy's `%START_TIME%` default rendering: `2026-11-24T13:32:17.123Z` (UTC, ms).

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(unix_ns: u64) -> String {
    wasmesh_sdk::rfc3339(unix_ns / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_envoy() {
        // Nanoseconds are cut to milliseconds (the calendar is `wasmesh_sdk::rfc3339`'s).
        assert_eq!(rfc3339_millis(951_827_696_789_000_123), "2000-02-29T12:34:56.789Z");
        assert_eq!(rfc3339_millis(1_704_067_199_999_999_999), "2023-12-31T23:59:59.999Z");
    }
}
