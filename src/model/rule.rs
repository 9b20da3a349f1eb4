//! Artifact rules (in-toto spec §4.3.3), parsed as `in_toto.rulelib.unpack_rule`
//! does: keywords are case-insensitive, patterns and names are kept verbatim.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestType {
    Materials,
    Products,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    Match {
        pattern: String,
        source_prefix: String,
        dest_type: DestType,
        dest_prefix: String,
        dest_name: String,
    },
    Create(String),
    Delete(String),
    Modify(String),
    Allow(String),
    Disallow(String),
    Require(String),
}

/// One artifact rule. Keeps the words as written, because they are part of
/// the signed layout and must re-serialise byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRule {
    words: Vec<String>,
    kind: RuleKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("rule {0} must start with MATCH, CREATE, DELETE, MODIFY, ALLOW, DISALLOW or REQUIRE followed by a pattern")]
    UnknownKind(Words),
    #[error("rule {0}: CREATE/DELETE/MODIFY/ALLOW/DISALLOW/REQUIRE take exactly one pattern")]
    GenericArity(Words),
    #[error("rule {0} must read MATCH <pattern> [IN <prefix>] WITH (MATERIALS|PRODUCTS) [IN <prefix>] FROM <step>")]
    MatchShape(Words),
}

/// Rule words, shown as a JSON-ish list in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words(pub Vec<String>);

impl fmt::Display for Words {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl ArtifactRule {
    pub fn parse(words: Vec<String>) -> Result<ArtifactRule, RuleError> {
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let w = || Words(words.clone());
        if words.len() < 2 {
            return Err(RuleError::UnknownKind(w()));
        }
        let pattern = words[1].clone();
        let generic = |make: fn(String) -> RuleKind| {
            if words.len() == 2 {
                Ok(make(pattern.clone()))
            } else {
                Err(RuleError::GenericArity(w()))
            }
        };
        let kind = match lower[0].as_str() {
            "create" => generic(RuleKind::Create)?,
            "delete" => generic(RuleKind::Delete)?,
            "modify" => generic(RuleKind::Modify)?,
            "allow" => generic(RuleKind::Allow)?,
            "disallow" => generic(RuleKind::Disallow)?,
            "require" => generic(RuleKind::Require)?,
            "match" => {
                let l: Vec<&str> = lower.iter().map(String::as_str).collect();
                let (src, dtype, dst, name) = match l.as_slice() {
                    [_, _, "in", _, "with", _, "in", _, "from", _] => {
                        (&words[3], l[5], words[7].as_str(), &words[9])
                    }
                    [_, _, "in", _, "with", _, "from", _] => (&words[3], l[5], "", &words[7]),
                    [_, _, "with", _, "in", _, "from", _] => {
                        (&String::new(), l[3], words[5].as_str(), &words[7])
                    }
                    [_, _, "with", _, "from", _] => (&String::new(), l[3], "", &words[5]),
                    _ => return Err(RuleError::MatchShape(w())),
                };
                let dest_type = match dtype {
                    "materials" => DestType::Materials,
                    "products" => DestType::Products,
                    _ => return Err(RuleError::MatchShape(w())),
                };
                RuleKind::Match {
                    pattern,
                    source_prefix: src.clone(),
                    dest_type,
                    dest_prefix: dst.to_owned(),
                    dest_name: name.clone(),
                }
            }
            _ => return Err(RuleError::UnknownKind(w())),
        };
        Ok(ArtifactRule { words, kind })
    }

    pub fn kind(&self) -> &RuleKind {
        &self.kind
    }
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

impl fmt::Display for ArtifactRule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<ArtifactRule, RuleError> {
        ArtifactRule::parse(s.split(' ').map(String::from).collect())
    }

    #[test]
    fn parses_every_match_form() {
        let r = p("MATCH foo/* IN src WITH products in dst FROM build").unwrap();
        assert_eq!(
            r.kind(),
            &RuleKind::Match {
                pattern: "foo/*".into(),
                source_prefix: "src".into(),
                dest_type: DestType::Products,
                dest_prefix: "dst".into(),
                dest_name: "build".into()
            }
        );
        assert!(p("match * with MATERIALS from x").is_ok());
        assert!(p("MATCH * IN a WITH MATERIALS FROM x").is_ok());
        assert!(p("MATCH * WITH MATERIALS IN b FROM x").is_ok());
        assert!(p("MATCH * WITH STUFF FROM x").is_err());
        assert!(p("MATCH * FROM x").is_err());
    }

    #[test]
    fn generic_rules_take_one_pattern() {
        assert!(matches!(p("disallow *").unwrap().kind(), RuleKind::Disallow(x) if x == "*"));
        assert!(matches!(p("ALLOW a b"), Err(RuleError::GenericArity(_))));
        assert!(matches!(p("ALLOW"), Err(RuleError::UnknownKind(_))));
        assert!(matches!(p("FOO x"), Err(RuleError::UnknownKind(_))));
    }

    #[test]
    fn keeps_words_verbatim() {
        let r = p("disallow *").unwrap();
        assert_eq!(r.words(), ["disallow", "*"]);
        assert_eq!(r.to_string(), "disallow *");
    }
}
