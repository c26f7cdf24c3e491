//! How contract values look in JSON: RFC 3339 UTC timestamps, and numbers that proto3
//! JSON allows to arrive as strings (64-bit integers always do in proto3 JSON).
//!
//! Error messages start with fixed words ("unparseable timestamp", "invalid type") so
//! `json::classify` can turn them into typed [`crate::Problem`]s.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// The one timestamp text form we write: RFC 3339 in UTC with a `Z`, with sub-second
/// digits only when there are any.
pub fn format_timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Whether an instant is one both encodings carry: years 0001 to 9999, the range of
/// `google.protobuf.Timestamp` (RFC 3339 writes four-digit years, from 0000). Both
/// readers refuse anything else, so a reading accepted in one encoding can always be
/// written in the other: before, a protobuf reading dated in year 10000 was accepted
/// and its JSON form (`+10000-01-01T00:00:00Z`) refused: a breach of the fuzz target
/// `protobuf_reading`'s JSON round-trip property, found while writing it
/// (tests/fuzz_regressions.rs).
pub(crate) fn in_contract_range(at: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&at.year())
}

/// Reads RFC 3339 with any offset and keeps it as UTC; years 0001 to 9999 once in UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    let at = match parse_canonical(text.as_bytes()) {
        Some(at) => at,
        None => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("unparseable timestamp {text:?} ({e})"))?,
    };
    if in_contract_range(&at) {
        Ok(at)
    } else {
        Err(format!(
            "unparseable timestamp {text:?} (outside the years 0001 to 9999 in UTC)"
        ))
    }
}

/// The form every gateway sends and we write, `YYYY-MM-DDTHH:MM:SSZ`, read directly:
/// two of them in every reading, and the general RFC 3339 parser costs ten times more.
/// Anything else (offsets, fractions, lowercase, leap seconds) goes to that parser.
fn parse_canonical(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    let time = date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(time.and_utc())
}

pub mod timestamp {
    use super::*;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(TimestampVisitor)
    }
}

/// Parses the text where the deserializer has it, without copying it into a String.
struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse_timestamp(text).map_err(E::custom)
    }
}

pub mod opt_timestamp {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&format_timestamp(at)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        struct Wrapped(DateTime<Utc>);
        impl<'de> Deserialize<'de> for Wrapped {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(TimestampVisitor).map(Wrapped)
            }
        }
        Ok(<Option<Wrapped>>::deserialize(d)?.map(|w| w.0))
    }
}

/// A number that may also arrive as a decimal string (proto3 JSON).
struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        // proto3 JSON spells the non-finite doubles this way; they are read so that
        // validation can name them, rather than failing as an unexplained type error.
        match v {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => v
                .trim()
                .parse()
                .map_err(|_| E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }
}

pub mod number {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(NumberVisitor)
    }
}

pub mod opt_number {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        struct OptVisitor;
        impl<'de> Visitor<'de> for OptVisitor {
            type Value = Option<f64>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(NumberVisitor).map(Some)
            }
        }
        d.deserialize_option(OptVisitor)
    }
}

/// Unsigned integers: a JSON number, or a decimal string as proto3 JSON writes uint64.
fn unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct UnsignedVisitor;
    impl Visitor<'_> for UnsignedVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an unsigned integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse()
                .map_err(|_| E::invalid_type(de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(UnsignedVisitor)
}

pub mod uint64 {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        unsigned(d)
    }
}

pub mod uint32 {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = unsigned(d)?;
        u32::try_from(v).map_err(|_| {
            de::Error::invalid_value(de::Unexpected::Unsigned(v), &"an unsigned 32-bit integer")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_timestamps_read_as_the_general_parser_reads_them() {
        for text in [
            "2026-01-04T23:58:19Z",
            "2024-02-29T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let general = DateTime::parse_from_rfc3339(text).map(|t| t.to_utc());
            assert_eq!(parse_canonical(text.as_bytes()), general.ok(), "{text}");
        }
    }

    #[test]
    fn other_forms_fall_back_to_the_general_parser() {
        for text in [
            "2026-01-04T23:58:19+01:00",
            "2026-01-04T23:58:19.5Z",
            "2026-01-04t23:58:19z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2016-12-31T23:59:60Z",
            "2026-01-04T2a:58:19Z",
        ] {
            assert_eq!(parse_canonical(text.as_bytes()), None, "{text}");
            let general = DateTime::parse_from_rfc3339(text).map(|t| t.to_utc());
            assert_eq!(parse_timestamp(text).ok(), general.ok(), "{text}");
        }
    }
}
