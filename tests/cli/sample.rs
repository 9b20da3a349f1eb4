//! The README's main command: the bundled sample chain verifies, under both
//! totogate and the reference; a tampered copy is refused by both.

use crate::common::*;

fn sample_copy() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(repo().join("testdata/samples/demo/."))
        .arg(d.path()));
    d
}

const ARGS: [&str; 6] = [
    "-l",
    "root.layout",
    "--verification-keys",
    "owner.pub",
    "--link-dir",
    "links",
];

#[test]
fn sample_passes() {
    let d = sample_copy();
    let out = ok(totogate()
        .arg("verify")
        .args(ARGS)
        .arg("--json")
        .current_dir(d.path()));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "pass");
    ok(oracle("in-toto-verify").args(ARGS).current_dir(d.path()));
}

#[test]
fn tampered_sample_is_refused() {
    let d = sample_copy();
    std::fs::write(d.path().join("hello.tar.gz"), b"not the tarball bob made").unwrap();
    let out = run(totogate()
        .arg("verify")
        .args(ARGS)
        .arg("--json")
        .current_dir(d.path()));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "fail");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("list-tarball") && err.contains("hello.tar.gz"),
        "{err}"
    );
    let r = run(oracle("in-toto-verify").args(ARGS).current_dir(d.path()));
    assert_eq!(r.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let d = sample_copy();
    let out = run(totogate()
        .args(["verify", "-l", "root.layout"])
        .current_dir(d.path()));
    assert_eq!(out.status.code(), Some(2));
    let out = run(totogate()
        .args([
            "verify",
            "-l",
            "nope.layout",
            "--verification-keys",
            "owner.pub",
        ])
        .current_dir(d.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.layout"));
    let out = run(totogate().args(["verify", "--bogus"]).current_dir(d.path()));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn modified_source_is_refused_with_both_hashes() {
    let d = sample_copy();
    let f = d.path().join("project/hello.c");
    let mut text = std::fs::read_to_string(&f).unwrap();
    text.push_str("int backdoor;\n");
    std::fs::write(&f, text).unwrap();
    let out = run(totogate().arg("verify").args(ARGS).current_dir(d.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // One line naming the item, rule and artifact; then which hash on each side.
    assert!(err.contains("list-tarball: expected_materials rule `DISALLOW project/*` matched \"project/hello.c\""), "{err}");
    assert!(
        err.contains("write-code:project/hello.c has sha256"),
        "{err}"
    );
    assert_eq!(
        run(oracle("in-toto-verify").args(ARGS).current_dir(d.path()))
            .status
            .code(),
        Some(1)
    );
}
