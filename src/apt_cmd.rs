//! apt integration on the command line: the `intoto` method (this binary
//! called as `intoto`, or `totogate apt-method`), the `Pre-Install-Pkgs`
//! hook (`totogate apt-hook`) and `totogate install-hooks apt`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use totogate::apt::gate::Decision;
use totogate::apt::{hook, install, method};

/// Exit code that makes apt abort (any non-zero does).
const REFUSE: u8 = 1;

/// Whether this process was started as the apt method (`argv[0]` named
/// `intoto`, as `/usr/lib/apt/methods/intoto` is).
pub fn called_as_method() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f.to_owned()))
        .is_some_and(|f| f == "intoto" || f == "intoto+https")
}

pub fn run_method() -> Result<u8> {
    method::run().context("talking to apt")?;
    Ok(0)
}

pub fn run_hook() -> Result<u8> {
    let stdin = std::io::stdin();
    let outcomes = hook::run(&mut stdin.lock()).context("totogate apt-hook")?;
    let mut refused = 0;
    for o in &outcomes {
        let file = o
            .deb
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &o.decision {
            Decision::Allowed(_) => {}
            Decision::Forgiven(v) => eprintln!(
                "totogate: {file}: NOT verified, allowed because APT::Intoto::NoFail is set: {}",
                v.reasons.join("; ")
            ),
            Decision::Refused(v) => {
                refused += 1;
                eprintln!("totogate: {file}: REFUSED: {}", v.reasons.join("; "));
            }
            Decision::Skipped(why) => {
                refused += 1;
                eprintln!("totogate: {file}: REFUSED: {why}");
            }
        }
    }
    if refused > 0 {
        eprintln!(
            "totogate: {refused} of {} package(s) refused; nothing was installed",
            outcomes.len()
        );
        return Ok(REFUSE);
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum InstallTarget {
    /// apt: the intoto:// method, the dpkg Pre-Install-Pkgs hook and the APT::Intoto configuration
    Apt(InstallApt),
}

#[derive(Args)]
#[command(after_help = "Writes, under --root:\n  \
usr/lib/apt/methods/intoto          the method (a symlink to this binary; also intoto+https)\n  \
etc/apt/apt.conf.d/50totogate-hook  the Pre-Install-Pkgs hook (unless --no-hook)\n  \
etc/apt/apt.conf.d/intoto           APT::Intoto settings (kept if present, unless --force)\n\n\
totogate ships no default layout: install one you trust (signed, not expired) with its signers' \
GPG keys, and name them with --layout, --keyid and --gpg-home (see README.md).")]
pub struct InstallApt {
    /// Install under this directory instead of /
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// The totogate binary the method and hook run (default: this one)
    #[arg(long, value_name = "PATH")]
    exe: Option<PathBuf>,
    /// Rebuilder serving links at {URL}/sources/{name}/{version}/metadata (repeatable)
    #[arg(long = "rebuilder", value_name = "URL")]
    rebuilders: Vec<String>,
    /// The trusted root layout
    #[arg(long, value_name = "FILE")]
    layout: Option<PathBuf>,
    /// GPG key (fingerprint) that must have signed the layout (repeatable)
    #[arg(long = "keyid", value_name = "FPR")]
    keyids: Vec<String>,
    /// GnuPG home or exported keyring holding those keys
    #[arg(long = "gpg-home", value_name = "DIR")]
    gpg_home: Option<PathBuf>,
    /// A totogate policy file instead of layout, keys and rebuilders
    #[arg(long, value_name = "FILE", conflicts_with_all = ["layout", "keyids", "rebuilders"])]
    policy: Option<PathBuf>,
    /// Install packages whose links are missing (never ones whose links disagree)
    #[arg(long = "no-fail")]
    no_fail: bool,
    /// Seconds to wait for each rebuilder
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Only the method, no dpkg hook
    #[arg(long = "no-hook")]
    no_hook: bool,
    /// Replace an existing method or configuration
    #[arg(long)]
    force: bool,
}

pub fn install_hooks(target: InstallTarget) -> Result<u8> {
    let InstallTarget::Apt(a) = target;
    let exe = match a.exe {
        Some(e) => e,
        None => std::env::current_exe().context("finding this binary's path (pass --exe)")?,
    };
    let report = install::install(&install::Install {
        root: a.root,
        exe,
        rebuilders: a.rebuilders,
        layout: a.layout,
        keyids: a.keyids,
        gpg_home: a.gpg_home,
        policy: a.policy,
        no_fail: a.no_fail,
        timeout_secs: a.timeout,
        hook: !a.no_hook,
        force: a.force,
    })?;
    for p in &report.written {
        println!("wrote {}", p.display());
    }
    for p in &report.kept {
        println!("kept {}", p.display());
    }
    for w in &report.warnings {
        eprintln!("totogate: warning: {w}");
    }
    Ok(0)
}
