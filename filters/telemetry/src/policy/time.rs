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
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29T12:34:56.789Z = 951827696 s.
        assert_eq!(rfc3339_millis(951_827_696_789_000_123), "2000-02-29T12:34:56.789Z");
        // 2026-11-24T13:32:17Z = 1795527137 s.
        assert_eq!(rfc3339_millis(1_795_527_137_000_000_000), "2026-11-24T13:32:17.000Z");
        assert_eq!(rfc3339_millis(1_704_067_199_999_999_999), "2023-12-31T23:59:59.999Z");
    }
}
