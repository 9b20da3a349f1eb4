//! Artifact hashing as the reference's `FileResolver` does it (in-toto 3.1.0
//! `resolver/_resolver.py`), but streaming and in parallel.
//!
//! Semantics kept from the reference: paths are `normpath`'d lexically but not
//! made relative; a directory is walked (following symlinked directories when
//! asked); excludes are gitignore patterns and a non-empty exclude list
//! *replaces* the defaults; a missing path or a broken symlink is skipped with a
//! note, not an error; `--lstrip-paths` strips the first matching plain string
//! prefix and refuses collisions.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;
use sha2::{Digest, Sha256, Sha512};

use crate::model::{ArtifactMap, HashDict};

/// The reference's `settings.ARTIFACT_EXCLUDE_PATTERNS`.
pub const DEFAULT_EXCLUDES: [&str; 4] = ["*.link*", ".git", "*.pyc", "*~"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Sha512,
}

impl HashAlg {
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha512 => "sha512",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// gitignore-style patterns; `None` means the reference's defaults.
    pub excludes: Option<Vec<String>>,
    /// Paths are resolved against this directory and recorded relative to it.
    pub base_path: Option<PathBuf>,
    pub follow_symlink_dirs: bool,
    /// Hash with CRLF and lone CR turned into LF (library option in the reference).
    pub normalize_line_endings: bool,
    pub lstrip_paths: Vec<String>,
    pub algorithms: Vec<HashAlg>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            excludes: None,
            base_path: None,
            follow_symlink_dirs: true,
            normalize_line_endings: false,
            lstrip_paths: Vec::new(),
            algorithms: vec![HashAlg::Sha256],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("--lstrip-paths {0:?} and {1:?} are prefixes of each other")]
    OverlappingPrefixes(String, String),
    #[error("--lstrip-paths makes two artifacts both {0:?}")]
    PrefixCollision(String),
    #[error("bad exclude pattern {pattern:?}: {source}")]
    BadExclude {
        pattern: String,
        source: ignore::Error,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: path is not valid UTF-8; in-toto metadata can only name UTF-8 paths")]
    NonUtf8(PathBuf),
}

/// What recording noticed but did not fail on (the reference logs these).
#[derive(Debug, Default)]
pub struct Notes {
    pub skipped_missing: Vec<String>,
}

/// Python's `os.path.normpath` for POSIX paths (lexical only).
pub fn normpath(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let leading = if p.starts_with("//") && !p.starts_with("///") {
        "//"
    } else if p.starts_with('/') {
        "/"
    } else {
        ""
    };
    let mut parts: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if leading.is_empty() {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    let out = format!("{leading}{joined}");
    if out.is_empty() {
        ".".into()
    } else {
        out
    }
}

struct Excluder(Gitignore);

impl Excluder {
    fn new(patterns: &[String]) -> Result<Excluder, DigestError> {
        let mut b = GitignoreBuilder::new("");
        for p in patterns {
            b.add_line(None, p)
                .map_err(|source| DigestError::BadExclude {
                    pattern: p.clone(),
                    source,
                })?;
        }
        b.build()
            .map(Excluder)
            .map_err(|source| DigestError::BadExclude {
                pattern: patterns.join(" "),
                source,
            })
    }
    fn excluded(&self, path: &str, is_dir: bool) -> bool {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            return false;
        }
        self.0.matched_path_or_any_parents(rel, is_dir).is_ignore()
    }
}

/// Records `paths` into an artifact map (hash dicts by normalised path).
pub fn record(paths: &[String], opts: &RecordOptions) -> Result<(ArtifactMap, Notes), DigestError> {
    record_cached(paths, opts, None, None)
}

/// File identity and timestamps: unchanged identity and ctime mean
/// unchanged content, provided the ctime is older than the first snapshot
/// (a write always moves ctime to "now", and user space cannot set it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl StatKey {
    fn of(m: &std::fs::Metadata) -> StatKey {
        use std::os::unix::fs::MetadataExt;
        StatKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Hashes from an earlier snapshot, reusable for files that provably did not
/// change since (used for an inspection's "after" snapshot: its command
/// usually leaves most of a large tree alone).
#[derive(Debug, Default)]
pub struct StatCache {
    /// Files whose ctime is at or after this (seconds since the epoch) are
    /// never trusted: timestamps are coarse, so a write right after our
    /// stat could keep the same ctime.
    trusted_before: i64,
    entries: std::sync::Mutex<HashMap<PathBuf, (StatKey, HashDict)>>,
}

impl StatCache {
    /// A cache that trusts files last changed before now minus 2 s.
    pub fn new() -> StatCache {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        StatCache {
            trusted_before: now - 2,
            entries: Default::default(),
        }
    }
    fn trusted(&self, k: &StatKey) -> bool {
        k.ctime.0 < self.trusted_before
    }
    fn lookup(&self, path: &Path) -> Option<HashDict> {
        let m = std::fs::metadata(path).ok()?;
        let k = StatKey::of(&m);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(path) {
            Some((old, h)) if *old == k && self.trusted(&k) => Some(h.clone()),
            _ => None,
        }
    }
    fn remember(&self, path: &Path, h: &HashDict) {
        if let Ok(m) = std::fs::metadata(path) {
            let k = StatKey::of(&m);
            if self.trusted(&k) {
                self.entries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path.to_path_buf(), (k, h.clone()));
            }
        }
    }
}

/// [`record`], reusing hashes from `reuse` for unchanged files and
/// remembering new ones in `remember`.
pub fn record_cached(
    paths: &[String],
    opts: &RecordOptions,
    reuse: Option<&StatCache>,
    remember: Option<&StatCache>,
) -> Result<(ArtifactMap, Notes), DigestError> {
    if paths.is_empty() {
        return Ok((ArtifactMap::new(), Notes::default()));
    }
    for (i, a) in opts.lstrip_paths.iter().enumerate() {
        for b in &opts.lstrip_paths[i + 1..] {
            if a.starts_with(b.as_str()) || b.starts_with(a.as_str()) {
                return Err(DigestError::OverlappingPrefixes(a.clone(), b.clone()));
            }
        }
    }
    let excludes: Vec<String> = match &opts.excludes {
        Some(e) if !e.is_empty() => e.clone(),
        _ => DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
    };
    let ex = Excluder::new(&excludes)?;
    let base = opts.base_path.clone().unwrap_or_default();
    let fs_path = |p: &str| -> PathBuf {
        if base.as_os_str().is_empty() {
            PathBuf::from(p)
        } else {
            base.join(p)
        }
    };

    // Discovery (walk, excludes, lstrip) runs on its own thread and feeds
    // the hashing pool as it goes, so walking overlaps hashing.
    let (tx, rx) = std::sync::mpsc::channel::<(String, PathBuf)>();
    let discover = |tx: std::sync::mpsc::Sender<(String, PathBuf)>| -> Result<Notes, DigestError> {
        let mut notes = Notes::default();
        let mut seen = std::collections::HashSet::new();
        let mut emit = |prefix: &str, path: &str, on_disk: PathBuf| -> Result<(), DigestError> {
            let mut stripped = path;
            for lp in &opts.lstrip_paths {
                if let Some(rest) = path.strip_prefix(lp.as_str()) {
                    stripped = rest;
                    break;
                }
            }
            if !opts.lstrip_paths.is_empty() && !seen.insert(stripped.to_owned()) {
                return Err(DigestError::PrefixCollision(stripped.to_owned()));
            }
            // The receiver only goes away if hashing failed; that error wins.
            let _ = tx.send((format!("{prefix}{stripped}"), on_disk));
            Ok(())
        };
        for given in paths {
            let (prefix, raw) = match given.strip_prefix("file:") {
                Some(rest) => ("file:", rest),
                None => ("", given.as_str()),
            };
            let path = normpath(raw);
            let on_disk = fs_path(&path);
            let meta = match std::fs::metadata(&on_disk) {
                Ok(m) => m,
                Err(_) => {
                    if !ex.excluded(&path, false) {
                        notes.skipped_missing.push(given.clone());
                    }
                    continue;
                }
            };
            if ex.excluded(&path, meta.is_dir()) {
                continue;
            }
            if meta.is_file() {
                emit(prefix, &path, on_disk)?;
            } else if meta.is_dir() {
                walk(
                    &path,
                    &on_disk,
                    prefix,
                    opts.follow_symlink_dirs,
                    &ex,
                    &mut emit,
                )?;
            }
        }
        Ok(notes)
    };
    let (walked, hashed) = std::thread::scope(|scope| {
        let walker = scope.spawn(move || discover(tx));
        let hashed: Result<Vec<(String, HashDict)>, DigestError> = rx
            .into_iter()
            .par_bridge()
            .map(|(key, p)| {
                if let Some(h) = reuse.and_then(|c| c.lookup(&p)) {
                    return Ok((key, h));
                }
                let h = hash_file(&p, &opts.algorithms, opts.normalize_line_endings).map_err(
                    |source| DigestError::Io {
                        path: p.clone(),
                        source,
                    },
                )?;
                if let Some(c) = remember {
                    c.remember(&p, &h);
                }
                Ok((key, h))
            })
            .collect();
        (walker.join(), hashed)
    });
    let notes = match walked {
        Ok(r) => r?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let hashed = hashed?;
    Ok((hashed.into_iter().collect::<BTreeMap<_, _>>(), notes))
}

fn walk(
    key_root: &str,
    disk_root: &Path,
    prefix: &str,
    follow: bool,
    ex: &Excluder,
    emit: &mut dyn FnMut(&str, &str, PathBuf) -> Result<(), DigestError>,
) -> Result<(), DigestError> {
    let mut it = walkdir::WalkDir::new(disk_root)
        .follow_links(follow)
        .follow_root_links(true)
        .into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            // A symlink loop or a vanished entry: the reference would recurse
            // or skip; we skip the entry.
            Err(e) if e.loop_ancestor().is_some() => continue,
            Err(e) => {
                let path = e.path().unwrap_or(disk_root).to_path_buf();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk failed"));
                if source.kind() == io::ErrorKind::NotFound {
                    continue;
                }
                return Err(DigestError::Io { path, source });
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(disk_root)
            .unwrap_or(entry.path())
            .to_str()
            .ok_or_else(|| DigestError::NonUtf8(entry.path().to_path_buf()))?;
        let key = normpath(&format!("{key_root}/{rel}"));
        let ft = entry.file_type();
        if ft.is_dir() {
            if ex.excluded(&key, true) {
                it.skip_current_dir();
            }
            continue;
        }
        if ex.excluded(&key, false) {
            continue;
        }
        // Follows symlinks: a link to a file counts under the link's name;
        // a broken link, or a link to a directory we do not follow, is skipped.
        let is_file = if ft.is_symlink() {
            std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
        } else {
            ft.is_file()
        };
        if is_file {
            emit(prefix, &key, entry.into_path())?;
        }
    }
    Ok(())
}

const CHUNK: usize = 1 << 20;

/// Streams one file through every requested hash.
pub fn hash_file(path: &Path, algs: &[HashAlg], normalize_eol: bool) -> io::Result<HashDict> {
    thread_local! {
        // One read buffer per hashing thread: a fresh 1 MiB buffer per file
        // costs an mmap/munmap pair each, which dominates on small files.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
    }
    BUF.with(|buf| hash_file_with(path, algs, normalize_eol, &mut buf.borrow_mut()))
}

fn hash_file_with(
    path: &Path,
    algs: &[HashAlg],
    normalize_eol: bool,
    buf: &mut [u8],
) -> io::Result<HashDict> {
    let mut f = File::open(path)?;
    let mut s256 = algs.contains(&HashAlg::Sha256).then(Sha256::new);
    let mut s512 = algs.contains(&HashAlg::Sha512).then(Sha512::new);
    let mut norm = Vec::new();
    let mut pending_cr = false;
    loop {
        let n = match f.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        let chunk: &[u8] = if normalize_eol {
            norm.clear();
            normalize_into(&buf[..n], &mut pending_cr, &mut norm);
            &norm
        } else {
            &buf[..n]
        };
        if let Some(h) = s256.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = s512.as_mut() {
            h.update(chunk);
        }
    }
    if pending_cr {
        if let Some(h) = s256.as_mut() {
            h.update(b"\n");
        }
        if let Some(h) = s512.as_mut() {
            h.update(b"\n");
        }
    }
    let mut out = HashDict::new();
    if let Some(h) = s256 {
        out.insert("sha256".into(), hex::encode(h.finalize()));
    }
    if let Some(h) = s512 {
        out.insert("sha512".into(), hex::encode(h.finalize()));
    }
    Ok(out)
}

/// CRLF → LF, then lone CR → LF, across chunk boundaries (`pending_cr` carries
/// a CR that ended the previous chunk).
fn normalize_into(input: &[u8], pending_cr: &mut bool, out: &mut Vec<u8>) {
    for &b in input {
        if *pending_cr {
            *pending_cr = false;
            out.push(b'\n');
            if b == b'\n' {
                continue;
            }
        }
        if b == b'\r' {
            *pending_cr = true;
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_reuses_only_old_unchanged_files() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join("old");
        let fresh = d.path().join("fresh");
        std::fs::write(&old, b"a").unwrap();
        std::fs::write(&fresh, b"b").unwrap();
        let cache = StatCache::new();
        // Pretend `old` was last changed long ago by trusting everything before now + 10 s.
        let cache = StatCache {
            trusted_before: cache.trusted_before + 12,
            ..cache
        };
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let (first, _) = record_cached(&[".".into()], &opts, None, Some(&cache)).unwrap();
        // A rewrite moves ctime, so the cached hash is not reused.
        std::fs::write(&old, b"c").unwrap();
        let (second, _) = record_cached(&[".".into()], &opts, Some(&cache), None).unwrap();
        assert_ne!(first["old"], second["old"]);
        assert_eq!(second["old"]["sha256"], hex::encode(Sha256::digest(b"c")));
        // With a cache that trusts nothing, nothing is remembered.
        let strict = StatCache {
            trusted_before: 0,
            ..StatCache::default()
        };
        record_cached(&[".".into()], &opts, None, Some(&strict)).unwrap();
        assert!(strict.entries.lock().unwrap().is_empty());
    }

    #[test]
    fn normpath_matches_python() {
        for (i, o) in [
            ("./d/", "d"),
            (".", "."),
            ("", "."),
            ("a//b/../c", "a/c"),
            ("../x", "../x"),
            ("/../x", "/x"),
            ("a/../..", ".."),
            ("//a", "//a"),
            ("///a", "/a"),
        ] {
            assert_eq!(normpath(i), o, "{i}");
        }
    }

    #[test]
    fn line_endings_normalise_across_chunks() {
        let mut out = Vec::new();
        let mut cr = false;
        normalize_into(b"x\r", &mut cr, &mut out);
        normalize_into(b"\ny\rz\r\r\n", &mut cr, &mut out);
        assert!(!cr);
        assert_eq!(out, b"x\ny\nz\n\n");
    }

    #[test]
    fn records_tree_with_excludes_and_lstrip() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("src/sub")).unwrap();
        std::fs::write(d.path().join("src/a.txt"), b"a").unwrap();
        std::fs::write(d.path().join("src/sub/b.txt"), b"b").unwrap();
        std::fs::write(d.path().join("src/x.link"), b"l").unwrap();
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            lstrip_paths: vec!["src/".into()],
            ..Default::default()
        };
        let (m, notes) = record(&["src".into(), "missing".into()], &opts).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a.txt", "sub/b.txt"]);
        assert_eq!(
            m["a.txt"]["sha256"],
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
        assert_eq!(notes.skipped_missing, ["missing"]);
        let err = record(&["src".into(), "src".into()], &opts).unwrap_err();
        assert!(matches!(err, DigestError::PrefixCollision(_)));
    }
}
