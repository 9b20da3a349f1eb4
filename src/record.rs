//! `run` and `record start/stop`: run a step's command, hash its materials
//! and products, and write signed link metadata (as `in-toto-run` and
//! `in-toto-record`, in-toto 3.1.0 `runlib.py`).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::crypto::{KeyError, PrivateKey};
use crate::digest::{self, DigestError, Notes, RecordOptions};
use crate::json::JsonLimits;
use crate::model::{Envelope, EnvelopeKind, FormatError, Link, Payload};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording artifacts: {0}")]
    Digest(#[from] DigestError),
    #[error("command {command:?} could not start: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("command {command:?} timed out after {seconds} s and was killed; no link written")]
    Timeout { command: String, seconds: u64 },
    #[error("signing: {0}")]
    Sign(#[from] KeyError),
    #[error("link cannot be signed: {0}")]
    Canonical(#[from] crate::cjson::CanonicalError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FormatError },
    #[error("{path}: unfinished link is not a link")]
    NotALink { path: PathBuf },
    #[error("{path}: the unfinished link is not signed by this key (start and stop must use the same key)")]
    WrongUnfinishedSigner { path: PathBuf },
}

/// The outcome of running a step command.
pub struct Byproducts {
    pub stdout: String,
    pub stderr: String,
    pub return_value: i32,
}

/// Runs `argv` in the current directory with a timeout. With `capture`, its
/// output is both shown and recorded (text, newlines normalised as Python's
/// universal newlines do); otherwise it is discarded, as the reference does.
pub fn execute(
    argv: &[String],
    capture: bool,
    timeout: Duration,
) -> Result<Byproducts, RecordError> {
    execute_in(argv, capture, timeout, Path::new("."))
}

/// [`execute`] with `dir` as the working directory.
pub fn execute_in(
    argv: &[String],
    capture: bool,
    timeout: Duration,
    dir: &Path,
) -> Result<Byproducts, RecordError> {
    let shown = argv.join(" ");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::inherit());
    if capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().map_err(|source| RecordError::Spawn {
        command: shown.clone(),
        source,
    })?;
    let tee = |pipe: Option<Box<dyn Read + Send>>, to_stderr: bool| {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            if let Some(mut p) = pipe {
                let mut buf = [0u8; 8192];
                while let Ok(n) = p.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let _ = if to_stderr {
                        io::stderr().write_all(&buf[..n])
                    } else {
                        io::stdout().write_all(&buf[..n])
                    };
                }
            }
            got
        })
    };
    let out_t = tee(child.stdout.take().map(|p| Box::new(p) as _), false);
    let err_t = tee(child.stderr.take().map(|p| Box::new(p) as _), true);
    let start = Instant::now();
    // Polls with a growing nap: a quick command is seen exiting within a
    // fraction of a millisecond, a long one costs a wake-up every 5 ms.
    let mut nap = Duration::from_micros(50);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|source| RecordError::Spawn {
            command: shown.clone(),
            source,
        })? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RecordError::Timeout {
                command: shown,
                seconds: timeout.as_secs(),
            });
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    };
    let text = |b: Vec<u8>| {
        String::from_utf8_lossy(&b)
            .replace("\r\n", "\n")
            .replace('\r', "\n")
    };
    let stdout = text(out_t.join().unwrap_or_default());
    let stderr = text(err_t.join().unwrap_or_default());
    use std::os::unix::process::ExitStatusExt;
    let return_value = status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(1));
    Ok(Byproducts {
        stdout,
        stderr,
        return_value,
    })
}

pub struct RunRequest<'a> {
    pub name: &'a str,
    pub materials: &'a [String],
    pub products: &'a [String],
    /// Empty: no command (`-x`).
    pub command: &'a [String],
    pub record_streams: bool,
    pub timeout: Duration,
    pub artifacts: &'a RecordOptions,
}

/// Hashes materials, runs the command, hashes products; returns the link
/// and the command's return value.
pub fn run(req: &RunRequest) -> Result<(Link, Option<i32>, Notes), RecordError> {
    let (materials, mut notes) = digest::record(req.materials, req.artifacts)?;
    let (byproducts, rv) = if req.command.is_empty() {
        (Map::new(), None)
    } else {
        let b = execute(req.command, req.record_streams, req.timeout)?;
        let mut m = Map::new();
        m.insert("stdout".into(), Value::String(b.stdout));
        m.insert("stderr".into(), Value::String(b.stderr));
        m.insert("return-value".into(), json!(b.return_value));
        (m, Some(b.return_value))
    };
    let (products, more) = digest::record(req.products, req.artifacts)?;
    notes.skipped_missing.extend(more.skipped_missing);
    Ok((
        Link {
            name: req.name.to_owned(),
            command: req.command.to_vec(),
            materials,
            products,
            byproducts,
            environment: Map::new(),
            odd: None,
        },
        rv,
        notes,
    ))
}

/// `<step>.<keyid8>.link`
pub fn link_file_name(step: &str, key: &PrivateKey) -> String {
    format!("{step}.{}.link", key.public().keyid().short())
}

/// `.<step>.<keyid8>.link-unfinished`
pub fn unfinished_file_name(step: &str, key: &PrivateKey) -> String {
    format!(".{step}.{}.link-unfinished", key.public().keyid().short())
}

/// Signs `link` into a new envelope of `kind`; returns it with its file bytes.
pub fn sign_link(
    link: Link,
    kind: EnvelopeKind,
    key: &PrivateKey,
) -> Result<(Envelope, Vec<u8>), RecordError> {
    let mut env = Envelope::new(kind, Payload::Link(link))?;
    let bytes = env.sign_to_file_bytes(key)?;
    Ok((env, bytes))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, renamed into place, so a crash never leaves half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let io_err = |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Metadata is public: 0644 (less the umask), as the reference's open() gives.
    let mut tmp = tempfile::Builder::new()
        .prefix(".totogate-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(io_err)?;
    tmp.write_all(bytes).map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// Reads and parses an envelope file.
pub fn load_envelope(path: &Path) -> Result<Envelope, RecordError> {
    let bytes = std::fs::read(path).map_err(|source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Envelope::parse(&bytes, JsonLimits::default()).map_err(|source| RecordError::Format {
        path: path.to_path_buf(),
        source,
    })
}

/// `record start`: materials only, signed, written as the unfinished link in `dir`.
pub fn record_start(
    name: &str,
    materials: &[String],
    opts: &RecordOptions,
    kind: EnvelopeKind,
    key: &PrivateKey,
    dir: &Path,
) -> Result<(PathBuf, Notes), RecordError> {
    let (materials, notes) = digest::record(materials, opts)?;
    let link = Link {
        name: name.to_owned(),
        materials,
        ..Default::default()
    };
    let (_, bytes) = sign_link(link, kind, key)?;
    let path = dir.join(unfinished_file_name(name, key));
    write_atomic(&path, &bytes)?;
    Ok((path, notes))
}

/// `record stop`: loads the unfinished link (which `key` must have signed),
/// adds products, re-signs in the same envelope kind, writes the final link
/// to `out_dir` and removes the unfinished one.
pub fn record_stop(
    name: &str,
    products: &[String],
    opts: &RecordOptions,
    key: &PrivateKey,
    out_dir: &Path,
) -> Result<(PathBuf, Notes), RecordError> {
    let unfinished = PathBuf::from(unfinished_file_name(name, key));
    let env = load_envelope(&unfinished)?;
    env.check_signature(key.public())
        .map_err(|_| RecordError::WrongUnfinishedSigner {
            path: unfinished.clone(),
        })?;
    let Payload::Link(mut link) = env.payload().clone() else {
        return Err(RecordError::NotALink { path: unfinished });
    };
    let (products, notes) = digest::record(products, opts)?;
    link.products = products;
    let (_, bytes) = sign_link(link, env.kind(), key)?;
    let path = out_dir.join(link_file_name(name, key));
    write_atomic(&path, &bytes)?;
    std::fs::remove_file(&unfinished).map_err(|source| RecordError::Io {
        path: unfinished,
        source,
    })?;
    Ok((path, notes))
}
