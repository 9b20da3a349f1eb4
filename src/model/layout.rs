use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{err, is_hex, string_list, ArtifactRule, Fields, FormatError, Problem};
use crate::crypto::PublicKey;

/// A supply chain layout (spec §4.3), signed by the project owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// `YYYY-MM-DDTHH:MM:SSZ`, kept verbatim (it is signed).
    pub expires: String,
    pub readme: String,
    /// Functionary keys by key id; each id was checked against its key.
    pub keys: BTreeMap<String, PublicKey>,
    pub steps: Vec<Step>,
    pub inspect: Vec<Inspection>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub expected_materials: Vec<ArtifactRule>,
    pub expected_products: Vec<ArtifactRule>,
    pub pubkeys: Vec<String>,
    pub expected_command: Vec<String>,
    pub threshold: i64,
    /// The threshold was written `true`/`false`: Python's bool is an int, so
    /// the reference takes it as 1/0, and it signs it back as `true`/`false`.
    pub threshold_is_bool: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub name: String,
    pub expected_materials: Vec<ArtifactRule>,
    pub expected_products: Vec<ArtifactRule>,
    pub run: Vec<String>,
}

fn rules(f: &Fields, field: &str) -> Result<Vec<ArtifactRule>, FormatError> {
    f.list(field)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = format!("{}[{i}]", f.at(field));
            let words = string_list(r, &path)?;
            ArtifactRule::parse(words).map_err(|e| err(path, Problem::Rule(e)))
        })
        .collect()
}

fn rule_words(rules: &[ArtifactRule]) -> Value {
    Value::Array(rules.iter().map(|r| json!(r.words())).collect())
}

impl Layout {
    pub fn from_value(v: &Value, path: &str) -> Result<Layout, FormatError> {
        let f = Fields::new(v, path)?;
        let expires = f.string("expires")?;
        parse_expiry(&expires)
            .ok_or_else(|| err(f.at("expires"), Problem::BadDate(expires.clone())))?;
        let mut keys = BTreeMap::new();
        for (keyid, key) in f.object("keys")? {
            let at = format!("{}[{keyid:?}]", f.at("keys"));
            if !is_hex(&keyid) {
                return Err(err(at, Problem::NotHex(keyid)));
            }
            let Value::Object(dict) = &key else {
                return Err(err(at, Problem::WrongType("a key object")));
            };
            if dict.get("keyid").and_then(Value::as_str) != Some(keyid.as_str()) {
                return Err(err(
                    format!("{at}.keyid"),
                    Problem::Key(crate::crypto::KeyError::MissingField("keyid")),
                ));
            }
            let key =
                PublicKey::from_dict(dict, Some(&keyid)).map_err(|e| err(at, Problem::Key(e)))?;
            keys.insert(keyid, key);
        }
        let mut names = HashSet::new();
        let mut check_name = |name: &str, at: String| {
            if names.insert(name.to_owned()) {
                Ok(())
            } else {
                Err(err(at, Problem::DuplicateName(name.to_owned())))
            }
        };
        if f.get("steps").is_none() {
            return Err(err(f.at("steps"), Problem::Missing));
        }
        let mut steps = Vec::new();
        for (i, s) in f.list("steps")?.iter().enumerate() {
            let sf = Fields::new(s, &format!("{}[{i}]", f.at("steps")))?;
            let name = sf.string("name")?;
            check_name(&name, sf.at("name"))?;
            let pubkeys = sf.string_list("pubkeys")?;
            for (j, k) in pubkeys.iter().enumerate() {
                if !is_hex(k) {
                    return Err(err(
                        format!("{}[{j}]", sf.at("pubkeys")),
                        Problem::NotHex(k.clone()),
                    ));
                }
            }
            // The reference checks `isinstance(threshold, int)`, which a bool passes.
            let (threshold, threshold_is_bool) = match sf.get("threshold") {
                None => (1, false),
                Some(Value::Number(n)) if n.is_i64() => (n.as_i64().unwrap_or(1), false),
                Some(Value::Bool(b)) => (i64::from(*b), true),
                Some(_) => return Err(err(sf.at("threshold"), Problem::WrongType("an integer"))),
            };
            steps.push(Step {
                expected_materials: rules(&sf, "expected_materials")?,
                expected_products: rules(&sf, "expected_products")?,
                pubkeys,
                expected_command: sf.string_list("expected_command")?,
                threshold,
                threshold_is_bool,
                name,
            });
        }
        if f.get("inspect").is_none() {
            return Err(err(f.at("inspect"), Problem::Missing));
        }
        let mut inspect = Vec::new();
        for (i, s) in f.list("inspect")?.iter().enumerate() {
            let sf = Fields::new(s, &format!("{}[{i}]", f.at("inspect")))?;
            let name = sf.string("name")?;
            check_name(&name, sf.at("name"))?;
            inspect.push(Inspection {
                expected_materials: rules(&sf, "expected_materials")?,
                expected_products: rules(&sf, "expected_products")?,
                run: sf.string_list("run")?,
                name,
            });
        }
        Ok(Layout {
            readme: f.string_or("readme", "")?,
            expires,
            keys,
            steps,
            inspect,
        })
    }

    /// The dict the reference signs (`attr.asdict(layout)`).
    pub fn to_value(&self) -> Value {
        let keys: serde_json::Map<String, Value> = self
            .keys
            .iter()
            .map(|(id, k)| (id.clone(), k.to_dict()))
            .collect();
        json!({
            "_type": "layout",
            "expires": self.expires,
            "readme": self.readme,
            "keys": keys,
            "steps": self.steps.iter().map(|s| json!({
                "_type": "step",
                "name": s.name,
                "expected_materials": rule_words(&s.expected_materials),
                "expected_products": rule_words(&s.expected_products),
                "pubkeys": s.pubkeys,
                "expected_command": s.expected_command,
                "threshold": if s.threshold_is_bool {
                    json!(s.threshold != 0)
                } else {
                    json!(s.threshold)
                },
            })).collect::<Vec<_>>(),
            "inspect": self.inspect.iter().map(|i| json!({
                "_type": "inspection",
                "name": i.name,
                "expected_materials": rule_words(&i.expected_materials),
                "expected_products": rule_words(&i.expected_products),
                "run": i.run,
            })).collect::<Vec<_>>(),
        })
    }

    /// The expiry instant (validated at parse time).
    pub fn expires_at(&self) -> OffsetDateTime {
        parse_expiry(&self.expires).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ`, the only form the reference accepts.
pub fn parse_expiry(s: &str) -> Option<OffsetDateTime> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(|t| t.assume_utc())
}

/// Formats an instant the way layouts store it.
pub fn format_expiry(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(fmt)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_with_threshold(t: Value) -> Result<Layout, FormatError> {
        let v = json!({"_type": "layout", "expires": "2030-01-01T00:00:00Z", "readme": "",
            "keys": {}, "inspect": [], "steps": [{"_type": "step", "name": "make",
            "pubkeys": [], "expected_command": [], "expected_materials": [],
            "expected_products": [], "threshold": t}]});
        Layout::from_value(&v, "layout")
    }

    #[test]
    fn threshold_bool_is_an_int_and_signs_back_as_a_bool() {
        // Python: isinstance(True, int) and True == 1.
        for (t, n) in [(true, 1), (false, 0)] {
            let l = layout_with_threshold(json!(t)).unwrap();
            assert_eq!(l.steps[0].threshold, n);
            assert_eq!(l.to_value()["steps"][0]["threshold"], json!(t));
        }
        let l = layout_with_threshold(json!(2)).unwrap();
        assert_eq!(l.to_value()["steps"][0]["threshold"], json!(2));
        assert!(layout_with_threshold(json!("1")).is_err());
        assert!(layout_with_threshold(json!(null)).is_err());
    }
}
