//! End-to-end tests of the built `totogate` binary. Tests that compare with
//! the reference implementation provision it (`scripts/oracle-venv.sh`).

mod apt;
mod authoring;
mod check;
mod check_policy;
mod common;
mod fnmatch;
mod format;
mod gpg;
mod hostile;
mod interop;
mod mirror;
mod pyjson;
mod sample;
mod scenarios;
