use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use pkcs8::LineEnding;
use rand_core::OsRng;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::gpg::{self, GpgKey};
use crate::cjson;

/// A key id: lowercase hex sha256 of the canonical JSON of
/// `{"keytype", "scheme", "keyval"}` (securesystemslib `compute_default_keyid`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The 8-character prefix used in link file names (`<step>.<keyid8>.link`).
    pub fn short(&self) -> &str {
        &self.0[..8.min(self.0.len())]
    }
    fn compute(dict: &Value) -> KeyId {
        // Encoding a dict of strings cannot fail.
        let bytes = cjson::encode(dict).unwrap_or_default();
        KeyId(hex::encode(Sha256::digest(bytes)))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    Rsa,
    Ecdsa,
    /// An OpenPGP key in securesystemslib's GPG dict format (`type`/`method`).
    Gpg,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
            KeyType::Ecdsa => "ecdsa",
            KeyType::Gpg => "gpg",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ed25519,
    RsassaPssSha256,
    RsaPkcs1v15Sha256,
    EcdsaP256,
    EcdsaP384,
    /// GPG `method` `pgp+rsa-pkcsv1.5`.
    PgpRsaPkcs1v15,
    /// GPG `method` `pgp+eddsa-ed25519`.
    PgpEddsaEd25519,
    /// Any other GPG key type (DSA, ...): no signature by it verifies here.
    PgpOther,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::RsassaPssSha256 => "rsassa-pss-sha256",
            Scheme::RsaPkcs1v15Sha256 => "rsa-pkcs1v15-sha256",
            Scheme::EcdsaP256 => "ecdsa-sha2-nistp256",
            Scheme::EcdsaP384 => "ecdsa-sha2-nistp384",
            Scheme::PgpRsaPkcs1v15 => "pgp+rsa-pkcsv1.5",
            Scheme::PgpEddsaEd25519 => "pgp+eddsa-ed25519",
            Scheme::PgpOther => "pgp",
        }
    }
    fn parse(keytype: &str, scheme: &str) -> Option<(KeyType, Scheme)> {
        Some(match (keytype, scheme) {
            ("ed25519", "ed25519") => (KeyType::Ed25519, Scheme::Ed25519),
            ("rsa", "rsassa-pss-sha256") => (KeyType::Rsa, Scheme::RsassaPssSha256),
            ("rsa", "rsa-pkcs1v15-sha256") => (KeyType::Rsa, Scheme::RsaPkcs1v15Sha256),
            // securesystemslib still accepts the deprecated keytype spelling.
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
                (KeyType::Ecdsa, Scheme::EcdsaP256)
            }
            ("ecdsa" | "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384") => {
                (KeyType::Ecdsa, Scheme::EcdsaP384)
            }
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (expected a '-----BEGIN PUBLIC KEY-----' SubjectPublicKeyInfo block): {0}")]
    BadPublicPem(spki::Error),
    #[error(
        "not a supported PEM private key (PKCS#8, encrypted PKCS#8, PKCS#1 RSA or SEC1 EC): {0}"
    )]
    BadPrivatePem(String),
    #[error("the private key is encrypted: pass its password (-P)")]
    PasswordNeeded,
    #[error("could not decrypt the private key: wrong password or unsupported cipher")]
    WrongPassword,
    #[error("unsupported key algorithm {0} (supported: ed25519, rsa, ecdsa P-256/P-384)")]
    UnsupportedAlgorithm(String),
    #[error("unsupported key type/scheme {keytype:?}/{scheme:?}")]
    UnsupportedScheme { keytype: String, scheme: String },
    #[error("key field `{0}` is missing or not a string")]
    MissingField(&'static str),
    #[error("key value does not decode: {0}")]
    BadKeyValue(String),
    #[error("key id {claimed} does not match the key, whose id is {computed}")]
    KeyIdMismatch { claimed: String, computed: KeyId },
    #[error("signature does not verify")]
    BadSignature,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error(transparent)]
    Gpg(#[from] super::gpg::GpgError),
}

#[derive(Clone)]
enum Verifier {
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Gpg(Box<GpgKey>),
}

/// A public key as securesystemslib models it, with its computed key id.
#[derive(Clone)]
pub struct PublicKey {
    keyid: KeyId,
    keytype: KeyType,
    scheme: Scheme,
    /// The securesystemslib key dict as it appears in metadata (including
    /// `keyid` and any unrecognised fields), so a layout re-serialises it exactly.
    dict: Map<String, Value>,
    verifier: Verifier,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.scheme.as_str(), self.keyid)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.dict == other.dict
    }
}

fn pem_of<T: EncodePublicKey>(key: &T) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::BadKeyValue(e.to_string()))
}

impl PublicKey {
    /// Loads a SubjectPublicKeyInfo PEM, as `SSlibKey.from_pem` does: the
    /// default scheme for its type, the key value re-encoded as the reference does.
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let (label, der) = pem_rfc7468_decode(pem).map_err(KeyError::BadPublicPem)?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::BadPublicPem(spki::Error::KeyMalformed));
        }
        let spki = spki::SubjectPublicKeyInfoRef::try_from(der.as_slice())
            .map_err(KeyError::BadPublicPem)?;
        let oid = spki.algorithm.oid;
        let verifier = if oid == ed25519_dalek::pkcs8::ALGORITHM_OID {
            Verifier::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(&der)
                    .map_err(KeyError::BadPublicPem)?,
            )
        } else if oid == rsa::pkcs1::ALGORITHM_OID {
            Verifier::Rsa(
                rsa::RsaPublicKey::from_public_key_der(&der).map_err(KeyError::BadPublicPem)?,
            )
        } else if oid == elliptic_curve_oid() {
            if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
                Verifier::P256(k)
            } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(&der) {
                Verifier::P384(k)
            } else {
                return Err(KeyError::UnsupportedAlgorithm(
                    "ecdsa on a curve other than P-256/P-384".into(),
                ));
            }
        } else {
            return Err(KeyError::UnsupportedAlgorithm(oid.to_string()));
        };
        Ok(PublicKey::from_verifier(verifier))
    }

    fn from_verifier(verifier: Verifier) -> PublicKey {
        let (keytype, scheme, public) = match &verifier {
            Verifier::Ed25519(k) => (KeyType::Ed25519, Scheme::Ed25519, hex::encode(k.as_bytes())),
            Verifier::Rsa(k) => (
                KeyType::Rsa,
                Scheme::RsassaPssSha256,
                pem_of(k).unwrap_or_default(),
            ),
            Verifier::P256(k) => (
                KeyType::Ecdsa,
                Scheme::EcdsaP256,
                pem_of(k).unwrap_or_default(),
            ),
            Verifier::P384(k) => (
                KeyType::Ecdsa,
                Scheme::EcdsaP384,
                pem_of(k).unwrap_or_default(),
            ),
            Verifier::Gpg(_) => (KeyType::Gpg, Scheme::PgpOther, String::new()),
        };
        let base = json!({
            "keytype": keytype.as_str(),
            "scheme": scheme.as_str(),
            "keyval": {"public": public},
        });
        let keyid = KeyId::compute(&base);
        let mut dict = match base {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        dict.insert("keyid".into(), Value::String(keyid.0.clone()));
        PublicKey {
            keyid,
            keytype,
            scheme,
            dict,
            verifier,
        }
    }

    /// Loads a securesystemslib key dict (as found in a layout's `keys`).
    /// `claimed` is the id the metadata files it under; it must match the
    /// computed one. Legacy dicts that carry `keyid_hash_algorithms` may have
    /// an id computed over that field too, as in-toto before 2.0 did.
    pub fn from_dict(
        dict: &Map<String, Value>,
        claimed: Option<&str>,
    ) -> Result<PublicKey, KeyError> {
        if gpg::is_gpg_dict(dict) {
            return PublicKey::gpg_from_dict(dict, claimed);
        }
        let get = |field: &'static str| {
            dict.get(field)
                .and_then(Value::as_str)
                .ok_or(KeyError::MissingField(field))
        };
        let keytype = get("keytype")?;
        let scheme_name = get("scheme")?;
        let keyval = dict
            .get("keyval")
            .and_then(Value::as_object)
            .ok_or(KeyError::MissingField("keyval"))?;
        let public = keyval
            .get("public")
            .and_then(Value::as_str)
            .ok_or(KeyError::MissingField("keyval.public"))?;
        let (kt, scheme) =
            Scheme::parse(keytype, scheme_name).ok_or_else(|| KeyError::UnsupportedScheme {
                keytype: keytype.into(),
                scheme: scheme_name.into(),
            })?;
        let verifier = match scheme {
            Scheme::Ed25519 => {
                let raw: [u8; 32] = hex::decode(public)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| {
                        KeyError::BadKeyValue("ed25519 key is not 32 hex bytes".into())
                    })?;
                Verifier::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&raw)
                        .map_err(|e| KeyError::BadKeyValue(e.to_string()))?,
                )
            }
            Scheme::RsassaPssSha256 | Scheme::RsaPkcs1v15Sha256 => Verifier::Rsa(
                rsa::RsaPublicKey::from_public_key_pem(public).map_err(KeyError::BadPublicPem)?,
            ),
            Scheme::EcdsaP256 => Verifier::P256(
                p256::ecdsa::VerifyingKey::from_public_key_pem(public)
                    .map_err(KeyError::BadPublicPem)?,
            ),
            Scheme::EcdsaP384 => Verifier::P384(
                p384::ecdsa::VerifyingKey::from_public_key_pem(public)
                    .map_err(KeyError::BadPublicPem)?,
            ),
            Scheme::PgpRsaPkcs1v15 | Scheme::PgpEddsaEd25519 | Scheme::PgpOther => {
                return Err(KeyError::UnsupportedScheme {
                    keytype: keytype.into(),
                    scheme: scheme_name.into(),
                })
            }
        };
        let keyval = Value::Object(keyval.clone());
        let mut base = json!({"keytype": keytype, "scheme": scheme_name, "keyval": keyval});
        let keyid = KeyId::compute(&base);
        let keyid = match claimed {
            Some(c) if c == keyid.0 => keyid,
            Some(c) => {
                let legacy = dict.get("keyid_hash_algorithms").map(|algs| {
                    base["keyid_hash_algorithms"] = algs.clone();
                    KeyId::compute(&base)
                });
                match legacy {
                    Some(l) if l.0 == c => l,
                    _ => {
                        return Err(KeyError::KeyIdMismatch {
                            claimed: c.into(),
                            computed: keyid,
                        })
                    }
                }
            }
            None => keyid,
        };
        let mut dict = dict.clone();
        dict.insert("keyid".into(), Value::String(keyid.0.clone()));
        Ok(PublicKey {
            keyid,
            keytype: kt,
            scheme,
            dict,
            verifier,
        })
    }

    /// A GPG key dict (securesystemslib `export_pubkey` format); its id is
    /// its `keyid` field (the primary key's fingerprint).
    pub fn from_gpg_dict(dict: &Map<String, Value>) -> Result<PublicKey, KeyError> {
        PublicKey::gpg_from_dict(dict, None)
    }

    fn gpg_from_dict(
        dict: &Map<String, Value>,
        claimed: Option<&str>,
    ) -> Result<PublicKey, KeyError> {
        let keyid = match (claimed, dict.get("keyid").and_then(Value::as_str)) {
            (Some(c), Some(k)) if c != k => {
                return Err(KeyError::KeyIdMismatch {
                    claimed: c.into(),
                    computed: KeyId(k.into()),
                })
            }
            (_, Some(k)) => k.to_owned(),
            (Some(c), None) => c.to_owned(),
            (None, None) => return Err(KeyError::MissingField("keyid")),
        };
        let key = GpgKey::from_dict(&keyid, dict, None)?;
        let scheme = match key.keytype() {
            "rsa" => Scheme::PgpRsaPkcs1v15,
            "eddsa" => Scheme::PgpEddsaEd25519,
            _ => Scheme::PgpOther,
        };
        let mut dict = dict.clone();
        dict.insert("keyid".into(), Value::String(keyid.clone()));
        Ok(PublicKey {
            keyid: KeyId(keyid),
            keytype: KeyType::Gpg,
            scheme,
            dict,
            verifier: Verifier::Gpg(Box::new(key)),
        })
    }

    /// The GPG key (with its subkeys), for a key of type `KeyType::Gpg`.
    pub fn gpg(&self) -> Option<&GpgKey> {
        match &self.verifier {
            Verifier::Gpg(k) => Some(k),
            _ => None,
        }
    }

    /// The ids this key lists as its subkeys, whatever its type: the
    /// reference reads `key.get("subkeys", {})` of any key dict (a GPG key's
    /// come from its parsed subkeys, another key's from the `subkeys` object
    /// its dict carries along).
    pub fn subkey_ids(&self) -> Vec<String> {
        if let Some(g) = self.gpg() {
            return g.subkey_ids().map(str::to_owned).collect();
        }
        match self.dict.get("subkeys") {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a signature whose `keyid` is `sig_keyid` is this key's, as
    /// in-toto picks signatures: the key's own id, or one of its GPG subkeys'.
    pub fn matches_signature_keyid(&self, sig_keyid: &str) -> bool {
        self.keyid.0 == sig_keyid || self.gpg().is_some_and(|g| g.has_subkey(sig_keyid))
    }

    pub fn keyid(&self) -> &KeyId {
        &self.keyid
    }
    pub fn keytype(&self) -> KeyType {
        self.keytype
    }
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// The key dict as metadata carries it (with `keyid`).
    pub fn to_dict(&self) -> Value {
        Value::Object(self.dict.clone())
    }

    /// SubjectPublicKeyInfo PEM of this key.
    pub fn to_pem(&self) -> String {
        match &self.verifier {
            Verifier::Ed25519(k) => pem_of(k),
            Verifier::Rsa(k) => pem_of(k),
            Verifier::P256(k) => pem_of(k),
            Verifier::P384(k) => pem_of(k),
            Verifier::Gpg(k) => Ok(k.to_pem()),
        }
        .unwrap_or_default()
    }

    /// Checks `sig` over `msg` with this key's scheme.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        use signature::Verifier as _;
        let ok = match (&self.verifier, self.scheme) {
            (Verifier::Ed25519(k), _) => ed25519_dalek::Signature::from_slice(sig)
                .map(|s| k.verify_strict(msg, &s).is_ok())
                .unwrap_or(false),
            (Verifier::Rsa(k), Scheme::RsaPkcs1v15Sha256) => {
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone());
                rsa::pkcs1v15::Signature::try_from(sig)
                    .map(|s| vk.verify(msg, &s).is_ok())
                    .unwrap_or(false)
            }
            (Verifier::Rsa(k), _) => {
                // The reference verifies with `PSS.AUTO`: any salt length the
                // encoded message carries (OpenSSL recovers it from the
                // position of the 0x01 separator). The common case, a salt
                // as long as the digest (what the reference signs with), is
                // checked first with one RSA operation; otherwise the salt
                // length is recovered as OpenSSL does and the crate checks
                // the signature with it. Not first for a modulus of 8k+1
                // bits, whose zero leading octet the crate does not check.
                use rsa::traits::PublicKeyParts;
                let check = |vk: rsa::pss::VerifyingKey<Sha256>| {
                    rsa::pss::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
                };
                (k.n().bits() % 8 != 1 && check(rsa::pss::VerifyingKey::new(k.clone())))
                    || pss_recover_salt_len(k, sig).is_some_and(|salt_len| {
                        check(rsa::pss::VerifyingKey::new_with_salt_len(
                            k.clone(),
                            salt_len,
                        ))
                    })
            }
            (Verifier::P256(k), _) => p256::ecdsa::DerSignature::from_bytes(sig)
                .map(|s| k.verify(msg, &s).is_ok())
                .unwrap_or(false),
            (Verifier::P384(k), _) => p384::ecdsa::DerSignature::from_bytes(sig)
                .map(|s| k.verify(msg, &s).is_ok())
                .unwrap_or(false),
            // GPG signatures carry headers: see `GpgKey::verify`.
            (Verifier::Gpg(_), _) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(KeyError::BadSignature)
        }
    }
}

/// The salt length an RSASSA-PSS (SHA-256, MGF1-SHA-256) signature encodes,
/// as OpenSSL's `RSA_verify_PKCS1_PSS_mgf1` recovers it for
/// `RSA_PSS_SALTLEN_AUTO`: open the signature with the public key, unmask
/// DB, skip its leading zero octets, and require a 0x01 separator; the salt
/// is what follows it. `None` when the encoded message is malformed (the
/// signature is then refused, as OpenSSL refuses it). The hash `H'` check is
/// left to the caller.
fn pss_recover_salt_len(key: &rsa::RsaPublicKey, sig: &[u8]) -> Option<usize> {
    use rsa::traits::PublicKeyParts;
    let h_len = <Sha256 as Digest>::output_size();
    let key_len = key.size();
    if sig.len() != key_len {
        return None;
    }
    let s = rsa::BigUint::from_bytes_be(sig);
    if &s >= key.n() {
        return None;
    }
    let m = s.modpow(key.e(), key.n()).to_bytes_be();
    if m.len() > key_len {
        return None;
    }
    let mut em = vec![0u8; key_len - m.len()];
    em.extend_from_slice(&m);
    let em_bits = key.n().bits().checked_sub(1)?;
    let em_len = em_bits.div_ceil(8);
    // A modulus of 8k+1 bits leaves a whole leading octet that must be zero.
    let (lead, em) = em.split_at(key_len - em_len);
    if lead.iter().any(|&b| b != 0) {
        return None;
    }
    if em_len < h_len + 2 || em[em_len - 1] != 0xbc {
        return None;
    }
    let top_mask = 0xffu8 >> (8 * em_len - em_bits);
    if em[0] & !top_mask != 0 {
        return None;
    }
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let h = &rest[..h_len];
    let mut db = masked_db.to_vec();
    for (counter, chunk) in (0u32..).zip(db.chunks_mut(h_len)) {
        let mask = Sha256::new()
            .chain_update(h)
            .chain_update(counter.to_be_bytes())
            .finalize();
        for (b, m) in chunk.iter_mut().zip(mask.iter()) {
            *b ^= m;
        }
    }
    db[0] &= top_mask;
    let sep = db.iter().position(|&b| b != 0)?;
    if db[sep] != 0x01 {
        return None;
    }
    Some(db.len() - sep - 1)
}

fn elliptic_curve_oid() -> pkcs8::ObjectIdentifier {
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1")
}

fn pem_rfc7468_decode(pem: &str) -> Result<(String, Vec<u8>), spki::Error> {
    let (label, der) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
        .map_err(|e| spki::Error::Asn1(e.into()))?;
    Ok((label.to_owned(), der))
}

enum Signer {
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(rsa::RsaPrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A private key able to sign with its type's default scheme.
pub struct PrivateKey {
    signer: Signer,
    public: PublicKey,
}

impl PrivateKey {
    /// Loads a PEM private key: PKCS#8 (optionally encrypted, as
    /// `in-toto-run -P` takes), PKCS#1 RSA or SEC1 EC.
    pub fn from_pem(pem: &str, password: Option<&str>) -> Result<PrivateKey, KeyError> {
        let (label, der) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| KeyError::BadPrivatePem(e.to_string()))?;
        let der = match label {
            "ENCRYPTED PRIVATE KEY" => {
                let password = password.ok_or(KeyError::PasswordNeeded)?;
                let enc = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
                    .map_err(|e| KeyError::BadPrivatePem(e.to_string()))?;
                enc.decrypt(password)
                    .map_err(|_| KeyError::WrongPassword)?
                    .as_bytes()
                    .to_vec()
            }
            "PRIVATE KEY" => der,
            "RSA PRIVATE KEY" => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                let k = rsa::RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|e| KeyError::BadPrivatePem(e.to_string()))?;
                return Ok(PrivateKey::from_signer(Signer::Rsa(k)));
            }
            "EC PRIVATE KEY" => {
                if let Ok(k) = p256::SecretKey::from_sec1_der(&der) {
                    return Ok(PrivateKey::from_signer(Signer::P256(k.into())));
                }
                let k = p384::SecretKey::from_sec1_der(&der)
                    .map_err(|e| KeyError::BadPrivatePem(e.to_string()))?;
                return Ok(PrivateKey::from_signer(Signer::P384(k.into())));
            }
            other => {
                return Err(KeyError::BadPrivatePem(format!(
                    "unexpected PEM label {other:?}"
                )))
            }
        };
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| KeyError::BadPrivatePem(e.to_string()))?;
        let oid = info.algorithm.oid;
        let signer = if oid == ed25519_dalek::pkcs8::ALGORITHM_OID {
            Signer::Ed25519(
                ed25519_dalek::SigningKey::from_pkcs8_der(&der)
                    .map_err(|e| KeyError::BadPrivatePem(e.to_string()))?,
            )
        } else if oid == rsa::pkcs1::ALGORITHM_OID {
            Signer::Rsa(
                rsa::RsaPrivateKey::from_pkcs8_der(&der)
                    .map_err(|e| KeyError::BadPrivatePem(e.to_string()))?,
            )
        } else if oid == elliptic_curve_oid() {
            if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(&der) {
                Signer::P256(k)
            } else {
                Signer::P384(p384::ecdsa::SigningKey::from_pkcs8_der(&der).map_err(|_| {
                    KeyError::UnsupportedAlgorithm("ecdsa on a curve other than P-256/P-384".into())
                })?)
            }
        } else {
            return Err(KeyError::UnsupportedAlgorithm(oid.to_string()));
        };
        Ok(PrivateKey::from_signer(signer))
    }

    fn from_signer(signer: Signer) -> PrivateKey {
        let verifier = match &signer {
            Signer::Ed25519(k) => Verifier::Ed25519(k.verifying_key()),
            Signer::Rsa(k) => Verifier::Rsa(k.to_public_key()),
            Signer::P256(k) => Verifier::P256(*k.verifying_key()),
            Signer::P384(k) => Verifier::P384(*k.verifying_key()),
        };
        PrivateKey {
            signer,
            public: PublicKey::from_verifier(verifier),
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `msg` as securesystemslib's `CryptoSigner` does: Ed25519 raw,
    /// RSA-PSS with SHA-256 and a 32-byte salt, ECDSA with a DER signature.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        use signature::{RandomizedSigner, SignatureEncoding, Signer as _};
        Ok(match &self.signer {
            Signer::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            Signer::Rsa(k) => {
                let sk = rsa::pss::SigningKey::<Sha256>::new(k.clone());
                sk.try_sign_with_rng(&mut OsRng, msg)
                    .map_err(|e| KeyError::Signing(e.to_string()))?
                    .to_vec()
            }
            Signer::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().to_vec()
            }
            Signer::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_der().to_vec()
            }
        })
    }

    /// PKCS#8 PEM, encrypted (PBES2: PBKDF2-SHA256, AES-256-CBC) when a password is given.
    pub fn to_pkcs8_pem(&self, password: Option<&str>) -> Result<String, KeyError> {
        let doc = match &self.signer {
            // PKCS#8 v1 without the optional public key: pyca/cryptography
            // (the reference's loader) rejects ed25519-dalek's v2 encoding.
            Signer::Ed25519(k) => {
                let mut inner = vec![0x04, 0x20];
                inner.extend_from_slice(k.as_bytes());
                pkcs8::PrivateKeyInfo::new(ed25519_dalek::pkcs8::ALGORITHM_ID, &inner).try_into()
            }
            Signer::Rsa(k) => k.to_pkcs8_der(),
            Signer::P256(k) => k.to_pkcs8_der(),
            Signer::P384(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| KeyError::Signing(e.to_string()))?;
        let pem = match password {
            None => doc.to_pem("PRIVATE KEY", LineEnding::LF),
            Some(pw) => {
                let mut salt = [0u8; 16];
                let mut iv = [0u8; 16];
                rand_core::RngCore::fill_bytes(&mut OsRng, &mut salt);
                rand_core::RngCore::fill_bytes(&mut OsRng, &mut iv);
                let params =
                    pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(600_000, &salt, &iv)
                        .map_err(|e| KeyError::Signing(e.to_string()))?;
                let info = pkcs8::PrivateKeyInfo::try_from(doc.as_bytes())
                    .map_err(|e| KeyError::Signing(e.to_string()))?;
                info.encrypt_with_params(params, pw)
                    .map_err(|e| KeyError::Signing(e.to_string()))?
                    .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            }
        };
        pem.map(|p| p.to_string())
            .map_err(|e| KeyError::Signing(e.to_string()))
    }
}

/// Generates a new key of the given type (RSA: 3072 bits, as in-toto's docs use).
pub fn generate(keytype: KeyType, ecdsa_p384: bool) -> Result<PrivateKey, KeyError> {
    let signer = match keytype {
        KeyType::Ed25519 => Signer::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
        KeyType::Rsa => Signer::Rsa(
            rsa::RsaPrivateKey::new(&mut OsRng, 3072)
                .map_err(|e| KeyError::Signing(e.to_string()))?,
        ),
        KeyType::Ecdsa if ecdsa_p384 => Signer::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
        KeyType::Ecdsa => Signer::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
        KeyType::Gpg => {
            return Err(KeyError::UnsupportedAlgorithm(
                "gpg (GPG keys are made and used by GnuPG)".into(),
            ))
        }
    };
    Ok(PrivateKey::from_signer(signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RSA-PSS fixtures made with pyca/cryptography (the reference's library),
    // each over b"hello"; the bool is what `PSS.AUTO` verification says.
    const RSA2048_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxcdciz57PX8gHVR26EB6\n\
Kofw8NEjZrUBgR+/p5EpgrMGpAf45utjf0PWnCYpbtLplEtfJIludIC2gfXAMDmJ\n\
NhUOAeLs1udLTeoENTA+wvlxaNWYDWca25+XBCzMHjAVRtVo29VBE0kH7swC0lkY\n\
X31knKlrY+BVgnfo7g6Q/zplKFb3NY89YrV89KvkaNrR5j4P92/Rw+g8Bm2Sj8oW\n\
ZxLh59Mn78kB9tjYzdc/uUtoqxlocoqtxuNGIjoBaBJEt1ST3rPm+G8WD/+R6V7F\n\
60RJ+2vFnMikLRnv9M5CKxB6IGqwoED1NAB/YmzO1KRsXZavu/rR9/3WkEdpw/Ty\n\
CwIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const RSA2048_SIGS: &[(&str, bool, &str)] = &[
        ("salt32", true, "55c4e01cb22fa3fc869080eb773bd805f77a701492103c489afe5b6036d42340a70baf221d535ff1bd9b9b1cd2265c907e03770f960d0929bd06e85dad282b331e40ff1c5d57e0daac8b4a0eed336736a17b269e03ef40ce7f7cd62a50bf7eb0d551f26f12b316d35382062e338563a569aa02ab51252b86c1c44fe2e9f1412bcbca9bf85061317cf47c2999017051475e00b9d02109c673e6c9db706eca7942fc0ea0416d48bcc51a82f4e090383f5d146b177f4ff9ab74039981493d27cd3d77fed847a62d275dfd2ebab8a75de098ad44ed94f31ba7f580cca0a2af6336a9797db1929e8f73021b8b6854d53059a992d8b4e7db0d021747bea3e61cc795bd"),
        ("salt0", true, "4a07981249bd3fd567a0ab279452dd02cd44ef6ff0cb1344b9089f8c2c9d9770b581dbcf822f52478748f9518a96b11a52551df1557e45eeea51dfda4a8a86ea69c3636647174b9fcd38392920b12d57e1d32f78dd9314c38dacad54dfda0feb6c6bf3136c02cae88ab348494af710dfb20188f38df5d26a40ce242bc8eb9d256f0937f5adeb7f945f2fbacbf8552ad55763a2cf7ba498840a6df0fa5a6368eacb9ba9f2b74c4b26616904e5d6f90c33585e9874b0f84754372f33d4daa6632a25cdc10ac91732402ab7aa9ee1224458850206c13d204fc2cb374b8a8132cdb70982d8daaf01f91d97eb195ce73b121240a40cb551495ddea4aed82b95e12ad6"),
        ("saltmax", true, "45f9e97113b1a1b5038a7bac1eea8612404bae21385e2a1df9d95c8d8bc02d0a4873092e053b1c9aa652b1361d9972bc9f40ce4548aaf73df8d4c5ae287550656c08cb74cd39f35670ac2c5372c3d4d5c98e16f84354723d3e876b62419fb80411313ba7be0d3cc77808229ff6f05c2bce051fb0e69722923cb22d4d5159f1ac292d9ac6c8ea51fb1aaa42928eaa490f670905db14c50c2b6fd040ce30a585e8e367ce816802e9d107884b12f82cf408b4e7219b2eb55ac42761b7661029b598bee341ee1b2bb88049beb541e9159fb027e44e7a130c94f9d38f1848fd3638656a1d95db43afe5a2b4f8712be2f6e08cb6b907a9d8dcc9a0c0a42ae5b4695c86"),
        ("mgf1sha1", false, "7b24d1d9310f5e44a90cf0778c6587d1c4a2096752d1d6a6699455e96770f0a0db8c6be51b8d064cc62a680b18d43e8b3c035cd0b6e05081161d601dc17a2860c9a919a58303aeaa06e5339354de384d627d74685bce58e7b48b08bdb01dfac863ccd02742f4c3c9ed4270693fa2d68605240236c6011dedc85c146020711f731aa7be58349911a11a558382b729cc8dfcd131069305f39895891508d84aad1397de1114fd35e67dbfa5a517b3d16988bd44d461a9118b8b20271a8d8e03c5bbdfc2b3d3a40d327db677234b90839a44acd457a96ece99f61f9fa3b5746fc133e576be5021c9dc08367a49461c5b8a7fcc1f83cc9d3764fa1f887fb97c7a0dd0"),
        ("pkcs1v15", false, "158db1db817bff1bc36e11ac05bc4c064e3eee4f516191271b5c46747cb822fe11894b0b3d6cc8960fe8cc759201973897f13c50d0f21f550cdb8be8412ba95a45edfd49381baf34e1ed0dfce50a4d76e47ba89abe2629274405eeaf455825d203eeb7521539a4bba63dd564cd8c0e1f5a5de039ebcb35b9a29e30df722fe97b27cf4de2010671986bb9a45812e26601f55dd92f6765d8609cb3d8194e63386d2694bc8e5e389b428d18aae2d1dcb8977052ab9034405e6394d95d8e05d3022c22de326f3e256fb43f680459856553fdd001504b1dd61089acbfe3518edf6352cf9053910c107ed6e564b59bc4c9ae4c67692e466b98b0bc6489cfb7b6054904"),
    ];
    // A 1025-bit modulus: the encoded message is one octet shorter than the
    // key, and that leading octet must be zero (OpenSSL refuses `lead1`).
    const RSA1025_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQGNu82uPIQGHcWXdB96K4BMP/sI\n\
pYPV6HQ7H3++h1O1x1gdg8/2a6YT35lusAVBT+oGhqVX6P2N+y9nTgmDSaXTqNbf\n\
0o+BusIOtkSelujjUICzX/eb/N5Ct6RjEgIXkcLLvvTSzQ69p8/wUALFyGLIWRx2\n\
m7gRSkmpam6gOHBcZwIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const RSA1025_SIGS: &[(&str, bool, &str)] = &[
        ("good", true, "00d5c33703de4b7e8eeea2c56d87a8be3b87a52e363c63a802b96539e065b087912116f6f2224a803869a8b65396531cbd044d6007f67b0c724cd3ae40b7530c8e9f323e8a9ba8cff0110608dc46e2da7ea0378ba2b5b223df98f387830e2c5623aa5c5d77fb1f738d14ebf619ddeb05f0225783e2d936bf3402ee12496a3695fe"),
        ("lead1", false, "0185d645e6025886766858668c33178f92a5e8f95afff31add3e54c60df1a30b894e1f1dadf27919fc67224ff300ac57d8f3281df4bda6b401ef9b33920176414ed95c66ce0063f960dee904013e423a364321e3cc8c5dda9ee290476cc8db69ac8fb9e55f8f530c81e0300a95854729cb2a18bf266a4d0b3bcd0d89d8d60c64bf"),
    ];

    #[test]
    fn rsa_pss_accepts_any_salt_length_like_pss_auto() {
        for (pem, sigs) in [(RSA2048_PEM, RSA2048_SIGS), (RSA1025_PEM, RSA1025_SIGS)] {
            let k = PublicKey::from_pem(pem).unwrap();
            assert_eq!(k.scheme(), Scheme::RsassaPssSha256);
            for (name, want, hex_sig) in sigs {
                let sig = hex::decode(hex_sig).unwrap();
                assert_eq!(k.verify(b"hello", &sig).is_ok(), *want, "{name}");
                // Never over another message.
                assert!(k.verify(b"hellp", &sig).is_err(), "{name}");
                // Nor with a bit flipped in the signature.
                let mut bad = sig.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(k.verify(b"hello", &bad).is_err(), "{name}");
            }
        }
    }

    #[test]
    fn rsa_pss_salt_lengths_from_rsa_crate_signer() {
        use signature::{RandomizedSigner, SignatureEncoding};
        let PrivateKey {
            signer: Signer::Rsa(sk),
            public,
        } = generate(KeyType::Rsa, false).unwrap()
        else {
            panic!("not an RSA key");
        };
        let em_len = (rsa::traits::PublicKeyParts::n(&sk).bits() - 1).div_ceil(8);
        let max = em_len - 32 - 2;
        for salt_len in [0, 1, 20, 32, 64, max] {
            let signer = rsa::pss::SigningKey::<Sha256>::new_with_salt_len(sk.clone(), salt_len);
            let sig = signer.sign_with_rng(&mut OsRng, b"msg").to_vec();
            assert_eq!(pss_recover_salt_len(sk.as_ref(), &sig), Some(salt_len));
            public.verify(b"msg", &sig).unwrap();
            assert!(public.verify(b"msh", &sig).is_err());
        }
        // Truncated or over-long signatures are refused.
        let sig = rsa::pss::SigningKey::<Sha256>::new(sk.clone())
            .sign_with_rng(&mut OsRng, b"msg")
            .to_vec();
        assert!(public.verify(b"msg", &sig[1..]).is_err());
        let mut long = vec![0u8];
        long.extend_from_slice(&sig);
        assert!(public.verify(b"msg", &long).is_err());
    }

    #[test]
    fn sign_verify_roundtrip_every_type() {
        for (kt, p384) in [
            (KeyType::Ed25519, false),
            (KeyType::Ecdsa, false),
            (KeyType::Ecdsa, true),
        ] {
            let k = generate(kt, p384).unwrap();
            let sig = k.sign(b"hello").unwrap();
            k.public().verify(b"hello", &sig).unwrap();
            assert!(k.public().verify(b"hellp", &sig).is_err());
            let pem = k.public().to_pem();
            let again = PublicKey::from_pem(&pem).unwrap();
            assert_eq!(again.keyid(), k.public().keyid());
            let dict = k.public().to_dict();
            let from_dict =
                PublicKey::from_dict(dict.as_object().unwrap(), Some(k.public().keyid().as_str()))
                    .unwrap();
            assert_eq!(from_dict.keyid(), k.public().keyid());
        }
    }

    #[test]
    fn claimed_keyid_must_match() {
        let k = generate(KeyType::Ed25519, false).unwrap();
        let dict = k.public().to_dict();
        let err = PublicKey::from_dict(dict.as_object().unwrap(), Some("00ff")).unwrap_err();
        assert!(matches!(err, KeyError::KeyIdMismatch { .. }));
    }

    #[test]
    fn encrypted_pkcs8_roundtrip() {
        let k = generate(KeyType::Ed25519, false).unwrap();
        let pem = k.to_pkcs8_pem(Some("pw")).unwrap();
        assert!(matches!(
            PrivateKey::from_pem(&pem, None),
            Err(KeyError::PasswordNeeded)
        ));
        assert!(matches!(
            PrivateKey::from_pem(&pem, Some("nope")),
            Err(KeyError::WrongPassword)
        ));
        let back = PrivateKey::from_pem(&pem, Some("pw")).unwrap();
        assert_eq!(back.public().keyid(), k.public().keyid());
    }
}
