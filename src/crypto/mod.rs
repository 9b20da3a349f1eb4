//! Keys, key ids, signing and signature checks, in securesystemslib's formats.
//!
//! Supported schemes (securesystemslib names): `ed25519`, `rsassa-pss-sha256`,
//! `rsa-pkcs1v15-sha256`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`.
//! A key id is always computed here (sha256 of the canonical key JSON), never
//! taken from the input, except for GPG keys (`gpg`), whose id is the OpenPGP
//! v4 fingerprint: read from the keyring, or as a layout names it (unchecked, as in in-toto).

pub mod gpg;
mod keys;

pub use keys::{generate, KeyError, KeyId, KeyType, PrivateKey, PublicKey, Scheme};
