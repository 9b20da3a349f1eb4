//! `check`: the install-time verifier every front door calls.
//!
//! Pipeline: layout signatures and expiry (cheap, first) → unpack the package
//! into a fresh directory (`package`, safe extraction) with the package file
//! itself placed beside its contents → the full in-toto verification
//! (`verify`), with inspections run confined in that directory (`sandbox`)
//! → a [`Verdict`] with every reason. Anything short of a pass is a refusal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::crypto::PublicKey;
use crate::fetch::{Fetch, FetchError, Fetched, Vars};
use crate::json::JsonLimits;
use crate::model::Envelope;
use crate::package::{self, Limits};
use crate::policy::{Ecosystem, Policy, Rule};
use crate::sandbox;
use crate::verify::{
    self, InspectionRunner, LinkRef, LinkSource, Options, VerifiedLayout, VerifyError,
};

/// What the inspections see in their directory besides the package file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// The package unpacked, the package file beside its contents
    /// (`totogate check`, `mirror`, `cargo intoto`).
    Unpacked,
    /// The package file alone, as apt-transport-in-toto's verification
    /// directory holds it: same verdicts as the tool the apt method replaces.
    PackageOnly,
}

/// (sha256 of the layout's bytes, sorted trusted key ids) → the verified layout.
type VerifiedLayouts = HashMap<(String, Vec<String>), Arc<VerifiedLayout>>;

/// Layouts verified once per run: by the sha256 of their bytes and the key
/// ids trusted to sign them, the verified layout. Shared by every check of a
/// run (`mirror`, `cargo intoto verify`, the apt method), so a layout that
/// many packages share has its signatures checked once, not per package.
/// Its expiry is still checked on every use; failures are not kept.
#[derive(Debug, Default)]
pub struct LayoutCache {
    verified: Mutex<VerifiedLayouts>,
    reused: AtomicU64,
}

impl LayoutCache {
    pub fn new() -> LayoutCache {
        LayoutCache::default()
    }
    /// Distinct layouts verified so far.
    pub fn verified(&self) -> usize {
        self.lock().len()
    }
    /// Checks that used an already verified layout.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, VerifiedLayouts> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn key(bytes: &[u8], keys: &[PublicKey]) -> (String, Vec<String>) {
        use sha2::Digest;
        let mut ids: Vec<String> = keys.iter().map(|k| k.keyid().to_string()).collect();
        ids.sort();
        (hex::encode(sha2::Sha256::digest(bytes)), ids)
    }
}

/// Everything one check needs. The layout bytes were fetched by the caller
/// (from a file or a URL, named by `layout_origin`).
pub struct Request<'a> {
    pub package: &'a Path,
    pub layout: &'a [u8],
    pub layout_origin: &'a str,
    pub layout_keys: &'a [PublicKey],
    pub links: &'a dyn LinkSource,
    /// Layouts already verified in this run, if the caller keeps them.
    pub layouts: Option<&'a LayoutCache>,
    pub contents: Contents,
    pub unpack: Limits,
    pub sandbox: sandbox::Policy,
    pub inspection_timeout: Duration,
    /// Directory under which the per-package sandbox directory is made.
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub name: String,
    pub functionary: String,
    pub materials: usize,
    pub products: usize,
}

/// The outcome of a check: allow, or refuse with reasons.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub package: String,
    pub format: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub layout: String,
    pub signed_by: Vec<String>,
    pub steps: Vec<StepSummary>,
    /// Why it was refused (empty when allowed): the first line names the
    /// failing stage and the file, step, rule or key at fault.
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
    /// Sandbox protections missing on this host (only with `allow_weak`).
    pub weak_sandbox: Vec<String>,
    /// Refused only because a step has fewer link files than its threshold
    /// (the reference's `LinkNotFoundError`); apt's `NoFail` forgives this.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub missing_links: bool,
    pub duration_ms: u64,
}

/// Runs inspections with `sandbox::run`, remembering missing protections.
struct SandboxRunner {
    policy: sandbox::Policy,
    missing: Mutex<Vec<String>>,
}

impl InspectionRunner for SandboxRunner {
    fn run(
        &self,
        argv: &[String],
        dir: &Path,
        timeout: Duration,
    ) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
        let mut policy = self.policy.clone();
        policy.timeout = timeout;
        let out = sandbox::run(argv, dir, &policy)?;
        if !out.missing.is_empty() {
            let mut m = self.missing.lock().unwrap_or_else(|e| e.into_inner());
            for p in &out.missing {
                let s = format!("{p:?}");
                if !m.contains(&s) {
                    m.push(s);
                }
            }
        }
        Ok(out.return_value)
    }
}

fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.iter().any(|o| o.contains(&t)) {
            out.push(t);
        }
        cur = s.source();
    }
    out
}

/// Checks one package. Never panics on hostile input; every failure is a
/// refusal whose reasons say what is wrong.
pub fn check(req: &Request) -> Verdict {
    let started = Instant::now();
    let mut v = Verdict {
        allowed: false,
        package: req.package.display().to_string(),
        format: None,
        name: None,
        version: None,
        layout: req.layout_origin.to_owned(),
        signed_by: Vec::new(),
        steps: Vec::new(),
        reasons: Vec::new(),
        warnings: Vec::new(),
        weak_sandbox: Vec::new(),
        missing_links: false,
        duration_ms: 0,
    };
    run_pipeline(req, &mut v);
    v.duration_ms = started.elapsed().as_millis() as u64;
    v
}

fn run_pipeline(req: &Request, v: &mut Verdict) {
    let mut opts = Options::new();
    opts.inspection_timeout = req.inspection_timeout;

    // 1. The layout: parse, signatures, expiry — before touching the package
    //    (once per run for a layout the cache has seen).
    let cache_key = req
        .layouts
        .map(|_| LayoutCache::key(req.layout, req.layout_keys));
    let cached = match (req.layouts, &cache_key) {
        (Some(c), Some(k)) => c.lock().get(k).cloned(),
        _ => None,
    };
    let layout: Arc<VerifiedLayout> = match cached {
        Some(l) => {
            // Still before touching the package: a run can outlive a layout.
            if opts.expiry == verify::Expiry::Enforce && l.layout().expires_at() <= opts.now {
                v.reasons.extend(chain(&VerifyError::Expired {
                    expires: l.layout().expires.clone(),
                    now: crate::model::format_expiry(opts.now),
                }));
                return;
            }
            if let Some(c) = req.layouts {
                c.reused.fetch_add(1, Ordering::Relaxed);
            }
            l
        }
        None => {
            let env = match Envelope::parse(req.layout, opts.limits) {
                Ok(e) => e,
                Err(e) => {
                    v.reasons.push(format!("layout {}: {e}", req.layout_origin));
                    return;
                }
            };
            let verified = match verify::verify_layout(
                &env,
                Path::new(req.layout_origin),
                req.layout_keys,
                opts.expiry,
                opts.now,
            ) {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    v.reasons.extend(chain(&e));
                    return;
                }
            };
            if let (Some(c), Some(k)) = (req.layouts, cache_key) {
                c.lock().insert(k, verified.clone());
            }
            verified
        }
    };

    // 2. Unpack into a fresh directory, with the package file beside its
    //    contents: in memory when it is small enough, else on disk.
    let place = Place {
        package: req.package,
        contents: req.contents,
        limits: &req.unpack,
        inspects: !layout.layout().inspect.is_empty(),
    };
    let prepared = match req.work_dir.as_deref() {
        Some(dir) => place.prepare(Some(dir), None),
        None => place.prepare_anywhere(in_memory(req.package)),
    };
    let (_tmp, root) = match prepared {
        Ok(p) => {
            v.format = p.format;
            v.name = p.name;
            v.version = p.version;
            (p.tmp, p.root)
        }
        Err(e) => {
            v.reasons.extend(e.reasons);
            return;
        }
    };

    // 3. The whole supply chain, inspections confined to the directory.
    opts.inspection_dir = root;
    let runner = SandboxRunner {
        policy: req.sandbox.clone(),
        missing: Mutex::new(Vec::new()),
    };
    let result = verify::verify_with_layout((*layout).clone(), req.links, &runner, &opts);
    v.weak_sandbox = runner
        .missing
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(out) => {
            v.allowed = true;
            v.signed_by = out
                .layout
                .signed_by()
                .iter()
                .map(|k| k.to_string())
                .collect();
            v.steps = out
                .steps
                .iter()
                .map(|(name, l)| StepSummary {
                    name: name.clone(),
                    functionary: l.keyid().to_string(),
                    materials: l.link().materials.len(),
                    products: l.link().products.len(),
                })
                .collect();
            v.warnings = out.warnings.iter().map(|w| w.to_string()).collect();
        }
        Err(e) => {
            v.missing_links = e.is_missing_links();
            v.reasons.extend(chain(&e));
        }
    }
}

/// The largest package checked in memory (see [`in_memory`]), and the most
/// it may unpack to there; a package that needs more is unpacked again on
/// disk under the caller's limits.
const IN_MEMORY_PACKAGE: u64 = 64 << 20;
const IN_MEMORY_UNPACKED: u64 = 256 << 20;

/// A memory file system to prepare a package's directory in, and the most
/// that may be unpacked there.
#[derive(Debug, PartialEq, Eq)]
struct Memory {
    dir: PathBuf,
    max_unpacked: u64,
}

/// `/dev/shm` for a package of at most [`IN_MEMORY_PACKAGE`] bytes, when it
/// is a memory file system we may write to; `None`: the usual temporary
/// directory. Unpacking a small package on a disk file system (ext4 here,
/// where `/tmp` is not a tmpfs as on Debian 13) waits on inode and journal
/// writes and, with `discard`, on the disk when the files are removed:
/// `mirror` of 1,000 small packages took 5.2 s on disk and 3.6 s in memory.
/// At most [`IN_MEMORY_PACKAGE`] + [`IN_MEMORY_UNPACKED`] per check is held.
fn in_memory(package: &Path) -> Option<Memory> {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    use nix::unistd::{access, AccessFlags};
    let shm = Path::new("/dev/shm");
    let small = std::fs::metadata(package).is_ok_and(|m| m.len() <= IN_MEMORY_PACKAGE);
    let usable = small
        && statfs(shm).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC)
        && access(shm, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    usable.then(|| Memory {
        dir: shm.to_path_buf(),
        max_unpacked: IN_MEMORY_UNPACKED,
    })
}

/// A package's directory, ready for its inspections: `root` holds what
/// `contents` says and the package file; `tmp` removes it all when dropped.
struct Prepared {
    tmp: tempfile::TempDir,
    root: PathBuf,
    format: Option<String>,
    name: Option<String>,
    version: Option<String>,
}

/// Why a directory could not be prepared; `out_of_room`: only because the
/// file system filled up or the unpacked size passed a cap lower than the
/// caller's (in memory), so a disk may do.
struct PrepareError {
    reasons: Vec<String>,
    out_of_room: bool,
}

impl PrepareError {
    fn new(reason: String) -> PrepareError {
        PrepareError {
            reasons: vec![reason],
            out_of_room: false,
        }
    }
}

fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
}

/// What goes into a package's directory.
struct Place<'a> {
    package: &'a Path,
    contents: Contents,
    /// The caller's unpack limits.
    limits: &'a Limits,
    /// The layout has inspections (which run as another uid).
    inspects: bool,
}

impl Place<'_> {
    /// In `memory` if given and the package fits there, else on disk.
    fn prepare_anywhere(&self, memory: Option<Memory>) -> Result<Prepared, PrepareError> {
        if let Some(m) = memory {
            match self.prepare(Some(&m.dir), Some(m.max_unpacked)) {
                Err(e) if e.out_of_room => {}
                got => return got,
            }
        }
        self.prepare(None, None)
    }

    /// A fresh directory under `dir` (default: `$TMPDIR`), filled as
    /// `contents` says, unpacking at most `cap` bytes if given.
    fn prepare(&self, dir: Option<&Path>, cap: Option<u64>) -> Result<Prepared, PrepareError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("totogate-");
        let tmp = match dir {
            Some(d) => builder.tempdir_in(d),
            None => builder.tempdir(),
        }
        .map_err(|e| PrepareError::new(format!("cannot create a sandbox directory: {e}")))?;
        // The sandbox runs inspections as an unprivileged uid: it must be
        // able to pass through this directory to reach `root`.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
                .map_err(|e| PrepareError::new(format!("preparing the sandbox directory: {e}")))?;
        }
        if self.inspects {
            if let Some(blocked) = unreachable_by_sandbox(tmp.path()) {
                return Err(PrepareError::new(format!(
                    "the inspections' sandbox runs as uid {} and cannot reach {}: {} is not \
                     searchable by others (chmod o+x it, or choose another --work-dir / $TMPDIR)",
                    sandbox::SANDBOX_ID,
                    tmp.path().display(),
                    blocked.display()
                )));
            }
        }
        let root = tmp.path().join("root");
        let mut p = Prepared {
            root: root.clone(),
            tmp,
            format: None,
            name: None,
            version: None,
        };
        match self.contents {
            Contents::Unpacked => {
                let mut limits = self.limits.clone();
                let capped = cap.is_some_and(|c| c < limits.max_total_bytes);
                if let Some(c) = cap {
                    limits.max_total_bytes = limits.max_total_bytes.min(c);
                }
                match package::unpack(self.package, &root, &limits) {
                    Ok(unpacked) => {
                        p.format = Some(format!("{:?}", unpacked.format));
                        p.name = unpacked.name;
                        p.version = unpacked.version;
                    }
                    Err(e) => {
                        let out_of_room = match &e {
                            package::UnpackError::TooManyBytes { .. } => capped,
                            package::UnpackError::Write { source, .. } => is_full(source),
                            _ => false,
                        };
                        let mut reasons =
                            vec![format!("unpacking {}: refused", self.package.display())];
                        reasons.extend(chain(&e));
                        return Err(PrepareError {
                            reasons,
                            out_of_room,
                        });
                    }
                }
            }
            Contents::PackageOnly => {
                std::fs::create_dir(&root).map_err(|e| {
                    PrepareError::new(format!("cannot create the inspection directory: {e}"))
                })?;
                if let Some((_, name, version)) = identify(self.package) {
                    p.name = Some(name);
                    p.version = Some(version);
                }
            }
        }
        let Some(file_name) = self.package.file_name() else {
            return Err(PrepareError::new(
                "the package path has no file name".into(),
            ));
        };
        let beside = root.join(file_name);
        if std::fs::symlink_metadata(&beside).is_ok() {
            return Err(PrepareError::new(format!(
                "the package contains a member named like the package file itself ({}), which \
                 would hide it",
                file_name.to_string_lossy()
            )));
        }
        if let Err(e) = std::fs::copy(self.package, &beside) {
            return Err(PrepareError {
                out_of_room: is_full(&e),
                reasons: vec![format!(
                    "copying the package into the sandbox directory: {e}"
                )],
            });
        }
        Ok(p)
    }
}

/// The first directory on the way to `dir` that the sandbox's unprivileged
/// uid cannot pass through (no search permission for others), when running
/// as root; as another user the sandbox keeps the caller's uid.
fn unreachable_by_sandbox(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let dir = std::fs::canonicalize(dir).ok()?;
    dir.ancestors().skip(1).find_map(|a| {
        let m = std::fs::metadata(a).ok()?;
        let searchable = m.permissions().mode() & 0o001 != 0 || m.uid() == sandbox::SANDBOX_ID;
        (!searchable).then(|| a.to_path_buf())
    })
}

/// Links found where a policy rule says: `rule.links` expanded for each
/// step and key, sublayout links in `<step>.<keyid8>/` beside them. Fetched
/// concurrently on `prefetch`, then served from memory.
pub struct RuleLinks<'a> {
    rule: &'a Rule,
    vars: Vars,
    fetcher: &'a dyn Fetch,
    cache: Mutex<HashMap<String, Fetched>>,
}

impl<'a> RuleLinks<'a> {
    pub fn new(rule: &'a Rule, vars: Vars, fetcher: &'a dyn Fetch) -> RuleLinks<'a> {
        RuleLinks {
            rule,
            vars,
            fetcher,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn location(&self, link: &LinkRef) -> Result<String, FetchError> {
        let vars = Vars {
            step: Some(link.step.clone()),
            keyid: Some(link.keyid.clone()),
            ..self.vars.clone()
        };
        let loc = self.rule.link_location(&vars)?;
        if link.subdir.as_os_str().is_empty() {
            return Ok(loc);
        }
        let sub = link.subdir.to_string_lossy();
        Ok(match loc.rsplit_once('/') {
            Some((dir, file)) => format!("{dir}/{sub}/{file}"),
            None => format!("{sub}/{loc}"),
        })
    }
}

impl LinkSource for RuleLinks<'_> {
    fn fetch(&self, link: &LinkRef, _limits: JsonLimits) -> Result<Option<Vec<u8>>, VerifyError> {
        let to_err = |location: String, e: FetchError| VerifyError::Fetch {
            location,
            source: Box::new(e),
        };
        let loc = self
            .location(link)
            .map_err(|e| to_err(link.file_name(), e))?;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&loc);
        let got = match cached {
            Some(r) => r,
            None => self.fetcher.get(&loc),
        };
        got.map_err(|e| to_err(loc, e))
    }
    fn describe(&self, link: &LinkRef) -> String {
        self.location(link).unwrap_or_else(|_| link.file_name())
    }
    fn prefetch(&self, links: &[LinkRef]) {
        let locs: Vec<String> = links.iter().filter_map(|l| self.location(l).ok()).collect();
        let got = self.fetcher.get_many(&locs);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.extend(got);
    }
}

/// A package file as the policy sees it: ecosystem, name and version from
/// its file name (`name_version_arch.deb`, `name-version.crate`).
pub fn identify(package: &Path) -> Option<(Ecosystem, String, String)> {
    let file = package.file_name()?.to_str()?;
    if let Some(stem) = file.strip_suffix(".deb") {
        let mut parts = stem.splitn(3, '_');
        let name = parts.next()?;
        // apt escapes the epoch colon as %3a in file names.
        let version = parts.next()?.replace("%3a", ":").replace("%3A", ":");
        return Some((Ecosystem::Deb, name.to_owned(), version));
    }
    if let Some(stem) = file.strip_suffix(".crate") {
        // The version starts at the last '-' followed by a digit.
        let idx = stem
            .char_indices()
            .filter(|(i, c)| *c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map(|(i, _)| i)
            .next_back()?;
        return Some((
            Ecosystem::Crate,
            stem[..idx].to_owned(),
            stem[idx + 1..].to_owned(),
        ));
    }
    None
}

/// What a check under a policy needs besides the package.
pub struct PolicyCheck<'a> {
    pub policy: &'a Policy,
    pub fetcher: &'a dyn Fetch,
    /// Layouts already verified in this run, if the caller keeps them.
    pub layouts: Option<&'a LayoutCache>,
    pub unpack: Limits,
    pub sandbox: sandbox::Policy,
    pub inspection_timeout: Duration,
    pub work_dir: Option<PathBuf>,
}

/// Checks `package` as `pc.policy` says: the first matching rule names the
/// trusted layout keys and where layout and links are. A package with no
/// metadata is refused when the rule (or the policy) requires it, and
/// otherwise allowed as unverified, saying so.
pub fn check_with_policy(package: &Path, pc: &PolicyCheck) -> Verdict {
    let started = Instant::now();
    let refuse = |reasons: Vec<String>| Verdict {
        allowed: false,
        package: package.display().to_string(),
        format: None,
        name: None,
        version: None,
        layout: String::new(),
        signed_by: Vec::new(),
        steps: Vec::new(),
        reasons,
        warnings: Vec::new(),
        weak_sandbox: Vec::new(),
        missing_links: false,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let Some((eco, name, version)) = identify(package) else {
        return refuse(vec![format!(
            "{}: cannot tell the package's name and version from its file name \
             (policy mode knows name_version_arch.deb and name-version.crate)",
            package.display()
        )]);
    };
    let Some(rule) = pc.policy.rule_or_default(eco, &name) else {
        let mut v = refuse(vec![format!(
            "no rule of {} covers {eco} package {name}",
            pc.policy.file.display()
        )]);
        v.name = Some(name);
        v.version = Some(version);
        if !pc.policy.required {
            v.allowed = true;
            v.reasons.clear();
            v.warnings.push(format!(
                "unverified: no rule covers {eco} package {} and the policy does not require metadata",
                v.name.as_deref().unwrap_or("")
            ));
        }
        return v;
    };
    let mut vars = Vars::for_package(&name, &version, package);
    if crate::fetch::uses_var(&rule.layout, "sha256")
        || crate::fetch::uses_var(&rule.links, "sha256")
    {
        match crate::digest::hash_file(package, &[crate::digest::HashAlg::Sha256], false) {
            Ok(h) => vars.sha256 = h.get("sha256").map(|d| d.to_string()),
            Err(e) => return refuse(vec![format!("{}: {e}", package.display())]),
        }
    }
    let layout_loc = match rule.layout_location(&vars) {
        Ok(l) => l,
        Err(e) => {
            return refuse(vec![format!(
                "rule {}: layout location: {e}",
                rule_name(rule)
            )])
        }
    };
    let layout = match pc.fetcher.get(&layout_loc) {
        Ok(Some(b)) => b,
        Ok(None) if rule.required => {
            return refuse(vec![format!(
                "no layout for required package {name} {version}: nothing at {layout_loc}"
            )])
        }
        Ok(None) => {
            let mut v = refuse(Vec::new());
            v.allowed = true;
            v.name = Some(name.clone());
            v.version = Some(version.clone());
            v.layout = layout_loc.clone();
            v.warnings.push(format!(
                "unverified: no in-toto metadata at {layout_loc}, and rule {} does not require it",
                rule_name(rule)
            ));
            return v;
        }
        Err(e) => return refuse(vec![format!("fetching the layout: {e}")]),
    };
    let links = RuleLinks::new(rule, vars, pc.fetcher);
    check(&Request {
        package,
        layouts: pc.layouts,
        contents: Contents::Unpacked,
        layout: &layout,
        layout_origin: &layout_loc,
        layout_keys: &rule.layout_keys,
        links: &links,
        unpack: pc.unpack.clone(),
        sandbox: pc.sandbox.clone(),
        inspection_timeout: pc.inspection_timeout,
        work_dir: pc.work_dir.clone(),
    })
}

fn rule_name(rule: &Rule) -> String {
    match rule.index {
        Some(i) => format!("#{} ({})", i + 1, rule.name),
        None => "(sibling .intoto directory)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_deb() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/samples/deb/hello_1.0_all.deb")
    }

    fn unpacking<'a>(package: &'a Path, limits: &'a Limits) -> Place<'a> {
        Place {
            package,
            contents: Contents::Unpacked,
            limits,
            inspects: false,
        }
    }

    #[test]
    fn only_small_packages_are_checked_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let small = d.path().join("small_1_all.deb");
        std::fs::write(&small, b"!<arch>\n").unwrap();
        let big = d.path().join("big_1_all.deb");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(IN_MEMORY_PACKAGE + 1)
            .unwrap();
        assert_eq!(in_memory(&big), None);
        assert_eq!(in_memory(&d.path().join("missing.deb")), None);
        // Here (and in CI) /dev/shm is a tmpfs root may write to.
        assert_eq!(
            in_memory(&small),
            Some(Memory {
                dir: PathBuf::from("/dev/shm"),
                max_unpacked: IN_MEMORY_UNPACKED
            })
        );
    }

    #[test]
    fn a_package_too_big_for_memory_is_unpacked_on_disk() {
        let memory = tempfile::tempdir().unwrap();
        let (package, limits) = (sample_deb(), Limits::default());
        let place = unpacking(&package, &limits);
        let in_memory_dir = |max_unpacked| Memory {
            dir: memory.path().to_path_buf(),
            max_unpacked,
        };
        // Room enough: prepared in the memory directory.
        let p = place
            .prepare_anywhere(Some(in_memory_dir(1 << 20)))
            .unwrap_or_else(|e| panic!("{:?}", e.reasons));
        assert!(p.tmp.path().starts_with(memory.path()));
        assert!(p.root.join("hello_1.0_all.deb").is_file());
        assert_eq!(p.name.as_deref(), Some("hello"));
        drop(p);
        // Over the memory cap (the sample unpacks to more than 16 bytes):
        // prepared again on disk, nothing left in memory.
        let p = place
            .prepare_anywhere(Some(in_memory_dir(16)))
            .unwrap_or_else(|e| panic!("{:?}", e.reasons));
        assert!(p.tmp.path().starts_with(std::env::temp_dir()));
        assert!(p.root.join("usr/bin/hello").is_file());
        assert_eq!(std::fs::read_dir(memory.path()).unwrap().count(), 0);
        // The caller's own limit is a refusal wherever it is prepared.
        let tight = Limits {
            max_total_bytes: 16,
            ..Limits::default()
        };
        let place = Place {
            limits: &tight,
            ..place
        };
        let e = place
            .prepare_anywhere(Some(in_memory_dir(1 << 20)))
            .err()
            .expect("over the caller's limit");
        assert!(!e.out_of_room);
        assert!(
            e.reasons.iter().any(|r| r.contains("exceeds 16 bytes")),
            "{:?}",
            e.reasons
        );
    }

    #[test]
    fn a_full_memory_file_system_sends_the_package_to_disk() {
        use nix::mount::{mount, umount, MsFlags};
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a small tmpfs: run the tests as root (as .ci/run does)"
        );
        let memory = tempfile::tempdir().unwrap();
        // Room for the directories but not for the sample's files.
        mount(
            Some("tmpfs"),
            memory.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=8k"),
        )
        .unwrap();
        let (package, limits) = (sample_deb(), Limits::default());
        let place = unpacking(&package, &limits);
        let full = place.prepare(Some(memory.path()), Some(1 << 20));
        let got = place.prepare_anywhere(Some(Memory {
            dir: memory.path().to_path_buf(),
            max_unpacked: 1 << 20,
        }));
        let left = std::fs::read_dir(memory.path()).unwrap().count();
        umount(memory.path()).unwrap();
        let e = full.err().expect("an 8 KiB tmpfs cannot hold the sample");
        assert!(e.out_of_room, "{:?}", e.reasons);
        let p = got.unwrap_or_else(|e| panic!("{:?}", e.reasons));
        assert!(p.tmp.path().starts_with(std::env::temp_dir()));
        assert!(p.root.join("usr/bin/hello").is_file());
        assert_eq!(left, 0);
    }
}
