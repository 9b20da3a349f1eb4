//! The `APT::Intoto` settings, read from apt's configuration as apt hands it
//! out: `Config-Item: key=value` fields of a `601 Configuration` message, and
//! the `key=value` lines of a `DPkg::Pre-Install-Pkgs` hook's config dump.
//!
//! What apt 2.6 writes (see `testdata/apt/recorded/`):
//! - a list entry (`Rebuilders { "a"; "b"; };`, `Layout {"/p"};`, `-o
//!   APT::Intoto::Rebuilders::=a`) is a line `APT::Intoto::Rebuilders::=a`
//!   per entry; a scalar (`Layout "/p";`) is `APT::Intoto::Layout=/p`.
//! - keys and values are %-encoded (`%20` for a space, `%c3%bc` for `ü`,
//!   `%25` for `%`): in a 601 the key escapes `=`, `"` and the value `=` too
//!   (`a%3db`); in the hook dump the value keeps `=` verbatim (`a=b`). Both
//!   split at the first `=` and decode the same way. Items with an empty
//!   value are left out of a 601.
//! - names are case-insensitive, as everywhere in apt's configuration.
//!
//! `APT::Intoto` items follow apt-transport-in-toto's shipped
//! `apt.conf.d/intoto` (`LogLevel`, `Rebuilders`, `GPGHomedir`, `Layout`,
//! `Keyids`, `NoFail`) plus totogate's own `Policy` and `Timeout` (seconds).
//! A scalar item given twice with different values (e.g. `Layout {"/a";
//! "/b";}`, or the list form plus the scalar form) is an error, not "last one
//! wins": the layout and keys decide what gets installed. Unknown
//! `APT::Intoto` items only produce a warning.

use std::path::PathBuf;
use std::time::Duration;

use super::protocol::{Message, CONFIGURATION};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("apt config item {0:?} has no '='")]
    NoEquals(String),
    #[error("apt config item {0:?} has a bad %-escape")]
    BadEscape(String),
    #[error("apt config item {0:?} is not UTF-8 once %-decoded")]
    NotUtf8(String),
    #[error("expected a 601 Configuration message, got {0}")]
    NotConfiguration(u16),
    #[error("{key} is given more than once ({first:?} and {second:?})")]
    Conflicting {
        key: String,
        first: String,
        second: String,
    },
    #[error("{0} is empty")]
    Empty(String),
    #[error("{key}: {value:?} is not an OpenPGP key id or fingerprint (hex digits)")]
    BadKeyid { key: String, value: String },
    #[error("{key}: {value:?} is not a whole number of seconds")]
    BadTimeout { key: String, value: String },
}

/// Settings for the intoto method and hook. Paths and URLs are as configured;
/// nothing is checked against the filesystem or network here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntotoConfig {
    /// `APT::Intoto::Rebuilders`: base URLs serving link metadata, in order.
    pub rebuilders: Vec<String>,
    /// `APT::Intoto::Layout`: the root layout.
    pub layout: Option<PathBuf>,
    /// `APT::Intoto::Keyids`: layout key ids, whitespace removed, uppercase,
    /// a leading `0x` dropped.
    pub keyids: Vec<String>,
    /// `APT::Intoto::GPGHomedir`.
    pub gpg_home: Option<PathBuf>,
    /// `APT::Intoto::LogLevel`: Python logging levels (10 debug … 50 critical).
    pub log_level: Option<u8>,
    /// `APT::Intoto::NoFail`, true/false as apt's `FindB` reads it.
    pub no_fail: bool,
    /// `APT::Intoto::Policy`: a totogate policy file.
    pub policy: Option<PathBuf>,
    /// `APT::Intoto::Timeout`, seconds, for fetching link metadata.
    pub timeout: Option<Duration>,
    /// `Acquire::http::Proxy` (may be `DIRECT`, meaning none).
    pub http_proxy: Option<String>,
    /// `Acquire::http::Timeout`, seconds.
    pub http_timeout: Option<Duration>,
    /// `Acquire::ForceHash`: the one hash type apt compares downloads by.
    pub force_hash: Option<String>,
    /// `Debug::Acquire::intoto`.
    pub debug: bool,
    /// Unknown `APT::Intoto` items and values that were ignored.
    pub warnings: Vec<String>,
}

/// Splits a `key=value` config line at the first `=` and %-decodes both.
/// The key keeps a trailing `::` (a list entry).
pub fn decode_item(item: &str) -> Result<(String, String), ConfigError> {
    let (key, value) = item
        .split_once('=')
        .ok_or_else(|| ConfigError::NoEquals(item.to_string()))?;
    Ok((percent_decode(key, item)?, percent_decode(value, item)?))
}

fn percent_decode(s: &str, item: &str) -> Result<String, ConfigError> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConfigError::BadEscape(item.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConfigError::NotUtf8(item.to_string()))
}

/// apt's `StringToBool`: `0`/`1`, or (any case) no/false/without/off/disable
/// and yes/true/with/on/enable. Anything else is `None` (apt then uses the
/// default).
pub fn apt_bool(value: &str) -> Option<bool> {
    const NO: [&str; 5] = ["no", "false", "without", "off", "disable"];
    const YES: [&str; 5] = ["yes", "true", "with", "on", "enable"];
    match value {
        "0" => Some(false),
        "1" => Some(true),
        v if NO.iter().any(|w| w.eq_ignore_ascii_case(v)) => Some(false),
        v if YES.iter().any(|w| w.eq_ignore_ascii_case(v)) => Some(true),
        _ => None,
    }
}

const PREFIX: &str = "apt::intoto";

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

impl IntotoConfig {
    /// Reads the `Config-Item` fields of a `601 Configuration`.
    pub fn from_configuration(message: &Message) -> Result<IntotoConfig, ConfigError> {
        if message.code != CONFIGURATION {
            return Err(ConfigError::NotConfiguration(message.code));
        }
        let items = message
            .fields_named("Config-Item")
            .map(decode_item)
            .collect::<Result<Vec<_>, _>>()?;
        IntotoConfig::from_items(items.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Reads already-decoded `(key, value)` pairs (a hook's config dump, or
    /// [`decode_item`]'s output). Items outside `APT::Intoto` other than the
    /// few generic ones it knows are ignored.
    pub fn from_items<'a>(
        items: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<IntotoConfig, ConfigError> {
        let mut cfg = IntotoConfig::default();
        let mut scalars = Scalars::default();
        for (key, value) in items {
            if let Some(rest) = strip_prefix_ci(key, PREFIX) {
                cfg.intoto_item(key, rest, value, &mut scalars)?;
            } else if key.eq_ignore_ascii_case("Acquire::http::Proxy") {
                cfg.http_proxy = Some(value.to_string());
            } else if key.eq_ignore_ascii_case("Acquire::http::Timeout") {
                match value.parse::<u64>() {
                    Ok(s) => cfg.http_timeout = Some(Duration::from_secs(s)),
                    Err(_) => cfg
                        .warnings
                        .push(format!("ignoring {key}={value:?}: not a number of seconds")),
                }
            } else if key.eq_ignore_ascii_case("Acquire::ForceHash") && !value.is_empty() {
                cfg.force_hash = Some(value.to_string());
            } else if key.eq_ignore_ascii_case("Debug::Acquire::intoto") {
                cfg.debug = cfg.bool_item(key, value);
            }
        }
        Ok(cfg)
    }

    fn bool_item(&mut self, key: &str, value: &str) -> bool {
        apt_bool(value).unwrap_or_else(|| {
            self.warnings
                .push(format!("{key}={value:?} is not a boolean, taken as false"));
            false
        })
    }

    fn intoto_item(
        &mut self,
        key: &str,
        rest: &str,
        value: &str,
        scalars: &mut Scalars,
    ) -> Result<(), ConfigError> {
        // rest is "" (the scope itself), "::Name", "::Name::" (list entry) or
        // "::Name::tag" (a named list entry).
        let Some(rest) = rest.strip_prefix("::") else {
            if !rest.is_empty() || value.is_empty() {
                // APT::IntotoSomethingElse, or the bare scope line.
                return Ok(());
            }
            self.warnings
                .push(format!("ignoring unknown apt config item {key}={value:?}"));
            return Ok(());
        };
        let (name, entry) = match rest.split_once("::") {
            Some((name, tag)) => (name, Some(tag)),
            None => (rest, None),
        };
        let lname = name.to_ascii_lowercase();
        let canonical = format!("APT::Intoto::{name}");
        match (lname.as_str(), entry) {
            ("rebuilders", _) => {
                if value.is_empty() {
                    self.warnings.push(format!("ignoring empty {key}"));
                } else {
                    self.rebuilders.push(value.to_string());
                }
            }
            ("keyids", _) => {
                if let Some(id) = normalise_keyid(value) {
                    self.keyids.push(id);
                } else {
                    return Err(ConfigError::BadKeyid {
                        key: canonical,
                        value: value.to_string(),
                    });
                }
            }
            (
                "layout" | "gpghomedir" | "policy" | "loglevel" | "nofail" | "timeout",
                None | Some(""),
            ) => {
                let value = scalars.set(&lname, canonical.clone(), value)?;
                match lname.as_str() {
                    "layout" => self.layout = Some(non_empty_path(&canonical, value)?),
                    "gpghomedir" => self.gpg_home = Some(non_empty_path(&canonical, value)?),
                    "policy" => self.policy = Some(non_empty_path(&canonical, value)?),
                    "loglevel" => match value.trim().parse::<u8>() {
                        Ok(level) => self.log_level = Some(level),
                        Err(_) => self
                            .warnings
                            .push(format!("ignoring {canonical}={value:?}: not a level 0-255")),
                    },
                    "nofail" => self.no_fail = self.bool_item(&canonical, value),
                    _ => match value.trim().parse::<u64>() {
                        Ok(s) => self.timeout = Some(Duration::from_secs(s)),
                        Err(_) => {
                            return Err(ConfigError::BadTimeout {
                                key: canonical,
                                value: value.to_string(),
                            })
                        }
                    },
                }
            }
            _ => self
                .warnings
                .push(format!("ignoring unknown apt config item {key}={value:?}")),
        }
        Ok(())
    }
}

fn non_empty_path(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Empty(key.to_string()));
    }
    Ok(PathBuf::from(value))
}

/// Key ids are compared as gpg does, case-insensitively: spaces (gpg prints
/// fingerprints in groups) and a `0x` prefix go, hex digits are uppercased.
/// `None` if what remains is empty or not hex.
pub fn normalise_keyid(value: &str) -> Option<String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let hex = compact
        .strip_prefix("0x")
        .or_else(|| compact.strip_prefix("0X"))
        .unwrap_or(&compact);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(hex.to_ascii_uppercase())
}

/// First value seen for each scalar item, to refuse conflicting repeats.
#[derive(Default)]
struct Scalars(Vec<(String, String)>);

impl Scalars {
    fn set<'v>(
        &mut self,
        lname: &str,
        key: String,
        value: &'v str,
    ) -> Result<&'v str, ConfigError> {
        if let Some((_, first)) = self.0.iter().find(|(n, _)| n == lname) {
            if first != value {
                return Err(ConfigError::Conflicting {
                    key,
                    first: first.clone(),
                    second: value.to_string(),
                });
            }
        } else {
            self.0.push((lname.to_string(), value.to_string()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apt::protocol::read_message;
    use std::io::Cursor;
    use std::path::Path;

    use crate::apt::recorded;

    fn from(items: &[(&str, &str)]) -> Result<IntotoConfig, ConfigError> {
        IntotoConfig::from_items(items.iter().copied())
    }

    /// What testdata/apt/record.sh puts into apt.conf.d/50intoto.
    fn check_recorded_config(cfg: &IntotoConfig) {
        assert_eq!(
            cfg.rebuilders,
            [
                "http://127.0.0.1:1/rebuilder-a",
                "https://rebuilder.example/b"
            ]
        );
        assert_eq!(
            cfg.layout.as_deref(),
            Some(Path::new("/path/to/root.layout"))
        );
        assert_eq!(
            cfg.gpg_home.as_deref(),
            Some(Path::new("/path/to/gpg home"))
        );
        assert_eq!(
            cfg.keyids,
            [
                "88876A89E3D4698F83D3DB0E72E33CA3E0E04E46",
                "88876A89E3D4698F83D3DB0E72E33CA3E0E04E47"
            ]
        );
        assert_eq!(cfg.log_level, Some(20));
        assert!(cfg.no_fail);
        assert_eq!(cfg.timeout, Some(Duration::from_secs(30)));
        assert_eq!(cfg.http_timeout, Some(Duration::from_secs(7)));
        assert_eq!(cfg.http_proxy, None);
        assert!(!cfg.debug);
        assert_eq!(cfg.policy, None);
        // apt's own parsing of `Odd "a=b %41 \"q\" ü tab<TAB>end";`: it
        // decoded %41, dropped the quotes' backslash-quote pairs to `\` and
        // turned the tab into spaces. We only see and warn about the result.
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains(r#"APT::Intoto::Odd="a=b A \\q\\ ü tab        end""#));
    }

    #[test]
    fn recorded_601_configuration() {
        let bytes = recorded("update.1.intoto.in");
        let msg = read_message(&mut Cursor::new(&bytes[..])).unwrap().unwrap();
        assert!(msg
            .fields_named("Config-Item")
            .any(|i| i.starts_with("APT::Intoto::Odd=a%3db%20A%20")));
        let cfg = IntotoConfig::from_configuration(&msg).unwrap();
        check_recorded_config(&cfg);
    }

    #[test]
    fn recorded_hook_dump() {
        let text = String::from_utf8(recorded("pre-install-pkgs.v2.txt")).unwrap();
        let items: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| decode_item(l).unwrap())
            .collect();
        assert!(items
            .iter()
            .any(|(k, v)| k == "APT::Intoto::Odd" && v.starts_with("a=b A ")));
        let cfg =
            IntotoConfig::from_items(items.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        check_recorded_config(&cfg);
    }

    #[test]
    fn decode_items() {
        assert_eq!(
            decode_item("APT::Intoto::Rebuilders::=http://x").unwrap(),
            ("APT::Intoto::Rebuilders::".into(), "http://x".into())
        );
        assert_eq!(
            decode_item("A%3dB=c%3dd=e%25%C3%BC%0a").unwrap(),
            ("A=B".into(), "c=d=e%ü\n".into())
        );
        assert_eq!(decode_item("k=").unwrap(), ("k".into(), "".into()));
        assert_eq!(
            decode_item("novalue"),
            Err(ConfigError::NoEquals("novalue".into()))
        );
        for bad in ["k=%", "k=%4", "k=%zz", "k=a%g1", "k%=v", "k=%+1"] {
            assert_eq!(
                decode_item(bad),
                Err(ConfigError::BadEscape(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            decode_item("k=%ff"),
            Err(ConfigError::NotUtf8("k=%ff".into()))
        );
        assert_eq!(
            decode_item("k=%c3"),
            Err(ConfigError::NotUtf8("k=%c3".into()))
        );
        // Multi-byte text next to an escape does not trip the decoder.
        assert_eq!(decode_item("k=ü%20ü").unwrap().1, "ü ü");
        assert!(decode_item("k=%ü").is_err());
    }

    #[test]
    fn list_and_scalar_shapes() {
        let list = from(&[
            ("APT::Intoto::Layout::", "/l"),
            ("APT::Intoto::GPGHomedir::", "/g"),
            ("APT::Intoto::Rebuilders::", "http://a"),
            ("apt::intoto::rebuilders::", "http://b"),
            ("APT::Intoto::Rebuilders", "http://c"),
            ("APT::Intoto::Rebuilders::named", "http://d"),
            ("APT::Intoto::Policy::", "/p"),
        ])
        .unwrap();
        let scalar = from(&[
            ("APT::Intoto::Layout", "/l"),
            ("APT::INTOTO::gpghomedir", "/g"),
            ("APT::Intoto::Rebuilders", "http://a"),
            ("APT::Intoto::Rebuilders", "http://b"),
            ("APT::Intoto::Rebuilders::", "http://c"),
            ("APT::Intoto::Rebuilders::", "http://d"),
            ("APT::Intoto::Policy", "/p"),
        ])
        .unwrap();
        assert_eq!(list, scalar);
        assert_eq!(list.layout.as_deref(), Some(Path::new("/l")));
        assert_eq!(list.policy.as_deref(), Some(Path::new("/p")));
        assert_eq!(
            list.rebuilders,
            ["http://a", "http://b", "http://c", "http://d"]
        );
        assert!(list.warnings.is_empty());
        // The empty scope line some dumps have is fine.
        assert_eq!(
            from(&[("APT::Intoto", "")]).unwrap(),
            IntotoConfig::default()
        );
    }

    #[test]
    fn conflicting_scalars_are_errors() {
        let err = from(&[
            ("APT::Intoto::Layout::", "/a"),
            ("APT::Intoto::Layout::", "/b"),
        ]);
        assert_eq!(
            err,
            Err(ConfigError::Conflicting {
                key: "APT::Intoto::Layout".into(),
                first: "/a".into(),
                second: "/b".into()
            })
        );
        assert!(from(&[
            ("APT::Intoto::Layout", "/a"),
            ("apt::intoto::layout::", "/b")
        ])
        .is_err());
        // The same value twice is not a conflict.
        let same = from(&[
            ("APT::Intoto::Layout", "/a"),
            ("APT::Intoto::Layout::", "/a"),
        ]);
        assert_eq!(same.unwrap().layout.as_deref(), Some(Path::new("/a")));
        assert!(from(&[
            ("APT::Intoto::NoFail", "true"),
            ("APT::Intoto::NoFail::", "false")
        ])
        .is_err());
        assert_eq!(
            from(&[("APT::Intoto::Layout", "")]),
            Err(ConfigError::Empty("APT::Intoto::Layout".into()))
        );
    }

    #[test]
    fn no_fail_spellings() {
        for yes in ["true", "TRUE", "yes", "Yes", "1", "on", "with", "enable"] {
            let cfg = from(&[("APT::Intoto::NoFail::", yes)]).unwrap();
            assert!(cfg.no_fail, "{yes}");
            assert!(cfg.warnings.is_empty());
        }
        for no in ["false", "no", "0", "off", "OFF", "without", "disable"] {
            let cfg = from(&[("APT::Intoto::NoFail", no)]).unwrap();
            assert!(!cfg.no_fail, "{no}");
            assert!(cfg.warnings.is_empty());
        }
        for junk in ["", "2", "-1", "truee", " true", "y", "ja"] {
            let cfg = from(&[("APT::Intoto::NoFail", junk)]).unwrap();
            assert!(!cfg.no_fail, "{junk:?}");
            assert_eq!(cfg.warnings.len(), 1, "{junk:?}");
        }
        assert!(!IntotoConfig::default().no_fail);
        let cfg = from(&[("Debug::Acquire::intoto", "1")]).unwrap();
        assert!(cfg.debug);
    }

    #[test]
    fn keyids_are_normalised() {
        let cfg = from(&[
            (
                "APT::Intoto::Keyids::",
                "8887 6a89 e3d4 698f 83d3  db0e 72e3 3ca3 e0e0 4e46",
            ),
            ("APT::Intoto::Keyids::", "0xabcdef0123456789"),
            ("APT::Intoto::Keyids", "\tAbCd\n"),
        ])
        .unwrap();
        assert_eq!(
            cfg.keyids,
            [
                "88876A89E3D4698F83D3DB0E72E33CA3E0E04E46",
                "ABCDEF0123456789",
                "ABCD"
            ]
        );
        for bad in [
            "",
            "  ",
            "0x",
            "zz",
            "88876A89E3D4698F83D3DB0E72E33CA3E0E04E4G",
            "ü",
        ] {
            assert!(
                matches!(
                    from(&[("APT::Intoto::Keyids::", bad)]),
                    Err(ConfigError::BadKeyid { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_items_warn_and_generic_items() {
        let cfg = from(&[
            ("APT::Intoto::Frobnicate", "1"),
            ("APT::Intoto::Layout::sub", "/x"),
            ("APT::IntotoX::Layout", "/y"),
            ("APT::Intoto", "scopevalue"),
            ("APT::Intoto::LogLevel", "loud"),
            ("Acquire::http::Proxy", "http://proxy:3128/"),
            ("Acquire::http::Proxy::example.org", "DIRECT"),
            ("Acquire::http::Timeout", "soon"),
            ("Acquire::https::Timeout", "5"),
            ("Dir", "/"),
        ])
        .unwrap();
        assert_eq!(cfg.layout, None);
        assert_eq!(cfg.log_level, None);
        assert_eq!(cfg.http_proxy.as_deref(), Some("http://proxy:3128/"));
        assert_eq!(cfg.http_timeout, None);
        assert_eq!(cfg.warnings.len(), 5, "{:#?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("APT::Intoto::Frobnicate"));
    }

    #[test]
    fn timeouts() {
        let cfg = from(&[
            ("APT::Intoto::Timeout", "15"),
            ("ACQUIRE::HTTP::TIMEOUT", "120"),
        ])
        .unwrap();
        assert_eq!(cfg.timeout, Some(Duration::from_secs(15)));
        assert_eq!(cfg.http_timeout, Some(Duration::from_secs(120)));
        for bad in ["", "1.5", "-1", "ten", "99999999999999999999999"] {
            assert!(
                matches!(
                    from(&[("APT::Intoto::Timeout", bad)]),
                    Err(ConfigError::BadTimeout { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn from_configuration_checks_the_code_and_decodes() {
        let m = Message::new(600, "URI Acquire");
        assert_eq!(
            IntotoConfig::from_configuration(&m),
            Err(ConfigError::NotConfiguration(600))
        );
        let m = Message::new(601, "Configuration")
            .with("Config-Item", "APT::Intoto::Layout::=/a%20b")
            .with("config-item", "APT::Intoto::NoFail=yes")
            .with("Other", "APT::Intoto::Layout=/ignored");
        let cfg = IntotoConfig::from_configuration(&m).unwrap();
        assert_eq!(cfg.layout.as_deref(), Some(Path::new("/a b")));
        assert!(cfg.no_fail);
        let m = Message::new(601, "Configuration").with("Config-Item", "broken");
        assert_eq!(
            IntotoConfig::from_configuration(&m),
            Err(ConfigError::NoEquals("broken".into()))
        );
    }
}
