//! securesystemslib canonical JSON: the bytes that get signed.
//!
//! Matches `securesystemslib.formats.encode_canonical`: object keys sorted by
//! code point, no whitespace, strings in raw UTF-8 with only `\` and `"`
//! escaped (control characters pass through unescaped), integers in decimal,
//! and no floats at all. `olpc-cjson` escapes differently, so it is not used.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("canonical JSON has no floats, found {0}")]
    Float(String),
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
        Value::Number(n) if n.is_f64() => return Err(CanonicalError::Float(n.to_string())),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
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
        }
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
}
