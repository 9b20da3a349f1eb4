//! apt integration. The pure-logic layer: the acquire-method protocol spoken
//! by `/usr/lib/apt/methods/intoto` ([`protocol`]), the `APT::Intoto`
//! settings apt passes to it and to hooks ([`config`]), and the input of a
//! `DPkg::Pre-Install-Pkgs` hook ([`hook_input`]); none of them does I/O
//! beyond reading from a caller's `BufRead`. On top: the check of one `.deb`
//! ([`gate`]), the method ([`method`]), the hook ([`hook`]) and
//! `install-hooks apt` ([`install`]). Real
//! exchanges with apt 2.6, and the recipe that made them, are in
//! `testdata/apt/` (see its README.md).

pub mod config;
pub mod gate;
pub mod hook;
pub mod hook_input;
pub mod install;
pub mod method;
pub mod protocol;

/// A file of `testdata/apt/recorded/` (unit tests).
#[cfg(test)]
pub(crate) fn recorded(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/apt/recorded")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
