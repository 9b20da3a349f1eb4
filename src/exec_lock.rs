//! Keeps `fork` away from files open for writing.
//!
//! A child forked while another thread holds a file open for writing
//! inherits that descriptor until it execs or closes it; if the file is an
//! executable some other sandbox is about to run, that `execve` fails with
//! ETXTBSY ("text file busy") and a good package is refused. When the
//! sandbox's monitor was a fork that kept inherited descriptors for a few
//! milliseconds of setup, parallel checks (`mirror`) hit this about once in
//! 500 packages; the monitor is now exec'd at once, but the window is not
//! zero. Writers of files hold [`writing`] while the file is open; spawners
//! hold [`forking`] across the spawn (which returns only after the new
//! process has exec'd, closing the inherited descriptors).

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static LOCK: RwLock<()> = RwLock::new(());

/// Held while a file is open for writing (many at once).
pub fn writing() -> RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Held across a fork+exec (exclusive).
pub fn forking() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().unwrap_or_else(|e| e.into_inner())
}
