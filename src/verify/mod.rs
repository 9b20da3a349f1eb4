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

/// The key ids whose link files count for `step`, in the reference's order
/// (in-toto `load_links_for_layout`): each authorised key id, each followed by
/// the ids of its GPG subkeys (a GPG-signed link is named after the signing
/// subkey's fingerprint).
fn link_keyids(layout: &Layout, step: &crate::model::Step) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for auth in &step.pubkeys {
        let subkeys = layout
            .keys
            .get(auth)
            .and_then(PublicKey::gpg)
            .map(|g| g.subkey_ids().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default();
        for id in std::iter::once(auth.clone()).chain(subkeys) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// The key that must have signed the link named after `link_keyid`, as
/// in-toto's `verify_link_signature_thresholds` finds it: an authorised key
/// by its id; the main key of an authorised GPG subkey id; an authorised key
/// of which `link_keyid` is a GPG subkey. Thresholds count these keys.
fn authorising_key<'a>(
    layout: &'a Layout,
    step: &crate::model::Step,
    link_keyid: &str,
) -> Option<&'a PublicKey> {
    let main_of_subkey = |id: &str| {
        layout
            .keys
            .values()
            .rev()
            .find(|k| k.gpg().is_some_and(|g| g.has_subkey(id)))
    };
    for auth in &step.pubkeys {
        let key = layout.keys.get(auth);
        if auth == link_keyid {
            if let Some(k) = key.or_else(|| main_of_subkey(auth)) {
                return Some(k);
            }
        }
        if let Some(k) = key.filter(|k| k.gpg().is_some_and(|g| g.has_subkey(link_keyid))) {
            return Some(k);
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
    let layout = match &opts.params {
        Some(params) => substitute(&verified.layout, params)?,
        None => verified.layout.clone(),
    };
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
    let candidates: Vec<Vec<String>> = layout
        .steps
        .iter()
        .map(|s| link_keyids(&layout, s))
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
    let fetched: Vec<Fetched> = wanted
        .par_iter()
        .map(|link| {
            let file = link.file_name();
            let r = cx.links.fetch(link, opts.limits).and_then(|bytes| {
                bytes
                    .map(|b| {
                        Envelope::parse_owned(b, opts.limits).map_err(|source| {
                            VerifyError::Format {
                                path: PathBuf::from(cx.links.describe(link)),
                                source,
                            }
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
                            let key = authorising_key(&layout, step_of(&link.step)?, keyid)?;
                            Some((keyid.to_string(), env.check_signature(key)))
                        })
                        .collect();
                    (env.into_payload(), checked)
                })
            });
            (file, cx.links.describe(link), r)
        })
        .collect();
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
    for (step, cands) in layout.steps.iter().zip(&candidates) {
        let mut verified_links: Vec<VerifiedLink> = Vec::new();
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
            let Some(key) = authorising_key(&layout, step, keyid) else {
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
            let link = match payload {
                Payload::Link(l) => l,
                Payload::Layout(sub) => {
                    if key.keyid().as_str() != keyid {
                        return Err(VerifyError::SublayoutBySubkey {
                            step: step.name.clone(),
                            keyid: keyid.clone(),
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
                    let sub_dir = subdir.join(format!("{}.{}", step.name, short(keyid)));
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
        for i in &ignored {
            warnings.push(Warning::IgnoredLink(i.clone()));
        }
        let distinct: BTreeSet<&KeyId> = verified_links.iter().map(|l| &l.keyid).collect();
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

/// Python `str.format(**params)` over a string: `{name}` replaced, `{{`/`}}` escapes.
fn format_one(s: &str, params: &BTreeMap<String, String>) -> Result<String, VerifyError> {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '{' if it.peek() == Some(&'{') => {
                it.next();
                out.push('{');
            }
            '}' if it.peek() == Some(&'}') => {
                it.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match it.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(VerifyError::Substitution(format!(
                                "unclosed '{{' in {s:?}"
                            )))
                        }
                    }
                }
                let v = params.get(&name).ok_or_else(|| {
                    VerifyError::Substitution(format!(
                        "{s:?} uses {{{name}}}, which no --param gives"
                    ))
                })?;
                out.push_str(v);
            }
            '}' => {
                return Err(VerifyError::Substitution(format!("single '}}' in {s:?}")));
            }
            c => out.push(c),
        }
    }
    Ok(out)
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

    #[test]
    fn python_format_semantics() {
        let p: BTreeMap<String, String> = [("EDITOR".to_string(), "vim".to_string())].into();
        assert_eq!(format_one("{EDITOR} x {{y}}", &p).unwrap(), "vim x {y}");
        assert!(format_one("{NOPE}", &p).is_err());
        assert!(format_one("a}b", &p).is_err());
    }
}
