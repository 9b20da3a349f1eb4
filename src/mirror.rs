//! `mirror`: bulk verification of a package pool, the third front door.
//!
//! Each package goes through the same [`check::check_with_policy`] as a
//! single install; this module only decides *which* packages (a directory
//! walk or a Debian `Packages` index, optionally one shard of it), runs them
//! on a rayon pool, and writes one JSONL report line per package as it
//! finishes. Nothing the size of the pool is held: packages stream from the
//! walk or the index into the workers, and lines go to the report as they
//! finish. A resumed run holds the previous report's `path → (sha256,
//! verdict)` table, which grows with that report.
//!
//! The report is append-only and is what makes runs resumable:
//!
//! * each line is written with one `write_all` on a file opened with
//!   `O_APPEND`, under a lock, so lines from this run never interleave and a
//!   concurrent appender cannot tear one either;
//! * a `kill -9` can at worst leave a partial last line: [`Report::open`]
//!   truncates the file back to its last `\n` before appending;
//! * a package whose path is already in the report with the same sha256 is
//!   not checked again; a changed one is checked and a new line appended.
//!   Readers take the last line per path.
//!
//! Sharding ([`Shard`]) is a pure function of the package's path relative to
//! the pool root, so N machines given the same pool each take a disjoint part
//! whatever their mount point or walk order; [`merge`] recombines reports.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::check::{self, PolicyCheck, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("walking the pool {root}: {source}")]
    Walk {
        root: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error("{file}: cannot read the Packages index: {source}")]
    ReadIndex {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file}: line {line} is longer than {max} bytes; a Packages index has short lines (is this the right file?)")]
    IndexLine {
        file: PathBuf,
        line: usize,
        max: u64,
    },
    #[error("{file}: line {line}: Filename {value:?} is absolute or leaves --base (`..`)")]
    IndexPath {
        file: PathBuf,
        line: usize,
        value: String,
    },
    #[error("report {file}: {source}")]
    Report {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("report {file}: line {line} is not a report line: {source}")]
    ReportLine {
        file: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("report {file}: the last line is incomplete (that run was interrupted); rerun it with the same --report to resume, then merge")]
    Torn { file: PathBuf },
    #[error("package {path} is in two reports, {first} and {second}: were they made with the same --shard?")]
    Duplicate {
        path: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot start {jobs} worker threads: {source}")]
    Pool {
        jobs: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
}

/// What became of one package. `NoMetadata`: the policy let it through as
/// unverified (its rule does not require metadata and there was none).
/// `Error`: totogate itself failed (a bug), as opposed to a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Allowed,
    Refused,
    NoMetadata,
    Error,
}

impl Outcome {
    /// How [`check::check_with_policy`]'s verdict counts in a mirror run.
    pub fn of(v: &Verdict) -> Outcome {
        if !v.allowed {
            Outcome::Refused
        } else if v.warnings.iter().any(|w| w.starts_with("unverified")) {
            Outcome::NoMetadata
        } else {
            Outcome::Allowed
        }
    }
}

/// One report line (JSONL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the pool root (or `--base`), `/`-separated.
    pub path: String,
    pub name: Option<String>,
    pub version: Option<String>,
    /// Of the package file; `None` when it could not be read.
    pub sha256: Option<String>,
    pub verdict: Outcome,
    pub reasons: Vec<String>,
    pub duration_ms: u64,
}

/// A package to check: where it is, and its path relative to the pool root
/// (its identity in reports and for sharding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub rel: String,
    pub path: PathBuf,
}

fn rel_string(rel: &Path) -> String {
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Where the packages of a run come from. Both are read as a stream, one
/// package at a time, so a run holds no list of the pool.
#[derive(Debug, Clone)]
pub enum Source {
    /// Every `*.deb` and `*.crate` under a directory.
    Tree(PathBuf),
    /// The `Filename:` fields of a Debian `Packages` index, relative to `base`.
    Index { index: PathBuf, base: PathBuf },
}

/// The packages of a [`Source`], in its order.
pub type Packages<'a> = Box<dyn Iterator<Item = Result<Package, MirrorError>> + Send + 'a>;

impl Source {
    /// The packages in walk order (as the file system lists each directory:
    /// sorting would hold a whole directory, and a flat pool is one) or
    /// index order. `*.intoto/` directories (metadata) are not entered;
    /// symlinks to files count; symlinked directories are not followed (no
    /// loops). An index `Filename` that is absolute or leaves the base is an
    /// error, as is a directory that cannot be read.
    pub fn packages(&self) -> Result<Packages<'_>, MirrorError> {
        match self {
            Source::Tree(root) => Ok(Box::new(tree(root))),
            Source::Index { index, base } => index_lines(index, base),
        }
    }

    /// How many packages (of `shard`, if given) the source holds: a pass
    /// over it before the run, for the progress total, that also finds an
    /// unreadable directory or a bad index line before anything is checked.
    pub fn count(&self, shard: Option<Shard>) -> Result<u64, MirrorError> {
        let mut n = 0;
        for p in self.packages()? {
            let p = p?;
            if shard.is_none_or(|s| s.contains(&p.rel)) {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn tree(root: &Path) -> impl Iterator<Item = Result<Package, MirrorError>> + Send + '_ {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() > 0
                && e.file_type().is_dir()
                && e.file_name().to_string_lossy().ends_with(".intoto"))
        })
        .filter_map(move |e| {
            let e = match e {
                Ok(e) => e,
                Err(source) => {
                    return Some(Err(MirrorError::Walk {
                        root: root.to_path_buf(),
                        source,
                    }))
                }
            };
            let name = e.file_name().to_string_lossy();
            if !(name.ends_with(".deb") || name.ends_with(".crate")) {
                return None;
            }
            let ft = e.file_type();
            if !(ft.is_file() || (ft.is_symlink() && e.path().is_file())) {
                return None;
            }
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            Some(Ok(Package {
                rel: rel_string(rel),
                path: e.into_path(),
            }))
        })
}

/// The longest line read from a `Packages` index. Real ones run to a few
/// KiB (long `Depends` or `Description` fields); the index comes from the
/// mirror's upstream, and a line is held whole while it is read.
const MAX_INDEX_LINE: u64 = 1 << 20;

/// Reads the next line, newline included, into `buf`, but no more than
/// `max + 1` bytes of it: a result over `max` means the line is longer.
fn read_line_capped(r: &mut impl BufRead, buf: &mut Vec<u8>, max: u64) -> io::Result<usize> {
    buf.clear();
    r.take(max + 1).read_until(b'\n', buf)
}

fn index_lines<'a>(index: &'a Path, base: &'a Path) -> Result<Packages<'a>, MirrorError> {
    let read_err = move |source| MirrorError::ReadIndex {
        file: index.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(index).map_err(read_err)?);
    let (mut raw, mut number, mut done) = (Vec::new(), 0, false);
    Ok(Box::new(std::iter::from_fn(move || {
        while !done {
            number += 1;
            let fail = |e| Some(Err(e));
            match read_line_capped(&mut reader, &mut raw, MAX_INDEX_LINE) {
                Ok(0) => done = true,
                Ok(n) if n as u64 > MAX_INDEX_LINE => {
                    done = true;
                    return fail(MirrorError::IndexLine {
                        file: index.to_path_buf(),
                        line: number,
                        max: MAX_INDEX_LINE,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    done = true;
                    return fail(read_err(e));
                }
            }
            let line = match std::str::from_utf8(raw.strip_suffix(b"\n").unwrap_or(&raw)) {
                Ok(l) => l,
                Err(e) => {
                    done = true;
                    let why = format!("line {number}: {e}");
                    return fail(read_err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
            };
            let Some(value) = line.strip_prefix("Filename:") else {
                continue;
            };
            let value = value.trim();
            let rel = Path::new(value);
            if value.is_empty()
                || !rel
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return fail(MirrorError::IndexPath {
                    file: index.to_path_buf(),
                    line: number,
                    value: value.to_owned(),
                });
            }
            return Some(Ok(Package {
                rel: rel_string(rel),
                path: base.join(rel),
            }));
        }
        None
    })))
}

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The (1-based) shard a relative path belongs to among `count`: the
    /// first 8 bytes of sha256(path), big-endian, mod `count`, plus one.
    /// Stable across machines, runs and walk orders.
    pub fn of(rel: &str, count: u64) -> u64 {
        let h = Sha256::digest(rel.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        u64::from_be_bytes(first) % count.max(1) + 1
    }

    pub fn contains(&self, rel: &str) -> bool {
        Self::of(rel, self.count) == self.index
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected I/N, e.g. 2/8"))?;
        let index: u64 = i.parse().map_err(|_| format!("{s:?}: I is not a number"))?;
        let count: u64 = n.parse().map_err(|_| format!("{s:?}: N is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("{s:?}: need 1 <= I <= N (shards count from 1)"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a previous run said about a path (its last line).
#[derive(Debug, Clone)]
struct Previous {
    sha256: Option<String>,
    verdict: Outcome,
}

/// Reads complete report lines of `file`, calling `each(line_no, entry)`.
/// Returns the byte length of the complete lines; `torn` is whether bytes
/// follow the last `\n`.
fn read_lines(
    path: &Path,
    file: &mut File,
    mut each: impl FnMut(usize, Entry) -> Result<(), MirrorError>,
) -> Result<(u64, bool), MirrorError> {
    let io_err = |source| MirrorError::Report {
        file: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut reader = BufReader::new(&mut *file);
    let mut buf = Vec::new();
    let mut complete = 0u64;
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if n == 0 {
            return Ok((complete, false));
        }
        if buf.last() != Some(&b'\n') {
            return Ok((complete, true));
        }
        line += 1;
        complete += n as u64;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: Entry =
            serde_json::from_slice(&buf).map_err(|source| MirrorError::ReportLine {
                file: path.to_path_buf(),
                line,
                source,
            })?;
        each(line, entry)?;
    }
}

/// A JSONL report being appended to.
pub struct Report {
    path: PathBuf,
    file: Mutex<File>,
    previous: HashMap<String, Previous>,
    /// Bytes of a partial last line dropped on open.
    pub dropped_bytes: u64,
}

impl Report {
    /// Opens (or creates) `path` for appending, remembering the last line
    /// per package path already there; a partial last line (an interrupted
    /// run) is cut off first.
    pub fn open(path: &Path) -> Result<Report, MirrorError> {
        let io_err = |source| MirrorError::Report {
            file: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        let mut previous = HashMap::new();
        let (complete, torn) = read_lines(path, &mut file, |_, e| {
            previous.insert(
                e.path,
                Previous {
                    sha256: e.sha256,
                    verdict: e.verdict,
                },
            );
            Ok(())
        })?;
        let mut dropped_bytes = 0;
        if torn {
            let len = file.metadata().map_err(io_err)?.len();
            dropped_bytes = len - complete;
            file.set_len(complete).map_err(io_err)?;
        }
        Ok(Report {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            previous,
            dropped_bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line with a single `write_all` (see the module docs).
    pub fn append(&self, entry: &Entry) -> Result<(), MirrorError> {
        let mut line = serde_json::to_vec(entry).expect("report lines serialise");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line).map_err(|source| MirrorError::Report {
            file: self.path.clone(),
            source,
        })
    }
}

/// Packages per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub packages: u64,
    pub allowed: u64,
    pub refused: u64,
    pub no_metadata: u64,
    pub errors: u64,
}

impl Counts {
    pub fn add(&mut self, o: Outcome) {
        self.packages += 1;
        match o {
            Outcome::Allowed => self.allowed += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::NoMetadata => self.no_metadata += 1,
            Outcome::Error => self.errors += 1,
        }
    }

    /// Anything refused or failed.
    pub fn failed(&self) -> bool {
        self.refused + self.errors > 0
    }
}

/// The result of [`run`]: counts over every package of the run (resumed
/// ones with their previous verdict).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub counts: Counts,
    /// Checked in this run.
    pub checked: u64,
    /// Skipped: already in the report with an unchanged sha256.
    pub resumed: u64,
    pub elapsed_ms: u64,
    /// `checked` per second of wall-clock time.
    pub packages_per_s: f64,
}

/// Told about each package as it finishes.
#[derive(Debug, Clone, Copy)]
pub struct Done<'a> {
    pub rel: &'a str,
    pub verdict: Outcome,
    /// Taken from the report rather than checked.
    pub resumed: bool,
}

/// A bulk check.
pub struct Run<'a> {
    pub source: &'a Source,
    /// Check only this shard's packages.
    pub shard: Option<Shard>,
    pub check: &'a PolicyCheck<'a>,
    /// Worker threads (0: one per core).
    pub jobs: usize,
    pub report: Option<&'a Report>,
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Checks one package (no resume logic).
pub fn check_one(p: &Package, pc: &PolicyCheck) -> Entry {
    let started = Instant::now();
    let sha256 = match sha256_file(&p.path) {
        Ok(h) => h,
        Err(e) => {
            return Entry {
                path: p.rel.clone(),
                name: None,
                version: None,
                sha256: None,
                verdict: Outcome::Refused,
                reasons: vec![format!("{}: cannot read: {e}", p.path.display())],
                duration_ms: started.elapsed().as_millis() as u64,
            }
        }
    };
    check_hashed(p, sha256, pc, started)
}

fn check_hashed(p: &Package, sha256: String, pc: &PolicyCheck, started: Instant) -> Entry {
    // check_with_policy never panics on hostile input; should it anyway,
    // that package is an error and the run goes on.
    let got = panic::catch_unwind(AssertUnwindSafe(|| check::check_with_policy(&p.path, pc)));
    let (name, version, verdict, reasons) = match got {
        Ok(v) => (
            v.name.clone(),
            v.version.clone(),
            Outcome::of(&v),
            v.reasons,
        ),
        Err(e) => (
            None,
            None,
            Outcome::Error,
            vec![format!("internal error: {}", panic_text(&*e))],
        ),
    };
    Entry {
        path: p.rel.clone(),
        name,
        version,
        sha256: Some(sha256),
        verdict,
        reasons,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Checks every package on `r.jobs` threads, taking them from the source
/// one at a time as workers come free, appending each line to the report as
/// it finishes and calling `on_done`. Stops at the first error of the
/// source (a directory that cannot be read) or the report; the lines written
/// until then stand, so a rerun resumes.
pub fn run(r: &Run, on_done: &(dyn Fn(Done) + Sync)) -> Result<RunSummary, MirrorError> {
    let started = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(r.jobs)
        .thread_name(|i| format!("mirror-{i}"))
        .build()
        .map_err(|source| MirrorError::Pool {
            jobs: r.jobs,
            source,
        })?;
    struct Tally {
        counts: Counts,
        checked: u64,
        resumed: u64,
    }
    let tally = Mutex::new(Tally {
        counts: Counts::default(),
        checked: 0,
        resumed: 0,
    });
    let record = |rel: &str, verdict: Outcome, resumed: bool| {
        {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            t.counts.add(verdict);
            if resumed {
                t.resumed += 1;
            } else {
                t.checked += 1;
            }
        }
        on_done(Done {
            rel,
            verdict,
            resumed,
        });
    };
    let packages = r.source.packages()?.filter(|p| match (p, r.shard) {
        (Ok(p), Some(shard)) => shard.contains(&p.rel),
        _ => true,
    });
    pool.install(|| {
        packages.par_bridge().try_for_each(|p| {
            let p = p?;
            let started = Instant::now();
            let entry = match sha256_file(&p.path) {
                Ok(h) => {
                    let prev = r.report.and_then(|rep| rep.previous.get(&p.rel));
                    if let Some(prev) = prev.filter(|pr| pr.sha256.as_deref() == Some(&h)) {
                        record(&p.rel, prev.verdict, true);
                        return Ok(());
                    }
                    check_hashed(&p, h, r.check, started)
                }
                Err(_) => check_one(&p, r.check),
            };
            if let Some(rep) = r.report {
                rep.append(&entry)?;
            }
            record(&entry.path, entry.verdict, false);
            Ok(())
        })
    })?;
    let t = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let elapsed = started.elapsed();
    Ok(RunSummary {
        counts: t.counts,
        checked: t.checked,
        resumed: t.resumed,
        elapsed_ms: elapsed.as_millis() as u64,
        packages_per_s: t.checked as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

/// The combined summary of several (shard) reports.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub reports: Vec<PathBuf>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Sum of the per-package check times (CPU-ish time, not wall clock).
    pub total_check_ms: u64,
}

/// Combines reports: the last line per path within a report wins; a path in
/// two reports, or a report with a partial last line, is an error.
pub fn merge(reports: &[PathBuf]) -> Result<MergeSummary, MirrorError> {
    // path → (report index, verdict, duration)
    let mut last: HashMap<String, (usize, Outcome, u64)> = HashMap::new();
    for (i, path) in reports.iter().enumerate() {
        let mut file = File::open(path).map_err(|source| MirrorError::Report {
            file: path.clone(),
            source,
        })?;
        let (_, torn) = read_lines(path, &mut file, |_, e| {
            match last.get(&e.path) {
                Some((j, _, _)) if *j != i => {
                    return Err(MirrorError::Duplicate {
                        path: e.path,
                        first: reports[*j].clone(),
                        second: path.clone(),
                    })
                }
                _ => {}
            }
            last.insert(e.path, (i, e.verdict, e.duration_ms));
            Ok(())
        })?;
        if torn {
            return Err(MirrorError::Torn { file: path.clone() });
        }
    }
    let mut counts = Counts::default();
    let mut total_check_ms = 0;
    for (_, verdict, ms) in last.values() {
        counts.add(*verdict);
        total_check_ms += ms;
    }
    Ok(MergeSummary {
        reports: reports.to_vec(),
        counts,
        total_check_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, verdict: Outcome) -> Entry {
        Entry {
            path: path.into(),
            name: None,
            version: None,
            sha256: Some("00".into()),
            verdict,
            reasons: Vec::new(),
            duration_ms: 1,
        }
    }

    #[test]
    fn shards_are_stable_and_partition() {
        // Pinned: the partition must not change between releases, or resumed
        // sharded runs would check packages twice.
        assert_eq!(Shard::of("pool/main/h/hello/hello_1.0_all.deb", 3), 3);
        let paths: Vec<String> = (0..300).map(|i| format!("p/{i}.deb")).collect();
        let shards: Vec<Shard> = (1..=3).map(|i| Shard { index: i, count: 3 }).collect();
        for p in &paths {
            assert_eq!(shards.iter().filter(|s| s.contains(p)).count(), 1);
        }
        for s in &shards {
            assert!(paths.iter().filter(|p| s.contains(p)).count() > 50);
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!("2/8".parse::<Shard>(), Ok(Shard { index: 2, count: 8 }));
        for bad in ["0/3", "4/3", "1/0", "1", "a/2", "1/b"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn torn_last_line_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut text = serde_json::to_string(&entry("a.deb", Outcome::Allowed)).unwrap();
        text.push('\n');
        let whole = text.len() as u64;
        text.push_str(r#"{"path":"b.deb","na"#);
        std::fs::write(&path, &text).unwrap();
        assert!(matches!(
            merge(std::slice::from_ref(&path)),
            Err(MirrorError::Torn { .. })
        ));
        let r = Report::open(&path).unwrap();
        assert_eq!(r.dropped_bytes, text.len() as u64 - whole);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        assert!(r.previous.contains_key("a.deb"));
        r.append(&entry("b.deb", Outcome::Refused)).unwrap();
        let m = merge(&[path]).unwrap();
        assert_eq!((m.counts.allowed, m.counts.refused), (1, 1));
    }

    #[test]
    fn merge_takes_last_line_and_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        let r = Report::open(&a).unwrap();
        r.append(&entry("x.deb", Outcome::Refused)).unwrap();
        r.append(&entry("x.deb", Outcome::Allowed)).unwrap();
        let r = Report::open(&b).unwrap();
        r.append(&entry("y.crate", Outcome::NoMetadata)).unwrap();
        let m = merge(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            (m.counts.packages, m.counts.allowed, m.counts.no_metadata),
            (2, 1, 1)
        );
        r.append(&entry("x.deb", Outcome::Allowed)).unwrap();
        assert!(matches!(merge(&[a, b]), Err(MirrorError::Duplicate { .. })));
    }

    #[test]
    fn packages_index() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join("Packages");
        std::fs::write(
            &idx,
            "Package: b\nFilename: pool/main/b/b_1_all.deb\n\nPackage: a\nFilename: ./pool/main/a/a_1_all.deb\n",
        )
        .unwrap();
        let source = Source::Index {
            index: idx.clone(),
            base: "/srv/mirror".into(),
        };
        let got: Vec<Package> = source.packages().unwrap().map(Result::unwrap).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].path,
            Path::new("/srv/mirror/pool/main/b/b_1_all.deb")
        );
        assert_eq!(got[1].rel, "pool/main/a/a_1_all.deb");
        assert_eq!(source.count(None).unwrap(), 2);
        std::fs::write(&idx, "Filename: pool/x.deb\nFilename: ../etc/x.deb\n").unwrap();
        assert!(matches!(
            source.count(None),
            Err(MirrorError::IndexPath { line: 2, .. })
        ));
        // CRLF line ends, and a last line without one.
        std::fs::write(&idx, "Filename: pool/a.deb\r\nFilename: pool/b.deb").unwrap();
        let rels: Vec<String> = source.packages().unwrap().map(|p| p.unwrap().rel).collect();
        assert_eq!(rels, ["pool/a.deb", "pool/b.deb"]);
        // A line over the cap (an upstream index is not ours) is refused
        // without holding more of it than the cap, and ends the stream.
        let mut long = b"Package: a\nDescription: ".to_vec();
        long.resize(long.len() + MAX_INDEX_LINE as usize, b'x');
        long.extend_from_slice(b"\nFilename: pool/a.deb\n");
        std::fs::write(&idx, &long).unwrap();
        let got: Vec<_> = source.packages().unwrap().collect();
        assert!(
            matches!(got[..], [Err(MirrorError::IndexLine { line: 2, .. })]),
            "{got:?}"
        );
        // Reading such a line stops at the cap.
        let mut raw = Vec::new();
        let mut r = &long[b"Package: a\n".len()..];
        let n = read_line_capped(&mut r, &mut raw, MAX_INDEX_LINE).unwrap();
        assert_eq!((n, raw.len()), (MAX_INDEX_LINE as usize + 1, n));
        // Bytes that are not UTF-8 are an error, as before.
        std::fs::write(&idx, b"Package: a\nFilename: pool/\xff.deb\n").unwrap();
        let e = source.count(None).unwrap_err();
        assert!(matches!(e, MirrorError::ReadIndex { .. }), "{e}");
        assert!(e.to_string().contains("line 2: invalid utf-8"), "{e}");
    }

    #[test]
    fn a_directory_gone_during_the_walk_is_an_error_not_an_end() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("x.deb"), b"x").unwrap();
        }
        let source = Source::Tree(dir.path().to_path_buf());
        let mut packages = source.packages().unwrap();
        let first = packages.next().unwrap().unwrap();
        // The other directory goes away before the walk reaches it (the
        // pool changed after the counting pass).
        let other = if first.rel.starts_with("a/") {
            "b"
        } else {
            "a"
        };
        std::fs::remove_dir_all(dir.path().join(other)).unwrap();
        let rest: Vec<_> = packages.collect();
        assert_eq!(rest.len(), 1, "{rest:?}");
        let e = rest.into_iter().next().unwrap().unwrap_err();
        assert!(matches!(e, MirrorError::Walk { .. }), "{e}");
        assert!(e.to_string().contains("walking the pool"), "{e}");
    }

    #[test]
    fn tree_walk_skips_metadata_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "b/z.deb",
            "b/a.crate",
            "a.deb",
            "a.deb.intoto/inner.deb",
            "notes.txt",
            "c/d.crate.sig",
        ] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        std::fs::create_dir(root.join("dir.deb")).unwrap();
        std::os::unix::fs::symlink(root.join("a.deb"), root.join("link.deb")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("linkdir")).unwrap();
        let source = Source::Tree(root.to_path_buf());
        let mut rels: Vec<String> = source.packages().unwrap().map(|p| p.unwrap().rel).collect();
        rels.sort();
        assert_eq!(rels, ["a.deb", "b/a.crate", "b/z.deb", "link.deb"]);
        let shard = Shard { index: 1, count: 2 };
        let in_shard = rels.iter().filter(|r| shard.contains(r)).count() as u64;
        assert_eq!(source.count(Some(shard)).unwrap(), in_shard);
    }
}
