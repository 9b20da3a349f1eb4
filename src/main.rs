//! The `totogate` command line. Only here: clap parsing, printing, exit codes.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use totogate::crypto::{self, KeyType, PrivateKey, PublicKey};
use totogate::digest::RecordOptions;
use totogate::model::{Envelope, EnvelopeKind, Payload};
use totogate::record::{self, RunRequest};
use totogate::verify::{self, Options, VerifyError};

mod apt_cmd;
mod check_cmd;
mod layout_cmd;
mod mirror_cmd;

// Links with tens of thousands of artifacts make verification allocation-bound;
// mimalloc was part of the change that took 20,000-artifact links from
// 0.51 s to 0.26 s to verify (BENCHMARKS.md). Its version 2 rather than 3:
// both ask for transparent huge pages, and a fresh huge page is zeroed whole
// on first touch, which was 13-20 % of verify (b)'s CPU here. Version 2 touches
// fewer (peak RSS on (b) 52.6 against 68.4 MB) and was as fast or faster on
// every case of benches/verify.sh, start-up most (empty layout 3.1 against
// 4.0 ms).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes shared with in-toto's tools.
const EXIT_FAIL: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "totogate",
    version,
    about = "Refuse to install a package unless its in-toto supply chain checks out",
    long_about = "totogate verifies in-toto supply chains (layouts and links, byte-compatible with \
the in-toto reference implementation 3.1.0) and writes the metadata too.\n\n\
Exit codes: 0 success/verified, 1 verification failed (or the step command failed, for `run`), \
2 usage, unreadable input or internal error."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a package file end to end: verify its supply chain, unpack it, run the inspections confined, allow or refuse
    Check(check_cmd::CheckArgs),
    /// Verify a supply chain: drop-in for in-toto-verify (same flags, same exit codes)
    Verify(VerifyArgs),
    /// Run a step command and write signed link metadata (as in-toto-run)
    Run(RunArgs),
    /// Record a step in two parts, around commands you run yourself (as in-toto-record)
    Record {
        #[command(subcommand)]
        part: RecordCmd,
    },
    /// Sign a layout or link, add a signature, or check signatures (as in-toto-sign)
    Sign(SignArgs),
    /// Generate a key pair: a PKCS#8 private key NAME and a public key NAME.pub
    Keygen(KeygenArgs),
    /// Build and sign a layout from a JSON template naming keys by file
    Layout(layout_cmd::LayoutArgs),
    /// Check a whole pool of packages in bulk: parallel, resumable, shardable
    Mirror(mirror_cmd::MirrorArgs),
    /// Put integrations in place: `install-hooks apt` (intoto:// method, dpkg hook, configuration)
    InstallHooks {
        #[command(subcommand)]
        target: apt_cmd::InstallTarget,
    },
    /// Be apt's DPkg::Pre-Install-Pkgs hook (protocol version 3 on stdin); apt runs this
    AptHook,
    /// Be apt's `intoto` method on stdin/stdout (also what this binary does when called as `intoto`)
    AptMethod,
}

#[derive(Args)]
struct VerifyArgs {
    /// Root layout to verify
    #[arg(short = 'l', long, value_name = "PATH")]
    layout: PathBuf,
    /// Public keys (PEM SubjectPublicKeyInfo) that must all have signed the layout
    #[arg(long = "verification-keys", value_name = "PATH", num_args = 1..)]
    verification_keys: Vec<PathBuf>,
    /// GPG key ids (fingerprint, long or short id, or a subkey's) of keys that
    /// must all have signed the layout, read from the GnuPG keyring
    #[arg(short = 'g', long = "gpg", value_name = "ID", num_args = 1..)]
    gpg: Vec<String>,
    /// GnuPG home directory or keyring file for --gpg (default: $GNUPGHOME, else ~/.gnupg)
    #[arg(long = "gpg-home", value_name = "PATH")]
    gpg_home: Option<PathBuf>,
    /// Directory holding the link files (`<step>.<keyid8>.link`)
    #[arg(long = "link-dir", value_name = "PATH", default_value = ".")]
    link_dir: PathBuf,
    /// Seconds an inspection may run before it is killed and verification fails
    #[arg(
        long = "inspection-timeout",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    inspection_timeout: u64,
    /// Substitute `{NAME}` in the layout's rules, commands and inspections (repeatable)
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Print the verdict as one JSON document on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    verbosity: Verbosity,
}

#[derive(Args, Clone, Copy)]
#[group(multiple = false)]
struct Verbosity {
    /// Say more: warnings about open rules, ignored links
    #[arg(short, long)]
    verbose: bool,
    /// Say nothing but errors
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct SigningArgs {
    /// PKCS#8 PEM private key to sign with (PKCS#1 RSA and SEC1 EC are accepted too)
    #[arg(long = "signing-key", value_name = "PATH")]
    signing_key: Option<PathBuf>,
    /// Password of an encrypted signing key; `-P` alone prompts for it
    #[arg(short = 'P', long, value_name = "PASSWORD", num_args = 0..=1, default_missing_value = "\u{0}prompt")]
    password: Option<String>,
    /// GPG signing (not supported yet: exits 2)
    #[arg(short = 'g', long = "gpg", value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    gpg: Option<String>,
    /// GPG home directory (not supported yet)
    #[arg(long = "gpg-home", value_name = "PATH")]
    gpg_home: Option<PathBuf>,
}

#[derive(Args)]
struct ArtifactArgs {
    /// gitignore-style patterns to leave out; replaces the defaults (*.link* .git *.pyc *~)
    #[arg(long = "exclude", value_name = "PATTERN", num_args = 1..)]
    exclude: Vec<String>,
    /// Resolve and record artifact paths relative to this directory
    #[arg(long = "base-path", value_name = "PATH")]
    base_path: Option<PathBuf>,
    /// Strip this leading string from recorded paths (first match wins)
    #[arg(long = "lstrip-paths", value_name = "PATH", num_args = 1..)]
    lstrip_paths: Vec<String>,
    /// Hash text with CRLF and CR as LF (a library option of the reference)
    #[arg(long = "normalize-line-endings")]
    normalize_line_endings: bool,
    /// Wrap the link in a DSSE envelope instead of a Metablock
    #[arg(long = "use-dsse")]
    use_dsse: bool,
}

impl ArtifactArgs {
    fn options(&self) -> RecordOptions {
        RecordOptions {
            excludes: (!self.exclude.is_empty()).then(|| self.exclude.clone()),
            base_path: self.base_path.clone(),
            normalize_line_endings: self.normalize_line_endings,
            lstrip_paths: self.lstrip_paths.clone(),
            ..RecordOptions::default()
        }
    }
    fn kind(&self) -> EnvelopeKind {
        if self.use_dsse {
            EnvelopeKind::Dsse
        } else {
            EnvelopeKind::Metablock
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Step name (the layout's step this link is evidence for)
    #[arg(short = 'n', long = "step-name", value_name = "NAME")]
    step_name: String,
    /// Artifacts to record before the command runs (files or directories)
    #[arg(short = 'm', long, value_name = "PATH", num_args = 1..)]
    materials: Vec<String>,
    /// Artifacts to record after the command runs
    #[arg(short = 'p', long, value_name = "PATH", num_args = 1..)]
    products: Vec<String>,
    /// Record the command's stdout and stderr in the link
    #[arg(short = 's', long = "record-streams")]
    record_streams: bool,
    /// Run no command; record materials and products only
    #[arg(short = 'x', long = "no-command")]
    no_command: bool,
    /// Directory to write the link to (must exist)
    #[arg(short = 'd', long = "metadata-directory", value_name = "DIR")]
    metadata_directory: Option<PathBuf>,
    /// Seconds the command may run
    #[arg(long = "run-timeout", value_name = "SECONDS", default_value_t = 10)]
    run_timeout: u64,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    artifacts: ArtifactArgs,
    #[command(flatten)]
    verbosity: Verbosity,
    /// The command, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum RecordCmd {
    /// Record materials and write `.<step>.<keyid8>.link-unfinished`
    Start {
        #[arg(short = 'n', long = "step-name", value_name = "NAME")]
        step_name: String,
        #[arg(short = 'm', long, value_name = "PATH", num_args = 1..)]
        materials: Vec<String>,
        #[command(flatten)]
        signing: SigningArgs,
        #[command(flatten)]
        artifacts: ArtifactArgs,
        #[command(flatten)]
        verbosity: Verbosity,
    },
    /// Record products and turn the unfinished link into `<step>.<keyid8>.link`
    Stop {
        #[arg(short = 'n', long = "step-name", value_name = "NAME")]
        step_name: String,
        #[arg(short = 'p', long, value_name = "PATH", num_args = 1..)]
        products: Vec<String>,
        #[arg(short = 'd', long = "metadata-directory", value_name = "DIR")]
        metadata_directory: Option<PathBuf>,
        #[command(flatten)]
        signing: SigningArgs,
        #[command(flatten)]
        artifacts: ArtifactArgs,
        #[command(flatten)]
        verbosity: Verbosity,
    },
}

#[derive(Args)]
struct SignArgs {
    /// The layout or link to sign
    #[arg(short = 'f', long, value_name = "PATH")]
    file: PathBuf,
    /// Private keys to sign with, or with --verify public keys to check
    #[arg(short = 'k', long = "key", value_name = "PATH", num_args = 1..)]
    key: Vec<PathBuf>,
    /// Prompt once for the password of the private keys
    #[arg(short = 'p', long)]
    prompt: bool,
    /// GPG (not supported yet: exits 2)
    #[arg(short = 'g', long = "gpg", value_name = "ID", num_args = 0..)]
    gpg: Option<Vec<String>>,
    #[arg(long = "gpg-home", value_name = "PATH")]
    gpg_home: Option<PathBuf>,
    /// Where to write; default: a layout in place, a link as `<step>.<keyid8>.link`
    #[arg(short = 'o', long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Keep existing signatures (layouts only)
    #[arg(short = 'a', long)]
    append: bool,
    /// Check that every key given has a valid signature on the file; write nothing
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    verbosity: Verbosity,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyKind {
    Ed25519,
    Rsa,
    Ecdsa,
}

#[derive(Clone, Copy, ValueEnum)]
enum Curve {
    P256,
    P384,
}

#[derive(Args)]
struct KeygenArgs {
    /// Writes NAME (private, PKCS#8 PEM, mode 0600) and NAME.pub (SubjectPublicKeyInfo PEM)
    name: PathBuf,
    #[arg(short = 't', long = "type", value_enum, default_value = "ed25519")]
    key_type: KeyKind,
    /// Curve for --type ecdsa
    #[arg(long, value_enum, default_value = "p256")]
    curve: Curve,
    /// Encrypt the private key; `-P` alone prompts
    #[arg(short = 'P', long, value_name = "PASSWORD", num_args = 0..=1, default_missing_value = "\u{0}prompt")]
    password: Option<String>,
    /// Print the key id (and file names) as JSON
    #[arg(long)]
    json: bool,
}

/// An error that exits with a chosen code (anyhow errors exit 2).
#[derive(Debug)]
struct Exit(u8);
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}
impl std::error::Error for Exit {}

fn main() -> ExitCode {
    totogate::sandbox::serve();
    let run = if apt_cmd::called_as_method() {
        apt_cmd::run_method()
    } else {
        dispatch(Cli::parse())
    };
    match run {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return ExitCode::from(*code);
            }
            eprintln!("totogate: error: {}", chain(&e));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The error and its causes, skipping causes whose text the message above
/// already includes (our error types name their source in their message).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Cmd::Check(a) => check_cmd::run(a),
        Cmd::Verify(a) => cmd_verify(a),
        Cmd::Run(a) => cmd_run(a),
        Cmd::Record { part } => cmd_record(part),
        Cmd::Sign(a) => cmd_sign(a),
        Cmd::Keygen(a) => cmd_keygen(a),
        Cmd::Layout(a) => layout_cmd::run(a),
        Cmd::Mirror(a) => mirror_cmd::run(a),
        Cmd::InstallHooks { target } => apt_cmd::install_hooks(target),
        Cmd::AptHook => apt_cmd::run_hook(),
        Cmd::AptMethod => apt_cmd::run_method(),
    }
}

fn password(given: &Option<String>, what: &str) -> Result<Option<String>> {
    match given.as_deref() {
        None => Ok(None),
        Some("\u{0}prompt") => Ok(Some(
            rpassword::prompt_password(format!("Password for {what}: "))
                .context("reading the password")?,
        )),
        Some(p) => Ok(Some(p.to_owned())),
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

pub(crate) fn load_private(path: &Path, password: Option<&str>) -> Result<PrivateKey> {
    PrivateKey::from_pem(&read_text(path)?, password)
        .with_context(|| format!("{}: cannot load private key", path.display()))
}

pub(crate) fn load_public(path: &Path) -> Result<PublicKey> {
    PublicKey::from_pem(&read_text(path)?)
        .with_context(|| format!("{}: cannot load public key", path.display()))
}

fn signing_key(s: &SigningArgs) -> Result<PrivateKey> {
    if s.gpg.is_some() || s.gpg_home.is_some() {
        bail!("GPG signing is not supported yet; use --signing-key with a PEM key");
    }
    let path = s
        .signing_key
        .as_ref()
        .ok_or_else(|| anyhow!("specify --signing-key <path> (GPG is not supported yet)"))?;
    let pw = password(&s.password, &path.display().to_string())?;
    load_private(path, pw.as_deref())
}

fn note_missing(notes: &totogate::digest::Notes, quiet: bool) {
    if quiet {
        return;
    }
    for m in &notes.skipped_missing {
        eprintln!("totogate: note: artifact {m:?} does not exist, skipped (as in-toto does)");
    }
}

fn cmd_run(a: RunArgs) -> Result<u8> {
    if !a.no_command && a.command.is_empty() {
        bail!("no command given: put it after `--`, or pass -x/--no-command");
    }
    let key = signing_key(&a.signing)?;
    let opts = a.artifacts.options();
    let command: Vec<String> = if a.no_command {
        Vec::new()
    } else {
        a.command.clone()
    };
    let req = RunRequest {
        name: &a.step_name,
        materials: &a.materials,
        products: &a.products,
        command: &command,
        record_streams: a.record_streams,
        timeout: Duration::from_secs(a.run_timeout),
        artifacts: &opts,
    };
    let (link, rv, notes) = match record::run(&req) {
        Ok(x) => x,
        Err(e) => {
            eprintln!(
                "totogate: error: step `{}`: {e}; no link written",
                a.step_name
            );
            // As in-toto-run: a command that cannot run or times out is a
            // failure (1); unreadable artifacts are bad input (2).
            return Ok(match e {
                record::RecordError::Spawn { .. } | record::RecordError::Timeout { .. } => {
                    EXIT_FAIL
                }
                _ => EXIT_USAGE,
            });
        }
    };
    note_missing(&notes, a.verbosity.quiet);
    let (env, bytes) = record::sign_link(link, a.artifacts.kind(), &key)?;
    let dir = a.metadata_directory.unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        bail!("{}: metadata directory does not exist", dir.display());
    }
    let path = dir.join(record::link_file_name(&a.step_name, &key));
    record::write_atomic(&path, &bytes)?;
    // The process is about to exit: freeing a link of tens of thousands of
    // artifacts entry by entry would only cost time.
    std::mem::forget(env);
    if a.verbosity.verbose {
        eprintln!("totogate: wrote {}", path.display());
    }
    // As in-toto-run: the link is written, and the exit code is the command's.
    Ok(match rv {
        Some(0) | None => 0,
        Some(c) => (c & 0xff) as u8,
    })
}

fn cmd_record(part: RecordCmd) -> Result<u8> {
    match part {
        RecordCmd::Start {
            step_name,
            materials,
            signing,
            artifacts,
            verbosity,
        } => {
            let key = signing_key(&signing)?;
            let (path, notes) = record::record_start(
                &step_name,
                &materials,
                &artifacts.options(),
                artifacts.kind(),
                &key,
                Path::new("."),
            )?;
            note_missing(&notes, verbosity.quiet);
            if verbosity.verbose {
                eprintln!("totogate: wrote {}", path.display());
            }
        }
        RecordCmd::Stop {
            step_name,
            products,
            metadata_directory,
            signing,
            artifacts,
            verbosity,
        } => {
            let key = signing_key(&signing)?;
            let dir = metadata_directory.unwrap_or_else(|| PathBuf::from("."));
            let (path, notes) =
                record::record_stop(&step_name, &products, &artifacts.options(), &key, &dir)?;
            note_missing(&notes, verbosity.quiet);
            if verbosity.verbose {
                eprintln!("totogate: wrote {}", path.display());
            }
        }
    }
    Ok(0)
}

fn cmd_sign(a: SignArgs) -> Result<u8> {
    if a.verify && (a.append || a.output.is_some()) {
        bail!("--verify does not go with --append or --output");
    }
    if a.gpg.is_some() {
        bail!("GPG signing is not supported yet; use -k with PEM keys");
    }
    if a.key.is_empty() {
        bail!("specify -k/--key <path>...");
    }
    let mut env = record::load_envelope(&a.file)?;
    if a.verify {
        let mut failed = false;
        for k in &a.key {
            let key = load_public(k)?;
            match env.check_signature(&key) {
                Ok(()) => {
                    if !a.verbosity.quiet {
                        eprintln!(
                            "{}: signature by {} verifies",
                            a.file.display(),
                            key.keyid()
                        );
                    }
                }
                Err(p) => {
                    eprintln!("{}: key {}: {p}", a.file.display(), key.keyid());
                    failed = true;
                }
            }
        }
        return Ok(if failed { EXIT_FAIL } else { 0 });
    }
    let is_link = matches!(env.payload(), Payload::Link(_));
    if is_link && a.key.len() > 1 {
        bail!("a link is signed by exactly one key (got {})", a.key.len());
    }
    if is_link && a.append {
        bail!("--append is for layouts only: a link carries one functionary's signature");
    }
    let pw = if a.prompt {
        Some(
            rpassword::prompt_password("Password for the key(s): ")
                .context("reading the password")?,
        )
    } else {
        None
    };
    if !a.append {
        env.clear_signatures();
    }
    let mut last = None;
    for k in &a.key {
        let key = load_private(k, pw.as_deref())?;
        env.sign(&key)?;
        last = Some(key);
    }
    let out = match (&a.output, env.payload(), &last) {
        (Some(o), _, _) => o.clone(),
        (None, Payload::Link(l), Some(k)) => PathBuf::from(record::link_file_name(&l.name, k)),
        _ => a.file.clone(),
    };
    record::write_atomic(&out, &env.to_file_bytes())?;
    if a.verbosity.verbose {
        eprintln!("totogate: wrote {}", out.display());
    }
    Ok(0)
}

fn cmd_keygen(a: KeygenArgs) -> Result<u8> {
    let (kt, p384) = match (a.key_type, a.curve) {
        (KeyKind::Ed25519, _) => (KeyType::Ed25519, false),
        (KeyKind::Rsa, _) => (KeyType::Rsa, false),
        (KeyKind::Ecdsa, c) => (KeyType::Ecdsa, matches!(c, Curve::P384)),
    };
    let key = crypto::generate(kt, p384)?;
    let pw = password(&a.password, "the new key")?;
    let private = key.to_pkcs8_pem(pw.as_deref())?;
    let pub_path = PathBuf::from(format!("{}.pub", a.name.display()));
    write_private(&a.name, private.as_bytes())?;
    record::write_atomic(&pub_path, key.public().to_pem().as_bytes())?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "keyid": key.public().keyid().as_str(),
                "scheme": key.public().scheme().as_str(),
                "private": a.name,
                "public": pub_path,
            })
        );
    } else {
        eprintln!(
            "wrote {} and {} (keyid {}, {})",
            a.name.display(),
            pub_path.display(),
            key.public().keyid(),
            key.public().scheme().as_str()
        );
    }
    Ok(0)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".totogate-key-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

fn cmd_verify(a: VerifyArgs) -> Result<u8> {
    if a.verification_keys.is_empty() && a.gpg.is_empty() {
        eprintln!(
            "totogate verify: error: pass at least one key with --verification-keys (or --gpg)"
        );
        return Ok(EXIT_USAGE);
    }
    let mut keys = Vec::new();
    if !a.gpg.is_empty() {
        let home = a.gpg_home.clone().unwrap_or_else(crypto::gpg::default_home);
        keys.extend(crypto::gpg::load_keys(&home, &a.gpg)?);
    }
    for p in &a.verification_keys {
        keys.push(load_public(p)?);
    }
    let mut opts = Options::new();
    opts.inspection_timeout = Duration::from_secs(a.inspection_timeout);
    // As in-toto-verify: each inspection's link is left in the working directory.
    opts.persist_inspection_links = true;
    if !a.params.is_empty() {
        let mut m = std::collections::BTreeMap::new();
        for p in &a.params {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow!("--param {p:?}: expected NAME=VALUE"))?;
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bail!("--param {p:?}: names are made of a-z A-Z 0-9 _ -");
            }
            m.insert(k.to_owned(), v.to_owned());
        }
        opts.params = Some(m);
    }
    let links = verify::DirLinks(a.link_dir.clone());
    let result = verify::verify_root(&a.layout, &keys, &links, &verify::HostRunner, &opts);
    let (code, report) = match &result {
        Ok(out) => (0, verdict_json(&a, Ok(out))),
        Err(e) => (failure_code(e), verdict_json(&a, Err(e))),
    };
    if a.json {
        println!("{report}");
    }
    match &result {
        Ok(out) => {
            for w in &out.warnings {
                let show = match w {
                    verify::Warning::CommandMismatch { .. } => !a.verbosity.quiet,
                    _ => a.verbosity.verbose,
                };
                if show && !a.json {
                    eprintln!("totogate: warning: {w}");
                }
            }
            if a.verbosity.verbose && !a.json {
                eprintln!("totogate: PASS: {} verified", a.layout.display());
            }
        }
        Err(e) => {
            if !a.json && !a.verbosity.quiet || code == EXIT_USAGE {
                eprintln!("totogate: FAIL: {e}");
            }
        }
    }
    // The process ends here: freeing every artifact record of the links
    // (its path is an allocation; 100,000 and more on big chains) would
    // only delay the exit.
    std::mem::forget(result);
    Ok(code)
}

/// Unreadable input is a usage error (2), except that a link directory's
/// contents are evidence: anything wrong there is a verification failure (1).
fn failure_code(e: &VerifyError) -> u8 {
    match e {
        VerifyError::Io { .. } | VerifyError::NoLayoutKeys => EXIT_USAGE,
        _ => EXIT_FAIL,
    }
}

fn verdict_json(
    a: &VerifyArgs,
    r: std::result::Result<&verify::Outcome, &VerifyError>,
) -> serde_json::Value {
    match r {
        Ok(out) => serde_json::json!({
            "verdict": "pass",
            "layout": a.layout,
            "signed_by": out.layout.signed_by().iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "steps": out.steps.iter().map(|(name, l)| serde_json::json!({
                "name": name,
                "functionary": l.keyid().as_str(),
                "materials": l.link().materials.len(),
                "products": l.link().products.len(),
            })).collect::<Vec<_>>(),
            "warnings": out.warnings.iter().map(|w| serde_json::json!({
                "message": w.to_string(),
                "detail": w,
            })).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({
            "verdict": "fail",
            "layout": a.layout,
            "error": e.to_string(),
            "reasons": error_chain(e),
        }),
    }
}

fn error_chain(e: &VerifyError) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out
}

/// Re-exported for the layout subcommand.
pub(crate) fn envelope_kind(dsse: bool) -> EnvelopeKind {
    if dsse {
        EnvelopeKind::Dsse
    } else {
        EnvelopeKind::Metablock
    }
}

pub(crate) fn write_envelope(path: &Path, env: &Envelope) -> Result<()> {
    record::write_atomic(path, &env.to_file_bytes())?;
    Ok(())
}
