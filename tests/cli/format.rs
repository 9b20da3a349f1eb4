//! `--param` substitution (`totogate::verify::str_format`, Python's
//! `template.format(**params)` with every value a `str`) against CPython's,
//! on random templates from a fixed seed: literal text and `{{ }}` escapes,
//! replacement fields with names, indexes, conversions and format specs
//! (fill, alignment, sign, `#`, `0`, width, grouping, precision, type, and
//! a nested field in the spec), and malformed ones. Where Python formats,
//! the text must be the same; where it raises, so must we.
//!
//! Two known differences are left out of the draw: attribute access
//! (`{a.upper}`: Python formats a bound method's repr, with an address) and
//! `!r` of a non-ASCII value (which characters `repr` keeps needs Python's
//! Unicode tables); both are refused here, with a message saying so.

use std::collections::BTreeMap;

use super::common::*;

/// One replacement field (or, now and then, a malformed one).
fn field(rng: &mut Rng, ascii_only: bool) -> String {
    let names: &[&str] = if ascii_only {
        &["a", "b", "q", "e", "w", "n", "missing", "", "0", "1"]
    } else {
        &["a", "b", "q", "e", "w", "n", "u", "missing", "", "0"]
    };
    let name = rng.pick(names);
    let index = rng.some(&[&["[0]", "[1]", "[4]", "[9]", "[x]", "[-1]", "[]", "[01]"]]);
    let conversion = rng.some(&[&["!s", "!a", "!r", "!x", "!"]]);
    let conversion = if name == "u" && conversion == "!r" {
        "!a".to_string()
    } else {
        conversion
    };
    let spec = if rng.below(3) == 0 {
        String::new()
    } else if rng.below(2) == 0 {
        // What a str takes: fill and alignment, `0`, width, precision, `s`.
        let mut s = String::from(":");
        s += &rng.some(&[
            &["*", "x", "0", " ", "é", "<", "^"],
            &["<", ">", "^"],
            &["0"],
            &["1", "4", "5", "7", "12", "{n}"],
            &[".0", ".1", ".2", ".5", ".{n}"],
            &["s"],
        ]);
        s
    } else {
        let mut s = String::from(":");
        s += &rng.some(&[
            &["*", "x", "0", " ", "é", "{", "}"],
            &["<", ">", "^", "="],
            &["+", "-", " "],
            &["#"],
            &["0"],
            &["1", "5", "12", "{n}", "{missing}", "{n}{n}"],
            &[",", "_"],
            &[".0", ".2", ".10", ".{n}", "."],
            &["s", "d", "x", "r", "%", "S"],
        ]);
        s
    };
    let close = if rng.below(40) == 0 { "" } else { "}" };
    format!("{{{name}{index}{conversion}{spec}{close}")
}

fn template(rng: &mut Rng) -> String {
    let parts = rng.below(4) + 1;
    let ascii_only = rng.below(2) == 0;
    (0..parts)
        .map(|_| match rng.below(6) {
            0 => rng.pick(&["", "x", "src/", "a b", "ü", "-"]).to_string(),
            1 => rng.pick(&["{{", "}}", "{", "}", "{{}}"]).to_string(),
            _ => field(rng, ascii_only),
        })
        .collect()
}

#[test]
fn param_substitution_agrees_with_python_str_format() {
    let params: BTreeMap<String, String> = [
        ("a", "hello"),
        ("b", "it's \"so\""),
        ("q", "say \"hi\"\\n"),
        ("e", ""),
        ("w", "1234567890"),
        ("n", "3"),
        ("u", "wörld €"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut rng = Rng(20261126);
    let templates: Vec<String> = (0..60_000).map(|_| template(&mut rng)).collect();
    let script = "import json, sys\n\
                  templates, params = json.load(open(sys.argv[1], encoding='utf-8'))\n\
                  def one(t):\n\
                  \x20   try:\n\
                  \x20       return [True, t.format(**params)]\n\
                  \x20   except Exception as e:\n\
                  \x20       return [False, type(e).__name__ + ': ' + str(e)]\n\
                  print(json.dumps([one(t) for t in templates]))";
    let python: Vec<(bool, String)> = python_answers(script, &(&templates, &params));
    assert_eq!(python.len(), templates.len());
    let mut formatted = 0;
    let mut differ = Vec::new();
    for (t, (py_ok, py_text)) in templates.iter().zip(&python) {
        let ours = totogate::verify::str_format(t, &params);
        formatted += usize::from(*py_ok);
        match (&ours, py_ok) {
            (Ok(text), true) if text == py_text => {}
            (Err(_), false) => {}
            _ => differ.push(format!("{t:?}: ours {ours:?}, Python {py_ok} {py_text:?}")),
        }
    }
    assert_none_differ(&differ, templates.len(), "templates");
    // The draw is worth something: Python formats many and refuses many.
    assert!(
        formatted > 10_000 && formatted < templates.len() - 10_000,
        "{formatted} formatted"
    );
}
