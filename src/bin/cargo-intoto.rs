//! `cargo intoto`: cargo's front door to `totogate check`.
//!
//! `cargo intoto install <crate>` resolves the crate in a sparse registry,
//! downloads it, checks the index checksum, runs the in-toto check under the
//! policy, and only then runs `cargo install --path` on the verified,
//! unpacked sources. `cargo intoto verify` checks every registry crate of a
//! `Cargo.lock`.
//!
//! Cargo runs `cargo-intoto intoto <args>`; the top-level enum's single
//! `intoto` subcommand takes that first argument.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::builder::styling::{AnsiColor, Effects, Styles};
use clap::{Args, Parser, Subcommand};
use rayon::prelude::*;
use serde::Serialize;

use totogate::cargo_registry::{self as reg, CargoConfig, LockedPackage, Registry};
use totogate::check::{self, PolicyCheck, Verdict};
use totogate::fetch::{Fetch, FetchLimits, Fetcher};
use totogate::package::Limits;
use totogate::policy::{self, Policy};
use totogate::sandbox;

/// Largest `.crate` accepted (crates.io's own cap is 10 MiB; some registries allow more).
const MAX_CRATE_BYTES: u64 = 64 << 20;
/// Seconds an inspection may run.
const INSPECTION_TIMEOUT: Duration = Duration::from_secs(10);

fn styles() -> Styles {
    // The colours of cargo's own help.
    Styles::styled()
        .header(AnsiColor::Green.on_default() | Effects::BOLD)
        .usage(AnsiColor::Green.on_default() | Effects::BOLD)
        .literal(AnsiColor::Cyan.on_default() | Effects::BOLD)
        .error(AnsiColor::Red.on_default() | Effects::BOLD)
        .valid(AnsiColor::Cyan.on_default() | Effects::BOLD)
        .invalid(AnsiColor::Yellow.on_default() | Effects::BOLD)
}

#[derive(Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = styles())]
enum CargoCli {
    /// Install and audit crates only when their in-toto supply chain checks out
    #[command(version, styles = styles())]
    Intoto(IntotoArgs),
}

#[derive(Args)]
#[command(
    after_help = "Exit codes: 0 success, 1 refused (reasons printed), 2 usage or configuration error.\n\n\
The policy (--policy, else $CARGO_HOME/intoto-policy.toml, else /etc/totogate/policy.toml) names the \
trusted layout keys per crate and where the layout and links are."
)]
struct IntotoArgs {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify a crate's in-toto metadata, then install it from the verified sources
    Install(InstallArgs),
    /// Verify every registry crate in Cargo.lock
    Verify(VerifyArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Policy file (default: $CARGO_HOME/intoto-policy.toml, else /etc/totogate/policy.toml)
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Run inspections even where the host lacks some sandbox protection
    #[arg(long = "allow-weak-sandbox")]
    allow_weak_sandbox: bool,
    /// Do not print cargo log messages
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Use verbose output (warnings of allowed crates, the steps verified)
    #[arg(short, long)]
    verbose: bool,
    /// Run without accessing the network (crates only from cargo's cache; passed to cargo)
    #[arg(long)]
    offline: bool,
}

#[derive(Args)]
#[command(
    after_help = "The crate is refused (and nothing installed) when the downloaded file \
does not match the index checksum, or when the in-toto check under the policy fails."
)]
struct InstallArgs {
    /// The crate to install, optionally at an exact version
    #[arg(value_name = "CRATE[@<VER>]")]
    krate: String,
    /// Specify a version to install
    #[arg(long, value_name = "VERSION", alias = "vers")]
    version: Option<String>,
    /// Registry to use (from [registries] in $CARGO_HOME/config.toml)
    #[arg(long, value_name = "REGISTRY", conflicts_with = "index")]
    registry: Option<String>,
    /// Registry index URL to install from (sparse+https://...)
    #[arg(long, value_name = "INDEX")]
    index: Option<String>,
    /// Directory to install packages into (passed to cargo install)
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Assert that Cargo.lock will remain unchanged (passed to cargo install)
    #[arg(long)]
    locked: bool,
    /// Space or comma separated list of features to activate (passed to cargo install)
    #[arg(short = 'F', long, value_name = "FEATURES")]
    features: Vec<String>,
    /// Activate all available features (passed to cargo install)
    #[arg(long = "all-features")]
    all_features: bool,
    /// Do not activate the `default` feature (passed to cargo install)
    #[arg(long = "no-default-features")]
    no_default_features: bool,
    /// Force overwriting existing crates or binaries (passed to cargo install)
    #[arg(short, long)]
    force: bool,
    /// Build in debug mode (with the 'dev' profile) instead of release mode (passed to cargo install)
    #[arg(long)]
    debug: bool,
    /// Only verify; do not run cargo install
    #[arg(long = "dry-run")]
    dry_run: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct VerifyArgs {
    /// Path to Cargo.toml (its Cargo.lock, or the workspace's, is read)
    #[arg(long = "manifest-path", value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// Print one JSON document on stdout instead of a table
    #[arg(long)]
    json: bool,
    /// Number of crates checked at once
    #[arg(short, long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    common: Common,
}

/// Cargo-style status lines on stderr: right-aligned, green when a terminal.
struct Shell {
    quiet: bool,
    verbose: bool,
    color: bool,
}

impl Shell {
    fn new(c: &Common) -> Shell {
        let color = match std::env::var("CARGO_TERM_COLOR").as_deref() {
            Ok("always") => true,
            Ok("never") => false,
            _ => std::io::stderr().is_terminal(),
        };
        Shell {
            quiet: c.quiet,
            verbose: c.verbose,
            color,
        }
    }
    fn status(&self, word: &str, msg: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        if self.color {
            eprintln!("\x1b[1;32m{word:>12}\x1b[0m {msg}");
        } else {
            eprintln!("{word:>12} {msg}");
        }
    }
    fn tagged(&self, tag: &str, code: &str, msg: impl std::fmt::Display) {
        if self.color {
            eprintln!("\x1b[1;{code}m{tag}\x1b[0m\x1b[1m:\x1b[0m {msg}");
        } else {
            eprintln!("{tag}: {msg}");
        }
    }
    fn error(&self, msg: impl std::fmt::Display) {
        self.tagged("error", "31", msg);
    }
    fn warn(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            self.tagged("warning", "33", msg);
        }
    }
    fn note(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            self.tagged("note", "36", msg);
        }
    }
}

fn main() -> ExitCode {
    sandbox::serve();
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    // Run directly (`cargo-intoto install ...`) rather than through cargo.
    if argv.get(1).is_some_and(|a| a != "intoto") {
        argv.insert(1, "intoto".into());
    }
    let CargoCli::Intoto(args) = CargoCli::parse_from(argv);
    let (common, result) = match args.cmd {
        Cmd::Install(a) => (a.common.clone(), install(a)),
        Cmd::Verify(a) => (a.common.clone(), verify(a)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            Shell::new(&common).error(format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}

fn policy_path(given: &Option<PathBuf>, home: &Path) -> PathBuf {
    if let Some(p) = given {
        return p.clone();
    }
    let in_home = home.join("intoto-policy.toml");
    if in_home.is_file() {
        in_home
    } else {
        PathBuf::from(policy::DEFAULT_PATH)
    }
}

fn load_policy(given: &Option<PathBuf>, home: &Path) -> Result<Policy> {
    let path = policy_path(given, home);
    Policy::load(&path).with_context(|| {
        format!(
            "no usable policy (give --policy, or write {} or {})",
            home.join("intoto-policy.toml").display(),
            policy::DEFAULT_PATH
        )
    })
}

fn sandbox_policy(c: &Common) -> sandbox::Policy {
    sandbox::Policy {
        allow_weak: c.allow_weak_sandbox,
        ..sandbox::Policy::default()
    }
}

fn crate_fetcher() -> Fetcher {
    Fetcher::new(FetchLimits {
        max_bytes: MAX_CRATE_BYTES,
        total_timeout: Duration::from_secs(300),
        ..FetchLimits::default()
    })
}

/// The cargo that ran us (`$CARGO`), else `cargo` from PATH.
fn cargo_bin() -> OsString {
    std::env::var_os("CARGO")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "cargo".into())
}

fn report_reasons(sh: &Shell, v: &Verdict) {
    for r in v.reasons.iter().skip(1) {
        sh.note(format!("because: {r}"));
    }
}

fn unverified_warning(v: &Verdict) -> Option<&String> {
    v.warnings.iter().find(|w| w.starts_with("unverified"))
}

fn install(a: InstallArgs) -> Result<u8> {
    let sh = Shell::new(&a.common);
    let home = reg::cargo_home();
    let (name, at_version) = match a.krate.split_once('@') {
        Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
        None => (a.krate.clone(), None),
    };
    if name.is_empty() {
        bail!("invalid crate spec `{}`", a.krate);
    }
    let wanted = match (at_version, &a.version) {
        (Some(_), Some(_)) => bail!("cannot specify both `@<VERSION>` and `--version`"),
        (v, w) => v.or_else(|| w.clone()),
    };
    let config = CargoConfig::load(&home)?;
    let index = match (&a.index, &a.registry) {
        (Some(i), _) => i.clone(),
        (None, Some(r)) => config.registry_index(r)?,
        (None, None) => config.default_index()?,
    };
    let policy = load_policy(&a.common.policy, &home)?;
    let meta = Fetcher::new(FetchLimits::default());
    let crates = crate_fetcher();
    let registry = Registry::new(reg::sparse_base(&index)?, &crates);

    sh.status("Updating", format!("`{}` index", registry.base));
    let entry = registry.resolve(&name, wanted.as_deref())?;
    let label = format!("{} v{}", entry.name, entry.vers);
    let dl = registry.dl_template()?;
    let url = reg::dl_url(&dl, &entry.name, &entry.vers, &entry.cksum);

    let tmp = tempfile::Builder::new()
        .prefix("cargo-intoto-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let file = tmp
        .path()
        .join(format!("{}-{}.crate", entry.name, entry.vers));
    sh.status("Downloading", format!("{label} ({url})"));
    let bytes = crates
        .get(&url)
        .with_context(|| format!("downloading {label}"))?
        .with_context(|| format!("downloading {label}: nothing at {url}"))?;
    let got = reg::sha256_hex(&bytes);
    if !got.eq_ignore_ascii_case(&entry.cksum) {
        sh.error(format!(
            "refusing to install {label}: checksum mismatch: the index says sha256 {}, \
             the downloaded file ({url}) has {got}",
            entry.cksum
        ));
        return Ok(1);
    }
    std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;

    sh.status(
        "Verifying",
        format!("{label} (policy {})", policy.file.display()),
    );
    let verdict = check::check_with_policy(
        &file,
        &PolicyCheck {
            policy: &policy,
            fetcher: &meta,
            layouts: None,
            unpack: Limits::default(),
            sandbox: sandbox_policy(&a.common),
            inspection_timeout: INSPECTION_TIMEOUT,
            work_dir: None,
        },
    );
    if !verdict.allowed {
        let first = verdict.reasons.first().map_or("refused", String::as_str);
        sh.error(format!("refusing to install {label}: {first}"));
        report_reasons(&sh, &verdict);
        return Ok(1);
    }
    if let Some(w) = unverified_warning(&verdict) {
        sh.warn(format!("{label}: {w}"));
    } else {
        let signers: Vec<&str> = verdict
            .signed_by
            .iter()
            .map(|k| &k[..8.min(k.len())])
            .collect();
        sh.status(
            "Verified",
            format!(
                "{label}: layout signed by {}, {} step(s)",
                signers.join(", "),
                verdict.steps.len()
            ),
        );
    }
    if sh.verbose {
        for w in &verdict.warnings {
            sh.warn(w);
        }
    }
    if a.dry_run {
        sh.warn("aborting install due to dry run");
        return Ok(0);
    }

    // Install from the very bytes that were verified.
    let src_root = tmp.path().join("src");
    let unpacked = totogate::package::unpack(&file, &src_root, &Limits::default())
        .with_context(|| format!("unpacking {}", file.display()))?;
    let dir = src_root.join(format!(
        "{}-{}",
        unpacked.name.as_deref().unwrap_or(&entry.name),
        unpacked.version.as_deref().unwrap_or(&entry.vers)
    ));
    let mut cmd = Command::new(cargo_bin());
    cmd.arg("install").arg("--path").arg(&dir);
    if let Some(r) = &a.root {
        cmd.arg("--root").arg(r);
    }
    for (on, flag) in [
        (a.locked, "--locked"),
        (a.force, "--force"),
        (a.debug, "--debug"),
        (a.all_features, "--all-features"),
        (a.no_default_features, "--no-default-features"),
        (a.common.offline, "--offline"),
        (a.common.quiet, "--quiet"),
        (a.common.verbose, "--verbose"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    for f in &a.features {
        cmd.arg("--features").arg(f);
    }
    // Build outside the sources, so the verified tree is what gets compiled.
    cmd.env("CARGO_TARGET_DIR", tmp.path().join("target"));
    sh.status("Installing", format!("{label} (verified sources)"));
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cargo_bin()))?;
    if !status.success() {
        sh.error(format!("cargo install of {label} failed ({status})"));
        return Ok(status.code().map_or(2, |c| c.clamp(1, 255) as u8));
    }
    Ok(0)
}

/// One row of `cargo intoto verify`.
#[derive(Serialize)]
struct Row {
    name: String,
    version: String,
    source: String,
    /// verified | unverified | refused
    verdict: &'static str,
    /// Why refused, or why unverified; empty when verified.
    reasons: Vec<String>,
    warnings: Vec<String>,
    layout: String,
    signed_by: Vec<String>,
    /// Where the .crate came from: a URL or cargo's cache.
    crate_from: String,
    duration_ms: u64,
}

#[derive(Serialize)]
struct Report {
    lockfile: String,
    policy: String,
    verified: usize,
    unverified: usize,
    refused: usize,
    skipped: Vec<String>,
    crates: Vec<Row>,
}

fn find_manifest(given: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("manifest path `{}` does not exist", p.display());
        }
        return Ok(p.clone());
    }
    let cwd = std::env::current_dir().context("current directory")?;
    for d in cwd.ancestors() {
        let m = d.join("Cargo.toml");
        if m.is_file() {
            return Ok(m);
        }
    }
    bail!(
        "could not find `Cargo.toml` in `{}` or any parent directory",
        cwd.display()
    )
}

fn find_lockfile(manifest: &Path) -> Result<PathBuf> {
    let start = manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for d in start.ancestors() {
        let l = d.join("Cargo.lock");
        if l.is_file() {
            return Ok(l);
        }
    }
    bail!(
        "no Cargo.lock next to {} or in a parent directory (run `cargo generate-lockfile`)",
        manifest.display()
    )
}

struct VerifyCx<'a> {
    home: PathBuf,
    policy: &'a Policy,
    meta: Fetcher,
    crates: Fetcher,
    offline: bool,
    sandbox: sandbox::Policy,
    /// `config.json` `dl` template per index base, fetched once.
    dl: Mutex<HashMap<String, Result<String, String>>>,
    /// Layouts verified once for all crates of the lockfile.
    layouts: check::LayoutCache,
    shell: &'a Shell,
}

impl VerifyCx<'_> {
    fn dl_template(&self, registry: &Registry) -> Result<String, String> {
        if let Some(r) = self.dl.lock().unwrap().get(&registry.base) {
            return r.clone();
        }
        let r = registry.dl_template().map_err(|e| e.to_string());
        self.dl
            .lock()
            .unwrap()
            .insert(registry.base.clone(), r.clone());
        r
    }

    /// The .crate file (in cargo's cache, or downloaded into `tmp`) and
    /// where it came from; checked against the checksum.
    fn obtain(
        &self,
        p: &LockedPackage,
        source: &str,
        tmp: &Path,
    ) -> Result<(PathBuf, String), String> {
        let base = reg::sparse_base(source).map_err(|e| e.to_string())?;
        let registry = Registry::new(base, &self.crates);
        let cksum = match &p.checksum {
            Some(c) => c.clone(),
            None if self.offline => {
                return Err(
                    "Cargo.lock has no checksum for it, and --offline forbids asking the index"
                        .into(),
                )
            }
            None => {
                registry
                    .resolve(&p.name, Some(&p.version))
                    .map_err(|e| e.to_string())?
                    .cksum
            }
        };
        if let Some(c) = reg::cached_crate(&self.home, &p.name, &p.version, &cksum) {
            let from = c.display().to_string();
            return Ok((c, from));
        }
        if self.offline {
            return Err(format!(
                "not in cargo's cache ({}), and --offline forbids downloading it",
                self.home.join("registry/cache").display()
            ));
        }
        let dl = self.dl_template(&registry)?;
        let url = reg::dl_url(&dl, &p.name, &p.version, &cksum);
        self.shell
            .status("Downloading", format!("{} v{}", p.name, p.version));
        let bytes = match self.crates.get(&url) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(format!("nothing at {url}")),
            Err(e) => return Err(format!("downloading {url}: {e}")),
        };
        let got = reg::sha256_hex(&bytes);
        if !got.eq_ignore_ascii_case(&cksum) {
            return Err(format!(
                "checksum mismatch: Cargo.lock says sha256 {cksum}, the downloaded file ({url}) has {got}"
            ));
        }
        let file = tmp.join(format!("{}-{}.crate", p.name, p.version));
        std::fs::write(&file, &bytes).map_err(|e| format!("writing {}: {e}", file.display()))?;
        Ok((file, url))
    }

    fn row(&self, p: &LockedPackage, source: &str) -> Row {
        let started = Instant::now();
        let mut row = Row {
            name: p.name.clone(),
            version: p.version.clone(),
            source: source.to_owned(),
            verdict: "refused",
            reasons: Vec::new(),
            warnings: Vec::new(),
            layout: String::new(),
            signed_by: Vec::new(),
            crate_from: String::new(),
            duration_ms: 0,
        };
        let tmp = match tempfile::Builder::new().prefix("cargo-intoto-").tempdir() {
            Ok(t) => t,
            Err(e) => {
                row.reasons
                    .push(format!("cannot create a temporary directory: {e}"));
                return row;
            }
        };
        match self.obtain(p, source, tmp.path()) {
            Err(e) => row.reasons.push(e),
            Ok((file, from)) => {
                row.crate_from = from;
                self.shell
                    .status("Verifying", format!("{} v{}", p.name, p.version));
                let v = check::check_with_policy(
                    &file,
                    &PolicyCheck {
                        policy: self.policy,
                        fetcher: &self.meta,
                        layouts: Some(&self.layouts),
                        unpack: Limits::default(),
                        sandbox: self.sandbox.clone(),
                        inspection_timeout: INSPECTION_TIMEOUT,
                        work_dir: None,
                    },
                );
                row.layout = v.layout.clone();
                row.signed_by = v.signed_by.clone();
                row.warnings = v.warnings.clone();
                if !v.allowed {
                    row.reasons = v.reasons;
                } else if let Some(w) = unverified_warning(&v) {
                    row.verdict = "unverified";
                    row.reasons.push(w.clone());
                } else {
                    row.verdict = "verified";
                }
            }
        }
        row.duration_ms = started.elapsed().as_millis() as u64;
        row
    }
}

fn verify(a: VerifyArgs) -> Result<u8> {
    let sh = Shell::new(&a.common);
    let home = reg::cargo_home();
    let manifest = find_manifest(&a.manifest_path)?;
    let lockfile = find_lockfile(&manifest)?;
    let packages = reg::read_lockfile(&lockfile)?;
    let policy = load_policy(&a.common.policy, &home)?;
    let cx = VerifyCx {
        home,
        policy: &policy,
        meta: Fetcher::new(FetchLimits::default()),
        crates: crate_fetcher(),
        offline: a.common.offline,
        sandbox: sandbox_policy(&a.common),
        dl: Mutex::new(HashMap::new()),
        layouts: check::LayoutCache::new(),
        shell: &sh,
    };
    let mut skipped = Vec::new();
    let mut todo = Vec::new();
    for p in &packages {
        match &p.source {
            Some(s) if reg::is_registry_source(s) => todo.push((p, s.as_str())),
            Some(s) => skipped.push(format!("{} v{} ({s})", p.name, p.version)),
            None => {} // workspace members and path dependencies
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.jobs.max(1))
        .build()
        .context("starting worker threads")?;
    let mut rows: Vec<Row> = pool.install(|| todo.par_iter().map(|(p, s)| cx.row(p, s)).collect());
    rows.sort_by(|x, y| (&x.name, &x.version).cmp(&(&y.name, &y.version)));
    let count = |v: &str| rows.iter().filter(|r| r.verdict == v).count();
    let report = Report {
        lockfile: lockfile.display().to_string(),
        policy: policy.file.display().to_string(),
        verified: count("verified"),
        unverified: count("unverified"),
        refused: count("refused"),
        skipped,
        crates: rows,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, sh.verbose);
    }
    for s in &report.skipped {
        sh.note(format!("not from a registry, not checked: {s}"));
    }
    let summary = format!(
        "{} crate(s) from {}: {} verified, {} unverified, {} refused",
        report.crates.len(),
        report.lockfile,
        report.verified,
        report.unverified,
        report.refused
    );
    if report.refused > 0 {
        sh.error(summary);
        Ok(1)
    } else {
        sh.status("Finished", summary);
        Ok(0)
    }
}

fn print_table(r: &Report, verbose: bool) {
    let head = ["crate", "version", "verdict", "reason"];
    let lines: Vec<[String; 4]> = r
        .crates
        .iter()
        .map(|c| {
            let reason = match c.verdict {
                "verified" => {
                    let s: Vec<&str> = c.signed_by.iter().map(|k| &k[..8.min(k.len())]).collect();
                    format!("layout signed by {}", s.join(", "))
                }
                _ if verbose => c.reasons.join("; because: "),
                _ => c.reasons.first().cloned().unwrap_or_default(),
            };
            [
                c.name.clone(),
                c.version.clone(),
                c.verdict.to_owned(),
                reason,
            ]
        })
        .collect();
    let w = |i: usize| {
        lines
            .iter()
            .map(|l| l[i].len())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (w(0), w(1), w(2));
    println!(
        "{:w0$}  {:w1$}  {:w2$}  {}",
        head[0], head[1], head[2], head[3]
    );
    for l in &lines {
        println!("{:w0$}  {:w1$}  {:w2$}  {}", l[0], l[1], l[2], l[3]);
    }
}
