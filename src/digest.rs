//! Artifact hashing as the reference's `FileResolver` does it (in-toto 3.1.0
//! `resolver/_resolver.py`), but streaming and in parallel.
//!
//! Semantics kept from the reference: paths are `normpath`'d lexically but not
//! made relative; a directory is walked (following symlinked directories when
//! asked); excludes are gitignore patterns and a non-empty exclude list
//! *replaces* the defaults; a missing path or a broken symlink is skipped with a
//! note, not an error; `--lstrip-paths` strips the first matching plain string
//! prefix and refuses collisions.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

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
    /// Refuse symlinks that lead outside the directory being recorded
    /// (inspection snapshots: an inspection may leave a link to any host
    /// file, such as `/proc/kmsg`, which blocks, or `/`, which is the whole
    /// host). The reference follows them, as `run` does by default.
    pub confine_links: bool,
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
            confine_links: false,
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
    #[error(
        "{0}: a symlink that leads outside the directory being recorded, or leaves it on the \
         way (an absolute target, or `..` above it); such links are refused, not followed"
    )]
    LinkEscapes(PathBuf),
    #[error(
        "two files would both be recorded as {name:?} ({first:?} and {second:?}): in-toto \
         records a `\\` in a name as `/`, and keeps whichever file it walks last"
    )]
    NameCollision {
        name: String,
        first: String,
        second: String,
    },
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

struct Excluder {
    matcher: Gitignore,
    /// When every pattern is plain text and `*` only (like the defaults):
    /// each pattern's literal pieces. Such a pattern has no `/`, so it is
    /// matched against the last path component, and any name it matches
    /// contains all its pieces: a name containing no pattern's pieces is
    /// cleared without the matcher (which is most of a walk's cost per file
    /// after the system calls). The matcher decides everything else.
    pieces: Option<Vec<Vec<String>>>,
}

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
        let matcher = b.build().map_err(|source| DigestError::BadExclude {
            pattern: patterns.join(" "),
            source,
        })?;
        let plain = |p: &String| {
            !p.is_empty()
                && p.chars()
                    .all(|c| !c.is_whitespace() && !"/\\?[]!#{}".contains(c))
        };
        let pieces = patterns.iter().all(plain).then(|| {
            patterns
                .iter()
                .map(|p| {
                    p.split('*')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .collect()
        });
        Ok(Excluder { matcher, pieces })
    }
    /// Whether some pattern could match the last component `name`.
    fn may_match(&self, name: &str) -> bool {
        match &self.pieces {
            Some(patterns) => patterns
                .iter()
                .any(|pieces: &Vec<String>| pieces.iter().all(|p| name.contains(p.as_str()))),
            None => true,
        }
    }
    /// [`Excluder::excluded`] for an entry of a directory the walk entered:
    /// that directory and its parents were checked already (an excluded
    /// one is never entered), so only the entry's own path is matched.
    fn excluded_child(&self, path: &str, is_dir: bool) -> bool {
        let rel = path.trim_start_matches('/');
        let name = rel.rsplit('/').next().unwrap_or(rel);
        !rel.is_empty() && self.may_match(name) && self.matcher.matched(rel, is_dir).is_ignore()
    }
    fn excluded(&self, path: &str, is_dir: bool) -> bool {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            return false;
        }
        self.matcher
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
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
    fn of(st: &FileStat) -> StatKey {
        StatKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// Hashing for file identities (device, inode) in a [`StatCache`]. These are
/// numbers the file system hands out, not chosen by whoever made the files,
/// so a multiply-rotate mix does (the default SipHash showed in profiles of
/// 20,000-file inspections).
type IdHasher = std::hash::BuildHasherDefault<IdHash>;

/// A [`StatCache`]'s files: identity → the stat they were hashed at, and
/// their hashes.
type Remembered = HashMap<(u64, u64), (StatKey, HashDict), IdHasher>;

#[derive(Default)]
struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// Hashes from an earlier snapshot, reusable for files that provably did not
/// change since (used for an inspection's "after" snapshot: its command
/// usually leaves most of a large tree alone). Keyed by file identity
/// (device, inode): content that did not change has the same hash under
/// any name.
#[derive(Debug, Default)]
pub struct StatCache {
    /// Files whose ctime is at or after this (seconds since the epoch) are
    /// never trusted: timestamps are coarse, so a write right after our
    /// stat could keep the same ctime.
    trusted_before: i64,
    entries: Mutex<Remembered>,
}

impl StatCache {
    /// Files remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

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
}

/// A [`StatCache`] being read by one walk (locked once, not per file).
struct Reuse<'a> {
    cache: &'a StatCache,
    entries: &'a Remembered,
}

impl Reuse<'_> {
    fn lookup(&self, st: &FileStat) -> Option<HashDict> {
        let k = StatKey::of(st);
        match self.entries.get(&(k.dev, k.ino)) {
            Some((old, h)) if *old == k && self.cache.trusted(&k) => Some(h.clone()),
            _ => None,
        }
    }
}

/// [`record`], reusing hashes from `reuse` for unchanged files and
/// remembering new ones in `remember` (another cache: `reuse` stays locked
/// while the walk runs).
///
/// Directories are walked in parallel, one task per directory, and files
/// are opened relative to their directory's descriptor: no walker thread,
/// no channel, and no full path built or resolved per file.
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
    if let (Some(a), Some(b)) = (reuse, remember) {
        assert!(
            !std::ptr::eq(a, b),
            "a stat cache cannot be read and filled by one walk"
        );
    }
    let reuse_guard = reuse.map(|c| (c, c.entries.lock().unwrap_or_else(|e| e.into_inner())));
    let walk = Walk {
        opts,
        ex,
        reuse: reuse_guard
            .as_ref()
            .map(|(cache, entries)| Reuse { cache, entries }),
        remember,
        seen: Mutex::new(HashSet::new()),
        mangled: Mutex::new(Vec::new()),
        out: Mutex::new(Vec::new()),
        failed: Mutex::new(None),
        stop: AtomicBool::new(false),
    };
    let mut notes = Notes::default();
    rayon::in_place_scope(|scope| {
        for given in paths {
            if walk.stopped() {
                break;
            }
            let (prefix, raw) = match given.strip_prefix("file:") {
                Some(rest) => ("file:", rest),
                None => ("", given.as_str()),
            };
            let path = normpath(raw);
            let on_disk = if base.as_os_str().is_empty() {
                PathBuf::from(&path)
            } else {
                base.join(&path)
            };
            let meta = match std::fs::metadata(&on_disk) {
                Ok(m) => m,
                Err(_) => {
                    if !walk.ex.excluded(&path, false) {
                        notes.skipped_missing.push(given.clone());
                    }
                    continue;
                }
            };
            if walk.ex.excluded(&path, meta.is_dir()) {
                continue;
            }
            if meta.is_file() {
                let Some(key) = walk.key(prefix, &path) else {
                    continue;
                };
                let mut stats = Vec::new();
                let hashed = File::open(&on_disk)
                    .and_then(|mut f| walk.hash_open(&mut f, &mut stats, false, None));
                match hashed {
                    Ok(h) => walk.push(vec![(key, h)], stats),
                    Err(source) => walk.fail(DigestError::Io {
                        path: on_disk,
                        source,
                    }),
                }
            } else if meta.is_dir() {
                let opened = open_dir(None, on_disk.as_os_str().as_bytes(), true)
                    .and_then(|fd| Ok((nix::sys::stat::fstat(&fd)?, fd)));
                match opened {
                    Ok((st, fd)) => {
                        let root = match opts.confine_links.then(|| fd.try_clone()) {
                            Some(Ok(root_fd)) => Some(Arc::new(Root {
                                fd: root_fd,
                                key: path.clone(),
                            })),
                            Some(Err(source)) => {
                                walk.fail(DigestError::Io {
                                    path: on_disk,
                                    source,
                                });
                                continue;
                            }
                            None => None,
                        };
                        let dir = Arc::new(DirNode {
                            fs: fs_traits(&fd),
                            fd,
                            key: path,
                            disk: on_disk,
                            id: (st.st_dev, st.st_ino),
                            parent: None,
                            root,
                        });
                        let walk = &walk;
                        scope.spawn(move |s| walk.dir(s, prefix, dir));
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => walk.fail(DigestError::Io {
                        path: on_disk,
                        source: e.into(),
                    }),
                }
            }
        }
    });
    let Walk {
        failed,
        out,
        mangled: walk_mangled,
        ..
    } = walk;
    let walk_mangled = walk_mangled.into_inner().unwrap_or_else(|e| e.into_inner());
    drop(reuse_guard);
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    // One allocation of the exact size, then sorted and built into the map.
    // Chunks arrive in no particular order, each sorted: put in order of
    // their first names, they are usually sorted as a whole already (a
    // directory's files are split into chunks of consecutive names), and
    // only otherwise (files beside subdirectories whose names sort between
    // theirs) is everything sorted again.
    let mut chunks = out.into_inner().unwrap_or_else(|e| e.into_inner());
    chunks.retain(|c| !c.is_empty());
    chunks.sort_unstable_by(|a, b| a[0].0.cmp(&b[0].0));
    let mut hashed = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for c in chunks {
        hashed.extend(c);
    }
    if !hashed.is_sorted_by(|a, b| a.0 <= b.0) {
        hashed.par_sort_unstable_by(|a: &(String, HashDict), b| a.0.cmp(&b.0));
    }
    refuse_collisions(&hashed, walk_mangled)?;
    // A path given twice (`src` and `src/a`) was hashed twice; keep one.
    hashed.dedup_by(|a, b| a.0 == b.0);
    Ok((ArtifactMap::from_sorted_unique(hashed), notes))
}

/// Refuses two different files recorded under one name, which only a name
/// with a `\\` (recorded with `/`) can cause: the reference keeps whichever it
/// walks last, an order this parallel walk does not have. The same file
/// reached twice (`src` and `src/a\\b` both given) is one artifact.
/// `sorted` is in name order; `mangled` holds (name, path) of each file
/// whose name was made from a `\\`.
fn refuse_collisions(
    sorted: &[(String, HashDict)],
    mangled: Vec<(String, String)>,
) -> Result<(), DigestError> {
    if mangled.is_empty() {
        return Ok(());
    }
    let mut from: HashMap<String, Vec<String>> = HashMap::new();
    for (name, path) in mangled {
        from.entry(name).or_default().push(path);
    }
    for (name, paths) in &mut from {
        // Entries under this name that did not come from a `\\`: their
        // path is the name itself.
        let start = sorted.partition_point(|(k, _)| k < name);
        let all = sorted[start..]
            .iter()
            .take_while(|(k, _)| k == name)
            .count();
        let plain = all.saturating_sub(paths.len());
        if plain > 0 {
            paths.push(name.clone());
        }
        paths.sort();
        paths.dedup();
        if let [first, second, ..] = paths.as_slice() {
            return Err(DigestError::NameCollision {
                name: name.clone(),
                first: first.clone(),
                second: second.clone(),
            });
        }
    }
    Ok(())
}

/// One directory being walked: its descriptor (files are opened relative to
/// it), its artifact name, its path (for messages) and its ancestors (for
/// symlink loops).
struct DirNode {
    fd: OwnedFd,
    key: String,
    disk: PathBuf,
    id: (u64, u64),
    parent: Option<Arc<DirNode>>,
    /// What its file system lets the walk assume (see [`fs_traits`]).
    fs: FsTraits,
    /// With `confine_links`: the directory the walk started at, which
    /// symlinks are resolved beneath.
    root: Option<Arc<Root>>,
}

struct Root {
    fd: OwnedFd,
    key: String,
}

impl Root {
    /// `key` (below the root) relative to the root.
    fn relative<'k>(&self, key: &'k str) -> &'k str {
        if self.key == "." {
            key
        } else {
            key.strip_prefix(self.key.as_str())
                .map_or(key, |r| r.trim_start_matches('/'))
        }
    }
}

impl DirNode {
    /// The device whose files may be remembered by a stat cache: this
    /// directory's, if its file system's stat shows every write.
    fn trust_dev(&self) -> Option<u64> {
        self.fs.stat_shows_writes.then_some(self.id.0)
    }
    fn is_ancestor_or_self(&self, id: (u64, u64)) -> bool {
        let mut at = Some(self);
        while let Some(d) = at {
            if d.id == id {
                return true;
            }
            at = d.parent.as_deref();
        }
        false
    }
}

struct Walk<'a> {
    opts: &'a RecordOptions,
    ex: Excluder,
    reuse: Option<Reuse<'a>>,
    /// The cache each hashed file it may trust goes into (last changed
    /// before its `trusted_before`, see `hash_open`), as each chunk is done.
    remember: Option<&'a StatCache>,
    /// Names after `--lstrip-paths`, to refuse collisions.
    seen: Mutex<HashSet<String>>,
    /// Artifact names made by turning `\\` into `/`, with the path each came
    /// from, to refuse two files recorded under one name.
    mangled: Mutex<Vec<(String, String)>>,
    /// Hashed files, one vector per directory chunk, each in name order.
    out: Mutex<Vec<Vec<(String, HashDict)>>>,
    failed: Mutex<Option<DigestError>>,
    stop: AtomicBool,
}

/// The most files one hashing task takes from a directory.
const MAX_FILES_PER_TASK: usize = 64;

impl Walk<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Keeps the first error; every task stops soon after.
    fn fail(&self, e: DigestError) {
        self.stop.store(true, Ordering::Relaxed);
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }

    /// Adds a chunk of hashed files, `hashed` in name order.
    fn push(&self, hashed: Vec<(String, HashDict)>, stats: Vec<(StatKey, HashDict)>) {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hashed);
        if stats.is_empty() {
            return;
        }
        // The walk collected only files it may trust (see `hash_open`).
        if let Some(cache) = self.remember {
            cache
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(stats.into_iter().map(|(k, h)| ((k.dev, k.ino), (k, h))));
        }
    }

    /// The artifact name for the normalised `path`: `--lstrip-paths`
    /// applied, `file:` kept. `None` after a collision (recorded as the error).
    ///
    /// As the reference's `_mangle`: a `\\` becomes `/` ("for cross-platform
    /// metadata consistency"), then a prefix is stripped.
    fn key(&self, prefix: &str, given: &str) -> Option<String> {
        let slashed = given.contains('\\').then(|| given.replace('\\', "/"));
        let path = slashed.as_deref().unwrap_or(given);
        let mut stripped = path;
        for lp in &self.opts.lstrip_paths {
            if let Some(rest) = path.strip_prefix(lp.as_str()) {
                stripped = rest;
                break;
            }
        }
        if !self.opts.lstrip_paths.is_empty()
            && !self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(stripped.to_owned())
        {
            self.fail(DigestError::PrefixCollision(stripped.to_owned()));
            return None;
        }
        let key = format!("{prefix}{stripped}");
        if slashed.is_some() {
            self.mangled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((key.clone(), given.to_owned()));
        }
        Some(key)
    }

    /// [`Walk::key`] taking an owned path: reused as is in the common case
    /// (no prefix, nothing to strip).
    fn key_owned(&self, prefix: &str, path: String) -> Option<String> {
        if prefix.is_empty() && self.opts.lstrip_paths.is_empty() && !path.contains('\\') {
            Some(path)
        } else {
            self.key(prefix, &path)
        }
    }

    fn dir<'s>(&'s self, scope: &rayon::Scope<'s>, prefix: &'s str, dir: Arc<DirNode>) {
        if let Err(e) = self.dir_inner(scope, prefix, &dir) {
            self.fail(e);
        }
    }

    fn dir_inner<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        prefix: &'s str,
        dir: &Arc<DirNode>,
    ) -> Result<(), DigestError> {
        let io = |name: &[u8], e: Errno| DigestError::Io {
            path: dir.disk.join(OsStr::from_bytes(name)),
            source: e.into(),
        };
        let entries = read_dir_fd(&dir.fd).map_err(|e| io(b"", e))?;
        let mut files: Vec<(String, CString)> = Vec::new();
        // Files reached through confined symlinks, hashed as they are found.
        let (mut linked, mut linked_stats) = (Vec::new(), Vec::new());
        for (name, ty) in entries {
            if self.stopped() {
                return Ok(());
            }
            let bytes = name.as_bytes();
            let Ok(name_str) = std::str::from_utf8(bytes) else {
                return Err(DigestError::NonUtf8(
                    dir.disk.join(OsStr::from_bytes(bytes)),
                ));
            };
            let key = child_key(&dir.key, name_str);
            let ty = match ty {
                Some(t) => t,
                None => match fstatat(&dir.fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => type_of(&st),
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(io(bytes, e)),
                },
            };
            // Follows symlinks: a link to a file counts under the link's
            // name; a broken link, or a link to a directory we do not
            // follow, is skipped; a link back to an ancestor is a loop and
            // is skipped too. Confined, a link is opened beneath the root.
            let mut beneath: Option<OwnedFd> = None;
            if let (Type::Symlink, Some(root)) = (ty, &dir.root) {
                match open_beneath(root, &key) {
                    Ok(fd) => beneath = Some(fd),
                    Err(Errno::EXDEV) => {
                        return Err(DigestError::LinkEscapes(
                            dir.disk.join(OsStr::from_bytes(bytes)),
                        ))
                    }
                    // Broken, or a loop.
                    Err(Errno::ENOENT | Errno::ELOOP) => continue,
                    Err(e) => return Err(io(bytes, e)),
                }
            }
            let (is_dir, is_file, via_link) = match ty {
                Type::Symlink if beneath.is_some() => {
                    let fd = beneath.as_ref().expect("checked");
                    let st = nix::sys::stat::fstat(fd).map_err(|e| io(bytes, e))?;
                    let t = type_of(&st);
                    let followed = t == Type::Directory && self.opts.follow_symlink_dirs;
                    if followed && dir.is_ancestor_or_self((st.st_dev, st.st_ino)) {
                        continue;
                    }
                    (followed, t == Type::File, true)
                }
                Type::Directory => (true, false, false),
                Type::File => (false, true, false),
                Type::Symlink => match fstatat(&dir.fd, name.as_c_str(), AtFlags::empty()) {
                    Ok(st) => {
                        let t = type_of(&st);
                        let followed = t == Type::Directory && self.opts.follow_symlink_dirs;
                        if followed && dir.is_ancestor_or_self((st.st_dev, st.st_ino)) {
                            continue;
                        }
                        (followed, t == Type::File, true)
                    }
                    Err(_) => continue,
                },
                _ => (false, false, false),
            };
            if is_dir {
                if self.ex.excluded_child(&key, true) {
                    continue;
                }
                let opened = match beneath.take() {
                    Some(fd) => Ok(fd),
                    None => open_dir(Some(&dir.fd), bytes, via_link),
                };
                let fd = match opened {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(io(bytes, e)),
                };
                let st = nix::sys::stat::fstat(&fd).map_err(|e| io(bytes, e))?;
                // Through a followed link, a real directory can be an
                // ancestor again (`a/b/up -> ..`, walked as `ab/up/b`).
                if self.opts.follow_symlink_dirs && dir.is_ancestor_or_self((st.st_dev, st.st_ino))
                {
                    continue;
                }
                // A mount point below may be another kind of file system.
                let fs = if st.st_dev == dir.id.0 {
                    dir.fs
                } else {
                    fs_traits(&fd)
                };
                let child = Arc::new(DirNode {
                    fs,
                    fd,
                    key,
                    disk: dir.disk.join(name_str),
                    id: (st.st_dev, st.st_ino),
                    parent: Some(dir.clone()),
                    root: dir.root.clone(),
                });
                scope.spawn(move |s| self.dir(s, prefix, child));
                continue;
            }
            if !is_file || self.ex.excluded_child(&key, false) {
                continue;
            }
            let Some(key) = self.key_owned(prefix, key) else {
                return Ok(());
            };
            match beneath {
                Some(fd) => {
                    let h = self
                        .hash_open(
                            &mut File::from(fd),
                            &mut linked_stats,
                            false,
                            dir.trust_dev(),
                        )
                        .map_err(|source| DigestError::Io {
                            path: dir.disk.join(OsStr::from_bytes(bytes)),
                            source,
                        })?;
                    linked.push((key, h));
                }
                None => files.push((key, name)),
            }
        }
        if !linked.is_empty() {
            linked.sort_unstable_by(|a: &(String, HashDict), b| a.0.cmp(&b.0));
            self.push(linked, linked_stats);
        }
        // Chunks of consecutive names (see `record_cached`).
        files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let hash_some = |chunk: &mut [(String, CString)]| -> Result<(), DigestError> {
            let mut done = Vec::with_capacity(chunk.len());
            let mut stats = Vec::new();
            for (key, name) in chunk {
                if self.stopped() {
                    return Ok(());
                }
                let h = self
                    .hash_at(dir, name, &mut stats)
                    .map_err(|source| DigestError::Io {
                        path: dir.disk.join(OsStr::from_bytes(name.as_bytes())),
                        source,
                    })?;
                done.push((std::mem::take(key), h));
            }
            self.push(done, stats);
            Ok(())
        };
        // Enough tasks to keep every thread busy (a directory of a few large
        // files hashes them one per task), few enough to be cheap.
        let per_task =
            (files.len() / (4 * rayon::current_num_threads())).clamp(1, MAX_FILES_PER_TASK);
        files.par_chunks_mut(per_task).try_for_each(hash_some)
    }

    fn hash_at(
        &self,
        dir: &DirNode,
        name: &CStr,
        stats: &mut Vec<(StatKey, HashDict)>,
    ) -> io::Result<HashDict> {
        if let Some(reuse) = &self.reuse {
            if let Ok(st) = fstatat(&dir.fd, name, AtFlags::empty()) {
                if let Some(h) = reuse.lookup(&st) {
                    return Ok(h);
                }
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&dir.fd, name, flags, Mode::empty())?;
        self.hash_open(
            &mut File::from(fd),
            stats,
            dir.fs.short_read_is_eof,
            dir.trust_dev(),
        )
    }

    /// Hashes an open file, noting its identity if the walk remembers.
    ///
    /// Only a file on `trust_dev` (a file system whose stat shows every
    /// write, see [`FsTraits`]), last changed before the cache's trust
    /// horizon, with no dirty page before it is read is remembered. A page
    /// already dirty through a shared mapping can be written again without
    /// the kernel noticing (so without moving ctime) until it is written
    /// back; a clean page must fault first, and that moves ctime. The stat
    /// is taken before the read: any write after it moves ctime, so the
    /// "after" snapshot then hashes the file again.
    fn hash_open(
        &self,
        f: &mut File,
        stats: &mut Vec<(StatKey, HashDict)>,
        short_read_is_eof: bool,
        trust_dev: Option<u64>,
    ) -> io::Result<HashDict> {
        // Fresh files (an unpacked package) are not asked about their pages:
        // their ctime alone rules them out.
        let remembered = match (self.remember, trust_dev) {
            (Some(cache), Some(dev)) => nix::sys::stat::fstat(&*f)
                .ok()
                .map(|st| StatKey::of(&st))
                .filter(|k| k.dev == dev && cache.trusted(k))
                .filter(|_| crate::sandbox::pagecache::page_cache_is_clean(f.as_fd())),
            _ => None,
        };
        let (algs, eol) = (&self.opts.algorithms, self.opts.normalize_line_endings);
        let h = hash_reader(f, algs, eol, short_read_is_eof)?;
        if let Some(k) = remembered {
            stats.push((k, h.clone()));
        }
        Ok(h)
    }
}

/// `normpath(parent + "/" + name)` for a name read from a directory (never
/// empty, never containing `/`), without the general case's allocations.
fn child_key(parent: &str, name: &str) -> String {
    if matches!(name, "." | "..") || matches!(parent, "." | "") || parent.ends_with('/') {
        return normpath(&format!("{parent}/{name}"));
    }
    let mut k = String::with_capacity(parent.len() + 1 + name.len());
    k.push_str(parent);
    k.push('/');
    k.push_str(name);
    k
}

fn type_of(st: &FileStat) -> Type {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Type::Directory,
        SFlag::S_IFREG => Type::File,
        SFlag::S_IFLNK => Type::Symlink,
        _ => Type::Fifo,
    }
}

/// Opens a directory (relative to `parent` if given). An entry that was a
/// real directory when listed is opened without following a symlink.
fn open_dir(parent: Option<&OwnedFd>, name: &[u8], follow: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let name = OsStr::from_bytes(name);
    match parent {
        Some(p) => nix::fcntl::openat(p, name, flags, Mode::empty()),
        None => nix::fcntl::open(name, flags, Mode::empty()),
    }
}

/// Opens `key` (a path below `root`) for reading with every symlink resolved
/// beneath the root: `EXDEV` if it leads outside. Non-blocking, so a link to
/// a FIFO inside does not hang the walk.
fn open_beneath(root: &Root, key: &str) -> Result<OwnedFd, Errno> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(&root.fd, OsStr::new(root.relative(key)), how)
}

/// A directory's entries (without `.` and `..`) with their types where the
/// file system gives them (`None`: ask `fstatat`).
fn read_dir_fd(fd: &OwnedFd) -> Result<Vec<(CString, Option<Type>)>, Errno> {
    let dup = fd
        .try_clone()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EBADF)))?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        out.push((name.to_owned(), e.file_type()));
    }
    Ok(out)
}

/// Read size: large enough that system calls do not show on big files, small
/// enough that a thread's buffer is cheap to fault in (most files are small).
const CHUNK: usize = 1 << 17;

/// Streams one file through every requested hash.
pub fn hash_file(path: &Path, algs: &[HashAlg], normalize_eol: bool) -> io::Result<HashDict> {
    hash_reader(&mut File::open(path)?, algs, normalize_eol, false)
}

/// What a walk may assume of the file system a directory is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FsTraits {
    /// A short read from a regular file means end of file, so the read
    /// that would return 0 can be skipped (one system call of four per
    /// small file). True on local disk and memory file systems, whose reads
    /// are served from the page cache up to the file's size and are cut
    /// short otherwise only by a fatal signal. Not assumed elsewhere: a FUSE
    /// server, a network file system or a /proc file may return less before
    /// the end.
    short_read_is_eof: bool,
    /// Every change to a file's content moves its ctime, including a write
    /// through a shared mapping (the page fault that makes a clean page
    /// writable updates the times), so a [`StatCache`] may trust an unchanged
    /// stat for a file whose pages were clean when it was read. Local disk
    /// file systems only: not tmpfs (writes through a mapping never update
    /// the times there), not overlayfs (the pages are the upper file's, so
    /// `cachestat` on the overlay file sees none), not network or FUSE file
    /// systems (attributes may be cached, or changed by another client).
    stat_shows_writes: bool,
}

fn fs_traits(dir: &OwnedFd) -> FsTraits {
    use nix::sys::statfs::{
        fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, TMPFS_MAGIC,
        XFS_SUPER_MAGIC,
    };
    // ext2, ext3 and ext4 share one magic number.
    let disk = [
        EXT4_SUPER_MAGIC,
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        F2FS_SUPER_MAGIC,
    ];
    match fstatfs(dir).map(|s| s.filesystem_type()) {
        Ok(t) if disk.contains(&t) => FsTraits {
            short_read_is_eof: true,
            stat_shows_writes: true,
        },
        Ok(t) if t == TMPFS_MAGIC => FsTraits {
            short_read_is_eof: true,
            stat_shows_writes: false,
        },
        _ => FsTraits {
            short_read_is_eof: false,
            stat_shows_writes: false,
        },
    }
}

/// Streams `f` through every requested hash, reading into a per-thread
/// buffer (a fresh 1 MiB buffer per file would cost an mmap/munmap pair
/// each, which dominates on small files).
fn hash_reader(
    f: &mut File,
    algs: &[HashAlg],
    normalize_eol: bool,
    short_read_is_eof: bool,
) -> io::Result<HashDict> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
    }
    BUF.with(|buf| {
        let buf = &mut buf.borrow_mut();
        hash_reader_with(f, algs, normalize_eol, short_read_is_eof, buf)
    })
}

fn hash_reader_with(
    f: &mut File,
    algs: &[HashAlg],
    normalize_eol: bool,
    short_read_is_eof: bool,
    buf: &mut [u8],
) -> io::Result<HashDict> {
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
        if short_read_is_eof && n < buf.len() {
            break;
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
    let mut out = match s256 {
        Some(h) => HashDict::sha256(h.finalize().into()),
        None => HashDict::new(),
    };
    if let Some(h) = s512 {
        out.insert("sha512".into(), to_hex(&h.finalize()));
    }
    Ok(out)
}

/// Lowercase hex, without `hex::encode`'s char-by-char string building (it
/// shows in profiles at tens of thousands of files).
fn to_hex(digest: &[u8]) -> String {
    let mut buf = vec![0u8; digest.len() * 2];
    hex::encode_to_slice(digest, &mut buf).expect("buffer is twice the input");
    String::from_utf8(buf).expect("hex is ASCII")
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
    use std::collections::BTreeMap;

    /// The literal-piece shortcut never clears a name the matcher excludes.
    #[test]
    fn excluder_shortcut_agrees_with_the_matcher() {
        let names = [
            "a.link",
            "x.linkfoo",
            "step.abcd1234.link",
            ".link",
            "link",
            "a.lin",
            ".git",
            "a.git",
            ".gitx",
            "x.pyc",
            "pyc",
            "x.pyc.bak",
            "b~",
            "~",
            "~b",
            "dir/a.link",
            "dir/link",
            "d.link/x",
            "tar.gz",
            "a.tar.gz",
            "abc",
            "acb",
            "a*b",
            "é.link",
            "x y",
        ];
        let sets: [&[&str]; 6] = [
            &DEFAULT_EXCLUDES,
            &["*"],
            &["*.tar.*", "a*b*c"],
            &["abc", "*~"],
            &["dir/*", "*.link"],
            &["[ab]*", "!x.pyc", "*.pyc"],
        ];
        for set in sets {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            let ex = Excluder::new(&set).unwrap();
            let exact = Excluder {
                pieces: None,
                ..Excluder::new(&set).unwrap()
            };
            assert_eq!(
                ex.pieces.is_some(),
                !set.iter().any(|p| p.contains(['/', '[', '!'])),
                "{set:?}"
            );
            for name in names {
                for is_dir in [false, true] {
                    assert_eq!(
                        ex.excluded_child(name, is_dir),
                        exact.excluded_child(name, is_dir),
                        "{name} under {set:?}"
                    );
                }
            }
        }
        let ex = Excluder::new(&DEFAULT_EXCLUDES.map(String::from)).unwrap();
        assert!(ex.excluded_child("src/a.link", false));
        assert!(!ex.excluded_child("src/a.lin", false));
    }

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
        // `old` has been written back, `fresh` still has dirty pages: only
        // `old` can be remembered (on a disk file system; on tmpfs nothing).
        std::fs::File::open(&old).unwrap().sync_all().unwrap();
        let (first, _) = record_cached(&[".".into()], &opts, None, Some(&cache)).unwrap();
        let on_disk = fs_traits(&open_dir(None, d.path().as_os_str().as_bytes(), true).unwrap())
            .stat_shows_writes;
        assert_eq!(cache.len(), usize::from(on_disk));
        // A rewrite moves ctime, so the cached hash is not reused.
        std::fs::write(&old, b"c").unwrap();
        let (second, _) = record_cached(&[".".into()], &opts, Some(&cache), None).unwrap();
        assert_ne!(first["old"], second["old"]);
        assert_eq!(
            second["old"].get("sha256").unwrap(),
            hex::encode(Sha256::digest(b"c"))
        );
        // With a cache that trusts nothing, nothing is remembered.
        let strict = StatCache {
            trusted_before: 0,
            ..StatCache::default()
        };
        record_cached(&[".".into()], &opts, None, Some(&strict)).unwrap();
        assert!(strict.entries.lock().unwrap().is_empty());
    }

    /// The parallel walk against one file at a time: many files in one
    /// directory (split into tasks), a few in another, nested directories.
    #[test]
    fn parallel_walk_equals_hashing_each_file() {
        let d = tempfile::tempdir().unwrap();
        let mut expected = BTreeMap::new();
        // `many/f1.d/*` sort between `many/f1` and `many/f10`: chunks of
        // different directories overlap, and the result must still be in
        // name order.
        for (dir, n) in [
            ("many", 300),
            ("few", 3),
            ("few/deeper/still", 2),
            ("many/f1.d", 2),
        ] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
            for i in 0..n {
                let rel = format!("{dir}/f{i}");
                let body = format!("{rel} {}", "x".repeat(i * 37));
                std::fs::write(d.path().join(&rel), &body).unwrap();
                expected.insert(rel, hex::encode(Sha256::digest(body.as_bytes())));
            }
        }
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        assert_eq!(recorded(&opts, "sha256"), expected);
        let (m, _) = record(&[".".into()], &opts).unwrap();
        assert!(m.keys().eq(expected.keys()), "artifacts out of name order");
    }

    /// A file reached through two of the given paths (`d` and `d/a`) is one
    /// artifact, as in the reference's dict.
    #[test]
    fn a_file_given_twice_is_one_artifact() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("d")).unwrap();
        std::fs::write(d.path().join("d/a"), "a").unwrap();
        std::fs::write(d.path().join("d/b"), "b").unwrap();
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let given = [
            "d".to_string(),
            "d/a".to_string(),
            "d/b".to_string(),
            "d".to_string(),
        ];
        let (m, _) = record(&given, &opts).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["d/a", "d/b"]);
        assert_eq!(m["d/a"], HashDict::sha256(Sha256::digest(b"a").into()));
    }

    /// `record` of `.` under `opts`: artifact name → its `alg` digest.
    fn recorded(opts: &RecordOptions, alg: &str) -> BTreeMap<String, String> {
        let (m, _) = record(&[".".into()], opts).unwrap();
        m.iter()
            .map(|(k, h)| (k.clone(), h.get(alg).unwrap().to_string()))
            .collect()
    }

    /// A `\\` in a name is recorded as `/` (the reference's `_mangle`), in
    /// walked names and given ones; two files that end up under one name are
    /// refused, the same file reached twice is not.
    #[test]
    fn backslashes_are_recorded_as_slashes_and_collisions_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dir\\x")).unwrap();
        std::fs::write(d.path().join("a\\evil"), b"e").unwrap();
        std::fs::write(d.path().join("dir\\x/f"), b"f").unwrap();
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let (m, _) = record(&[".".into(), "a\\evil".into()], &opts).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a/evil", "dir/x/f"]);
        let with_prefix = record(&["file:a\\evil".into()], &opts).unwrap().0;
        assert_eq!(with_prefix.keys().collect::<Vec<_>>(), ["file:a/evil"]);
        // A real `a/evil` as well: two files, one name.
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/evil"), b"real").unwrap();
        let err = record(&[".".into()], &opts).unwrap_err();
        match err {
            DigestError::NameCollision {
                name,
                first,
                second,
            } => {
                assert_eq!(name, "a/evil");
                assert_eq!(
                    [first, second],
                    ["a/evil".to_string(), "a\\evil".to_string()]
                );
            }
            e => panic!("{e}"),
        }
    }

    /// Sizes around the read size: a file that fills the buffer exactly must
    /// still be read on to its end, whether or not short reads are trusted.
    #[test]
    fn files_around_the_read_size_hash_whole() {
        let d = tempfile::tempdir().unwrap();
        let mut expected = BTreeMap::new();
        for (i, size) in [0, 1, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]
            .into_iter()
            .enumerate()
        {
            let body: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
            let name = format!("f{size}");
            std::fs::write(d.path().join(&name), &body).unwrap();
            expected.insert(name, hex::encode(Sha512::digest(&body)));
        }
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            algorithms: vec![HashAlg::Sha512],
            ..Default::default()
        };
        assert_eq!(recorded(&opts, "sha512"), expected);
        // /proc files return less than asked before their end, and their
        // stat says nothing about their content.
        let proc = open_dir(None, b"/proc/self", true).unwrap();
        assert_eq!(
            fs_traits(&proc),
            FsTraits {
                short_read_is_eof: false,
                stat_shows_writes: false
            }
        );
    }

    /// The same sizes around a small buffer, with short reads trusted,
    /// whatever file system the test runs on: a read that fills the buffer
    /// is never taken for the end.
    #[test]
    fn trusting_short_reads_still_reads_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let mut buf = [0u8; 64];
        for size in [0, 1, 63, 64, 65, 128, 200] {
            let body: Vec<u8> = (0..size).map(|j| (j * 13) as u8).collect();
            let path = d.path().join(format!("f{size}"));
            std::fs::write(&path, &body).unwrap();
            let mut f = File::open(&path).unwrap();
            let h = hash_reader_with(&mut f, &[HashAlg::Sha256], false, true, &mut buf).unwrap();
            assert_eq!(
                h.get("sha256").unwrap(),
                hex::encode(Sha256::digest(&body)),
                "{size} bytes"
            );
        }
    }

    #[test]
    fn symlink_loops_are_skipped_and_linked_dirs_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"f").unwrap();
        std::os::unix::fs::symlink("..", d.path().join("a/b/up")).unwrap();
        std::os::unix::fs::symlink("a/b", d.path().join("ab")).unwrap();
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let (m, _) = record(&[".".into()], &opts).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a/b/f", "ab/f"]);
    }

    #[test]
    fn confined_links_resolve_beneath_the_root_or_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"f").unwrap();
        std::os::unix::fs::symlink("../a/b/f", d.path().join("a/inside")).unwrap();
        std::os::unix::fs::symlink("a/b", d.path().join("ab")).unwrap();
        std::os::unix::fs::symlink("nowhere", d.path().join("broken")).unwrap();
        let mut opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            confine_links: true,
            ..Default::default()
        };
        let (m, _) = record(&[".".into()], &opts).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a/b/f", "a/inside", "ab/f"]);
        assert_eq!(m["a/inside"], m["a/b/f"]);
        // Out of the root: an absolute link, a relative one, a directory.
        for (name, target) in [
            ("abs", "/etc/hostname"),
            ("rel", "../../../../../../../../etc/hostname"),
            ("root", "/"),
        ] {
            let link = d.path().join("a/b").join(name);
            std::os::unix::fs::symlink(target, &link).unwrap();
            match record(&[".".into()], &opts) {
                Err(DigestError::LinkEscapes(p)) => assert_eq!(p.file_name(), link.file_name()),
                other => panic!("{target}: expected LinkEscapes, got {other:?}"),
            }
            std::fs::remove_file(&link).unwrap();
        }
        // Unconfined (`run`, as in-toto-run), the absolute link is followed.
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("abs")).unwrap();
        opts.confine_links = false;
        let (m, _) = record(&[".".into()], &opts).unwrap();
        assert!(m.contains_key("abs"));
    }

    #[test]
    fn a_name_that_is_not_utf8_is_an_error_naming_it() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join(std::ffi::OsStr::from_bytes(b"bad\xff"));
        std::fs::write(&bad, b"x").unwrap();
        let opts = RecordOptions {
            base_path: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        match record(&[".".into()], &opts) {
            Err(DigestError::NonUtf8(p)) => assert_eq!(p.file_name(), bad.file_name()),
            other => panic!("expected NonUtf8, got {other:?}"),
        }
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
            m["a.txt"].get("sha256").unwrap(),
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
        assert_eq!(notes.skipped_missing, ["missing"]);
        let err = record(&["src".into(), "src".into()], &opts).unwrap_err();
        assert!(matches!(err, DigestError::PrefixCollision(_)));
    }
}
