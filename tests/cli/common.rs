//! Shared helpers: the built binary, the reference oracle, temp dirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn totogate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_totogate"))
}

/// The reference implementation's bin directory (in-toto 3.1.0 in a venv),
/// provisioned on first use by `scripts/oracle-venv.sh`. Never skipped: if it
/// cannot be provisioned the test fails and says why.
pub fn oracle_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let venv = std::env::var_os("TOTOGATE_ORACLE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/oracle-venv"));
        std::fs::create_dir_all(repo().join("target")).unwrap();
        // Serialise provisioning across test binaries.
        let lock = std::fs::File::create(repo().join("target/.oracle-venv.lock")).unwrap();
        lock.lock().unwrap();
        let out = Command::new("bash")
            .arg(repo().join("scripts/oracle-venv.sh"))
            .arg(&venv)
            .output()
            .expect("running scripts/oracle-venv.sh");
        assert!(
            out.status.success(),
            "the reference in-toto 3.1.0 could not be installed into {} (needs python3 with venv and access to PyPI):\n{}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        venv.join("bin")
    })
    .clone()
}

pub fn oracle(tool: &str) -> Command {
    Command::new(oracle_bin().join(tool))
}

pub fn oracle_python() -> Command {
    Command::new(oracle_bin().join("python"))
}

/// Fails the test, saying why, unless it runs as root.
pub fn require_root(why: &str) {
    let uid = ok(Command::new("id").arg("-u")).stdout;
    assert_eq!(
        String::from_utf8_lossy(&uid).trim(),
        "0",
        "{why}: run it as root"
    );
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Exit code and both streams, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

#[track_caller]
pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// An HTTP server on 127.0.0.1 until dropped; each request is answered on
/// its own thread by `handler` (URL path → body, `None` is a 404).
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start<F>(handler: F) -> Server
    where
        F: Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handler = Arc::new(handler);
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_millis(50))
                else {
                    continue;
                };
                let handler = handler.clone();
                std::thread::spawn(move || {
                    let resp = match handler(req.url()) {
                        Some(body) => tiny_http::Response::from_data(body).with_status_code(200),
                        None => tiny_http::Response::from_data(b"not found".to_vec())
                            .with_status_code(404),
                    };
                    let _ = req.respond(resp);
                });
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Serves the files under `root` at `/...`.
    pub fn files(root: PathBuf) -> Server {
        Server::start(move |url| {
            let rel = url.trim_start_matches('/');
            if rel.split('/').any(|c| c == "..") {
                return None;
            }
            std::fs::read(root.join(rel)).ok()
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fixed, reproducible random sequence for the differential tests that
/// draw their inputs (splitmix64; no dependency).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// One of `from`.
    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    /// Up to `max_len` characters of `alphabet`.
    pub fn text(&mut self, alphabet: &[char], max_len: usize) -> String {
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
    /// One of each of `parts`, each with probability one in two.
    pub fn some(&mut self, parts: &[&[&str]]) -> String {
        let mut out = String::new();
        for p in parts {
            if self.below(2) == 0 {
                out += self.pick(p);
            }
        }
        out
    }
}

/// Runs `script` in the reference venv's Python with the path of a file
/// holding `input` as JSON (`sys.argv[1]`), and reads what it prints as JSON.
pub fn python_answers<T: serde::de::DeserializeOwned>(
    script: &str,
    input: &impl serde::Serialize,
) -> T {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.json");
    std::fs::write(&path, serde_json::to_vec(input).unwrap()).unwrap();
    let out = ok(oracle_python().arg("-c").arg(script).arg(&path));
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// Fails, showing the first few, if any of `total` inputs got an answer
/// other than the reference's.
pub fn assert_none_differ(differ: &[String], total: usize, what: &str) {
    assert!(
        differ.is_empty(),
        "{} of {total} {what} differ, first: {:#?}",
        differ.len(),
        &differ[..differ.len().min(20)]
    );
}
