//! `totogate check --policy`: metadata fetched over HTTP from a real server
//! on loopback, as the policy's URL templates say.

use std::path::Path;

use crate::common::*;

/// The sample .deb in `dir`, its metadata published under `meta/hello/1.0/`.
fn setup(dir: &Path) -> Server {
    ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(repo().join("testdata/samples/deb/."))
        .arg(dir));
    let meta = dir.join("www/meta/hello/1.0");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::copy(dir.join("root.layout"), meta.join("root.layout")).unwrap();
    for e in std::fs::read_dir(dir.join("links")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), meta.join(e.file_name())).unwrap();
    }
    Server::files(dir.join("www"))
}

fn policy(dir: &Path, port: u16, required: bool) {
    write(
        &dir.join("policy.toml"),
        &format!(
            r#"[defaults]
required = {required}

[[rule]]
ecosystem = "deb"
name = "hello*"
layout_keys = ["owner.pub"]
layout = "http://127.0.0.1:{port}/meta/{{name}}/{{version}}/root.layout"
links = "http://127.0.0.1:{port}/meta/{{name}}/{{version}}/"
"#
        ),
    );
}

fn check(dir: &Path) -> (Option<i32>, serde_json::Value) {
    let out = run(totogate()
        .args([
            "check",
            "hello_1.0_all.deb",
            "--policy",
            "policy.toml",
            "--json",
        ])
        .current_dir(dir));
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

#[test]
fn metadata_over_http_passes() {
    let d = tempfile::tempdir().unwrap();
    let server = setup(d.path());
    policy(d.path(), server.port, true);
    let (code, v) = check(d.path());
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["allowed"], true);
    assert!(v["layout"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
}

#[test]
fn missing_link_over_http_is_refused_naming_the_url() {
    let d = tempfile::tempdir().unwrap();
    let server = setup(d.path());
    policy(d.path(), server.port, true);
    for e in std::fs::read_dir(d.path().join("www/meta/hello/1.0")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "link") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (code, v) = check(d.path());
    assert_eq!(code, Some(1), "{v:#}");
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("step `build`") && reasons.contains("http://127.0.0.1:"),
        "{reasons}"
    );
}

#[test]
fn missing_layout_is_refused_when_required_and_unverified_otherwise() {
    let d = tempfile::tempdir().unwrap();
    let server = setup(d.path());
    std::fs::remove_file(d.path().join("www/meta/hello/1.0/root.layout")).unwrap();
    policy(d.path(), server.port, true);
    let (code, v) = check(d.path());
    assert_eq!(code, Some(1), "{v:#}");
    assert!(
        v["reasons"]
            .to_string()
            .contains("/meta/hello/1.0/root.layout"),
        "{v:#}"
    );
    policy(d.path(), server.port, false);
    let (code, v) = check(d.path());
    assert_eq!(code, Some(0), "{v:#}");
    assert!(v["warnings"].to_string().contains("unverified"), "{v:#}");
}

#[test]
fn package_no_rule_covers_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let server = setup(d.path());
    policy(d.path(), server.port, true);
    std::fs::rename(
        d.path().join("hello_1.0_all.deb"),
        d.path().join("other_1.0_all.deb"),
    )
    .unwrap();
    let out = run(totogate()
        .args([
            "check",
            "other_1.0_all.deb",
            "--policy",
            "policy.toml",
            "--json",
        ])
        .current_dir(d.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no rule"));
}
