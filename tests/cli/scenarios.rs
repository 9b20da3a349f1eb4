//! Differential test: every scenario of `tests/scenarios/generate.py` (built
//! with the reference tools) verified by the reference `in-toto-verify` and
//! by `totogate verify` with the same arguments must get the same verdict.

use crate::common::*;

#[test]
fn same_verdict_as_reference_on_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    ok(oracle_python()
        .arg(repo().join("tests/scenarios/generate.py"))
        .arg(dir.path()));
    let index: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert!(index.len() >= 40, "only {} scenarios", index.len());
    let mut mismatches = Vec::new();
    let mut links_compared = 0;
    for name in &index {
        let sdir = dir.path().join(name);
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sdir.join("scenario.json")).unwrap()).unwrap();
        let args: Vec<String> = serde_json::from_value(spec["args"].clone()).unwrap();
        let expect = spec["expect"].as_str().unwrap();
        // Each tool runs in its own copy: inspections write into their cwd.
        let copy = |tag: &str| {
            let to = dir.path().join(format!(".{tag}-{name}"));
            ok(std::process::Command::new("cp")
                .arg("-a")
                .arg(&sdir)
                .arg(&to));
            to
        };
        let (rd, td) = (copy("ref"), copy("tt"));
        let reference = run(oracle("in-toto-verify").args(&args).current_dir(&rd));
        let ours = run(totogate().arg("verify").args(&args).current_dir(&td));
        let r_pass = reference.status.success();
        let t_pass = ours.status.success();
        if r_pass != t_pass || r_pass != (expect == "pass") {
            mismatches.push(format!(
                "{name}: expected {expect}, reference {} ({}), totogate {} ({})\n  reference: {}\n  totogate: {}",
                if r_pass { "pass" } else { "fail" },
                reference.status,
                if t_pass { "pass" } else { "fail" },
                ours.status,
                String::from_utf8_lossy(&reference.stderr).trim(),
                String::from_utf8_lossy(&ours.stderr).trim(),
            ));
        }
        // The inspection links each verifier leaves in its working directory
        // (in-toto-verify dumps one per inspection that ran): same names,
        // same bytes.
        let left = |d: &std::path::Path| -> std::collections::BTreeMap<String, Vec<u8>> {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".link") && !sdir.join(f).exists())
                .map(|f| (f.clone(), std::fs::read(d.join(&f)).unwrap()))
                .collect()
        };
        let (r_left, t_left) = (left(&rd), left(&td));
        if r_left != t_left {
            mismatches.push(format!(
                "{name}: inspection links left behind differ: reference {:?}, totogate {:?}{}",
                r_left.keys().collect::<Vec<_>>(),
                t_left.keys().collect::<Vec<_>>(),
                if r_left.keys().eq(t_left.keys()) {
                    " (bytes differ)"
                } else {
                    ""
                },
            ));
        }
        links_compared += r_left.len();
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} scenarios differ:\n{}",
        mismatches.len(),
        index.len(),
        mismatches.join("\n")
    );
    // The demo chains and the inspection scenarios leave links behind.
    assert!(
        links_compared >= 10,
        "only {links_compared} inspection links compared"
    );
    eprintln!(
        "{} scenarios: same verdict as in-toto-verify 3.1.0; {links_compared} inspection links byte-identical",
        index.len()
    );
}
