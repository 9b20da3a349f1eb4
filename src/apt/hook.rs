//! The `DPkg::Pre-Install-Pkgs` hook: apt hands it (protocol version 2 or
//! 3) its configuration and every package about to be unpacked; each `.deb`
//! is checked whatever transport fetched it, and a refusal exits non-zero,
//! which makes apt abort before dpkg runs.

use std::io::BufRead;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::apt::gate::{Decision, Gate};
use crate::apt::hook_input::{HookInput, HookInputError};

/// What happened to one package.
#[derive(Debug)]
pub struct Outcome {
    pub deb: PathBuf,
    pub decision: Decision,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("reading the package list apt sent on stdin: {0}")]
    Input(#[from] HookInputError),
    #[error("apt's APT::Intoto settings: {0}")]
    Config(#[from] crate::apt::config::ConfigError),
    #[error(
        "apt sent no configuration (hook protocol version {0}): set \
         DPkg::Tools::Options::<this command>::Version \"3\" (hooks/apt/50totogate-hook.conf does)"
    )]
    NoConfig(u32),
    #[error("{0}")]
    Gate(#[from] crate::apt::gate::GateError),
}

/// Reads apt's hook input and checks every `.deb` in it, in parallel.
pub fn run(input: &mut dyn BufRead) -> Result<Vec<Outcome>, HookError> {
    let parsed = HookInput::read(&mut &mut *input)?;
    if parsed.version < 2 {
        return Err(HookError::NoConfig(parsed.version));
    }
    let config = parsed.intoto_config()?;
    let debs: Vec<PathBuf> = parsed.debs().map(PathBuf::from).collect();
    if debs.is_empty() {
        return Ok(Vec::new());
    }
    let gate = Gate::new(&config)?;
    Ok(debs
        .into_par_iter()
        .map(|deb| Outcome {
            decision: gate.check_deb(&deb),
            deb,
        })
        .collect())
}
