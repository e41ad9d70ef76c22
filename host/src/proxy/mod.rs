//! One request's journey: header fix-ups, the filter chain, the upstream exchange, local replies.
