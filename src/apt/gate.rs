//! The check apt runs on one `.deb`, shared by the `intoto` method and the
//! `Pre-Install-Pkgs` hook: apt-transport-in-toto's configuration (a layout,
//! the GPG key ids trusted to sign it, rebuilders serving links) or a
//! totogate policy file, then [`check::check`] on the package.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apt::config::IntotoConfig;
use crate::check::{self, Contents, LayoutCache, PolicyCheck, Request, Verdict};
use crate::crypto::PublicKey;
use crate::fetch::{Fetch, FetchLimits, Fetcher};
use crate::json::JsonLimits;
use crate::model::{Envelope, Payload};
use crate::package::Limits;
use crate::policy::Policy;
use crate::sandbox;
use crate::verify::{LinkRef, LinkSource, VerifyError};

/// Time allowed for each rebuilder's answer when the configuration does not
/// say (`APT::Intoto::Timeout`, seconds): a stalled rebuilder costs this, once.
pub const DEFAULT_REBUILDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the trusted layout, its keys and the links come from.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(
        "APT::Intoto::Layout is not set: install a layout you trust (signed, not expired) and point \
         APT::Intoto::Layout at it, with its signers' key ids in APT::Intoto::Keyids \
         (or set APT::Intoto::Policy to a totogate policy file)"
    )]
    NoLayout,
    #[error("APT::Intoto::Keyids is empty: name the GPG keys trusted to sign {0}")]
    NoKeyids(PathBuf),
    #[error("cannot read the layout {path}: {source}")]
    Layout {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layout keys from {home}: {source}")]
    Keys {
        home: PathBuf,
        source: crate::crypto::gpg::GpgError,
    },
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
}

/// What to tell apt about one package.
#[derive(Debug)]
pub enum Decision {
    /// Verified: go on.
    Allowed(Verdict),
    /// Refused only for missing links, and `NoFail` is set: go on, warn.
    Forgiven(Verdict),
    /// Refused: apt must not install it.
    Refused(Verdict),
    /// Not a `name_version_arch.deb` file name: the rebuilders cannot be
    /// asked about it, so it is refused too.
    Skipped(String),
}

enum Source {
    Layout {
        bytes: Vec<u8>,
        origin: String,
        keys: Vec<PublicKey>,
        rebuilders: Vec<String>,
    },
    Policy(Box<Policy>),
}

/// Loaded once per apt run: the layout and its keys (or the policy), the
/// HTTP agent, the confinement.
pub struct Gate {
    source: Source,
    no_fail: bool,
    fetcher: Fetcher,
    /// Every package of an apt run shares one layout: verified once.
    layouts: LayoutCache,
    pub unpack: Limits,
    pub sandbox: sandbox::Policy,
    pub inspection_timeout: Duration,
    pub work_dir: Option<PathBuf>,
}

impl Gate {
    pub fn new(config: &IntotoConfig) -> Result<Gate, GateError> {
        let timeout = config.timeout.unwrap_or(DEFAULT_REBUILDER_TIMEOUT);
        let limits = FetchLimits {
            connect_timeout: timeout.min(FetchLimits::default().connect_timeout),
            total_timeout: timeout,
            ..FetchLimits::default()
        };
        let source = match (&config.policy, &config.layout) {
            (Some(p), _) => Source::Policy(Box::new(Policy::load(p)?)),
            (None, None) => return Err(GateError::NoLayout),
            (None, Some(layout)) => {
                if config.keyids.is_empty() {
                    return Err(GateError::NoKeyids(layout.clone()));
                }
                let bytes = std::fs::read(layout).map_err(|source| GateError::Layout {
                    path: layout.clone(),
                    source,
                })?;
                let home = config
                    .gpg_home
                    .clone()
                    .unwrap_or_else(crate::crypto::gpg::default_home);
                let keys = crate::crypto::gpg::load_keys(&home, &config.keyids)
                    .map_err(|source| GateError::Keys { home, source })?;
                Source::Layout {
                    bytes,
                    origin: layout.display().to_string(),
                    keys,
                    rebuilders: config.rebuilders.clone(),
                }
            }
        };
        Ok(Gate {
            source,
            no_fail: config.no_fail,
            fetcher: Fetcher::new(limits),
            layouts: LayoutCache::new(),
            unpack: Limits::default(),
            sandbox: sandbox::Policy {
                timeout: Duration::from_secs(60),
                ..sandbox::Policy::default()
            },
            inspection_timeout: Duration::from_secs(60),
            work_dir: None,
        })
    }

    /// Checks the `.deb` at `deb`. Its file name (`name_version_arch.deb`, as
    /// apt names downloads) gives the name and version the rebuilders are
    /// asked about, as apt-transport-in-toto does.
    pub fn check_deb(&self, deb: &Path) -> Decision {
        let Some((name, version)) = deb_name_version(deb) else {
            return Decision::Skipped(format!(
                "{}: not a name_version_arch.deb file name",
                deb.display()
            ));
        };
        let verdict = match &self.source {
            Source::Policy(policy) => check::check_with_policy(
                deb,
                &PolicyCheck {
                    policy,
                    fetcher: &self.fetcher,
                    layouts: Some(&self.layouts),
                    unpack: self.unpack.clone(),
                    sandbox: self.sandbox.clone(),
                    inspection_timeout: self.inspection_timeout,
                    work_dir: self.work_dir.clone(),
                },
            ),
            Source::Layout {
                bytes,
                origin,
                keys,
                rebuilders,
            } => {
                let links = RebuilderLinks::fetch(&self.fetcher, rebuilders, name, version);
                let mut v = check::check(&Request {
                    package: deb,
                    // The verification directory apt-transport-in-toto
                    // makes: the .deb alone, so layouts written for it give
                    // the same verdicts.
                    contents: Contents::PackageOnly,
                    layouts: Some(&self.layouts),
                    layout: bytes,
                    layout_origin: origin,
                    layout_keys: keys,
                    links: &links,
                    unpack: self.unpack.clone(),
                    sandbox: self.sandbox.clone(),
                    inspection_timeout: self.inspection_timeout,
                    work_dir: self.work_dir.clone(),
                });
                // Why links are missing belongs with a refusal.
                if v.allowed {
                    v.warnings.extend(links.problems);
                } else {
                    v.reasons.extend(links.problems);
                }
                v
            }
        };
        if verdict.allowed {
            Decision::Allowed(verdict)
        } else if verdict.missing_links && self.no_fail {
            Decision::Forgiven(verdict)
        } else {
            Decision::Refused(verdict)
        }
    }
}

/// `name` and `version` of `name_version_arch.deb` (the version as it is in
/// the file name, epoch colon percent-encoded, as apt-transport-in-toto
/// sends it to rebuilders).
pub fn deb_name_version(deb: &Path) -> Option<(&str, &str)> {
    let stem = deb.file_name()?.to_str()?.strip_suffix(".deb")?;
    let mut parts = stem.split('_');
    let (name, version, _arch) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.is_empty() || version.is_empty() {
        return None;
    }
    Some((name, version))
}

/// Links served by rebuilders at `{rebuilder}/sources/{name}/{version}/metadata`,
/// fetched concurrently, each filed under the name the reference gives it
/// (`<link name>.<first signature's keyid8>.link`). A rebuilder that fails,
/// stalls or serves garbage is a warning, as in apt-transport-in-toto: the
/// threshold check then speaks for the missing link.
pub struct RebuilderLinks {
    files: HashMap<String, (String, Vec<u8>)>,
    pub problems: Vec<String>,
}

impl RebuilderLinks {
    pub fn fetch(fetcher: &dyn Fetch, rebuilders: &[String], name: &str, version: &str) -> Self {
        let urls: Vec<String> = rebuilders
            .iter()
            .map(|r| {
                format!(
                    "{}/sources/{}/{}/metadata",
                    r.trim_end_matches('/'),
                    url_segment(name),
                    url_segment(version)
                )
            })
            .collect();
        let mut files = HashMap::new();
        let mut problems = Vec::new();
        for (url, got) in fetcher.get_many(&urls) {
            let bytes = match got {
                Ok(Some(b)) => b,
                Ok(None) => {
                    problems.push(format!("rebuilder {url}: no link (404)"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("rebuilder {url}: {e}"));
                    continue;
                }
            };
            let env = match Envelope::parse(&bytes, JsonLimits::default()) {
                Ok(e) => e,
                Err(e) => {
                    problems.push(format!("rebuilder {url}: {e}"));
                    continue;
                }
            };
            let Payload::Link(link) = env.payload() else {
                problems.push(format!("rebuilder {url}: served a layout, not a link"));
                continue;
            };
            let Some(sig) = env.signatures().first() else {
                problems.push(format!("rebuilder {url}: the link is not signed"));
                continue;
            };
            let keyid8: String = sig.keyid.chars().take(8).collect();
            files.insert(format!("{}.{keyid8}.link", link.name), (url, bytes));
        }
        RebuilderLinks { files, problems }
    }
}

impl LinkSource for RebuilderLinks {
    fn fetch(&self, link: &LinkRef, _limits: JsonLimits) -> Result<Option<Vec<u8>>, VerifyError> {
        if !link.subdir.as_os_str().is_empty() {
            return Ok(None); // rebuilders serve no sublayout links
        }
        Ok(self.files.get(&link.file_name()).map(|(_, b)| b.clone()))
    }
    fn describe(&self, link: &LinkRef) -> String {
        match self.files.get(&link.file_name()) {
            Some((url, _)) => url.clone(),
            None => format!("{} (from no rebuilder)", link.file_name()),
        }
    }
}

/// Percent-encodes what would change a URL path segment's meaning.
fn url_segment(s: &str) -> String {
    if s == "." || s == ".." {
        return s.replace('.', "%2E");
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' | b'%' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_from_apt_file_names() {
        let p = Path::new("/var/cache/apt/archives/partial/hello_2.10-3_amd64.deb");
        assert_eq!(deb_name_version(p), Some(("hello", "2.10-3")));
        let p = Path::new("libc6_2.36-9%3a1_amd64.deb");
        assert_eq!(deb_name_version(p), Some(("libc6", "2.36-9%3a1")));
        assert_eq!(deb_name_version(Path::new("Packages.xz")), None);
        assert_eq!(deb_name_version(Path::new("a_b.deb")), None);
        assert_eq!(deb_name_version(Path::new("a_b_c_d.deb")), None);
        assert_eq!(deb_name_version(Path::new("_1_all.deb")), None);
    }

    /// Rebuilders as a table: URL → what they answer.
    struct Fake(Vec<(&'static str, crate::fetch::Fetched)>);
    impl Fetch for Fake {
        fn get(&self, location: &str) -> crate::fetch::Fetched {
            let (_, r) = self
                .0
                .iter()
                .find(|(prefix, _)| location.starts_with(prefix))
                .expect("a rebuilder the test knows");
            match r {
                Ok(b) => Ok(b.clone()),
                Err(_) => Err(crate::fetch::FetchError::UnsupportedScheme {
                    url: location.into(),
                }),
            }
        }
    }

    #[test]
    fn rebuilder_links_are_filed_by_name_and_signer_and_bad_answers_are_reasons() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        // A link the reference signed (GPG, step `demo`), and a layout.
        let link = std::fs::read(testdata.join("gpg/demo.7a99af80.link")).unwrap();
        let layout = std::fs::read(testdata.join("samples/deb/root.layout")).unwrap();
        let fake = Fake(vec![
            ("http://good", Ok(Some(link.clone()))),
            ("http://missing", Ok(None)),
            ("http://garbage", Ok(Some(b"{\"signed\": ".to_vec()))),
            ("http://layout", Ok(Some(layout))),
            (
                "http://broken",
                Err(crate::fetch::FetchError::UnsupportedScheme { url: String::new() }),
            ),
        ]);
        let rebuilders: Vec<String> = ["good", "missing", "garbage", "layout", "broken"]
            .iter()
            .map(|r| format!("http://{r}/"))
            .collect();
        let got = RebuilderLinks::fetch(&fake, &rebuilders, "hello", "1:2.0");
        let wanted = LinkRef {
            subdir: PathBuf::new(),
            step: "demo".into(),
            keyid: "7a99af80bfc638d572c63adacf6ecf4712d0991a".into(),
        };
        let limits = JsonLimits::default();
        assert_eq!(got.fetch(&wanted, limits).unwrap(), Some(link));
        assert_eq!(
            got.describe(&wanted),
            "http://good/sources/hello/1%3A2.0/metadata"
        );
        // A sublayout's links are never served by rebuilders.
        let sub = LinkRef {
            subdir: "demo.7a99af80".into(),
            ..wanted
        };
        assert_eq!(got.fetch(&sub, limits).unwrap(), None);
        let problems = got.problems.join("\n");
        assert_eq!(got.problems.len(), 4, "{problems}");
        for (who, why) in [
            ("missing", "no link"),
            ("garbage", ""),
            ("layout", "served a layout"),
            ("broken", ""),
        ] {
            assert!(
                got.problems
                    .iter()
                    .any(|p| p.starts_with(&format!("rebuilder http://{who}/")) && p.contains(why)),
                "{who}: {problems}"
            );
        }
    }

    #[test]
    fn segments_cannot_change_the_url_shape() {
        assert_eq!(url_segment("1:2.0+b1"), "1%3A2.0+b1");
        assert_eq!(url_segment("a/../b?c#d"), "a%2F..%2Fb%3Fc%23d");
        assert_eq!(url_segment(".."), "%2E%2E");
        // Already-encoded epochs from apt file names pass as they are.
        assert_eq!(url_segment("2.36-9%3a1"), "2.36-9%3a1");
    }
}
