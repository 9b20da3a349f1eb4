//! `totogate-sandbox`: the sandbox monitor program. totogate execs it once
//! per inspection (see `totogate::sandbox`); it is not meant to be run by
//! hand. It is a separate binary because every inspection pays its start:
//! without the full command line's allocator and data it starts in about
//! half the time of `totogate` itself, which can act as the monitor too and
//! is used when this binary is not installed beside it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    totogate::sandbox::serve();
    eprintln!(
        "totogate-sandbox: the sandbox monitor that totogate starts for each inspection; \
         it is not run by hand (see `totogate check --help`)"
    );
    ExitCode::from(2)
}
