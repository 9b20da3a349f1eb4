//! The sandbox monitor program ([`helper_main`]) and the code that runs
//! between `fork` and `exec`: the monitor, init, and the probe. Everything
//! after the monitor's first fork is async-signal-safe: raw syscalls on data
//! prepared by [`Setup::new`], no allocation, no locks.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::Duration;

use nix::libc::{self, c_int, c_long, c_uint, pid_t};

use super::{cstring, path_cstring, Plan, Policy, Protection};

/// The setup stage of joining a pooled network namespace.
pub(super) const JOIN_NETNS: &str = "joining the network namespace";

/// Stages named in setup errors; a record carries the index.
const STAGES: [&str; 20] = [
    "starting the monitor",
    JOIN_NETNS,
    "exec",
    "pipe",
    "fork",
    "unshare namespaces",
    "uid/gid map",
    "setgroups",
    "setgid",
    "setuid",
    "hostname",
    "making mounts private",
    "cloning the dir mount",
    "making the host read-only",
    "mounting tmpfs",
    "binding dir read-write",
    "chdir to dir",
    "setrlimit",
    "mounting /proc",
    "unknown",
];

const TAG_EXIT: u8 = 1;
const TAG_TIMEOUT: u8 = 2;
const TAG_SETUP: u8 = 3;

/// One 8-byte record on the status pipe: tag, stage index, two spare bytes,
/// a little-endian i32 (wait status or errno). 8 < PIPE_BUF, so records
/// from different processes never interleave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Report {
    /// The command's wait status.
    Exit(i32),
    /// The monitor killed the namespace at the deadline.
    Timeout,
    Setup {
        stage: &'static str,
        errno: i32,
    },
}

impl Report {
    pub(super) fn encode(self) -> [u8; 8] {
        let (tag, stage, value) = match self {
            Report::Exit(ws) => (TAG_EXIT, 0, ws),
            Report::Timeout => (TAG_TIMEOUT, 0, 0),
            Report::Setup { stage, errno } => (
                TAG_SETUP,
                STAGES
                    .iter()
                    .position(|s| *s == stage)
                    .unwrap_or(STAGES.len() - 1) as u8,
                errno,
            ),
        };
        let v = value.to_le_bytes();
        [tag, stage, 0, 0, v[0], v[1], v[2], v[3]]
    }

    /// The most significant record: a setup failure, else a timeout, else
    /// the command's exit.
    pub(super) fn parse(bytes: &[u8]) -> Option<Report> {
        let mut best: Option<Report> = None;
        for r in bytes.chunks_exact(8) {
            let value = i32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            let this = match r[0] {
                TAG_EXIT => Report::Exit(value),
                TAG_TIMEOUT => Report::Timeout,
                TAG_SETUP => Report::Setup {
                    stage: STAGES
                        .get(r[1] as usize)
                        .copied()
                        .unwrap_or(STAGES[STAGES.len() - 1]),
                    errno: value,
                },
                _ => continue,
            };
            let rank = |r: &Report| match r {
                Report::Exit(_) => 0,
                Report::Timeout => 1,
                Report::Setup { .. } => 2,
            };
            if best.is_none_or(|b| rank(&this) >= rank(&b)) {
                best = Some(this);
            }
        }
        best
    }
}

/// What the monitor needs from the caller, sent as its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Spec {
    pub plan: Plan,
    pub policy: Policy,
    pub dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub unprivileged: bool,
    pub parent: pid_t,
    /// A pooled network namespace the sandbox joins instead of creating
    /// one (see `super::netns`).
    pub netns: Option<Pooled>,
}

/// Where a pooled network namespace is: the thread `tid` of process `pid`
/// is in it. `in_holder`: `pid` is the holder, whose user namespace owns
/// the network namespace and is joined first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pooled {
    pub pid: pid_t,
    pub tid: pid_t,
    pub in_holder: bool,
}

impl Spec {
    /// The monitor's arguments (after [`super::HELPER_ARG`], before `--`):
    /// numbers in decimal, the directory last.
    pub(super) fn to_args(&self) -> Vec<OsString> {
        let (plan, p) = (&self.plan, &self.policy);
        let bits = [
            plan.userns,
            plan.mountns,
            plan.pidns,
            plan.netns,
            plan.ipcns,
            plan.utsns,
            plan.readonly,
            plan.rlimits,
        ]
        .iter()
        .enumerate()
        .fold(0u32, |bits, (i, on)| bits | (u32::from(*on) << i));
        let mut args: Vec<OsString> = [
            u128::from(bits),
            u128::from(self.uid),
            u128::from(self.gid),
            u128::from(self.unprivileged),
            self.parent as u128,
            self.netns.map_or(0, |n| n.pid as u128),
            self.netns.map_or(0, |n| n.tid as u128),
            self.netns.map_or(0, |n| u128::from(n.in_holder)),
            p.timeout.as_nanos(),
            u128::from(p.cpu_seconds),
            u128::from(p.memory_bytes),
            u128::from(p.max_processes),
            u128::from(p.max_file_bytes),
        ]
        .iter()
        .map(|n| n.to_string().into())
        .collect();
        args.push(self.dir.as_os_str().to_owned());
        args
    }

    /// [`Spec::to_args`] read back; `None` if malformed.
    pub(super) fn parse(args: &[OsString]) -> Option<Spec> {
        let [bits, uid, gid, unpriv, parent, ns_pid, ns_tid, ns_holder, timeout, cpu, mem, nproc, fsize, dir] =
            args
        else {
            return None;
        };
        let num = |a: &OsString| a.to_str()?.parse::<u128>().ok();
        let bits = num(bits)?;
        let on = |i: u32| bits & (1 << i) != 0;
        let timeout = num(timeout)?;
        Some(Spec {
            plan: Plan {
                userns: on(0),
                mountns: on(1),
                pidns: on(2),
                netns: on(3),
                ipcns: on(4),
                utsns: on(5),
                readonly: on(6),
                rlimits: on(7),
                missing: Vec::new(),
            },
            policy: Policy {
                timeout: Duration::new(
                    u64::try_from(timeout / 1_000_000_000).ok()?,
                    (timeout % 1_000_000_000) as u32,
                ),
                cpu_seconds: num(cpu)?.try_into().ok()?,
                memory_bytes: num(mem)?.try_into().ok()?,
                max_processes: num(nproc)?.try_into().ok()?,
                max_file_bytes: num(fsize)?.try_into().ok()?,
                allow_weak: false,
            },
            dir: PathBuf::from(dir),
            uid: num(uid)?.try_into().ok()?,
            gid: num(gid)?.try_into().ok()?,
            unprivileged: num(unpriv)? != 0,
            parent: num(parent)?.try_into().ok()?,
            netns: match (num(ns_pid)?, num(ns_tid)?, num(ns_holder)?) {
                (0, 0, 0) => None,
                (pid, tid, holder) if pid > 0 && tid > 0 && holder < 2 => Some(Pooled {
                    pid: pid.try_into().ok()?,
                    tid: tid.try_into().ok()?,
                    in_holder: holder == 1,
                }),
                _ => return None,
            },
        })
    }
}

/// The sandbox monitor, a fresh process exec'd by [`super::run`]: `args`
/// are [`Spec::to_args`], `--`, then the command. The status pipe arrives as
/// stdin. Never returns.
///
/// Starting the monitor by `exec` (through `posix_spawn`, which shares the
/// caller's memory until the `exec`) instead of forking the caller keeps
/// the caller's size out of every sandbox: a fork of a large, threaded
/// process copies its page tables and then takes a copy-on-write fault for
/// every page either side touches, four times over (monitor, uid mapper,
/// init, command). The monitor is small and single-threaded.
pub(super) fn helper_main(args: Vec<OsString>) -> ! {
    // SAFETY: fcntl, open and dup2 on descriptors this process owns.
    let st = unsafe {
        let st = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if st < 0 {
            libc::_exit(127);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 0) < 0 {
            fail(st, "starting the monitor");
        }
        libc::close(null);
        st
    };
    let split = args.iter().position(|a| a == "--");
    let (spec, command) = match split {
        Some(i) if i + 1 < args.len() => (&args[..i], &args[i + 1..]),
        _ => fail_with(st, "starting the monitor", libc::EINVAL),
    };
    let Some(spec) = Spec::parse(spec) else {
        fail_with(st, "starting the monitor", libc::EINVAL)
    };
    let setup = Setup::new(&spec, st).unwrap_or_else(|e| {
        fail_with(
            st,
            "starting the monitor",
            e.raw_os_error().unwrap_or(libc::EINVAL),
        )
    });
    // Arguments cannot hold NUL bytes; the environment is the caller's clean
    // one minus the allocator's own setting, which is for this process only.
    let argv: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.clone().into_vec()).unwrap_or_default())
        .collect();
    let envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !k.as_bytes().starts_with(b"MIMALLOC_"))
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).unwrap_or_default()
        })
        .collect();
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(ptr::null());
    let _ = setup.monitor();
    // Only the command process gets here. It gets the signal state and the
    // huge-page setting a fresh process would have (the Rust runtime ignores
    // SIGPIPE), then becomes the command.
    // SAFETY: raw syscalls on values on the stack and on the NUL-terminated
    // arrays built above, which outlive the call.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
        // Every disposition back to the default (handlers reset on exec
        // anyway; ignored signals would stay ignored), through the raw
        // syscall: glibc refuses to touch its own real-time signals.
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        libc::execvpe(argv_p[0], argv_p.as_ptr(), envp_p.as_ptr());
        fail(st, "exec")
    }
}

/// The holder of pooled network namespaces for a caller that is not root
/// (see `super::netns`), exec'd with [`super::HOLDER_ARG`]. Makes a user
/// namespace of its own, owned by the caller's user and mapping only its
/// ids (to themselves), then serves requests on stdin, five bytes each: `n`
/// makes a thread in a new network namespace and answers its id (an i32,
/// little-endian, on stdout; 0 if it could not); `d` and a thread id end
/// that thread. Exits when stdin closes, that is with the caller.
pub(super) fn holder_main() -> ! {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    // SAFETY: raw syscalls on stack values and on buffers that outlive them;
    // still single-threaded, as unshare(CLONE_NEWUSER) requires.
    let ok = unsafe {
        let (uid, gid) = (libc::geteuid(), libc::getegid());
        let me = libc::getpid();
        libc::unshare(libc::CLONE_NEWUSER) == 0
            && write_proc(me, b"setgroups\0", b"deny") == 0
            && write_proc(me, b"uid_map\0", format!("{uid} {uid} 1\n").as_bytes()) == 0
            && write_proc(me, b"gid_map\0", format!("{gid} {gid} 1\n").as_bytes()) == 0
    };
    if !ok {
        std::process::exit(1);
    }
    let (mut input, mut out) = (io::stdin().lock(), io::stdout().lock());
    let mut parked = HashMap::new();
    let mut cmd = [0u8; 5];
    while input.read_exact(&mut cmd).is_ok() {
        let tid = pid_t::from_le_bytes([cmd[1], cmd[2], cmd[3], cmd[4]]);
        match cmd[0] {
            b'n' => {
                let made = super::netns::park();
                let reply = made.as_ref().map_or(0, |(tid, _)| *tid);
                if let Some((tid, keep)) = made {
                    parked.insert(tid, keep);
                }
                if out
                    .write_all(&reply.to_le_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break;
                }
            }
            b'd' => {
                parked.remove(&tid);
            }
            _ => break,
        }
    }
    std::process::exit(0)
}

/// The kernel's `struct sigaction` for `rt_sigaction(2)` on x86_64 and
/// aarch64 (64 signals, so an 8-byte mask).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const OPEN_TREE_CLONE: c_uint = 0x1;
const OPEN_TREE_CLOEXEC: c_uint = libc::O_CLOEXEC as c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x4;

/// Everything the child needs, prepared (and allocated) before the fork.
pub(super) struct Setup {
    userns: bool,
    mountns: bool,
    pidns: bool,
    readonly: bool,
    rlimits: bool,
    clone_flags: c_int,
    dir: CString,
    /// `dir` and its ancestors below `/`: mount points to create when `dir`
    /// lies on one of the fresh tmpfs.
    prefixes: Vec<CString>,
    tmpfs: Vec<CString>,
    tmpfs_opts: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    deny_setgroups: bool,
    cpu_seconds: u64,
    memory_bytes: u64,
    max_processes: u64,
    max_file_bytes: u64,
    timeout_ns: u128,
    status: RawFd,
    parent: pid_t,
    /// `/proc/<pid>/task/<tid>/ns/net` to join, when pooled.
    netns: Option<CString>,
    /// `/proc/<holder>/ns/user`, the user namespace that owns `netns`, to
    /// join first, when it is not the host's.
    netns_owner: Option<CString>,
}

impl Setup {
    pub(super) fn new(spec: &Spec, status: RawFd) -> io::Result<Setup> {
        let Spec {
            plan,
            policy,
            dir,
            uid,
            gid,
            unprivileged,
            parent,
            netns,
        } = spec;
        let (uid, gid, unprivileged, parent) = (*uid, *gid, *unprivileged, *parent);
        let pooled = netns.filter(|_| plan.netns);
        let mut clone_flags = 0;
        for (on, flag) in [
            (plan.userns, libc::CLONE_NEWUSER),
            (plan.mountns, libc::CLONE_NEWNS),
            (plan.pidns, libc::CLONE_NEWPID),
            (plan.netns && pooled.is_none(), libc::CLONE_NEWNET),
            (plan.ipcns, libc::CLONE_NEWIPC),
            (plan.utsns, libc::CLONE_NEWUTS),
        ] {
            if on {
                clone_flags |= flag;
            }
        }
        let mut prefixes = Vec::new();
        for a in dir.ancestors() {
            if a != Path::new("/") {
                prefixes.push(path_cstring(a)?);
            }
        }
        prefixes.reverse();
        let tmpfs = ["/tmp", "/dev/shm", "/run"]
            .iter()
            .filter(|t| std::fs::symlink_metadata(t).is_ok_and(|m| m.is_dir()))
            .map(|t| cstring(t.as_bytes()))
            .collect::<io::Result<_>>()?;
        Ok(Setup {
            userns: plan.userns,
            mountns: plan.mountns,
            pidns: plan.pidns,
            readonly: plan.readonly,
            rlimits: plan.rlimits,
            clone_flags,
            dir: path_cstring(dir)?,
            prefixes,
            tmpfs,
            tmpfs_opts: cstring(format!("mode=1777,size={}", policy.max_file_bytes).as_bytes())?,
            uid_map: format!("0 {uid} 1\n").into_bytes(),
            gid_map: format!("0 {gid} 1\n").into_bytes(),
            deny_setgroups: unprivileged,
            cpu_seconds: policy.cpu_seconds,
            memory_bytes: policy.memory_bytes,
            max_processes: policy.max_processes,
            max_file_bytes: policy.max_file_bytes,
            timeout_ns: policy.timeout.as_nanos(),
            parent,
            status,
            netns: pooled
                .map(|n| cstring(format!("/proc/{}/task/{}/ns/net", n.pid, n.tid).as_bytes()))
                .transpose()?,
            netns_owner: pooled
                .filter(|n| n.in_holder)
                .map(|n| cstring(format!("/proc/{}/ns/user", n.pid).as_bytes()))
                .transpose()?,
        })
    }

    /// Sets up the namespaces and runs init. Returns only in the command
    /// process, which the caller then execs; every other process ends in
    /// `_exit`.
    pub(super) fn monitor(&self) -> io::Result<()> {
        let st = self.status;
        // SAFETY (whole block): raw syscalls on buffers owned by `self` or
        // on the stack, valid for the duration of each call; nothing
        // allocates or takes a lock, so init, forked from here, may run
        // the same way.
        unsafe {
            self.stay_with(self.parent);
            if let Some(ns) = &self.netns {
                // Joined from the user namespace that owns it (the host's,
                // or the holder's, which has the same owner as we), so the
                // sandbox's user namespace, created below, is a child of
                // that owner and gets no privilege over it.
                let open = |p: &CString| libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                let owner = self.netns_owner.as_ref().map_or(-1, open);
                let fd = open(ns);
                if fd < 0
                    || (self.netns_owner.is_some()
                        && (owner < 0 || libc::setns(owner, libc::CLONE_NEWUSER) != 0))
                    || libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    fail(st, JOIN_NETNS);
                }
                libc::close(fd);
                if owner >= 0 {
                    libc::close(owner);
                }
            }
            // `go` carries the monitor's word that init may go on (its maps
            // are written). The monitor keeps its end open until it exits,
            // so init can also tell from it whether the monitor is alive.
            let mut go = [0 as c_int; 2];
            if libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                fail(st, "pipe");
            }
            // Init is born in the new namespaces (pid 1 of the new pid
            // namespace); the monitor stays in the host's, where it may
            // write init's uid and gid maps itself.
            let init = raw_clone(self.clone_flags);
            if init < 0 {
                fail(st, "unshare namespaces");
            }
            if init == 0 {
                libc::close(go[1]);
                return self.init(go[0]);
            }
            libc::close(go[0]);
            if self.userns {
                let mut e = 0;
                if self.deny_setgroups {
                    e = write_proc(init, b"setgroups\0", b"deny");
                }
                if e == 0 {
                    e = write_proc(init, b"uid_map\0", &self.uid_map);
                }
                if e == 0 {
                    e = write_proc(init, b"gid_map\0", &self.gid_map);
                }
                if e != 0 {
                    libc::kill(init, libc::SIGKILL);
                    while libc::waitpid(init, ptr::null_mut(), 0) < 0 && errno() == libc::EINTR {}
                    fail_with(st, "uid/gid map", e);
                }
            }
            libc::write(go[1], b"g".as_ptr().cast(), 1);
            close_all_but(&[st, go[1]]);
            self.wait_for(init);
        }
    }

    /// Waits for init until the deadline, then kills it (and with it the
    /// whole pid namespace); exits the monitor either way. Init's exit is
    /// seen through a pidfd at once, so a short inspection costs no polling
    /// delay; kernels without `pidfd_open` (before 5.3) get a 1 ms poll.
    unsafe fn wait_for(&self, init: pid_t) -> ! {
        let st = self.status;
        let start = now_ns();
        // SAFETY (whole block): raw syscalls on stack values.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, init, 0 as c_uint) as c_int;
            loop {
                let mut ws = 0;
                let r = libc::waitpid(init, &mut ws, libc::WNOHANG);
                if r == init || (r < 0 && errno() != libc::EINTR) {
                    libc::_exit(0);
                }
                let elapsed = now_ns().saturating_sub(start);
                if elapsed >= self.timeout_ns {
                    // Init's death makes the kernel kill every process in
                    // the pid namespace; waitpid returns once they are gone.
                    libc::kill(init, libc::SIGKILL);
                    while libc::waitpid(init, ptr::null_mut(), 0) < 0 && errno() == libc::EINTR {}
                    report(st, Report::Timeout);
                    libc::_exit(0);
                }
                let left_ms = (self.timeout_ns - elapsed) / 1_000_000 + 1;
                if pidfd >= 0 {
                    let mut p = libc::pollfd {
                        fd: pidfd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    libc::poll(&mut p, 1, left_ms.min(c_int::MAX as u128) as c_int);
                } else {
                    let nap = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 1_000_000,
                    };
                    libc::nanosleep(&nap, ptr::null_mut());
                }
            }
        }
    }

    /// Dies with SIGKILL when `parent` (its parent thread) does; exits now
    /// if it already has.
    unsafe fn stay_with(&self, parent: pid_t) {
        // SAFETY: prctl and getppid take no pointers.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != parent {
                libc::_exit(127);
            }
        }
    }

    unsafe fn mounts(&self) {
        let st = self.status;
        // SAFETY: raw syscalls on NUL-terminated strings owned by `self` or
        // static, and a `MountAttr` on the stack of the size passed.
        unsafe {
            if libc::mount(
                ptr::null(),
                c"/".as_ptr(),
                ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                ptr::null(),
            ) != 0
            {
                fail(st, "making mounts private");
            }
            // A detached copy of dir's mount, taken while still writable.
            let tree = libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                self.dir.as_ptr(),
                // Recursive: a non-recursive clone of a mount with locked
                // submounts is refused (EINVAL).
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as c_uint,
            ) as c_int;
            if tree < 0 {
                fail(st, "cloning the dir mount");
            }
            if setattr(
                tree,
                c"",
                libc::AT_EMPTY_PATH,
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            ) != 0
            {
                fail(st, "cloning the dir mount");
            }
            if self.readonly
                && setattr(
                    libc::AT_FDCWD,
                    c"/",
                    libc::AT_RECURSIVE,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                ) != 0
            {
                fail(st, "making the host read-only");
            }
            for t in &self.tmpfs {
                if libc::mount(
                    c"tmpfs".as_ptr(),
                    t.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    self.tmpfs_opts.as_ptr().cast(),
                ) != 0
                {
                    fail(st, "mounting tmpfs");
                }
            }
            // Needed only when dir lies on one of the fresh tmpfs; elsewhere
            // these fail with EEXIST or EROFS, harmlessly.
            for p in &self.prefixes {
                libc::mkdir(p.as_ptr(), 0o755);
            }
            if libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                self.dir.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) != 0
            {
                fail(st, "binding dir read-write");
            }
            libc::close(tree);
        }
    }

    unsafe fn limit(&self) {
        let st = self.status;
        // SAFETY: setrlimit reads one `rlimit` from the stack.
        unsafe {
            let set = |res, v: u64| {
                let r = libc::rlimit {
                    rlim_cur: v as libc::rlim_t,
                    rlim_max: v as libc::rlim_t,
                };
                libc::setrlimit(res, &r) == 0
            };
            if !(set(libc::RLIMIT_CORE, 0)
                && set(libc::RLIMIT_CPU, self.cpu_seconds)
                && set(libc::RLIMIT_AS, self.memory_bytes)
                && set(libc::RLIMIT_NPROC, self.max_processes)
                && set(libc::RLIMIT_FSIZE, self.max_file_bytes))
            {
                fail(st, "setrlimit");
            }
        }
    }

    /// Pid 1 of the new pid namespace, in all the new namespaces: once the
    /// monitor has written its maps, becomes root there, builds the mount
    /// tree, mounts its `/proc`, forks the command, reaps until the command
    /// exits, reports its status and exits, which kills whatever else is
    /// left in the namespace.
    fn init(&self, go: RawFd) -> io::Result<()> {
        let st = self.status;
        // SAFETY: raw syscalls on static strings, `self`'s strings and stack
        // values.
        unsafe {
            let mut b = [0u8; 1];
            if libc::read(go, b.as_mut_ptr().cast(), 1) != 1 {
                // The monitor failed (and reported) or died.
                libc::_exit(127);
            }
            if self.userns {
                if !self.deny_setgroups && libc::setgroups(0, ptr::null()) != 0 {
                    fail(st, "setgroups");
                }
                if libc::setresgid(0, 0, 0) != 0 {
                    fail(st, "setgid");
                }
                if libc::setresuid(0, 0, 0) != 0 {
                    fail(st, "setuid");
                }
            }
            // Set after the credentials change, which clears it; if the
            // monitor died before, its end of `go` is closed by now.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            let mut p = libc::pollfd {
                fd: go,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut p, 1, 0) != 0 {
                libc::_exit(127);
            }
            libc::close(go);
            if self.clone_flags & libc::CLONE_NEWUTS != 0 {
                let name = b"totogate-sandbox";
                if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                    fail(st, "hostname");
                }
            }
            if self.mountns {
                self.mounts();
            }
            if libc::chdir(self.dir.as_ptr()) != 0 {
                fail(st, "chdir to dir");
            }
            if self.rlimits {
                self.limit();
            }
            if self.pidns
                && self.mountns
                && libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    ptr::null(),
                ) != 0
            {
                fail(st, "mounting /proc");
            }
            let cmd = raw_fork();
            if cmd < 0 {
                fail(st, "fork");
            }
            if cmd == 0 {
                // The command process: `helper_main` execs it.
                return Ok(());
            }
            close_all_but(&[st]);
            loop {
                let mut ws = 0;
                let r = libc::waitpid(-1, &mut ws, 0);
                if r == cmd {
                    report(st, Report::Exit(ws));
                    libc::_exit(0);
                }
                if r < 0 && errno() != libc::EINTR {
                    libc::_exit(0);
                }
            }
        }
    }
}

/// The probe behind [`super::probe`]: tries each protection in this forked
/// child and exits with a bit mask of those that worked.
/// `uid_map` and `gid_map` map the caller's own ids (the one mapping any
/// process may write for itself); without a mapping, mounts are refused.
pub(super) fn probe(uid_map: &[u8], gid_map: &[u8]) -> io::Result<()> {
    // SAFETY: raw syscalls on static strings, the given slices and stack
    // values; ends in `_exit`, never returns to std.
    unsafe {
        let mut mask = 0u8;
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::setrlimit(libc::RLIMIT_CORE, &core) == 0 {
            mask |= Protection::Rlimits.bit();
        }
        if libc::unshare(libc::CLONE_NEWUSER) == 0 {
            let me = libc::getpid();
            if write_proc(me, b"setgroups\0", b"deny") == 0
                && write_proc(me, b"uid_map\0", uid_map) == 0
                && write_proc(me, b"gid_map\0", gid_map) == 0
            {
                mask |= Protection::UserNamespace.bit();
            }
            for (flag, p) in [
                (libc::CLONE_NEWNET, Protection::NetNamespace),
                (libc::CLONE_NEWIPC, Protection::IpcNamespace),
                (libc::CLONE_NEWUTS, Protection::UtsNamespace),
            ] {
                if libc::unshare(flag) == 0 {
                    mask |= p.bit();
                }
            }
            let mnt = libc::unshare(libc::CLONE_NEWNS) == 0;
            if mnt {
                mask |= Protection::MountNamespace.bit();
                let private = libc::mount(
                    ptr::null(),
                    c"/".as_ptr(),
                    ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    ptr::null(),
                ) == 0;
                let tree = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    c"/".as_ptr(),
                    OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as c_uint,
                );
                if private
                    && tree >= 0
                    && setattr(
                        libc::AT_FDCWD,
                        c"/",
                        libc::AT_RECURSIVE,
                        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                    ) == 0
                {
                    mask |= Protection::ReadOnlyHost.bit();
                }
            }
            if libc::unshare(libc::CLONE_NEWPID) == 0 {
                let pid = raw_fork();
                if pid == 0 {
                    let ok = !mnt
                        || libc::mount(
                            c"proc".as_ptr(),
                            c"/proc".as_ptr(),
                            c"proc".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            ptr::null(),
                        ) == 0;
                    libc::_exit(if ok { 0 } else { 1 });
                }
                let mut ws = 0;
                if pid > 0
                    && libc::waitpid(pid, &mut ws, 0) == pid
                    && libc::WIFEXITED(ws)
                    && libc::WEXITSTATUS(ws) == 0
                {
                    mask |= Protection::PidNamespace.bit();
                }
            }
        }
        libc::_exit(mask as c_int)
    }
}

fn errno() -> c_int {
    nix::errno::Errno::last_raw()
}

fn report(fd: RawFd, r: Report) {
    let b = r.encode();
    // SAFETY: writes 8 bytes from a stack array.
    unsafe {
        libc::write(fd, b.as_ptr().cast(), b.len());
    }
}

fn fail(fd: RawFd, stage: &'static str) -> ! {
    fail_with(fd, stage, errno())
}

fn fail_with(fd: RawFd, stage: &'static str, errno: c_int) -> ! {
    report(fd, Report::Setup { stage, errno });
    // SAFETY: _exit has no preconditions; it skips atexit handlers, which
    // must not run in a forked child.
    unsafe { libc::_exit(127) }
}

/// `fork` without glibc's atfork handlers (which take malloc's locks, held
/// forever if another thread of the parent had them at the first fork).
unsafe fn raw_fork() -> pid_t {
    // SAFETY: clone with only SIGCHLD and no new stack is fork(2).
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as c_long, 0, 0, 0, 0) as pid_t }
}

/// Closes every descriptor from 3 up except those in `keep` (at most 4).
fn close_all_but(keep: &[RawFd]) {
    let mut sorted = [RawFd::MAX; 4];
    let n = keep.len().min(4);
    sorted[..n].copy_from_slice(&keep[..n]);
    sorted[..n].sort_unstable();
    let mut from: c_uint = 3;
    for &k in &sorted[..n] {
        let k = k as c_uint;
        if k < from {
            continue;
        }
        if k > from {
            // SAFETY: close_range takes no pointers; closing fds this
            // process does not use (inherited pipes of the parent) is the
            // point: their other ends then see EOF.
            unsafe {
                libc::syscall(libc::SYS_close_range, from, k - 1, 0 as c_uint);
            }
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe {
        libc::syscall(libc::SYS_close_range, from, c_uint::MAX, 0 as c_uint);
    }
}

/// `fork` with namespace flags: the child starts in the new namespaces
/// (pid 1 of a new pid namespace). Raw, for the reason [`raw_fork`] gives.
unsafe fn raw_clone(flags: c_int) -> pid_t {
    // SAFETY: clone with no new stack is fork(2) with `flags` added.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as c_long,
            0,
            0,
            0,
            0,
        ) as pid_t
    }
}

unsafe fn setattr(dirfd: c_int, path: &CStr, flags: c_int, set: u64) -> c_long {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` lives across the call,
    // with its size passed alongside.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags as c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

fn now_ns() -> u128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec on the stack.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// Writes `data` to `/proc/<pid>/<name>`, formatting the path on the stack.
/// Returns 0 or an errno.
fn write_proc(pid: pid_t, name: &[u8], data: &[u8]) -> c_int {
    let mut path = [0u8; 64];
    let mut n = 0;
    for b in b"/proc/" {
        path[n] = *b;
        n += 1;
    }
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut v = pid as u32;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[n] = digits[d];
        n += 1;
    }
    path[n] = b'/';
    n += 1;
    for b in name {
        path[n] = *b;
        n += 1;
    }
    // SAFETY: `path` is NUL-terminated (`name` ends in NUL, the rest of the
    // buffer is zero); `data` is a valid slice.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return errno();
        }
        let w = libc::write(fd, data.as_ptr().cast(), data.len());
        let e = if w == data.len() as isize {
            0
        } else if w < 0 {
            errno()
        } else {
            libc::EIO
        };
        libc::close(fd);
        e
    }
}
