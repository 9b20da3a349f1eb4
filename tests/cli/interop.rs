//! Interoperability with the reference implementation (in-toto 3.1.0), with
//! real runs of both tools:
//! (a) metadata written by totogate verifies under the reference;
//! (b) metadata written by the reference verifies under totogate;
//! (c) canonical JSON bytes, file bytes and key ids are identical;
//! (d) both tools refuse the same tampered files.
//! The reference side is scripted by `tests/interop/ref.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

const PW: &str = "s3cret pässword";

/// Key types as `totogate keygen` flags; the names match `ref.py genkeys`.
const TYPES: [(&str, &[&str]); 4] = [
    ("ed25519", &["-t", "ed25519"]),
    ("rsa", &["-t", "rsa"]),
    ("p256", &["-t", "ecdsa", "--curve", "p256"]),
    ("p384", &["-t", "ecdsa", "--curve", "p384"]),
];

fn ref_py(args: &[&str]) -> Output {
    ok(oracle_python()
        .arg(repo().join("tests/interop/ref.py"))
        .args(args))
}

fn ref_json(args: &[&str]) -> Value {
    serde_json::from_slice(&ref_py(args).stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Keys made once by `totogate keygen`: the four types plus `enc` (ed25519,
/// encrypted with PW). Returns the directory and {name: keyid}.
fn tt_keys() -> &'static (PathBuf, Value) {
    static KEYS: OnceLock<(PathBuf, Value)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let mut ids = serde_json::Map::new();
        let mut all: Vec<(&str, Vec<&str>)> = TYPES.iter().map(|(n, a)| (*n, a.to_vec())).collect();
        all.push(("enc", vec!["-t", "ed25519", "-P", PW]));
        for (name, args) in all {
            let out = ok(totogate()
                .arg("keygen")
                .arg(dir.join(name))
                .args(&args)
                .arg("--json"));
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            ids.insert(name.into(), v["keyid"].clone());
        }
        (dir, Value::Object(ids))
    })
}

/// Keys made once by `cryptography` (ref.py genkeys), same names.
fn ref_keys() -> &'static (PathBuf, Value) {
    static KEYS: OnceLock<(PathBuf, Value)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let ids = ref_json(&["genkeys", s(&dir), PW]);
        (dir, ids)
    })
}

fn pub_of(key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", key.display()))
}

fn link_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(".link") && n != "check.link"
        })
        .collect();
    v.sort();
    v
}

fn sh(dir: &Path, script: &str) {
    ok(Command::new("sh").arg("-c").arg(script).current_dir(dir));
}

// ---------------------------------------------------------------- (a)

/// The 2-step layout of `ref.py layout`, as a `totogate layout` template.
fn template(f1_pub: &Path, f2_pub: &Path) -> Value {
    json!({
        "expires_in_days": 30,
        "readme": "interop ü",
        "keys": {"f1": s(f1_pub), "f2": s(f2_pub)},
        "steps": [
            {"name": "write", "pubkeys": ["f1"], "threshold": 1,
             "expected_command": ["sh", "-c"],
             "expected_materials": [["DISALLOW", "*"]],
             "expected_products": [["CREATE", "foo.txt"], ["DISALLOW", "*"]]},
            {"name": "package", "pubkeys": ["f2"], "threshold": 1,
             "expected_command": [],
             "expected_materials": [["MATCH", "foo.txt", "WITH", "PRODUCTS", "FROM", "write"], ["DISALLOW", "*"]],
             "expected_products": [["CREATE", "foo.tar"], ["ALLOW", "foo.txt"], ["DISALLOW", "*"]]}
        ],
        "inspect": [
            {"name": "check", "run": ["test", "-f", "foo.tar"],
             "expected_materials": [["MATCH", "foo.tar", "WITH", "PRODUCTS", "FROM", "package"]],
             "expected_products": []}
        ]
    })
}

#[test]
fn totogate_chains_verify_under_reference() {
    let (kd, ids) = tt_keys();
    for (i, (t, _)) in TYPES.iter().enumerate() {
        let next = TYPES[(i + 1) % TYPES.len()].0;
        for dsse in [false, true] {
            let tag = format!("owner/write {t}, package {next}, dsse {dsse}");
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let (owner, f1, f2) = (kd.join(t), kd.join(t), kd.join(next));
            let dsse_flag: &[&str] = if dsse { &["--use-dsse"] } else { &[] };
            write(
                &d.join("layout.json"),
                &template(&pub_of(&f1), &pub_of(&f2)).to_string(),
            );
            ok(totogate()
                .args([
                    "layout",
                    "layout.json",
                    "-o",
                    "root.layout",
                    "--signing-key",
                ])
                .arg(&owner)
                .args(dsse_flag)
                .current_dir(d));
            ok(totogate()
                .args(["run", "-n", "write", "--signing-key"])
                .arg(&f1)
                .args(["-p", "foo.txt"])
                .args(dsse_flag)
                .args(["--", "sh", "-c", "echo hello > foo.txt"])
                .current_dir(d));
            ok(totogate()
                .args(["record", "start", "-n", "package", "--signing-key"])
                .arg(&f2)
                .args(["-m", "foo.txt"])
                .args(dsse_flag)
                .current_dir(d));
            sh(d, "tar cf foo.tar foo.txt");
            ok(totogate()
                .args(["record", "stop", "-n", "package", "--signing-key"])
                .arg(&f2)
                .args(["-p", "foo.tar", "foo.txt"])
                .current_dir(d));
            let write_link = d.join(format!("write.{}.link", &ids[t].as_str().unwrap()[..8]));
            let package_link = d.join(format!(
                "package.{}.link",
                &ids[next].as_str().unwrap()[..8]
            ));
            assert!(
                write_link.is_file() && package_link.is_file(),
                "{tag}: links {:?}",
                link_files(d)
            );
            if dsse {
                let v: Value =
                    serde_json::from_slice(&std::fs::read(&package_link).unwrap()).unwrap();
                assert!(v.get("payload").is_some(), "{tag}: record stop kept DSSE");
            }

            // The reference accepts every signature ...
            for (file, key) in [
                (&write_link, &f1),
                (&package_link, &f2),
                (&d.join("root.layout"), &owner),
            ] {
                let out = run(oracle("in-toto-sign")
                    .arg("-f")
                    .arg(file)
                    .arg("-k")
                    .arg(pub_of(key))
                    .arg("--verify"));
                assert_eq!(
                    code(&out),
                    0,
                    "{tag}: in-toto-sign --verify {}:\n{}",
                    file.display(),
                    show(&out)
                );
            }
            // ... and the whole chain.
            let out = run(oracle("in-toto-verify")
                .args(["-l", "root.layout", "--verification-keys"])
                .arg(pub_of(&owner))
                .current_dir(d));
            assert_eq!(code(&out), 0, "{tag}: in-toto-verify:\n{}", show(&out));
            let out = run(totogate()
                .args(["verify", "-l", "root.layout", "--verification-keys"])
                .arg(pub_of(&owner))
                .current_dir(d));
            assert_eq!(code(&out), 0, "{tag}: totogate verify:\n{}", show(&out));
        }
    }
}

#[test]
fn totogate_encrypted_key_works_with_reference_run() {
    let (kd, ids) = tt_keys();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = kd.join("enc");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    for dsse in [false, true] {
        let dsse_flag: &[&str] = if dsse { &["--use-dsse"] } else { &[] };
        ok(oracle("in-toto-run")
            .args(["-n", "enc", "--signing-key"])
            .arg(&key)
            .args(["-P", PW, "-p", "out"])
            .args(dsse_flag)
            .args(["--", "sh", "-c", "echo x > out"])
            .current_dir(d));
        let link = d.join(format!("enc.{}.link", &ids["enc"].as_str().unwrap()[..8]));
        ok(totogate()
            .args(["sign", "-f"])
            .arg(&link)
            .arg("-k")
            .arg(pub_of(&key))
            .arg("--verify"));
        ok(oracle("in-toto-sign")
            .arg("-f")
            .arg(&link)
            .arg("-k")
            .arg(pub_of(&key))
            .arg("--verify"));
        std::fs::remove_file(&link).unwrap();
    }
    // A wrong password is refused by the reference.
    let out = run(oracle("in-toto-run")
        .args(["-n", "enc", "--signing-key"])
        .arg(&key)
        .args(["-P", "wrong", "-x"])
        .current_dir(d));
    assert_eq!(code(&out), 1, "{}", show(&out));
}

// ---------------------------------------------------------------- (b)

#[test]
fn reference_chains_verify_under_totogate() {
    let (kd, ids) = ref_keys();
    for (i, (t, _)) in TYPES.iter().enumerate() {
        // The ed25519 chain's second functionary uses the encrypted key.
        let next = if *t == "ed25519" {
            "enc"
        } else {
            TYPES[(i + 1) % TYPES.len()].0
        };
        let extra = TYPES[(i + 2) % TYPES.len()].0;
        for dsse in [false, true] {
            let tag = format!(
                "owner/write {t}, package {next}, extra layout signer {extra}, dsse {dsse}"
            );
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let (owner, f1, f2, second) = (kd.join(t), kd.join(t), kd.join(next), kd.join(extra));
            let dsse_flag: &[&str] = if dsse { &["--use-dsse"] } else { &[] };
            let pw: &[&str] = if next == "enc" { &["-P", PW] } else { &[] };
            ref_py(&[
                "layout",
                s(&d.join("root.layout")),
                s(&owner),
                "-",
                if dsse { "1" } else { "0" },
                s(&pub_of(&f1)),
                s(&pub_of(&f2)),
            ]);
            ok(oracle("in-toto-sign")
                .args(["-f", "root.layout", "-a", "-k"])
                .arg(&second)
                .current_dir(d));
            ok(oracle("in-toto-run")
                .args(["-n", "write", "--signing-key"])
                .arg(&f1)
                .args(["-p", "foo.txt"])
                .args(dsse_flag)
                .args(["--", "sh", "-c", "echo hello > foo.txt"])
                .current_dir(d));
            ok(oracle("in-toto-record")
                .args(["start", "-n", "package", "--signing-key"])
                .arg(&f2)
                .args(pw)
                .args(["-m", "foo.txt"])
                .args(dsse_flag)
                .current_dir(d));
            sh(d, "tar cf foo.tar foo.txt");
            ok(oracle("in-toto-record")
                .args(["stop", "-n", "package", "--signing-key"])
                .arg(&f2)
                .args(pw)
                .args(["-p", "foo.tar", "foo.txt"])
                .current_dir(d));
            let write_link = d.join(format!("write.{}.link", &ids[t].as_str().unwrap()[..8]));
            let package_link = d.join(format!(
                "package.{}.link",
                &ids[next].as_str().unwrap()[..8]
            ));
            // in-toto-sign re-signs the link (same key: same file name).
            ok(oracle("in-toto-sign")
                .arg("-f")
                .arg(&write_link)
                .arg("-k")
                .arg(&f1)
                .current_dir(d));
            assert!(
                write_link.is_file() && package_link.is_file(),
                "{tag}: links {:?}",
                link_files(d)
            );

            for (file, keys) in [
                (&write_link, vec![&f1]),
                (&package_link, vec![&f2]),
                (&d.join("root.layout"), vec![&owner, &second]),
            ] {
                for key in keys {
                    let out = run(totogate()
                        .args(["sign", "-f"])
                        .arg(file)
                        .arg("-k")
                        .arg(pub_of(key))
                        .arg("--verify"));
                    assert_eq!(
                        code(&out),
                        0,
                        "{tag}: totogate sign --verify {} with {}:\n{}",
                        file.display(),
                        key.display(),
                        show(&out)
                    );
                }
            }
            for tool in ["totogate", "in-toto-verify"] {
                let mut cmd = if tool == "totogate" {
                    let mut c = totogate();
                    c.arg("verify");
                    c
                } else {
                    oracle("in-toto-verify")
                };
                let out = run(cmd
                    .args(["-l", "root.layout", "--verification-keys"])
                    .arg(pub_of(&owner))
                    .arg(pub_of(&second))
                    .current_dir(d));
                assert_eq!(code(&out), 0, "{tag}: {tool}:\n{}", show(&out));
            }
        }
    }
}

#[test]
fn totogate_signs_with_reference_encrypted_key() {
    let (kd, ids) = ref_keys();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = kd.join("enc");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    let link = d.join(format!("s.{}.link", &ids["enc"].as_str().unwrap()[..8]));
    for dsse in [false, true] {
        let dsse_flag: &[&str] = if dsse { &["--use-dsse"] } else { &[] };
        ok(totogate()
            .args(["run", "-n", "s", "--signing-key"])
            .arg(&key)
            .args(["-P", PW, "-p", "out"])
            .args(dsse_flag)
            .args(["--", "sh", "-c", "echo x > out"])
            .current_dir(d));
        ok(oracle("in-toto-sign")
            .arg("-f")
            .arg(&link)
            .arg("-k")
            .arg(pub_of(&key))
            .arg("--verify"));
        ok(totogate()
            .args(["sign", "-f"])
            .arg(&link)
            .arg("-k")
            .arg(pub_of(&key))
            .arg("--verify"));
        std::fs::remove_file(&link).unwrap();
    }
    // record start/stop and layout signing with the same encrypted key.
    ok(totogate()
        .args(["record", "start", "-n", "r", "--signing-key"])
        .arg(&key)
        .args(["-P", PW])
        .current_dir(d));
    ok(totogate()
        .args(["record", "stop", "-n", "r", "--signing-key"])
        .arg(&key)
        .args(["-P", PW])
        .current_dir(d));
    let rlink = d.join(format!("r.{}.link", &ids["enc"].as_str().unwrap()[..8]));
    ok(oracle("in-toto-sign")
        .arg("-f")
        .arg(&rlink)
        .arg("-k")
        .arg(pub_of(&key))
        .arg("--verify"));
    write(
        &d.join("t.json"),
        &json!({"expires_in_days": 1, "steps": [], "inspect": []}).to_string(),
    );
    ok(totogate()
        .args([
            "layout",
            "t.json",
            "-o",
            "l.layout",
            "-P",
            PW,
            "--signing-key",
        ])
        .arg(&key)
        .current_dir(d));
    ok(oracle("in-toto-sign")
        .args(["-f", "l.layout", "-k"])
        .arg(pub_of(&key))
        .arg("--verify")
        .current_dir(d));
    // The wrong password is refused.
    let out = run(totogate()
        .args(["run", "-n", "s", "-x", "--signing-key"])
        .arg(&key)
        .args(["-P", "wrong"])
        .current_dir(d));
    assert_ne!(code(&out), 0, "{}", show(&out));
    assert!(!link.exists());
}

// ---------------------------------------------------------------- (c)

#[test]
fn canonical_bytes_equal_securesystemslib() {
    let vectors = ref_json(&["canon"]);
    let vectors = vectors.as_array().unwrap();
    assert!(vectors.len() >= 20);
    let mut bad = Vec::new();
    for v in vectors {
        let (text, want) = (v[0].as_str().unwrap(), v[1].as_str().unwrap());
        let value: Value = serde_json::from_str(text).unwrap();
        match totogate::cjson::encode(&value) {
            Ok(bytes) if hex::encode(&bytes) == want => {}
            Ok(bytes) => bad.push(format!(
                "{text}: securesystemslib {want}, totogate {}",
                hex::encode(bytes)
            )),
            Err(e) => bad.push(format!(
                "{text}: securesystemslib {want}, totogate error {e}"
            )),
        }
    }
    assert!(
        bad.is_empty(),
        "canonical JSON differs:\n{}",
        bad.join("\n")
    );
}

#[test]
fn reference_link_resigned_by_totogate_is_byte_identical() {
    let (kd, _) = ref_keys();
    let key = kd.join("ed25519");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ref_py(&["canonlink", s(d), s(&key)]);
    for name in ["canon.link", "canon.dsse.link"] {
        let file = d.join(name);
        // The signature (over the canonical bytes / PAE) verifies in totogate.
        ok(totogate()
            .args(["sign", "-f"])
            .arg(&file)
            .arg("-k")
            .arg(pub_of(&key))
            .arg("--verify"));
        // Re-signing with the same (deterministic) ed25519 key gives the
        // reference's file, byte for byte ...
        let re = d.join(format!("tt-{name}"));
        ok(totogate()
            .args(["sign", "-f"])
            .arg(&file)
            .arg("-k")
            .arg(&key)
            .arg("-o")
            .arg(&re));
        let (want, got) = (std::fs::read(&file).unwrap(), std::fs::read(&re).unwrap());
        assert!(
            want == got,
            "{name}: totogate re-sign differs:\nreference: {}\ntotogate:  {}",
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(&got)
        );
        // ... and so does in-toto-sign's re-signing of totogate's file.
        let back = d.join(format!("ref-{name}"));
        ok(oracle("in-toto-sign")
            .arg("-f")
            .arg(&re)
            .arg("-k")
            .arg(&key)
            .arg("-o")
            .arg(&back));
        assert!(
            std::fs::read(&back).unwrap() == want,
            "{name}: in-toto-sign re-sign differs"
        );
    }
}

#[test]
fn totogate_link_resigned_by_reference_is_byte_identical() {
    // Streams and file names with non-ASCII, quotes, backslashes and control
    // characters, recorded by totogate and re-signed by in-toto-sign.
    let (kd, ids) = tt_keys();
    let key = kd.join("ed25519");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = r#"printf 'caf\303\251 \360\237\230\200 \356\200\200 "q" \\ \001\t\n' > 'ü "q" \.txt'; printf 'out \001 ü\n'; printf 'err \\ "\n' >&2"#;
    for dsse in [false, true] {
        let dsse_flag: &[&str] = if dsse { &["--use-dsse"] } else { &[] };
        ok(totogate()
            .args(["run", "-n", "strange-é", "-s", "--signing-key"])
            .arg(&key)
            .args(["-p", "."])
            .args(dsse_flag)
            .args(["--", "sh", "-c", script])
            .current_dir(d));
        let link = d.join(format!(
            "strange-é.{}.link",
            &ids["ed25519"].as_str().unwrap()[..8]
        ));
        let theirs = d.join(if dsse { "ref.dsse.out" } else { "ref.mb.out" });
        ok(oracle("in-toto-sign")
            .arg("-f")
            .arg(&link)
            .arg("-k")
            .arg(&key)
            .arg("-o")
            .arg(&theirs));
        let (ours, back) = (
            std::fs::read(&link).unwrap(),
            std::fs::read(&theirs).unwrap(),
        );
        assert!(
            ours == back,
            "dsse {dsse}: in-toto-sign re-sign differs:\ntotogate:  {}\nreference: {}",
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&back)
        );
        let text = String::from_utf8_lossy(&ours).to_string();
        if !dsse {
            assert!(text.contains("\\u0001"), "streams recorded: {text}");
        }
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&theirs).unwrap();
    }
}

#[test]
fn keyids_equal_securesystemslib() {
    // Keys made by totogate: `keygen --json` keyid == SSlibKey keyid.
    let (kd, ids) = tt_keys();
    let names = ["ed25519", "rsa", "p256", "p384", "enc"];
    let pubs: Vec<String> = names
        .iter()
        .map(|n| s(&pub_of(&kd.join(n))).to_owned())
        .collect();
    let mut args = vec!["keyid"];
    args.extend(pubs.iter().map(String::as_str));
    let theirs = ref_json(&args);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            ids[n], theirs[i][0],
            "{n}: totogate keygen keyid vs securesystemslib"
        );
    }
    // Keys made by cryptography: the key dicts and ids totogate puts in a
    // layout == SSlibKey's.
    let (rd, rids) = ref_keys();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| (n.to_string(), json!(s(&pub_of(&rd.join(n))))))
        .collect();
    write(
        &d.join("t.json"),
        &json!({"expires_in_days": 1, "keys": keys, "steps": [], "inspect": []}).to_string(),
    );
    ok(totogate()
        .args(["layout", "t.json", "-o", "l.layout", "--signing-key"])
        .arg(rd.join("ed25519"))
        .current_dir(d));
    let layout: Value =
        serde_json::from_slice(&std::fs::read(d.join("l.layout")).unwrap()).unwrap();
    let in_layout = layout["signed"]["keys"].as_object().unwrap();
    let mut args = vec!["keyid".to_owned()];
    args.extend(names.iter().map(|n| s(&pub_of(&rd.join(n))).to_owned()));
    let theirs = ref_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (i, n) in names.iter().enumerate() {
        let id = rids[n].as_str().unwrap();
        assert_eq!(theirs[i][0], json!(id));
        let ours = in_layout
            .get(id)
            .unwrap_or_else(|| panic!("{n}: keyid {id} not in {in_layout:?}"));
        let mut want = theirs[i][1].clone();
        want["keyid"] = json!(id);
        assert_eq!(ours, &want, "{n}: key dict");
    }
    ok(oracle("in-toto-sign")
        .args(["-f", "l.layout", "-k"])
        .arg(pub_of(&rd.join("ed25519")))
        .arg("--verify")
        .current_dir(d));
}

/// Integers outside the 64-bit range (e.g. 2**64, -2**63-1 in a link's
/// byproducts) are legal in the reference (Python ints, written exactly by
/// encode_canonical); totogate keeps them exact too (serde_json
/// `arbitrary_precision`).
#[test]
fn integers_beyond_64_bits() {
    let (kd, _) = ref_keys();
    let key = kd.join("ed25519");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = format!(
        "import sys; sys.path.insert(0, {:?})\nfrom ref import *\n\
         s = load_crypto_signer_from_pkcs8_file({:?})\n\
         for n, v in [('big', 2**64), ('neg', -2**63 - 1)]:\n    \
         mb = Metablock(signed=Link(name='x', byproducts={{'v': v}})); mb.create_signature(s); mb.dump(n + '.link')\n",
        s(&repo().join("tests/interop")),
        s(&key)
    );
    ok(oracle_python().arg("-c").arg(script).current_dir(d));
    for n in ["big.link", "neg.link"] {
        ok(oracle("in-toto-sign")
            .args(["-f", n, "-k"])
            .arg(pub_of(&key))
            .arg("--verify")
            .current_dir(d));
        ok(totogate()
            .args(["sign", "-f", n, "-k"])
            .arg(pub_of(&key))
            .arg("--verify")
            .current_dir(d));
    }
}

// ---------------------------------------------------------------- (d)

fn flip_hex(c: u8) -> u8 {
    if c == b'0' {
        b'1'
    } else {
        b'0'
    }
}

/// Change one character of `needle` (at `at`) where it first occurs after
/// `after`; the needle must occur there.
fn flip_in(text: &str, after: &str, needle: &str, at: usize, to: Option<u8>) -> String {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in {text}"));
    let pos = start
        + text[start..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not after {after:?} in {text}"))
        + at;
    let mut bytes = text.as_bytes().to_vec();
    bytes[pos] = to.unwrap_or_else(|| flip_hex(bytes[pos]));
    String::from_utf8(bytes).unwrap()
}

/// Variants of a link with one byte of its signed part or signature changed.
fn tampered(file: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let v: Value = serde_json::from_slice(file).unwrap();
    let text = std::str::from_utf8(file).unwrap();
    let edit_signed = |f: &dyn Fn(&str) -> String| -> Vec<u8> {
        if let Some(p) = v.get("payload") {
            let payload = String::from_utf8(B64.decode(p.as_str().unwrap()).unwrap()).unwrap();
            let mut v2 = v.clone();
            v2["payload"] = json!(B64.encode(f(&payload)));
            serde_json::to_vec(&v2).unwrap()
        } else {
            f(text).into_bytes()
        }
    };
    let signed: Value = match v.get("payload") {
        Some(p) => serde_json::from_slice(&B64.decode(p.as_str().unwrap()).unwrap()).unwrap(),
        None => v["signed"].clone(),
    };
    let hash = signed["products"]["foo.txt"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut out = vec![
        (
            "product hash char",
            edit_signed(&|t| flip_in(t, "\"products\"", &hash, 17, None)),
        ),
        (
            "name",
            edit_signed(&|t| flip_in(t, "\"name\"", "\"write\"", 5, Some(b'j'))),
        ),
        (
            "command word",
            edit_signed(&|t| flip_in(t, "\"command\"", "\"echo hello > foo.txt\"", 9, Some(b'p'))),
        ),
    ];
    if v.get("payload").is_some() {
        let mut v2 = v.clone();
        let mut sig = B64
            .decode(v["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        sig[10] ^= 0x01;
        v2["signatures"][0]["sig"] = json!(B64.encode(sig));
        out.push(("signature byte", serde_json::to_vec(&v2).unwrap()));
    } else {
        out.push((
            "signature hex char",
            flip_in(text, "\"sig\"", "\"", 21, None).into_bytes(),
        ));
    }
    for (what, bytes) in &out {
        assert!(bytes.as_slice() != file, "{what}: nothing changed");
        serde_json::from_slice::<Value>(bytes)
            .unwrap_or_else(|e| panic!("{what}: invalid JSON {e}"));
    }
    out
}

#[test]
fn tampered_links_refused_by_both() {
    let (tk, _) = tt_keys();
    let (rk, _) = ref_keys();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cases = Vec::new();
    for (writer, kd) in [("totogate", tk), ("reference", rk)] {
        for dsse in [false, true] {
            let w = d.join(format!("{writer}-{dsse}"));
            std::fs::create_dir(&w).unwrap();
            let key = kd.join("ed25519");
            let mut cmd = if writer == "totogate" {
                let mut c = totogate();
                c.arg("run");
                c
            } else {
                oracle("in-toto-run")
            };
            if dsse {
                cmd.arg("--use-dsse");
            }
            ok(cmd
                .args(["-n", "write", "--signing-key"])
                .arg(&key)
                .args(["-p", "foo.txt", "--", "sh", "-c", "echo hello > foo.txt"])
                .current_dir(&w));
            let link = link_files(&w).pop().unwrap();
            cases.push((format!("{writer} dsse={dsse}"), link, pub_of(&key)));
        }
    }
    let mut bad = Vec::new();
    for (tag, link, key) in cases {
        let original = std::fs::read(&link).unwrap();
        let check = |file: &Path| -> (i32, i32) {
            let r = run(oracle("in-toto-sign")
                .arg("-f")
                .arg(file)
                .arg("-k")
                .arg(&key)
                .arg("--verify"));
            let t = run(totogate()
                .args(["sign", "-f"])
                .arg(file)
                .arg("-k")
                .arg(&key)
                .arg("--verify"));
            (code(&r), code(&t))
        };
        assert_eq!(check(&link), (0, 0), "{tag}: untampered link");
        for (what, bytes) in tampered(&original) {
            let f = link.with_extension(format!("{}.tampered", what.replace(' ', "-")));
            std::fs::write(&f, &bytes).unwrap();
            let got = check(&f);
            if got != (1, 1) {
                bad.push(format!("{tag}, {what}: in-toto-sign --verify exit {}, totogate sign --verify exit {} (want 1, 1)", got.0, got.1));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `run` records the same artifacts as `in-toto-run` on a tree with nested
/// and excluded directories, symlinks to files and directories (followed,
/// as in-toto-run follows them), a broken symlink, a fifo, unicode and
/// spaces in names, and the path options. Symlink loops are left out: the
/// reference follows them until the kernel says ELOOP (we skip them).
#[test]
fn recorded_artifacts_equal_in_toto_run() {
    let (kd, ids) = tt_keys();
    let key = kd.join("ed25519");
    let short = &ids["ed25519"].as_str().unwrap()[..8];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        "mkdir -p tree/sub/deeper tree/.git 'tree/sp ace' tree/empty elsewhere && \
         printf a > tree/a.txt && printf b > tree/sub/b.bin && printf c > tree/sub/deeper/c && \
         printf g > tree/.git/config && printf l > tree/x.link && printf '~' > 'tree/b~' && \
         printf u > 'tree/sp ace/\u{fc}.txt' && printf 'crlf\\r\\n' > tree/sub/crlf.txt && \
         ln -s a.txt tree/link-to-a && ln -s sub tree/link-to-sub && ln -s nowhere tree/broken && \
         mkfifo tree/fifo && printf top > top.txt",
    );
    let cases: &[&[&str]] = &[
        &["-p", "tree"],
        &["-p", "./tree/", "tree/sub", "top.txt", "missing"],
        &["-p", "."],
        &["-p", "tree", "--lstrip-paths", "tree/"],
        &["-p", "tree", "--exclude", "*.txt", "sub/deeper"],
        &["-p", "sub", "a.txt", "--base-path", "tree"],
        &["-p", "file:tree/a.txt", "tree/link-to-sub"],
    ];
    for (i, args) in cases.iter().enumerate() {
        let (tt_out, ref_out) = (d.join(format!("tt{i}")), d.join(format!("ref{i}")));
        std::fs::create_dir_all(&tt_out).unwrap();
        std::fs::create_dir_all(&ref_out).unwrap();
        ok(totogate()
            .args(["run", "-q", "-n", "rec", "-x", "--signing-key"])
            .arg(&key)
            .arg("-d")
            .arg(&tt_out)
            .args(*args)
            .current_dir(d));
        ok(oracle("in-toto-run")
            .args(["-n", "rec", "-x", "--signing-key"])
            .arg(&key)
            .arg("-d")
            .arg(&ref_out)
            .args(*args)
            .current_dir(d));
        let products = |dir: &Path| -> Value {
            let f = dir.join(format!("rec.{short}.link"));
            let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            v["signed"]["products"].clone()
        };
        let (ours, theirs) = (products(&tt_out), products(&ref_out));
        assert!(
            !ours.as_object().unwrap().is_empty(),
            "case {args:?} recorded nothing"
        );
        assert_eq!(ours, theirs, "case {args:?}");
    }
}
