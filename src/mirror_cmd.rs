//! `totogate mirror check` and `totogate mirror merge`: bulk verification of
//! a package pool (the library side is `totogate::mirror`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use totogate::check::{LayoutCache, PolicyCheck};
use totogate::fetch::{FetchLimits, Fetcher};
use totogate::mirror::{self, Counts, Done, Report, Run, Shard, Source};
use totogate::policy::Policy;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
totogate mirror check /srv/debian/pool --policy policy.toml --report pool.jsonl\n  \
totogate mirror check --packages-index Packages --base /srv/debian --policy policy.toml --shard 2/8 --report s2.jsonl\n  \
totogate mirror merge shard-*.jsonl --json")]
pub struct MirrorArgs {
    #[command(subcommand)]
    cmd: MirrorCmd,
}

#[derive(Subcommand)]
enum MirrorCmd {
    /// Check every .deb and .crate of a pool (or a Packages index) under a policy, in parallel, writing a JSONL report
    Check(Box<CheckArgs>),
    /// Combine the reports of several shards (or runs) into one summary
    Merge(MergeArgs),
}

#[derive(Args)]
#[command(
    after_help = "Exit codes: 0 every package allowed (or allowed unverified, as the policy permits), \
1 something refused or errored (0 with --no-fail), 2 usage, configuration or report error.\n\n\
Report (--report): one JSON line per package, appended as each finishes: {\"path\" (relative to POOL or \
--base), \"name\", \"version\", \"sha256\" (of the package file), \"verdict\": \"allowed\"|\"refused\"|\
\"no-metadata\"|\"error\", \"reasons\", \"duration_ms\"}. Rerunning with the same report resumes: packages \
already in it with an unchanged sha256 are skipped, changed ones are checked again and a new line is \
appended (readers take the last line per path); a partial last line left by a killed run is cut off.\n\n\
Sharding (--shard I/N): a package belongs to shard 1 + (first 8 bytes of sha256(relative path), \
big-endian) mod N, the same on every machine; run each shard with its own report, then `totogate mirror merge`.\n\n\
Metadata is found as the policy says (e.g. the sibling directory <package>.intoto/ with root.layout and \
the links); *.intoto/ directories are not searched for packages."
)]
struct CheckArgs {
    /// The pool directory: every *.deb and *.crate under it
    #[arg(
        required_unless_present = "packages_index",
        conflicts_with = "packages_index"
    )]
    pool: Option<PathBuf>,
    /// A Debian Packages index instead of a directory walk: its Filename: fields, relative to --base
    #[arg(long = "packages-index", value_name = "FILE", requires = "base")]
    packages_index: Option<PathBuf>,
    /// The directory the index's Filename: fields are relative to (the mirror root)
    #[arg(long, value_name = "DIR", requires = "packages_index")]
    base: Option<PathBuf>,
    /// Policy file: per package, the trusted layout keys and where the metadata lives
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// JSONL report to append to (and resume from)
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Packages checked at once (default: one per core)
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Check only shard I of N (1-based), chosen by a stable hash of each package's relative path
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// No progress output
    #[arg(short, long)]
    quiet: bool,
    /// Print the summary as one JSON document on stdout
    #[arg(long)]
    json: bool,
    /// Exit 0 even if packages were refused or errored
    #[arg(long = "no-fail")]
    no_fail: bool,
    #[command(flatten)]
    confine: crate::check_cmd::ConfineArgs,
}

#[derive(Args)]
#[command(
    after_help = "The last line per path of each report counts; a path in two reports (overlapping \
shards) or a report with a partial last line (an interrupted shard: rerun it to resume) is an error (exit 2). \
Exit 1 if anything was refused or errored (0 with --no-fail)."
)]
struct MergeArgs {
    /// Reports written by `totogate mirror check --report`
    #[arg(required = true, value_name = "REPORT")]
    reports: Vec<PathBuf>,
    /// Print the summary as one JSON document on stdout
    #[arg(long)]
    json: bool,
    /// Exit 0 even if packages were refused or errored
    #[arg(long = "no-fail")]
    no_fail: bool,
}

pub fn run(a: MirrorArgs) -> Result<u8> {
    match a.cmd {
        MirrorCmd::Check(a) => check(*a),
        MirrorCmd::Merge(a) => merge(a),
    }
}

fn counts_text(c: &Counts) -> String {
    format!(
        "{} packages: {} allowed, {} refused, {} no metadata, {} errors",
        c.packages, c.allowed, c.refused, c.no_metadata, c.errors
    )
}

/// Progress on stderr: a bar on a terminal, a line every 5 s otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Progress {
        let mut p = Progress {
            bar: None,
            done: Arc::new(AtomicU64::new(0)),
            stop: None,
            ticker: None,
        };
        if quiet {
            return p;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} ETA {eta} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            p.bar = Some(bar);
            return p;
        }
        // No terminal: a plain line every 5 s (logs, CI, batch jobs).
        let (tx, rx) = mpsc::channel::<()>();
        let started = Instant::now();
        let done = p.done.clone();
        p.stop = Some(tx);
        p.ticker = Some(std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(5))
            {
                let n = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                let rate = n as f64 / secs.max(1e-9);
                let eta = if rate > 0.0 {
                    format!("{:.0} s", (total.saturating_sub(n)) as f64 / rate)
                } else {
                    "?".to_owned()
                };
                eprintln!("totogate mirror: {n}/{total} done ({rate:.1}/s), ETA {eta}");
            }
        }));
        p
    }

    fn inc(&self, d: Done) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(1);
            if d.verdict != mirror::Outcome::Allowed && !d.resumed {
                b.set_message(format!("last not allowed: {}", d.rel));
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.stop.take();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

fn check(a: CheckArgs) -> Result<u8> {
    let policy = Policy::load(&a.policy).context("loading the policy")?;
    let source = match (&a.pool, &a.packages_index, &a.base) {
        (Some(pool), _, _) => {
            if !pool.is_dir() {
                anyhow::bail!("{}: not a directory", pool.display());
            }
            Source::Tree(pool.clone())
        }
        (None, Some(index), Some(base)) => Source::Index {
            index: index.clone(),
            base: base.clone(),
        },
        _ => unreachable!("clap requires POOL or --packages-index with --base"),
    };
    let total = source.count(a.shard)?;
    let report = match &a.report {
        Some(path) => {
            let r = Report::open(path)?;
            if r.dropped_bytes > 0 && !a.quiet {
                eprintln!(
                    "totogate mirror: {}: dropped a partial last line ({} bytes) left by an interrupted run",
                    path.display(),
                    r.dropped_bytes
                );
            }
            Some(r)
        }
        None => None,
    };
    let fetcher = Fetcher::new(FetchLimits::default());
    let layouts = LayoutCache::new();
    let pc = PolicyCheck {
        policy: &policy,
        fetcher: &fetcher,
        layouts: Some(&layouts),
        unpack: a.confine.unpack_limits(),
        sandbox: a.confine.sandbox(),
        inspection_timeout: a.confine.inspection_timeout(),
        work_dir: a.confine.work_dir(),
    };
    let mut progress = Progress::new(total, a.quiet);
    let on_done = |d: Done| progress.inc(d);
    let summary = mirror::run(
        &Run {
            source: &source,
            shard: a.shard,
            check: &pc,
            jobs: a.jobs.unwrap_or(0),
            report: report.as_ref(),
        },
        &on_done,
    );
    progress.finish();
    let summary = summary?;
    if a.json {
        let mut doc = serde_json::to_value(&summary)?;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("shard".into(), a.shard.map(|s| s.to_string()).into());
            obj.insert(
                "report".into(),
                a.report.as_ref().map(|p| p.display().to_string()).into(),
            );
            obj.insert("layouts_verified".into(), layouts.verified().into());
            obj.insert("layouts_reused".into(), layouts.reused().into());
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        eprintln!(
            "totogate mirror: {}{}",
            counts_text(&summary.counts),
            a.shard.map(|s| format!(" (shard {s})")).unwrap_or_default()
        );
        eprintln!(
            "  {} checked in {:.1} s ({:.1} packages/s), {} unchanged since the report",
            summary.checked,
            summary.elapsed_ms as f64 / 1000.0,
            summary.packages_per_s,
            summary.resumed
        );
        eprintln!(
            "  {} distinct layout(s) verified, reused for {} more package(s)",
            layouts.verified(),
            layouts.reused()
        );
        if let Some(p) = &a.report {
            eprintln!("  report: {}", p.display());
        }
    }
    Ok(u8::from(summary.counts.failed() && !a.no_fail))
}

fn merge(a: MergeArgs) -> Result<u8> {
    let summary = mirror::merge(&a.reports)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!(
            "totogate mirror merge: {} reports, {}",
            summary.reports.len(),
            counts_text(&summary.counts)
        );
    }
    Ok(u8::from(summary.counts.failed() && !a.no_fail))
}
