//! `totogate check`: the install-time verdict for one package file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use totogate::check::{self, PolicyCheck, Request, Verdict};
use totogate::fetch::{FetchLimits, Fetcher};
use totogate::package::Limits;
use totogate::policy::Policy;
use totogate::sandbox;
use totogate::verify::DirLinks;

#[derive(Args)]
#[command(
    after_help = "Exit codes: 0 allow, 1 refuse (the reasons are printed), 2 usage or configuration error.\n\n\
The package is unpacked into a fresh directory (a .deb at its install paths with control files under \
DEBIAN/, a .crate as its name-version/ tree, tarballs and zips as they are), the package file itself \
is placed beside its contents, and the layout's inspections run there, confined: no network, nothing \
of the host writable, rlimits, a timeout."
)]
pub struct CheckArgs {
    /// The package file: .deb, .crate, .tar.gz/.tgz/.tar.xz/.tar.zst/.tar.bz2, .zip/.whl
    package: PathBuf,
    /// The root layout (explicit mode; with --layout-key and --link-dir)
    #[arg(long, value_name = "FILE", requires_all = ["layout_keys", "link_dir"], conflicts_with = "policy")]
    layout: Option<PathBuf>,
    /// Public keys (PEM) trusted to sign the layout; every one must have signed it
    #[arg(long = "layout-key", value_name = "PEM", num_args = 1.., requires = "layout")]
    layout_keys: Vec<PathBuf>,
    /// Directory holding the links (`<step>.<keyid8>.link`)
    #[arg(long = "link-dir", value_name = "DIR", requires = "layout")]
    link_dir: Option<PathBuf>,
    /// Policy file saying, per package, the trusted layout keys and where the
    /// metadata lives (default without --layout: /etc/totogate/policy.toml)
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    confine: ConfineArgs,
    /// Print the verdict as one JSON document on stdout
    #[arg(long)]
    json: bool,
    /// Also print warnings
    #[arg(short, long)]
    verbose: bool,
}

/// How far a package may go: unpacking limits and the inspection sandbox.
/// Shared by `check` and `mirror check`.
#[derive(Args)]
pub struct ConfineArgs {
    /// Seconds an inspection may run
    #[arg(
        long = "inspection-timeout",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    inspection_timeout: u64,
    /// Run inspections even where the host lacks some sandbox protection (they are listed)
    #[arg(long = "allow-weak-sandbox")]
    allow_weak_sandbox: bool,
    /// Largest total unpacked size of a package, in bytes
    #[arg(long = "max-unpacked-bytes", value_name = "BYTES")]
    max_unpacked_bytes: Option<u64>,
    /// Most archive entries of a package
    #[arg(long = "max-entries", value_name = "N")]
    max_entries: Option<u64>,
    /// Largest compression ratio (unpacked bytes per packed byte)
    #[arg(long = "max-ratio", value_name = "N")]
    max_ratio: Option<u64>,
    /// Where to make the per-package directories (default: /dev/shm for packages up to 64 MiB when it is a tmpfs, else $TMPDIR)
    #[arg(long = "work-dir", value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

impl ConfineArgs {
    pub fn unpack_limits(&self) -> Limits {
        let mut unpack = Limits::default();
        if let Some(n) = self.max_unpacked_bytes {
            unpack.max_total_bytes = n;
        }
        if let Some(n) = self.max_entries {
            unpack.max_entries = n;
        }
        if let Some(n) = self.max_ratio {
            unpack.max_ratio = n;
        }
        unpack
    }
    pub fn sandbox(&self) -> sandbox::Policy {
        sandbox::Policy {
            allow_weak: self.allow_weak_sandbox,
            ..sandbox::Policy::default()
        }
    }
    pub fn inspection_timeout(&self) -> Duration {
        Duration::from_secs(self.inspection_timeout)
    }
    pub fn work_dir(&self) -> Option<PathBuf> {
        self.work_dir.clone()
    }
}

pub fn run(a: CheckArgs) -> Result<u8> {
    if !a.package.is_file() {
        bail!("{}: no such package file", a.package.display());
    }
    let unpack = a.confine.unpack_limits();
    let sandbox = a.confine.sandbox();
    let inspection_timeout = a.confine.inspection_timeout();
    let verdict = match (&a.layout, &a.link_dir) {
        (Some(layout_path), Some(link_dir)) => {
            let mut keys = Vec::new();
            for k in &a.layout_keys {
                keys.push(crate::load_public(k)?);
            }
            let layout = std::fs::read(layout_path)
                .with_context(|| format!("{}: cannot read the layout", layout_path.display()))?;
            let links = DirLinks(link_dir.clone());
            let origin = layout_path.display().to_string();
            check::check(&Request {
                contents: check::Contents::Unpacked,
                layouts: None,
                package: &a.package,
                layout: &layout,
                layout_origin: &origin,
                layout_keys: &keys,
                links: &links,
                unpack,
                sandbox,
                inspection_timeout,
                work_dir: a.confine.work_dir(),
            })
        }
        _ => {
            let path = a
                .policy
                .clone()
                .unwrap_or_else(|| PathBuf::from(totogate::policy::DEFAULT_PATH));
            let policy = Policy::load(&path).with_context(|| {
                format!(
                    "no usable policy (give --layout, --layout-key and --link-dir, or write {})",
                    path.display()
                )
            })?;
            let fetcher = Fetcher::new(FetchLimits::default()).with_concurrency(8);
            check::check_with_policy(
                &a.package,
                &PolicyCheck {
                    policy: &policy,
                    fetcher: &fetcher,
                    layouts: None,
                    unpack,
                    sandbox,
                    inspection_timeout,
                    work_dir: a.confine.work_dir(),
                },
            )
        }
    };
    report(&verdict, a.json, a.verbose);
    Ok(if verdict.allowed { 0 } else { 1 })
}

pub fn report(v: &Verdict, json: bool, verbose: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let what = match (&v.format, &v.name, &v.version) {
        (Some(f), Some(n), Some(ver)) => format!(" ({f} {n} {ver})"),
        (Some(f), _, _) => format!(" ({f})"),
        _ => String::new(),
    };
    if v.allowed {
        eprintln!(
            "totogate: ALLOW {}{what} in {} ms",
            v.package, v.duration_ms
        );
        let signers: Vec<&str> = v.signed_by.iter().map(|k| &k[..8.min(k.len())]).collect();
        eprintln!("  layout {} signed by {}", v.layout, signers.join(", "));
        for s in &v.steps {
            eprintln!(
                "  step {}: functionary {} ({} materials, {} products)",
                s.name,
                &s.functionary[..8.min(s.functionary.len())],
                s.materials,
                s.products
            );
        }
    } else {
        eprintln!("totogate: REFUSE {}{what}", v.package);
        for (i, r) in v.reasons.iter().enumerate() {
            eprintln!("  {}{r}", if i == 0 { "" } else { "because: " });
        }
    }
    if !v.weak_sandbox.is_empty() {
        eprintln!(
            "  warning: inspections ran without these sandbox protections: {}",
            v.weak_sandbox.join(", ")
        );
    }
    if verbose || v.warnings.iter().any(|w| w.starts_with("unverified")) {
        for w in &v.warnings {
            eprintln!("  warning: {w}");
        }
    }
}
