//! Which layout keys are trusted for which packages, where their metadata
//! lives, and whether it must exist: the TOML policy file (by default
//! [`DEFAULT_PATH`]).
//!
//! ```toml
//! [defaults]
//! required = true            # refuse packages no rule matches / with no metadata
//! # Optional: keys for the built-in sibling-directory rule (see `Policy::default_rule`).
//! # layout_keys = ["keys/owner.pub"]
//!
//! [[rule]]
//! ecosystem = "deb"          # deb | crate | any
//! name = "hello*"            # Python fnmatch on the package name
//! layout_keys = ["keys/owner.pub"]   # PEM SPKI, relative to this file's directory
//! layout = "https://meta.example/{name}/{version}/root.layout"
//! links = "https://meta.example/{name}/{version}/"   # + `{step}.{keyid8}.link`
//! required = true            # default: [defaults].required
//! ```
//!
//! Rules are tried in file order; the first match wins. `layout`/`links`
//! default to the sibling-directory convention: `<package file>.intoto/`
//! holding `root.layout` and the links. Key files are loaded (and the
//! templates checked for unknown variables) when the policy is parsed, so a
//! typo fails at load time rather than at the first install.
//!
//! The policy decides whose signatures are trusted, so a policy or key file
//! that other users can write to is refused.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::crypto::{KeyError, PublicKey};
use crate::fetch::{self, FetchError, Vars};
use crate::verify::fnmatch::Pattern;

/// Where the policy lives unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/totogate/policy.toml";
/// Layout template of the sibling-directory convention.
pub const SIBLING_LAYOUT: &str = "{dir}/{filename}.intoto/root.layout";
/// Links template of the sibling-directory convention.
pub const SIBLING_LINKS: &str = "{dir}/{filename}.intoto/";

/// Policy and key files are small; this only stops `/dev/zero` mistakes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A package ecosystem a rule can be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecosystem {
    Deb,
    Crate,
}

impl Ecosystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Crate => "crate",
        }
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ecosystem {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "deb" => Ok(Ecosystem::Deb),
            "crate" => Ok(Ecosystem::Crate),
            _ => Err(()),
        }
    }
}

/// Which part of the policy an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleRef {
    Defaults,
    /// `index` counts `[[rule]]` tables from 0; shown counting from 1.
    Rule {
        index: usize,
        name: String,
    },
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            RuleRef::Defaults => f.write_str("[defaults]"),
            RuleRef::Rule { index, name } => write!(f, "rule {} (name {name:?})", index + 1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: over the {limit}-byte limit for policy and key files")]
    TooLarge { file: PathBuf, limit: u64 },
    #[error("{file}: writable by other users; refusing to take trust decisions from it")]
    WorldWritable { file: PathBuf },
    #[error("{file}: {source}")]
    Syntax {
        file: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{file}: {rule}: field `ecosystem`: unknown ecosystem {value:?} (expected deb, crate or any)")]
    UnknownEcosystem {
        file: PathBuf,
        rule: RuleRef,
        value: String,
    },
    #[error("{file}: {rule}: field `layout_keys`: no keys; a rule must name at least one trusted layout key")]
    NoKeys { file: PathBuf, rule: RuleRef },
    #[error("{file}: {rule}: field `layout_keys`: key file {key_file}: {source}")]
    KeyFile {
        file: PathBuf,
        rule: RuleRef,
        key_file: PathBuf,
        #[source]
        source: Box<PolicyError>,
    },
    #[error("{file}: {rule}: field `layout_keys`: key file {key_file}: {source}")]
    Key {
        file: PathBuf,
        rule: RuleRef,
        key_file: PathBuf,
        #[source]
        source: Box<KeyError>,
    },
    #[error("{file}: {rule}: field `{field}`: {source}")]
    Template {
        file: PathBuf,
        rule: RuleRef,
        field: &'static str,
        #[source]
        source: Box<FetchError>,
    },
    #[error("{file}: {rule}: field `links`: {value:?} must end in `/` (link files are `<links>{{step}}.{{keyid8}}.link`) or name `{{step}}` itself")]
    LinksNotBase {
        file: PathBuf,
        rule: RuleRef,
        value: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    required: Option<bool>,
    layout_keys: Option<Vec<PathBuf>>,
    layout: Option<String>,
    links: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default = "any")]
    ecosystem: String,
    name: String,
    layout_keys: Vec<PathBuf>,
    layout: Option<String>,
    links: Option<String>,
    required: Option<bool>,
}

fn any() -> String {
    "any".to_string()
}

/// One `[[rule]]`: for matching packages, the trusted layout keys and where
/// the layout and links are.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position among the `[[rule]]` tables (from 0); `None` for the
    /// built-in sibling-directory rule.
    pub index: Option<usize>,
    /// `None` matches every ecosystem (`ecosystem = "any"`).
    pub ecosystem: Option<Ecosystem>,
    /// The name pattern as written.
    pub name: String,
    pattern: Pattern,
    /// The pattern in crates.io's normalised form (see [`normalise_crate`]).
    crate_pattern: Pattern,
    /// Keys the layout must be signed by (loaded at parse time).
    pub layout_keys: Vec<PublicKey>,
    /// URL or path template of the layout.
    pub layout: String,
    /// Base URL or directory template of the links (ends in `/`), or a full
    /// link file template naming `{step}`.
    pub links: String,
    /// Refuse the package when its metadata is missing.
    pub required: bool,
}

/// crates.io treats names as equal ignoring ASCII case and `-` vs `_`
/// (`serde-json` cannot be registered next to `serde_json`), so a rule for
/// one must cover every spelling of it.
fn normalise_crate(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

impl Rule {
    /// The sibling-directory convention for `layout_keys`:
    /// `<package file>.intoto/root.layout` and links beside it. For callers
    /// that have keys but no matching rule (e.g. keys given on the command line).
    pub fn sibling(layout_keys: Vec<PublicKey>, required: bool) -> Rule {
        Rule {
            index: None,
            ecosystem: None,
            name: "*".to_string(),
            pattern: Pattern::new("*"),
            crate_pattern: Pattern::new("*"),
            layout_keys,
            layout: SIBLING_LAYOUT.to_string(),
            links: SIBLING_LINKS.to_string(),
            required,
        }
    }

    /// Whether this rule covers package `name` of `ecosystem`.
    pub fn matches(&self, ecosystem: Ecosystem, name: &str) -> bool {
        if self.ecosystem.is_some_and(|e| e != ecosystem) {
            return false;
        }
        match ecosystem {
            Ecosystem::Crate => self.crate_pattern.matches(&normalise_crate(name)),
            Ecosystem::Deb => self.pattern.matches(name),
        }
    }

    /// Where the layout is for these package variables.
    pub fn layout_location(&self, vars: &Vars) -> Result<String, FetchError> {
        fetch::expand(&self.layout, vars)
    }

    /// Where the link of `vars.step` by `vars.keyid` is:
    /// `<links>{step}.{keyid8}.link`, or `links` itself if it names `{step}`.
    pub fn link_location(&self, vars: &Vars) -> Result<String, FetchError> {
        if fetch::uses_var(&self.links, "step") {
            fetch::expand(&self.links, vars)
        } else {
            fetch::expand(&format!("{}{{step}}.{{keyid8}}.link", self.links), vars)
        }
    }
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// `[defaults] required`: refuse packages that no rule matches or whose
    /// rule does not say otherwise. Defaults to `true` (fail closed).
    pub required: bool,
    pub rules: Vec<Rule>,
    default_rule: Option<Rule>,
}

impl Policy {
    /// Reads and parses a policy file; key paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let bytes = read_trusted(path)?;
        let text = String::from_utf8(bytes).map_err(|e| PolicyError::Read {
            file: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Self::parse_named(&text, base, path)
    }

    /// Parses policy text; key paths are relative to `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Policy, PolicyError> {
        Self::parse_named(text, base_dir, &base_dir.join("<policy>"))
    }

    fn parse_named(text: &str, base_dir: &Path, file: &Path) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|source| PolicyError::Syntax {
            file: file.to_path_buf(),
            source: Box::new(source),
        })?;
        let required = raw.defaults.required.unwrap_or(true);
        let cx = Cx { file, base_dir };
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (index, r) in raw.rule.into_iter().enumerate() {
            let at = RuleRef::Rule {
                index,
                name: r.name.clone(),
            };
            let ecosystem = match r.ecosystem.as_str() {
                "any" => None,
                s => Some(
                    s.parse::<Ecosystem>()
                        .map_err(|()| PolicyError::UnknownEcosystem {
                            file: file.to_path_buf(),
                            rule: at.clone(),
                            value: r.ecosystem.clone(),
                        })?,
                ),
            };
            let layout_keys = cx.keys(&at, &r.layout_keys)?;
            let (layout, links) = cx.templates(&at, r.layout, r.links)?;
            rules.push(Rule {
                index: Some(index),
                ecosystem,
                pattern: Pattern::new(&r.name),
                crate_pattern: Pattern::new(&normalise_crate(&r.name)),
                name: r.name,
                layout_keys,
                layout,
                links,
                required: r.required.unwrap_or(required),
            });
        }
        let d = raw.defaults;
        // Templates are checked even without keys (a typo is still a typo).
        let (layout, links) = cx.templates(&RuleRef::Defaults, d.layout, d.links)?;
        let default_rule = match d.layout_keys {
            None => None,
            Some(paths) => Some(Rule {
                layout,
                links,
                ..Rule::sibling(cx.keys(&RuleRef::Defaults, &paths)?, required)
            }),
        };
        Ok(Policy {
            file: file.to_path_buf(),
            required,
            rules,
            default_rule,
        })
    }

    /// The first rule covering package `name` of `ecosystem`, if any.
    pub fn rule_for(&self, ecosystem: Ecosystem, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(ecosystem, name))
    }

    /// The built-in sibling-directory rule, when `[defaults]` names
    /// `layout_keys` (its `layout`/`links` may override the templates).
    pub fn default_rule(&self) -> Option<&Rule> {
        self.default_rule.as_ref()
    }

    /// [`Policy::rule_for`], falling back to [`Policy::default_rule`].
    pub fn rule_or_default(&self, ecosystem: Ecosystem, name: &str) -> Option<&Rule> {
        self.rule_for(ecosystem, name).or(self.default_rule())
    }
}

struct Cx<'a> {
    file: &'a Path,
    base_dir: &'a Path,
}

impl Cx<'_> {
    fn keys(&self, at: &RuleRef, paths: &[PathBuf]) -> Result<Vec<PublicKey>, PolicyError> {
        if paths.is_empty() {
            return Err(PolicyError::NoKeys {
                file: self.file.to_path_buf(),
                rule: at.clone(),
            });
        }
        paths
            .iter()
            .map(|p| {
                let key_file = self.base_dir.join(p);
                let wrap = |source| PolicyError::KeyFile {
                    file: self.file.to_path_buf(),
                    rule: at.clone(),
                    key_file: key_file.clone(),
                    source: Box::new(source),
                };
                let bytes = read_trusted(&key_file).map_err(wrap)?;
                let pem = String::from_utf8_lossy(&bytes);
                PublicKey::from_pem(&pem).map_err(|source| PolicyError::Key {
                    file: self.file.to_path_buf(),
                    rule: at.clone(),
                    key_file: key_file.clone(),
                    source: Box::new(source),
                })
            })
            .collect()
    }

    fn templates(
        &self,
        at: &RuleRef,
        layout: Option<String>,
        links: Option<String>,
    ) -> Result<(String, String), PolicyError> {
        let layout = layout.unwrap_or_else(|| SIBLING_LAYOUT.to_string());
        let links = links.unwrap_or_else(|| SIBLING_LINKS.to_string());
        for (field, t) in [("layout", &layout), ("links", &links)] {
            fetch::check_template(t).map_err(|source| PolicyError::Template {
                file: self.file.to_path_buf(),
                rule: at.clone(),
                field,
                source: Box::new(source),
            })?;
        }
        if !fetch::uses_var(&links, "step") && !links.ends_with('/') {
            return Err(PolicyError::LinksNotBase {
                file: self.file.to_path_buf(),
                rule: at.clone(),
                value: links,
            });
        }
        Ok((layout, links))
    }
}

/// Reads a file that carries trust decisions: capped, and refused if other
/// users can write to it.
fn read_trusted(path: &Path) -> Result<Vec<u8>, PolicyError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| PolicyError::Read {
        file: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(PolicyError::WorldWritable {
            file: path.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(read_err)?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(PolicyError::TooLarge {
            file: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate, KeyType};

    /// A policy dir with `keys/owner.pub` and `keys/other.pub`.
    fn setup() -> (tempfile::TempDir, PublicKey, PublicKey) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keys")).unwrap();
        let owner = generate(KeyType::Ed25519, false).unwrap().public().clone();
        let other = generate(KeyType::Ed25519, false).unwrap().public().clone();
        std::fs::write(d.path().join("keys/owner.pub"), owner.to_pem()).unwrap();
        std::fs::write(d.path().join("keys/other.pub"), other.to_pem()).unwrap();
        (d, owner, other)
    }

    const EXAMPLE: &str = r#"
[defaults]
required = true

[[rule]]
ecosystem = "deb"
name = "hello*"
layout_keys = ["keys/owner.pub"]
layout = "https://meta.example/{name}/{version}/root.layout"
links = "https://meta.example/{name}/{version}/"

[[rule]]
ecosystem = "crate"
name = "serde_*"
layout_keys = ["keys/other.pub", "keys/owner.pub"]
links = "{dir}/{filename}.intoto/{step}.{keyid8}.link"
required = false

[[rule]]
ecosystem = "any"
name = "*"
layout_keys = ["keys/other.pub"]
"#;

    #[test]
    fn loads_the_example_and_matches_first_rule() {
        let (d, owner, other) = setup();
        let path = d.path().join("policy.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let p = Policy::load(&path).unwrap();
        assert!(p.required);
        assert_eq!(p.rules.len(), 3);

        let r = p.rule_for(Ecosystem::Deb, "hello-dbg").unwrap();
        assert_eq!(r.index, Some(0));
        assert_eq!(r.layout_keys, vec![owner.clone()]);
        assert!(r.required);
        let vars = Vars {
            step: Some("build".into()),
            keyid: Some(owner.keyid().as_str().into()),
            ..Vars::for_package("hello", "2.10-3", Path::new("/pool/hello_2.10-3_all.deb"))
        };
        assert_eq!(
            r.layout_location(&vars).unwrap(),
            "https://meta.example/hello/2.10-3/root.layout"
        );
        assert_eq!(
            r.link_location(&vars).unwrap(),
            format!(
                "https://meta.example/hello/2.10-3/build.{}.link",
                owner.keyid().short()
            )
        );

        // Same name, other ecosystem: falls through to the `any` rule.
        let r = p.rule_for(Ecosystem::Crate, "hello").unwrap();
        assert_eq!(r.index, Some(2));
        assert_eq!(r.layout_keys, vec![other.clone()]);
        // Sibling defaults for layout and links.
        assert_eq!(
            r.layout_location(&vars).unwrap(),
            "/pool/hello_2.10-3_all.deb.intoto/root.layout"
        );
        assert_eq!(
            r.link_location(&vars).unwrap(),
            format!(
                "/pool/hello_2.10-3_all.deb.intoto/build.{}.link",
                owner.keyid().short()
            )
        );

        // crates.io spellings: case and `-`/`_` do not escape the rule.
        for n in ["serde_json", "serde-json", "Serde-JSON"] {
            let r = p.rule_for(Ecosystem::Crate, n).unwrap();
            assert_eq!(r.index, Some(1), "{n}");
            assert!(!r.required);
            assert_eq!(r.layout_keys, vec![other.clone(), owner.clone()]);
        }
        // ...but deb names are matched as written.
        assert_eq!(
            p.rule_for(Ecosystem::Deb, "serde-json").unwrap().index,
            Some(2)
        );
        assert!(p.default_rule().is_none());
    }

    #[test]
    fn no_match_and_defaults() {
        let (d, owner, _) = setup();
        let text = r#"
[defaults]
required = false
layout_keys = ["keys/owner.pub"]

[[rule]]
ecosystem = "deb"
name = "hello"
layout_keys = ["keys/owner.pub"]
"#;
        let p = Policy::parse(text, d.path()).unwrap();
        assert!(!p.required);
        assert!(p.rule_for(Ecosystem::Deb, "hello2").is_none());
        assert!(!p.rule_for(Ecosystem::Deb, "hello").unwrap().required);
        let r = p.rule_or_default(Ecosystem::Deb, "hello2").unwrap();
        assert_eq!(r.index, None);
        assert_eq!(r.layout, SIBLING_LAYOUT);
        assert_eq!(r.links, SIBLING_LINKS);
        assert_eq!(r.layout_keys, vec![owner.clone()]);

        // Empty policy: fail closed, nothing matches.
        let p = Policy::parse("", d.path()).unwrap();
        assert!(p.required);
        assert!(p.rule_or_default(Ecosystem::Crate, "x").is_none());

        let s = Rule::sibling(vec![owner], true);
        assert!(s.matches(Ecosystem::Deb, "anything"));
    }

    fn err(text: &str) -> String {
        let (d, _, _) = setup();
        Policy::parse(text, d.path()).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_rule_and_field() {
        let e = err(
            "[[rule]]\necosystem = \"pypi\"\nname = \"x\"\nlayout_keys = [\"keys/owner.pub\"]\n",
        );
        assert!(
            e.contains("rule 1 (name \"x\")") && e.contains("`ecosystem`") && e.contains("pypi"),
            "{e}"
        );

        let e = err("[[rule]]\nname = \"a\"\nlayout_keys = [\"keys/owner.pub\"]\n[[rule]]\nname = \"b\"\nlayout_keys = [\"keys/missing.pub\"]\n");
        assert!(
            e.contains("rule 2 (name \"b\")")
                && e.contains("`layout_keys`")
                && e.contains("keys/missing.pub"),
            "{e}"
        );

        let e = err("[[rule]]\nname = \"a\"\nlayout_keys = []\n");
        assert!(e.contains("rule 1") && e.contains("no keys"), "{e}");

        let e = err("[[rule]]\nname = \"a\"\nlayout_keys = [\"keys/owner.pub\"]\nlayout = \"https://m/{nmae}/root.layout\"\n");
        assert!(
            e.contains("rule 1") && e.contains("`layout`") && e.contains("{nmae}"),
            "{e}"
        );

        let e = err("[[rule]]\nname = \"a\"\nlayout_keys = [\"keys/owner.pub\"]\nlinks = \"https://m/{name}\"\n");
        assert!(
            e.contains("`links`") && e.contains("must end in `/`"),
            "{e}"
        );

        // Unknown fields are typos, not ignored.
        let e = err("[[rule]]\nname = \"a\"\nlayout_key = [\"keys/owner.pub\"]\n");
        assert!(e.contains("layout_key"), "{e}");

        let (d, _, _) = setup();
        std::fs::write(d.path().join("keys/bad.pub"), "not a key").unwrap();
        let e = Policy::parse(
            "[[rule]]\nname = \"a\"\nlayout_keys = [\"keys/bad.pub\"]\n",
            d.path(),
        )
        .unwrap_err();
        assert!(
            matches!(
                &e,
                PolicyError::Key {
                    rule: RuleRef::Rule { index: 0, .. },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn refuses_world_writable_files() {
        use std::os::unix::fs::PermissionsExt;
        let (d, _, _) = setup();
        let path = d.path().join("policy.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            Policy::load(&path),
            Err(PolicyError::WorldWritable { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Policy::load(&path).is_ok());
        let missing = Policy::load(&d.path().join("nope.toml")).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"), "{missing}");
    }
}
