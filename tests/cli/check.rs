//! `totogate check` end to end on the bundled samples: they pass; tampering
//! with the package, its archive, its links or its layout is refused with the
//! right reason; hostile archives are refused without touching the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

fn copy_sample(kind: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(repo().join(format!("testdata/samples/{kind}/.")))
        .arg(d.path()));
    d
}

/// `totogate check PACKAGE` with the sample's layout and links, the layout
/// trusted to be signed by `key`.
fn check_with_key(dir: &Path, package: &str, key: &str) -> Command {
    let mut c = totogate();
    c.args([
        "check",
        package,
        "--layout",
        "root.layout",
        "--layout-key",
        key,
        "--link-dir",
        "links",
    ])
    .current_dir(dir);
    c
}

fn check(dir: &Path, package: &str, extra: &[&str]) -> Output {
    run(check_with_key(dir, package, "owner.pub")
        .arg("--json")
        .args(extra))
}

fn verdict(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON verdict ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[track_caller]
fn refused(out: &Output, needles: &[&str]) {
    let v = verdict(out);
    assert_eq!(out.status.code(), Some(1), "expected a refusal: {v:#}");
    assert_eq!(v["allowed"], false);
    let reasons = v["reasons"].to_string();
    for n in needles {
        assert!(
            reasons.contains(n),
            "expected {n:?} in the reasons: {reasons}"
        );
    }
}

const DEB: &str = "hello_1.0_all.deb";
const CRATE: &str = "hello-sample-0.1.0.crate";

#[test]
fn samples_pass() {
    for (kind, pkg, name) in [("deb", DEB, "hello"), ("crate", CRATE, "hello-sample")] {
        let d = copy_sample(kind);
        let out = check(d.path(), pkg, &[]);
        let v = verdict(&out);
        assert_eq!(out.status.code(), Some(0), "{kind}: {v:#}");
        assert_eq!(v["allowed"], true);
        assert_eq!(v["name"], name);
        assert!(v["weak_sandbox"].as_array().unwrap().is_empty());
        // The human form names the verdict too.
        let human = run(&mut check_with_key(d.path(), pkg, "owner.pub"));
        assert!(String::from_utf8_lossy(&human.stderr).contains("ALLOW"));
    }
}

#[test]
fn tampered_file_inside_the_package_is_refused() {
    let d = copy_sample("deb");
    let p = d.path();
    // Rebuild the .deb with a changed program: a valid archive, other contents.
    ok(std::process::Command::new("dpkg-deb")
        .args(["-R", DEB, "pkg"])
        .current_dir(p));
    write(&p.join("pkg/usr/bin/hello"), "#!/bin/sh\necho evil\n");
    ok(std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build", "pkg", DEB])
        .current_dir(p));
    std::fs::remove_dir_all(p.join("pkg")).unwrap();
    refused(&check(p, DEB, &[]), &["contents", DEB]);
}

#[test]
fn tampered_archive_is_refused() {
    let d = copy_sample("crate");
    let path = d.path().join(CRATE);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff; // inside the gzip stream / trailer
    std::fs::write(&path, &bytes).unwrap();
    let out = check(d.path(), CRATE, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn missing_link_is_refused() {
    let d = copy_sample("deb");
    for e in std::fs::read_dir(d.path().join("links")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    refused(&check(d.path(), DEB, &[]), &["step `build`", "found 0"]);
}

#[test]
fn link_signed_by_the_wrong_key_is_refused() {
    let d = copy_sample("deb");
    let p = d.path();
    ok(totogate().args(["keygen", "mallory"]).current_dir(p));
    let link: PathBuf = std::fs::read_dir(p.join("links"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // mallory signs alice's link and files it under alice's name.
    ok(totogate()
        .args(["sign", "-f"])
        .arg(&link)
        .args(["-k", "mallory", "-o"])
        .arg(&link)
        .current_dir(p));
    refused(
        &check(p, DEB, &[]),
        &["step `build`", "no signature by this key"],
    );
}

#[test]
fn expired_layout_is_refused() {
    let d = copy_sample("deb");
    let p = d.path();
    let t = std::fs::read_to_string(p.join("layout.json")).unwrap();
    write(
        &p.join("old.json"),
        &t.replace("2036-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
    );
    ok(totogate()
        .args([
            "layout",
            "old.json",
            "-o",
            "root.layout",
            "--signing-key",
            "owner",
        ])
        .current_dir(p));
    refused(
        &check(p, DEB, &[]),
        &["layout expired 2020-01-01T00:00:00Z"],
    );
}

#[test]
fn layout_signed_by_another_key_is_refused() {
    let d = copy_sample("deb");
    let p = d.path();
    ok(totogate().args(["keygen", "other"]).current_dir(p));
    let out = run(check_with_key(p, DEB, "other.pub").arg("--json"));
    refused(&out, &["layout is not signed by key"]);
}

#[test]
fn usage_errors_exit_2() {
    let d = copy_sample("deb");
    let out = run(&mut check_with_key(d.path(), "nope.deb", "owner.pub"));
    assert_eq!(out.status.code(), Some(2));
    let out = run(&mut check_with_key(d.path(), DEB, "nope.pub"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.pub"));
}

/// Every hostile archive is refused through the CLI, with the member named,
/// and nothing is left behind in the work directory.
#[test]
fn hostile_archives_are_refused() {
    let hostile = repo().join("testdata/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&hostile)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            !n.starts_with("good")
                && (n.ends_with(".deb") || n.ends_with(".crate") || n.ends_with(".zip"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 25, "only {} hostile archives", files.len());
    let d = copy_sample("deb");
    let work = tempfile::tempdir().unwrap();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(f, d.path().join(&name)).unwrap();
        let out = check(
            d.path(),
            &name,
            &[
                "--work-dir",
                work.path().to_str().unwrap(),
                "--max-entries",
                "1000",
            ],
        );
        let v = verdict(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {v:#}");
        assert!(
            v["reasons"].to_string().contains("unpacking"),
            "{name} refused for another reason: {v:#}"
        );
        let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
        assert!(left.is_empty(), "{name}: left {left:?} in the work dir");
    }
}

/// As root the sandbox runs inspections as uid 65534, which must be able to
/// reach the work directory: a private parent is a clear refusal that says
/// what to do, not a sandbox error.
#[test]
fn work_dir_the_sandbox_cannot_reach_is_named() {
    require_root("this test checks the sandbox's uid 65534, which needs root");
    let d = copy_sample("deb");
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = check(
        d.path(),
        DEB,
        &["--work-dir", private.path().to_str().unwrap()],
    );
    refused(&out, &["cannot reach", "chmod o+x"]);
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let out = check(
        d.path(),
        DEB,
        &["--work-dir", private.path().to_str().unwrap()],
    );
    assert_eq!(verdict(&out)["allowed"], true, "{}", show(&out));
}
