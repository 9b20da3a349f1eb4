//! `totogate::package` against the hostile corpus in `testdata/hostile/`
//! (regenerate with `python3 testdata/hostile/make.py`) and against real
//! packages built by `dpkg-deb`, python and the tar crate.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use totogate::package::{self, Compression, Format, Limits, UnpackError};

fn hostile(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/hostile")
        .join(name)
}

/// What a tree holds: per relative path, a directory, a file's mode and
/// content, or a symlink's target. Never follows symlinks.
fn tree(root: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let e = e.unwrap();
        if skip.is_some_and(|s| e.path().starts_with(s)) {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            "dir".to_owned()
        } else {
            let data = fs::read(e.path()).unwrap();
            format!(
                "file {} bytes, {:x?}",
                data.len(),
                &data[..data.len().min(64)]
            )
        };
        out.insert(rel, what);
    }
    out
}

/// Unpacks `file` into `root/dest`, where `root` also holds a sentinel file,
/// an `outside/` directory and a symlink trap `root/dest-sibling → outside`;
/// requires a refusal and that nothing outside `dest` changed.
fn refuse(file: &str, limits: &Limits) -> UnpackError {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::write(r.join("sentinel"), b"untouched\n").unwrap();
    fs::create_dir(r.join("outside")).unwrap();
    fs::write(r.join("outside/passwd"), b"root:x:0:0\n").unwrap();
    std::os::unix::fs::symlink(r.join("outside"), r.join("dest-sibling")).unwrap();
    let dest = r.join("dest");
    let before = tree(r, Some(&dest));
    let result = package::unpack(&hostile(file), &dest, limits);
    let after = tree(r, Some(&dest));
    assert_eq!(before, after, "{file}: something outside dest changed");
    // Nothing inside dest points outside it either.
    if dest.exists() {
        for (p, what) in tree(&dest, None) {
            assert!(!what.starts_with("-> /"), "{file}: {p:?} {what}");
        }
    }
    match result {
        Ok(u) => panic!("{file}: unpacked {u:?}"),
        Err(e) => e,
    }
}

type Check = fn(&UnpackError) -> bool;

/// (file, text the message must contain, expected variant, max_entries override)
const CASES: &[(&str, &str, Check, Option<u64>)] = &[
    // .deb
    (
        "path-traversal.deb",
        "data.tar.gz member `./../../etc/passwd`",
        |e| matches!(e, UnpackError::PathEscape { .. }),
        None,
    ),
    (
        "absolute-path.deb",
        "data.tar.gz member `/etc/passwd`",
        |e| matches!(e, UnpackError::AbsolutePath { .. }),
        None,
    ),
    (
        "symlink-escape.deb",
        "member `./usr/escape`",
        |e| matches!(e, UnpackError::SymlinkEscape { .. }),
        None,
    ),
    (
        "symlink-absolute.deb",
        "member `./etc-link`",
        |e| matches!(e, UnpackError::SymlinkAbsolute { .. }),
        None,
    ),
    (
        "symlink-write-through.deb",
        "member `./usr/up/evil`",
        |e| matches!(e, UnpackError::NotADirectory { .. }),
        None,
    ),
    (
        "hardlink-escape.deb",
        "member `./passwd`",
        |e| matches!(e, UnpackError::HardlinkEscape { .. }),
        None,
    ),
    (
        "device-node.deb",
        "member `./dev/null`",
        |e| matches!(e, UnpackError::SpecialFile { .. }),
        None,
    ),
    (
        "gzip-bomb.deb",
        "data.tar.gz member `./zeros`",
        |e| matches!(e, UnpackError::RatioExceeded { .. }),
        None,
    ),
    (
        "entry-count-bomb.deb",
        "data.tar.gz member `./e/00997`",
        |e| matches!(e, UnpackError::TooManyEntries { .. }),
        Some(1000),
    ),
    (
        "long-path.deb",
        "data.tar.gz member `./aaaa",
        |e| matches!(e, UnpackError::PathTooLong { .. }),
        None,
    ),
    (
        "deep-path.deb",
        "data.tar.gz member `./d/d/d",
        |e| matches!(e, UnpackError::PathTooDeep { .. }),
        None,
    ),
    (
        "duplicate-entries.deb",
        "data.tar.gz member `etc//x`",
        |e| matches!(e, UnpackError::Duplicate { .. }),
        None,
    ),
    (
        "truncated.deb",
        "truncated.deb: data.tar.gz",
        |e| matches!(e, UnpackError::Truncated { .. }),
        None,
    ),
    (
        "wrong-magic.deb",
        "wrong-magic.deb",
        |e| matches!(e, UnpackError::UnknownFormat { .. }),
        None,
    ),
    (
        "control-not-second.deb",
        "member `data.tar.gz`",
        |e| matches!(e, UnpackError::DebMember { .. }),
        None,
    ),
    (
        "extra-member.deb",
        "member `evil.sh`",
        |e| matches!(e, UnpackError::DebMember { .. }),
        None,
    ),
    (
        "bad-version.deb",
        "member `debian-binary`",
        |e| matches!(e, UnpackError::DebMember { .. }),
        None,
    ),
    // .crate
    (
        "path-traversal.crate",
        "member `evil-1.0.0/../../etc/passwd`",
        |e| matches!(e, UnpackError::PathEscape { .. }),
        None,
    ),
    (
        "absolute-path.crate",
        "member `/etc/passwd`",
        |e| matches!(e, UnpackError::AbsolutePath { .. }),
        None,
    ),
    (
        "symlink-escape.crate",
        "member `evil-1.0.0/src/escape`",
        |e| matches!(e, UnpackError::SymlinkEscape { .. }),
        None,
    ),
    (
        "symlink-absolute.crate",
        "member `evil-1.0.0/etc-link`",
        |e| matches!(e, UnpackError::SymlinkAbsolute { .. }),
        None,
    ),
    (
        "symlink-write-through.crate",
        "member `evil-1.0.0/up/evil`",
        |e| matches!(e, UnpackError::NotADirectory { .. }),
        None,
    ),
    (
        "hardlink-escape.crate",
        "member `evil-1.0.0/passwd`",
        |e| matches!(e, UnpackError::HardlinkEscape { .. }),
        None,
    ),
    (
        "device-node.crate",
        "member `evil-1.0.0/null`",
        |e| matches!(e, UnpackError::SpecialFile { .. }),
        None,
    ),
    (
        "gzip-bomb.crate",
        "member `evil-1.0.0/zeros`",
        |e| matches!(e, UnpackError::RatioExceeded { .. }),
        None,
    ),
    (
        "entry-count-bomb.crate",
        "member `evil-1.0.0/e/01000`",
        |e| matches!(e, UnpackError::TooManyEntries { .. }),
        Some(1000),
    ),
    (
        "long-path.crate",
        "member `evil-1.0.0/aaaa",
        |e| matches!(e, UnpackError::PathTooLong { .. }),
        None,
    ),
    (
        "deep-path.crate",
        "member `evil-1.0.0/d/d/",
        |e| matches!(e, UnpackError::PathTooDeep { .. }),
        None,
    ),
    (
        "duplicate-entries.crate",
        "member `./evil-1.0.0/Cargo.toml`",
        |e| matches!(e, UnpackError::Duplicate { .. }),
        None,
    ),
    (
        "outside-crate-dir.crate",
        "member `other-2.0.0/build.rs`",
        |e| matches!(e, UnpackError::OutsideCrateDir { .. }),
        None,
    ),
    (
        "truncated.crate",
        "truncated.crate",
        |e| matches!(e, UnpackError::Truncated { .. }),
        None,
    ),
    (
        "wrong-magic.crate",
        "wrong-magic.crate",
        |e| matches!(e, UnpackError::UnknownFormat { .. }),
        None,
    ),
    // .zip
    (
        "path-traversal.zip",
        "member `../../etc/passwd`",
        |e| matches!(e, UnpackError::PathEscape { .. }),
        None,
    ),
    (
        "absolute-path.zip",
        "member `/etc/passwd`",
        |e| matches!(e, UnpackError::AbsolutePath { .. }),
        None,
    ),
    (
        "symlink-escape.zip",
        "member `escape`",
        |e| matches!(e, UnpackError::ZipSymlink { .. }),
        None,
    ),
    (
        "symlink-absolute.zip",
        "member `etc-link`",
        |e| matches!(e, UnpackError::ZipSymlink { .. }),
        None,
    ),
    (
        "device-node.zip",
        "member `null`",
        |e| matches!(e, UnpackError::SpecialFile { .. }),
        None,
    ),
    (
        "deflate-bomb.zip",
        "member `zeros`",
        |e| matches!(e, UnpackError::RatioExceeded { .. }),
        None,
    ),
    (
        "entry-count-bomb.zip",
        "entry-count-bomb.zip",
        |e| matches!(e, UnpackError::TooManyEntries { .. }),
        Some(1000),
    ),
    (
        "long-path.zip",
        "member `aaaa",
        |e| matches!(e, UnpackError::PathTooLong { .. }),
        None,
    ),
    (
        "deep-path.zip",
        "member `d/d/",
        |e| matches!(e, UnpackError::PathTooDeep { .. }),
        None,
    ),
    (
        "duplicate-entries.zip",
        "member `./dup.txt`",
        |e| matches!(e, UnpackError::Duplicate { .. }),
        None,
    ),
    (
        "duplicate-names.zip",
        "duplicate-names.zip",
        |e| matches!(e, UnpackError::ZipDuplicateNames { .. }),
        None,
    ),
    (
        "truncated.zip",
        "truncated.zip",
        |e| matches!(e, UnpackError::Zip { .. }),
        None,
    ),
    (
        "wrong-magic.zip",
        "wrong-magic.zip",
        |e| matches!(e, UnpackError::UnknownFormat { .. }),
        None,
    ),
];

#[test]
fn every_hostile_file_is_refused_naming_the_member() {
    let mut failures = Vec::new();
    for &(file, needle, check, max_entries) in CASES {
        let mut limits = Limits::default();
        if let Some(n) = max_entries {
            limits.max_entries = n;
        }
        let err = refuse(file, &limits);
        let msg = err.to_string();
        if !msg.contains(needle) || !check(&err) {
            failures.push(format!("{file}: {msg}\n    (variant {err:?})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_file_in_the_corpus_has_a_case() {
    let mut listed: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    listed.extend(["good.deb", "good.crate", "good.zip"]);
    for e in fs::read_dir(hostile("")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") || name.ends_with(".py") {
            continue;
        }
        assert!(listed.contains(&name.as_str()), "{name} is not tested");
    }
}

#[test]
fn bombs_trip_the_byte_limit_when_the_ratio_allows_them() {
    let limits = Limits {
        max_ratio: u64::MAX,
        max_total_bytes: 4 << 20,
        ..Limits::default()
    };
    for file in ["gzip-bomb.deb", "gzip-bomb.crate", "deflate-bomb.zip"] {
        let err = refuse(file, &limits);
        assert!(
            matches!(err, UnpackError::TooManyBytes { .. }),
            "{file}: {err}"
        );
        assert!(err.to_string().contains("zeros"), "{err}");
    }
}

#[test]
fn entry_count_bombs_are_under_the_default_limit() {
    // The corpus bombs are sized for max_entries = 1,000 (see README).
    for file in [
        "entry-count-bomb.deb",
        "entry-count-bomb.crate",
        "entry-count-bomb.zip",
    ] {
        let d = tempfile::tempdir().unwrap();
        let u = package::unpack(&hostile(file), &d.path().join("x"), &Limits::default()).unwrap();
        assert!(u.entries >= 1001, "{file}: {u:?}");
    }
}

#[test]
fn extension_must_agree_with_magic() {
    let d = tempfile::tempdir().unwrap();
    let fake = d.path().join("really-a-zip.deb");
    fs::copy(hostile("good.zip"), &fake).unwrap();
    let err = package::unpack(&fake, &d.path().join("x"), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::ExtensionMismatch { .. }),
        "{err}"
    );
    assert!(!d.path().join("x").exists());
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn python_deb_unpacks_with_modes_tamed() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("x");
    let u = package::unpack(&hostile("good.deb"), &dest, &Limits::default()).unwrap();
    assert_eq!(u.format, Format::Deb);
    assert_eq!(u.name.as_deref(), Some("evil"));
    assert_eq!(u.version.as_deref(), Some("1.0"));
    assert_eq!(
        fs::read(dest.join("usr/bin/hello")).unwrap(),
        b"#!/bin/sh\necho hello\n"
    );
    // The archive says 04755: setuid is dropped.
    assert_eq!(mode(&dest.join("usr/bin/hello")), 0o755);
    assert_eq!(
        fs::read_link(dest.join("usr/bin/hi")).unwrap(),
        Path::new("hello")
    );
    assert_eq!(
        fs::read(dest.join("usr/bin/hello2")).unwrap(),
        fs::read(dest.join("usr/bin/hello")).unwrap()
    );
    assert!(dest.join("DEBIAN/control").is_file());
    assert_eq!(fs::read(dest.join("usr/filler")).unwrap().len(), 16384);
}

#[test]
fn crate_unpacks_with_name_and_version() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("x");
    let u = package::unpack(&hostile("good.crate"), &dest, &Limits::default()).unwrap();
    assert_eq!(u.format, Format::Crate);
    assert_eq!(u.name.as_deref(), Some("evil"));
    assert_eq!(u.version.as_deref(), Some("1.0.0"));
    assert_eq!(u.entries, 3);
    assert_eq!(
        fs::read(dest.join("evil-1.0.0/src/lib.rs")).unwrap(),
        b"pub fn f() {}\n"
    );
    assert_eq!(
        fs::read_link(dest.join("evil-1.0.0/src/alias.rs")).unwrap(),
        Path::new("lib.rs")
    );
}

#[test]
fn zip_unpacks() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("x");
    let u = package::unpack(&hostile("good.zip"), &dest, &Limits::default()).unwrap();
    assert_eq!(u.format, Format::Zip);
    assert_eq!(u.entries, 4);
    assert_eq!(u.bytes, 12 + 16384 + 10);
    assert_eq!(
        fs::read(dest.join("pkg/__init__.py")).unwrap(),
        b"print('hi')\n"
    );
    assert_eq!(mode(&dest.join("bin/tool")), 0o755);
    assert_eq!(mode(&dest.join("pkg/filler")), 0o644);
}

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], kind: tar::EntryType, link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o6755
        });
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    };
    add("pkg/", b"", tar::EntryType::Directory, None);
    add("pkg/a.txt", &[7u8; 100_000], tar::EntryType::Regular, None);
    add("pkg/b", b"", tar::EntryType::Symlink, Some("a.txt"));
    add(
        "pkg/sub/c",
        b"hard",
        tar::EntryType::Link,
        Some("pkg/a.txt"),
    );
    b.into_inner().unwrap()
}

#[test]
fn every_tar_compression_unpacks() {
    let raw = sample_tar();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&raw).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&raw).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::stream::encode_all(&raw[..], 3).unwrap();
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        e.write_all(&raw).unwrap();
        e.finish().unwrap()
    };
    for (name, bytes, c) in [
        ("p.tar", &raw, Compression::None),
        ("p.tar.gz", &gz, Compression::Gzip),
        ("p.tgz", &gz, Compression::Gzip),
        ("p.tar.xz", &xz, Compression::Xz),
        ("p.tar.zst", &zst, Compression::Zstd),
        ("p.tar.bz2", &bz2, Compression::Bzip2),
    ] {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join(name);
        fs::write(&file, bytes).unwrap();
        assert_eq!(package::detect(&file).unwrap(), Format::Tar(c), "{name}");
        let dest = d.path().join("x");
        let u = package::unpack(&file, &dest, &Limits::default()).unwrap();
        assert_eq!((u.entries, u.bytes), (4, 100_000), "{name}");
        assert_eq!(
            fs::read(dest.join("pkg/a.txt")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            fs::read(dest.join("pkg/sub/c")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            fs::read_link(dest.join("pkg/b")).unwrap(),
            Path::new("a.txt")
        );
        assert_eq!(mode(&dest.join("pkg/a.txt")), 0o755, "{name}");

        // The same stream cut short is refused as truncated (plain tar: the
        // data of the last file is missing).
        let cut = d.path().join(format!("cut-{name}"));
        fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = package::unpack(&cut, &d.path().join("y"), &Limits::default()).unwrap_err();
        assert!(
            matches!(err, UnpackError::Truncated { .. }),
            "{name}: {err:?}"
        );
    }
}

/// Builds a package with `dpkg-deb --build` and checks we unpack exactly
/// what `dpkg-deb -R` does, for each compression dpkg-deb offers.
#[test]
fn dpkg_deb_built_packages_match_dpkg_deb_raw_extract() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("DEBIAN")).unwrap();
    fs::create_dir_all(src.join("usr/bin")).unwrap();
    fs::create_dir_all(src.join("usr/share/doc/hello")).unwrap();
    fs::create_dir_all(src.join("usr/lib/hello/empty")).unwrap();
    fs::write(
        src.join("DEBIAN/control"),
        "Package: hello\nVersion: 2.10-3\nArchitecture: all\n\
         Maintainer: Test <test@example.org>\nDescription: greeting\n",
    )
    .unwrap();
    fs::write(src.join("usr/bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(src.join("usr/bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        src.join("usr/share/doc/hello/copyright"),
        "GPL\n".repeat(500),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../bin/hello", src.join("usr/lib/hello/hello")).unwrap();
    for z in ["gzip", "xz", "zstd", "none"] {
        let deb = d.path().join(format!("hello-{z}.deb"));
        let st = Command::new("dpkg-deb")
            .args(["--root-owner-group", &format!("-Z{z}"), "--build"])
            .arg(&src)
            .arg(&deb)
            .output()
            .expect("dpkg-deb is installed");
        assert!(st.status.success(), "{z}: {st:?}");
        let reference = d.path().join(format!("ref-{z}"));
        let st = Command::new("dpkg-deb")
            .arg("-R")
            .arg(&deb)
            .arg(&reference)
            .status()
            .unwrap();
        assert!(st.success());
        let ours = d.path().join(format!("ours-{z}"));
        let u = package::unpack(&deb, &ours, &Limits::default()).unwrap();
        assert_eq!(u.name.as_deref(), Some("hello"));
        assert_eq!(u.version.as_deref(), Some("2.10-3"));
        assert_eq!(tree(&ours, None), tree(&reference, None), "-Z{z}");
        assert_eq!(mode(&ours.join("usr/bin/hello")), 0o755);
    }
}
