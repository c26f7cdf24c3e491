//! The contract's JSON form of a reading (proto3 JSON mapping, snake_case written,
//! lowerCamelCase also read), with decode errors turned into typed [`Violation`]s.

use serde::Deserialize;
use serde_json::error::Category;

use crate::reading::Reading;
use crate::validation::{InvalidReading, Problem, Violation};

pub use crate::serde_forms::{format_timestamp, parse_timestamp};

/// Decodes one JSON reading and validates it.
pub fn parse_reading(text: &str) -> Result<Reading, InvalidReading> {
    let reading = decode_reading(text)?;
    reading.validate()?;
    Ok(reading)
}

/// Decodes one JSON reading without checking its values.
pub fn decode_reading(text: &str) -> Result<Reading, InvalidReading> {
    if text.trim().is_empty() {
        return Err(InvalidReading::single(
            "",
            Problem::Undecodable {
                detail: "empty line".into(),
            },
        ));
    }
    if !text.trim_start().starts_with('{') {
        // serde would read a struct from an array too; a reading is an object.
        return Err(InvalidReading::single(
            "",
            Problem::Undecodable {
                detail: "not a JSON object".into(),
            },
        ));
    }
    // Fast path: most input is valid, and tracking the field path costs more than the
    // parse itself. Only a failure is decoded again, with the path, to say where.
    let mut de = serde_json::Deserializer::from_str(text);
    if let Ok(reading) = Reading::deserialize(&mut de)
        && de.end().is_ok()
    {
        return Ok(reading);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let reading: Reading =
        serde_path_to_error::deserialize(&mut de).map_err(|e| InvalidReading {
            violations: vec![classify(&e)],
        })?;
    de.end().map_err(|e| {
        InvalidReading::single(
            "",
            Problem::Undecodable {
                detail: without_position(&e.to_string()).to_owned(),
            },
        )
    })?;
    Ok(reading)
}

/// The JSON form of a reading: one line, snake_case, RFC 3339 UTC timestamps.
pub fn to_json(reading: &Reading) -> String {
    // A Reading holds only strings, numbers, bools and lists: serialisation cannot fail.
    serde_json::to_string(reading).unwrap_or_else(|e| unreachable!("reading to json: {e}"))
}

/// Maps a serde error to the field it concerns and the kind of problem.
///
/// serde reports problems as text; the phrases matched here are serde's own stable
/// wording ("missing field", "unknown variant") and our timestamp parser's.
fn classify(err: &serde_path_to_error::Error<serde_json::Error>) -> Violation {
    let inner = err.inner();
    let message = inner.to_string();
    let message = without_position(&message);
    if inner.classify() != Category::Data {
        return Violation::new(
            "",
            Problem::Undecodable {
                detail: message.to_owned(),
            },
        );
    }
    let mut path = err.path().to_string();
    if path == "." {
        path.clear();
    }
    // Errors inside an event arrive as "`field`: problem" (see `PumpEvent`'s reader).
    let mut message = message;
    if let Some(rest) = message.strip_prefix('`')
        && let Some((inner, problem)) = rest.split_once("`: ")
    {
        path = format!("{path}.{inner}");
        message = problem;
    }
    let path = path.as_str();
    let join = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = backticked(message, "missing field `") {
        return Violation::new(join(name), Problem::Missing);
    }
    if let Some(found) = backticked(message, "unknown variant `")
        && path.starts_with("events[")
        && path.ends_with(']')
    {
        return Violation::new(
            join("type"),
            Problem::UnknownEventType {
                found: found.to_owned(),
            },
        );
    }
    if message.starts_with("unparseable timestamp") {
        return Violation::new(
            path,
            Problem::UnparseableTimestamp {
                detail: message.to_owned(),
            },
        );
    }
    if path.is_empty() {
        // The whole value is of the wrong kind (an array, a number): not a reading.
        return Violation::new(
            "",
            Problem::Undecodable {
                detail: format!("not a reading object ({message})"),
            },
        );
    }
    Violation::new(
        path,
        Problem::WrongType {
            detail: message.to_owned(),
        },
    )
}

/// The text between `prefix` and the next backtick.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// serde_json appends " at line L column C"; a reading is one line, so it adds nothing.
fn without_position(message: &str) -> &str {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head)
}
