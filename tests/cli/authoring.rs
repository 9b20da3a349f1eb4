//! Bad input to the authoring commands: an error naming the file, exit 2,
//! nothing written.

use std::os::unix::ffi::OsStrExt;

use crate::common::*;

fn no_links(dir: &std::path::Path) {
    let links: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".link"))
        .collect();
    assert!(links.is_empty(), "a link was written: {links:?}");
}

#[track_caller]
fn usage_error(out: std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

#[test]
fn bad_keys_and_passwords() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(
        &p.join("bad.pem"),
        "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
    );
    usage_error(
        run(totogate()
            .args(["run", "-n", "s", "--signing-key", "bad.pem", "-x"])
            .current_dir(p)),
        "bad.pem",
    );
    ok(totogate()
        .args(["keygen", "-P", "right", "k"])
        .current_dir(p));
    usage_error(
        run(totogate()
            .args(["run", "-n", "s", "--signing-key", "k", "-P", "wrong", "-x"])
            .current_dir(p)),
        "wrong password",
    );
    usage_error(
        run(totogate()
            .args(["run", "-n", "s", "--signing-key", "k", "-x"])
            .current_dir(p)),
        "password",
    );
    usage_error(
        run(totogate()
            .args(["run", "-n", "s", "--signing-key", "missing", "-x"])
            .current_dir(p)),
        "missing",
    );
    usage_error(
        run(totogate()
            .args(["run", "-n", "s", "--signing-key", "k.pub", "-x"])
            .current_dir(p)),
        "k.pub",
    );
    no_links(p);
    ok(totogate()
        .args(["run", "-n", "s", "--signing-key", "k", "-P", "right", "-x"])
        .current_dir(p));
}

#[test]
fn malformed_metadata_names_file_and_field() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(totogate().args(["keygen", "k"]).current_dir(p));
    // The reference checks that `command` is a list (and nothing of `name`).
    write(
        &p.join("x.link"),
        "{\"signed\": {\"_type\": \"link\", \"name\": \"s\", \"command\": \"x\"}, \"signatures\": []}",
    );
    usage_error(
        run(totogate()
            .args(["sign", "-f", "x.link", "-k", "k"])
            .current_dir(p)),
        "signed.command",
    );
    write(
        &p.join("y.link"),
        "{\"signed\": {\"_type\": \"lunk\"}, \"signatures\": []}",
    );
    usage_error(
        run(totogate()
            .args(["sign", "-f", "y.link", "-k", "k"])
            .current_dir(p)),
        "y.link",
    );
    write(&p.join("z.link"), "{\"signed\": {");
    usage_error(
        run(totogate()
            .args(["sign", "-f", "z.link", "-k", "k"])
            .current_dir(p)),
        "z.link",
    );
    let unknown = r#"{"signed": {"_type": "layout", "expires": "2030-01-01T00:00:00Z", "steps": [], "inspect": [],
        "keys": {"ab": {"keyid": "ab", "keytype": "dsa", "scheme": "dsa-sha1", "keyval": {"public": "x"}}}}, "signatures": []}"#;
    write(&p.join("l.layout"), unknown);
    usage_error(
        run(totogate()
            .args(["sign", "-f", "l.layout", "-k", "k"])
            .current_dir(p)),
        "dsa-sha1",
    );
    let mut names: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["k", "k.pub", "l.layout", "x.link", "y.link", "z.link"],
        "nothing new written"
    );
}

#[test]
fn non_utf8_artifact_path_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(totogate().args(["keygen", "k"]).current_dir(p));
    let bad = std::ffi::OsStr::from_bytes(b"dir/\xff\xfe.txt");
    std::fs::create_dir(p.join("dir")).unwrap();
    std::fs::write(p.join(bad), b"x").unwrap();
    usage_error(
        run(totogate()
            .args(["run", "-n", "s", "--signing-key", "k", "-x", "-p", "dir"])
            .current_dir(p)),
        "UTF-8",
    );
    no_links(p);
}

#[test]
fn failing_command_still_writes_the_link_and_passes_its_code() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(totogate().args(["keygen", "k"]).current_dir(p));
    let out = run(totogate()
        .args([
            "run",
            "-n",
            "s",
            "--signing-key",
            "k",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .current_dir(p));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_dir(p)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".link"))
            .count(),
        1
    );
    let out = run(totogate()
        .args([
            "run",
            "-n",
            "t",
            "--signing-key",
            "k",
            "--run-timeout",
            "1",
            "--",
            "sleep",
            "5",
        ])
        .current_dir(p));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
}

#[test]
fn keys_are_private_and_links_are_readable() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(totogate().args(["keygen", "k"]).current_dir(p));
    ok(totogate()
        .args(["run", "-n", "s", "--signing-key", "k", "-x"])
        .current_dir(p));
    let mode = |f: &std::path::Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&p.join("k")), 0o600);
    let link = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|x| x == "link"))
        .unwrap();
    assert_eq!(mode(&link) & 0o044, 0o044, "links are public metadata");
}
