//! securesystemslib canonical JSON: the bytes that get signed.
//!
//! Matches `securesystemslib.formats.encode_canonical`: object keys sorted by
//! code point, no whitespace, strings in raw UTF-8 with only `\` and `"`
//! escaped (control characters pass through unescaped), integers in decimal,
//! and no floats at all. `olpc-cjson` escapes differently, so it is not used.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("canonical JSON has no floats, found {0}")]
    Float(String),
    #[error("an integer of {0} digits, more than Python converts")]
    IntTooLong(usize),
}

/// Canonical bytes of `value`.
pub fn encode(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical bytes of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    write(value, out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(&n.to_string(), out)?,
        Value::String(s) => write_str(s, out),
        Value::Array(items) => write_array(items, out)?,
        Value::Object(map) => write_object(map, out)?,
    }
    Ok(())
}

/// Appends the canonical bytes of a JSON array of `items` (without building
/// a [`Value`] around a borrowed slice).
pub fn write_array(items: &[Value], out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(item, out)?;
    }
    out.push(b']');
    Ok(())
}

/// Appends the canonical bytes of a JSON object (without building a
/// [`Value`] around a borrowed map).
pub fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    let mut entries: Vec<_> = map.iter().collect();
    // Rust orders `str` by UTF-8 bytes, which is code point order, as Python's `sorted`.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write(v, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// Python's `json.loads` makes an `int` of a number spelled without a
/// fraction or exponent and a `float` of any other; `encode_canonical` writes
/// an int as `str(int)` and refuses a float. serde_json (with
/// `arbitrary_precision`) keeps the document's spelling, so it is normalised
/// here: `-0` is the int 0 (the only integer spelling JSON allows whose
/// `str` differs), and `1.0`, `1e2`, `1E400` are floats, whatever their value.
/// Python also refuses to convert an integer of more than 4300 digits
/// (`sys.int_info.str_digits_check_threshold`), so such a number cannot be
/// loaded there; it is refused here too.
fn write_number(text: &str, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    const PY_INT_MAX_STR_DIGITS: usize = 4300;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CanonicalError::Float(text.to_owned()));
    }
    if digits.len() > PY_INT_MAX_STR_DIGITS {
        return Err(CanonicalError::IntTooLong(digits.len()));
    }
    if digits.bytes().all(|b| b == b'0') {
        out.push(b'0');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    Ok(())
}

/// Appends a canonical JSON string.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    if !s.bytes().any(|b| b == b'\\' || b == b'"') {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for b in s.bytes() {
        if b == b'\\' || b == b'"' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_and_escapes_like_securesystemslib() {
        let v = json!({"b": [1, true, null], "a": "q\"\\\n é", "é": {}, "Z": -3});
        assert_eq!(
            String::from_utf8(encode(&v).unwrap()).unwrap(),
            "{\"Z\":-3,\"a\":\"q\\\"\\\\\n é\",\"b\":[1,true,null],\"é\":{}}"
        );
    }

    #[test]
    fn typed_link_bytes_equal_generic_encoding() {
        let v = json!({"_type": "link", "name": "b\"é", "command": ["a", "\\"],
            "materials": {"z": {"sha256": "00"}, "a/é": {"sha512": "ff", "sha256": "01"}},
            "products": {}, "byproducts": {"return-value": 0, "stdout": "x\ny"}, "environment": {}});
        let link = crate::model::Link::from_value(&v, "link").unwrap();
        assert_eq!(
            link.canonical_bytes().unwrap(),
            encode(&link.to_value()).unwrap()
        );
        assert_eq!(encode(&v).unwrap(), encode(&link.to_value()).unwrap());
    }

    #[test]
    fn floats_are_refused() {
        assert!(encode(&json!({"x": 1.5})).is_err());
    }

    fn parsed(text: &str) -> Result<String, CanonicalError> {
        let v = crate::json::parse_strict(text.as_bytes(), Default::default()).unwrap();
        encode(&v).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn integers_are_written_as_python_str_int() {
        assert_eq!(parsed("[-0, 0, -1, 7]").unwrap(), "[0,0,-1,7]");
        let big = "-123456789012345678901234567890123456789";
        assert_eq!(parsed(big).unwrap(), big);
        assert_eq!(parsed(&"9".repeat(4300)).unwrap(), "9".repeat(4300));
        assert!(parsed(&"9".repeat(4301)).is_err());
    }

    #[test]
    fn every_fraction_or_exponent_is_a_float() {
        for f in [
            "1.0", "-0.0", "1e2", "1E2", "-1e-2", "1e400", "-1E+400", "0.5",
        ] {
            assert!(parsed(f).is_err(), "{f}");
        }
    }
}
