//! `totogate mirror`: a generated pool of sample packages (good copies,
//! tampered rebuilds, packages without metadata, hostile archives) checked in
//! bulk; resume after `kill -9` and after a torn last line; shards merged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;

const DEB: &str = "hello_1.0_all.deb";
const CRATE: &str = "hello-sample-0.1.0.crate";

fn sample(kind: &str) -> PathBuf {
    repo().join("testdata/samples").join(kind)
}

/// Puts `src` at `pool/rel`; with `meta` ("deb" or "crate"), the sample's
/// layout and links go in the sibling `<file>.intoto/` directory.
fn put(pool: &Path, rel: &str, src: &Path, meta: Option<&str>) {
    let dst = pool.join(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, &dst).unwrap();
    if let Some(kind) = meta {
        let m = PathBuf::from(format!("{}.intoto", dst.display()));
        std::fs::create_dir_all(&m).unwrap();
        std::fs::copy(sample(kind).join("root.layout"), m.join("root.layout")).unwrap();
        for e in std::fs::read_dir(sample(kind).join("links")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
        }
    }
}

/// The sample .deb rebuilt by dpkg-deb with a changed /usr/bin/hello.
fn tampered_deb(work: &Path) -> PathBuf {
    let tree = work.join("tampered-tree");
    ok(Command::new("dpkg-deb")
        .arg("-R")
        .arg(sample("deb").join(DEB))
        .arg(&tree));
    std::fs::write(
        tree.join("usr/bin/hello"),
        "#!/bin/sh\necho \"hello from a tampered package\"\n",
    )
    .unwrap();
    let out = work.join("tampered.deb");
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&tree)
        .arg(&out)
        .stdout(std::process::Stdio::null()));
    out
}

struct Pool {
    _dir: tempfile::TempDir,
    pool: PathBuf,
    policy: PathBuf,
    /// Relative path → expected verdict.
    expected: BTreeMap<String, &'static str>,
}

impl Pool {
    fn root(&self) -> &Path {
        self._dir.path()
    }
}

/// `copies` good copies of each sample, plus one of each bad kind.
fn make_pool(copies: usize) -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let mut expected = BTreeMap::new();
    let deb = sample("deb").join(DEB);
    let krate = sample("crate").join(CRATE);
    for i in 0..copies {
        let rel = format!("main/h/hello{i}/{DEB}");
        put(&pool, &rel, &deb, Some("deb"));
        expected.insert(rel, "allowed");
        let rel = format!("crates/hs{i}/{CRATE}");
        put(&pool, &rel, &krate, Some("crate"));
        expected.insert(rel, "allowed");
    }
    // Tampered: rebuilt with other contents, under the genuine metadata.
    let t = tampered_deb(dir.path());
    put(&pool, &format!("main/t/tampered/{DEB}"), &t, Some("deb"));
    expected.insert(format!("main/t/tampered/{DEB}"), "refused");
    // A crate with one byte flipped near the end (corrupt gzip or contents).
    let mut bytes = std::fs::read(&krate).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    std::fs::write(dir.path().join("flipped.crate"), bytes).unwrap();
    put(
        &pool,
        &format!("crates/flipped/{CRATE}"),
        &dir.path().join("flipped.crate"),
        Some("crate"),
    );
    expected.insert(format!("crates/flipped/{CRATE}"), "refused");
    // No metadata: allowed unverified where the policy permits, refused where required.
    put(&pool, "main/n/nometa/nometa_1.0_all.deb", &deb, None);
    expected.insert("main/n/nometa/nometa_1.0_all.deb".into(), "no-metadata");
    put(&pool, &format!("main/m/missing/{DEB}"), &deb, None);
    expected.insert(format!("main/m/missing/{DEB}"), "refused");
    // Hostile archives, under genuine metadata (so unpacking is reached).
    let hostile = repo().join("testdata/hostile");
    for h in ["path-traversal.deb", "truncated.deb", "symlink-escape.deb"] {
        let rel = format!("hostile/{}/{DEB}", h.trim_end_matches(".deb"));
        put(&pool, &rel, &hostile.join(h), Some("deb"));
        expected.insert(rel, "refused");
    }
    for h in ["gzip-bomb.crate", "wrong-magic.crate"] {
        let rel = format!("hostile/{}/{CRATE}", h.trim_end_matches(".crate"));
        put(&pool, &rel, &hostile.join(h), Some("crate"));
        expected.insert(rel, "refused");
    }
    // A name policy mode cannot read.
    put(&pool, "hostile/odd.deb", &deb, None);
    expected.insert("hostile/odd.deb".into(), "refused");
    // Not packages: ignored, as is everything inside *.intoto/.
    write(&pool.join("README"), "not a package\n");
    std::fs::copy(&deb, pool.join(format!("main/h/hello0/{DEB}.intoto/{DEB}"))).unwrap();

    std::fs::copy(
        sample("deb").join("owner.pub"),
        dir.path().join("deb-owner.pub"),
    )
    .unwrap();
    std::fs::copy(
        sample("crate").join("owner.pub"),
        dir.path().join("crate-owner.pub"),
    )
    .unwrap();
    let policy = dir.path().join("policy.toml");
    write(
        &policy,
        r#"[defaults]
required = true
layout_keys = ["deb-owner.pub"]

[[rule]]
ecosystem = "deb"
name = "nometa*"
layout_keys = ["deb-owner.pub"]
required = false

[[rule]]
ecosystem = "deb"
name = "*"
layout_keys = ["deb-owner.pub"]
layout = "{dir}/{filename}.intoto/root.layout"
links = "{dir}/{filename}.intoto/"

[[rule]]
ecosystem = "crate"
name = "*"
layout_keys = ["crate-owner.pub"]
"#,
    );
    Pool {
        _dir: dir,
        pool,
        policy,
        expected,
    }
}

/// `--jobs 1` unless `extra` says otherwise: with several workers, a
/// sandbox fork in one thread can inherit another thread's still-open write
/// fd on an unpacked executable, and that package's inspection then fails
/// to exec it (ETXTBSY, exit 126) — rare, but it would make the exact
/// comparisons below flaky. See the mirror report for the sandbox fix.
fn mirror_cmd(p: &Pool, report: &Path, extra: &[&str]) -> Command {
    let mut c = totogate();
    c.args(["mirror", "check"]);
    if !extra.contains(&"--jobs") {
        c.args(["--jobs", "1"]);
    }
    c.arg(&p.pool)
        .arg("--policy")
        .arg(&p.policy)
        .arg("--report")
        .arg(report)
        .arg("-q")
        .args(extra);
    c
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON on stdout ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The report as path → last line, without `duration_ms`. Every line must
/// be complete JSON.
fn read_report(path: &Path) -> BTreeMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "torn report: {text:?}"
    );
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        v.as_object_mut().unwrap().remove("duration_ms");
        out.insert(v["path"].as_str().unwrap().to_owned(), v);
    }
    out
}

fn counts(v: &serde_json::Value) -> [u64; 5] {
    ["packages", "allowed", "refused", "no_metadata", "errors"].map(|k| v[k].as_u64().unwrap())
}

#[test]
fn each_package_gets_its_verdict() {
    let p = make_pool(2);
    let report = p.root().join("report.jsonl");
    let out = run(&mut mirror_cmd(&p, &report, &["--json"]));
    assert_eq!(code(&out), 1, "{}", show(&out));
    let summary = json(&out);
    let got = read_report(&report);
    let verdicts: BTreeMap<String, &str> = got
        .iter()
        .map(|(k, v)| (k.clone(), v["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(verdicts, p.expected);
    for (path, line) in &got {
        // The sha256 is the package file's; reasons say why refused.
        let bytes = std::fs::read(p.pool.join(path)).unwrap();
        use sha2::Digest;
        assert_eq!(
            line["sha256"],
            hex::encode(sha2::Sha256::digest(&bytes)),
            "{path}"
        );
        let reasons = line["reasons"].as_array().unwrap();
        assert_eq!(
            line["verdict"] == "refused",
            !reasons.is_empty(),
            "{path}: {line}"
        );
    }
    assert_eq!(got[&format!("main/h/hello0/{DEB}")]["name"], "hello");
    assert_eq!(got[&format!("crates/hs1/{CRATE}")]["version"], "0.1.0");
    let reasons = |k: &str| got[k]["reasons"].to_string();
    assert!(reasons(&format!("hostile/path-traversal/{DEB}")).contains("unpacking"));
    assert!(reasons(&format!("main/m/missing/{DEB}")).contains("no layout"));
    let refused = p.expected.values().filter(|v| **v == "refused").count() as u64;
    assert_eq!(
        counts(&summary),
        [p.expected.len() as u64, 4, refused, 1, 0]
    );
    assert_eq!(summary["checked"], p.expected.len() as u64);
    // Two layouts (the .deb's and the .crate's) verified once each, then
    // reused by the 9 other packages that reach a layout (one job: no race).
    assert_eq!(summary["layouts_verified"], 2, "{summary}");
    assert_eq!(summary["layouts_reused"], 9, "{summary}");

    // Packages index mode: Filename: fields relative to --base.
    let index = p.root().join("Packages");
    write(
        &index,
        &format!("Package: hello\nFilename: pool/main/h/hello1/{DEB}\n\nPackage: nometa\nFilename: pool/main/n/nometa/nometa_1.0_all.deb\n"),
    );
    let out = run(totogate()
        .args(["mirror", "check", "-q", "--json", "--packages-index"])
        .arg(&index)
        .arg("--base")
        .arg(p.root())
        .arg("--policy")
        .arg(&p.policy));
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(counts(&json(&out)), [2, 1, 0, 1, 0]);
}

#[test]
fn resume_after_kill_and_torn_line() {
    let p = make_pool(12);
    let full = p.root().join("full.jsonl");
    run(&mut mirror_cmd(&p, &full, &[]));
    let want = read_report(&full);
    assert_eq!(want.len(), p.expected.len());

    // kill -9 once the report has a line, then resume.
    let killed = p.root().join("killed.jsonl");
    let mut child = mirror_cmd(&p, &killed, &["--jobs", "1"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = std::fs::read(&killed)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        if lines >= 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = read_report(&killed).len();
    assert!(
        before >= 1 && before < want.len(),
        "killed after {before} lines"
    );
    let out = run(&mut mirror_cmd(&p, &killed, &["--json"]));
    assert_eq!(read_report(&killed), want);
    let s = json(&out);
    assert!(s["resumed"].as_u64().unwrap() >= before as u64, "{s}");
    assert_eq!(
        s["resumed"].as_u64().unwrap() + s["checked"].as_u64().unwrap(),
        want.len() as u64
    );

    // A torn last line (as a kill mid-write could leave) is cut off; nothing is rechecked.
    let torn = p.root().join("torn.jsonl");
    let mut text = std::fs::read_to_string(&full).unwrap();
    let second = text.lines().nth(1).unwrap().to_owned();
    text.push_str(&second[..second.len() / 2]);
    std::fs::write(&torn, &text).unwrap();
    let merged = run(totogate().args(["mirror", "merge"]).arg(&torn));
    assert_eq!(merged.status.code(), Some(2), "merge refuses a torn report");
    let out = run(&mut mirror_cmd(&p, &torn, &["--json"]));
    assert_eq!(read_report(&torn), want);
    assert_eq!(json(&out)["checked"], 0);

    // A package changed since the report is checked again; its new line wins.
    let victim = format!("main/h/hello3/{DEB}");
    std::fs::copy(
        p.pool.join(format!("main/t/tampered/{DEB}")),
        p.pool.join(&victim),
    )
    .unwrap();
    let out = run(&mut mirror_cmd(&p, &torn, &["--json"]));
    assert_eq!(json(&out)["checked"], 1);
    let after = read_report(&torn);
    assert_eq!(after[&victim]["verdict"], "refused");
    assert_eq!(
        std::fs::read_to_string(&torn).unwrap().lines().count(),
        want.len() + 1
    );
}

#[test]
fn shards_partition_and_merge() {
    let p = make_pool(6);
    let full = p.root().join("full.jsonl");
    let all = json(&run(&mut mirror_cmd(&p, &full, &["--json"])));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut reports = Vec::new();
    for i in 1..=3 {
        let r = p.root().join(format!("shard-{i}.jsonl"));
        let shard = format!("{i}/3");
        let s = json(&run(&mut mirror_cmd(
            &p,
            &r,
            &["--shard", &shard, "--json"],
        )));
        assert_eq!(s["shard"], shard.as_str());
        let lines = read_report(&r);
        assert!(!lines.is_empty(), "shard {shard} is empty");
        assert_eq!(s["packages"], lines.len() as u64);
        for path in lines.keys() {
            *seen.entry(path.clone()).or_default() += 1;
        }
        reports.push(r);
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        p.expected.keys().cloned().collect::<Vec<_>>()
    );
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let merged = run(totogate()
        .args(["mirror", "merge", "--json"])
        .args(&reports));
    assert_eq!(merged.status.code(), Some(1));
    assert_eq!(counts(&json(&merged)), counts(&all));
    // Overlapping reports are an error.
    let dup = run(totogate()
        .args(["mirror", "merge"])
        .arg(&reports[0])
        .arg(&full));
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("in two reports"));
}

#[test]
fn exit_codes() {
    let p = make_pool(1);
    let report = p.root().join("r.jsonl");
    // Refusals: 1; --no-fail: 0 (resumed, same verdicts).
    assert_eq!(
        run(&mut mirror_cmd(&p, &report, &[])).status.code(),
        Some(1)
    );
    assert_eq!(
        run(&mut mirror_cmd(&p, &report, &["--no-fail"]))
            .status
            .code(),
        Some(0)
    );
    let merged = run(totogate()
        .args(["mirror", "merge", "--no-fail"])
        .arg(&report));
    assert_eq!(merged.status.code(), Some(0));
    // Only good packages: 0.
    let good = p.root().join("good");
    put(
        &good,
        &format!("a/{DEB}"),
        &sample("deb").join(DEB),
        Some("deb"),
    );
    let out = run(totogate()
        .args(["mirror", "check", "-q"])
        .arg(&good)
        .arg("--policy")
        .arg(&p.policy));
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 packages: 1 allowed"));
    // Usage: 2.
    let policy = p.policy.to_str().unwrap();
    let pool = p.pool.to_str().unwrap();
    for args in [
        vec!["mirror", "check", pool],
        vec![
            "mirror", "check", pool, "--policy", policy, "--shard", "4/3",
        ],
        vec!["mirror", "check", pool, "--policy", policy, "--shard", "x"],
        vec!["mirror", "check", "--policy", policy],
        vec![
            "mirror",
            "check",
            pool,
            "--policy",
            policy,
            "--packages-index",
            "P",
            "--base",
            ".",
        ],
        vec!["mirror", "check", "/nonexistent/pool", "--policy", policy],
        vec!["mirror", "merge"],
        vec!["mirror", "merge", "/nonexistent/report.jsonl"],
    ] {
        let out = run(totogate().args(&args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
