//! GPG (OpenPGP) keys and signatures against the reference (in-toto 3.1.0 +
//! securesystemslib 1.6.0): fresh GnuPG keys, supply chains signed by the
//! reference tools (`in-toto-sign --gpg`, `in-toto-run --gpg`), then the
//! verdicts of `in-toto-verify -g` and `totogate verify -g` compared case by
//! case. Everything signed is made once per test binary (`fx`), after which
//! the gpg-agent is stopped; the tests only copy, tamper and verify.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use totogate::json::JsonLimits;
use totogate::model::Envelope;

use crate::common::*;

struct Fx {
    home: PathBuf,
    /// Scenario directories (layout + links), by name.
    root: PathBuf,
    rsa_a: String,
    rsa_b: String,
    rsa_b_sub: String,
    ed_a: String,
    ed_other: String,
    /// Made in 2020 with a validity of one day: expired.
    old_ed: String,
    old_rsa: String,
    /// Revoked after it signed its scenario.
    revoked: String,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.args([
        "--batch",
        "--homedir",
        s(home),
        "--pinentry-mode",
        "loopback",
    ])
    .args(["--passphrase", ""]);
    c
}

/// Fingerprints of the primary key and subkeys whose user id is `uid`.
fn fingerprints(home: &Path, uid: &str) -> Vec<String> {
    let out = ok(gpg(home).args([
        "--with-colons",
        "--with-subkey-fingerprints",
        "--list-keys",
        uid,
    ]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("fpr:"))
        .map(|l| l.split(':').nth(9).unwrap().to_owned())
        .collect()
}

const MAKE_LAYOUT: &str = r#"
import sys
from in_toto.models.layout import Layout, Step
from in_toto.models.metadata import Metablock
home, out, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3])
layout = Layout()
layout.set_relative_expiration(months=1)
# "MAIN/SUB": list MAIN's key, authorise its subkey SUB by id.
keyids = []
for arg in sys.argv[4:]:
    main, _, sub = arg.partition("/")
    key = layout.add_functionary_key_from_gpg_keyid(main, gpg_home=home)
    keyids.append(sub.lower() or key["keyid"])
step = Step(name="build")
step.pubkeys = keyids
step.threshold = threshold
step.expected_command = ["touch", "out.txt"]
step.expected_products = [["CREATE", "out.txt"], ["DISALLOW", "*"]]
layout.steps = [step]
Metablock(signed=layout).dump(out)
"#;

/// A supply chain: a layout authorising `functionaries` (threshold
/// `threshold`) signed by `owners`, and a link by each of `linkers`.
fn scenario(
    fx: &Fx,
    name: &str,
    owners: &[&str],
    functionaries: &[&str],
    threshold: u32,
    linkers: &[&str],
) {
    scenario_at(fx, name, owners, functionaries, threshold, linkers, None)
}

/// `scenario`, with gpg signing at a faked time (`--faked-system-time`).
fn scenario_at(
    fx: &Fx,
    name: &str,
    owners: &[&str],
    functionaries: &[&str],
    threshold: u32,
    linkers: &[&str],
    faked_time: Option<&str>,
) {
    let gnupg = faked_time.map(|t| format!("gpg --faked-system-time {t}!"));
    let dir = fx.root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let layout = dir.join("root.layout");
    ok(oracle_python()
        .args(["-c", MAKE_LAYOUT, s(&fx.home), s(&layout)])
        .arg(threshold.to_string())
        .args(functionaries));
    let mut sign = oracle("in-toto-sign");
    if let Some(g) = &gnupg {
        sign.env("GNUPG", g);
    }
    ok(sign
        .args(["-f", s(&layout), "--gpg-home", s(&fx.home), "-g"])
        .args(owners));
    for who in linkers {
        let mut run = oracle("in-toto-run");
        if let Some(g) = &gnupg {
            run.env("GNUPG", g);
        }
        ok(run
            .current_dir(&dir)
            .args(["-n", "build", "--gpg", who, "--gpg-home", s(&fx.home)])
            .args(["-p", "out.txt", "--", "touch", "out.txt"]));
    }
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let v = Command::new("gpg").arg("--version").output();
        assert!(
            v.is_ok_and(|o| o.status.success()),
            "these tests need GnuPG's `gpg` on PATH (Debian: apt-get install gnupg)"
        );
        oracle_bin();
        // GnuPG's sockets live in the home: keep its path short (/tmp).
        let tmp = tempfile::Builder::new()
            .prefix("tg-gpg")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let home = tmp.join("h");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let gen_at = |uid: &str, algo: &str, expiry: &str, faked: Option<&str>| {
            let mut c = gpg(&home);
            if let Some(t) = faked {
                c.args(["--faked-system-time", t]);
            }
            ok(c.args(["--quick-gen-key", uid, algo, "sign", expiry]));
            fingerprints(&home, uid)[0].clone()
        };
        let gen = |uid: &str, algo: &str| gen_at(uid, algo, "never", None);
        let rsa_a = gen("RSA A <rsa-a@example.org>", "rsa3072");
        let rsa_b = gen("RSA B <rsa-b@example.org>", "rsa3072");
        ok(gpg(&home).args(["--quick-add-key", &rsa_b, "rsa2048", "sign", "never"]));
        let rsa_b_sub = fingerprints(&home, "rsa-b@example.org")[1].clone();
        let ed_a = gen("Ed A <ed-a@example.org>", "ed25519");
        let ed_other = gen("Ed Other <ed-other@example.org>", "ed25519");
        const PAST: &str = "20200101T000000!";
        let old_ed = gen_at("Old Ed <old-ed@example.org>", "ed25519", "1d", Some(PAST));
        let old_rsa = gen_at("Old RSA <old-rsa@example.org>", "rsa2048", "1d", Some(PAST));
        let revoked = gen("Revoked <revoked@example.org>", "ed25519");
        let fx = Fx {
            home: home.clone(),
            root: tmp.join("scenarios"),
            rsa_a,
            rsa_b,
            rsa_b_sub,
            ed_a,
            ed_other,
            old_ed,
            old_rsa,
            revoked,
        };
        // An RSA-signed layout, an Ed25519 link.
        scenario(&fx, "rsa_owner", &[&fx.rsa_a], &[&fx.ed_a], 1, &[&fx.ed_a]);
        // An Ed25519-signed layout, an RSA link.
        scenario(&fx, "ed_owner", &[&fx.ed_a], &[&fx.rsa_a], 1, &[&fx.rsa_a]);
        // Key B has a signing subkey: gpg signs the layout and the link with
        // it; the link is named after the subkey.
        scenario(&fx, "subkey", &[&fx.rsa_b], &[&fx.rsa_b], 1, &[&fx.rsa_b]);
        // The step authorises B's subkey by its id (B is in the layout's keys).
        let b_sub = format!("{}/{}", fx.rsa_b, fx.rsa_b_sub);
        scenario(
            &fx,
            "authorised_subkey",
            &[&fx.ed_a],
            &[&b_sub],
            1,
            &[&fx.rsa_b],
        );
        // The link is by a key the layout does not list.
        scenario(
            &fx,
            "stranger",
            &[&fx.ed_a],
            &[&fx.rsa_a],
            1,
            &[&fx.ed_other],
        );
        // Threshold 2, one link.
        scenario(
            &fx,
            "threshold",
            &[&fx.ed_a],
            &[&fx.ed_a, &fx.rsa_a],
            2,
            &[&fx.ed_a],
        );
        // Threshold 2, both links.
        scenario(
            &fx,
            "threshold_met",
            &[&fx.ed_a, &fx.rsa_a],
            &[&fx.ed_a, &fx.rsa_a],
            2,
            &[&fx.ed_a, &fx.rsa_a],
        );
        // Layouts signed (in 2020) by keys that expired a day later.
        let then = Some("20200101T000100");
        scenario_at(&fx, "expired_ed", &[&fx.old_ed], &[&fx.ed_a], 1, &[], then);
        scenario_at(
            &fx,
            "expired_rsa",
            &[&fx.old_rsa],
            &[&fx.ed_a],
            1,
            &[],
            then,
        );
        for name in ["expired_ed", "expired_rsa"] {
            ok(oracle("in-toto-run")
                .current_dir(fx.root.join(name))
                .args(["-n", "build", "--gpg", &fx.ed_a, "--gpg-home", s(&fx.home)])
                .args(["-p", "out.txt", "--", "touch", "out.txt"]));
        }
        // A layout by a key revoked afterwards.
        scenario(&fx, "revoked", &[&fx.revoked], &[&fx.ed_a], 1, &[&fx.ed_a]);
        let rev = home.join(format!("openpgp-revocs.d/{}.rev", fx.revoked));
        let cert = std::fs::read_to_string(&rev)
            .unwrap()
            .replace(":-----BEGIN", "-----BEGIN");
        std::fs::write(&rev, cert).unwrap();
        ok(gpg(&home).arg("--import").arg(&rev));
        // Nothing signs from here on.
        let _ = Command::new("gpgconf")
            .args(["--homedir", s(&home), "--kill", "gpg-agent"])
            .output();
        fx
    })
}

/// A private copy of a scenario to tamper with.
fn copy_of(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fx().root.join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
    }
    d
}

/// Runs both verifiers on `dir` with layout keys `keys` (GPG ids) and
/// requires the same verdict, which must be `pass`.
#[track_caller]
fn same_verdict(dir: &Path, keys: &[&str], pass: bool) {
    let fx = fx();
    let args = |c: &mut Command| {
        c.current_dir(dir)
            .args([
                "-l",
                "root.layout",
                "--link-dir",
                ".",
                "--gpg-home",
                s(&fx.home),
                "-g",
            ])
            .args(keys);
    };
    let mut r = oracle("in-toto-verify");
    args(&mut r);
    let r = run(&mut r);
    let mut t = totogate();
    t.arg("verify");
    args(&mut t);
    let t = run(&mut t);
    assert_eq!(
        code(&r) == 0,
        pass,
        "reference verdict unexpected:\n{}",
        show(&r)
    );
    assert_eq!(
        code(&t) == 0,
        pass,
        "totogate differs from the reference ({}):\n{}",
        show(&r),
        show(&t)
    );
    if !pass {
        assert_eq!(code(&t), 1, "a failed verification exits 1:\n{}", show(&t));
    }
}

fn only_link(dir: &Path) -> PathBuf {
    let links: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "link"))
        .collect();
    assert_eq!(links.len(), 1, "{links:?}");
    links[0].clone()
}

fn tamper(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn gpg_good_chains_pass() {
    let fx = fx();
    same_verdict(&fx.root.join("rsa_owner"), &[&fx.rsa_a], true);
    same_verdict(&fx.root.join("ed_owner"), &[&fx.ed_a], true);
    same_verdict(&fx.root.join("threshold_met"), &[&fx.ed_a, &fx.rsa_a], true);
}

#[test]
fn gpg_subkey_signed_chain_passes_under_any_id_form() {
    let fx = fx();
    let dir = fx.root.join("subkey");
    // The link is named after the subkey that signed it.
    let link = only_link(&dir);
    let name = link.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        name,
        format!("build.{}.link", &fx.rsa_b_sub.to_lowercase()[..8])
    );
    // Full fingerprint, long and short id, lower case, the subkey's id: the
    // whole key (with subkeys) is loaded each time.
    let lower = fx.rsa_b.to_lowercase();
    for id in [
        fx.rsa_b.as_str(),
        &fx.rsa_b[24..],
        &lower[32..],
        &fx.rsa_b_sub[24..],
    ] {
        same_verdict(&dir, &[id], true);
    }
}

#[test]
fn gpg_step_may_authorise_a_subkey_by_id() {
    let fx = fx();
    let dir = fx.root.join("authorised_subkey");
    let layout = std::fs::read_to_string(dir.join("root.layout")).unwrap();
    assert!(layout.contains(&fx.rsa_b_sub.to_lowercase()), "{layout}");
    same_verdict(&dir, &[&fx.ed_a], true);
}

#[test]
fn gpg_tampered_link_fails() {
    let d = copy_of("rsa_owner");
    tamper(&only_link(d.path()), "\"touch\"", "\"touck\"");
    same_verdict(d.path(), &[&fx().rsa_a], false);
    let d = copy_of("subkey");
    tamper(&only_link(d.path()), "\"out.txt\"", "\"out.txu\"");
    same_verdict(d.path(), &[&fx().rsa_b], false);
}

#[test]
fn gpg_tampered_signature_fails() {
    // Flip the last hex digit of the link's signature, then of its headers.
    for field in ["\"signature\": \"", "\"other_headers\": \""] {
        let d = copy_of("ed_owner");
        let link = only_link(d.path());
        let text = std::fs::read_to_string(&link).unwrap();
        let start = text.find(field).unwrap() + field.len();
        let end = start + text[start..].find('"').unwrap();
        let last = &text[end - 1..end];
        let flipped = if last == "0" { "1" } else { "0" };
        let text = format!("{}{}{}", &text[..end - 1], flipped, &text[end..]);
        std::fs::write(&link, text).unwrap();
        same_verdict(d.path(), &[&fx().ed_a], false);
    }
}

#[test]
fn gpg_tampered_layout_fails() {
    let d = copy_of("ed_owner");
    tamper(&d.path().join("root.layout"), "\"touch\"", "\"touck\"");
    same_verdict(d.path(), &[&fx().ed_a], false);
}

#[test]
fn gpg_wrong_layout_key_fails() {
    let fx = fx();
    same_verdict(&fx.root.join("ed_owner"), &[&fx.ed_other], false);
    // Every key given must have signed.
    same_verdict(&fx.root.join("ed_owner"), &[&fx.ed_a, &fx.rsa_a], false);
}

#[test]
fn gpg_link_by_unlisted_key_fails() {
    let fx = fx();
    same_verdict(&fx.root.join("stranger"), &[&fx.ed_a], false);
    // Renamed to the authorised key's file name, its signature is not that key's.
    let d = copy_of("stranger");
    let link = only_link(d.path());
    std::fs::rename(
        &link,
        d.path()
            .join(format!("build.{}.link", &fx.rsa_a.to_lowercase()[..8])),
    )
    .unwrap();
    same_verdict(d.path(), &[&fx.ed_a], false);
}

#[test]
fn gpg_expired_and_revoked_keys_as_the_reference() {
    let fx = fx();
    // securesystemslib reads an Ed25519 key's validity period from a
    // self-signature it cannot verify (it hashes the key packet's short
    // header as is): it never sees the expiry, and passes.
    same_verdict(&fx.root.join("expired_ed"), &[&fx.old_ed], true);
    // An RSA key's expiry it sees, and refuses.
    same_verdict(&fx.root.join("expired_rsa"), &[&fx.old_rsa], false);
    // Revocation is not looked at.
    same_verdict(&fx.root.join("revoked"), &[&fx.revoked], true);
}

#[test]
fn gpg_threshold_two_with_one_link_fails() {
    let fx = fx();
    same_verdict(&fx.root.join("threshold"), &[&fx.ed_a], false);
}

#[test]
fn gpg_signed_metadata_reserialises_byte_identically() {
    let fx = fx();
    for name in ["rsa_owner", "ed_owner", "subkey", "threshold_met"] {
        let dir = fx.root.join(name);
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "link" && x != "layout") {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let env = Envelope::parse(&bytes, JsonLimits::default()).unwrap();
            assert_eq!(
                String::from_utf8(env.to_file_bytes()).unwrap(),
                String::from_utf8(bytes).unwrap(),
                "{}",
                p.display()
            );
        }
    }
}

const EXPORT: &str = r#"
import json, sys
from securesystemslib._gpg.functions import export_pubkey
print(json.dumps(export_pubkey(sys.argv[2], homedir=sys.argv[1])))
"#;

#[test]
fn gpg_key_dicts_match_securesystemslib_export() {
    let fx = fx();
    // The same keys as a legacy keyring and as binary and armored exports.
    let d = tempfile::tempdir().unwrap();
    let legacy = d.path().join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    let bin = ok(Command::new("gpg").args(["--homedir", s(&fx.home), "--export"])).stdout;
    std::fs::write(legacy.join("pubring.gpg"), &bin).unwrap();
    let armored = d.path().join("keys.asc");
    let asc = ok(Command::new("gpg").args(["--homedir", s(&fx.home), "--export", "-a"])).stdout;
    std::fs::write(&armored, asc).unwrap();
    let bin_file = d.path().join("keys.gpg");
    std::fs::write(&bin_file, &bin).unwrap();

    let lower_b = fx.rsa_b.to_lowercase();
    for id in [
        fx.rsa_a.as_str(),
        fx.rsa_b.as_str(),
        &lower_b[24..],
        &fx.rsa_b_sub[32..],
        &fx.ed_a[24..],
        &fx.old_ed,
        &fx.old_rsa,
        &fx.revoked,
    ] {
        let want: Value = serde_json::from_slice(
            &ok(oracle_python().args(["-c", EXPORT, s(&fx.home), id])).stdout,
        )
        .unwrap();
        for src in [fx.home.as_path(), &legacy, &armored, &bin_file] {
            let got = totogate::crypto::gpg::export_pubkey(src, id)
                .unwrap_or_else(|e| panic!("{id} from {}: {e}", src.display()));
            assert_eq!(got, want, "{id} from {}", src.display());
            let keys = totogate::crypto::gpg::load_keys(src, &[id.to_owned()]).unwrap();
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].keyid().as_str(), want["keyid"].as_str().unwrap());
            assert_eq!(keys[0].to_dict(), want);
        }
    }
    // B's dict carries its signing subkey; the old RSA key its validity.
    let b = totogate::crypto::gpg::export_pubkey(&fx.home, &fx.rsa_b).unwrap();
    assert!(b["subkeys"][fx.rsa_b_sub.to_lowercase()].is_object(), "{b}");
    let old = totogate::crypto::gpg::export_pubkey(&fx.home, &fx.old_rsa).unwrap();
    assert_eq!(old["validity_period"], 86400, "{old}");
}

#[test]
fn gpg_unknown_key_id_is_a_usage_error() {
    let fx = fx();
    let dir = fx.root.join("ed_owner");
    let args = |home: &Path, id: &str| -> Vec<String> {
        ["-l", "root.layout", "--gpg-home", s(home), "-g", id]
            .map(String::from)
            .to_vec()
    };
    for (id, says) in [
        ("DEADBEEF", "not found"),
        ("0xDEADBEEF", "not a GPG key id"),
    ] {
        let out = run(totogate()
            .current_dir(&dir)
            .arg("verify")
            .args(args(&fx.home, id)));
        assert_eq!(code(&out), 2, "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{}",
            show(&out)
        );
        // The reference fails too (it exits 1 on any error).
        let r = run(oracle("in-toto-verify")
            .current_dir(&dir)
            .args(args(&fx.home, id)));
        assert_ne!(code(&r), 0, "{}", show(&r));
    }
    // No keyring there at all.
    let empty = tempfile::tempdir().unwrap();
    let out = run(totogate()
        .current_dir(&dir)
        .arg("verify")
        .args(args(empty.path(), &fx.ed_a)));
    assert_eq!(code(&out), 2, "{}", show(&out));
}

#[test]
fn gpg_default_home_is_gnupghome() {
    let fx = fx();
    let out = run(totogate()
        .current_dir(fx.root.join("ed_owner"))
        .env("GNUPGHOME", &fx.home)
        .args(["verify", "-l", "root.layout", "-g", &fx.ed_a]));
    assert_eq!(code(&out), 0, "{}", show(&out));
}
