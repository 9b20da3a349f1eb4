//! Real runs of `totogate::sandbox`: each test starts an actual confined
//! process and checks the host afterwards.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use totogate::sandbox::{self, Outcome, Policy, Protection, SandboxError, OUTPUT_CAP};

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The monitor program: the totogate binary (this test harness's own main
/// does not call `sandbox::serve`).
fn use_helper() {
    sandbox::set_helper(env!("CARGO_BIN_EXE_totogate"));
}

fn policy(timeout: Duration) -> Policy {
    use_helper();
    Policy {
        timeout,
        ..Policy::default()
    }
}

fn run(cmd: &[&str], dir: &Path) -> Outcome {
    sandbox::run(&argv(cmd), dir, &policy(Duration::from_secs(30))).unwrap()
}

/// `run` of a shell script.
fn sh(script: &str, dir: &Path) -> Outcome {
    run(&["sh", "-c", script], dir)
}

/// A string no other process on the host has in its command line.
fn marker(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("totogate-{tag}-{}-{nanos}", std::process::id())
}

/// Host processes whose command line contains `needle`.
fn count_procs(needle: &str) -> usize {
    procs(needle).len()
}

/// The processes whose command line holds `needle`.
fn procs(needle: &str) -> Vec<nix::unistd::Pid> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                out.push(nix::unistd::Pid::from_raw(pid));
            }
        }
    }
    out
}

#[test]
fn network_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("echo hi > /dev/tcp/127.0.0.1/{port}");
    let dir = tempfile::tempdir().unwrap();

    // Control: outside the sandbox the same command does connect, so the
    // check below can tell.
    let direct = std::process::Command::new("bash")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(direct.success());
    let (_conn, _) = listener.accept().expect("control connection");

    let out = run(&["bash", "-c", &script], dir.path());
    assert_ne!(out.return_value, 0, "connect succeeded inside the sandbox");
    let err = listener.accept().map(|_| ()).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::WouldBlock,
        "listener got a connection"
    );
}

/// Inspections share pooled network namespaces, one at a time. Nothing of
/// one inspection's network state may reach the next: its abstract Unix
/// socket (held past its end by a background process) is gone, and it could
/// not bring the loopback up in the first place (in a namespace of its own,
/// fresh, it could: so this also tells that the pool was used).
#[test]
fn network_namespace_keeps_nothing_between_inspections() {
    pooled_namespaces_keep_nothing();
}

/// The same for a caller that is not root (apt's method runs as `_apt`):
/// the namespaces then come from a holder process in a user namespace of
/// its own. The test runs itself again as `nobody`; the holder is gone once
/// that process is. A holder that dies takes the pool with it, not the
/// inspections: its namespaces can no longer be joined, and each sandbox is
/// set up again with a fresh one of its own (a loopback alone).
#[test]
fn network_namespace_keeps_nothing_between_inspections_as_another_user() {
    use std::os::unix::process::CommandExt;
    const AS_NOBODY: &str = "TOTOGATE_TEST_AS_NOBODY";
    let name = "network_namespace_keeps_nothing_between_inspections_as_another_user";
    if std::env::var_os(AS_NOBODY).is_some() {
        pooled_namespaces_keep_nothing();
        assert_eq!(count_procs(sandbox::HOLDER_ARG), 1, "one holder");
        for pid in procs(sandbox::HOLDER_ARG) {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let out = sh("grep -c : /proc/net/dev", dir.path());
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "1\n",
                "without the holder: {out:?}"
            );
        }
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs itself as nobody, which needs root (as CI runs)"
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(AS_NOBODY, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_procs(sandbox::HOLDER_ARG) > 0 {
        assert!(Instant::now() < deadline, "the holder outlived its caller");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pooled_namespaces_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = marker("abstract");
    let first = format!(
        r#"
import os, socket, fcntl, struct, time
s = socket.socket(socket.AF_UNIX)
s.bind("\0{m}")
try:
    up = struct.pack("16sH14s", b"lo", 1, b"")
    fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8914, up)
    print("lo up")
except PermissionError:
    print("EPERM")
if os.fork() == 0:
    time.sleep(30)
"#
    );
    let out = run(&["/usr/bin/python3", "-c", &first], dir.path());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "EPERM\n", "{out:?}");
    let second = format!(
        r#"
import socket
print(open("/proc/net/unix").read().count("{m}"))
socket.socket(socket.AF_UNIX).bind("\0{m}")
print("bound")
"#
    );
    for _ in 0..4 {
        let out = run(&["/usr/bin/python3", "-c", &second], dir.path());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "0\nbound\n",
            "{out:?}"
        );
    }
}

#[test]
fn host_is_read_only_but_dir_is_writable() {
    let dir = tempfile::tempdir().unwrap();
    let sibling_tmp = tempfile::tempdir().unwrap();
    let sibling_var = tempfile::tempdir_in("/var/tmp").unwrap();
    let m = marker("write");
    let outside: Vec<PathBuf> = vec![
        sibling_tmp.path().join("escaped"),
        sibling_var.path().join("escaped"),
        PathBuf::from(format!("/tmp/{m}")),
        PathBuf::from(format!("/etc/{m}")),
    ];
    let mut script = String::new();
    for p in &outside {
        script += &format!("echo pwned > {}; ", p.display());
    }
    script += "echo inside > ok.txt && mkdir sub && echo nested > sub/f && echo done";
    let out = sh(&script, dir.path());

    for p in &outside {
        assert!(!p.exists(), "{} was created on the host", p.display());
    }
    assert_eq!(
        out.stdout,
        b"done\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ok.txt")).unwrap(),
        "inside\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sub/f")).unwrap(),
        "nested\n"
    );
    // /tmp inside is a private tmpfs: writable there, invisible here.
    let out = sh(&format!("echo t > /tmp/{m} && cat /tmp/{m}"), dir.path());
    assert_eq!(out.stdout, b"t\n");
    assert!(!Path::new(&format!("/tmp/{m}")).exists());
}

#[test]
fn fork_bomb_is_contained() {
    let dir = tempfile::tempdir().unwrap();
    let m = marker("bomb");
    // The marker travels in every fork's command line (bash -c SCRIPT).
    let script = format!(": {m}; :(){{ :|:& }};:; sleep 30");
    let timeout = Duration::from_secs(3);

    // Sample the number of bomb processes on the host while it runs.
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, m) = (peak.clone(), stop.clone(), m.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(count_procs(&m), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let start = Instant::now();
    let result = sandbox::run(
        &argv(&["bash", "-c", &script]),
        dir.path(),
        &policy(timeout),
    );
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    assert!(
        matches!(result, Err(SandboxError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(4),
        "took {elapsed:?}"
    );
    assert_eq!(count_procs(&m), 0, "bomb processes survived");
    let peak = peak.load(Ordering::Relaxed) as u64;
    eprintln!("fork bomb: peak {peak} processes, returned after {elapsed:?}");
    assert!(peak > 1, "sampler never saw the bomb (peak {peak})");
    assert!(
        peak <= Policy::default().max_processes + 8,
        "RLIMIT_NPROC did not bite: {peak} processes"
    );
}

#[test]
fn timeout_kills_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    // A unique duration doubles as the marker.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let secs = format!("1000.{}{nanos}", std::process::id());
    let script = format!("sleep {secs} & sleep {secs}");
    let start = Instant::now();
    let result = sandbox::run(
        &argv(&["sh", "-c", &script]),
        dir.path(),
        &policy(Duration::from_secs(1)),
    );
    let elapsed = start.elapsed();
    match result {
        Err(e @ SandboxError::Timeout { .. }) => {
            assert!(e.to_string().contains("sleep"), "{e}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert_eq!(count_procs(&secs), 0, "a sleeper survived");
}

#[test]
fn exit_code_stdout_and_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = sh("echo hello; echo oops >&2; exit 7", dir.path());
    assert_eq!(out.return_value, 7);
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(out.stderr, b"oops\n");
    assert!(out.missing.is_empty());

    let out = run(&["env"], dir.path());
    assert_eq!(out.return_value, 0);
    let mut vars: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    vars.sort();
    let home = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        vars,
        vec![
            format!("HOME={}", home.display()),
            "LANG=C.UTF-8".to_owned(),
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        ]
    );

    // Signal state of a fresh process: the monitor is a Rust program, whose
    // runtime ignores SIGPIPE, but the command must not inherit that (`yes`
    // would complain about EPIPE instead of dying quietly), nor a mask.
    let out = sh(
        "yes | head -c 1 >/dev/null; grep -E '^Sig(Blk|Ign)' /proc/self/status",
        dir.path(),
    );
    assert_eq!(out.return_value, 0);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );

    // Killed by a signal: minus its number, as Python's subprocess reports.
    let out = sh("kill -9 $$", dir.path());
    assert_eq!(out.return_value, -9);

    let out = run(&["pwd"], dir.path());
    assert_eq!(out.stdout, format!("{}\n", home.display()).as_bytes());
}

#[test]
fn sees_only_its_own_processes_and_no_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = sh(
        "ls /proc | grep -c '^[0-9]'; echo $$; id -u; cat",
        dir.path(),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let procs: u32 = lines[0].parse().unwrap();
    assert!(procs <= 5, "sandbox sees {procs} processes");
    assert_eq!(lines[1], "2", "the command runs under a sandbox init");
    assert_eq!(lines[2], "0");
    assert_eq!(lines.len(), 3, "stdin was not empty: {text}");
}

#[test]
fn output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["head", "-c", "3000000", "/dev/zero"], dir.path());
    assert_eq!(out.return_value, 0);
    assert_eq!(out.stdout.len(), OUTPUT_CAP);
    // Both streams flooded at once: one poll loop reads them, so neither
    // writer is left blocked on a full pipe, and each is capped on its own.
    let out = sh(
        "head -c 3000000 /dev/zero & head -c 3000000 /dev/zero >&2; wait",
        dir.path(),
    );
    assert_eq!(out.return_value, 0);
    assert_eq!(
        (out.stdout.len(), out.stderr.len()),
        (OUTPUT_CAP, OUTPUT_CAP)
    );
}

#[test]
fn missing_program_is_a_spawn_error_naming_it() {
    use_helper();
    let dir = tempfile::tempdir().unwrap();
    let err = sandbox::run(
        &argv(&["totogate-no-such-program", "x"]),
        dir.path(),
        &Policy::default(),
    )
    .unwrap_err();
    assert!(matches!(err, SandboxError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("totogate-no-such-program"),
        "{err}"
    );
}

#[test]
fn probe_finds_every_protection_here() {
    // This host (root, Linux 6.x, user namespaces enabled) supports all of
    // them; the refusal path is unit-tested in the module (`decide`).
    let found = sandbox::probe();
    assert_eq!(found, Protection::ALL.to_vec());
    assert_eq!(sandbox::probe(), found, "cached answer differs");
}
