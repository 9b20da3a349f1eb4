//! The artifact rule engine (spec §4.3.3; reference `verifylib.verify_item_rules`).
//!
//! Each item (step or inspection) keeps a queue per side (materials,
//! products); rules run in order, each consumes some artifacts from the
//! queue; DISALLOW and REQUIRE fail; whatever is left at the end is allowed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::fnmatch::Pattern;
use crate::model::{ArtifactMap, ArtifactRule, DestType, HashDict, Link, RuleKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Materials,
    Products,
}

impl Side {
    pub fn field(self) -> &'static str {
        match self {
            Side::Materials => "expected_materials",
            Side::Products => "expected_products",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuleFailure {
    #[error("{item}: {field} rule `{rule}` matched {}{}", list(.artifacts), details(.misses))]
    Disallowed {
        item: String,
        field: &'static str,
        rule: String,
        artifacts: Vec<String>,
        /// Why earlier MATCH rules did not consume these artifacts.
        misses: Vec<MatchMiss>,
    },
    #[error("{item}: {field} rule `{rule}` did not find {artifact:?} among the artifacts still unmatched")]
    Required {
        item: String,
        field: &'static str,
        rule: String,
        artifact: String,
    },
    #[error("{item}: {field} rule `{rule}`: the path {path:?} joins to {joined:?}, which is not an artifact (the reference crashes here)")]
    BadMatchPath {
        item: String,
        field: &'static str,
        rule: String,
        path: String,
        joined: String,
    },
}

fn details(misses: &[MatchMiss]) -> String {
    let short = |h: &Option<String>| match h {
        Some(h) => format!("sha256 {}…", &h[..h.len().min(12)]),
        None => "no such artifact".to_owned(),
    };
    misses
        .iter()
        .take(10)
        .map(|m| {
            format!(
                "\n  {:?} was not matched by `{}`: here {}, {} has {}",
                m.artifact,
                m.rule,
                short(&m.ours),
                m.dest,
                short(&m.theirs)
            )
        })
        .collect()
}

fn list(v: &[String]) -> String {
    let shown: Vec<String> = v.iter().take(10).map(|s| format!("{s:?}")).collect();
    if v.len() > 10 {
        format!("{} and {} more", shown.join(", "), v.len() - 10)
    } else {
        shown.join(", ")
    }
}

/// Python's `os.path.join(a, b)` for two components.
fn join(a: &str, b: &str) -> String {
    if b.starts_with('/') {
        b.to_owned()
    } else if a.is_empty() || a.ends_with('/') {
        format!("{a}{b}")
    } else {
        format!("{a}/{b}")
    }
}

/// `os.path.join(a, b).replace("\\", "/")`, as the reference's MATCH builds
/// the full source and destination paths when the rule has a prefix: every
/// backslash of the result, the artifact's part included, becomes a slash.
fn join_slashed(a: &str, b: &str) -> String {
    let joined = join(a, b);
    if joined.contains('\\') {
        joined.replace('\\', "/")
    } else {
        joined
    }
}

/// What an unmatched MATCH left behind, for the human explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchMiss {
    pub rule: String,
    pub artifact: String,
    pub dest: String,
    pub ours: Option<String>,
    pub theirs: Option<String>,
}

/// Applies `rules` to one side of `link`. `links` are the other items'
/// (reduced) links by name, for MATCH. On success returns, for context, the
/// MATCH candidates that did not match (for explaining a later DISALLOW).
///
/// The queue is this side's artifacts in name order with a flag per entry
/// (still queued or consumed): rules run over tens of thousands of artifacts,
/// so nothing is copied or looked up by name that need not be.
pub fn apply(
    item: &str,
    side: Side,
    rules: &[ArtifactRule],
    link: &Link,
    links: &BTreeMap<String, &Link>,
) -> Result<Vec<MatchMiss>, RuleFailure> {
    let source: &ArtifactMap = match side {
        Side::Materials => &link.materials,
        Side::Products => &link.products,
    };
    let entries = source.as_slice();
    let mut queued: Vec<bool> = vec![true; entries.len()];
    let index_of = |name: &str| source.position(name).ok();
    let mut misses: Vec<MatchMiss> = Vec::new();
    for rule in rules {
        // Indices this rule consumes (applied after it has seen the whole
        // queue, as the reference removes them after filtering).
        let mut consumed: Vec<usize> = Vec::new();
        let matching = |pat: &str, queued: &[bool]| -> Vec<usize> {
            let p = Pattern::new(pat);
            (0..entries.len())
                .filter(|&i| queued[i] && p.matches(&entries[i].0))
                .collect()
        };
        match rule.kind() {
            RuleKind::Allow(p) => consumed = matching(p, &queued),
            // Each candidate's other side, looked up by walking both maps
            // forward: the candidates come in name order.
            RuleKind::Create(p) | RuleKind::Delete(p) | RuleKind::Modify(p) => {
                consumed = matching(p, &queued);
                let mut materials = SortedLookup::new(&link.materials);
                let mut products = SortedLookup::new(&link.products);
                let kind = rule.kind();
                consumed.retain(|&i| {
                    let a = &entries[i].0;
                    match (kind, materials.get(a), products.get(a)) {
                        (RuleKind::Create(_), None, Some(_)) => true,
                        (RuleKind::Delete(_), Some(_), None) => true,
                        (RuleKind::Modify(_), Some(m), Some(p)) => m != p,
                        _ => false,
                    }
                });
            }
            RuleKind::Disallow(p) => {
                let hit: Vec<String> = matching(p, &queued)
                    .into_iter()
                    .map(|i| entries[i].0.clone())
                    .collect();
                if !hit.is_empty() {
                    let misses = misses
                        .iter()
                        .filter(|m| hit.contains(&m.artifact))
                        .cloned()
                        .collect();
                    return Err(RuleFailure::Disallowed {
                        item: item.into(),
                        field: side.field(),
                        rule: rule.to_string(),
                        artifacts: hit,
                        misses,
                    });
                }
            }
            RuleKind::Require(f) => {
                if !index_of(f).is_some_and(|i| queued[i]) {
                    return Err(RuleFailure::Required {
                        item: item.into(),
                        field: side.field(),
                        rule: rule.to_string(),
                        artifact: f.clone(),
                    });
                }
            }
            RuleKind::Match {
                pattern,
                source_prefix,
                dest_type,
                dest_prefix,
                dest_name,
            } => {
                let Some(dest_link) = links.get(dest_name) else {
                    continue;
                };
                let dest = match dest_type {
                    DestType::Materials => &dest_link.materials,
                    DestType::Products => &dest_link.products,
                };
                let mut dest = SortedLookup::new(dest);
                let p = Pattern::new(pattern);
                // `os.path.join(prefix, "").replace("\\", "/")`.
                let nsp = join_slashed(source_prefix, "");
                for (i, (a, hashes)) in entries.iter().enumerate() {
                    if !queued[i] {
                        continue;
                    }
                    let Some(rel) = a.strip_prefix(nsp.as_str()) else {
                        continue;
                    };
                    if !p.matches(rel) {
                        continue;
                    }
                    let src: Cow<str> = if source_prefix.is_empty() {
                        Cow::Borrowed(rel)
                    } else {
                        Cow::Owned(join_slashed(source_prefix, rel))
                    };
                    // `src` is `a` itself unless an absolute `rel` made the
                    // join jump elsewhere.
                    let src_at = if src == a.as_str() {
                        Some(i)
                    } else {
                        index_of(&src)
                    };
                    let Some(src_at) = src_at else {
                        return Err(RuleFailure::BadMatchPath {
                            item: item.into(),
                            field: side.field(),
                            rule: rule.to_string(),
                            path: a.to_string(),
                            joined: src.into_owned(),
                        });
                    };
                    let ours = if src_at == i {
                        hashes
                    } else {
                        &entries[src_at].1
                    };
                    let dst: Cow<str> = if dest_prefix.is_empty() {
                        Cow::Borrowed(rel)
                    } else {
                        Cow::Owned(join_slashed(dest_prefix, rel))
                    };
                    match dest.get(&dst) {
                        Some(theirs) if theirs == ours => consumed.push(src_at),
                        theirs => misses.push(MatchMiss {
                            rule: rule.to_string(),
                            artifact: src.into_owned(),
                            dest: format!("{dest_name}:{dst}"),
                            ours: ours.get("sha256").map(|d| d.to_string()),
                            theirs: theirs.and_then(|t| t.get("sha256").map(|d| d.to_string())),
                        }),
                    }
                }
            }
        }
        for i in consumed {
            queued[i] = false;
        }
    }
    Ok(misses)
}

/// Lookups in an artifact map that are usually asked in increasing name
/// order (MATCH walks its queue in order): those walk forward through the
/// sorted entries; any other order falls back to binary search.
struct SortedLookup<'m> {
    map: &'m ArtifactMap,
    /// Every entry before `at` is less than the last name asked.
    at: usize,
}

impl<'m> SortedLookup<'m> {
    fn new(map: &'m ArtifactMap) -> SortedLookup<'m> {
        SortedLookup { map, at: 0 }
    }
    fn get(&mut self, name: &str) -> Option<&'m HashDict> {
        let items = self.map.as_slice();
        if self.at > 0 && items[self.at - 1].0.as_str() >= name {
            return self.map.get(name);
        }
        // Walk a few steps, then jump by binary search if still behind.
        let mut steps = 0;
        while self.at < items.len() && items[self.at].0.as_str() < name {
            self.at += 1;
            steps += 1;
            if steps == 8 {
                self.at += items[self.at..].partition_point(|(k, _)| k.as_str() < name);
                break;
            }
        }
        match items.get(self.at) {
            Some((k, v)) if k == name => Some(v),
            _ => None,
        }
    }
}

/// True when the rule list ends in `DISALLOW *`, i.e. it constrains every artifact.
pub fn ends_with_disallow_all(rules: &[ArtifactRule]) -> bool {
    matches!(rules.last().map(|r| r.kind()), Some(RuleKind::Disallow(p)) if p == "*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HashDict;

    fn h(x: &str) -> HashDict {
        [("sha256".to_string(), x.to_string())]
            .into_iter()
            .collect()
    }
    fn rule(s: &str) -> ArtifactRule {
        ArtifactRule::parse(s.split(' ').map(String::from).collect()).unwrap()
    }
    fn link(m: &[(&str, &str)], p: &[(&str, &str)]) -> Link {
        Link {
            name: "x".into(),
            materials: m.iter().map(|(k, v)| (k.to_string(), h(v))).collect(),
            products: p.iter().map(|(k, v)| (k.to_string(), h(v))).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn create_modify_delete_disallow() {
        let l = link(
            &[("a", "1"), ("b", "2")],
            &[("a", "1"), ("b", "3"), ("c", "4")],
        );
        let links = BTreeMap::new();
        let rules = [
            rule("CREATE c"),
            rule("MODIFY b"),
            rule("ALLOW a"),
            rule("DISALLOW *"),
        ];
        assert!(apply("s", Side::Products, &rules, &l, &links).is_ok());
        let rules = [rule("MODIFY a"), rule("DISALLOW *")];
        let err = apply("s", Side::Products, &rules, &l, &links).unwrap_err();
        assert!(err.to_string().contains("DISALLOW *"), "{err}");
    }

    #[test]
    fn require_is_exact_and_sees_only_the_queue() {
        let l = link(&[], &[("bar", "1")]);
        let links = BTreeMap::new();
        assert!(apply("s", Side::Products, &[rule("REQUIRE bar")], &l, &links).is_ok());
        assert!(apply("s", Side::Products, &[rule("REQUIRE b*")], &l, &links).is_err());
        assert!(apply(
            "s",
            Side::Products,
            &[rule("ALLOW bar"), rule("REQUIRE bar")],
            &l,
            &links
        )
        .is_err());
    }

    #[test]
    fn match_with_prefixes() {
        let src = link(&[], &[("out/x/y", "1"), ("out/z", "2")]);
        let other = link(&[], &[("build/x/y", "1"), ("build/z", "9")]);
        let mut links = BTreeMap::new();
        links.insert("b".to_string(), &other);
        let rules = [
            rule("MATCH * IN out WITH PRODUCTS IN build FROM b"),
            rule("DISALLOW *"),
        ];
        let err = apply("s", Side::Products, &rules, &src, &links).unwrap_err();
        match err {
            RuleFailure::Disallowed {
                ref artifacts,
                ref misses,
                ..
            } => {
                assert_eq!(artifacts, &["out/z"]);
                assert_eq!(misses[0].theirs.as_deref(), Some("9"));
                assert!(err.to_string().contains("b:build/z has sha256 9"), "{err}");
            }
            e => panic!("{e}"),
        }
        // MATCH against an unknown step consumes nothing, and is no error.
        let rules = [rule("MATCH * WITH PRODUCTS FROM nobody")];
        assert!(apply("s", Side::Products, &rules, &src, &links).is_ok());
    }

    /// The reference (verifylib.py `verify_match_rule`) turns every `\` into
    /// `/` in the normalised source prefix and in the joined source and
    /// destination paths, but only where the rule has that prefix.
    #[test]
    fn match_turns_backslashes_into_slashes_where_a_prefix_is_joined() {
        let made = link(&[], &[("build/sub/a", "1")]);
        let mut links = BTreeMap::new();
        links.insert("make".to_string(), &made);
        let used = link(&[("build/sub/a", "1")], &[]);
        for r in [
            r"MATCH * IN build\sub WITH PRODUCTS IN build/sub FROM make",
            r"MATCH * IN build/sub WITH PRODUCTS IN build\sub FROM make",
        ] {
            let rules = [rule(r), rule("DISALLOW *")];
            assert!(
                apply("use", Side::Materials, &rules, &used, &links).is_ok(),
                "{r}"
            );
        }
        // A trailing backslash: `os.path.join` adds a `/` first, so the
        // prefix becomes `build/sub//` and matches nothing.
        let rules = [
            rule(r"MATCH * IN build\sub\ WITH PRODUCTS IN build\sub\ FROM make"),
            rule("DISALLOW *"),
        ];
        assert!(apply("use", Side::Materials, &rules, &used, &links).is_err());
        // An artifact's own backslash: no prefix on the source side keeps
        // it, the destination prefix's join turns it into a slash.
        let made = link(&[], &[(r"out/a\b", "1"), ("out/a/b", "2")]);
        links.insert("make".to_string(), &made);
        let used = link(&[(r"a\b", "1")], &[]);
        let rules = [
            rule("MATCH * WITH PRODUCTS IN out FROM make"),
            rule("DISALLOW *"),
        ];
        let err = apply("use", Side::Materials, &rules, &used, &links).unwrap_err();
        assert!(matches!(err, RuleFailure::Disallowed { .. }), "{err}");
        let made2 = link(&[], &[("out/a/b", "1")]);
        links.insert("make".to_string(), &made2);
        assert!(apply("use", Side::Materials, &rules, &used, &links).is_ok());
        // On the source side the join names another artifact: the reference
        // looks that one up (a KeyError when it is not there).
        let made = link(&[], &[(r"a\b", "1")]);
        links.insert("make".to_string(), &made);
        let used = link(&[(r"src/a\b", "1")], &[]);
        let rules = [
            rule("MATCH * IN src WITH PRODUCTS FROM make"),
            rule("DISALLOW *"),
        ];
        let err = apply("use", Side::Materials, &rules, &used, &links).unwrap_err();
        match err {
            RuleFailure::BadMatchPath { ref joined, .. } => assert_eq!(joined, "src/a/b"),
            e => panic!("{e}"),
        }
        // ... and consumes that one when it is there with the same hashes
        // as the destination's `a\b` (the backslash one stays queued).
        let used = link(&[(r"src/a\b", "7"), ("src/a/b", "1")], &[]);
        let rules = [rule("MATCH a?b IN src WITH PRODUCTS FROM make")];
        assert!(apply("use", Side::Materials, &rules, &used, &links).is_ok());
        let rules = [
            rule("MATCH a?b IN src WITH PRODUCTS FROM make"),
            rule("DISALLOW src/a/b"),
        ];
        assert!(apply("use", Side::Materials, &rules, &used, &links).is_ok());
        let rules = [
            rule("MATCH a?b IN src WITH PRODUCTS FROM make"),
            rule(r"DISALLOW src/a\b"),
        ];
        assert!(apply("use", Side::Materials, &rules, &used, &links).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::model::Link;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab/.*?\\[\\]!-]{0,6}").unwrap()
    }

    fn rule() -> impl Strategy<Value = ArtifactRule> {
        prop_oneof![
            (
                prop_oneof!["CREATE", "DELETE", "MODIFY", "ALLOW", "DISALLOW", "REQUIRE"],
                name()
            )
                .prop_map(|(k, p)| vec![k.to_string(), p]),
            (name(), name(), prop_oneof!["MATERIALS", "PRODUCTS"], name()).prop_map(
                |(p, sp, t, dp)| {
                    vec![
                        "MATCH".into(),
                        p,
                        "IN".into(),
                        sp,
                        "WITH".into(),
                        t.to_string(),
                        "IN".into(),
                        dp,
                        "FROM".into(),
                        "other".into(),
                    ]
                }
            ),
        ]
        .prop_map(|w| ArtifactRule::parse(w).unwrap())
    }

    /// Distinct artifact names with hashes, in an arbitrary listing order.
    fn side() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map(name(), prop_oneof!["1", "2"].prop_map(String::from), 0..8)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
    }

    /// Builds a link through JSON with artifacts listed in the given order.
    fn link_from(materials: &[(String, String)], products: &[(String, String)]) -> Option<Link> {
        let obj = |v: &[(String, String)]| {
            let mut m = serde_json::Map::new();
            for (k, h) in v {
                m.insert(k.clone(), serde_json::json!({"sha256": h}));
            }
            serde_json::Value::Object(m)
        };
        let v = serde_json::json!({"_type": "link", "name": "x", "materials": obj(materials), "products": obj(products)});
        Link::from_value(&v, "link").ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// CREATE, DELETE and MODIFY consume exactly the artifacts their
        /// definitions name (checked through a following `DISALLOW *`),
        /// against a set computation, on maps of up to 60 names.
        #[test]
        fn create_delete_modify_consume_what_they_define(
            m in proptest::collection::btree_map("[a-f]{1,3}", prop_oneof!["1", "2"], 0..60),
            p in proptest::collection::btree_map("[a-f]{1,3}", prop_oneof!["1", "2"], 0..60),
        ) {
            let as_vec = |x: &BTreeMap<String, String>| -> Vec<(String, String)> {
                x.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let l = link_from(&as_vec(&m), &as_vec(&p)).unwrap();
            let links = BTreeMap::new();
            let rules = |kind: &str| {
                vec![
                    ArtifactRule::parse(vec![kind.into(), "*".into()]).unwrap(),
                    ArtifactRule::parse(vec!["DISALLOW".into(), "*".into()]).unwrap(),
                ]
            };
            let created = p.keys().all(|k| !m.contains_key(k));
            let deleted = m.keys().all(|k| !p.contains_key(k));
            let modified = p.iter().all(|(k, v)| m.get(k).is_some_and(|w| w != v));
            for (kind, side, expected) in [
                ("CREATE", Side::Products, created),
                ("DELETE", Side::Materials, deleted),
                ("MODIFY", Side::Products, modified),
            ] {
                let ok = apply("s", side, &rules(kind), &l, &links).is_ok();
                prop_assert_eq!(ok, expected, "{}", kind);
            }
        }

        #[test]
        fn never_panics_and_order_does_not_matter(
            rules in proptest::collection::vec(rule(), 0..6),
            m in side(), p in side(), om in side(), op in side(),
        ) {
            let other = link_from(&om, &op).unwrap();
            let mut links = BTreeMap::new();
            links.insert("other".to_string(), &other);
            let l1 = link_from(&m, &p).unwrap();
            let mut m2 = m.clone();
            m2.reverse();
            let mut p2 = p.clone();
            p2.reverse();
            let l2 = link_from(&m2, &p2).unwrap();
            for side in [Side::Materials, Side::Products] {
                let a = apply("s", side, &rules, &l1, &links);
                let b = apply("s", side, &rules, &l2, &links);
                prop_assert_eq!(a, b);
            }
        }
    }
}
