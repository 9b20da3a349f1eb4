//! totogate: refuse to install a package unless its in-toto supply chain checks out.
//!
//! Spec coverage: in-toto v0.9 metadata (layouts, links, Metablock and DSSE
//! envelopes), byte-compatible with the reference implementation (PyPI
//! `in-toto` 3.1.0), GPG keys and signatures included (verification). Not
//! supported yet: signing with GPG, in-toto attestations (ITE-6 statements),
//! the `ostree:` and `dir:` artifact resolvers.
// `unsafe` is denied everywhere but `sandbox` (namespaces, rlimits, fork/exec);
// the binary forbids it outright.
#![deny(unsafe_code)]

pub mod apt;
pub mod cargo_registry;
pub mod check;
pub mod cjson;
pub mod crypto;
pub mod digest;
pub mod exec_lock;
pub mod fetch;
pub mod json;
pub mod mirror;
pub mod model;
pub mod package;
pub mod policy;
pub mod record;
pub mod sandbox;
pub mod verify;
