//! Property: serialising a model value and parsing it back gives the same
//! value, for both envelopes (parse ∘ serialise = identity).

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::json::JsonLimits;

fn text() -> impl Strategy<Value = String> {
    // Includes quotes, backslashes, control characters and non-BMP text.
    proptest::string::string_regex("[a-zA-Z0-9 ./_\"\\\\\n\t\u{1}é✓\u{1F600}-]{0,12}").unwrap()
}

fn hexs() -> impl Strategy<Value = String> {
    // Full-length lower-case SHA-256 digests (held as bytes) as often as
    // any other hex text (held as text), upper case included.
    prop_oneof![
        proptest::string::string_regex("[0-9a-f]{64}").unwrap(),
        proptest::string::string_regex("[0-9a-fA-F]{1,64}").unwrap(),
    ]
}

fn artifacts() -> impl Strategy<Value = ArtifactMap> {
    proptest::collection::btree_map(
        text(),
        proptest::collection::btree_map(
            prop_oneof!["sha256", "sha512"].prop_map(String::from),
            hexs(),
            1..3,
        )
        .prop_map(|m| m.into_iter().collect()),
        0..6,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn opaque() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        text(),
        prop_oneof![
            text().prop_map(Value::String),
            any::<i64>().prop_map(|i| json!(i)),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            proptest::collection::vec(text(), 0..3).prop_map(|v| json!(v)),
        ],
        0..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

prop_compose! {
    fn link()(name in text(), command in proptest::collection::vec(text(), 0..4),
              materials in artifacts(), products in artifacts(),
              byproducts in opaque(), environment in opaque()) -> Link {
        Link { name, command, materials, products, byproducts, environment, odd: None }
    }
}

fn rule() -> impl Strategy<Value = ArtifactRule> {
    prop_oneof![
        (
            prop_oneof!["CREATE", "delete", "Modify", "ALLOW", "DISALLOW", "REQUIRE"],
            text()
        )
            .prop_map(|(k, p)| vec![k.to_string(), p]),
        (
            text(),
            text(),
            prop_oneof!["MATERIALS", "products"],
            text(),
            text()
        )
            .prop_map(|(p, sp, t, dp, n)| {
                let mut w = vec!["MATCH".to_string(), p];
                if !sp.is_empty() {
                    w.extend(["IN".to_string(), sp]);
                }
                w.extend(["WITH".to_string(), t.to_string()]);
                if !dp.is_empty() {
                    w.extend(["IN".to_string(), dp]);
                }
                w.extend(["FROM".to_string(), n]);
                w
            }),
    ]
    .prop_map(|w| ArtifactRule::parse(w).expect("generated rules are well formed"))
}

prop_compose! {
    fn layout()(expires in (2000i32..2100, 1u8..13, 1u8..29).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}T01:02:03Z")),
                readme in text(),
                steps in proptest::collection::vec((text(), proptest::collection::vec(rule(), 0..4), proptest::collection::vec(rule(), 0..4), proptest::collection::vec(hexs(), 0..3), proptest::collection::vec(text(), 0..3), 1i64..4), 0..4),
                inspect in proptest::collection::vec((text(), proptest::collection::vec(rule(), 0..3), proptest::collection::vec(text(), 1..3)), 0..3)) -> Layout {
        let mut seen = std::collections::HashSet::new();
        Layout {
            expires,
            readme,
            keys: Default::default(),
            steps: steps.into_iter().filter(|s| seen.insert(s.0.clone())).map(|(name, m, p, pubkeys, cmd, threshold)| Step {
                name, expected_materials: m, expected_products: p, pubkeys, expected_command: cmd, threshold, threshold_is_bool: false,
            }).collect(),
            inspect: inspect.into_iter().filter(|i| seen.insert(i.0.clone())).map(|(name, r, run)| Inspection {
                name, expected_materials: r.clone(), expected_products: r, run,
            }).collect(),
        }
    }
}

fn roundtrip(p: Payload) {
    let key = crate::crypto::generate(crate::crypto::KeyType::Ed25519, false).unwrap();
    for kind in [EnvelopeKind::Metablock, EnvelopeKind::Dsse] {
        let mut env = Envelope::new(kind, p.clone()).unwrap();
        env.sign(&key).unwrap();
        let bytes = env.to_file_bytes();
        let back = Envelope::parse(&bytes, JsonLimits::default()).unwrap();
        assert_eq!(back.payload(), &p);
        assert_eq!(back.signed_bytes(), env.signed_bytes());
        assert_eq!(back.to_file_bytes(), bytes);
        back.check_signature(key.public()).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn link_roundtrips(l in link()) {
        roundtrip(Payload::Link(l));
    }

    #[test]
    fn layout_roundtrips(l in layout()) {
        roundtrip(Payload::Layout(l));
    }
}
