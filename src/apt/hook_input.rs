//! What apt writes to a `DPkg::Pre-Install-Pkgs` hook (on stdin, or on the fd
//! in `APT_HOOK_INFO_FD`), per `man apt.conf` and checked against apt 2.6
//! (`testdata/apt/recorded/pre-install-pkgs.v*.txt`).
//!
//! The version is chosen with `DPkg::Tools::Options::<cmd>::Version`, where
//! `<cmd>` is the hook command up to its first space (so `"/usr/bin/x --a"`
//! is configured under `DPkg::Tools::Options::/usr/bin/x`).
//!
//! - Version 1 (the default): one `.deb` path per line, nothing else.
//! - Version 2: `VERSION 2`, the whole configuration as %-encoded `key=value`
//!   lines (list entries as `key::=value`), a blank line, then one line per
//!   package action: `name old-version dir new-version action`, where a
//!   version is `-` for none, `dir` is `<` (upgrade, also a first install),
//!   `>` (downgrade) or `=`, and `action` is `**CONFIGURE**`, `**REMOVE**` or
//!   the path of the `.deb` to unpack. The name has no `:arch`.
//! - Version 3: as 2, but each version is followed by its architecture (`-`
//!   without a version) and Multi-Arch type (`same`, `foreign`, `allowed`, or
//!   `none`/`no`): `name old-ver old-arch old-ma dir new-ver new-arch new-ma
//!   action`. A removal reads `toto-b 2:1.5~rc1-1 amd64 foreign > - - none
//!   **REMOVE**`.
//!
//! Fields are separated by single spaces; the action is the rest of the line,
//! so a `.deb` path may contain spaces. Config lines that are not valid
//! %-encoded UTF-8 make the whole input an error (fail closed).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use super::config::{decode_item, ConfigError, IntotoConfig};

/// Largest hook input accepted (a stock config dump is ~10 KiB, plus ~150
/// bytes per package action).
pub const MAX_INPUT_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookInputError {
    #[error("reading the hook input: {0}")]
    Io(String),
    #[error("hook input exceeds {MAX_INPUT_BYTES} bytes")]
    TooLarge,
    #[error("hook input is not UTF-8")]
    NotUtf8,
    #[error("bad version line {0:?}")]
    BadVersionLine(String),
    #[error("hook protocol version {0} is not supported (1, 2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error("line {line}: {source}")]
    Config {
        line: usize,
        #[source]
        source: ConfigError,
    },
    #[error("hook input ended inside the configuration (no blank line)")]
    UnterminatedConfig,
    #[error("line {line}: bad package line {text:?}: {reason}")]
    BadPackageLine {
        line: usize,
        text: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Unpack the `.deb` in [`HookPackage::deb`].
    Install,
    Configure,
    Remove,
}

/// The `dir` column: how the new version compares to the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionChange {
    /// `<`: an upgrade, or a first install (no old version).
    Upgrade,
    /// `>`: a downgrade, or a removal (no new version).
    Downgrade,
    /// `=`: a reinstall or a configure of the same version.
    Same,
}

/// A version-3 Multi-Arch column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiArch {
    /// `none` (what apt writes) or `no`.
    No,
    Same,
    Foreign,
    Allowed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookPackage {
    /// The package name, without `:arch`. For version 1, the part of the
    /// file name before the first `_` (apt names archives
    /// `name_version_arch.deb`), or the whole file name.
    pub name: String,
    pub old_version: Option<String>,
    /// For version 1, guessed from the file name (`%3a` decoded to `:`).
    pub new_version: Option<String>,
    /// `None` for version 1.
    pub change: Option<VersionChange>,
    pub action: Action,
    /// The archive to unpack, for [`Action::Install`].
    pub deb: Option<PathBuf>,
    /// Version 3 only.
    pub old_arch: Option<String>,
    pub old_multi_arch: Option<MultiArch>,
    pub new_arch: Option<String>,
    pub new_multi_arch: Option<MultiArch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookInput {
    /// 1, 2 or 3.
    pub version: u32,
    /// The decoded config dump, in apt's order (empty for version 1). List
    /// entries keep their trailing `::` in the key.
    pub config: Vec<(String, String)>,
    pub packages: Vec<HookPackage>,
}

impl HookInput {
    /// Reads the whole input (up to [`MAX_INPUT_BYTES`]) and parses it.
    pub fn read(r: &mut impl BufRead) -> Result<HookInput, HookInputError> {
        let mut buf = Vec::new();
        r.take(MAX_INPUT_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| HookInputError::Io(e.to_string()))?;
        if buf.len() > MAX_INPUT_BYTES {
            return Err(HookInputError::TooLarge);
        }
        let text = std::str::from_utf8(&buf).map_err(|_| HookInputError::NotUtf8)?;
        HookInput::parse(text)
    }

    pub fn parse(text: &str) -> Result<HookInput, HookInputError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
        let version = match lines.peek() {
            Some((_, first)) if first.starts_with("VERSION") => {
                let v = parse_version_line(first)?;
                lines.next();
                v
            }
            _ => 1,
        };
        let mut input = HookInput {
            version,
            config: Vec::new(),
            packages: Vec::new(),
        };
        if version == 1 {
            for (_, line) in lines.filter(|(_, l)| !l.is_empty()) {
                input.packages.push(v1_package(line));
            }
            return Ok(input);
        }
        let mut terminated = false;
        for (n, line) in lines.by_ref() {
            if line.is_empty() {
                terminated = true;
                break;
            }
            let item =
                decode_item(line).map_err(|source| HookInputError::Config { line: n, source })?;
            input.config.push(item);
        }
        if !terminated {
            return Err(HookInputError::UnterminatedConfig);
        }
        for (n, line) in lines.filter(|(_, l)| !l.is_empty()) {
            input.packages.push(package_line(version, n, line)?);
        }
        Ok(input)
    }

    /// The `APT::Intoto` settings in the config dump.
    pub fn intoto_config(&self) -> Result<IntotoConfig, ConfigError> {
        IntotoConfig::from_items(self.config.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The archives about to be unpacked, in apt's order.
    pub fn debs(&self) -> impl Iterator<Item = &Path> {
        self.packages.iter().filter_map(|p| p.deb.as_deref())
    }
}

fn parse_version_line(line: &str) -> Result<u32, HookInputError> {
    let bad = || HookInputError::BadVersionLine(line.to_string());
    let number = line.strip_prefix("VERSION ").ok_or_else(bad)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let v: u32 = number.parse().map_err(|_| bad())?;
    match v {
        2 | 3 => Ok(v),
        _ => Err(HookInputError::UnsupportedVersion(v)),
    }
}

fn v1_package(line: &str) -> HookPackage {
    let path = PathBuf::from(line);
    let file = line.rsplit('/').next().unwrap_or(line);
    let stem = file.strip_suffix(".deb").unwrap_or(file);
    let mut parts = stem.split('_');
    let (name, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(version), Some(_arch), None)
            if !name.is_empty() && !version.is_empty() =>
        {
            (name.to_string(), Some(version.replace("%3a", ":")))
        }
        _ => (file.to_string(), None),
    };
    HookPackage {
        name,
        old_version: None,
        new_version: version,
        change: None,
        action: Action::Install,
        deb: Some(path),
        old_arch: None,
        old_multi_arch: None,
        new_arch: None,
        new_multi_arch: None,
    }
}

fn package_line(version: u32, n: usize, line: &str) -> Result<HookPackage, HookInputError> {
    let bad = |reason| HookInputError::BadPackageLine {
        line: n,
        text: line.to_string(),
        reason,
    };
    let columns = if version == 2 { 5 } else { 9 };
    let f: Vec<&str> = line.splitn(columns, ' ').collect();
    if f.len() != columns {
        return Err(bad(if version == 2 {
            "version 2 needs 5 fields"
        } else {
            "version 3 needs 9 fields"
        }));
    }
    if f[..columns - 1]
        .iter()
        .any(|c| c.is_empty() || c.contains('\t'))
    {
        return Err(bad("empty field (two spaces in a row?)"));
    }
    let name = f[0];
    let (old, dir, new, action) = if version == 2 {
        ((f[1], None, None), f[2], (f[3], None, None), f[4])
    } else {
        (
            (f[1], Some(f[2]), Some(f[3])),
            f[4],
            (f[5], Some(f[6]), Some(f[7])),
            f[8],
        )
    };
    let change = match dir {
        "<" => VersionChange::Upgrade,
        ">" => VersionChange::Downgrade,
        "=" => VersionChange::Same,
        _ => return Err(bad("the direction is not <, > or =")),
    };
    let side = |(ver, arch, ma): (&str, Option<&str>, Option<&str>)| {
        let ver = (ver != "-").then(|| ver.to_string());
        let arch = match arch {
            None | Some("-") => None,
            Some(a) => Some(a.to_string()),
        };
        if ver.is_none() && arch.is_some() {
            return Err(bad("an architecture without a version"));
        }
        let ma = match ma {
            None => None,
            Some("none" | "no") => Some(MultiArch::No),
            Some("same") => Some(MultiArch::Same),
            Some("foreign") => Some(MultiArch::Foreign),
            Some("allowed") => Some(MultiArch::Allowed),
            Some(_) => return Err(bad("unknown Multi-Arch type")),
        };
        Ok((ver, arch, ma))
    };
    let (old_version, old_arch, old_multi_arch) = side(old)?;
    let (new_version, new_arch, new_multi_arch) = side(new)?;
    let (action, deb) = match action {
        "**CONFIGURE**" => (Action::Configure, None),
        "**REMOVE**" => (Action::Remove, None),
        "" => return Err(bad("no action")),
        a if a.starts_with("**") => return Err(bad("unknown **ACTION**")),
        path => (Action::Install, Some(PathBuf::from(path))),
    };
    if action != Action::Remove && new_version.is_none() {
        return Err(bad("no new version to install or configure"));
    }
    Ok(HookPackage {
        name: name.to_string(),
        old_version,
        new_version,
        change: Some(change),
        action,
        deb,
        old_arch,
        old_multi_arch,
        new_arch,
        new_multi_arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn recorded(name: &str) -> String {
        String::from_utf8(crate::apt::recorded(name)).unwrap()
    }

    /// The throwaway root of the recording run, from the config dump.
    fn root(input: &HookInput) -> String {
        input
            .config
            .iter()
            .find(|(k, _)| k == "Dir")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[test]
    fn recorded_version_2() {
        let input = HookInput::read(&mut Cursor::new(recorded("pre-install-pkgs.v2.txt"))).unwrap();
        assert_eq!(input.version, 2);
        assert!(input.config.len() > 50);
        assert_eq!(
            input.config[0],
            ("APT::Architecture".into(), "amd64".into())
        );
        assert!(input.config.contains(&("Binary".into(), "apt-get".into())));
        let archives = format!("{}/var/cache/apt/archives", root(&input));
        let cfg = input.intoto_config().unwrap();
        assert_eq!(cfg.rebuilders.len(), 2);
        assert!(cfg.no_fail);
        assert!(input
            .config
            .iter()
            .any(|(k, v)| k == "DPkg::Pre-Install-Pkgs::" && v.ends_with("/hook-v2 --some-arg")));

        let p = &input.packages;
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].name, "toto-a");
        assert_eq!(p[0].old_version, None);
        assert_eq!(p[0].new_version.as_deref(), Some("1.0-1"));
        assert_eq!(p[0].change, Some(VersionChange::Upgrade));
        assert_eq!(p[0].action, Action::Install);
        assert_eq!(
            p[0].deb,
            Some(PathBuf::from(format!("{archives}/toto-a_1.0-1_amd64.deb")))
        );
        assert_eq!(p[0].new_arch, None);
        assert_eq!(p[1].name, "toto-b");
        assert_eq!(p[1].new_version.as_deref(), Some("2:1.5~rc1-1"));
        assert_eq!(
            p[1].deb,
            Some(PathBuf::from(format!(
                "{archives}/toto-b_2%3a1.5~rc1-1_amd64.deb"
            )))
        );
        for c in &p[2..] {
            assert_eq!(c.action, Action::Configure);
            assert_eq!(c.deb, None);
        }
        assert_eq!(p[3].new_version.as_deref(), Some("2:1.5~rc1-1"));
        assert_eq!(input.debs().count(), 2);
    }

    #[test]
    fn recorded_version_3() {
        let input = HookInput::parse(&recorded("pre-install-pkgs.v3.txt")).unwrap();
        assert_eq!(input.version, 3);
        let p = &input.packages;
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            HookPackage {
                name: "toto-b".into(),
                old_version: Some("2:1.5~rc1-1".into()),
                new_version: None,
                change: Some(VersionChange::Downgrade),
                action: Action::Remove,
                deb: None,
                old_arch: Some("amd64".into()),
                old_multi_arch: Some(MultiArch::Foreign),
                new_arch: None,
                new_multi_arch: Some(MultiArch::No),
            }
        );
        assert_eq!(p[1].name, "toto-a");
        assert_eq!(p[1].old_version.as_deref(), Some("1.0-1"));
        assert_eq!(p[1].new_version.as_deref(), Some("1.1-1"));
        assert_eq!(p[1].old_multi_arch, Some(MultiArch::Same));
        assert_eq!(p[1].new_arch.as_deref(), Some("amd64"));
        assert_eq!(p[1].action, Action::Install);
        assert!(p[1]
            .deb
            .as_ref()
            .unwrap()
            .ends_with("toto-a_1.1-1_amd64.deb"));
        assert_eq!(p[2].action, Action::Configure);
        assert_eq!(input.intoto_config().unwrap().keyids.len(), 2);
    }

    #[test]
    fn recorded_version_1() {
        let input = HookInput::parse(&recorded("pre-install-pkgs.v1.txt")).unwrap();
        assert_eq!(input.version, 1);
        assert!(input.config.is_empty());
        assert_eq!(input.packages.len(), 1);
        let p = &input.packages[0];
        assert_eq!(p.name, "toto-b");
        assert_eq!(p.new_version.as_deref(), Some("2:1.5~rc1-1"));
        assert_eq!(p.action, Action::Install);
        assert!(p
            .deb
            .as_ref()
            .unwrap()
            .ends_with("toto-b_2%3a1.5~rc1-1_amd64.deb"));
        // Odd names in version 1 are kept whole.
        let odd = HookInput::parse("/tmp/local file.deb\n\n./x_1.deb\n").unwrap();
        assert_eq!(odd.packages[0].name, "local file.deb");
        assert_eq!(odd.packages[0].new_version, None);
        assert_eq!(odd.packages[1].name, "x_1.deb");
        assert_eq!(HookInput::parse("").unwrap().packages, vec![]);
    }

    #[test]
    fn hand_written_lines() {
        let text = "VERSION 3\nDir=/\nA%3dB=c=d\n\n\
            a - - none < 1 amd64 same /var/cache/apt/archives/with space_1_amd64.deb\n\
            b 2 all foreign = 2 all foreign **CONFIGURE**\n\
            c 3 i386 allowed > 1 i386 no /x.deb\n\n";
        let input = HookInput::parse(text).unwrap();
        assert_eq!(input.config[1], ("A=B".into(), "c=d".into()));
        let p = &input.packages;
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].old_multi_arch, Some(MultiArch::No));
        assert_eq!(
            p[0].deb.as_deref(),
            Some(Path::new("/var/cache/apt/archives/with space_1_amd64.deb"))
        );
        assert_eq!(p[1].change, Some(VersionChange::Same));
        assert_eq!(p[1].action, Action::Configure);
        assert_eq!(p[2].change, Some(VersionChange::Downgrade));
        assert_eq!(p[2].new_multi_arch, Some(MultiArch::No));
        assert_eq!(p[2].old_arch.as_deref(), Some("i386"));

        let v2 = HookInput::parse("VERSION 2\n\nz 1 > - **REMOVE**\n").unwrap();
        assert!(v2.config.is_empty());
        assert_eq!(v2.packages[0].action, Action::Remove);
        assert_eq!(v2.packages[0].old_version.as_deref(), Some("1"));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        use HookInputError as E;
        type Check = fn(&HookInputError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("VERSION\n\n", |e| matches!(e, E::BadVersionLine(_))),
            ("VERSION two\n\n", |e| matches!(e, E::BadVersionLine(_))),
            ("VERSION  2\n\n", |e| matches!(e, E::BadVersionLine(_))),
            ("VERSION 2 \n\n", |e| matches!(e, E::BadVersionLine(_))),
            ("VERSION 99999999999999\n\n", |e| {
                matches!(e, E::BadVersionLine(_))
            }),
            ("VERSION 4\n\n", |e| *e == E::UnsupportedVersion(4)),
            ("VERSION 1\n\n", |e| *e == E::UnsupportedVersion(1)),
            ("VERSION 2\nDir=/\n", |e| *e == E::UnterminatedConfig),
            ("VERSION 2\n", |e| *e == E::UnterminatedConfig),
            ("VERSION 2\nnoequals\n\n", |e| {
                matches!(e, E::Config { line: 2, .. })
            }),
            ("VERSION 2\nk=%zz\n\n", |e| {
                matches!(e, E::Config { line: 2, .. })
            }),
            ("VERSION 2\n\na - < 1\n", |e| {
                matches!(e, E::BadPackageLine { line: 3, .. })
            }),
            ("VERSION 2\n\na - ! 1 /x.deb\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 2\n\na  - < 1 /x.deb\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 2\n\na - < 1 \n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 2\n\na - < 1 **PURGE**\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 2\n\na 1 > - **CONFIGURE**\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 2\n\na 1 > - /x.deb\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 3\n\na - < 1 /x.deb\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 3\n\na - - none < 1 amd64 weird /x.deb\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 3\n\na - amd64 none < 1 amd64 same /x.deb\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
            ("VERSION 3\n\na\t- - none < 1 amd64 same /x.deb\n", |e| {
                matches!(e, E::BadPackageLine { .. })
            }),
        ];
        for (text, ok) in cases {
            match HookInput::parse(text) {
                Err(e) if ok(&e) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            HookInput::read(&mut Cursor::new(b"VERSION 2\n\xff\n\n".to_vec())),
            Err(HookInputError::NotUtf8)
        );
    }

    #[test]
    fn size_cap() {
        let big = std::io::repeat(b'a').take(MAX_INPUT_BYTES as u64 + 10);
        assert_eq!(
            HookInput::read(&mut std::io::BufReader::new(big)),
            Err(HookInputError::TooLarge)
        );
    }

    #[test]
    fn mangled_recordings_never_panic() {
        let base = recorded("pre-install-pkgs.v3.txt").into_bytes();
        let mut x: u32 = 7;
        for cut in (0..base.len()).step_by(3) {
            let _ = HookInput::read(&mut Cursor::new(&base[..cut]));
        }
        for _ in 0..3000 {
            let mut v = base.clone();
            for _ in 0..3 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize >> 8) % v.len();
                v[i] = b" \n-<=:*%_/a1"[(x >> 4) as usize % 12];
            }
            let _ = HookInput::read(&mut Cursor::new(v));
        }
    }
}
