//! Safe extraction of package archives into a fresh directory.
//!
//! Formats: `.deb` (ar with `debian-binary`, `control.tar{,.gz,.xz,.zst}`,
//! `data.tar{,.gz,.xz,.zst,.bz2}`, laid out as `dpkg-deb -R` does: data at its
//! install paths, control members under `DEBIAN/`), `.crate` (a gzip tar whose
//! entries all live under `name-version/`), `.tar{,.gz,.xz,.zst,.bz2}`/`.tgz`,
//! and `.zip`/`.whl` (stored and deflate members).
//!
//! The archive is hostile until proven otherwise. Every member path is
//! normalised lexically and refused if it is absolute, has a `..` component,
//! or is too long or deep; symlinks may not point outside the destination,
//! hardlinks may only point at regular files extracted earlier from the same
//! archive, device nodes, fifos and sockets are refused, and so is a path seen
//! twice. Writing never follows a symlink: every parent directory is created
//! here and checked with `symlink_metadata`, and files are created with
//! `O_EXCL`. Setuid, setgid and sticky bits are dropped, ownership is never
//! changed. Size, entry count and compression ratio are capped by [`Limits`].
//!
//! Nothing outside `dest` is created or changed, even when extraction fails
//! half-way; on error the caller deletes `dest`.
//!
//! Not supported: GNU sparse tar members, `data.tar.lzma`, encrypted or
//! non-deflate zip members, zip symlinks (refused), absolute symlinks (refused,
//! although real `.deb`s sometimes ship them).

mod deb;
mod meter;
mod path;
mod sink;
mod tar;
mod zip;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Caps on what one archive may make us do. Each one names the attack it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Disk-filling bombs: the sum of all extracted file sizes may not exceed
    /// this (2 GiB by default, above any package we expect to verify).
    pub max_total_bytes: u64,
    /// Entry-count bombs (inode exhaustion, quadratic bookkeeping): at most
    /// this many members, counting directories and links (100,000 by default).
    pub max_entries: u64,
    /// Long-path attacks on later tools (`PATH_MAX` overflows, log flooding):
    /// a member path may be at most this many bytes (4096, Linux `PATH_MAX`).
    pub max_path_len: usize,
    /// Deep-nesting attacks (recursive walkers overflowing their stack, fd
    /// exhaustion): a member path may have at most this many components (64).
    pub max_depth: usize,
    /// Compression bombs: decompressed bytes per compressed byte read, checked
    /// as data streams (200 by default; text compresses about 5:1, a deflate
    /// stream of zeros about 1000:1). The check only applies once a stream
    /// has produced [`RATIO_FLOOR`] bytes, since tiny archives of tar headers
    /// and padding legitimately compress better than that.
    pub max_ratio: u64,
}

/// Below this many decompressed bytes in one stream the ratio is not checked:
/// a small tar is mostly zero padding and can compress over 200:1.
pub const RATIO_FLOOR: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 2 << 30,
            max_entries: 100_000,
            max_path_len: 4096,
            max_depth: 64,
            max_ratio: 200,
        }
    }
}

/// The compression around a tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
}

impl Compression {
    fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
            Compression::Bzip2 => ".bz2",
        }
    }
}

/// What kind of package archive a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Deb,
    Crate,
    Tar(Compression),
    Zip,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Format::Deb => f.write_str("a .deb (ar archive)"),
            Format::Crate => f.write_str("a .crate (gzip tar)"),
            Format::Tar(c) => write!(f, "a .tar{}", c.suffix()),
            Format::Zip => f.write_str("a zip archive"),
        }
    }
}

/// What [`unpack`] extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub format: Format,
    /// Members extracted (files, directories, links; `.deb` control members included).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// `.deb`: the control file's `Package:`; `.crate`: from the `name-version/` directory.
    pub name: Option<String>,
    /// `.deb`: the control file's `Version:`; `.crate`: from the `name-version/` directory.
    pub version: Option<String>,
}

/// Where in a package a problem is: the archive, the inner part (`data.tar.xz`
/// of a `.deb`), and the member as the archive spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub archive: PathBuf,
    pub part: Option<String>,
    pub member: Option<String>,
}

impl Location {
    fn archive(archive: &Path) -> Location {
        Location {
            archive: archive.to_path_buf(),
            part: None,
            member: None,
        }
    }
    fn part(&self, part: &str) -> Location {
        Location {
            archive: self.archive.clone(),
            part: Some(part.to_owned()),
            member: None,
        }
    }
    fn member(&self, member: &str) -> Location {
        Location {
            archive: self.archive.clone(),
            part: self.part.clone(),
            member: Some(member.to_owned()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.archive.display())?;
        match (&self.part, &self.member) {
            (Some(p), Some(m)) => write!(f, ": {p} member `{}`", m.escape_debug()),
            (Some(p), None) => write!(f, ": {p}"),
            (None, Some(m)) => write!(f, ": member `{}`", m.escape_debug()),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{archive}: cannot read: {source}")]
    Open { archive: PathBuf, source: io::Error },
    #[error("{archive}: not a package archive we know (starts with {magic})")]
    UnknownFormat { archive: PathBuf, magic: String },
    #[error("{archive}: named `.{extension}` but its magic bytes say it is {found}")]
    ExtensionMismatch {
        archive: PathBuf,
        extension: String,
        found: Format,
    },
    #[error("{at}: archive is truncated")]
    Truncated { at: Location },
    #[error("{at}: archive is corrupt: {source}")]
    Corrupt { at: Location, source: io::Error },
    #[error("{at}: not a readable zip archive: {source}")]
    Zip {
        at: Location,
        source: ::zip::result::ZipError,
    },
    #[error("{archive}: zip central directory names the same member twice")]
    ZipDuplicateNames { archive: PathBuf },
    #[error("{at}: member name is not UTF-8")]
    NonUtf8 { at: Location },
    #[error("{at}: member name is empty")]
    EmptyPath { at: Location },
    #[error("{at}: absolute path")]
    AbsolutePath { at: Location },
    #[error("{at}: path escapes the package root (`..` component)")]
    PathEscape { at: Location },
    #[error("{at}: path is {len} bytes long, the limit is {limit}")]
    PathTooLong {
        at: Location,
        len: usize,
        limit: usize,
    },
    #[error("{at}: path is {depth} directories deep, the limit is {limit}")]
    PathTooDeep {
        at: Location,
        depth: usize,
        limit: usize,
    },
    #[error("{at}: the same path appears twice in the package")]
    Duplicate { at: Location },
    #[error("{at}: symlink to absolute path `{}`", target.escape_debug())]
    SymlinkAbsolute { at: Location, target: String },
    #[error("{at}: symlink target `{}` resolves outside the package root", target.escape_debug())]
    SymlinkEscape { at: Location, target: String },
    #[error("{at}: hardlink target `{}` is outside the package root", target.escape_debug())]
    HardlinkEscape { at: Location, target: String },
    #[error("{at}: hardlink target `{}` is not a regular file extracted earlier", target.escape_debug())]
    HardlinkTarget { at: Location, target: String },
    #[error("{at}: link without a target")]
    MissingLinkTarget { at: Location },
    #[error("{at}: is a {kind}; device nodes, fifos and sockets are refused")]
    SpecialFile { at: Location, kind: &'static str },
    #[error("{at}: unsupported tar entry type {type_byte:?}")]
    UnsupportedType { at: Location, type_byte: char },
    #[error("{at}: is a symlink; symlinks in zip archives are refused")]
    ZipSymlink { at: Location },
    #[error("{at}: is encrypted")]
    Encrypted { at: Location },
    #[error("{at}: `{}` is already there and is not a directory (refusing to write through it)", component.escape_debug())]
    NotADirectory { at: Location, component: String },
    #[error("{at}: more than {limit} entries (entry-count bomb?)")]
    TooManyEntries { at: Location, limit: u64 },
    #[error("{at}: extracted content exceeds {limit} bytes (disk-filling bomb?)")]
    TooManyBytes { at: Location, limit: u64 },
    #[error("{at}: decompresses more than {limit}:1 (compression bomb?)")]
    RatioExceeded { at: Location, limit: u64 },
    #[error("{at}: not under the crate directory `{expected}/`")]
    OutsideCrateDir { at: Location, expected: String },
    #[error("{at}: crate directory is not `name-version`")]
    BadCrateDir { at: Location },
    #[error("{archive}: .deb member `{}`: {problem}", member.escape_debug())]
    DebMember {
        archive: PathBuf,
        member: String,
        problem: &'static str,
    },
    #[error("{archive}: .deb has no {missing} member")]
    DebMissing {
        archive: PathBuf,
        missing: &'static str,
    },
    #[error("{at}: cannot write {path}: {source}")]
    Write {
        at: Location,
        path: PathBuf,
        source: io::Error,
    },
}

/// Which archive format `path` is, by its magic bytes. The extension only
/// tells a `.crate` from a `.tar.gz`, and, when it is a package extension we
/// know, must agree with the magic (a `.deb` that is really a zip is refused).
pub fn detect(path: &Path) -> Result<Format, UnpackError> {
    let open = |source| UnpackError::Open {
        archive: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(512);
    File::open(path)
        .map_err(open)?
        .take(512)
        .read_to_end(&mut head)
        .map_err(open)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let found = if head.starts_with(b"!<arch>\n") {
        Format::Deb
    } else if head.starts_with(&[0x1f, 0x8b]) {
        if ext == "crate" {
            Format::Crate
        } else {
            Format::Tar(Compression::Gzip)
        }
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Format::Tar(Compression::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Tar(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Format::Tar(Compression::Bzip2)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Format::Tar(Compression::None)
    } else {
        let n = head.len().min(8);
        return Err(UnpackError::UnknownFormat {
            archive: path.to_path_buf(),
            magic: if n == 0 {
                "nothing (empty file)".into()
            } else {
                format!("bytes {}", hex::encode(&head[..n]))
            },
        });
    };
    let expected = match ext.as_str() {
        "deb" | "udeb" => Some(Format::Deb),
        "crate" => Some(Format::Crate),
        "zip" | "whl" | "jar" => Some(Format::Zip),
        "tgz" | "gz" => Some(Format::Tar(Compression::Gzip)),
        "xz" | "txz" => Some(Format::Tar(Compression::Xz)),
        "zst" | "tzst" => Some(Format::Tar(Compression::Zstd)),
        "bz2" | "tbz2" => Some(Format::Tar(Compression::Bzip2)),
        "tar" => Some(Format::Tar(Compression::None)),
        _ => None,
    };
    match expected {
        Some(e) if e != found => Err(UnpackError::ExtensionMismatch {
            archive: path.to_path_buf(),
            extension: ext,
            found,
        }),
        _ => Ok(found),
    }
}

/// Extracts `package` into `dest` (created if missing) within `limits`.
///
/// On error `dest` may hold part of the package and the caller should delete
/// it; nothing outside `dest` has been touched.
pub fn unpack(package: &Path, dest: &Path, limits: &Limits) -> Result<Unpacked, UnpackError> {
    let format = detect(package)?;
    let at = Location::archive(package);
    std::fs::create_dir_all(dest).map_err(|source| UnpackError::Write {
        at: at.clone(),
        path: dest.to_path_buf(),
        source,
    })?;
    let mut sink = sink::Sink::new(dest, limits);
    let open = |source| UnpackError::Open {
        archive: package.to_path_buf(),
        source,
    };
    let (name, version) = match format {
        Format::Deb => deb::unpack(package, &mut sink)?,
        Format::Crate => {
            let file = File::open(package).map_err(open)?;
            let dir =
                tar::unpack_stream(file, Compression::Gzip, tar::Role::Crate, &at, &mut sink)?;
            match dir {
                Some(d) => match path::split_crate_dir(&d) {
                    Some((n, v)) => (Some(n.to_owned()), Some(v.to_owned())),
                    None => return Err(UnpackError::BadCrateDir { at: at.member(&d) }),
                },
                None => (None, None),
            }
        }
        Format::Tar(c) => {
            let file = File::open(package).map_err(open)?;
            tar::unpack_stream(file, c, tar::Role::Plain, &at, &mut sink)?;
            (None, None)
        }
        Format::Zip => {
            zip::unpack(package, &mut sink)?;
            (None, None)
        }
    };
    Ok(Unpacked {
        format,
        entries: sink.entries(),
        bytes: sink.bytes(),
        name,
        version,
    })
}
