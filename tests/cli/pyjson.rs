//! Writing JSON as the reference does (`totogate::json::to_python_json`,
//! Python's `json.dumps(..., sort_keys=True)` in the three styles the
//! reference uses) against CPython's, on random documents from a fixed
//! seed: nested objects and arrays (empty ones too), keys and strings with
//! quotes, backslashes, control characters, non-ASCII and astral
//! characters (written as `\uXXXX` and surrogate pairs), integers of any
//! size, and floats in every spelling JSON allows. The same documents go
//! through canonical JSON against securesystemslib's `encode_canonical`.

use super::common::*;
use totogate::json::{parse_strict, to_python_json, JsonLimits, PyStyle};

/// A JSON string literal, as a document may spell it.
fn string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "Z",
        " ",
        "~",
        "\\\"",
        "\\\\",
        "\\/",
        "\\n",
        "\\t",
        "\\b",
        "\\f",
        "\\r",
        "\\u0000",
        "\\u001f",
        "\\u007f",
        "\\u0080",
        "é",
        "€",
        "😀",
        "\\ud83d\\ude00",
        "\\u00e9",
        "\u{7f}",
        "\u{a0}",
        "\u{2028}",
        "\u{fffd}",
        "\u{10ffff}",
    ];
    let len = rng.below(5);
    let body: String = (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect();
    format!("\"{body}\"")
}

fn number(rng: &mut Rng) -> &'static str {
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-17",
        "255",
        "9007199254740993",
        "123456789012345678901234567890",
        "-98765432109876543210",
        "0.0",
        "-0.0",
        "1.5",
        "1.50",
        "0.1",
        "100.0",
        "1e5",
        "1E5",
        "1e+5",
        "1e-5",
        "1e-4",
        "0.0001",
        "0.00001",
        "1e15",
        "1e16",
        "1e17",
        "123456789.125",
        "2.5e+10",
        "1e22",
        "1e23",
        "5e-324",
        "1.7976931348623157e308",
        "1e400",
        "-1e400",
        "3.141592653589793238462643383279",
        "12345678901234567890.5",
    ];
    NUMBERS[rng.below(NUMBERS.len())]
}

fn value(rng: &mut Rng, depth: usize) -> String {
    let kinds = if depth >= 4 { 5 } else { 7 };
    match rng.below(kinds) {
        0 => "null".into(),
        1 => ["true", "false"][rng.below(2)].into(),
        2 | 3 => number(rng).into(),
        4 => string(rng),
        5 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| value(rng, depth + 1)).collect();
            format!("[{}]", items.join(", "))
        }
        _ => {
            let n = rng.below(4);
            let mut keys: Vec<String> = Vec::new();
            let mut entries = Vec::new();
            for _ in 0..n {
                let k = string(rng);
                // Distinct keys as Python reads them (duplicates are refused
                // here on purpose, and Python keeps the last).
                let decoded: String = serde_json::from_str(&k).unwrap_or_default();
                if keys.contains(&decoded) {
                    continue;
                }
                keys.push(decoded);
                entries.push(format!("{k}: {}", value(rng, depth + 1)));
            }
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// 20,000 documents drawn from `seed`.
fn documents(seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..20_000).map(|_| value(&mut rng, 0)).collect()
}

#[test]
fn json_written_as_python_writes_it() {
    let docs = documents(20261126);
    let script = "import json, sys\n\
                  docs = json.load(open(sys.argv[1], encoding='utf-8'))\n\
                  def styles(d):\n\
                  \x20   v = json.loads(d)\n\
                  \x20   return [json.dumps(v, indent=1, separators=(',', ': '), sort_keys=True),\n\
                  \x20           json.dumps(v, sort_keys=True),\n\
                  \x20           json.dumps(v, separators=(',', ':'), sort_keys=True)]\n\
                  print(json.dumps([styles(d) for d in docs]))";
    let python: Vec<[String; 3]> = python_answers(script, &docs);
    assert_eq!(python.len(), docs.len());
    let mut differ = Vec::new();
    for (doc, py) in docs.iter().zip(&python) {
        let v = match parse_strict(doc.as_bytes(), JsonLimits::default()) {
            Ok(v) => v,
            Err(e) => {
                differ.push(format!("{doc}: Python reads it, we refuse: {e}"));
                continue;
            }
        };
        for (style, py) in [PyStyle::Indent1, PyStyle::Default, PyStyle::Compact]
            .into_iter()
            .zip(py)
        {
            let ours = to_python_json(&v, style);
            if &ours != py {
                differ.push(format!("{doc} ({style:?}):\n ours   {ours}\n Python {py}"));
            }
        }
    }
    assert_none_differ(&differ, 3 * docs.len(), "outputs");
}

/// The same kind of documents through canonical JSON, the bytes signatures
/// cover: `totogate::cjson::encode` against securesystemslib's
/// `encode_canonical` (the reference's), byte for byte, and both refusing
/// the documents with a float in them.
#[test]
fn canonical_json_as_securesystemslib_writes_it() {
    let docs = documents(20261127);
    let script = "import json, sys\n\
                  from securesystemslib.formats import encode_canonical\n\
                  docs = json.load(open(sys.argv[1], encoding='utf-8'))\n\
                  def one(d):\n\
                  \x20   try:\n\
                  \x20       return encode_canonical(json.loads(d))\n\
                  \x20   except Exception:\n\
                  \x20       return None\n\
                  print(json.dumps([one(d) for d in docs]))";
    let python: Vec<Option<String>> = python_answers(script, &docs);
    assert_eq!(python.len(), docs.len());
    let mut differ = Vec::new();
    for (doc, py) in docs.iter().zip(&python) {
        let v = parse_strict(doc.as_bytes(), JsonLimits::default()).unwrap();
        let ours = totogate::cjson::encode(&v)
            .ok()
            .map(|b| String::from_utf8(b).unwrap());
        if &ours != py {
            differ.push(format!("{doc}:\n ours   {ours:?}\n Python {py:?}"));
        }
    }
    assert_none_differ(&differ, docs.len(), "documents");
    // Both outcomes come up often.
    let encoded = python.iter().filter(|p| p.is_some()).count();
    assert!(
        encoded > 4_000 && encoded < docs.len() - 4_000,
        "{encoded} encoded"
    );
}
