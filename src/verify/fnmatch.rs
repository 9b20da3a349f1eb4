//! Python's `fnmatch.fnmatchcase` (POSIX): `*` matches any run of characters
//! including `/`, `?` any one character, `[seq]`/`[!seq]` a class; an
//! unclosed `[` is a literal. No backslash escapes outside classes.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    toks: Vec<Tok>,
    shape: Shape,
}

/// Common patterns matched without the general matcher (rules run over tens
/// of thousands of artifacts): `*`, a literal, `lit*`, `*lit`.
#[derive(Debug, Clone)]
enum Shape {
    Everything,
    Exact(String),
    Prefix(String),
    Suffix(String),
    General,
}

impl Pattern {
    pub fn new(pat: &str) -> Pattern {
        let p: Vec<char> = pat.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < p.len() {
            let c = p[i];
            i += 1;
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star)
                    }
                }
                '?' => toks.push(Tok::Any),
                '[' => {
                    // Find the closing bracket as CPython's `translate` does.
                    let mut j = i;
                    if j < p.len() && p[j] == '!' {
                        j += 1;
                    }
                    if j < p.len() && p[j] == ']' {
                        j += 1;
                    }
                    while j < p.len() && p[j] != ']' {
                        j += 1;
                    }
                    if j >= p.len() {
                        toks.push(Tok::Lit('['));
                        continue;
                    }
                    let mut body = &p[i..j];
                    i = j + 1;
                    let negated = body.first() == Some(&'!');
                    if negated {
                        body = &body[1..];
                    }
                    let mut ranges = Vec::new();
                    let mut k = 0;
                    while k < body.len() {
                        if k + 2 < body.len() && body[k + 1] == '-' {
                            // CPython drops empty ranges such as `z-a`.
                            if body[k] <= body[k + 2] {
                                ranges.push((body[k], body[k + 2]));
                            }
                            k += 3;
                        } else {
                            ranges.push((body[k], body[k]));
                            k += 1;
                        }
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        let lit = |t: &[Tok]| -> Option<String> {
            t.iter()
                .map(|t| match t {
                    Tok::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect()
        };
        let shape = match toks.as_slice() {
            [Tok::Star] => Shape::Everything,
            [rest @ .., Tok::Star] if lit(rest).is_some() => {
                Shape::Prefix(lit(rest).unwrap_or_default())
            }
            [Tok::Star, rest @ ..] if lit(rest).is_some() => {
                Shape::Suffix(lit(rest).unwrap_or_default())
            }
            all => lit(all).map_or(Shape::General, Shape::Exact),
        };
        Pattern { toks, shape }
    }

    pub fn matches(&self, s: &str) -> bool {
        match &self.shape {
            Shape::Everything => return true,
            Shape::Exact(l) => return s == l,
            Shape::Prefix(l) => return s.starts_with(l.as_str()),
            Shape::Suffix(l) => return s.ends_with(l.as_str()),
            Shape::General => {}
        }
        let s: Vec<char> = s.chars().collect();
        // Iterative wildcard matching with single-star backtracking (linear
        // in practice, no exponential blow-up on hostile patterns).
        let t = &self.toks;
        let (mut ti, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if ti < t.len() {
                match &t[ti] {
                    Tok::Star => {
                        star = Some((ti, si));
                        ti += 1;
                        continue;
                    }
                    tok if one(tok, s[si]) => {
                        ti += 1;
                        si += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match star {
                Some((st, ss)) => {
                    ti = st + 1;
                    si = ss + 1;
                    star = Some((st, ss + 1));
                }
                None => return false,
            }
        }
        t[ti..].iter().all(|t| *t == Tok::Star)
    }
}

fn one(tok: &Tok, c: char) -> bool {
    match tok {
        Tok::Lit(l) => *l == c,
        Tok::Any => true,
        Tok::Star => false,
        Tok::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
    }
}

pub fn fnmatch(name: &str, pat: &str) -> bool {
    Pattern::new(pat).matches(name)
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn python_semantics() {
        assert!(fnmatch("a/b/c", "*"));
        assert!(fnmatch("src/x/y.c", "src/*.c"));
        assert!(fnmatch(".hidden", "*"));
        assert!(!fnmatch("A", "a"));
        assert!(fnmatch("f1", "f[0-9]"));
        assert!(!fnmatch("f1", "f[!0-9]"));
        assert!(fnmatch("[x", "[x"));
        assert!(fnmatch("]", "[]]"));
        assert!(fnmatch("a-", "a[-]"));
        assert!(fnmatch("ab", "a?"));
        assert!(!fnmatch("a", "a?"));
        assert!(fnmatch("", "*"));
        assert!(fnmatch("aXbXc", "*b*c"));
        assert!(!fnmatch("aaaa", "*a*b"));
        assert!(fnmatch("line\nbreak", "line*"));
    }

    #[test]
    fn shortcuts_agree_with_the_general_matcher() {
        let names = [
            "", "a", "ab", "a/b", "src/x.c", "x.c", "é", "*", "[x", "src/", "c.src",
        ];
        let pats = [
            "*", "a", "a*", "*b", "src/*", "*.c", "é*", "**", "[x", "*[x", "", "src*",
        ];
        for p in pats {
            let fast = super::Pattern::new(p);
            let mut general = fast.clone();
            general.shape = super::Shape::General;
            for n in names {
                assert_eq!(fast.matches(n), general.matches(n), "{n:?} vs {p:?}");
            }
        }
    }
}
