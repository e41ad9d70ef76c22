//! `Millis`: a duration written as `250ms`, `10s`, `1m` (or a bare number of milliseconds).

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration in whole milliseconds, written in config as `250ms`, `10s`, `1m30s`, or a
/// number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

// === impl Millis ===

impl Millis {
    /// As a `std::time::Duration`.
    pub fn get(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// `None` when zero (zero disables a timeout).
    pub fn non_zero(self) -> Option<Duration> {
        (self.0 > 0).then(|| self.get())
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Millis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"10s\" or \"1m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Millis, E> {
                Ok(Millis(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Millis, E> {
                u64::try_from(v).map(Millis).map_err(|_| E::custom(format!("negative duration {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Millis, E> {
                let d = humantime::parse_duration(v.trim())
                    .map_err(|e| E::custom(format!("invalid duration \"{v}\": {e}")))?;
                u64::try_from(d.as_millis()).map(Millis).map_err(|_| E::custom(format!("duration \"{v}\" is too long")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for Millis {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: \"250ms\", \"10s\", \"1m30s\", or a number of milliseconds.",
            "oneOf": [
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zµ]+.*$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Millis, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(s)
    }

    #[test]
    fn parses_units_and_numbers() {
        assert_eq!(parse("250ms").ok(), Some(Millis(250)));
        assert_eq!(parse("10s").ok(), Some(Millis(10_000)));
        assert_eq!(parse("1m 30s").ok(), Some(Millis(90_000)));
        assert_eq!(parse("42").ok(), Some(Millis(42)));
    }

    #[test]
    fn rejects_garbage_with_the_value_in_the_message() {
        let err = parse("ten seconds").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("invalid duration \"ten seconds\""), "{err}");
        assert!(parse("-5").is_err());
    }
}
