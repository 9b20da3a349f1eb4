//! `.deb`: an ar archive of `debian-binary` ("2.0\n"), `control.tar*` and
//! `data.tar*`, in that order (deb(5)). Members whose names start with `_`
//! are skipped, as dpkg does (signatures, build metadata); anything else is
//! refused so that no part of the package goes unchecked.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::meter::{CountIn, Meter};
use super::sink::{read_error, Sink};
use super::tar::{unpack_stream, Role};
use super::{Compression, Location, UnpackError};

/// The control file is a few KiB; anything bigger is not parsed.
const MAX_CONTROL: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Start,
    HaveBinary,
    HaveControl,
    HaveData,
}

fn member_compression(name: &str, base: &str, data: bool) -> Option<Compression> {
    Some(match name.strip_prefix(base)? {
        "" => Compression::None,
        ".gz" => Compression::Gzip,
        ".xz" => Compression::Xz,
        ".zst" => Compression::Zstd,
        ".bz2" if data => Compression::Bzip2,
        _ => return None,
    })
}

pub(crate) fn unpack(
    package: &Path,
    sink: &mut Sink,
) -> Result<(Option<String>, Option<String>), UnpackError> {
    let archive = package.to_path_buf();
    let at = Location::archive(package);
    let limits = sink.limits();
    let file = File::open(package).map_err(|source| UnpackError::Open {
        archive: archive.clone(),
        source,
    })?;
    let bad = |member: &str, problem: &'static str| UnpackError::DebMember {
        archive: archive.clone(),
        member: member.to_owned(),
        problem,
    };
    let mut ar = ar::Archive::new(file);
    let mut stage = Stage::Start;
    while let Some(entry) = ar.next_entry() {
        // A whole-archive meter only to tell truncation from corruption.
        let ar_meter = Meter::new(u64::MAX);
        let mut entry = entry.map_err(|e| read_error(&at, &ar_meter, limits, e))?;
        let id = entry.header().identifier().to_vec();
        let size = entry.header().size();
        let name = String::from_utf8_lossy(&id);
        // GNU ar ends names with '/'.
        let name = name.strip_suffix('/').unwrap_or(&name).to_owned();
        let part = at.part(&name);
        let meter = Meter::new(u64::MAX);
        let mut counted = CountIn {
            inner: &mut entry,
            meter: meter.clone(),
        };
        match stage {
            Stage::Start => {
                if name != "debian-binary" {
                    return Err(bad(&name, "the first member must be `debian-binary`"));
                }
                let mut v = Vec::new();
                (&mut counted)
                    .take(16)
                    .read_to_end(&mut v)
                    .map_err(|e| read_error(&part, &meter, limits, e))?;
                if v != b"2.0\n" {
                    return Err(bad(&name, "format version is not \"2.0\\n\""));
                }
                stage = Stage::HaveBinary;
            }
            _ if name.starts_with('_') => {}
            Stage::HaveBinary => {
                let c = member_compression(&name, "control.tar", false)
                    .ok_or_else(|| bad(&name, "expected control.tar{,.gz,.xz,.zst} here"))?;
                sink.implicit_dir(&part, "DEBIAN")?;
                unpack_stream(&mut counted, c, Role::DebControl, &part, sink)?;
                stage = Stage::HaveControl;
            }
            Stage::HaveControl => {
                let c = member_compression(&name, "data.tar", true)
                    .ok_or_else(|| bad(&name, "expected data.tar{,.gz,.xz,.zst,.bz2} here"))?;
                unpack_stream(&mut counted, c, Role::DebData, &part, sink)?;
                stage = Stage::HaveData;
            }
            Stage::HaveData => {
                return Err(bad(&name, "unexpected member after data.tar"));
            }
        }
        // The member must be all there: ar pads nothing for a short file.
        io::copy(&mut counted, &mut io::sink())
            .map_err(|e| read_error(&part, &meter, limits, e))?;
        if meter.compressed() != size {
            return Err(UnpackError::Truncated { at: part });
        }
    }
    let missing = match stage {
        Stage::Start => Some("debian-binary"),
        Stage::HaveBinary => Some("control.tar"),
        Stage::HaveControl => Some("data.tar"),
        Stage::HaveData => None,
    };
    if let Some(missing) = missing {
        return Err(UnpackError::DebMissing { archive, missing });
    }
    Ok(read_control(sink))
}

/// `Package:` and `Version:` from `DEBIAN/control`, if it is a regular file
/// this package extracted (not a symlink to some other member).
fn read_control(sink: &Sink) -> (Option<String>, Option<String>) {
    if !sink.is_extracted_file("DEBIAN/control") {
        return (None, None);
    }
    let mut text = String::new();
    let read = File::open(sink.dest().join("DEBIAN/control"))
        .and_then(|f| f.take(MAX_CONTROL).read_to_string(&mut text));
    if read.is_err() {
        return (None, None);
    }
    parse_control(&text)
}

/// Fields of the first deb822 paragraph; field names are case-insensitive.
fn parse_control(text: &str) -> (Option<String>, Option<String>) {
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if field.eq_ignore_ascii_case("Package") {
            name = Some(value.to_owned());
        } else if field.eq_ignore_ascii_case("Version") {
            version = Some(value.to_owned());
        }
    }
    (name, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_fields() {
        let c = "package: hello\nVersion: 2.10-3\nDescription: x\n multi: line\n\nPackage: no\n";
        assert_eq!(
            parse_control(c),
            (Some("hello".into()), Some("2.10-3".into()))
        );
    }

    #[test]
    fn member_names() {
        assert_eq!(
            member_compression("data.tar.bz2", "data.tar", true),
            Some(Compression::Bzip2)
        );
        assert_eq!(
            member_compression("control.tar.bz2", "control.tar", false),
            None
        );
        assert_eq!(member_compression("data.tar.lzma", "data.tar", true), None);
        assert_eq!(
            member_compression("control.tar", "control.tar", false),
            Some(Compression::None)
        );
    }
}
