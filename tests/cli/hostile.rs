//! Hostile metadata: every case is refused (exit 1) with a reason, never a
//! pass and never a panic.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

/// A valid one-step chain made by totogate: owner signs a layout whose step
/// `build` alice performs; returns (dir, alice's keyid).
fn chain(dir: &Path, step: &str) -> String {
    for k in ["owner", "alice"] {
        ok(totogate().args(["keygen", k]).current_dir(dir));
    }
    let out = ok(totogate()
        .args(["keygen", "--json", "spare"])
        .current_dir(dir));
    let _ = out;
    write(&dir.join("src/a.txt"), "hello\n");
    write(
        &dir.join("layout.json"),
        &serde_json::json!({
            "expires_in_days": 30,
            "keys": {"alice": "alice.pub"},
            "steps": [{"name": step, "pubkeys": ["alice"], "expected_command": [],
                        "expected_products": [["ALLOW", "src/*"], ["DISALLOW", "*"]]}],
            "inspect": [],
        })
        .to_string(),
    );
    ok(totogate()
        .args([
            "layout",
            "layout.json",
            "-o",
            "root.layout",
            "--signing-key",
            "owner",
        ])
        .current_dir(dir));
    std::fs::create_dir_all(dir.join("links")).unwrap();
    if step.contains('/') {
        return String::new(); // no link can even be written under such a name
    }
    ok(totogate()
        .args([
            "run",
            "-n",
            step,
            "--signing-key",
            "alice",
            "-x",
            "-p",
            "src",
            "-d",
            "links",
        ])
        .current_dir(dir));
    // (A hostile step name such as `../evil` puts the link elsewhere.)
    match std::fs::read_dir(dir.join("links")).unwrap().next() {
        Some(link) => {
            let name = link.unwrap().file_name().into_string().unwrap();
            name.trim_end_matches(".link")
                .rsplit('.')
                .next()
                .unwrap()
                .to_owned()
        }
        None => String::new(),
    }
}

fn verify(dir: &Path) -> Output {
    run(totogate()
        .args([
            "verify",
            "-l",
            "root.layout",
            "--verification-keys",
            "owner.pub",
            "--link-dir",
            "links",
        ])
        .current_dir(dir))
}

#[track_caller]
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a refusal (exit 1), got {}: {err}",
        out.status
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn the_chain_passes_before_tampering() {
    let d = tempfile::tempdir().unwrap();
    chain(d.path(), "build");
    let out = verify(d.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_hostile_metadata_file_is_refused() {
    let corpus = repo().join("testdata/hostile-metadata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "link"))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    let d = tempfile::tempdir().unwrap();
    let k8 = chain(d.path(), "build");
    let target = d.path().join(format!("links/build.{k8}.link"));
    let good = std::fs::read(&target).unwrap();
    for f in &files {
        std::fs::copy(f, &target).unwrap();
        let out = verify(d.path());
        refused(&out, &format!("build.{k8}.link"));
        // As a layout too.
        std::fs::write(&target, &good).unwrap();
        std::fs::copy(f, d.path().join("root.layout")).unwrap();
        let out = verify(d.path());
        assert_ne!(
            out.status.code(),
            Some(0),
            "{} passed as a layout",
            f.display()
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        ok(totogate()
            .args([
                "layout",
                "layout.json",
                "-o",
                "root.layout",
                "--signing-key",
                "owner",
            ])
            .current_dir(d.path()));
    }
}

#[test]
fn oversized_link_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let k8 = chain(d.path(), "build");
    let target = d.path().join(format!("links/build.{k8}.link"));
    let f = std::fs::File::create(&target).unwrap();
    f.set_len(65 << 20).unwrap(); // sparse: 65 MiB of NULs, over the 64 MiB cap
    refused(&verify(d.path()), "limit");
}

#[test]
fn symlinked_link_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let k8 = chain(d.path(), "build");
    let target = d.path().join(format!("links/build.{k8}.link"));
    std::fs::rename(&target, d.path().join("elsewhere.link")).unwrap();
    std::os::unix::fs::symlink(d.path().join("elsewhere.link"), &target).unwrap();
    refused(&verify(d.path()), "symlink");
}

#[test]
fn step_names_that_escape_the_link_dir_are_refused() {
    for name in ["../evil", "a/b"] {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a")).unwrap();
        chain(d.path(), name);
        refused(&verify(d.path()), "cannot name a file");
    }
}

#[test]
fn key_id_that_does_not_match_its_key_is_refused() {
    let d = tempfile::tempdir().unwrap();
    chain(d.path(), "build");
    // Re-file alice's key under a different id and re-sign the layout.
    let text = std::fs::read_to_string(d.path().join("root.layout")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = v["signed"]["keys"].as_object().unwrap().clone();
    let (id, mut key) = keys.into_iter().next().unwrap();
    let fake = format!("{}{}", "0".repeat(8), &id[8..]);
    key["keyid"] = serde_json::json!(fake);
    v["signed"]["keys"] = serde_json::json!({ fake.clone(): key });
    v["signed"]["steps"][0]["pubkeys"] = serde_json::json!([fake]);
    std::fs::write(d.path().join("root.layout"), v.to_string()).unwrap();
    // totogate will not even sign such a layout; the reference does.
    let out = run(totogate()
        .args(["sign", "-f", "root.layout", "-k", "owner"])
        .current_dir(d.path()));
    assert_eq!(out.status.code(), Some(2));
    ok(oracle("in-toto-sign")
        .args(["-f", "root.layout", "-k", "owner"])
        .current_dir(d.path()));
    refused(&verify(d.path()), "does not match the key");
}

#[test]
fn sublayout_recursing_through_a_symlinked_dir_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let k8 = chain(dir, "build");
    // alice signs a sublayout for step `build` that again delegates `build`
    // to alice; its link directory `links/build.<k8>` points back at `links`.
    write(
        &dir.join("sub.json"),
        &serde_json::json!({
            "expires_in_days": 30,
            "keys": {"alice": "alice.pub"},
            "steps": [{"name": "build", "pubkeys": ["alice"]}],
            "inspect": [],
        })
        .to_string(),
    );
    ok(totogate()
        .args([
            "layout",
            "sub.json",
            "-o",
            &format!("links/build.{k8}.link"),
            "--signing-key",
            "alice",
        ])
        .current_dir(dir));
    std::os::unix::fs::symlink(".", dir.join(format!("links/build.{k8}"))).unwrap();
    refused(&verify(dir), "sublayout nesting deeper than");
}

/// An inspection that leaves a symlink to a host file (here a harmless one;
/// `/proc/kmsg` would block a reader, `/` would be the whole host) is
/// refused: its products are recorded with links resolved beneath its
/// directory.
#[test]
fn inspection_leaving_a_symlink_out_of_its_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // The sandbox's user must be able to reach the directory.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    chain(dir, "build");
    let layout = |run: &[&str]| {
        write(
            &dir.join("layout.json"),
            &serde_json::json!({
                "expires_in_days": 30,
                "keys": {"alice": "alice.pub"},
                "steps": [{"name": "build", "pubkeys": ["alice"], "expected_command": [],
                            "expected_products": [["ALLOW", "src/*"], ["DISALLOW", "*"]]}],
                "inspect": [{"name": "look", "run": run,
                             "expected_materials": [["ALLOW", "*"]],
                             "expected_products": [["ALLOW", "*"]]}],
            })
            .to_string(),
        );
        ok(totogate()
            .args([
                "layout",
                "layout.json",
                "-o",
                "root.layout",
                "--signing-key",
                "owner",
            ])
            .current_dir(dir));
    };
    // A link inside the directory is fine.
    layout(&["ln", "-s", "src/a.txt", "inside"]);
    let out = verify(dir);
    assert_eq!(code(&out), 0, "{}", show(&out));
    std::fs::remove_file(dir.join("inside")).unwrap();
    layout(&["ln", "-s", "/etc/hostname", "leak"]);
    refused(&verify(dir), "leads outside the directory");
}
