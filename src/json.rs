//! Strict JSON input and Python-compatible JSON output.
//!
//! Input: metadata files are untrusted, so [`parse_strict`] caps their size and
//! nesting depth and refuses duplicate object keys (Python's `json` silently keeps
//! the last one, which lets two readers of one file see different documents).
//!
//! Output: the reference implementation writes metadata with Python's
//! `json.dumps(..., sort_keys=True)` (ASCII-escaped, keys sorted by code point).
//! [`to_python_json`] reproduces those bytes so files either side writes are equal.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Caps applied to every metadata document before it is parsed.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimits {
    /// Largest accepted document. Links for large trees reach a few MiB
    /// (20,000 artifacts is about 2.5 MiB); 64 MiB stops memory exhaustion.
    pub max_bytes: usize,
    /// Deepest accepted nesting. in-toto metadata nests at most ~6 levels
    /// (plus opaque `byproducts`/`environment`); 64 stops stack exhaustion.
    pub max_depth: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_bytes: 64 << 20,
            max_depth: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("document is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Syntax(String),
}

/// Parses untrusted JSON, refusing duplicate keys, excessive nesting and size.
pub fn parse_strict(bytes: &[u8], limits: JsonLimits) -> Result<Value, JsonError> {
    if bytes.len() > limits.max_bytes {
        return Err(JsonError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed {
        depth_left: limits.max_depth,
    }
    .deserialize(&mut de)
    .map_err(|e| JsonError::Syntax(e.to_string()))?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(value)
}

const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Deserialises one value the way [`parse_strict`] does (duplicate keys
/// refused, nesting capped at `depth_left` more levels).
pub(crate) struct StrictSeed {
    depth_left: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl StrictSeed {
    pub(crate) fn new(depth_left: usize) -> StrictSeed {
        StrictSeed { depth_left }
    }
    fn nested<E: de::Error>(&self) -> Result<StrictSeed, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(StrictSeed { depth_left }),
            None => Err(E::custom("nesting deeper than the limit")),
        }
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.nested()?)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // With `arbitrary_precision`, serde_json hands a number over as a
            // one-entry map; integers of any size survive (Python's do).
            if key == NUMBER_TOKEN && out.is_empty() {
                let digits: String = map.next_value()?;
                let n: serde_json::Number = digits.parse().map_err(de::Error::custom)?;
                return Ok(Value::Number(n));
            }
            let value = map.next_value_seed(self.nested()?)?;
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
        }
        Ok(Value::Object(out))
    }
}

/// The separators and indentation of a Python `json.dumps` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyStyle {
    /// `json.dumps(v, indent=1, separators=(",", ": "), sort_keys=True)`:
    /// how the reference writes Metablock files.
    Indent1,
    /// `json.dumps(v, sort_keys=True)`: DSSE envelopes and their payloads.
    Default,
    /// `separators=(",", ":")`: the reference's `compact_json`.
    Compact,
}

/// Serialises `value` exactly as Python's `json.dumps` with `sort_keys=True`
/// and the given style (ASCII-only output, `\uXXXX` escapes).
pub fn to_python_json(value: &Value, style: PyStyle) -> String {
    let mut out = String::new();
    write_py(value, style, 0, &mut out);
    out
}

/// Writes `value` at nesting `depth` (for documents assembled piecewise with
/// [`PyContainer`]).
pub fn write_py(value: &Value, style: PyStyle, depth: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_py_number(&n.to_string(), out),
        Value::String(s) => write_py_str(s, out),
        Value::Array(items) => {
            let mut c = PyContainer::array(out, style, depth);
            for item in items {
                write_py(item, style, depth + 1, c.item());
            }
            c.end();
        }
        Value::Object(map) => write_py_object(map, style, depth, out),
    }
}

/// [`write_py`] for an object's entries (keys sorted by code point).
pub fn write_py_object(map: &Map<String, Value>, style: PyStyle, depth: usize, out: &mut String) {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut c = PyContainer::object(out, style, depth);
    for (k, v) in entries {
        write_py(v, style, depth + 1, c.key(k));
    }
    c.end();
}

/// One JSON array or object being written in a Python `json.dumps` style:
/// separators, indentation and the empty forms (`[]`, `{}`) as Python writes
/// them. Lets typed values (a link's artifact maps) be written without first
/// building a [`Value`] tree. The caller writes keys in sorted order.
pub struct PyContainer<'o> {
    out: &'o mut String,
    style: PyStyle,
    depth: usize,
    count: usize,
    close: char,
}

impl<'o> PyContainer<'o> {
    pub fn object(out: &'o mut String, style: PyStyle, depth: usize) -> PyContainer<'o> {
        out.push('{');
        PyContainer {
            out,
            style,
            depth,
            count: 0,
            close: '}',
        }
    }
    pub fn array(out: &'o mut String, style: PyStyle, depth: usize) -> PyContainer<'o> {
        out.push('[');
        PyContainer {
            out,
            style,
            depth,
            count: 0,
            close: ']',
        }
    }
    fn newline(&mut self, depth: usize) {
        if self.style == PyStyle::Indent1 {
            self.out.push('\n');
            self.out.extend(std::iter::repeat_n(' ', depth));
        }
    }
    /// The text written so far (a caller writing in chunks may drain it:
    /// the container only appends).
    pub fn text(&mut self) -> &mut String {
        self.out
    }
    /// Starts the next array item; write it (at depth + 1) into the result.
    pub fn item(&mut self) -> &mut String {
        if self.count > 0 {
            self.out.push_str(match self.style {
                PyStyle::Default => ", ",
                PyStyle::Indent1 | PyStyle::Compact => ",",
            });
        }
        self.count += 1;
        self.newline(self.depth + 1);
        self.out
    }
    /// Starts the next object entry with its key; write the value (at
    /// depth + 1) into the result.
    pub fn key(&mut self, key: &str) -> &mut String {
        self.item();
        write_py_str(key, self.out);
        self.out.push_str(match self.style {
            PyStyle::Compact => ":",
            PyStyle::Indent1 | PyStyle::Default => ": ",
        });
        self.out
    }
    pub fn end(mut self) {
        if self.count > 0 {
            self.newline(self.depth);
        }
        self.out.push(self.close);
    }
}

/// A JSON number as Python writes what `json.loads` made of it. A spelling
/// without a fraction or exponent is an `int`, written in decimal (`-0` is
/// `0`); any other is a `float`, written as `float.__repr__` does: the
/// shortest digits that read back to the same double, in positional form
/// from 1e-4 up to (not including) 1e16 with `.0` on a whole number, in
/// exponent form (`1e-05`, `1.5e+16`) outside, and `Infinity`/`-Infinity`
/// for a spelling too large for a double.
fn write_py_number(text: &str, out: &mut String) {
    if !text.contains(['.', 'e', 'E']) {
        out.push_str(if text == "-0" { "0" } else { text });
        return;
    }
    // Rust reads decimal text correctly rounded, as Python does, and prints
    // the shortest digits that read back the same.
    let x: f64 = text.parse().unwrap_or(f64::NAN);
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if x.is_nan() {
        // Not a spelling JSON allows: write it as it came.
        out.push_str(text);
        return;
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` writes an exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().expect("`{:e}` writes a decimal exponent");
    if x.is_sign_negative() {
        out.push('-');
    }
    // Python's `format_float_short` for repr: the decimal point sits after
    // `decpt` digits.
    let decpt = exp + 1;
    if (-3..=16).contains(&decpt) {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else {
            let d = decpt as usize;
            if d < digits.len() {
                out.push_str(&digits[..d]);
                out.push('.');
                out.push_str(&digits[d..]);
            } else {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', d - digits.len()));
                out.push_str(".0");
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        out.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    }
}

/// Python's `json` ASCII encoder: escapes `"`, `\`, the short control escapes,
/// and every character outside `' '..='~'` as `\uXXXX` (UTF-16 surrogate pairs
/// above U+FFFF).
pub fn write_py_str(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Numbers as Python's `json.dumps(json.loads(text))` writes them
    /// (each pair checked against CPython 3.11): integers as spelled (`-0`
    /// as `0`), floats as `repr` writes them.
    #[test]
    fn numbers_are_written_as_python_reads_and_writes_them() {
        for (text, python) in [
            ("0", "0"),
            ("-0", "0"),
            ("-17", "-17"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("0.0", "0.0"),
            ("-0.0", "-0.0"),
            ("1.50", "1.5"),
            ("100.0", "100.0"),
            ("1E5", "100000.0"),
            ("1e-4", "0.0001"),
            ("1e-5", "1e-05"),
            ("0.00012", "0.00012"),
            ("1e15", "1000000000000000.0"),
            ("1e16", "1e+16"),
            ("12345678901234567890.5", "1.2345678901234567e+19"),
            ("2.5e+10", "25000000000.0"),
            ("1e22", "1e+22"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("3.141592653589793238", "3.141592653589793"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("1e-400", "0.0"),
        ] {
            let v = parse_strict(text.as_bytes(), JsonLimits::default()).unwrap();
            assert_eq!(to_python_json(&v, PyStyle::Compact), python, "{text}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse_strict(br#"{"a":1,"a":2}"#, JsonLimits::default()).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"a\""), "{err}");
    }

    #[test]
    fn depth_is_capped() {
        let deep = "[".repeat(70) + &"]".repeat(70);
        assert!(parse_strict(deep.as_bytes(), JsonLimits::default()).is_err());
        let ok = "[".repeat(60) + &"]".repeat(60);
        assert!(parse_strict(ok.as_bytes(), JsonLimits::default()).is_ok());
    }

    #[test]
    fn big_integers_survive() {
        let v = parse_strict(
            b"[18446744073709551616, -9223372036854775809, 1.5]",
            JsonLimits::default(),
        )
        .unwrap();
        assert_eq!(
            to_python_json(&v, PyStyle::Compact),
            "[18446744073709551616,-9223372036854775809,1.5]"
        );
        assert_eq!(
            crate::cjson::encode(&v[0]).unwrap(),
            b"18446744073709551616".to_vec()
        );
        assert!(crate::cjson::encode(&v[2]).is_err());
    }

    #[test]
    fn size_is_capped() {
        let limits = JsonLimits {
            max_bytes: 4,
            max_depth: 8,
        };
        assert!(matches!(
            parse_strict(b"[1,2,3]", limits),
            Err(JsonError::TooLarge { .. })
        ));
    }

    #[test]
    fn python_indent1_layout() {
        let v = json!({"b": [1, {"x": []}], "a": {}, "c": "é\u{1F600}\u{7f}\n"});
        assert_eq!(
            to_python_json(&v, PyStyle::Indent1),
            "{\n \"a\": {},\n \"b\": [\n  1,\n  {\n   \"x\": []\n  }\n ],\n \"c\": \"\\u00e9\\ud83d\\ude00\\u007f\\n\"\n}"
        );
        assert_eq!(
            to_python_json(&v, PyStyle::Default),
            "{\"a\": {}, \"b\": [1, {\"x\": []}], \"c\": \"\\u00e9\\ud83d\\ude00\\u007f\\n\"}"
        );
    }
}
