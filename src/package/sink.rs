//! Writes checked members under the destination without ever following a
//! symlink, and keeps the per-package budgets (entries, bytes, seen paths).

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::meter::Meter;
use super::path::{self, LinkProblem};
use super::{Limits, Location, UnpackError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

pub(crate) struct Sink<'a> {
    dest: PathBuf,
    limits: &'a Limits,
    entries: u64,
    bytes: u64,
    /// Every normalised path a member has claimed, and what it became.
    seen: HashMap<String, Kind>,
    /// Directories checked (or made) to be real directories. Nothing is ever
    /// removed or replaced, so a checked directory stays one.
    real_dirs: HashSet<String>,
    buf: Vec<u8>,
}

/// Maps a read error from the archive stream: the ratio limit first (the
/// meter knows it fired), then truncation, then plain corruption.
pub(crate) fn read_error(
    at: &Location,
    meter: &Meter,
    limits: &Limits,
    e: io::Error,
) -> UnpackError {
    if meter.tripped() {
        UnpackError::RatioExceeded {
            at: at.clone(),
            limit: limits.max_ratio,
        }
    } else if e.kind() == io::ErrorKind::UnexpectedEof || meter.input_eof() {
        UnpackError::Truncated { at: at.clone() }
    } else {
        UnpackError::Corrupt {
            at: at.clone(),
            source: e,
        }
    }
}

/// Turns a member name into a checked relative path, or the error naming it.
pub(crate) fn check_path(at: &Location, raw: &str, limits: &Limits) -> Result<String, UnpackError> {
    use path::PathProblem as P;
    path::normalise(raw, limits).map_err(|p| match p {
        P::Empty => UnpackError::EmptyPath { at: at.clone() },
        P::Absolute => UnpackError::AbsolutePath { at: at.clone() },
        P::DotDot => UnpackError::PathEscape { at: at.clone() },
        P::TooLong(len) => UnpackError::PathTooLong {
            at: at.clone(),
            len,
            limit: limits.max_path_len,
        },
        P::TooDeep(depth) => UnpackError::PathTooDeep {
            at: at.clone(),
            depth,
            limit: limits.max_depth,
        },
    })
}

/// Regular files keep only "executable or not": 0o755 or 0o644, never
/// setuid, setgid, sticky or world-writable.
fn file_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

impl<'a> Sink<'a> {
    pub(crate) fn new(dest: &Path, limits: &'a Limits) -> Sink<'a> {
        Sink {
            dest: dest.to_path_buf(),
            limits,
            entries: 0,
            bytes: 0,
            seen: HashMap::new(),
            real_dirs: HashSet::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    pub(crate) fn limits(&self) -> &'a Limits {
        self.limits
    }
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
    pub(crate) fn dest(&self) -> &Path {
        &self.dest
    }

    /// Counts one archive member against `max_entries`.
    pub(crate) fn count_entry(&mut self, at: &Location) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                at: at.clone(),
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn claim(&mut self, at: &Location, rel: &str, kind: Kind) -> Result<(), UnpackError> {
        if rel.is_empty() {
            return Err(UnpackError::EmptyPath { at: at.clone() });
        }
        if self.seen.insert(rel.to_owned(), kind).is_some() {
            return Err(UnpackError::Duplicate { at: at.clone() });
        }
        Ok(())
    }

    fn write_err(&self, at: &Location, rel: &str, source: io::Error) -> UnpackError {
        UnpackError::Write {
            at: at.clone(),
            path: self.dest.join(rel),
            source,
        }
    }

    /// Makes `rel` and its parents real directories, refusing anything in
    /// the way (a symlink, a file) rather than following it.
    fn ensure_dirs(&mut self, at: &Location, rel: &str) -> Result<(), UnpackError> {
        let mut cur = String::with_capacity(rel.len());
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(comp);
            if self.real_dirs.contains(&cur) {
                continue;
            }
            let p = self.dest.join(&cur);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::NotADirectory {
                        at: at.clone(),
                        component: cur,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Non-recursive, and fails if anything appeared meanwhile.
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&p)
                        .map_err(|e| self.write_err(at, &cur, e))?;
                }
                Err(e) => return Err(self.write_err(at, &cur, e)),
            }
            self.real_dirs.insert(cur.clone());
        }
        Ok(())
    }

    fn ensure_parents(&mut self, at: &Location, rel: &str) -> Result<(), UnpackError> {
        match rel.rsplit_once('/') {
            Some((parent, _)) => self.ensure_dirs(at, parent),
            None => Ok(()),
        }
    }

    /// A directory member. The package root itself (`./`) is accepted as is.
    pub(crate) fn dir(&mut self, at: &Location, rel: &str) -> Result<(), UnpackError> {
        if rel.is_empty() {
            return Ok(());
        }
        self.claim(at, rel, Kind::Dir)?;
        self.ensure_dirs(at, rel)
    }

    /// Makes a directory that is not a member (`DEBIAN/` of a `.deb`).
    pub(crate) fn implicit_dir(&mut self, at: &Location, rel: &str) -> Result<(), UnpackError> {
        self.ensure_dirs(at, rel)
    }

    /// A regular file: created with `O_EXCL` (a symlink already at `rel` is
    /// never written through), filled from `src` within the byte budget.
    pub(crate) fn file(
        &mut self,
        at: &Location,
        rel: &str,
        mode: u32,
        declared_size: u64,
        src: &mut dyn Read,
        meter: &Meter,
    ) -> Result<u64, UnpackError> {
        let limit = self.limits.max_total_bytes;
        let too_big = || UnpackError::TooManyBytes {
            at: at.clone(),
            limit,
        };
        if self.bytes.saturating_add(declared_size) > limit {
            return Err(too_big());
        }
        self.claim(at, rel, Kind::File)?;
        self.ensure_parents(at, rel)?;
        let p = self.dest.join(rel);
        // No fork may copy this descriptor while it is open: see `exec_lock`.
        let _writing = crate::exec_lock::writing();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| self.write_err(at, rel, e))?;
        let mut written = 0u64;
        loop {
            let n = match src.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(at, meter, self.limits, e)),
            };
            written += n as u64;
            self.bytes += n as u64;
            if self.bytes > limit {
                return Err(too_big());
            }
            f.write_all(&self.buf[..n])
                .map_err(|e| self.write_err(at, rel, e))?;
        }
        // On the open descriptor, so a symlink swapped in cannot redirect it.
        f.set_permissions(fs::Permissions::from_mode(file_mode(mode)))
            .map_err(|e| self.write_err(at, rel, e))?;
        Ok(written)
    }

    /// A symlink whose target must stay inside the root (see
    /// [`path::resolve_symlink`]). `symlink(2)` fails on an existing path.
    pub(crate) fn symlink(
        &mut self,
        at: &Location,
        rel: &str,
        target: &str,
    ) -> Result<(), UnpackError> {
        if target.len() > self.limits.max_path_len {
            return Err(UnpackError::PathTooLong {
                at: at.clone(),
                len: target.len(),
                limit: self.limits.max_path_len,
            });
        }
        path::resolve_symlink(rel, target).map_err(|p| match p {
            LinkProblem::Empty => UnpackError::MissingLinkTarget { at: at.clone() },
            LinkProblem::Absolute => UnpackError::SymlinkAbsolute {
                at: at.clone(),
                target: target.to_owned(),
            },
            LinkProblem::Escapes => UnpackError::SymlinkEscape {
                at: at.clone(),
                target: target.to_owned(),
            },
        })?;
        self.claim(at, rel, Kind::Symlink)?;
        self.ensure_parents(at, rel)?;
        std::os::unix::fs::symlink(target, self.dest.join(rel))
            .map_err(|e| self.write_err(at, rel, e))
    }

    /// A hardlink to `target` (normalised, from the root), which must be a
    /// regular file this package already extracted.
    pub(crate) fn hardlink(
        &mut self,
        at: &Location,
        rel: &str,
        target: &str,
    ) -> Result<(), UnpackError> {
        if self.seen.get(target) != Some(&Kind::File) {
            return Err(UnpackError::HardlinkTarget {
                at: at.clone(),
                target: target.to_owned(),
            });
        }
        self.claim(at, rel, Kind::File)?;
        self.ensure_parents(at, rel)?;
        // linkat(2) without AT_SYMLINK_FOLLOW: never follows a symlink.
        fs::hard_link(self.dest.join(target), self.dest.join(rel))
            .map_err(|e| self.write_err(at, rel, e))
    }

    /// Whether `rel` was extracted as a regular file (not a link to elsewhere).
    pub(crate) fn is_extracted_file(&self, rel: &str) -> bool {
        self.seen.get(rel) == Some(&Kind::File)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_writes_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        let outside = root.path().join("outside");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // A symlink planted in dest (as a previous member could).
        std::os::unix::fs::symlink(&outside, dest.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), dest.join("f")).unwrap();
        let limits = Limits::default();
        let mut sink = Sink::new(&dest, &limits);
        let at = Location::archive(Path::new("x.tar"));
        let meter = Meter::new(200);
        let err = sink
            .file(&at, "d/x", 0o644, 1, &mut &b"x"[..], &meter)
            .unwrap_err();
        assert!(matches!(err, UnpackError::NotADirectory { .. }), "{err}");
        let err = sink
            .file(&at, "f", 0o644, 1, &mut &b"x"[..], &meter)
            .unwrap_err();
        assert!(matches!(err, UnpackError::Write { .. }), "{err}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn modes_are_tamed() {
        assert_eq!(file_mode(0o4755), 0o755);
        assert_eq!(file_mode(0o2777), 0o755);
        assert_eq!(file_mode(0o1666), 0o644);
        assert_eq!(file_mode(0o000), 0o644);
    }
}
