//! apt end to end, with the real `apt-get` and `dpkg` installing into a
//! throwaway root: a repository and two rebuilders on loopback, links and a
//! layout made and GPG-signed by the reference in-toto 3.1.0, the method
//! and hook put in place by `totogate install-hooks apt --root`.
//! The apt recipe (options, isolation from the host's apt.conf.d) is
//! explained in testdata/apt/README.md.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;

/// Tools the test drives; said by name when missing (`.ci/run` installs them).
fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is missing: install the Debian package `{package}` (.ci/run does)"
    );
}

/// Keys, packages, reference-made metadata and the repository, made once.
struct Chain {
    _dir: tempfile::TempDir,
    gpg_home: PathBuf,
    owner: String,
    layout: PathBuf,
    /// `links/<rebuilder index>/<name>_<version>.link`
    links: PathBuf,
    /// The repository as served: Packages, Release, the .debs.
    repo: PathBuf,
}

const GOOD: &str = "tg-good";
const EVIL: &str = "tg-evil";
const NOLINKS: &str = "tg-nolinks";

fn build_deb(dir: &Path, name: &str, payload: &str, out: &Path) {
    let pkg = dir.join(format!("build-{name}-{}", out.file_name().unwrap().len()));
    let _ = std::fs::remove_dir_all(&pkg);
    write(
        &pkg.join("DEBIAN/control"),
        &format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: totogate tests <t@example.org>\n\
             Description: totogate apt test package\n"
        ),
    );
    write(&pkg.join(format!("usr/share/doc/{name}/README")), payload);
    ok(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&pkg)
        .arg(out));
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.args(["--batch", "--homedir"]).arg(home);
    c.args(["--pinentry-mode", "loopback", "--passphrase", ""]);
    c
}

fn new_key(home: &Path, name: &str) -> String {
    ok(gpg(home).args([
        "--quick-gen-key",
        &format!("{name} <{name}@example.org>"),
        "ed25519",
        "sign",
        "never",
    ]));
    let out = ok(gpg(home).args(["--with-colons", "--list-keys", name]));
    let text = String::from_utf8(out.stdout).unwrap();
    let fpr = text
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("gpg lists the new key's fingerprint");
    fpr.to_owned()
}

fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        require_root("the apt tests install packages with apt-get and dpkg into a throwaway root");
        for (tool, package) in [
            ("apt-get", "apt"),
            ("dpkg-deb", "dpkg"),
            ("apt-ftparchive", "apt-utils"),
            ("gpg", "gnupg"),
        ] {
            need(tool, package);
        }
        let dir = tempfile::Builder::new()
            .prefix("tg-apt-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let gpg_home = d.join("gnupg");
        std::fs::create_dir(&gpg_home).unwrap();
        std::fs::set_permissions(
            &gpg_home,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let owner = new_key(&gpg_home, "owner");
        let rebuilders = [
            new_key(&gpg_home, "rebuilder-a"),
            new_key(&gpg_home, "rebuilder-b"),
        ];

        // What the rebuilders rebuilt (and sign), and what the repository serves:
        // the same, except tg-evil, whose served bytes are not what was rebuilt.
        let rebuilt = d.join("rebuilt");
        let repo = d.join("repo");
        std::fs::create_dir_all(&rebuilt).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        for name in [GOOD, EVIL, NOLINKS] {
            let file = format!("{name}_1.0_all.deb");
            build_deb(d, name, "rebuilt reproducibly\n", &rebuilt.join(&file));
            if name == EVIL {
                build_deb(d, name, "with a backdoor\n", &repo.join(&file));
            } else {
                std::fs::copy(rebuilt.join(&file), repo.join(&file)).unwrap();
            }
        }
        let meta = d.join("meta");
        ok(oracle_python()
            .arg(repo_path("tests/apt/make_metadata.py"))
            .arg("--gpg-home")
            .arg(&gpg_home)
            .args([
                "--owner",
                &owner,
                "--rebuilder",
                &rebuilders[0],
                &rebuilders[1],
            ])
            .arg("--debs")
            .arg(&rebuilt)
            .arg("--out")
            .arg(&meta));
        // Signing is done: no agent left running after the tests.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&gpg_home)
            .args(["--kill", "gpg-agent"])
            .output();
        let packages = ok(Command::new("apt-ftparchive")
            .args(["packages", "."])
            .current_dir(&repo));
        std::fs::write(repo.join("Packages"), &packages.stdout).unwrap();
        let release = ok(Command::new("apt-ftparchive")
            .args(["release", "."])
            .current_dir(&repo));
        std::fs::write(repo.join("Release"), &release.stdout).unwrap();
        Chain {
            gpg_home,
            owner,
            layout: meta.join("root.layout"),
            links: meta.join("links"),
            repo,
            _dir: dir,
        }
    })
}

fn repo_path(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// The repository and the rebuilders, shared by every test.
struct Servers {
    repo: Server,
    rebuilders: [Server; 2],
    /// Accepts connections and never answers.
    stalled: u16,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let c = chain();
        let rebuilder = |n: usize| {
            let links = c.links.join(n.to_string());
            Server::start(move |url| {
                let rest = url.strip_prefix("/sources/")?.strip_suffix("/metadata")?;
                let (name, version) = rest.split_once('/')?;
                if name == NOLINKS {
                    return None;
                }
                std::fs::read(links.join(format!("{name}_{version}.link"))).ok()
            })
        };
        let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = stalled.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in stalled.incoming() {
                held.push(conn); // never read, never answered, never closed
            }
        });
        Servers {
            repo: Server::files(c.repo.clone()),
            rebuilders: [rebuilder(0), rebuilder(1)],
            stalled: port,
        }
    })
}

/// A throwaway apt root with its own sources, state, cache and methods.
struct AptRoot {
    dir: tempfile::TempDir,
    sandbox_user: &'static str,
}

struct Setup<'a> {
    scheme: &'a str,
    hook: bool,
    no_fail: bool,
    rebuilders: Vec<String>,
    /// APT::Sandbox::User: who apt's methods (and ours) run downloads as.
    sandbox_user: &'static str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        let s = servers();
        Setup {
            scheme: "intoto",
            hook: false,
            no_fail: false,
            rebuilders: s.rebuilders.iter().map(Server::url).collect(),
            sandbox_user: "root",
        }
    }
}

impl AptRoot {
    fn new(setup: Setup) -> AptRoot {
        let c = chain();
        let s = servers();
        let dir = tempfile::Builder::new()
            .prefix("tg-aptroot-")
            .tempdir()
            .unwrap();
        let r = dir.path().join("root");
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/sources.list.d",
            "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/log/apt",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
            "var/lib/dpkg/alternatives",
        ] {
            std::fs::create_dir_all(r.join(sub)).unwrap();
        }
        for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            std::fs::write(r.join(f), "").unwrap();
        }
        write(
            &r.join("etc/apt/sources.list"),
            &format!(
                "deb [trusted=yes] {}://127.0.0.1:{}/ ./\n",
                setup.scheme, s.repo.port
            ),
        );
        // Everything apt reads comes from the root: APT_CONFIG is read before
        // the host's apt.conf.d, and moves it.
        write(
            &dir.path().join("apt.conf"),
            &format!(
                "Dir::Etc::Parts \"{r}/etc/apt/apt.conf.d\";\nDir::Etc::Main \"{r}/etc/apt/apt.conf\";\n\
                 Dir::Etc::Preferences \"{r}/etc/apt/preferences\";\n\
                 Dir::Etc::PreferencesParts \"{r}/etc/apt/preferences.d\";\n",
                r = r.display()
            ),
        );
        let mut install = totogate();
        install
            .args(["install-hooks", "apt", "--root"])
            .arg(&r)
            .arg("--layout")
            .arg(&c.layout)
            .args(["--keyid", &c.owner])
            .arg("--gpg-home")
            .arg(&c.gpg_home)
            .args(["--timeout", "2"]);
        for rb in &setup.rebuilders {
            install.args(["--rebuilder", rb]);
        }
        if setup.no_fail {
            install.arg("--no-fail");
        }
        if !setup.hook {
            install.arg("--no-hook");
        }
        ok(&mut install);
        // apt's own methods, plus the one install-hooks wrote.
        let methods = dir.path().join("methods");
        std::fs::create_dir(&methods).unwrap();
        for e in std::fs::read_dir("/usr/lib/apt/methods").unwrap() {
            let e = e.unwrap();
            std::os::unix::fs::symlink(e.path(), methods.join(e.file_name())).unwrap();
        }
        std::os::unix::fs::symlink(r.join("usr/lib/apt/methods/intoto"), methods.join("intoto"))
            .unwrap();
        let root = AptRoot {
            dir,
            sandbox_user: setup.sandbox_user,
        };
        root.apt(&["update"], true);
        root
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn apt_get(&self, args: &[&str]) -> Command {
        let r = self.root();
        let r = r.display();
        let mut c = Command::new("apt-get");
        c.env("APT_CONFIG", self.dir.path().join("apt.conf"))
            .args(["-q", "-y"])
            .args([
                format!("-oDir={r}"),
                format!("-oDir::State::status={r}/var/lib/dpkg/status"),
                format!("-oDir::Etc::SourceList={r}/etc/apt/sources.list"),
                format!("-oDir::Etc::SourceParts={r}/etc/apt/sources.list.d"),
                format!("-oDir::Etc::Parts={r}/etc/apt/apt.conf.d"),
                format!("-oDir::Etc::Trusted={r}/etc/apt/trusted.gpg"),
                format!("-oDir::Etc::TrustedParts={r}/etc/apt/trusted.gpg.d"),
                format!(
                    "-oDir::Bin::Methods={}",
                    self.dir.path().join("methods").display()
                ),
                format!("-oDir::Log={r}/var/log/apt"),
                format!("-oAPT::Sandbox::User={}", self.sandbox_user),
                "-oAPT::Architecture=amd64".into(),
                "-oAPT::Architectures::=amd64".into(),
                "-oAcquire::Languages=none".into(),
                format!("-oDPkg::Options::=--root={r}"),
                "-oDPkg::Options::=--force-script-chrootless".into(),
                format!("-oDPkg::Options::=--log={r}/var/log/dpkg.log"),
                "-oDPkg::Use-Pty=false".into(),
            ])
            .args(args);
        c
    }

    #[track_caller]
    fn apt(&self, args: &[&str], expect_ok: bool) -> Output {
        let out = run(&mut self.apt_get(args));
        let text = format!(
            "apt-get {args:?} exited {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), expect_ok, "{text}");
        out
    }

    fn installed(&self, name: &str) -> bool {
        let status = std::fs::read_to_string(self.root().join("var/lib/dpkg/status")).unwrap();
        let installed = status.split("\n\n").any(|para| {
            para.lines().any(|l| l == format!("Package: {name}"))
                && para.lines().any(|l| l == "Status: install ok installed")
        });
        let file = self.root().join(format!("usr/share/doc/{name}/README"));
        assert_eq!(
            installed,
            file.exists(),
            "dpkg's status and the root's files disagree about {name}"
        );
        installed
    }

    /// No refused .deb left where apt could pick it up.
    fn cached(&self, name: &str) -> bool {
        let archives = self.root().join("var/cache/apt/archives");
        [archives.clone(), archives.join("partial")]
            .iter()
            .any(|d| {
                std::fs::read_dir(d).unwrap().any(|e| {
                    e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{name}_"))
                })
            })
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn method_installs_a_package_its_rebuilders_vouch_for() {
    let apt = AptRoot::new(Setup::default());
    apt.apt(&["install", GOOD], true);
    assert!(apt.installed(GOOD));
}

#[test]
fn method_drops_root_to_apts_sandbox_user() {
    // As apt's own methods: the layout and keys are read as root, then the
    // downloads and checks (sandbox included) run as _apt.
    need("id", "coreutils");
    assert!(
        run(Command::new("id").arg("_apt")).status.success(),
        "this test needs apt's sandbox user _apt (created by the apt package)"
    );
    let apt = AptRoot::new(Setup {
        sandbox_user: "_apt",
        ..Setup::default()
    });
    let t = text(&apt.apt(&["install", GOOD], true));
    assert!(!t.contains("staying root"), "{t}");
    assert!(apt.installed(GOOD));
    let t = text(&apt.apt(&["install", EVIL], false));
    assert!(t.contains("verify-reprobuilds"), "{t}");
    assert!(!apt.installed(EVIL));
}

#[test]
fn method_refuses_a_package_that_is_not_what_was_rebuilt() {
    let apt = AptRoot::new(Setup::default());
    let out = apt.apt(&["install", EVIL], false);
    let t = text(&out);
    assert!(
        t.contains("in-toto verification for 'tg-evil_1.0_all.deb' failed"),
        "{t}"
    );
    assert!(
        t.contains("verify-reprobuilds"),
        "the failing inspection is named: {t}"
    );
    assert!(!apt.installed(EVIL));
    assert!(!apt.cached(EVIL), "the refused download was deleted");
}

#[test]
fn method_refuses_missing_links_and_nofail_forgives_only_those() {
    let apt = AptRoot::new(Setup::default());
    let t = text(&apt.apt(&["install", NOLINKS], false));
    assert!(t.contains("tg-nolinks_1.0_all.deb"), "{t}");
    assert!(!apt.installed(NOLINKS));

    let apt = AptRoot::new(Setup {
        no_fail: true,
        ..Setup::default()
    });
    let t = text(&apt.apt(&["install", NOLINKS], true));
    assert!(
        t.contains("NoFail"),
        "the user is told it was not verified: {t}"
    );
    assert!(apt.installed(NOLINKS));
    // A bad hash is never forgiven.
    apt.apt(&["install", EVIL], false);
    assert!(!apt.installed(EVIL));
}

#[test]
fn a_stalled_rebuilder_does_not_hang_apt() {
    let s = servers();
    installs_in_time_despite_a_stalled_rebuilder("intoto", false);

    // Only a stalled rebuilder: the links are missing, so it is refused, in time.
    let apt = AptRoot::new(Setup {
        rebuilders: vec![format!("http://127.0.0.1:{}", s.stalled)],
        ..Setup::default()
    });
    let start = Instant::now();
    let t = text(&apt.apt(&["install", GOOD], false));
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(t.contains("tg-good_1.0_all.deb"), "{t}");
    assert!(
        t.contains("timed out") || t.contains("timeout"),
        "the stalled rebuilder is named: {t}"
    );
    assert!(!apt.installed(GOOD));
}

#[test]
fn hook_checks_packages_fetched_over_plain_http() {
    let apt = AptRoot::new(Setup {
        scheme: "http",
        hook: true,
        ..Setup::default()
    });
    apt.apt(&["install", GOOD], true);
    assert!(apt.installed(GOOD));

    let t = text(&apt.apt(&["install", EVIL], false));
    assert!(t.contains("tg-evil_1.0_all.deb: REFUSED"), "{t}");
    assert!(!apt.installed(EVIL));

    let t = text(&apt.apt(&["install", NOLINKS], false));
    assert!(t.contains("tg-nolinks_1.0_all.deb: REFUSED"), "{t}");
    assert!(!apt.installed(NOLINKS));

    let apt = AptRoot::new(Setup {
        scheme: "http",
        hook: true,
        no_fail: true,
        ..Setup::default()
    });
    apt.apt(&["install", NOLINKS], true);
    assert!(apt.installed(NOLINKS));
    apt.apt(&["install", EVIL], false);
    assert!(!apt.installed(EVIL));

    // A stalled rebuilder does not hang the hook either.
    installs_in_time_despite_a_stalled_rebuilder("http", true);
}

/// The stalled rebuilder first, a good one second: apt installs the good
/// package well within the time a hang would take (the rebuilder timeout is
/// 2 s, from install-hooks --timeout 2).
fn installs_in_time_despite_a_stalled_rebuilder(scheme: &'static str, hook: bool) {
    let s = servers();
    let apt = AptRoot::new(Setup {
        scheme,
        hook,
        rebuilders: vec![
            format!("http://127.0.0.1:{}", s.stalled),
            s.rebuilders[1].url(),
        ],
        ..Setup::default()
    });
    let start = Instant::now();
    apt.apt(&["install", GOOD], true);
    assert!(apt.installed(GOOD));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn reference_and_totogate_agree_on_the_gpg_signed_chain() {
    // The same layout and links through both verifiers' CLIs: the metadata
    // the apt tests rely on is what the reference accepts.
    let c = chain();
    for (name, want_ok) in [(GOOD, true), (EVIL, false)] {
        let d = tempfile::tempdir().unwrap();
        let file = format!("{name}_1.0_all.deb");
        std::fs::copy(c.repo.join(&file), d.path().join(&file)).unwrap();
        let link = std::fs::read(c.links.join("0").join(format!("{name}_1.0.link"))).unwrap();
        let keyid = {
            let v: serde_json::Value = serde_json::from_slice(&link).unwrap();
            v["signatures"][0]["keyid"].as_str().unwrap()[..8].to_owned()
        };
        std::fs::write(d.path().join(format!("rebuild.{keyid}.link")), &link).unwrap();
        let mut refv = oracle("in-toto-verify");
        let mut ours = totogate();
        ours.arg("verify");
        for cmd in [&mut refv, &mut ours] {
            cmd.current_dir(d.path())
                .arg("-l")
                .arg(&c.layout)
                .args(["-g", &c.owner])
                .arg("--gpg-home")
                .arg(&c.gpg_home);
        }
        let (r, o) = (run(&mut refv), run(&mut ours));
        assert_eq!(
            r.status.success(),
            want_ok,
            "reference on {name}: {}",
            text(&r)
        );
        assert_eq!(
            o.status.success(),
            want_ok,
            "totogate on {name}: {}",
            text(&o)
        );
    }
}
