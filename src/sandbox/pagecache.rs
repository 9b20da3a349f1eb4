//! `cachestat(2)`, for the digest walk's stat cache (`crate::digest`): it
//! lives here because it is a raw system call, and `unsafe` is allowed only
//! in this module.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;

/// `__NR_cachestat` (Linux 6.5): 451 in the system call table that x86-64,
/// arm64 and most other architectures share (alpha numbers it otherwise);
/// the `libc` crate does not name it for every target yet.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// True when the kernel says none of the file's cached pages is dirty or
/// under writeback, so that a later write to it, through `write` or through
/// a shared mapping, must go through the file system and move its ctime.
/// False when it cannot say (kernels before 6.5, or `EPERM` for a file the
/// caller neither owns nor may write).
pub fn page_cache_is_clean(fd: BorrowedFd) -> bool {
    let range = CachestatRange { off: 0, len: 0 };
    let mut cs = Cachestat::default();
    // SAFETY: `range` and `cs` are valid for the call and laid out as the
    // kernel's `struct cachestat_range` / `struct cachestat`; the flags
    // argument must be 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const CachestatRange,
            &mut cs as *mut Cachestat,
            0u32,
        )
    };
    rc == 0 && cs.nr_dirty == 0 && cs.nr_writeback == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_freshly_written_file_is_dirty_and_clean_after_fsync() {
        let d = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(d.path().join("f")).unwrap();
        f.write_all(&[7u8; 65536]).unwrap();
        // /tmp may be a tmpfs (always dirty) or a disk: only the disk case
        // can become clean.
        assert!(!page_cache_is_clean(f.as_fd()), "dirty right after a write");
        f.sync_all().unwrap();
        let on_disk = nix::sys::statfs::fstatfs(&f)
            .map(|s| s.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC)
            .unwrap();
        if on_disk {
            assert!(
                page_cache_is_clean(f.as_fd()),
                "clean after fsync (cachestat(2) needs Linux 6.5 or later)"
            );
        }
    }
}
