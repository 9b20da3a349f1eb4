//! End-to-end tests of the built `totogate` binary. Tests that compare with
//! the reference implementation provision it (`scripts/oracle-venv.sh`).

mod common;
mod interop;
mod hostile;
mod scenarios;
