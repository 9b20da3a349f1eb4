//! `.zip` / `.whl`: stored and deflate members. Symlinks (unix mode
//! `S_IFLNK` in the external attributes) are refused: wheels never need them,
//! and a zip symlink is exactly how zip extraction escapes get built.

use std::fs::File;
use std::path::Path;

use ::zip::ZipArchive;

use super::meter::{CountOut, Meter};
use super::sink::{check_path, Sink};
use super::{Location, UnpackError};

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

pub(crate) fn unpack(package: &Path, sink: &mut Sink) -> Result<(), UnpackError> {
    let at = Location::archive(package);
    let limits = sink.limits();
    let file = File::open(package).map_err(|source| UnpackError::Open {
        archive: package.to_path_buf(),
        source,
    })?;
    let mut zip = ZipArchive::new(file).map_err(|source| UnpackError::Zip {
        at: at.clone(),
        source,
    })?;
    if zip.len() as u64 > limits.max_entries {
        return Err(UnpackError::TooManyEntries {
            at,
            limit: limits.max_entries,
        });
    }
    // The zip crate keys members by name, so a name listed twice in the
    // central directory is only visible as this flag.
    if zip.has_duplicate_names() {
        return Err(UnpackError::ZipDuplicateNames {
            archive: package.to_path_buf(),
        });
    }
    for i in 0..zip.len() {
        let listed = match zip.name_for_index(i) {
            Some(Ok(n)) => at.member(&n),
            _ => at.clone(),
        };
        let mut zf = zip
            .by_index(i)
            .map_err(|source| UnpackError::Zip { at: listed, source })?;
        let name = std::str::from_utf8(zf.name_raw())
            .map_err(|_| UnpackError::NonUtf8 {
                at: at.member(&String::from_utf8_lossy(zf.name_raw())),
            })?
            .to_owned();
        let here = at.member(&name);
        sink.count_entry(&here)?;
        if zf.encrypted() {
            return Err(UnpackError::Encrypted { at: here });
        }
        let mode = zf.unix_mode().unwrap_or(0);
        let is_dir = match mode & S_IFMT {
            0 => name.ends_with('/'),
            S_IFDIR => true,
            S_IFREG => false,
            S_IFLNK => return Err(UnpackError::ZipSymlink { at: here }),
            other => {
                return Err(UnpackError::SpecialFile {
                    at: here,
                    kind: special_kind(other),
                })
            }
        };
        let rel = check_path(&here, &name, limits)?;
        if is_dir {
            sink.dir(&here, &rel)?;
            continue;
        }
        // The zip reader hands the inflater at most `compressed_size` bytes,
        // so the declared size is an honest denominator for the ratio.
        let meter = Meter::with_compressed(limits.max_ratio, zf.compressed_size());
        let declared = zf.size();
        let mut out = CountOut {
            inner: &mut zf,
            meter: meter.clone(),
        };
        sink.file(&here, &rel, mode, declared, &mut out, &meter)?;
    }
    Ok(())
}

fn special_kind(fmt: u32) -> &'static str {
    match fmt {
        0o020000 => "character device",
        0o060000 => "block device",
        0o010000 => "fifo",
        0o140000 => "socket",
        _ => "file of unknown type",
    }
}
