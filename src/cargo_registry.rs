//! Cargo's side of `cargo intoto`: the registry configuration (as cargo
//! reads it), the sparse index protocol, `config.json` download templates,
//! version selection and `Cargo.lock`.
//!
//! Supported: sparse registries (`sparse+https://...`, and crates.io's git
//! index name mapped to `https://index.crates.io/`), `$CARGO_HOME/config.toml`
//! (`[registries.NAME] index`, `[registry] default`) and the
//! `CARGO_REGISTRIES_<NAME>_INDEX` variables. Not supported: git indexes
//! other than crates.io's, `.cargo/config.toml` files in the project tree,
//! `[source]` replacement, registry authentication tokens.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::fetch::{Fetch, FetchError};

/// crates.io's index as `Cargo.lock` names it.
pub const CRATES_IO_GIT: &str = "registry+https://github.com/rust-lang/crates.io-index";
/// crates.io's sparse index.
pub const CRATES_IO_SPARSE: &str = "https://index.crates.io/";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Toml {
        file: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("registry `{name}` is not defined in {file} (`[registries.{name}] index = \"sparse+https://...\"`)")]
    UnknownRegistry { name: String, file: PathBuf },
    #[error("index `{url}`: only sparse registries (`sparse+https://...`) are supported")]
    NotSparse { url: String },
    #[error("fetching {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error("could not find `{name}` in registry `{index}`")]
    NoSuchCrate { name: String, index: String },
    #[error("{url}: line {line}: {source}")]
    IndexLine {
        url: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: {source}")]
    ConfigJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: registry config.json has no `dl` entry")]
    NoDl { url: String },
    #[error("could not find `{name}` {wanted} in registry `{index}` (not published, or yanked)")]
    NoMatchingVersion {
        name: String,
        wanted: String,
        index: String,
    },
}

/// `$CARGO_HOME`, as cargo finds it: the variable, else `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".cargo")
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    registries: std::collections::BTreeMap<String, RawRegistry>,
    #[serde(default)]
    registry: RawDefault,
}

#[derive(Debug, Default, Deserialize)]
struct RawRegistry {
    index: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDefault {
    default: Option<String>,
}

/// The registry part of cargo's configuration in `$CARGO_HOME`.
#[derive(Debug)]
pub struct CargoConfig {
    pub file: PathBuf,
    raw: RawConfig,
}

impl CargoConfig {
    /// Reads `<home>/config.toml` (or the older `<home>/config`); a missing
    /// file is an empty configuration.
    pub fn load(home: &Path) -> Result<CargoConfig, RegistryError> {
        let mut file = home.join("config.toml");
        if !file.exists() && home.join("config").exists() {
            file = home.join("config");
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(RegistryError::Read { file, source }),
        };
        let raw = toml::from_str(&text).map_err(|source| RegistryError::Toml {
            file: file.clone(),
            source: Box::new(source),
        })?;
        Ok(CargoConfig { file, raw })
    }

    /// The index URL of registry `name`: `CARGO_REGISTRIES_<NAME>_INDEX`
    /// first, then `[registries.NAME] index`. `crates-io` is built in.
    pub fn registry_index(&self, name: &str) -> Result<String, RegistryError> {
        let var = format!(
            "CARGO_REGISTRIES_{}_INDEX",
            name.to_ascii_uppercase().replace('-', "_")
        );
        if let Ok(v) = std::env::var(var) {
            return Ok(v);
        }
        if let Some(i) = self.raw.registries.get(name).and_then(|r| r.index.clone()) {
            return Ok(i);
        }
        if name == "crates-io" {
            return Ok(format!("sparse+{CRATES_IO_SPARSE}"));
        }
        Err(RegistryError::UnknownRegistry {
            name: name.to_owned(),
            file: self.file.clone(),
        })
    }

    /// `[registry] default`, else crates.io.
    pub fn default_index(&self) -> Result<String, RegistryError> {
        match &self.raw.registry.default {
            Some(n) => self.registry_index(n),
            None => Ok(format!("sparse+{CRATES_IO_SPARSE}")),
        }
    }
}

/// The HTTP base URL (ending in `/`) of a sparse index given as cargo
/// writes it: `sparse+URL`, a `Cargo.lock` `source` (`sparse+URL`, or
/// crates.io's `registry+` git URL), or a bare `http(s)://` URL.
pub fn sparse_base(index: &str) -> Result<String, RegistryError> {
    let index = index.trim();
    let url = if let Some(u) = index.strip_prefix("sparse+") {
        u
    } else if index == CRATES_IO_GIT
        || index == CRATES_IO_GIT.trim_start_matches("registry+")
        || index == format!("{CRATES_IO_GIT}/")
    {
        CRATES_IO_SPARSE
    } else if index.starts_with("http://") || index.starts_with("https://") {
        index
    } else {
        return Err(RegistryError::NotSparse {
            url: index.to_owned(),
        });
    };
    Ok(if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    })
}

/// Where a crate's index file is, relative to the index root (cargo's
/// rules: `1/`, `2/`, `3/{first char}/`, `{first two}/{next two}/`, lowercase).
pub fn index_path(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    match n.len() {
        0 => String::new(),
        1 => format!("1/{n}"),
        2 => format!("2/{n}"),
        3 => format!("3/{}/{n}", &n[..1]),
        _ => format!("{}/{}/{n}", &n[..2], &n[2..4]),
    }
}

/// One line of an index file (the fields `cargo intoto` uses).
#[derive(Debug, Clone, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub vers: String,
    pub cksum: String,
    #[serde(default)]
    pub yanked: bool,
}

/// Parses an index file: one JSON object per line, blank lines skipped.
pub fn parse_index(url: &str, bytes: &[u8]) -> Result<Vec<IndexEntry>, RegistryError> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line).map_err(|source| RegistryError::IndexLine {
                url: url.to_owned(),
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

/// A semver version, compared as semver does (pre-releases before the
/// release; build metadata ignored). Non-numeric cores sort first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    core: Vec<u64>,
    pre: Vec<String>,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.split('+').next()?;
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p.split('.').map(str::to_owned).collect()),
            None => (s, Vec::new()),
        };
        let core: Option<Vec<u64>> = core.split('.').map(|p| p.parse().ok()).collect();
        let core = core?;
        (core.len() == 3).then_some(Version { core, pre })
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The version `cargo install` would pick: the exact `wanted` version
/// (`=1.2.3` or `1.2.3`) if given, else the highest release; yanked
/// versions never.
pub fn select<'a>(entries: &'a [IndexEntry], wanted: Option<&str>) -> Option<&'a IndexEntry> {
    let mut live = entries.iter().filter(|e| !e.yanked);
    if let Some(w) = wanted {
        let w = w.trim_start_matches('=');
        let wv = Version::parse(w);
        return live.rfind(|e| e.vers == w || (wv.is_some() && Version::parse(&e.vers) == wv));
    }
    live.filter_map(|e| Version::parse(&e.vers).map(|v| (v, e)))
        .filter(|(v, _)| !v.is_prerelease())
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, e)| e)
}

/// Expands a `config.json` `dl` template. With none of cargo's markers,
/// `/{crate}/{version}/download` is appended (as cargo does).
pub fn dl_url(template: &str, name: &str, version: &str, cksum: &str) -> String {
    const MARKERS: &[&str] = &[
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    if !MARKERS.iter().any(|m| template.contains(m)) {
        return format!(
            "{}/{name}/{version}/download",
            template.trim_end_matches('/')
        );
    }
    let prefix = match index_path(name).rsplit_once('/') {
        Some((p, _)) => p.to_owned(),
        None => String::new(),
    };
    // `{prefix}` keeps the crate name's case; index_path lowercases.
    let prefix_cased = match name.len() {
        1 => "1".to_owned(),
        2 => "2".to_owned(),
        3 => format!("3/{}", &name[..1]),
        _ if name.len() >= 4 => format!("{}/{}", &name[..2], &name[2..4]),
        _ => String::new(),
    };
    template
        .replace("{crate}", name)
        .replace("{version}", version)
        .replace("{lowerprefix}", &prefix)
        .replace("{prefix}", &prefix_cased)
        .replace("{sha256-checksum}", cksum)
}

#[derive(Deserialize)]
struct RawRegistryConfig {
    dl: Option<String>,
}

/// A sparse registry reached through a [`Fetch`].
pub struct Registry<'a> {
    /// The index base URL, ending in `/`.
    pub base: String,
    fetcher: &'a dyn Fetch,
}

impl<'a> Registry<'a> {
    pub fn new(base: String, fetcher: &'a dyn Fetch) -> Registry<'a> {
        Registry { base, fetcher }
    }

    fn get(&self, url: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.fetcher
            .get(url)
            .map_err(|source| RegistryError::Fetch {
                url: url.to_owned(),
                source,
            })
    }

    /// Every published version of `name`.
    pub fn entries(&self, name: &str) -> Result<Vec<IndexEntry>, RegistryError> {
        let url = format!("{}{}", self.base, index_path(name));
        match self.get(&url)? {
            Some(b) => parse_index(&url, &b),
            None => Err(RegistryError::NoSuchCrate {
                name: name.to_owned(),
                index: self.base.clone(),
            }),
        }
    }

    /// The `dl` template from `config.json`.
    pub fn dl_template(&self) -> Result<String, RegistryError> {
        let url = format!("{}config.json", self.base);
        let bytes = self
            .get(&url)?
            .ok_or_else(|| RegistryError::NoDl { url: url.clone() })?;
        let raw: RawRegistryConfig =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::ConfigJson {
                url: url.clone(),
                source,
            })?;
        raw.dl.ok_or(RegistryError::NoDl { url })
    }

    /// Resolves `name` (at `wanted`, if given) to an index entry.
    pub fn resolve(&self, name: &str, wanted: Option<&str>) -> Result<IndexEntry, RegistryError> {
        let entries = self.entries(name)?;
        select(&entries, wanted)
            .cloned()
            .ok_or_else(|| RegistryError::NoMatchingVersion {
                name: name.to_owned(),
                wanted: wanted.map_or("(any release)".to_owned(), |w| format!("v{w}")),
                index: self.base.clone(),
            })
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One `[[package]]` of `Cargo.lock`.
#[derive(Debug, Clone, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub source: Option<String>,
    pub checksum: Option<String>,
}

#[derive(Deserialize)]
struct RawLock {
    #[serde(default)]
    package: Vec<LockedPackage>,
}

/// The packages of a `Cargo.lock` file.
pub fn read_lockfile(path: &Path) -> Result<Vec<LockedPackage>, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let raw: RawLock = toml::from_str(&text).map_err(|source| RegistryError::Toml {
        file: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(raw.package)
}

/// Whether a `Cargo.lock` source is a registry (and not a path or git dependency).
pub fn is_registry_source(source: &str) -> bool {
    source.starts_with("registry+") || source.starts_with("sparse+")
}

/// A `.crate` file in cargo's download cache
/// (`$CARGO_HOME/registry/cache/<index dir>/<name>-<version>.crate`) whose
/// sha256 is `cksum`.
pub fn cached_crate(home: &Path, name: &str, version: &str, cksum: &str) -> Option<PathBuf> {
    let file = format!("{name}-{version}.crate");
    let dirs = std::fs::read_dir(home.join("registry").join("cache")).ok()?;
    for d in dirs.flatten() {
        let p = d.path().join(&file);
        if let Ok(bytes) = std::fs::read(&p) {
            if sha256_hex(&bytes).eq_ignore_ascii_case(cksum) {
                return Some(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("Serde_Json"), "se/rd/serde_json");
    }

    #[test]
    fn sparse_bases() {
        assert_eq!(
            sparse_base("sparse+http://h/index").unwrap(),
            "http://h/index/"
        );
        assert_eq!(sparse_base(CRATES_IO_GIT).unwrap(), CRATES_IO_SPARSE);
        assert!(sparse_base("registry+https://example/git-index").is_err());
    }

    fn e(v: &str, yanked: bool) -> IndexEntry {
        IndexEntry {
            name: "x".into(),
            vers: v.into(),
            cksum: String::new(),
            yanked,
        }
    }

    #[test]
    fn selection() {
        let es = vec![
            e("1.2.0", false),
            e("1.10.0", false),
            e("2.0.0-rc.1", false),
            e("1.11.0", true),
        ];
        assert_eq!(select(&es, None).unwrap().vers, "1.10.0");
        assert_eq!(select(&es, Some("1.2.0")).unwrap().vers, "1.2.0");
        assert_eq!(select(&es, Some("=2.0.0-rc.1")).unwrap().vers, "2.0.0-rc.1");
        assert!(select(&es, Some("1.11.0")).is_none());
        assert!(Version::parse("1.0.0-alpha").unwrap() < Version::parse("1.0.0").unwrap());
        assert!(
            Version::parse("1.0.0-alpha.2").unwrap() < Version::parse("1.0.0-alpha.10").unwrap()
        );
    }

    #[test]
    fn dl_templates() {
        assert_eq!(
            dl_url("https://d/api/v1/crates", "foo", "1.0.0", "ab"),
            "https://d/api/v1/crates/foo/1.0.0/download"
        );
        assert_eq!(
            dl_url(
                "http://h/{lowerprefix}/{crate}-{version}.crate?{sha256-checksum}",
                "FooBar",
                "1.0.0",
                "ab"
            ),
            "http://h/fo/ob/FooBar-1.0.0.crate?ab"
        );
        assert_eq!(
            dl_url("http://h/{prefix}/{crate}", "FooBar", "1", "x"),
            "http://h/Fo/oB/FooBar"
        );
    }
}
