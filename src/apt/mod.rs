//! apt integration, pure-logic layer: the acquire-method protocol spoken by
//! `/usr/lib/apt/methods/intoto` ([`protocol`]), the `APT::Intoto` settings
//! apt passes to it and to hooks ([`config`]), and the input of a
//! `DPkg::Pre-Install-Pkgs` hook ([`hook_input`]).
//!
//! Nothing here does I/O beyond reading from a caller's `BufRead`. Real
//! exchanges with apt 2.6, and the recipe that made them, are in
//! `testdata/apt/` (see its README.md).

pub mod config;
pub mod hook_input;
pub mod protocol;
