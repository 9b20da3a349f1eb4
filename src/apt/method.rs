//! The `intoto` apt method (`/usr/lib/apt/methods/intoto`), a drop-in for
//! apt-transport-in-toto: `deb intoto://host/debian suite main` downloads
//! over HTTP like apt's `http` method, and every `.deb` is checked before
//! apt hears `201 URI Done`; a refusal is `400 URI Failure`, so apt aborts.
//!
//! Downloads use ureq in this process rather than apt's `http` method as a
//! relayed child (apt-transport-in-toto's way): one process, no relaying of
//! a second protocol stream, requests served concurrently while earlier
//! packages are checked, and the same HTTP stack and limits as `check`.
//! What that costs: apt's `Acquire::http::*` options are not all honoured
//! (proxies are: `Acquire::http::Proxy` and the usual environment variables).

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256, Sha512};

use crate::apt::config::{decode_item, IntotoConfig};
use crate::apt::gate::{Decision, Gate};
use crate::apt::protocol::{
    self, capabilities, general_failure, read_message, uri_done, uri_failure, uri_start, Message,
    UriDone,
};

/// The longest one download's body may take: a server that stalls mid-body
/// cannot hang apt for longer.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Packages downloaded and checked at once.
const WORKERS: usize = 4;

/// Python logging levels, as apt-transport-in-toto's `LogLevel` uses them.
const INFO: u8 = 20;
const WARNING: u8 = 30;

type Out = Arc<Mutex<Box<dyn Write + Send>>>;

fn send(out: &Out, msg: &Message) {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    // apt gone: nothing left to tell it.
    let _ = w.write_all(&msg.to_bytes()).and_then(|()| w.flush());
}

/// Shared by the workers: the configuration from `601 Configuration`, the
/// gate built from it on first use, the HTTP agent.
struct Session {
    /// The settings, or why apt's were unusable (then every `.deb` is refused).
    config: Result<IntotoConfig, String>,
    gate: OnceLock<Result<Gate, String>>,
    agent: ureq::Agent,
    log_level: u8,
}

impl Session {
    fn new(config: Result<IntotoConfig, String>) -> Session {
        let settings = config.as_ref().ok();
        // apt's Acquire::http::Timeout (default 120 s) bounds connecting and
        // waiting for the answer; a body that stalls is cut at DOWNLOAD_LIMIT.
        let timeout = settings
            .and_then(|c| c.http_timeout)
            .unwrap_or(Duration::from_secs(120));
        let mut builder = ureq::Agent::config_builder()
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(DOWNLOAD_LIMIT))
            .http_status_as_error(false)
            .user_agent(concat!("totogate-apt/", env!("CARGO_PKG_VERSION")))
            .proxy(ureq::Proxy::try_from_env());
        let proxy = settings.and_then(|c| c.http_proxy.as_deref());
        if let Some(p) = proxy.filter(|p| !p.is_empty() && *p != "DIRECT") {
            if let Ok(proxy) = ureq::Proxy::new(p) {
                builder = builder.proxy(Some(proxy));
            }
        }
        let log_level = match settings {
            Some(c) if c.debug => 10, // Debug::Acquire::intoto
            Some(c) => c.log_level.unwrap_or(WARNING),
            None => WARNING,
        };
        Session {
            config,
            gate: OnceLock::new(),
            agent: ureq::Agent::new_with_config(builder.build()),
            log_level,
        }
    }

    fn gate(&self) -> Result<&Gate, &str> {
        self.gate
            .get_or_init(|| match &self.config {
                Ok(c) => Gate::new(c).map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            })
            .as_ref()
            .map_err(String::as_str)
    }

    fn log(&self, level: u8, text: &str) {
        if level >= self.log_level {
            eprintln!("in-toto: {text}");
        }
    }
}

/// Runs the method on stdin/stdout until apt closes stdin.
pub fn run() -> std::io::Result<()> {
    // Every check forks the sandbox from this long-lived, multi-threaded
    // process; with transparent huge pages each copy-on-write fault after
    // the fork copies 2 MiB. Measured: most of the method's kernel time.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let stdin = std::io::stdin();
    let out: Out = Arc::new(Mutex::new(Box::new(std::io::stdout())));
    serve(&mut stdin.lock(), out)
}

/// The method's message loop over any pair of streams.
pub fn serve(input: &mut dyn BufRead, out: Out) -> std::io::Result<()> {
    send(&out, &capabilities());
    let mut config: Result<IntotoConfig, String> = Ok(IntotoConfig::default());
    // apt's default, as its own methods use it.
    let mut sandbox_user = String::from("_apt");
    let mut session: Option<Arc<Session>> = None;
    let (tx, rx) = mpsc::channel::<Message>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    let result = loop {
        let msg = match read_message(&mut &mut *input) {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => {
                send(
                    &out,
                    &general_failure(&format!("malformed message from apt: {e}")),
                );
                break Ok(());
            }
        };
        match msg.code {
            protocol::CONFIGURATION => {
                config = IntotoConfig::from_configuration(&msg)
                    .map_err(|e| format!("apt's APT::Intoto settings: {e}"));
                let user = msg
                    .fields_named("Config-Item")
                    .filter_map(|item| decode_item(item).ok())
                    .find(|(k, _)| k.eq_ignore_ascii_case("APT::Sandbox::User"));
                if let Some((_, user)) = user {
                    sandbox_user = user;
                }
            }
            protocol::URI_ACQUIRE => {
                let s = session
                    .get_or_insert_with(|| {
                        let s = Arc::new(Session::new(config.clone()));
                        // Layout, keys and policy are read as root; then the
                        // downloads and checks run as apt's sandbox user.
                        let _ = s.gate();
                        if let Err(e) = drop_privileges(&sandbox_user) {
                            s.log(WARNING, &format!("staying root: {e}"));
                        }
                        s
                    })
                    .clone();
                if workers.len() < WORKERS {
                    let (rx, out, s) = (rx.clone(), out.clone(), s.clone());
                    workers.push(std::thread::spawn(move || loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match next {
                            Ok(m) => acquire(&s, &m, &out),
                            Err(_) => return,
                        }
                    }));
                }
                if tx.send(msg).is_err() {
                    break Ok(());
                }
            }
            _ => {} // nothing else from apt needs an answer
        }
    };
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    result
}

/// Becomes `user` (apt's `APT::Sandbox::User`) when running as root, as
/// apt's own methods do; nothing to do as another user or for `root`.
fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{geteuid, setgid, setgroups, setuid, User};
    if !geteuid().is_root() || user.is_empty() || user == "root" {
        return Ok(());
    }
    let u = User::from_name(user)
        .map_err(|e| format!("looking up sandbox user {user}: {e}"))?
        .ok_or_else(|| format!("sandbox user {user} does not exist"))?;
    setgroups(&[u.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(u.gid).map_err(|e| format!("setgid {}: {e}", u.gid))?;
    setuid(u.uid).map_err(|e| format!("setuid {}: {e}", u.uid))?;
    // Changing uid made the process non-dumpable, which leaves its
    // /proc/self files owned by root: the sandbox could not write the new
    // user namespace's uid_map. Nothing in memory is root's secret (the
    // layout and keys are public), so make it dumpable again.
    nix::sys::prctl::set_dumpable(true).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    Ok(())
}

/// Translates `intoto://` (and `intoto+https://`) into the URL to fetch.
pub fn http_url(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let target = match scheme {
        "intoto" | "intoto+http" | "http" => "http",
        "intoto+https" | "https" => "https",
        _ => return None,
    };
    Some(format!("{target}://{rest}"))
}

fn acquire(s: &Session, req: &Message, out: &Out) {
    let uri = req.field("URI").unwrap_or_default().to_owned();
    let Some(filename) = req.field("Filename").map(PathBuf::from) else {
        send(
            out,
            &uri_failure(&uri, "600 URI Acquire without a Filename", None, false),
        );
        return;
    };
    let Some(url) = http_url(&uri) else {
        send(
            out,
            &uri_failure(&uri, &format!("unsupported URI {uri}"), None, false),
        );
        return;
    };
    let got = match download(s, req, &uri, &url, &filename, out) {
        Ok(Some(got)) => got,
        Ok(None) => return, // answered (not modified, or an HTTP error)
        Err(e) => {
            let _ = std::fs::remove_file(&filename);
            send(out, &uri_failure(&uri, &e.to_string(), None, true));
            return;
        }
    };
    let is_index = req
        .field("Index-File")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let is_deb = filename.extension().is_some_and(|e| e == "deb");
    if is_deb && !is_index {
        if let Err(reason) = gatekeep(s, &filename) {
            let _ = std::fs::remove_file(&filename);
            send(out, &uri_failure(&uri, &reason, None, false));
            return;
        }
    }
    send(
        out,
        &uri_done(&UriDone {
            uri,
            filename: filename.to_string_lossy().into_owned(),
            size: got.size,
            last_modified: got.last_modified,
            sha256: got.sha256,
            sha512: got.sha512,
        }),
    );
}

/// Checks a downloaded `.deb`; `Err` is the refusal apt shows.
fn gatekeep(s: &Session, deb: &Path) -> Result<(), String> {
    let file = deb.file_name().map(|f| f.to_string_lossy().into_owned());
    let file = file.unwrap_or_default();
    let gate = s
        .gate()
        .map_err(|e| format!("in-toto verification for '{file}' refused: {e}"))?;
    match gate.check_deb(deb) {
        Decision::Allowed(v) => {
            s.log(
                INFO,
                &format!(
                    "'{file}' verified: layout {} signed by {}, steps {}",
                    v.layout,
                    v.signed_by.join(", "),
                    v.steps
                        .iter()
                        .map(|st| st.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            Ok(())
        }
        Decision::Forgiven(v) => {
            s.log(
                WARNING,
                &format!(
                    "'{file}' NOT verified, installed anyway because APT::Intoto::NoFail is set: {}",
                    v.reasons.join("; ")
                ),
            );
            Ok(())
        }
        Decision::Refused(v) => Err(format!(
            "in-toto verification for '{file}' failed: {}",
            v.reasons.join("; ")
        )),
        Decision::Skipped(why) => Err(format!("in-toto verification for '{file}' refused: {why}")),
    }
}

struct Downloaded {
    size: u64,
    last_modified: Option<String>,
    sha256: String,
    sha512: Option<String>,
}

/// Downloads `url` to `filename` with apt's conventions: `200 URI Start`
/// first, `If-Modified-Since` from `Last-Modified`, `Maximum-Size` enforced.
/// `Ok(None)` when the answer was already sent.
fn download(
    s: &Session,
    req: &Message,
    uri: &str,
    url: &str,
    filename: &Path,
    out: &Out,
) -> std::io::Result<Option<Downloaded>> {
    let io_err = |e: ureq::Error| std::io::Error::other(format!("{url}: {e}"));
    let mut get = s.agent.get(url);
    if let Some(lm) = req.field("Last-Modified") {
        get = get.header("If-Modified-Since", lm);
    }
    let mut resp = get.call().map_err(io_err)?;
    let status = resp.status().as_u16();
    if status == 304 {
        send(
            out,
            &Message::new(protocol::URI_DONE, "URI Done")
                .with("URI", uri)
                .with("Filename", filename.to_string_lossy())
                .with("IMS-Hit", "true"),
        );
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        let reason = resp.status().canonical_reason().unwrap_or("").to_owned();
        send(
            out,
            &uri_failure(
                uri,
                &format!("{status}  {reason}"),
                Some(&format!("HttpError{status}")),
                status >= 500,
            ),
        );
        return Ok(None);
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let last_modified = header("last-modified");
    let length: Option<u64> = header("content-length").and_then(|l| l.parse().ok());
    let max: Option<u64> = req
        .field("Maximum-Size")
        .and_then(|m| m.parse().ok())
        .filter(|m| *m > 0);
    if let (Some(len), Some(max)) = (length, max) {
        if len > max {
            return Err(std::io::Error::other(format!(
                "{url}: {len} bytes, more than the {max} apt expects"
            )));
        }
    }
    send(out, &uri_start(uri, length, last_modified.as_deref()));

    let mut file = std::fs::File::create(filename)?;
    let mut body = resp
        .body_mut()
        .with_config()
        .limit(max.unwrap_or(u64::MAX))
        .reader();
    let force_hash = s.config.as_ref().ok().and_then(|c| c.force_hash.as_deref());
    let mut h512 = wants_sha512(req, force_hash).then(Sha512::new);
    let mut h256 = Sha256::new();
    let mut size = 0u64;
    // One buffer per worker thread, kept: zeroing a fresh 256 KiB for every
    // download showed in the method's profile.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    BUF.with(|buf| -> std::io::Result<()> {
        let buf = &mut buf.borrow_mut()[..];
        loop {
            let n = body.read(buf)?;
            if n == 0 {
                return Ok(());
            }
            h256.update(&buf[..n]);
            if let Some(h) = h512.as_mut() {
                h.update(&buf[..n]);
            }
            file.write_all(&buf[..n])?;
            size += n as u64;
        }
    })?;
    Ok(Some(Downloaded {
        size,
        last_modified,
        sha256: hex::encode(h256.finalize()),
        sha512: h512.map(|h| hex::encode(h.finalize())),
    }))
}

/// Whether apt needs the SHA-512 of a download besides its SHA-256. apt
/// accepts a download when every hash type both sides name agrees and
/// there is at least one (apt-pkg's `HashStringList::operator==`), so
/// SHA-256 alone does whenever apt expects it, or expects nothing; SHA-512
/// is needed when it is the only one expected, or `Acquire::ForceHash`
/// names it. (Hashing 200 KiB with SHA-512 cost 0.75 ms of CPU here, more
/// than the rest of the download.)
fn wants_sha512(req: &Message, force_hash: Option<&str>) -> bool {
    if let Some(forced) = force_hash {
        return forced.eq_ignore_ascii_case("SHA512");
    }
    req.field("Expected-SHA256").is_none() && req.field("Expected-SHA512").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer the method writes its answers into.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn answers(sink: &Sink) -> Vec<Message> {
        let bytes = sink.0.lock().unwrap().clone();
        let mut r = std::io::Cursor::new(bytes);
        std::iter::from_fn(|| read_message(&mut r).unwrap()).collect()
    }

    /// One loopback server answering `/Release` and 404 for the rest.
    fn server() -> (u16, std::thread::JoinHandle<()>) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let t = std::thread::spawn(move || {
            for _ in 0..3 {
                let Ok(req) = server.recv() else { return };
                let resp = if req.url() == "/debian/Release" {
                    tiny_http::Response::from_data(b"Origin: test\n".to_vec())
                } else {
                    tiny_http::Response::from_data(b"no".to_vec()).with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        });
        (port, t)
    }

    #[test]
    fn sha512_only_when_apt_needs_it() {
        let req = |fields: &[(&str, &str)]| {
            fields.iter().fold(
                Message::new(protocol::URI_ACQUIRE, "URI Acquire"),
                |m, (k, v)| m.with(*k, *v),
            )
        };
        let both = req(&[("Expected-SHA256", "ab"), ("Expected-SHA512", "cd")]);
        let only512 = req(&[("Expected-SHA512", "cd")]);
        let none = req(&[]);
        assert!(!wants_sha512(&both, None));
        assert!(!wants_sha512(&none, None));
        assert!(wants_sha512(&only512, None));
        assert!(wants_sha512(&both, Some("sha512")));
        assert!(!wants_sha512(&only512, Some("SHA256")));
    }

    #[test]
    fn serves_index_files_and_reports_http_errors_as_apt_expects() {
        let (port, _t) = server();
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("Release");
        let deb = dir.path().join("a_1_all.deb");
        let input = format!(
            "601 Configuration\nConfig-Item: APT::Intoto::LogLevel=40\nConfig-Item: APT::Sandbox::User=root\n\n\
             600 URI Acquire\nURI: intoto://127.0.0.1:{port}/debian/Release\nFilename: {}\nIndex-File: true\n\n\
             600 URI Acquire\nURI: intoto://127.0.0.1:{port}/debian/pool/a_1_all.deb\nFilename: {}\n\n",
            release.display(),
            deb.display()
        );
        let got = exchange(&input);
        assert_eq!(got[0].code, protocol::CAPABILITIES);
        assert_eq!(got[0].field("Send-URI-Encoded"), Some("true"));
        let done = got.iter().find(|m| m.code == protocol::URI_DONE).unwrap();
        assert_eq!(done.field("Filename"), Some(release.to_str().unwrap()));
        assert_eq!(
            done.field("SHA256-Hash"),
            Some(hex::encode(Sha256::digest(b"Origin: test\n")).as_str())
        );
        assert_eq!(done.field("Size"), Some("13"));
        assert_eq!(std::fs::read(&release).unwrap(), b"Origin: test\n");
        let fail = got
            .iter()
            .find(|m| m.code == protocol::URI_FAILURE)
            .unwrap();
        assert!(fail.field("URI").unwrap().ends_with("/a_1_all.deb"));
        assert_eq!(fail.field("FailReason"), Some("HttpError404"));
        assert!(!deb.exists());
    }

    /// Runs the method on `input`, returning its answers.
    fn exchange(input: &str) -> Vec<Message> {
        let sink = Sink::default();
        let out: Out = Arc::new(Mutex::new(Box::new(sink.clone())));
        serve(&mut std::io::Cursor::new(input.as_bytes().to_vec()), out).unwrap();
        answers(&sink)
    }

    #[test]
    fn a_server_that_never_answers_is_a_transient_failure_after_acquire_http_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(1).collect();
            std::thread::sleep(std::time::Duration::from_secs(30));
            drop(held);
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Release");
        let started = std::time::Instant::now();
        let got = exchange(&format!(
            "601 Configuration\nConfig-Item: Acquire::http::Timeout=1\nConfig-Item: APT::Sandbox::User=root\n\n\
             600 URI Acquire\nURI: intoto://127.0.0.1:{port}/Release\nFilename: {}\n\n",
            file.display()
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let fail = got
            .iter()
            .find(|m| m.code == protocol::URI_FAILURE)
            .unwrap();
        assert_eq!(fail.field("Transient-Failure"), Some("true"), "{fail:?}");
        assert!(!file.exists());
    }

    #[test]
    fn a_download_larger_than_apt_expects_is_refused() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        std::thread::spawn(move || {
            if let Ok(req) = server.recv() {
                let _ = req.respond(tiny_http::Response::from_data(vec![b'x'; 4096]));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Packages");
        let got = exchange(&format!(
            "601 Configuration\nConfig-Item: APT::Sandbox::User=root\n\n\
             600 URI Acquire\nURI: intoto://127.0.0.1:{port}/Packages\nFilename: {}\n\
             Index-File: true\nMaximum-Size: 100\n\n",
            file.display()
        ));
        assert!(got.iter().all(|m| m.code != protocol::URI_DONE));
        let fail = got
            .iter()
            .find(|m| m.code == protocol::URI_FAILURE)
            .unwrap();
        assert!(fail.field("Message").unwrap().contains("100"), "{fail:?}");
        assert!(!file.exists());
    }

    #[test]
    fn a_deb_is_refused_when_no_layout_is_configured() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        std::thread::spawn(move || {
            if let Ok(req) = server.recv() {
                let _ = req.respond(tiny_http::Response::from_data(b"!<arch>\n".to_vec()));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("a_1_all.deb");
        let input = format!(
            "601 Configuration\nConfig-Item: APT::Intoto::NoFail=true\nConfig-Item: APT::Sandbox::User=root\n\n\
             600 URI Acquire\nURI: intoto://127.0.0.1:{port}/a_1_all.deb\nFilename: {}\n\n",
            deb.display()
        );
        let got = exchange(&input);
        assert!(got.iter().all(|m| m.code != protocol::URI_DONE));
        let fail = got
            .iter()
            .find(|m| m.code == protocol::URI_FAILURE)
            .unwrap();
        let msg = fail.field("Message").unwrap();
        assert!(msg.contains("APT::Intoto::Layout is not set"), "{msg}");
        assert!(fail.field("Transient-Failure").is_none());
        assert!(!deb.exists(), "the refused download is deleted");
    }

    #[test]
    fn intoto_uris_become_http_urls() {
        assert_eq!(
            http_url("intoto://deb.example/debian/pool/a_1_all.deb").as_deref(),
            Some("http://deb.example/debian/pool/a_1_all.deb")
        );
        assert_eq!(
            http_url("intoto+https://deb.example/x").as_deref(),
            Some("https://deb.example/x")
        );
        assert_eq!(http_url("ftp://deb.example/x"), None);
        assert_eq!(http_url("no-scheme"), None);
    }
}
