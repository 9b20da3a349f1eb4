//! The trust boundary: untrusted envelopes in, `Verified*` values out.
//!
//! Implements the reference's `in_toto_verify` workflow (in-toto 3.1.0
//! `verifylib.py`) in its order: layout signatures (every trusted key must
//! have signed), expiry, parameter substitution, links per step
//! (`<step>.<keyid8>.link` for each authorised key and each of its GPG
//! subkeys), link signatures and thresholds (distinct keys; links by subkeys
//! count for their main key), sublayouts (recursively, links in
//! `<step>.<keyid8>/`), command alignment (a warning), threshold agreement,
//! step rules, inspections, inspection rules.

pub mod fnmatch;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use crate::crypto::{KeyId, PublicKey};
use crate::digest::{self, RecordOptions, StatCache};
use crate::json::JsonLimits;
use crate::model::{
    ArtifactRule, Envelope, FormatError, Inspection, Layout, Link, Payload, SignatureProblem,
};
use crate::record;
use rules::{RuleFailure, Side};

/// A layout whose signatures were checked against keys the caller trusts and
/// which has not expired. Only this module can make one.
#[derive(Debug, Clone)]
pub struct VerifiedLayout {
    layout: Layout,
    signed_by: Vec<KeyId>,
}

impl VerifiedLayout {
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn signed_by(&self) -> &[KeyId] {
        &self.signed_by
    }
}

/// A link whose signature was checked against a key the layout authorises
/// for its step (or the summary of a verified sublayout).
#[derive(Debug, Clone)]
pub struct VerifiedLink {
    link: Link,
    keyid: KeyId,
}

impl VerifiedLink {
    pub fn link(&self) -> &Link {
        &self.link
    }
    pub fn keyid(&self) -> &KeyId {
        &self.keyid
    }
}

/// Whether layout expiry is enforced. Ignoring it is for forensics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Enforce,
    IgnoreUnsafe,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no layout verification key given: pass at least one with --verification-keys")]
    NoLayoutKeys,
    #[error("layout is not signed by key {keyid} ({problem})")]
    LayoutSignature {
        keyid: KeyId,
        problem: SignatureProblem,
    },
    #[error("{path}: expected a layout, found a {found}")]
    NotALayout { path: PathBuf, found: &'static str },
    #[error("layout expired {expires} (now {now})")]
    Expired { expires: String, now: String },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FormatError },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is a symlink; link files must be regular files in the link directory")]
    SymlinkedLink { path: PathBuf },
    #[error(
        "step or inspection name {name:?} cannot name a file (it contains '/', is '.' or '..', or has a NUL)"
    )]
    BadStepName { name: String },
    #[error("step `{step}`: needs {threshold} link(s) signed by distinct authorised keys, found {found}{}", ignored_suffix(.ignored))]
    Threshold {
        step: String,
        threshold: i64,
        found: usize,
        /// Link files that exist for the step's keys, counted or not: fewer
        /// than the threshold is the reference's `LinkNotFoundError`.
        present: usize,
        ignored: Vec<IgnoredLink>,
    },
    #[error("step `{step}`: links {first} and {other} report different materials or products")]
    Disagree {
        step: String,
        first: String,
        other: String,
    },
    #[error("{0}")]
    Rule(#[from] RuleFailure),
    #[error("inspection `{name}`: {source}")]
    Inspection {
        name: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("inspection `{name}`: cannot write its link {path}: {source}")]
    InspectionLink {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inspection `{name}`: command {run:?} exited with {code}")]
    InspectionFailed {
        name: String,
        run: Vec<String>,
        code: i32,
    },
    #[error("inspection `{name}` has no command to run")]
    InspectionEmpty { name: String },
    #[error("step `{step}`: the sublayout is signed by GPG subkey {keyid}; in-toto verifies a sublayout only with a key the layout lists by that id")]
    SublayoutBySubkey { step: String, keyid: String },
    #[error("step `{step}`: sublayout nesting deeper than {limit}")]
    SublayoutTooDeep { step: String, limit: usize },
    #[error("step `{step}`, sublayout signed by {keyid}: {source}")]
    Sublayout {
        step: String,
        keyid: KeyId,
        source: Box<VerifyError>,
    },
    #[error("parameter substitution: {0}")]
    Substitution(String),
    #[error("fetching {location}: {source}")]
    Fetch {
        location: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl VerifyError {
    /// Whether verification failed only because a step has fewer link files
    /// than its threshold (the reference's `LinkNotFoundError`): what
    /// apt-transport-in-toto's `NoFail` forgives, and nothing else.
    pub fn is_missing_links(&self) -> bool {
        match self {
            VerifyError::Threshold {
                threshold, present, ..
            } => (*present as i64) < *threshold,
            VerifyError::Sublayout { source, .. } => source.is_missing_links(),
            _ => false,
        }
    }
}

fn ignored_suffix(ignored: &[IgnoredLink]) -> String {
    if ignored.is_empty() {
        String::new()
    } else {
        let v: Vec<String> = ignored.iter().map(|i| i.to_string()).collect();
        format!(" (ignored: {})", v.join("; "))
    }
}

/// A link file that was present but did not count, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IgnoredLink {
    pub file: String,
    pub reason: String,
}

impl std::fmt::Display for IgnoredLink {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.reason)
    }
}

/// Something worth saying that does not fail verification.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warning {
    CommandMismatch {
        step: String,
        expected: Vec<String>,
        ran: Vec<String>,
    },
    IgnoredLink(IgnoredLink),
    /// The rules do not end in `DISALLOW *`, so artifacts they do not name pass unchecked.
    OpenRules {
        item: String,
        field: &'static str,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Warning::CommandMismatch { step, expected, ran } => write!(
                f,
                "step `{step}`: ran {ran:?}, layout expects {expected:?} (a warning, as in-toto)"
            ),
            Warning::IgnoredLink(i) => write!(f, "ignored link {i}"),
            Warning::OpenRules { item, field } => write!(
                f,
                "`{item}` {field} do not end in DISALLOW *: artifacts the rules do not name pass unchecked"
            ),
        }
    }
}

/// Everything the caller decides about a verification run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where inspections run and whose contents they record.
    pub inspection_dir: PathBuf,
    pub inspection_timeout: Duration,
    /// `{name}` substitution in rules, commands and inspections; `None`: none at all.
    pub params: Option<BTreeMap<String, String>>,
    pub expiry: Expiry,
    pub now: OffsetDateTime,
    pub limits: JsonLimits,
    pub max_sublayout_depth: usize,
    /// Leave each inspection's (unsigned) link as `<name>.link` in
    /// `inspection_dir`, as `in-toto-verify` does for auditing. Verdicts do
    /// not depend on it: `*.link*` files are never recorded as artifacts.
    pub persist_inspection_links: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    pub fn new() -> Options {
        Options {
            inspection_dir: PathBuf::from("."),
            inspection_timeout: Duration::from_secs(10),
            params: None,
            expiry: Expiry::Enforce,
            now: OffsetDateTime::now_utc(),
            limits: JsonLimits::default(),
            // Deeper than any real supply chain; stops a sublayout that
            // points at itself through a symlinked link directory.
            max_sublayout_depth: 8,
            persist_inspection_links: false,
        }
    }
}

/// The result of a passing verification.
#[derive(Debug)]
pub struct Outcome {
    pub layout: VerifiedLayout,
    /// The reduced link of each step, by step name.
    pub steps: BTreeMap<String, VerifiedLink>,
    /// What each inspection recorded (materials before its command,
    /// products after), by inspection name; unsigned, as the reference's.
    pub inspections: BTreeMap<String, Link>,
    pub warnings: Vec<Warning>,
}

/// Checks a layout envelope against `trusted` keys: every one must have
/// signed it; then its expiry. The only constructor of `VerifiedLayout`.
pub fn verify_layout(
    env: &Envelope,
    path: &Path,
    trusted: &[PublicKey],
    expiry: Expiry,
    now: OffsetDateTime,
) -> Result<VerifiedLayout, VerifyError> {
    if trusted.is_empty() {
        return Err(VerifyError::NoLayoutKeys);
    }
    let mut signed_by = Vec::new();
    for key in trusted {
        if signed_by.contains(key.keyid()) {
            continue;
        }
        env.check_signature(key)
            .map_err(|problem| VerifyError::LayoutSignature {
                keyid: key.keyid().clone(),
                problem,
            })?;
        signed_by.push(key.keyid().clone());
    }
    let Payload::Layout(layout) = env.payload() else {
        return Err(VerifyError::NotALayout {
            path: path.to_path_buf(),
            found: env.payload().kind_name(),
        });
    };
    if expiry == Expiry::Enforce && layout.expires_at() <= now {
        return Err(VerifyError::Expired {
            expires: layout.expires.clone(),
            now: crate::model::format_expiry(now),
        });
    }
    Ok(VerifiedLayout {
        layout: layout.clone(),
        signed_by,
    })
}

/// Reads and parses a metadata file (size-capped).
pub fn load(path: &Path, limits: JsonLimits) -> Result<Envelope, VerifyError> {
    let bytes = read_capped(path, limits.max_bytes)?;
    Envelope::parse_owned(bytes, limits).map_err(|source| VerifyError::Format {
        path: path.to_path_buf(),
        source,
    })
}

fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>, VerifyError> {
    use std::io::Read;
    let io = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    // Sized up front: growing by doubling would touch (and zero) twice the
    // memory on multi-megabyte links.
    let size = f.metadata().map(|m| m.len()).unwrap_or(0).min(cap as u64) as usize;
    let mut out = Vec::with_capacity(size + 1);
    f.take(cap as u64 + 1).read_to_end(&mut out).map_err(io)?;
    Ok(out)
}

/// One link file the layout asks for: the link of `step` by `keyid`, in
/// `subdir` (empty at the top, then `<step>.<keyid8>` per sublayout level).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkRef {
    pub subdir: PathBuf,
    pub step: String,
    pub keyid: String,
}

impl LinkRef {
    /// `<step>.<keyid8>.link`
    pub fn file_name(&self) -> String {
        format!("{}.{}.link", self.step, short(&self.keyid))
    }
}

/// Where link files come from: a directory, or fetched metadata.
pub trait LinkSource: Sync {
    /// The bytes of the link file, `None` when there is none.
    fn fetch(&self, link: &LinkRef, limits: JsonLimits) -> Result<Option<Vec<u8>>, VerifyError>;
    /// How to show that file in messages (a path or a URL).
    fn describe(&self, link: &LinkRef) -> String;
    /// A hint that these files will be asked for next (sources that fetch
    /// over the network fetch them concurrently).
    fn prefetch(&self, _links: &[LinkRef]) {}
}

/// Link files in a directory, as `in-toto-verify --link-dir`.
#[derive(Debug, Clone)]
pub struct DirLinks(pub PathBuf);

impl LinkSource for DirLinks {
    fn fetch(&self, link: &LinkRef, limits: JsonLimits) -> Result<Option<Vec<u8>>, VerifyError> {
        let path = self.0.join(&link.subdir).join(link.file_name());
        match std::fs::symlink_metadata(&path) {
            Err(_) => Ok(None), // missing: the threshold check speaks for it
            Ok(m) if m.file_type().is_symlink() => Err(VerifyError::SymlinkedLink { path }),
            Ok(_) => read_capped(&path, limits.max_bytes).map(Some),
        }
    }
    fn describe(&self, link: &LinkRef) -> String {
        self.0
            .join(&link.subdir)
            .join(link.file_name())
            .display()
            .to_string()
    }
}

/// Runs an inspection's command in a directory; returns its exit code.
pub trait InspectionRunner: Sync {
    fn run(
        &self,
        argv: &[String],
        dir: &Path,
        timeout: Duration,
    ) -> Result<i32, Box<dyn std::error::Error + Send + Sync>>;
}

/// Runs inspections directly on the host, as the reference does.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRunner;

impl InspectionRunner for HostRunner {
    fn run(
        &self,
        argv: &[String],
        dir: &Path,
        timeout: Duration,
    ) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
        Ok(record::execute_in(argv, false, timeout, dir)?.return_value)
    }
}

/// Full verification of a root layout file.
pub fn verify_root(
    layout_path: &Path,
    trusted: &[PublicKey],
    links: &dyn LinkSource,
    runner: &dyn InspectionRunner,
    opts: &Options,
) -> Result<Outcome, VerifyError> {
    let env = load(layout_path, opts.limits)?;
    verify_envelope(&env, layout_path, trusted, links, runner, opts)
}

/// Full verification of an already loaded root layout envelope (`origin`
/// names it in messages).
pub fn verify_envelope(
    env: &Envelope,
    origin: &Path,
    trusted: &[PublicKey],
    links: &dyn LinkSource,
    runner: &dyn InspectionRunner,
    opts: &Options,
) -> Result<Outcome, VerifyError> {
    let layout = verify_layout(env, origin, trusted, opts.expiry, opts.now)?;
    verify_with_layout(layout, links, runner, opts)
}

/// Full verification under a layout already verified by [`verify_layout`]
/// (kept, say, for every package of a run that shares it): its expiry is
/// checked again against `opts.now`, then the links, rules and inspections.
pub fn verify_with_layout(
    layout: VerifiedLayout,
    links: &dyn LinkSource,
    runner: &dyn InspectionRunner,
    opts: &Options,
) -> Result<Outcome, VerifyError> {
    if opts.expiry == Expiry::Enforce && layout.layout.expires_at() <= opts.now {
        return Err(VerifyError::Expired {
            expires: layout.layout.expires.clone(),
            now: crate::model::format_expiry(opts.now),
        });
    }
    let mut warnings = Vec::new();
    let cx = Cx {
        links,
        runner,
        opts,
        inspections_run: AtomicUsize::new(0),
    };
    let (steps, inspections) = verify_chain(&layout, Path::new(""), &cx, 0, &mut warnings)?;
    Ok(Outcome {
        layout,
        steps,
        inspections,
        warnings,
    })
}

/// The subkey ids of each key of the layout, by the key's id in `keys`.
fn subkeys_by_key(layout: &Layout) -> BTreeMap<&str, Vec<String>> {
    layout
        .keys
        .iter()
        .map(|(id, k)| (id.as_str(), k.subkey_ids()))
        .filter(|(_, subs)| !subs.is_empty())
        .collect()
}

/// The key ids whose link files count for `step`, in the reference's order
/// (in-toto `load_links_for_layout`): each authorised key id, each followed by
/// the ids of its subkeys (a GPG-signed link is named after the signing
/// subkey's fingerprint; the reference reads `subkeys` of any key type).
fn link_keyids(step: &crate::model::Step, subkeys: &BTreeMap<&str, Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for auth in &step.pubkeys {
        let subs = subkeys.get(auth.as_str()).into_iter().flatten();
        for id in std::iter::once(auth).chain(subs) {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
    }
    out
}

/// The key that must have signed the link named after `link_keyid`, as
/// in-toto's `verify_link_signature_thresholds` finds it: an authorised key
/// by its id; the main key of an authorised subkey id; an authorised key
/// of which `link_keyid` is a subkey. Thresholds count these keys. As in the
/// reference, `subkeys` of keys of any type count.
fn authorising_key<'a>(
    layout: &'a Layout,
    subkeys: &BTreeMap<&str, Vec<String>>,
    step: &crate::model::Step,
    link_keyid: &str,
) -> Option<&'a PublicKey> {
    let has_subkey =
        |id: &str, sub: &str| subkeys.get(id).is_some_and(|s| s.iter().any(|x| x == sub));
    // The reference's `main_keys_for_subkeys`: the last key listing it.
    let main_of_subkey = |sub: &str| {
        layout
            .keys
            .iter()
            .rev()
            .find(|(id, _)| has_subkey(id, sub))
            .map(|(_, k)| k)
    };
    for auth in &step.pubkeys {
        let key = layout.keys.get(auth);
        if auth == link_keyid {
            if let Some(k) = key.or_else(|| main_of_subkey(auth)) {
                return Some(k);
            }
        }
        if key.is_some() && has_subkey(auth, link_keyid) {
            return key;
        }
    }
    None
}

fn check_step_name(name: &str) -> Result<(), VerifyError> {
    if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(VerifyError::BadStepName { name: name.into() });
    }
    Ok(())
}

fn short(keyid: &str) -> &str {
    &keyid[..keyid.len().min(8)]
}

struct Cx<'a> {
    links: &'a dyn LinkSource,
    runner: &'a dyn InspectionRunner,
    opts: &'a Options,
    /// Inspections run so far, sublayouts' included: each may have changed
    /// the inspection directory.
    inspections_run: AtomicUsize,
}

/// The reduced link of each step and each inspection's link, by name.
type Chain = (BTreeMap<String, VerifiedLink>, BTreeMap<String, Link>);

/// Steps 4–13 of the workflow for one (sub)layout.
fn verify_chain(
    verified: &VerifiedLayout,
    subdir: &Path,
    cx: &Cx,
    depth: usize,
    warnings: &mut Vec<Warning>,
) -> Result<Chain, VerifyError> {
    let opts = cx.opts;
    let layout = substituted(&verified.layout, opts.params.as_ref(), depth)?;
    for item in layout
        .steps
        .iter()
        .map(|s| (&s.name, &s.expected_materials, &s.expected_products))
        .chain(
            layout
                .inspect
                .iter()
                .map(|i| (&i.name, &i.expected_materials, &i.expected_products)),
        )
    {
        for (rules, field) in [
            (item.1, "expected_materials"),
            (item.2, "expected_products"),
        ] {
            if !rules::ends_with_disallow_all(rules) {
                warnings.push(Warning::OpenRules {
                    item: item.0.clone(),
                    field,
                });
            }
        }
    }

    // Links, signatures, sublayouts, thresholds.
    let mut reduced: BTreeMap<String, VerifiedLink> = BTreeMap::new();
    let mut wanted: Vec<LinkRef> = Vec::new();
    // Per step, the key ids whose links count (with GPG subkeys).
    let subkeys = subkeys_by_key(&layout);
    let candidates: Vec<Vec<String>> = layout
        .steps
        .iter()
        .map(|s| link_keyids(s, &subkeys))
        .collect();
    for (step, cands) in layout.steps.iter().zip(&candidates) {
        check_step_name(&step.name)?;
        for keyid in cands {
            wanted.push(LinkRef {
                subdir: subdir.to_path_buf(),
                step: step.name.clone(),
                keyid: keyid.clone(),
            });
        }
    }
    // The first inspection's "before" snapshot of its directory does not
    // depend on the links: hash it while the links are parsed and checked.
    // Not when this runs on a rayon worker (`mirror`, many packages at
    // once): the other workers have packages of their own, and a thread per
    // package would hand each small directory to the global pool, whose
    // threads then compete with the workers for the cores.
    // It is thrown away if a sublayout's inspection runs in the meantime
    // (the reference runs those first, and they may change the directory).
    let early = depth == 0 && !layout.inspect.is_empty() && rayon::current_thread_index().is_none();
    let early_snapshot = early.then(|| {
        let dir = opts.inspection_dir.clone();
        let run_before = cx.inspections_run.load(Ordering::SeqCst);
        (
            run_before,
            std::thread::spawn(move || snapshot_before(&dir)),
        )
    });
    cx.links.prefetch(&wanted);
    // Key ids by file: two key ids sharing an 8-character prefix share one.
    let mut keyids_of: HashMap<String, Vec<String>> = HashMap::new();
    for l in &wanted {
        keyids_of
            .entry(l.file_name())
            .or_default()
            .push(l.keyid.clone());
    }
    let step_of = |name: &str| layout.steps.iter().find(|s| s.name == name);
    wanted.sort_by_key(|l| l.file_name());
    wanted.dedup_by_key(|l| l.file_name());
    // Read and parse every link file in parallel (large links dominate),
    // and check its signatures by every key it may be named after while at
    // it; only the payload is kept (a link's canonical bytes are as large
    // as the file).
    type Checked = Vec<(String, Result<(), SignatureProblem>)>;
    type Fetched = (
        String,
        String,
        Result<Option<(Payload, Checked)>, VerifyError>,
    );
    let fetch_one = |link: &LinkRef| -> Fetched {
        let file = link.file_name();
        let r = cx.links.fetch(link, opts.limits).and_then(|bytes| {
            bytes
                .map(|b| {
                    Envelope::parse_owned(b, opts.limits).map_err(|source| VerifyError::Format {
                        path: PathBuf::from(cx.links.describe(link)),
                        source,
                    })
                })
                .transpose()
        });
        let r = r.map(|env| {
            env.map(|env| {
                let checked: Checked = keyids_of
                    .get(&file)
                    .into_iter()
                    .flatten()
                    .filter_map(|keyid| {
                        let key = authorising_key(&layout, &subkeys, step_of(&link.step)?, keyid)?;
                        Some((keyid.to_string(), env.check_signature(key)))
                    })
                    .collect();
                (env.into_payload(), checked)
            })
        });
        (file, cx.links.describe(link), r)
    };
    // With one link or none, starting the thread pool would cost more than
    // the work (about a millisecond of `totogate verify` on an empty layout).
    let fetched: Vec<Fetched> = if wanted.len() < 2 {
        wanted.iter().map(fetch_one).collect()
    } else {
        wanted.par_iter().map(fetch_one).collect()
    };
    let mut missing_at: HashMap<String, String> = HashMap::new();
    let mut loaded: HashMap<String, Result<Option<(Payload, Checked)>, VerifyError>> =
        HashMap::new();
    for (file, at, r) in fetched {
        if matches!(r, Ok(None)) {
            missing_at.insert(file.clone(), at);
        }
        loaded.insert(file, r);
    }
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (step, cands) in layout.steps.iter().zip(&candidates) {
        for keyid in cands {
            *uses
                .entry(format!("{}.{}.link", step.name, short(keyid)))
                .or_default() += 1;
        }
    }
    // First every step's links and thresholds (the reference's
    // `load_links_for_layout` and `verify_link_signature_thresholds`).
    let mut verified_by_step: Vec<Vec<(String, &PublicKey, Payload)>> =
        Vec::with_capacity(layout.steps.len());
    for (step, cands) in layout.steps.iter().zip(&candidates) {
        // (link key id, authorising key, payload) of each link that counts.
        let mut verified: Vec<(String, &PublicKey, Payload)> = Vec::new();
        let mut ignored: Vec<IgnoredLink> = Vec::new();
        let mut present = 0;
        for keyid in cands {
            let file = format!("{}.{}.link", step.name, short(keyid));
            if !missing_at.contains_key(&file) {
                present += 1;
            }
            if matches!(loaded.get(&file), Some(Err(_))) {
                if let Some(Err(e)) = loaded.remove(&file) {
                    return Err(e);
                }
            }
            // Take the parsed link on its last use (links can be large);
            // two key ids sharing an 8-character prefix share a file.
            let last_use = {
                let n = uses.entry(file.clone()).or_insert(1);
                *n -= 1;
                *n == 0
            };
            let (payload, checked_by): (Payload, Checked) = if last_use {
                match loaded.remove(&file) {
                    Some(Ok(Some(parsed))) => parsed,
                    _ => {
                        // Missing: the threshold check speaks for it.
                        if let Some(at) = missing_at.get(&file) {
                            ignored.push(IgnoredLink {
                                file: file.clone(),
                                reason: format!("not found (looked for {at})"),
                            });
                        }
                        continue;
                    }
                }
            } else {
                match loaded.get(&file) {
                    Some(Ok(Some(parsed))) => parsed.clone(),
                    _ => continue,
                }
            };
            let Some(key) = authorising_key(&layout, &subkeys, step, keyid) else {
                ignored.push(IgnoredLink {
                    file,
                    reason: format!(
                        "key {keyid} is listed for the step but not in the layout's keys"
                    ),
                });
                continue;
            };
            // Checked while parsing, for every key id this file can be
            // named after (so this key id is there).
            let checked = checked_by
                .iter()
                .find(|(k, _)| k == keyid)
                .map_or(Err(SignatureProblem::Missing), |(_, r)| *r);
            if let Err(problem) = checked {
                ignored.push(IgnoredLink {
                    file,
                    reason: format!("signature by authorised key {}: {problem}", short(keyid)),
                });
                continue;
            }
            verified.push((keyid.clone(), key, payload));
        }
        for i in &ignored {
            warnings.push(Warning::IgnoredLink(i.clone()));
        }
        let distinct: BTreeSet<&KeyId> = verified.iter().map(|(_, k, _)| k.keyid()).collect();
        let needed = step.threshold.max(1);
        if (distinct.len() as i64) < needed {
            return Err(VerifyError::Threshold {
                step: step.name.clone(),
                threshold: needed,
                found: distinct.len(),
                present,
                ignored,
            });
        }
        verified_by_step.push(verified);
    }

    // Then the sublayouts, in step order (the reference's
    // `verify_sublayouts`), only once every step's links have passed their
    // thresholds: a later step's missing link fails before a sublayout's
    // inspection runs and leaves its files behind.
    let mut links_by_step: Vec<Vec<VerifiedLink>> = Vec::with_capacity(layout.steps.len());
    for (step, verified) in layout.steps.iter().zip(verified_by_step) {
        let mut verified_links: Vec<VerifiedLink> = Vec::with_capacity(verified.len());
        for (keyid, key, payload) in verified {
            let link = match payload {
                Payload::Link(l) => l,
                Payload::Layout(sub) => {
                    if key.keyid().as_str() != keyid {
                        return Err(VerifyError::SublayoutBySubkey {
                            step: step.name.clone(),
                            keyid,
                        });
                    }
                    if depth + 1 > opts.max_sublayout_depth {
                        return Err(VerifyError::SublayoutTooDeep {
                            step: step.name.clone(),
                            limit: opts.max_sublayout_depth,
                        });
                    }
                    let wrap = |source| VerifyError::Sublayout {
                        step: step.name.clone(),
                        keyid: key.keyid().clone(),
                        source: Box::new(source),
                    };
                    if opts.expiry == Expiry::Enforce && sub.expires_at() <= opts.now {
                        return Err(wrap(VerifyError::Expired {
                            expires: sub.expires.clone(),
                            now: crate::model::format_expiry(opts.now),
                        }));
                    }
                    let sub_verified = VerifiedLayout {
                        layout: sub,
                        signed_by: vec![key.keyid().clone()],
                    };
                    let sub_dir = subdir.join(format!("{}.{}", step.name, short(&keyid)));
                    let (sub_links, _) =
                        verify_chain(&sub_verified, &sub_dir, cx, depth + 1, warnings)
                            .map_err(wrap)?;
                    summary_link(&step.name, &sub_verified.layout, &sub_links)
                }
            };
            verified_links.push(VerifiedLink {
                link,
                keyid: key.keyid().clone(),
            });
        }
        links_by_step.push(verified_links);
    }

    // Command alignment, then the threshold constraints (links of a step
    // agree), as the reference does after all sublayouts.
    for (step, mut verified_links) in layout.steps.iter().zip(links_by_step) {
        for l in &verified_links {
            if !l.link.command_equals(&step.expected_command) {
                warnings.push(Warning::CommandMismatch {
                    step: step.name.clone(),
                    expected: step.expected_command.clone(),
                    ran: l.link.command.clone(),
                });
            }
        }
        let first = verified_links.remove(0);
        if step.threshold > 1 {
            for other in &verified_links {
                if other.link.materials != first.link.materials
                    || other.link.products != first.link.products
                {
                    return Err(VerifyError::Disagree {
                        step: step.name.clone(),
                        first: format!("{}.{}.link", step.name, first.keyid.short()),
                        other: format!("{}.{}.link", step.name, other.keyid.short()),
                    });
                }
            }
        }
        reduced.insert(step.name.clone(), first);
    }

    // Step rules against the reduced step links.
    let step_links: BTreeMap<String, &Link> =
        reduced.iter().map(|(k, v)| (k.clone(), &v.link)).collect();
    for step in &layout.steps {
        let link = &reduced[&step.name].link;
        rules::apply(
            &step.name,
            Side::Materials,
            &step.expected_materials,
            link,
            &step_links,
        )?;
        rules::apply(
            &step.name,
            Side::Products,
            &step.expected_products,
            link,
            &step_links,
        )?;
    }

    // Inspections, then their rules against steps and inspections. Each
    // inspection's link is left behind before the next one runs (which
    // could read it), as the reference does. (Writing the last one on
    // another thread while the rules are checked was not faster on verify
    // (b): 264.7 ms against 244.5 ms for this, in two interleaved runs
    // against the same baseline.)
    let mut inspection_links: BTreeMap<String, Link> = BTreeMap::new();
    let mut early_snapshot = early_snapshot;
    for insp in &layout.inspect {
        let before = early_snapshot.take().and_then(|(run_before, h)| {
            let snap = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (cx.inspections_run.load(Ordering::SeqCst) == run_before).then_some(snap)
        });
        let link = run_inspection(insp, cx, before)?;
        if opts.persist_inspection_links {
            write_inspection_link(&opts.inspection_dir, &link)?;
        }
        inspection_links.insert(insp.name.clone(), link);
    }
    let mut all: BTreeMap<String, &Link> = step_links;
    for (k, v) in &inspection_links {
        all.insert(k.clone(), v);
    }
    for insp in &layout.inspect {
        let link = &inspection_links[&insp.name];
        rules::apply(
            &insp.name,
            Side::Materials,
            &insp.expected_materials,
            link,
            &all,
        )?;
        rules::apply(
            &insp.name,
            Side::Products,
            &insp.expected_products,
            link,
            &all,
        )?;
    }
    drop(all);
    Ok((reduced, inspection_links))
}

/// The reference's `get_summary_link`: materials of the first step, products,
/// byproducts and command of the last.
fn summary_link(name: &str, layout: &Layout, links: &BTreeMap<String, VerifiedLink>) -> Link {
    let mut out = Link::default();
    if let (Some(first), Some(last)) = (layout.steps.first(), layout.steps.last()) {
        out.name = name.to_owned();
        if let Some(l) = links.get(&first.name) {
            out.materials = l.link.materials.clone();
        }
        if let Some(l) = links.get(&last.name) {
            out.products = l.link.products.clone();
            out.byproducts = l.link.byproducts.clone();
            out.set_name_command(
                serde_json::Value::String(name.to_owned()),
                l.link.command_values(),
            );
        }
    }
    out
}

/// Runs one inspection in `opts.inspection_dir`, recording the whole
/// directory before and after (default excludes, as the reference).
/// Everything in an inspection directory, as the reference records it
/// (default excludes, symlinked directories followed), except that a symlink
/// leading outside the directory is refused. Hashes of files
/// that were old and unchanged are reused from `reuse`.
fn snapshot(
    dir: &Path,
    reuse: Option<&StatCache>,
    remember: Option<&StatCache>,
) -> Result<crate::model::ArtifactMap, crate::digest::DigestError> {
    // An inspection may leave symlinks to anything on the host (`/`, a
    // blocking `/proc/kmsg`): they are resolved beneath `dir` or refused.
    let artifacts = RecordOptions {
        base_path: Some(dir.to_path_buf()),
        confine_links: true,
        ..RecordOptions::default()
    };
    digest::record_cached(&[".".to_string()], &artifacts, reuse, remember).map(|(m, _)| m)
}

/// The "before" snapshot of an inspection and the stat cache it filled.
type Snapshot = (
    Result<crate::model::ArtifactMap, crate::digest::DigestError>,
    StatCache,
);

fn snapshot_before(dir: &Path) -> Snapshot {
    let cache = StatCache::new();
    (snapshot(dir, None, Some(&cache)), cache)
}

fn run_inspection(
    insp: &Inspection,
    cx: &Cx,
    before: Option<Snapshot>,
) -> Result<Link, VerifyError> {
    let opts = cx.opts;
    if insp.run.is_empty() {
        return Err(VerifyError::InspectionEmpty {
            name: insp.name.clone(),
        });
    }
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| VerifyError::Inspection {
        name: insp.name.clone(),
        source,
    };
    cx.inspections_run.fetch_add(1, Ordering::SeqCst);
    let (materials, cache) = before.unwrap_or_else(|| snapshot_before(&opts.inspection_dir));
    let materials = materials.map_err(|e| wrap(Box::new(e)))?;
    let code = cx
        .runner
        .run(&insp.run, &opts.inspection_dir, opts.inspection_timeout)
        .map_err(wrap)?;
    if code != 0 {
        return Err(VerifyError::InspectionFailed {
            name: insp.name.clone(),
            run: insp.run.clone(),
            code,
        });
    }
    let products =
        snapshot(&opts.inspection_dir, Some(&cache), None).map_err(|e| wrap(Box::new(e)))?;
    // As the reference's `in_toto_run` without `record_streams`.
    let mut byproducts = serde_json::Map::new();
    byproducts.insert("return-value".into(), code.into());
    byproducts.insert("stderr".into(), "".into());
    byproducts.insert("stdout".into(), "".into());
    Ok(Link {
        name: insp.name.clone(),
        command: insp.run.clone(),
        materials,
        products,
        byproducts,
        ..Default::default()
    })
}

/// Writes `link` as `<name>.link` in `dir`, the bytes the reference dumps.
/// A symlink already there (the inspection itself may have left one) is
/// replaced, not written through as the reference does.
fn write_inspection_link(dir: &Path, link: &Link) -> Result<(), VerifyError> {
    use std::os::unix::fs::OpenOptionsExt;
    check_step_name(&link.name)?;
    let path = dir.join(format!("{}.link", link.name));
    let wrap = |source: std::io::Error| VerifyError::InspectionLink {
        name: link.name.clone(),
        path: path.clone(),
        source,
    };
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&path).map_err(wrap)?;
    }
    // Written over the old file's bytes and cut to length at the end,
    // rather than truncated on open: the same file afterwards, but an
    // earlier run's multi-megabyte link is not freed block by block only to
    // be allocated again (opening a 4.4 MB link with O_TRUNC took 9.5 ms,
    // the writing after it 4 ms).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(wrap)?;
    crate::model::write_unsigned_link_file(link, &mut f).map_err(wrap)?;
    let len = std::io::Seek::stream_position(&mut f).map_err(wrap)?;
    f.set_len(len).map_err(wrap)
}

/// Python `str.format(**params)` over a string, as the reference substitutes
/// parameters in rules, commands and inspections (every value a `str`).
fn format_one(s: &str, params: &BTreeMap<String, String>) -> Result<String, VerifyError> {
    str_format(s, params).map_err(|e| VerifyError::Substitution(format!("{s:?}: {e}")))
}

/// Python's `template.format(**params)` with every value a `str`; `Err`
/// says why Python would raise (or why this cannot do what it would).
pub fn str_format(template: &str, params: &BTreeMap<String, String>) -> Result<String, String> {
    py_format(template, params, 2)
}

/// CPython's `build_string` (Objects/stringlib/unicode_format.h): literal
/// text with `{{`/`}}` escapes and replacement fields
/// `{name[index]...!conversion:spec}`; a spec holding `{` is itself
/// formatted one level down (two levels in all, as Python allows).
fn py_format(s: &str, params: &BTreeMap<String, String>, depth: u32) -> Result<String, String> {
    if depth == 0 {
        return Err("Max string recursion exceeded".into());
    }
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < n {
        let c = chars[i];
        i += 1;
        if c != '{' && c != '}' {
            out.push(c);
            continue;
        }
        if i < n && chars[i] == c {
            out.push(c);
            i += 1;
            continue;
        }
        if c == '}' {
            return Err("Single '}' encountered in format string".into());
        }
        if i >= n {
            return Err("Single '{' encountered in format string".into());
        }
        let (field, end) = parse_field(&chars, i)?;
        i = end;
        out.push_str(&render_field(&field, params, depth)?);
    }
    Ok(out)
}

/// One replacement field: its name (with index and attribute parts), its
/// conversion character and its format spec.
struct Field {
    name: String,
    conversion: Option<char>,
    spec: String,
}

/// CPython's `parse_field`, from just after the field's `{`; returns the
/// field and where the text after its closing `}` starts.
fn parse_field(chars: &[char], start: usize) -> Result<(Field, usize), String> {
    let n = chars.len();
    let mut p = start;
    let mut term = None;
    while p < n {
        let c = chars[p];
        p += 1;
        match c {
            '{' => return Err("unexpected '{' in field name".into()),
            // An index may hold `}`, `:` and `!`.
            '[' => {
                while p < n && chars[p] != ']' {
                    p += 1;
                }
            }
            '}' | ':' | '!' => {
                term = Some(c);
                break;
            }
            _ => {}
        }
    }
    let Some(term) = term else {
        return Err("expected '}' before end of string".into());
    };
    let name: String = chars[start..p - 1].iter().collect();
    let mut field = Field {
        name,
        conversion: None,
        spec: String::new(),
    };
    if term == '}' {
        return Ok((field, p));
    }
    if term == '!' {
        if p >= n {
            return Err("end of string while looking for conversion specifier".into());
        }
        field.conversion = Some(chars[p]);
        p += 1;
        if p < n {
            let c = chars[p];
            p += 1;
            if c == '}' {
                return Ok((field, p));
            }
            if c != ':' {
                return Err("expected ':' after conversion specifier".into());
            }
        }
    }
    let spec_start = p;
    let mut count = 1;
    while p < n {
        let c = chars[p];
        p += 1;
        if c == '{' {
            count += 1;
        } else if c == '}' {
            count -= 1;
            if count == 0 {
                field.spec = chars[spec_start..p - 1].iter().collect();
                return Ok((field, p));
            }
        }
    }
    Err("unmatched '{' in format spec".into())
}

/// Python's `get_integer` of the format machinery: ASCII digits (Python
/// also takes other Unicode decimal digits) from `*p`; `None` if there are none.
fn py_get_integer(chars: &[char], p: &mut usize) -> Result<Option<usize>, String> {
    let mut acc: usize = 0;
    let start = *p;
    while let Some(d) = chars.get(*p).and_then(|c| c.to_digit(10)) {
        let d = d as usize;
        if acc > (isize::MAX as usize - d) / 10 {
            return Err("Too many decimal digits in format string".into());
        }
        acc = acc * 10 + d;
        *p += 1;
    }
    Ok((*p > start).then_some(acc))
}

/// The value of one field: the parameter, indexed, converted, then formatted.
fn render_field(
    field: &Field,
    params: &BTreeMap<String, String>,
    depth: u32,
) -> Result<String, String> {
    let name: Vec<char> = field.name.chars().collect();
    let first_end = name
        .iter()
        .position(|&c| c == '.' || c == '[')
        .unwrap_or(name.len());
    let first: String = name[..first_end].iter().collect();
    if first.chars().all(|c| c.is_ascii_digit()) {
        // Empty (automatic numbering) or a number: a positional argument,
        // and the reference passes none (IndexError).
        return Err(format!(
            "{{{}}} is a positional field, and parameters are only passed by name",
            field.name
        ));
    }
    let mut value: String = params
        .get(&first)
        .ok_or_else(|| format!("uses {{{first}}}, which no --param gives"))?
        .clone();
    let mut p = first_end;
    while p < name.len() {
        let c = name[p];
        p += 1;
        match c {
            '.' => {
                let at = p;
                while p < name.len() && name[p] != '.' && name[p] != '[' {
                    p += 1;
                }
                if p == at {
                    return Err("Empty attribute in format string".into());
                }
                let attr: String = name[at..p].iter().collect();
                return Err(format!(
                    "attribute access `.{attr}` in {{{}}} is not supported (Python would \
                     format an attribute of the str: a method's repr, which is not \
                     deterministic, or an AttributeError)",
                    field.name
                ));
            }
            '[' => {
                let at = p;
                while p < name.len() && name[p] != ']' {
                    p += 1;
                }
                if p >= name.len() {
                    return Err("Missing ']' in format string".into());
                }
                let key = &name[at..p];
                p += 1;
                if key.is_empty() {
                    return Err("Empty attribute in format string".into());
                }
                let mut q = 0;
                let index = py_get_integer(key, &mut q)?;
                let index = match index {
                    Some(i) if q == key.len() => i,
                    _ => return Err("string indices must be integers, not 'str'".into()),
                };
                value = value
                    .chars()
                    .nth(index)
                    .ok_or("string index out of range")?
                    .to_string();
            }
            _ => {
                return Err("Only '.' or '[' may follow ']' in format field specifier".into());
            }
        }
    }
    let value = match field.conversion {
        None | Some('s') => value,
        Some('r') => py_repr(&value, false)?,
        Some('a') => py_repr(&value, true)?,
        Some(c) => return Err(format!("Unknown conversion specifier {c}")),
    };
    let spec = if field.spec.contains('{') {
        py_format(&field.spec, params, depth - 1)?
    } else {
        field.spec.clone()
    };
    py_format_str(&value, &spec)
}

/// `repr(s)` (or `ascii(s)`) of a Python str. `repr` keeps printable
/// non-ASCII characters, and which ones are printable needs Python's Unicode
/// tables: a value with non-ASCII characters is refused under `!r`.
fn py_repr(s: &str, ascii: bool) -> Result<String, String> {
    use std::fmt::Write;
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        let u = c as u32;
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if u < 0x20 || u == 0x7f => {
                let _ = write!(out, "\\x{u:02x}");
            }
            _ if u < 0x7f => out.push(c),
            _ if !ascii => {
                return Err(format!(
                    "!r of a value with the non-ASCII character {c:?} is not supported \
                     (use !a or no conversion)"
                ))
            }
            _ if u <= 0xff => {
                let _ = write!(out, "\\x{u:02x}");
            }
            _ if u <= 0xffff => {
                let _ = write!(out, "\\u{u:04x}");
            }
            _ => {
                let _ = write!(out, "\\U{u:08x}");
            }
        }
    }
    out.push(quote);
    Ok(out)
}

/// The longest result a format spec's width may ask for (Python has no
/// limit; a longer one is refused rather than allocated).
const MAX_FORMAT_WIDTH: usize = 1 << 20;

/// `format(value, spec)` for a Python str: CPython's
/// `parse_internal_render_format_spec` (default type `s`, default alignment
/// `<`) and `format_string_internal`, with their errors for what a str
/// refuses (sign, `z`, `#`, `=` alignment, `,`/`_`, other types).
fn py_format_str(value: &str, spec: &str) -> Result<String, String> {
    if spec.is_empty() {
        return Ok(value.to_owned());
    }
    let s: Vec<char> = spec.chars().collect();
    let n = s.len();
    let is_align = |c: char| matches!(c, '<' | '>' | '=' | '^');
    let (mut fill, mut align, mut fill_given) = (' ', '<', false);
    let mut p = 0;
    if n >= 2 && is_align(s[1]) {
        (fill, align, fill_given) = (s[0], s[1], true);
        p = 2;
    } else if n >= 1 && is_align(s[0]) {
        align = s[0];
        p = 1;
    }
    let mut sign = None;
    if p < n && matches!(s[p], '+' | '-' | ' ') {
        sign = Some(s[p]);
        p += 1;
    }
    let no_neg_0 = p < n && s[p] == 'z';
    if no_neg_0 {
        p += 1;
    }
    let alternate = p < n && s[p] == '#';
    if alternate {
        p += 1;
    }
    // `0` before the width: fill with zeros (a str's default alignment
    // stays `<`).
    if !fill_given && p < n && s[p] == '0' {
        fill = '0';
        p += 1;
    }
    let width = py_get_integer(&s, &mut p)?;
    let mut grouping = None;
    if p < n && s[p] == ',' {
        grouping = Some(',');
        p += 1;
    }
    if p < n && s[p] == '_' {
        if grouping.is_some() {
            return Err("Cannot specify both ',' and '_'.".into());
        }
        grouping = Some('_');
        p += 1;
    }
    if p < n && s[p] == ',' && grouping == Some('_') {
        return Err("Cannot specify both ',' and '_'.".into());
    }
    let mut precision = None;
    if p < n && s[p] == '.' {
        p += 1;
        precision = py_get_integer(&s, &mut p)?;
        if precision.is_none() {
            return Err("Format specifier missing precision".into());
        }
    }
    if n - p > 1 {
        return Err(format!(
            "Invalid format specifier '{spec}' for object of type 'str'"
        ));
    }
    let ty = if n - p == 1 { s[p] } else { 's' };
    if let Some(g) = grouping {
        let allowed = matches!(ty, 'd' | 'e' | 'f' | 'g' | 'E' | 'G' | '%' | 'F')
            || (g == '_' && matches!(ty, 'b' | 'o' | 'x' | 'X'));
        if !allowed {
            return Err(format!("Cannot specify '{g}' with '{ty}'."));
        }
    }
    if ty != 's' {
        return Err(format!(
            "Unknown format code '{ty}' for object of type 'str'"
        ));
    }
    match sign {
        Some(' ') => return Err("Space not allowed in string format specifier".into()),
        Some(_) => return Err("Sign not allowed in string format specifier".into()),
        None => {}
    }
    if no_neg_0 {
        return Err("Negative zero coercion (z) not allowed in string format specifier".into());
    }
    if alternate {
        return Err("Alternate form (#) not allowed in string format specifier".into());
    }
    if align == '=' {
        return Err("'=' alignment not allowed in string format specifier".into());
    }
    let mut len = value.chars().count();
    if let Some(pr) = precision {
        len = len.min(pr);
    }
    let total = match width {
        Some(w) if w > len => w,
        _ => len,
    };
    if total > MAX_FORMAT_WIDTH {
        return Err(format!(
            "width {total} is more than totogate pads to ({MAX_FORMAT_WIDTH})"
        ));
    }
    let lpad = match align {
        '>' => total - len,
        '^' => (total - len) / 2,
        _ => 0,
    };
    let rpad = total - len - lpad;
    let mut out = String::with_capacity(total);
    out.extend(std::iter::repeat_n(fill, lpad));
    out.extend(value.chars().take(len));
    out.extend(std::iter::repeat_n(fill, rpad));
    Ok(out)
}

/// The layout whose rules and commands a chain checks: parameters are
/// substituted in the root layout only. The reference's `verify_sublayouts`
/// calls `in_toto_verify` for a sublayout without `substitution_parameters`,
/// so a sublayout's `{name}` stays as written (and `{{` stays doubled).
fn substituted(
    layout: &Layout,
    params: Option<&BTreeMap<String, String>>,
    depth: usize,
) -> Result<Layout, VerifyError> {
    match params {
        Some(params) if depth == 0 => substitute(layout, params),
        _ => Ok(layout.clone()),
    }
}

fn substitute(layout: &Layout, params: &BTreeMap<String, String>) -> Result<Layout, VerifyError> {
    let list = |v: &[String]| -> Result<Vec<String>, VerifyError> {
        v.iter().map(|s| format_one(s, params)).collect()
    };
    let rules = |rs: &[ArtifactRule]| -> Result<Vec<ArtifactRule>, VerifyError> {
        rs.iter()
            .map(|r| {
                ArtifactRule::parse(list(r.words())?)
                    .map_err(|e| VerifyError::Substitution(e.to_string()))
            })
            .collect()
    };
    let mut out = layout.clone();
    for s in &mut out.steps {
        s.expected_materials = rules(&s.expected_materials)?;
        s.expected_products = rules(&s.expected_products)?;
        s.expected_command = list(&s.expected_command)?;
    }
    for i in &mut out.inspect {
        i.expected_materials = rules(&i.expected_materials)?;
        i.expected_products = rules(&i.expected_products)?;
        i.run = list(&i.run)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inspection_link_replaces_a_symlink_instead_of_writing_through_it() {
        use crate::json::{PyContainer, PyStyle};
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let dir = d.path().join("ws");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("check.link")).unwrap();
        // Large enough to be written in several chunks.
        let materials: crate::model::ArtifactMap = (0..2000)
            .map(|i| {
                let h = crate::model::HashDict::sha256([i as u8; 32]);
                (format!("src/ünïcode \"{i}\".txt"), h)
            })
            .collect();
        let link = Link {
            name: "check".into(),
            command: vec!["true".into()],
            products: materials.clone(),
            materials,
            ..Default::default()
        };
        write_inspection_link(&dir, &link).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        let written = dir.join("check.link");
        assert!(std::fs::symlink_metadata(&written).unwrap().is_file());
        let mut expected = String::new();
        let mut doc = PyContainer::object(&mut expected, PyStyle::Indent1, 0);
        doc.key("signatures").push_str("[]");
        link.write_py(PyStyle::Indent1, 1, doc.key("signed"));
        doc.end();
        assert_eq!(std::fs::read_to_string(&written).unwrap(), expected);
        // Written over a longer file left by an earlier run: nothing of it
        // is left past the new end.
        std::fs::write(&written, "x".repeat(expected.len() * 2)).unwrap();
        write_inspection_link(&dir, &link).unwrap();
        assert_eq!(std::fs::read_to_string(&written).unwrap(), expected);
        // A directory in the way, or a name that is not a file name, fails.
        std::fs::create_dir(dir.join("sub.link")).unwrap();
        let sub = Link {
            name: "sub".into(),
            ..Default::default()
        };
        assert!(matches!(
            write_inspection_link(&dir, &sub),
            Err(VerifyError::InspectionLink { .. })
        ));
        let escape = Link {
            name: "../escape".into(),
            ..Default::default()
        };
        assert!(matches!(
            write_inspection_link(&dir, &escape),
            Err(VerifyError::BadStepName { .. })
        ));
        assert!(!d.path().join("escape.link").exists());
    }

    /// `s.format(**P)` in the reference's Python (3.11), with every value a
    /// str: the results (and ValueError/TypeError messages) it gave.
    #[test]
    fn str_format_conversions_specs_and_indexing_as_python() {
        let p: BTreeMap<String, String> = [
            ("X", "src/a.txt"),
            ("E", ""),
            ("W", "5"),
            ("U", "\u{e9}\u{200b}\u{7}'\""),
            ("Q", "it's"),
            ("F", "*"),
            ("A", "<"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cases: &[(&str, Result<&str, Option<&str>>)] = &[
            ("{X}", Ok("src/a.txt")),
            ("{X!s}", Ok("src/a.txt")),
            ("{X!r}", Ok("'src/a.txt'")),
            ("{X!a}", Ok("'src/a.txt'")),
            ("{U!a}", Ok("'\\xe9\\u200b\\x07\\'\"'")),
            ("{Q!r}", Ok("\"it's\"")),
            ("{X!x}", Err(Some("Unknown conversion specifier x"))),
            ("{X!}", Err(Some("unmatched '{' in format spec"))),
            ("{X!s:}", Ok("src/a.txt")),
            (
                "{X!sx}",
                Err(Some("expected ':' after conversion specifier")),
            ),
            ("{X:>12}", Ok("   src/a.txt")),
            ("{X:*^14}", Ok("**src/a.txt***")),
            ("{X:^14}", Ok("  src/a.txt   ")),
            ("{X:<12}|", Ok("src/a.txt   |")),
            ("{X:12}|", Ok("src/a.txt   |")),
            ("{X:.3}", Ok("src")),
            ("{X:12.3}|", Ok("src         |")),
            ("{X:.0}", Ok("")),
            ("{X:s}", Ok("src/a.txt")),
            (
                "{X:d}",
                Err(Some("Unknown format code 'd' for object of type 'str'")),
            ),
            (
                "{X:=12}",
                Err(Some("'=' alignment not allowed in string format specifier")),
            ),
            (
                "{X:+}",
                Err(Some("Sign not allowed in string format specifier")),
            ),
            (
                "{X:-}",
                Err(Some("Sign not allowed in string format specifier")),
            ),
            (
                "{X: }",
                Err(Some("Space not allowed in string format specifier")),
            ),
            ("{X:,}", Err(Some("Cannot specify ',' with 's'."))),
            ("{X:_}", Err(Some("Cannot specify '_' with 's'."))),
            (
                "{X:#}",
                Err(Some(
                    "Alternate form (#) not allowed in string format specifier",
                )),
            ),
            ("{X:012}", Ok("src/a.txt000")),
            ("{X:0>12}", Ok("000src/a.txt")),
            (
                "{X:z}",
                Err(Some(
                    "Negative zero coercion (z) not allowed in string format specifier",
                )),
            ),
            ("{X:.}", Err(Some("Format specifier missing precision"))),
            (
                "{X:12x}",
                Err(Some("Unknown format code 'x' for object of type 'str'")),
            ),
            ("{X:{W}}", Ok("src/a.txt")),
            (
                "{X:{F}^{W}0}",
                Ok("********************src/a.txt*********************"),
            ),
            ("{X:{W}{A}}", Ok("src/a.txt")),
            ("{X:{X:{W}}}", Err(Some("Max string recursion exceeded"))),
            ("{X[0]}", Ok("s")),
            (
                "{X[-1]}",
                Err(Some("string indices must be integers, not 'str'")),
            ),
            ("{X[100]}", Err(Some("string index out of range"))),
            (
                "{X[a]}",
                Err(Some("string indices must be integers, not 'str'")),
            ),
            ("{X[]}", Err(Some("Empty attribute in format string"))),
            (
                "{X[0]x}",
                Err(Some(
                    "Only '.' or '[' may follow ']' in format field specifier",
                )),
            ),
            ("{X[0][0]}", Ok("s")),
            ("{X[0].y}", Err(None)), // AttributeError: 'str' object has no attribute 'y'
            ("{X.}", Err(Some("Empty attribute in format string"))),
            ("{}", Err(None)), // IndexError: Replacement index 0 out of range for positional args tuple
            ("{0}", Err(None)), // IndexError: Replacement index 0 out of range for positional args tuple
            ("{NOPE}", Err(None)), // KeyError: 'NOPE'
            ("{X", Err(Some("expected '}' before end of string"))),
            ("X}", Err(Some("Single '}' encountered in format string"))),
            ("{X}}", Err(Some("Single '}' encountered in format string"))),
            ("{{X}}", Ok("{X}")),
            (
                "{X[}]}",
                Err(Some("string indices must be integers, not 'str'")),
            ),
            ("{X{}", Err(Some("unexpected '{' in field name"))),
            ("{ X}", Err(None)), // KeyError: ' X'
            (
                "{X:{{}}}",
                Err(Some(
                    "Invalid format specifier '{}' for object of type 'str'",
                )),
            ),
            ("{X:{W}.{W}}", Ok("src/a")),
            ("{X:^}", Ok("src/a.txt")),
            ("{X:é^12}", Ok("ésrc/a.txtéé")),
            (
                "{X:}}",
                Err(Some("Single '}' encountered in format string")),
            ),
            (
                "{X:>99999999999999999999}",
                Err(Some("Too many decimal digits in format string")),
            ),
            (
                "{X:%}",
                Err(Some("Unknown format code '%' for object of type 'str'")),
            ),
            (
                "{X:n}",
                Err(Some("Unknown format code 'n' for object of type 'str'")),
            ),
            ("{E:>3}|{E}|", Ok("   ||")),
            ("{U!a:>20}", Ok(" '\\xe9\\u200b\\x07\\'\"'")),
            ("{Q!a}", Ok("\"it's\"")),
            ("{X!r:^15}", Ok("  'src/a.txt'  ")),
            ("{X!a:.4}", Ok("'src")),
            ("{X[1]!r}", Ok("'r'")),
            ("{X!s:{W}}", Ok("src/a.txt")),
            ("{X:{E}}", Ok("src/a.txt")),
            ("{X:0}", Ok("src/a.txt")),
            ("{X:00}", Ok("src/a.txt")),
            ("{X:>0}", Ok("src/a.txt")),
            ("{X:-<3}", Ok("src/a.txt")),
            (
                "{X:<=}",
                Err(Some("'=' alignment not allowed in string format specifier")),
            ),
            (
                "{X:=}",
                Err(Some("'=' alignment not allowed in string format specifier")),
            ),
            ("{X:x<}", Ok("src/a.txt")),
            ("{X:<<5}", Ok("src/a.txt")),
            (
                "{X!",
                Err(Some("end of string while looking for conversion specifier")),
            ),
            ("{X!s", Err(Some("unmatched '{' in format spec"))),
            ("{X[0}", Err(Some("expected '}' before end of string"))),
            ("{X[0]:{W}}", Ok("s    ")),
            ("a{{b}}c{X}d", Ok("a{b}csrc/a.txtd")),
            (
                "{X:,d}",
                Err(Some("Unknown format code 'd' for object of type 'str'")),
            ),
            (
                "{X:_x}",
                Err(Some("Unknown format code 'x' for object of type 'str'")),
            ),
            ("{X:,_}", Err(Some("Cannot specify both ',' and '_'."))),
            ("{X:_,}", Err(Some("Cannot specify both ',' and '_'."))),
            ("{X:>12.20}", Ok("   src/a.txt")),
            ("{X:^12.4}", Ok("    src/    ")),
        ];
        for (s, want) in cases {
            let got = py_format(s, &p, 2);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{s}"),
                (Err(None), Err(_)) => {}
                (Err(Some(w)), Err(g)) => assert!(g.contains(w), "{s}: {g} (Python: {w})"),
                _ => panic!("{s}: {got:?}, Python: {want:?}"),
            }
        }
        // Python gives `<built-in method upper of str object at 0x...>`.
        let e = py_format("{X.upper}", &p, 2).unwrap_err();
        assert!(e.contains("attribute access `.upper`"), "{e}");
        // Python's repr keeps printable non-ASCII characters; not modelled.
        assert!(py_format("{U!r}", &p, 2).is_err());
        let e = format_one("{X:{W}0000000}", &p).unwrap_err();
        assert!(e.to_string().contains("pads to"), "{e}");
    }

    /// The reference substitutes in the root layout only: its
    /// `verify_sublayouts` calls `in_toto_verify` without
    /// `substitution_parameters` (`in-toto-verify` passes, with `--param
    /// BAD=out/app.bin`, a sublayout whose step has `DISALLOW {BAD}`, run
    /// through the library as the CLI has no `--param`).
    #[test]
    fn parameters_are_substituted_in_the_root_layout_only() {
        let layout = Layout {
            expires: "2099-01-01T00:00:00Z".into(),
            readme: String::new(),
            keys: BTreeMap::new(),
            steps: vec![crate::model::Step {
                name: "test".into(),
                expected_materials: vec![],
                expected_products: vec![
                    ArtifactRule::parse(vec!["DISALLOW".into(), "{BAD}".into()]).unwrap(),
                    ArtifactRule::parse(vec!["ALLOW".into(), "{{x}}".into()]).unwrap(),
                ],
                pubkeys: vec![],
                expected_command: vec!["make".into(), "{BAD}".into()],
                threshold: 1,
                threshold_is_bool: false,
            }],
            inspect: vec![],
        };
        let p: BTreeMap<String, String> = [("BAD".to_string(), "out/app.bin".to_string())].into();
        let words = |l: &Layout| -> Vec<Vec<String>> {
            let s = &l.steps[0];
            let mut w: Vec<Vec<String>> = s
                .expected_products
                .iter()
                .map(|r| r.words().to_vec())
                .collect();
            w.push(s.expected_command.clone());
            w
        };
        let root = substituted(&layout, Some(&p), 0).unwrap();
        assert_eq!(
            words(&root),
            [
                vec!["DISALLOW", "out/app.bin"],
                vec!["ALLOW", "{x}"],
                vec!["make", "out/app.bin"]
            ]
        );
        for depth in [1, 2] {
            let sub = substituted(&layout, Some(&p), depth).unwrap();
            assert_eq!(words(&sub), words(&layout));
        }
        assert_eq!(
            words(&substituted(&layout, None, 0).unwrap()),
            words(&layout)
        );
    }

    #[test]
    fn python_format_semantics() {
        let p: BTreeMap<String, String> = [("EDITOR".to_string(), "vim".to_string())].into();
        assert_eq!(format_one("{EDITOR} x {{y}}", &p).unwrap(), "vim x {y}");
        assert!(format_one("{NOPE}", &p).is_err());
        assert!(format_one("a}b", &p).is_err());
    }
}
