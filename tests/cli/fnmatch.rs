//! The rules' pattern matcher (`totogate::verify::fnmatch`) against CPython's
//! `fnmatch.fnmatchcase`, which the reference's rules use (`fnmatch.filter`
//! on POSIX), on random patterns and names drawn from a fixed seed. The
//! alphabet is the characters that mean something to fnmatch or to the
//! regular expression CPython translates a pattern into, plus a few that
//! mean nothing, so classes, ranges (empty, reversed, at either end),
//! negation and unclosed brackets all come up often.

use super::common::*;

#[test]
fn fnmatch_agrees_with_python_on_random_patterns() {
    const ALPHABET: &[char] = &[
        'a', 'b', 'c', 'z', 'A', '0', '/', '.', '-', '!', '^', '*', '?', '[', ']', '\\', '&', '~',
        '|', ' ', '\n', 'é', '€',
    ];
    let mut rng = Rng(20261126);
    // Half the names are drawn alone; half are spelled from their pattern
    // (a run of text for `*`, a character for `?` and for each bracket and
    // what is in it), so that matches and near misses are common.
    let pairs: Vec<(String, String)> = (0..40_000)
        .map(|i| {
            let pattern = rng.text(ALPHABET, 8);
            let name = if i % 2 == 0 {
                rng.text(ALPHABET, 6)
            } else {
                let mut name = String::new();
                for c in pattern.chars() {
                    match c {
                        '*' => name.push_str(&rng.text(ALPHABET, 3)),
                        '?' | '[' | ']' | '!' | '-' if rng.below(2) == 0 => {
                            name.push(ALPHABET[rng.below(ALPHABET.len())])
                        }
                        c => name.push(c),
                    }
                }
                name
            };
            (pattern, name)
        })
        .collect();
    let script = "import fnmatch, json, sys\n\
                  pairs = json.load(open(sys.argv[1], encoding='utf-8'))\n\
                  print(json.dumps([fnmatch.fnmatchcase(n, p) for p, n in pairs]))";
    let python: Vec<bool> = python_answers(script, &pairs);
    assert_eq!(python.len(), pairs.len());
    let differ: Vec<String> = pairs
        .iter()
        .zip(&python)
        .filter(|((p, n), py)| totogate::verify::fnmatch::fnmatch(n, p) != **py)
        .map(|((p, n), py)| format!("pattern {p:?}, name {n:?}: Python says {py}"))
        .collect();
    assert_none_differ(&differ, pairs.len(), "pairs");
    // The draw is worth something: both answers come up, often.
    let matched = python.iter().filter(|m| **m).count();
    assert!(
        matched > 4_000 && matched < pairs.len() - 4_000,
        "{matched} match"
    );
}
