//! One (possibly compressed) tar stream into the sink.

use std::io::{self, Read};
use std::rc::Rc;

use ::tar::{Archive, EntryType};

use super::meter::{CountIn, CountOut, Meter};
use super::sink::{check_path, read_error, Sink};
use super::{Compression, Location, UnpackError};

/// What the tar stream is, which decides where its members land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A `.tar.*`: members as they are.
    Plain,
    /// A `.crate`: every member under one `name-version/` directory.
    Crate,
    /// A `.deb`'s `control.tar*`: members under `DEBIAN/`, as `dpkg-deb -R`.
    DebControl,
    /// A `.deb`'s `data.tar*`: members at their install paths.
    DebData,
}

/// xz needs up to its dictionary size in memory, which the stream header
/// chooses; `xz -9` needs 65 MiB, so 256 MiB refuses only memory bombs.
const XZ_MEMLIMIT: u64 = 256 << 20;

fn decoder<'r>(c: Compression, r: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(r)),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                .map_err(io::Error::other)?;
            Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
        }
        // zstd's decoder refuses windows over 128 MiB by default.
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        Compression::Bzip2 => Box::new(bzip2::read::BzDecoder::new(r)),
    })
}

/// Extracts the tar in `raw` (compressed with `c`). `at` locates the stream
/// (the archive, or a `.deb` part). For [`Role::Crate`] returns the crate
/// directory name, if there was any member.
pub(crate) fn unpack_stream(
    raw: impl Read,
    c: Compression,
    role: Role,
    at: &Location,
    sink: &mut Sink,
) -> Result<Option<String>, UnpackError> {
    let limits = sink.limits();
    let meter = Meter::new(limits.max_ratio);
    let counted = CountIn {
        inner: raw,
        meter: meter.clone(),
    };
    let dec = decoder(c, counted).map_err(|e| read_error(at, &meter, limits, e))?;
    let out = CountOut {
        inner: dec,
        meter: meter.clone(),
    };
    let mut archive = Archive::new(out);
    let mut crate_dir = None;
    let entries = archive
        .entries()
        .map_err(|e| read_error(at, &meter, limits, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(at, &meter, limits, e))?;
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw_path).map_err(|e| UnpackError::NonUtf8 {
            at: at.member(&String::from_utf8_lossy(e.as_bytes())),
        })?;
        let here = at.member(&name);
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue; // pax global metadata, not a member
        }
        sink.count_entry(&here)?;
        let rel = check_path(&here, &name, limits)?;
        let rel = place(role, rel, &here, &mut crate_dir)?;
        let Some(rel) = rel else { continue };
        entry_into_sink(&mut entry, kind, &rel, role, &here, sink, &meter)?;
    }
    // Read to the end so the compressor's trailer (CRC, sizes) is checked
    // and a cut-off stream is noticed; the meter still bounds a bomb here.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| read_error(at, &meter, limits, e))?;
    Ok(crate_dir)
}

/// Where a member lands for `role`; `None` for the root entry (`./`).
fn place(
    role: Role,
    rel: String,
    here: &Location,
    crate_dir: &mut Option<String>,
) -> Result<Option<String>, UnpackError> {
    Ok(match role {
        Role::Plain | Role::DebData => (!rel.is_empty()).then_some(rel),
        Role::DebControl if rel.is_empty() => None,
        Role::DebControl => Some(format!("DEBIAN/{rel}")),
        Role::Crate => {
            let top = rel.split('/').next().unwrap_or("");
            match crate_dir {
                None if !top.is_empty() => *crate_dir = Some(top.to_owned()),
                Some(d) if d == top => {}
                _ => {
                    return Err(UnpackError::OutsideCrateDir {
                        at: here.clone(),
                        expected: crate_dir.clone().unwrap_or_default(),
                    })
                }
            }
            Some(rel)
        }
    })
}

fn entry_into_sink<R: Read>(
    entry: &mut ::tar::Entry<R>,
    kind: EntryType,
    rel: &str,
    role: Role,
    here: &Location,
    sink: &mut Sink,
    meter: &Rc<Meter>,
) -> Result<(), UnpackError> {
    let limits = sink.limits();
    let link_target = |entry: &::tar::Entry<R>| -> Result<String, UnpackError> {
        let t = entry
            .link_name_bytes()
            .ok_or_else(|| UnpackError::MissingLinkTarget { at: here.clone() })?;
        String::from_utf8(t.into_owned()).map_err(|_| UnpackError::NonUtf8 { at: here.clone() })
    };
    match kind {
        EntryType::Regular | EntryType::Continuous => {
            let mode = entry
                .header()
                .mode()
                .map_err(|e| read_error(here, meter, limits, e))?;
            let size = entry.size();
            let written = sink.file(here, rel, mode, size, entry, meter)?;
            if written != size {
                return Err(UnpackError::Truncated { at: here.clone() });
            }
        }
        EntryType::Directory => sink.dir(here, rel)?,
        EntryType::Symlink => {
            let target = link_target(entry)?;
            sink.symlink(here, rel, &target)?;
        }
        EntryType::Link => {
            let target = link_target(entry)?;
            // Hardlink targets name another member from the archive root.
            let t = check_path(here, &target, limits).map_err(|e| match e {
                UnpackError::AbsolutePath { .. } | UnpackError::PathEscape { .. } => {
                    UnpackError::HardlinkEscape {
                        at: here.clone(),
                        target: target.clone(),
                    }
                }
                other => other,
            })?;
            let t = match role {
                Role::DebControl => format!("DEBIAN/{t}"),
                _ => t,
            };
            sink.hardlink(here, rel, &t)?;
        }
        EntryType::Char => {
            return Err(UnpackError::SpecialFile {
                at: here.clone(),
                kind: "character device",
            })
        }
        EntryType::Block => {
            return Err(UnpackError::SpecialFile {
                at: here.clone(),
                kind: "block device",
            })
        }
        EntryType::Fifo => {
            return Err(UnpackError::SpecialFile {
                at: here.clone(),
                kind: "fifo",
            })
        }
        other => {
            return Err(UnpackError::UnsupportedType {
                at: here.clone(),
                type_byte: other.as_byte() as char,
            })
        }
    }
    Ok(())
}
