//! `cargo intoto install` and `cargo intoto verify` end to end: the real
//! cargo, crates made with `cargo package`, in-toto metadata made with the
//! real `totogate`, and a sparse registry plus metadata served over HTTP on
//! 127.0.0.1.
//!
//! Crates: `good` (metadata matches), `bad` (re-packaged after its link was
//! signed, with the index checksum updated to the served file: only in-toto
//! catches it) and `badsum` (the served file does not match the index
//! checksum).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const TOTOGATE: &str = env!("CARGO_BIN_EXE_totogate");
const CARGO_INTOTO: &str = env!("CARGO_BIN_EXE_cargo-intoto");

/// Serves files under `root` at `/...` on 127.0.0.1 (HTTP/1.1, keep-alive,
/// a thread per connection, TCP_NODELAY, each answer in one write) for the
/// life of the test process.
struct Server {
    port: u16,
}

impl Server {
    fn start(root: PathBuf) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let root = root.clone();
                std::thread::spawn(move || serve_connection(conn, &root));
            }
        });
        Server { port }
    }
}

fn serve_connection(conn: std::net::TcpStream, root: &Path) {
    use std::io::{BufRead, Write};
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = std::io::BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let rel = path.trim_start_matches('/');
        let (status, body) = match (rel.contains(".."), std::fs::read(root.join(rel))) {
            (false, Ok(body)) => ("200 OK", body),
            _ => ("404 Not Found", b"not found".to_vec()),
        };
        let mut msg = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(&body);
        if out.write_all(&msg).is_err() {
            return;
        }
    }
}

/// The real toolchain: `$CARGO` at build time is the toolchain's cargo (not
/// the rustup proxy), so it works under a temporary CARGO_HOME.
fn toolchain_bin() -> PathBuf {
    Path::new(env!("CARGO")).parent().unwrap().to_path_buf()
}

fn path_env() -> std::ffi::OsString {
    let mut paths = vec![toolchain_bin()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// A command with the toolchain first on PATH and CARGO_HOME set to `home`.
fn cmd(program: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", path_env())
        .env("CARGO", toolchain_bin().join("cargo"))
        .env("RUSTC", toolchain_bin().join("rustc"))
        .env("CARGO_HOME", home)
        .env("CARGO_TERM_COLOR", "never")
        .env_remove("CARGO_TARGET_DIR");
    c
}

fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn index_path(name: &str) -> String {
    match name.len() {
        1 => format!("1/{name}"),
        2 => format!("2/{name}"),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    server: Server,
    /// Index cksum per crate.
    cksums: Vec<(String, String)>,
}

impl Fixture {
    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }
    fn index_url(&self) -> String {
        format!("sparse+http://127.0.0.1:{}/index/", self.server.port)
    }
    fn cksum(&self, name: &str) -> &str {
        &self.cksums.iter().find(|(n, _)| n == name).unwrap().1
    }
    fn cargo_intoto(&self, args: &[&str]) -> Output {
        cmd(CARGO_INTOTO, &self.home())
            .arg("intoto")
            .args(args)
            .output()
            .unwrap()
    }
}

fn layout_json(name: &str) -> String {
    let dir = format!("{name}-0.1.0");
    serde_json::json!({
        "expires": "2036-01-01T00:00:00Z",
        "keys": {"alice": "alice.pub"},
        "steps": [
            {"name": "package", "pubkeys": ["alice"],
             "expected_command": ["cargo", "package", "--allow-dirty", "--no-verify", "--offline", "--quiet"],
             "expected_materials": [["ALLOW", "src/*"], ["ALLOW", "Cargo.toml"], ["DISALLOW", "*"]],
             "expected_products": [["CREATE", "*.crate"], ["DISALLOW", "*"]]}
        ],
        "inspect": [
            {"name": "sources", "run": ["test", "-f", format!("{dir}/src/main.rs")],
             "expected_materials": [
                ["MATCH", "*.crate", "WITH", "PRODUCTS", "FROM", "package"],
                ["MATCH", "src/*", "IN", dir, "WITH", "MATERIALS", "FROM", "package"],
                ["ALLOW", format!("{dir}/Cargo.toml.orig")],
                ["ALLOW", format!("{dir}/Cargo.toml")],
                ["ALLOW", format!("{dir}/Cargo.lock")],
                ["DISALLOW", "*"]],
             "expected_products": [["MATCH", "*", "WITH", "MATERIALS", "FROM", "sources"], ["DISALLOW", "*"]]}
        ]
    })
    .to_string()
}

/// Packages crate `name` printing `message`, signs its `package` link and
/// layout; returns the .crate bytes as signed.
fn make_crate(tmp: &Path, home: &Path, keys: &Path, name: &str, message: &str) -> PathBuf {
    let src = tmp.join(format!("src-{name}"));
    std::fs::create_dir_all(src.join("src")).unwrap();
    std::fs::write(
        src.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             description = \"test\"\nlicense = \"MIT\"\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        src.join("src/main.rs"),
        format!("fn main() {{\n    println!(\"{message}\");\n}}\n"),
    )
    .unwrap();
    let meta = tmp.join(format!("reg/meta/{name}/0.1.0"));
    std::fs::create_dir_all(&meta).unwrap();
    let file = format!("target/package/{name}-0.1.0.crate");
    run_ok(
        cmd(TOTOGATE, home)
            .current_dir(&src)
            .args(["run", "-n", "package", "--signing-key"])
            .arg(keys.join("alice"))
            .arg("-d")
            .arg(&meta)
            .args(["-m", "src/main.rs", "Cargo.toml", "-p", &file])
            .args([
                "--lstrip-paths",
                "target/package/",
                "--",
                "cargo",
                "package",
            ])
            .args(["--allow-dirty", "--no-verify", "--offline", "--quiet"]),
    );
    let layout = keys.join(format!("{name}.layout.json"));
    std::fs::write(&layout, layout_json(name)).unwrap();
    run_ok(
        cmd(TOTOGATE, home)
            .current_dir(keys)
            .arg("layout")
            .arg(&layout)
            .arg("-o")
            .arg(meta.join("root.layout"))
            .args(["--signing-key", "owner"]),
    );
    src.join(file)
}

fn fixture() -> Fixture {
    fixture_with(&["good", "bad", "badsum"])
}

/// `bad` is tampered after signing and `badsum` served with a wrong index
/// checksum; every other name is a good crate printing "hello".
fn fixture_with(names: &[&str]) -> Fixture {
    let tmp = tempfile::Builder::new()
        .prefix("cargo-intoto-test-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("reg");
    let home = tmp.path().join("home");
    let keys = tmp.path().join("keys");
    for d in [&root, &home, &keys] {
        std::fs::create_dir_all(d).unwrap();
    }
    let server = Server::start(root.clone());
    let port = server.port;
    for k in ["owner", "alice"] {
        run_ok(cmd(TOTOGATE, &home).current_dir(&keys).args(["keygen", k]));
    }

    let mut cksums = Vec::new();
    for &name in names {
        let file = make_crate(tmp.path(), &home, &keys, name, "hello");
        if name == "bad" {
            // Tampered after the link was signed: same name and version, new code.
            let src = file.parent().unwrap().parent().unwrap().parent().unwrap();
            std::fs::write(
                src.join("src/main.rs"),
                "fn main() {\n    println!(\"evil\");\n}\n",
            )
            .unwrap();
            run_ok(
                cmd(toolchain_bin().join("cargo"), &home)
                    .current_dir(src)
                    .args([
                        "package",
                        "--allow-dirty",
                        "--no-verify",
                        "--offline",
                        "--quiet",
                    ]),
            );
        }
        let bytes = std::fs::read(&file).unwrap();
        let dl = root.join(format!("dl/{name}/0.1.0/download"));
        std::fs::create_dir_all(dl.parent().unwrap()).unwrap();
        std::fs::write(&dl, &bytes).unwrap();
        let cksum = if name == "badsum" {
            sha256(b"not the served file")
        } else {
            sha256(&bytes)
        };
        let line = serde_json::json!({
            "name": name, "vers": "0.1.0", "deps": [], "cksum": cksum,
            "features": {}, "yanked": false
        });
        let ip = root.join("index").join(index_path(name));
        std::fs::create_dir_all(ip.parent().unwrap()).unwrap();
        std::fs::write(&ip, format!("{line}\n")).unwrap();
        cksums.push((name.to_string(), cksum));
    }
    std::fs::write(
        root.join("index/config.json"),
        format!("{{\"dl\": \"http://127.0.0.1:{port}/dl/{{crate}}/{{version}}/download\"}}"),
    )
    .unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!("[registries.local]\nindex = \"sparse+http://127.0.0.1:{port}/index/\"\n"),
    )
    .unwrap();
    std::fs::write(
        home.join("intoto-policy.toml"),
        format!(
            "[defaults]\nrequired = true\n\n[[rule]]\necosystem = \"crate\"\nname = \"*\"\n\
             layout_keys = [\"{}\"]\n\
             layout = \"http://127.0.0.1:{port}/meta/{{name}}/{{version}}/root.layout\"\n\
             links = \"http://127.0.0.1:{port}/meta/{{name}}/{{version}}/\"\n",
            keys.join("owner.pub").display()
        ),
    )
    .unwrap();
    Fixture {
        tmp,
        server,
        cksums,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn install_good_refuse_tampered_and_checksum_mismatch() {
    let f = fixture();
    let root = f.tmp.path().join("installed");
    let root_s = root.to_str().unwrap();

    // 1. good: verified, installed, runs.
    let out = f.cargo_intoto(&[
        "install",
        "good",
        "--registry",
        "local",
        "--root",
        root_s,
        "--debug",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "install good failed:\n{err}");
    assert!(err.contains("Downloading good v0.1.0"), "{err}");
    assert!(err.contains("Verified good v0.1.0"), "{err}");
    assert!(err.contains("Installing good v0.1.0"), "{err}");
    let run = Command::new(root.join("bin/good")).output().unwrap();
    assert_eq!(text(&run.stdout), "hello\n");

    // 2. bad: the index checksum matches the served file, only in-toto catches it.
    let out = f.cargo_intoto(&[
        "install",
        "bad@0.1.0",
        "--index",
        &f.index_url(),
        "--root",
        root_s,
        "--debug",
    ]);
    let err = text(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: refusing to install bad v0.1.0:"),
        "{err}"
    );
    assert!(!err.contains("Installing"), "{err}");
    assert!(!root.join("bin/bad").exists());

    // 3. badsum: refused on the checksum, before any in-toto check.
    let out = f.cargo_intoto(&["install", "badsum", "--registry", "local", "--root", root_s]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: refusing to install badsum v0.1.0: checksum mismatch"),
        "{err}"
    );
    assert!(!err.contains("Verifying"), "{err}");
    assert!(!root.join("bin/badsum").exists());

    // Unknown crate and unknown registry: errors (exit 2), not refusals.
    let out = f.cargo_intoto(&["install", "nosuch", "--registry", "local"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = f.cargo_intoto(&["install", "good", "--registry", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn verify_lockfile_reports_each_crate() {
    let f = fixture();
    let proj = f.tmp.path().join("proj");
    std::fs::create_dir_all(proj.join("src")).unwrap();
    std::fs::write(
        proj.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    let source = f.index_url();
    let mut lock = String::from(
        "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\
         dependencies = [\"bad\", \"good\"]\n",
    );
    for name in ["bad", "good"] {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"{name}\"\nversion = \"0.1.0\"\nsource = \"{source}\"\nchecksum = \"{}\"\n",
            f.cksum(name)
        ));
    }
    std::fs::write(proj.join("Cargo.lock"), lock).unwrap();
    let manifest = proj.join("Cargo.toml");

    let out = f.cargo_intoto(&[
        "verify",
        "--manifest-path",
        manifest.to_str().unwrap(),
        "--json",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let crates = report["crates"].as_array().unwrap();
    assert_eq!(crates.len(), 2, "{report}");
    let by = |n: &str| crates.iter().find(|c| c["name"] == n).unwrap();
    assert_eq!(by("good")["verdict"], "verified", "{report}");
    assert_eq!(by("bad")["verdict"], "refused", "{report}");
    assert!(!by("bad")["reasons"].as_array().unwrap().is_empty());
    assert_eq!(report["refused"], 1);
    assert_eq!(report["verified"], 1);

    // The table names both; good alone passes.
    let out = f.cargo_intoto(&["verify", "--manifest-path", manifest.to_str().unwrap()]);
    let table = text(&out.stdout);
    assert!(
        table.contains("good") && table.contains("verified"),
        "{table}"
    );
    assert!(table.contains("refused"), "{table}");

    let lock = std::fs::read_to_string(proj.join("Cargo.lock")).unwrap();
    let start = lock.find("\n[[package]]\nname = \"bad\"").unwrap();
    let end = lock[start + 1..].find("\n[[package]]").unwrap() + start + 1;
    std::fs::write(
        proj.join("Cargo.lock"),
        format!("{}{}", &lock[..start], &lock[end..]).replace("\"bad\", ", ""),
    )
    .unwrap();
    let out = f.cargo_intoto(&["verify", "--manifest-path", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A wrong checksum in Cargo.lock is a refusal.
    let lock = std::fs::read_to_string(proj.join("Cargo.lock")).unwrap();
    std::fs::write(
        proj.join("Cargo.lock"),
        lock.replace(f.cksum("good"), &"0".repeat(64)),
    )
    .unwrap();
    let out = f.cargo_intoto(&[
        "verify",
        "--manifest-path",
        manifest.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = report["crates"][0]["reasons"][0].as_str().unwrap();
    assert!(reason.contains("checksum mismatch"), "{reason}");
}

/// Timing of `cargo intoto verify` on a lockfile of N generated crates
/// (`CARGO_INTOTO_BENCH_N`, default 100), cold (every crate downloaded) and
/// warm (every crate in cargo's cache). Run with
/// `cargo test --release --test cargo_intoto -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_verify_lockfile() {
    let n: usize = std::env::var("CARGO_INTOTO_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let names: Vec<String> = (0..n).map(|i| format!("gen{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = std::time::Instant::now();
    let f = fixture_with(&refs);
    eprintln!("fixture: {n} crates in {:?}", t.elapsed());
    let proj = f.tmp.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let mut lock = String::from("version = 4\n");
    for name in &names {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"{name}\"\nversion = \"0.1.0\"\nsource = \"{}\"\nchecksum = \"{}\"\n",
            f.index_url(),
            f.cksum(name)
        ));
    }
    std::fs::write(proj.join("Cargo.lock"), lock).unwrap();
    let manifest = proj.join("Cargo.toml");
    let m = manifest.to_str().unwrap();
    for (label, warm) in [("cold", false), ("warm", true)] {
        if warm {
            let cache = f.home().join("registry/cache/127.0.0.1-0000000000000000");
            std::fs::create_dir_all(&cache).unwrap();
            for name in &names {
                let dl = f.tmp.path().join(format!("reg/dl/{name}/0.1.0/download"));
                std::fs::copy(dl, cache.join(format!("{name}-0.1.0.crate"))).unwrap();
            }
        }
        for jobs in ["1", "4"] {
            let t = std::time::Instant::now();
            let out = f.cargo_intoto(&["verify", "-q", "--json", "-j", jobs, "--manifest-path", m]);
            let took = t.elapsed();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let refused: Vec<&serde_json::Value> = report["crates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["verdict"] != "verified")
                .collect();
            assert!(out.status.success(), "{refused:#?}");
            assert_eq!(report["verified"], n);
            let from_cache = report["crates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["crate_from"].as_str().unwrap().contains("registry/cache"))
                .count();
            eprintln!("verify {n} crates, {label} (from cache: {from_cache}), -j {jobs}: {took:?}");
        }
    }
}
