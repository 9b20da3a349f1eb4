//! The artifact rule engine on arbitrary rules and artifacts: never panics.
//! Input: a JSON document {"rules": [[...]], "link": {...}, "other": {...}}.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use totogate::model::{ArtifactRule, Link};
use totogate::verify::rules::{apply, Side};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let rules: Vec<ArtifactRule> = v["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_value::<Vec<String>>(r.clone()).ok())
        .filter_map(|w| ArtifactRule::parse(w).ok())
        .collect();
    let (Ok(link), Ok(other)) = (Link::from_value(&v["link"], "link"), Link::from_value(&v["other"], "other")) else {
        return;
    };
    let mut links = BTreeMap::new();
    links.insert("other".to_string(), &other);
    for side in [Side::Materials, Side::Products] {
        let _ = apply("fuzz", side, &rules, &link, &links);
    }
});
