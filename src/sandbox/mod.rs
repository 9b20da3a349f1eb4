//! Confined execution of layout inspections.
//!
//! An inspection is an arbitrary command taken from signed metadata and run
//! at install time, as root, in the directory the package was unpacked
//! into. A layout signed by a compromised or careless key must not be able to
//! use it to change the host, reach the network, or leave processes behind.
//! [`run`] executes it with these protections (see [`Protection`]):
//!
//! * new user, mount, pid, network, IPC and UTS namespaces;
//! * the whole host file system read-only and `nosuid`, except `dir` (bound
//!   read-write at its own path) and fresh, size-capped tmpfs on `/tmp`,
//!   `/dev/shm` and `/run` (the last hides host daemons' Unix sockets);
//! * a fresh `/proc` showing only the sandbox's processes;
//! * no network: the new network namespace has only a loopback, left down;
//! * rlimits on CPU time, address space, processes, file size, no core files;
//! * a clean environment (`PATH`, `HOME=dir`, `LANG`), stdin `/dev/null`,
//!   stdout and stderr captured up to [`OUTPUT_CAP`] bytes each;
//! * a timeout that kills the whole process tree.
//!
//! # Design
//!
//! [`run`] starts the *monitor* as a fresh process: the small
//! `totogate-sandbox` binary installed beside the executable, or else the
//! executable itself, exec'd with [`HELPER_ARG`] and the plan in its
//! arguments (`main` calls [`serve`], which hands over to the monitor).
//! With no `pre_exec` hook, `std` uses `posix_spawn`, which does not copy
//! the caller's page tables; forking a large multi-threaded verifier for
//! every inspection (and taking a copy-on-write fault for every page
//! touched afterwards) cost more than the whole inspection. The status pipe
//! arrives as the monitor's stdin. The monitor:
//!
//! 1. creates *init* with `clone` in new user, mount, pid, network (unless
//!    it joins a pooled one, see `netns`), IPC and UTS namespaces; init is
//!    pid 1 of the new pid namespace. The monitor stays in the host's
//!    namespaces and writes init's `uid_map`/`gid_map` (only a process with
//!    `CAP_SETUID` in the parent namespace may map another uid), then lets
//!    init go on. The sandbox's root is host uid 65534 (`nobody`) when
//!    totogate runs as root, so it has no privilege on the host and
//!    `RLIMIT_NPROC` applies to it (the kernel exempts real uid 0). Without
//!    root, the caller's own uid is mapped, and a pooled network namespace
//!    belongs to a holder's user namespace, which the monitor joins first
//!    (see `netns`);
//! 2. init builds the mount tree: mounts private, a detached clone of `dir`
//!    (`open_tree`), `/` read-only recursively (`mount_setattr`, since
//!    inherited mounts are locked and `MS_REMOUNT` is not recursive), tmpfs,
//!    then the clone moved back onto `dir` read-write;
//! 3. init sets the rlimits, mounts `/proc`, forks the command process,
//!    which execs the command (a failed `exec` is reported on the status
//!    pipe and surfaces as a spawn error), and reaps until the command
//!    exits. When init exits the kernel kills everything left in the
//!    namespace, so background processes never outlive the inspection;
//! 4. the monitor waits for init (through a pidfd, so a short inspection is
//!    seen to end at once) with the timeout; on expiry it `SIGKILL`s init,
//!    which takes the whole namespace with it, and waits until it is gone.
//!
//! Results travel over a status pipe in fixed 8-byte records (command wait
//! status, timeout, or setup failure with its stage and errno). The caller
//! adds a second line of defence: after `timeout` plus a grace period it
//! kills the process group, and it always sweeps the group before reaping the
//! monitor. The monitor and init get `PR_SET_PDEATHSIG`, so if totogate dies
//! the sandbox dies too.
//!
//! After the monitor's first fork only async-signal-safe calls are made: raw
//! syscalls through `libc`, on data prepared before the fork. Forks use the
//! raw `clone` syscall, not `fork(3)`, whose `atfork` handlers take `malloc`
//! locks. (The one fork of the caller itself, [`probe`]'s, follows the same
//! rules, since the caller may be multi-threaded. It runs only after a
//! sandbox failed to set up: every protection is assumed until then.)
//!
//! Because the sandbox runs as host uid 65534, [`run`] first gives `dir`
//! (recursively, not following symlinks, skipping hard-linked files and other
//! file systems) to that uid. `dir` must therefore be a scratch directory the
//! verifier owns, such as the fresh unpack directory.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::libc;

mod child;
pub mod pagecache;

/// The first argument that makes a totogate binary the sandbox monitor
/// (see [`serve`]). It names the version: the arguments after it are this
/// version's, and a monitor of another version does not take them.
pub const HELPER_ARG: &str = concat!("__totogate-sandbox-monitor-", env!("CARGO_PKG_VERSION"));

/// The first argument that makes the monitor program the holder of pooled
/// network namespaces for a caller that is not root (see `netns`).
pub const HOLDER_ARG: &str = concat!("__totogate-sandbox-netns-", env!("CARGO_PKG_VERSION"));

/// The name of the small monitor binary looked for beside the executable.
pub const HELPER_NAME: &str = "totogate-sandbox";

/// The program [`run`] execs as the monitor.
static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// To be called first in the `main` of every binary that runs inspections.
/// In a process started by [`run`] as the sandbox monitor, runs the monitor
/// and never returns. Otherwise picks the monitor program for [`run`]:
/// [`HELPER_NAME`] beside this executable if it is there (it starts in half
/// the time), else this executable itself (`/proc/self/exe`).
pub fn serve() {
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(a) if a == HELPER_ARG => child::helper_main(args.collect()),
        Some(a) if a == HOLDER_ARG => child::holder_main(),
        _ => {}
    }
    set_helper(pick_helper(std::env::current_exe().ok().as_deref()));
}

/// [`HELPER_NAME`] beside `exe` when it is an executable file there, else
/// `/proc/self/exe`.
fn pick_helper(exe: Option<&Path>) -> PathBuf {
    exe.and_then(Path::parent)
        .map(|d| d.join(HELPER_NAME))
        .filter(|p| is_executable_file(p))
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes `program`, a binary whose `main` calls [`serve`], the monitor
/// program for [`run`] (for tests and for library users whose executable
/// does not call `serve`). The first setting wins.
pub fn set_helper(program: impl Into<PathBuf>) {
    let _ = HELPER.set(program.into());
}

/// Bytes of stdout and of stderr kept; the rest is read and discarded, so a
/// chatty (or hostile) inspection cannot exhaust the verifier's memory.
pub const OUTPUT_CAP: usize = 1 << 20;

/// Host uid and gid the sandbox's root maps to when totogate runs as root.
pub const SANDBOX_ID: u32 = 65534;

/// The environment an inspection sees, besides `HOME=dir`: nothing of the
/// verifier's environment (tokens, proxies, `LD_PRELOAD`) leaks in.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
pub const LANG: &str = "C.UTF-8";

/// How long the caller waits past `timeout` for the monitor to report before
/// it kills the process group itself.
const GRACE: Duration = Duration::from_secs(5);

/// Resource limits for one inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Wall-clock limit; the whole process tree is killed when it expires.
    /// Stops an inspection that hangs (or sleeps) from blocking installs.
    /// Default 300 s.
    pub timeout: Duration,
    /// `RLIMIT_CPU` per process. Stops a busy loop from burning the host's
    /// CPU. Default 300 s.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS` per process. Stops memory exhaustion of the host.
    /// Default 4 GiB (runtimes that reserve large address spaces, such as
    /// the JVM, may need more).
    pub memory_bytes: u64,
    /// `RLIMIT_NPROC` inside the sandbox. Stops a fork bomb. Default 256.
    pub max_processes: u64,
    /// `RLIMIT_FSIZE`, and the size of each tmpfs. Stops filling the disk
    /// (through `dir`) or RAM (through `/tmp`). Default 1 GiB.
    pub max_file_bytes: u64,
    /// Run even when some protections are unavailable on this host,
    /// reporting them in [`Outcome::missing`]. Default `false`: refuse.
    pub allow_weak: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout: Duration::from_secs(300),
            cpu_seconds: 300,
            memory_bytes: 4 << 30,
            max_processes: 256,
            max_file_bytes: 1 << 30,
            allow_weak: false,
        }
    }
}

/// One confinement mechanism; [`probe`] says which this host supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protection {
    /// The sandbox's root is an unprivileged host uid; required by all the
    /// other namespaces here.
    UserNamespace,
    /// Mount changes stay inside the sandbox.
    MountNamespace,
    /// The inspection sees only its own processes, and the whole tree dies
    /// with its init.
    PidNamespace,
    /// No network interfaces but a down loopback: no exfiltration, no
    /// fetching a second stage, no attacks on local services.
    NetNamespace,
    /// No access to the host's System V IPC and POSIX message queues.
    IpcNamespace,
    /// Own host name.
    UtsNamespace,
    /// Everything but `dir` and the fresh tmpfs is read-only.
    ReadOnlyHost,
    /// CPU, memory, process, file-size and core-file limits.
    Rlimits,
}

impl Protection {
    pub const ALL: [Protection; 8] = [
        Protection::UserNamespace,
        Protection::MountNamespace,
        Protection::PidNamespace,
        Protection::NetNamespace,
        Protection::IpcNamespace,
        Protection::UtsNamespace,
        Protection::ReadOnlyHost,
        Protection::Rlimits,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protection::UserNamespace => "user namespace",
            Protection::MountNamespace => "mount namespace",
            Protection::PidNamespace => "pid namespace",
            Protection::NetNamespace => "network namespace",
            Protection::IpcNamespace => "IPC namespace",
            Protection::UtsNamespace => "UTS namespace",
            Protection::ReadOnlyHost => "read-only host file system",
            Protection::Rlimits => "resource limits",
        }
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an inspection did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Exit code, or minus the signal number that killed it (as Python's
    /// `subprocess`, which the reference uses).
    pub return_value: i32,
    /// At most [`OUTPUT_CAP`] bytes.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Protections that were not applied (only with `allow_weak`).
    pub missing: Vec<Protection>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("inspection has an empty command")]
    EmptyCommand,
    #[error("command {command:?}: refusing to run without {}; this host lacks them (allow_weak runs it anyway)", names(.missing))]
    Unavailable {
        command: String,
        missing: Vec<Protection>,
    },
    #[error("command {command:?}: preparing {path}: {source}")]
    Prepare {
        command: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("command {command:?} could not start: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("command {command:?}: starting the sandbox monitor {helper:?} failed: {source}")]
    Helper {
        command: String,
        helper: PathBuf,
        source: io::Error,
    },
    #[error("no sandbox monitor program is set: the program's main must call totogate::sandbox::serve (or sandbox::set_helper)")]
    NoHelper,
    #[error("command {command:?}: sandbox setup failed at {stage}: {source}")]
    Setup {
        command: String,
        stage: &'static str,
        source: io::Error,
    },
    #[error(
        "command {command:?} timed out after {seconds} s and was killed with all its processes"
    )]
    Timeout { command: String, seconds: u64 },
    #[error(
        "command {command:?}: the sandbox monitor {helper:?} exited without reporting a status \
         (is it from the same totogate version?)"
    )]
    Lost { command: String, helper: PathBuf },
}

fn names(ps: &[Protection]) -> String {
    ps.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
}

/// The probe's answer, once it ran.
static PROBED: OnceLock<u8> = OnceLock::new();

/// The protections available on this host, probed once in a throw-away
/// child process and cached.
pub fn probe() -> Vec<Protection> {
    let mask = *PROBED.get_or_init(probe_mask);
    Protection::ALL
        .into_iter()
        .filter(|p| mask & p.bit() != 0)
        .collect()
}

fn probe_mask() -> u8 {
    let mut cmd = Command::new("/");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let uid_map = format!("0 {uid} 1\n").into_bytes();
    let gid_map = format!("0 {gid} 1\n").into_bytes();
    // SAFETY: the hook runs in the forked child and only makes raw syscalls
    // on the maps prepared above (see `child::probe`); it ends with `_exit`
    // and never reaches `exec`.
    unsafe {
        cmd.pre_exec(move || child::probe(&uid_map, &gid_map));
    }
    let Ok(mut c) = cmd.spawn() else { return 0 };
    match c.wait().ok().and_then(|s| s.code()) {
        Some(code) => code as u8,
        None => 0,
    }
}

/// Which protections to apply and which are missing; refuses when any is
/// missing unless `allow_weak`. The namespaces (and the read-only host) are
/// only set up inside a user namespace.
fn decide(available: &[Protection], allow_weak: bool) -> Result<Plan, Vec<Protection>> {
    let has = |p| available.contains(&p);
    let userns = has(Protection::UserNamespace);
    let mut plan = Plan {
        userns,
        mountns: userns && has(Protection::MountNamespace),
        pidns: userns && has(Protection::PidNamespace),
        netns: userns && has(Protection::NetNamespace),
        ipcns: userns && has(Protection::IpcNamespace),
        utsns: userns && has(Protection::UtsNamespace),
        readonly: false,
        rlimits: has(Protection::Rlimits),
        missing: Vec::new(),
    };
    plan.readonly = plan.mountns && has(Protection::ReadOnlyHost);
    let applied = [
        (Protection::UserNamespace, plan.userns),
        (Protection::MountNamespace, plan.mountns),
        (Protection::PidNamespace, plan.pidns),
        (Protection::NetNamespace, plan.netns),
        (Protection::IpcNamespace, plan.ipcns),
        (Protection::UtsNamespace, plan.utsns),
        (Protection::ReadOnlyHost, plan.readonly),
        (Protection::Rlimits, plan.rlimits),
    ];
    plan.missing = applied
        .iter()
        .filter(|(_, on)| !on)
        .map(|(p, _)| *p)
        .collect();
    if !plan.missing.is_empty() && !allow_weak {
        return Err(plan.missing);
    }
    Ok(plan)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    userns: bool,
    mountns: bool,
    pidns: bool,
    netns: bool,
    ipcns: bool,
    utsns: bool,
    readonly: bool,
    rlimits: bool,
    missing: Vec<Protection>,
}

/// Runs `argv` confined, with `dir` as its working directory (see the module
/// docs for what that means).
pub fn run(argv: &[String], dir: &Path, policy: &Policy) -> Result<Outcome, SandboxError> {
    if argv.is_empty() {
        return Err(SandboxError::EmptyCommand);
    }
    let Some(helper) = HELPER.get() else {
        return Err(SandboxError::NoHelper);
    };
    let command = argv.join(" ");
    let unavailable = |missing| SandboxError::Unavailable {
        command: command.clone(),
        missing,
    };
    // Every protection is assumed until a sandbox fails to set up; only
    // then does the probe (a fork of this process that tries each one) say
    // what this host lacks. Most hosts have them all, and the probe cost a
    // few milliseconds per process (per apt run, per `check`).
    if PROBED.get().is_none() {
        let all = decide(&Protection::ALL, false).expect("nothing is missing");
        match run_planned(argv, dir, policy, helper, all) {
            Err(SandboxError::Setup { .. }) if probe().len() < Protection::ALL.len() => {}
            done => return done,
        }
    }
    let plan = decide(&probe(), policy.allow_weak).map_err(unavailable)?;
    run_planned(argv, dir, policy, helper, plan)
}

fn run_planned(
    argv: &[String],
    dir: &Path,
    policy: &Policy,
    helper: &PathBuf,
    plan: Plan,
) -> Result<Outcome, SandboxError> {
    let command = argv.join(" ");
    let prepare = |path: &Path| {
        let command = command.clone();
        let path = path.to_path_buf();
        move |source| SandboxError::Prepare {
            command,
            path,
            source,
        }
    };
    let dir = std::fs::canonicalize(dir).map_err(prepare(dir))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    // SAFETY: as above.
    let egid = unsafe { libc::getegid() };
    let (uid, gid) = if euid == 0 {
        (SANDBOX_ID, SANDBOX_ID)
    } else {
        (euid, egid)
    };
    if plan.userns && euid == 0 {
        hand_over(&dir, uid, gid).map_err(prepare(&dir))?;
    }

    let (status_r, status_w) = io::pipe().map_err(prepare(&dir))?;
    // SAFETY: getpid has no preconditions and cannot fail.
    let parent = unsafe { libc::getpid() };
    // A network namespace from the pool (see `netns`); if the pool cannot
    // make one, the monitor creates a fresh one.
    let lease = (plan.netns && plan.userns)
        .then(|| netns::take(euid == 0, helper))
        .flatten();
    let spec = child::Spec {
        plan: plan.clone(),
        policy: policy.clone(),
        dir: dir.clone(),
        uid,
        gid,
        unprivileged: euid != 0,
        parent,
        netns: lease.as_ref().map(|l| child::Pooled {
            pid: l.pid,
            tid: l.tid,
            in_holder: l.in_holder,
        }),
    };
    let mut cmd = Command::new(helper);
    cmd.arg0("totogate-sandbox")
        .arg(HELPER_ARG)
        .args(spec.to_args())
        .arg("--")
        .args(argv)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", &dir)
        .env("LANG", LANG)
        // Small and short-lived: no huge pages to zero (the monitor drops
        // this from the command's environment).
        .env("MIMALLOC_ALLOW_THP", "0")
        .stdin(Stdio::from(OwnedFd::from(status_w)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned = {
        // No other thread may open a file for writing while the new process
        // holds copies of our descriptors: see `exec_lock`. With no
        // `pre_exec` hook, `std` uses `posix_spawn`, which returns once the
        // monitor has exec'd (closing them all), so this is brief.
        let _forking = crate::exec_lock::forking();
        cmd.spawn()
    };
    drop(cmd);
    let mut child = spawned.map_err(|source| SandboxError::Helper {
        command: command.clone(),
        helper: helper.clone(),
        source,
    })?;
    let pgid = child.id() as libc::pid_t;

    // stdout, stderr and the status pipe, read in this thread with poll(2):
    // no reader threads to start (and to wake) for every inspection.
    let mut pipes = [
        Capped::new(child.stdout.take().map(OwnedFd::from), OUTPUT_CAP),
        Capped::new(child.stderr.take().map(OwnedFd::from), OUTPUT_CAP),
        Capped::new(Some(OwnedFd::from(status_r)), STATUS_CAP),
    ];
    let deadline = Instant::now() + policy.timeout + GRACE;
    // Until the monitor has reported (it closes the status pipe by exiting),
    // or past the deadline.
    let hard_timeout = !drain(&mut pipes, |p| p[2].fd.is_none(), deadline);
    // The monitor is not reaped yet, so `pgid` still names our group. Once
    // the group and the pid namespace are dead nothing holds the pipes, so
    // draining them ends; the bound is for a sandbox without a pid
    // namespace (`allow_weak`), where a process that left the group can
    // keep them open.
    kill_group(pgid);
    drain(
        &mut pipes,
        |p| p.iter().all(|c| c.fd.is_none()),
        Instant::now() + GRACE,
    );
    let _ = child.wait();
    let [stdout, stderr, status] = pipes.map(|c| c.kept);
    let report = child::Report::parse(&status);
    if let (Some(_), Some(child::Report::Setup { stage, .. })) = (&lease, report) {
        if stage == child::JOIN_NETNS {
            // Nothing ran yet. A host that refuses the pooled namespace
            // loses the pool, not its inspections: again, with a fresh one.
            drop(lease);
            netns::disable();
            return run_planned(argv, &dir, policy, helper, plan);
        }
    }
    // The monitor reported and is reaped: every process of the sandbox is
    // gone (its pid namespace died with init before the monitor could
    // exit), so the network namespace can serve the next inspection. On any
    // other path it is dropped, and the kernel frees it.
    if let Some(l) = lease {
        if !hard_timeout
            && matches!(
                report,
                Some(child::Report::Exit(_)) | Some(child::Report::Timeout)
            )
        {
            netns::give_back(l);
        }
    }

    let seconds = policy.timeout.as_secs();
    match report {
        _ if hard_timeout => Err(SandboxError::Timeout { command, seconds }),
        Some(child::Report::Exit(ws)) => Ok(Outcome {
            return_value: if libc::WIFEXITED(ws) {
                libc::WEXITSTATUS(ws)
            } else {
                -libc::WTERMSIG(ws)
            },
            stdout,
            stderr,
            missing: plan.missing,
        }),
        Some(child::Report::Timeout) => Err(SandboxError::Timeout { command, seconds }),
        Some(child::Report::Setup {
            stage: "exec",
            errno,
        }) => Err(SandboxError::Spawn {
            command,
            source: io::Error::from_raw_os_error(errno),
        }),
        Some(child::Report::Setup { stage, errno }) => Err(SandboxError::Setup {
            command,
            stage,
            source: io::Error::from_raw_os_error(errno),
        }),
        None => Err(SandboxError::Lost {
            command,
            helper: helper.clone(),
        }),
    }
}

/// Network namespaces reused across inspections.
///
/// Creating a network namespace and having the kernel tear it down again
/// costs about 2 ms of CPU (the teardown, in a kernel worker, also purges
/// the host's TIME_WAIT sockets), more than the rest of a small sandbox.
/// A pooled namespace is made by a parked thread (`unshare(CLONE_NEWNET)`
/// affects only the calling thread), so it belongs to the user namespace
/// of that thread's process, never to the sandbox's: the sandbox, root only
/// in its own user namespace, has no privilege over it and cannot bring its
/// loopback up, change its settings, or leave routes or filters behind. Its
/// only state is sockets, and those close when their processes die. A
/// namespace goes back to the pool only after the monitor reported and was
/// reaped, when the sandbox's pid namespace, and so every process that could
/// hold a socket, is gone; one inspection at a time uses it.
///
/// As root the threads are this process's, in the host user namespace. Any
/// other user may not create a network namespace there, so the threads live
/// in a holder process (the monitor program with [`HOLDER_ARG`]) that made
/// a user namespace of its own first, owned by the same user. The monitor
/// joins that user namespace (it may: same owner), then the network
/// namespace, and creates the sandbox's user namespace inside it, one level
/// further down, with no privilege over what its parent owns.
mod netns {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};

    use nix::libc;

    /// A parked thread in its own network namespace, of `pid` (this process
    /// or the holder). Dropping the lease ends the thread, and with it the
    /// namespace.
    pub(super) struct Lease {
        pub pid: libc::pid_t,
        pub tid: libc::pid_t,
        /// The namespace belongs to the holder's user namespace, which the
        /// monitor joins first.
        pub in_holder: bool,
        _keep: Option<mpsc::Sender<()>>,
    }

    impl Drop for Lease {
        fn drop(&mut self) {
            if self.in_holder {
                if let Some(h) = HOLDER.get().and_then(Option::as_ref) {
                    let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                    let mut cmd = [b'd', 0, 0, 0, 0];
                    cmd[1..].copy_from_slice(&self.tid.to_le_bytes());
                    let _ = h.to.write_all(&cmd);
                }
            }
        }
    }

    static FREE: Mutex<Vec<Lease>> = Mutex::new(Vec::new());

    /// Cleared for good when joining a pooled namespace failed.
    static ENABLED: AtomicBool = AtomicBool::new(true);

    fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// No more pooled namespaces for this process: sandboxes create their own.
    pub(super) fn disable() {
        ENABLED.store(false, Ordering::Relaxed);
        FREE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A namespace from the pool, or a new one; `None` if one cannot be made
    /// (the monitor then creates a fresh one). `helper` is the monitor
    /// program, which also serves as the holder.
    pub(super) fn take(root: bool, helper: &Path) -> Option<Lease> {
        if !enabled() {
            return None;
        }
        {
            let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
            let from_holder = !root;
            if let Some(i) = free.iter().rposition(|l| l.in_holder == from_holder) {
                return Some(free.swap_remove(i));
            }
        }
        if root {
            let (tid, keep) = park()?;
            // SAFETY: getpid has no preconditions and cannot fail.
            let pid = unsafe { libc::getpid() };
            return Some(Lease {
                pid,
                tid,
                in_holder: false,
                _keep: Some(keep),
            });
        }
        let holder = HOLDER.get_or_init(|| Holder::spawn(helper).map(Mutex::new));
        let mut h = holder.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        let mut reply = [0u8; 4];
        h.to.write_all(&[b'n', 0, 0, 0, 0]).ok()?;
        h.from.read_exact(&mut reply).ok()?;
        let tid = i32::from_le_bytes(reply);
        (tid > 0).then(|| Lease {
            pid: h.child.id() as libc::pid_t,
            tid,
            in_holder: true,
            _keep: None,
        })
    }

    pub(super) fn give_back(l: Lease) {
        if enabled() {
            FREE.lock().unwrap_or_else(|e| e.into_inner()).push(l);
        }
    }

    /// A new thread parked in a new network namespace: its id, and the
    /// sender whose drop ends it.
    pub(super) fn park() -> Option<(libc::pid_t, mpsc::Sender<()>)> {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (keep_tx, keep_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("totogate-netns".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // SAFETY: unshare and gettid take no pointers.
                let tid = unsafe {
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        let _ = tid_tx.send(None);
                        return;
                    }
                    libc::gettid()
                };
                let _ = tid_tx.send(Some(tid));
                // Parked until the lease is dropped.
                let _ = keep_rx.recv();
            })
            .ok()?;
        Some((tid_rx.recv().ok()??, keep_tx))
    }

    /// The holder process, started on first need and kept for this
    /// process's life (it exits when its stdin closes, that is with us).
    /// `None` if it could not start: sandboxes then get fresh namespaces.
    static HOLDER: OnceLock<Option<Mutex<Holder>>> = OnceLock::new();

    struct Holder {
        child: Child,
        to: ChildStdin,
        from: ChildStdout,
    }

    impl Holder {
        fn spawn(helper: &Path) -> Option<Holder> {
            let mut cmd = Command::new(helper);
            cmd.arg0("totogate-sandbox")
                .arg(super::HOLDER_ARG)
                .env_clear()
                .env("MIMALLOC_ALLOW_THP", "0")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = {
                let _forking = crate::exec_lock::forking();
                cmd.spawn().ok()?
            };
            Some(Holder {
                to: child.stdin.take()?,
                from: child.stdout.take()?,
                child,
            })
        }
    }
}

/// Bytes kept of the status pipe (8-byte records; a handful are written).
const STATUS_CAP: usize = 4096;

/// A pipe read to its end, keeping at most `cap` bytes.
struct Capped {
    fd: Option<std::fs::File>,
    kept: Vec<u8>,
    cap: usize,
}

impl Capped {
    fn new(fd: Option<OwnedFd>, cap: usize) -> Capped {
        Capped {
            fd: fd.map(std::fs::File::from),
            kept: Vec::new(),
            cap,
        }
    }
}

/// Reads whatever `pipes` have until `done(pipes)` holds (true) or the
/// deadline passes (false). A pipe is closed at its end or on an error.
fn drain(pipes: &mut [Capped; 3], done: impl Fn(&[Capped; 3]) -> bool, deadline: Instant) -> bool {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 16 * 1024];
    while !done(pipes) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout = left.as_millis().min(i32::MAX as u128 - 1) as i32 + 1;
        let mut fds: Vec<libc::pollfd> = pipes
            .iter()
            .map(|c| libc::pollfd {
                fd: c.fd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs;
        // negative descriptors are ignored by poll.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Cannot wait: give up on the pipes rather than spin.
            for c in pipes.iter_mut() {
                c.fd = None;
            }
            break;
        }
        for (c, p) in pipes.iter_mut().zip(&fds) {
            if p.revents == 0 {
                continue;
            }
            let Some(f) = c.fd.as_mut() else { continue };
            match f.read(&mut buf) {
                Ok(0) => c.fd = None,
                Ok(k) => {
                    let room = c.cap - c.kept.len();
                    c.kept.extend_from_slice(&buf[..k.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => c.fd = None,
            }
        }
    }
    true
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill has no memory preconditions; the group's leader is our
    // unreaped child, so the id cannot have been reused.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Gives `dir` and what is below it to the sandbox's uid, so that its root
/// (host `nobody`) can write there. Symlinks are changed, never followed;
/// regular files with several links are skipped (a link planted by an
/// earlier inspection could point at a host file); other file systems are
/// not entered.
fn hand_over(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    if dir.parent().is_none_or(|p| p == Path::new("/")) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to hand a top-level directory to the sandbox",
        ));
    }
    let dev = std::fs::symlink_metadata(dir)?.dev();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.dev() != dev || (meta.is_file() && meta.nlink() > 1) {
            continue;
        }
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                todo.push(entry?.path());
            }
        }
    }
    Ok(())
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn path_cstring(p: &Path) -> io::Result<CString> {
    cstring(p.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_available_applies_everything() {
        let plan = decide(&Protection::ALL, false).unwrap();
        assert!(plan.missing.is_empty());
        assert!(plan.userns && plan.mountns && plan.pidns && plan.netns);
        assert!(plan.ipcns && plan.utsns && plan.readonly && plan.rlimits);
    }

    #[test]
    fn missing_protection_refuses_unless_weak() {
        let some: Vec<_> = Protection::ALL
            .into_iter()
            .filter(|p| *p != Protection::NetNamespace)
            .collect();
        assert_eq!(decide(&some, false), Err(vec![Protection::NetNamespace]));
        let plan = decide(&some, true).unwrap();
        assert!(!plan.netns && plan.pidns);
        assert_eq!(plan.missing, vec![Protection::NetNamespace]);
    }

    #[test]
    fn no_user_namespace_means_no_namespaces() {
        let plan = decide(&[Protection::MountNamespace, Protection::Rlimits], true).unwrap();
        assert!(!plan.mountns && !plan.readonly && plan.rlimits);
        assert_eq!(plan.missing.len(), 7);
        assert!(decide(&[Protection::Rlimits], false).is_err());
    }

    #[test]
    fn unavailable_error_names_command_and_protections() {
        let e = SandboxError::Unavailable {
            command: "make check".into(),
            missing: vec![Protection::PidNamespace, Protection::ReadOnlyHost],
        };
        let s = e.to_string();
        assert!(
            s.contains("make check") && s.contains("pid namespace"),
            "{s}"
        );
        assert!(s.contains("read-only host file system"), "{s}");
    }

    #[test]
    fn reports_round_trip() {
        use child::Report;
        let mut b = Report::Setup {
            stage: "mounting tmpfs",
            errno: 13,
        }
        .encode()
        .to_vec();
        assert_eq!(
            Report::parse(&b),
            Some(Report::Setup {
                stage: "mounting tmpfs",
                errno: 13
            })
        );
        // A setup failure outranks anything reported after it.
        b.extend_from_slice(&Report::Exit(256).encode());
        assert!(matches!(Report::parse(&b), Some(Report::Setup { .. })));
        let mut t = Report::Exit(0).encode().to_vec();
        t.extend_from_slice(&Report::Timeout.encode());
        assert_eq!(Report::parse(&t), Some(Report::Timeout));
        assert_eq!(
            Report::parse(&Report::Exit(256).encode()),
            Some(Report::Exit(256))
        );
        assert_eq!(Report::parse(&[]), None);
        assert_eq!(Report::parse(&[9, 0, 0]), None);
    }

    #[test]
    fn monitor_arguments_round_trip() {
        let plan = decide(&Protection::ALL, false).unwrap();
        let policy = Policy {
            timeout: Duration::new(7, 250_000_000),
            cpu_seconds: 11,
            memory_bytes: 3 << 30,
            max_processes: 64,
            max_file_bytes: 1 << 20,
            allow_weak: false,
        };
        let spec = child::Spec {
            plan,
            policy,
            dir: PathBuf::from("/tmp/a dir/ünïcode"),
            uid: 65534,
            gid: 65533,
            unprivileged: true,
            parent: 4242,
            netns: Some(child::Pooled {
                pid: 4343,
                tid: 4444,
                in_holder: true,
            }),
        };
        assert_eq!(child::Spec::parse(&spec.to_args()), Some(spec.clone()));
        let fresh = child::Spec {
            netns: None,
            ..spec.clone()
        };
        assert_eq!(child::Spec::parse(&fresh.to_args()), Some(fresh));
        let mut short = spec.to_args();
        short.pop();
        assert!(child::Spec::parse(&short).is_none());
        let mut bad = spec.to_args();
        bad[1] = "-1".into();
        assert!(child::Spec::parse(&bad).is_none());
    }

    #[test]
    fn the_small_monitor_is_taken_only_when_it_is_an_executable_beside_us() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("totogate");
        let own = PathBuf::from("/proc/self/exe");
        assert_eq!(pick_helper(Some(&exe)), own, "absent");
        let small = d.path().join(HELPER_NAME);
        std::fs::write(&small, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(pick_helper(Some(&exe)), own, "not executable");
        std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(pick_helper(Some(&exe)), small);
        std::fs::remove_file(&small).unwrap();
        std::fs::create_dir(&small).unwrap();
        assert_eq!(pick_helper(Some(&exe)), own, "a directory");
        assert_eq!(pick_helper(None), own);
    }

    #[test]
    fn hand_over_refuses_top_level() {
        assert!(hand_over(Path::new("/usr"), 1, 1).is_err());
        assert!(hand_over(Path::new("/"), 1, 1).is_err());
    }
}
