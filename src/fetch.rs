//! Where metadata bytes come from: local files and `file://` URLs, or HTTP(S).
//!
//! Everything fetched here is untrusted: only `verify` decides what it means.
//! This module only makes sure that a hostile or broken server cannot hang
//! the installer (timeouts), exhaust its memory (size cap, applied after
//! content decoding) or bounce it around forever (redirect cap), and that a
//! package name cannot walk out of the metadata tree (values substituted into
//! templates are percent-encoded for URLs and must be plain names for paths).
//!
//! HTTP is ureq 3 with its default features (`rustls` with the `ring`
//! provider and the bundled Mozilla roots from `webpki-roots`, plus `gzip`).
//! Proxies come from the environment (`ALL_PROXY`, `HTTPS_PROXY`,
//! `HTTP_PROXY`, lower-case forms too, and `NO_PROXY`).

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::crypto::KeyId;

/// Caps on one fetch, each naming the failure it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Time to open a TCP connection (an unreachable or black-holed host).
    pub connect_timeout: Duration,
    /// Time for the whole request, redirects and body included: a server that
    /// accepts and then stalls, or trickles one byte a minute.
    pub total_timeout: Duration,
    /// Largest accepted body (after gzip decoding) or file: memory exhaustion.
    /// Same as [`crate::json::JsonLimits::max_bytes`], since every fetched
    /// document is then parsed under that cap anyway.
    pub max_bytes: u64,
    /// Redirects followed before giving up: redirect loops.
    pub max_redirects: u32,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_bytes: crate::json::JsonLimits::default().max_bytes as u64,
            max_redirects: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("template `{template}`: unknown variable `{{{var}}}` (known: {known})", known = KNOWN_VARS.join(", "))]
    UnknownVar { template: String, var: String },
    #[error("template `{template}`: variable `{{{var}}}` has no value here")]
    UnsetVar { template: String, var: &'static str },
    #[error("template `{template}`: {problem}")]
    BadTemplate {
        template: String,
        problem: &'static str,
    },
    #[error("template `{template}`: value {value:?} of `{{{var}}}` is not a plain file name (no `/`, NUL, `.` or `..`)")]
    UnsafeValue {
        template: String,
        var: &'static str,
        value: String,
    },
    #[error("{url}: unsupported URL scheme (http, https and file are)")]
    UnsupportedScheme { url: String },
    #[error("{url}: not a local file URL (expected file:///path or file://localhost/path)")]
    BadFileUrl { url: String },
    #[error("{url}: timed out ({kind}; connect timeout {connect:?}, total timeout {total:?})")]
    Timeout {
        url: String,
        kind: String,
        connect: Duration,
        total: Duration,
    },
    #[error("{url}: body is over the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: more than {max} redirects (a redirect loop?)")]
    TooManyRedirects { url: String, max: u32 },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------
// Templates

/// Variables a template may use, in the order they are documented.
pub const KNOWN_VARS: &[&str] = &[
    "name", "version", "filename", "sha256", "step", "keyid8", "keyid", "dir",
];

/// Values for a template. Unset values are an error only if the template
/// uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// Package name.
    pub name: Option<String>,
    /// Package version (deb versions may hold `:` and `+`, percent-encoded in URLs).
    pub version: Option<String>,
    /// The package's file name (no directory).
    pub filename: Option<String>,
    /// Lowercase hex sha256 of the package file.
    pub sha256: Option<String>,
    /// Step name, for link files.
    pub step: Option<String>,
    /// Key id of the functionary, for link files; `{keyid8}` is its first 8 hex digits.
    pub keyid: Option<String>,
    /// The package's directory: a path, substituted as is (several segments).
    pub dir: Option<String>,
}

impl Vars {
    /// Variables naming a package file: `{dir}` and `{filename}` from its path.
    pub fn for_package(name: &str, version: &str, file: &Path) -> Vars {
        let dir = match file.parent() {
            Some(d) if d.as_os_str().is_empty() => ".".to_string(),
            Some(d) => d.to_string_lossy().into_owned(),
            None => ".".to_string(),
        };
        Vars {
            name: Some(name.to_string()),
            version: Some(version.to_string()),
            filename: file.file_name().map(|f| f.to_string_lossy().into_owned()),
            dir: Some(dir),
            ..Vars::default()
        }
    }

    /// The same variables for the link of `step` signed by `keyid`.
    pub fn with_link(&self, step: &str, keyid: &KeyId) -> Vars {
        Vars {
            step: Some(step.to_string()),
            keyid: Some(keyid.as_str().to_string()),
            ..self.clone()
        }
    }

    fn value(&self, var: &'static str) -> Option<String> {
        match var {
            "name" => self.name.clone(),
            "version" => self.version.clone(),
            "filename" => self.filename.clone(),
            "sha256" => self.sha256.clone(),
            "step" => self.step.clone(),
            "keyid" => self.keyid.clone(),
            "keyid8" => self
                .keyid
                .as_ref()
                .map(|k| k.chars().take(8).collect::<String>()),
            "dir" => self.dir.clone(),
            _ => None,
        }
    }
}

enum Piece<'a> {
    Lit(&'a str),
    Var(&'static str),
}

/// Splits a template into literal text and known variables. `{{` and `}}`
/// stand for literal braces.
fn parse_template(template: &str) -> Result<Vec<Piece<'_>>, FetchError> {
    let bad = |problem| FetchError::BadTemplate {
        template: template.to_string(),
        problem,
    };
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            out.push(Piece::Lit(&rest[..i]));
        }
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push(Piece::Lit("{"));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push(Piece::Lit("}"));
            rest = after;
        } else if tail.starts_with('}') {
            return Err(bad("unmatched `}` (write `}}` for a literal brace)"));
        } else {
            let end = tail
                .find('}')
                .ok_or_else(|| bad("unclosed `{` (write `{{` for a literal brace)"))?;
            let name = &tail[1..end];
            let var =
                KNOWN_VARS
                    .iter()
                    .find(|k| **k == name)
                    .ok_or_else(|| FetchError::UnknownVar {
                        template: template.to_string(),
                        var: name.to_string(),
                    })?;
            out.push(Piece::Var(var));
            rest = &tail[end + 1..];
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest));
    }
    Ok(out)
}

/// Checks a template's syntax and variable names without values (for
/// policy loading: a typo fails at load time, not at the first install).
pub fn check_template(template: &str) -> Result<(), FetchError> {
    parse_template(template).map(drop)
}

/// Whether `template` mentions variable `var`.
pub fn uses_var(template: &str, var: &str) -> bool {
    parse_template(template)
        .map(|p| p.iter().any(|p| matches!(p, Piece::Var(v) if *v == var)))
        .unwrap_or(false)
}

/// Whether a location is a URL (as opposed to a local path).
fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then_some(scheme)
}

/// RFC 3986 unreserved characters pass; every other byte is `%XX`.
/// With `keep_slash`, `/` passes too (for `{dir}`, several segments).
fn percent_encode(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Fills in a template. `{name}` `{version}` `{filename}` `{sha256}` `{step}`
/// `{keyid8}` `{keyid}` `{dir}`; any other `{x}` is an error naming it.
///
/// In a URL template (`scheme://...`) values are percent-encoded as path
/// segments, so `/`, `?`, `#` in a value cannot change the URL's shape. In a
/// path template a value (other than `{dir}`) must be a plain file name:
/// `../../etc` as a package name must not walk out of the metadata tree.
pub fn expand(template: &str, vars: &Vars) -> Result<String, FetchError> {
    let is_url = scheme_of(template).is_some();
    let mut out = String::with_capacity(template.len() + 64);
    for piece in parse_template(template)? {
        match piece {
            Piece::Lit(s) => out.push_str(s),
            Piece::Var(var) => {
                let value = vars.value(var).ok_or_else(|| FetchError::UnsetVar {
                    template: template.to_string(),
                    var,
                })?;
                let is_dir = var == "dir";
                if !is_dir
                    && (value.is_empty()
                        || value == "."
                        || value == ".."
                        || value.contains('\0')
                        || (!is_url && value.contains('/')))
                {
                    return Err(FetchError::UnsafeValue {
                        template: template.to_string(),
                        var,
                        value,
                    });
                }
                if is_url {
                    out.push_str(&percent_encode(&value, is_dir));
                } else {
                    out.push_str(&value);
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Fetching

/// What one fetch gives: the bytes, `None` when nothing is there, or why not.
pub type Fetched = Result<Option<Vec<u8>>, FetchError>;

/// Anything that hands out metadata bytes by location; tests and the mirror
/// plug in their own.
pub trait Fetch: Sync {
    /// The bytes at `location`, `None` when there is nothing there.
    fn get(&self, location: &str) -> Fetched;

    /// Several locations, results in the same order. Sequential by default.
    fn get_many(&self, items: &[String]) -> Vec<(String, Fetched)> {
        items.iter().map(|i| (i.clone(), self.get(i))).collect()
    }
}

/// Reads local paths and `file://`, `http://`, `https://` URLs under
/// [`FetchLimits`]. One HTTP agent (connection pool) shared by all fetches.
#[derive(Clone)]
pub struct Fetcher {
    limits: FetchLimits,
    agent: ureq::Agent,
    concurrency: usize,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("limits", &self.limits)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl Fetcher {
    /// Default concurrency for [`Fetch::get_many`]: link files are small and
    /// mostly latency, so more than the core count, but few enough not to look
    /// like an attack on the metadata server.
    pub const DEFAULT_CONCURRENCY: usize = 8;

    pub fn new(limits: FetchLimits) -> Fetcher {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(limits.connect_timeout))
            .timeout_global(Some(limits.total_timeout))
            .max_redirects(limits.max_redirects)
            .max_redirects_will_error(true)
            .http_status_as_error(false)
            .user_agent(concat!("totogate/", env!("CARGO_PKG_VERSION")))
            // `Config::default()` reads these too; said here so it is not lost.
            .proxy(ureq::Proxy::try_from_env())
            .build();
        Fetcher {
            limits,
            agent: ureq::Agent::new_with_config(config),
            concurrency: Self::DEFAULT_CONCURRENCY,
        }
    }

    /// Sets how many fetches [`Fetch::get_many`] runs at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Fetcher {
        self.concurrency = n.max(1);
        self
    }

    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    fn get_http(&self, url: &str) -> Fetched {
        let map = |e: ureq::Error| self.map_ureq(url, e);
        let mut resp = self.agent.get(url).call().map_err(map)?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            // Nothing published there: the policy's `required` decides.
            404 | 410 => return Ok(None),
            _ => {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status,
                })
            }
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.limits.max_bytes)
            .read_to_vec()
            .map_err(map)?;
        Ok(Some(body))
    }

    fn map_ureq(&self, url: &str, e: ureq::Error) -> FetchError {
        let url = url.to_string();
        match e {
            ureq::Error::Timeout(kind) => FetchError::Timeout {
                url,
                kind: kind.to_string(),
                connect: self.limits.connect_timeout,
                total: self.limits.total_timeout,
            },
            ureq::Error::BodyExceedsLimit(limit) => FetchError::TooLarge { url, limit },
            ureq::Error::TooManyRedirects => FetchError::TooManyRedirects {
                url,
                max: self.limits.max_redirects,
            },
            ureq::Error::StatusCode(status) => FetchError::Status { url, status },
            other => FetchError::Http {
                url,
                source: Box::new(other),
            },
        }
    }
}

impl Fetch for Fetcher {
    fn get(&self, location: &str) -> Fetched {
        match scheme_of(location).map(|s| s.to_ascii_lowercase()) {
            None => read_file(Path::new(location), self.limits.max_bytes),
            Some(s) if s == "http" || s == "https" => self.get_http(location),
            Some(s) if s == "file" => read_file(&file_url_path(location)?, self.limits.max_bytes),
            Some(_) => Err(FetchError::UnsupportedScheme {
                url: location.to_string(),
            }),
        }
    }

    fn get_many(&self, items: &[String]) -> Vec<(String, Fetched)> {
        let workers = self.concurrency.min(items.len());
        if workers <= 1 {
            return items.iter().map(|i| (i.clone(), self.get(i))).collect();
        }
        // A small scoped pool pulling indexes from a counter: IO-bound work,
        // so not rayon's global (core-count) pool.
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Fetched>>> = items.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = self.get(item);
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                });
            }
        });
        items
            .iter()
            .zip(slots)
            .map(|(item, slot)| {
                let r = slot
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .expect("every index is taken by exactly one worker");
                (item.clone(), r)
            })
            .collect()
    }
}

/// `file:///abs/path` or `file://localhost/abs/path`, percent-decoded.
fn file_url_path(url: &str) -> Result<PathBuf, FetchError> {
    use std::os::unix::ffi::OsStrExt;
    let bad = || FetchError::BadFileUrl {
        url: url.to_string(),
    };
    let rest = &url["file://".len()..];
    let path = if rest.starts_with('/') {
        rest
    } else if rest.len() >= 10 && rest[..10].eq_ignore_ascii_case("localhost/") {
        &rest[9..]
    } else {
        return Err(bad());
    };
    if path.contains(['?', '#']) {
        return Err(bad());
    }
    let bytes = percent_decode(path);
    if bytes.contains(&0) {
        return Err(bad());
    }
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

/// A regular file (symlinks followed), at most `max` bytes; `None` if missing.
fn read_file(path: &Path, max: u64) -> Fetched {
    let io = |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: opening a FIFO would block with no timeout.
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
        Ok(m) if !m.is_file() => {
            return Err(FetchError::NotAFile {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {}
    }
    let f = match std::fs::File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        r => r.map_err(io)?,
    };
    let mut out = Vec::new();
    f.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io)?;
    if out.len() as u64 > max {
        return Err(FetchError::TooLarge {
            url: path.display().to_string(),
            limit: max,
        });
    }
    Ok(Some(out))
}

/// The bytes at a URL or path: `None` when not found (HTTP 404/410 or a
/// missing file); other statuses, timeouts, oversize bodies and redirect
/// loops are errors naming the URL.
pub fn get(url_or_path: &str, limits: &FetchLimits) -> Fetched {
    Fetcher::new(*limits).get(url_or_path)
}

/// [`get`] for many locations, `concurrency` at a time over one connection
/// pool; results in the order of `items`.
pub fn get_many(
    items: &[String],
    limits: &FetchLimits,
    concurrency: usize,
) -> Vec<(String, Fetched)> {
    Fetcher::new(*limits)
        .with_concurrency(concurrency)
        .get_many(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg() -> Vars {
        Vars {
            name: Some("hello".into()),
            version: Some("1:2.10+dfsg-3".into()),
            filename: Some("hello_2.10-3_amd64.deb".into()),
            sha256: Some("ab".repeat(32)),
            dir: Some("/var/cache/apt archives".into()),
            ..Vars::default()
        }
    }

    #[test]
    fn expands_urls_with_percent_encoding() {
        let v = Vars {
            step: Some("build".into()),
            keyid: Some(format!("0123abcd{}", "e".repeat(56))),
            ..pkg()
        };
        let got = expand(
            "https://meta.example/{name}/{version}/{step}.{keyid8}.link",
            &v,
        )
        .unwrap();
        assert_eq!(
            got,
            "https://meta.example/hello/1%3A2.10%2Bdfsg-3/build.0123abcd.link"
        );
        let got = expand("https://m/{keyid}/{sha256}", &v).unwrap();
        assert!(got.ends_with(&format!("/0123abcd{}/{}", "e".repeat(56), "ab".repeat(32))));
        // A `/`, `?` or `#` in a value cannot change the URL's shape.
        let v = Vars {
            name: Some("a/b?c#d".into()),
            ..Vars::default()
        };
        assert_eq!(
            expand("http://m/{name}", &v).unwrap(),
            "http://m/a%2Fb%3Fc%23d"
        );
        // `{dir}` keeps its slashes.
        assert_eq!(
            expand("file://{dir}/x", &pkg()).unwrap(),
            "file:///var/cache/apt%20archives/x"
        );
    }

    #[test]
    fn expands_paths_verbatim_and_refuses_traversal() {
        assert_eq!(
            expand("{dir}/{filename}.intoto/root.layout", &pkg()).unwrap(),
            "/var/cache/apt archives/hello_2.10-3_amd64.deb.intoto/root.layout"
        );
        for bad in ["..", ".", "", "../../etc/passwd", "a/b", "a\0b"] {
            let v = Vars {
                name: Some(bad.into()),
                ..Vars::default()
            };
            let e = expand("/srv/meta/{name}/root.layout", &v).unwrap_err();
            assert!(
                matches!(e, FetchError::UnsafeValue { var: "name", .. }),
                "{bad:?}: {e}"
            );
            // In URLs `/` is encoded, but `.`, `..`, empty and NUL are refused.
            let url = expand("https://m/{name}/root.layout", &v);
            let refused = matches!(bad, ".." | "." | "" | "a\0b");
            assert_eq!(url.is_err(), refused, "{bad:?}");
        }
    }

    #[test]
    fn template_errors_name_the_problem() {
        let e = expand("https://m/{nmae}/x", &pkg()).unwrap_err();
        assert!(matches!(&e, FetchError::UnknownVar { var, .. } if var == "nmae"));
        assert!(e.to_string().contains("`{nmae}`"), "{e}");
        let e = expand("https://m/{step}", &pkg()).unwrap_err();
        assert!(matches!(e, FetchError::UnsetVar { var: "step", .. }));
        assert!(e.to_string().contains("`{step}`"), "{e}");
        assert!(matches!(
            expand("https://m/{name", &pkg()),
            Err(FetchError::BadTemplate { .. })
        ));
        assert!(matches!(
            expand("https://m/name}", &pkg()),
            Err(FetchError::BadTemplate { .. })
        ));
        assert_eq!(expand("/x/{{name}}", &pkg()).unwrap(), "/x/{name}");
        assert!(check_template("{dir}/{filename}.intoto/").is_ok());
        assert!(uses_var("https://m/{step}.{keyid8}.link", "step"));
        assert!(!uses_var("https://m/{name}/", "step"));
    }

    #[test]
    fn reads_files_and_file_urls_with_a_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a b.link");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = Fetcher::new(FetchLimits {
            max_bytes: 10,
            ..FetchLimits::default()
        });
        assert_eq!(f.get(p.to_str().unwrap()).unwrap().unwrap(), b"0123456789");
        let url = format!("file://{}", percent_encode(p.to_str().unwrap(), true));
        assert!(url.contains("a%20b.link"));
        assert_eq!(f.get(&url).unwrap().unwrap(), b"0123456789");
        let url = format!("file://localhost{}", p.display());
        assert_eq!(f.get(&url).unwrap().unwrap(), b"0123456789");
        // Missing: None, not an error.
        let missing = d.path().join("nope.link");
        assert!(f.get(missing.to_str().unwrap()).unwrap().is_none());
        // Oversized.
        std::fs::write(&p, b"01234567890").unwrap();
        let e = f.get(p.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, FetchError::TooLarge { limit: 10, .. }), "{e}");
        // Directories are not metadata.
        assert!(matches!(
            f.get(d.path().to_str().unwrap()),
            Err(FetchError::NotAFile { .. })
        ));
        assert!(matches!(
            f.get("file://example.com/etc/passwd"),
            Err(FetchError::BadFileUrl { .. })
        ));
        assert!(matches!(
            f.get("ftp://example.com/x"),
            Err(FetchError::UnsupportedScheme { .. })
        ));
    }

    #[test]
    fn get_many_keeps_order() {
        let d = tempfile::tempdir().unwrap();
        let items: Vec<String> = (0..30)
            .map(|i| {
                let p = d.path().join(format!("{i}.link"));
                if i % 3 != 0 {
                    std::fs::write(&p, i.to_string()).unwrap();
                }
                p.display().to_string()
            })
            .collect();
        let got = get_many(&items, &FetchLimits::default(), 4);
        assert_eq!(got.len(), 30);
        for (i, (item, r)) in got.into_iter().enumerate() {
            assert_eq!(item, items[i]);
            match r.unwrap() {
                None => assert_eq!(i % 3, 0),
                Some(b) => assert_eq!(b, i.to_string().as_bytes()),
            }
        }
    }
}
