//! The two signature envelopes: the classic Metablock (`signed` +
//! `signatures`, signatures over canonical JSON) and DSSE (signatures over
//! PAE(payloadType, payload)).

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{err, fast, is_hex, FormatError, Layout, Link, Problem};
use crate::cjson;
use crate::crypto::gpg::GpgProblem;
use crate::crypto::{KeyError, PrivateKey, PublicKey};
use crate::json::{parse_strict, to_python_json, write_py, JsonLimits, PyContainer, PyStyle};

pub const DSSE_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    Metablock,
    Dsse,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Link(Link),
    Layout(Layout),
}

impl Payload {
    pub fn to_value(&self) -> Value {
        match self {
            Payload::Link(l) => l.to_value(),
            Payload::Layout(l) => l.to_value(),
        }
    }
    /// The payload as Python's `json.dumps(..., sort_keys=True)` writes it
    /// at nesting `depth` (links without a value tree: they can be large).
    pub fn write_py(&self, style: PyStyle, depth: usize, out: &mut String) {
        match self {
            Payload::Link(l) => l.write_py(style, depth, out),
            Payload::Layout(l) => write_py(&l.to_value(), style, depth, out),
        }
    }
    pub fn kind_name(&self) -> &'static str {
        match self {
            Payload::Link(_) => "link",
            Payload::Layout(_) => "layout",
        }
    }
}

/// One signature as found in the envelope. `keyid` is only a hint for which
/// key to try: a signature counts only once it verifies under a trusted key.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub keyid: String,
    /// The decoded `sig`; `None` for a GPG signature dict, which carries
    /// `signature` and `other_headers` (hex, kept verbatim in `extra`) instead.
    pub sig: Option<Vec<u8>>,
    /// Unrecognised fields, GPG signatures' `signature`/`other_headers` among them.
    pub extra: Map<String, Value>,
}

impl Signature {
    /// A GPG signature dict, as in-toto tells them apart: it has both
    /// `signature` and `other_headers` (whether or not it also has `sig`).
    pub fn is_gpg(&self) -> bool {
        self.extra.contains_key("signature") && self.extra.contains_key("other_headers")
    }
}

/// Signed metadata: an unverified payload, its signatures, and the exact
/// bytes those signatures must cover.
#[derive(Debug, Clone)]
pub struct Envelope {
    kind: EnvelopeKind,
    payload: Payload,
    signatures: Vec<Signature>,
    /// Canonical JSON of the payload (Metablock) or PAE(type, payload) (DSSE).
    signed_bytes: Vec<u8>,
    /// DSSE only: the payload bytes as carried.
    dsse_payload: Vec<u8>,
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn payload_from_value(v: &Value, path: &str) -> Result<Payload, FormatError> {
    match v.get("_type") {
        Some(Value::String(t)) if t == "link" => Ok(Payload::Link(Link::from_value(v, path)?)),
        Some(Value::String(t)) if t == "layout" => {
            Ok(Payload::Layout(Layout::from_value(v, path)?))
        }
        Some(Value::String(t)) => Err(err(
            format!("{path}._type"),
            Problem::WrongKind {
                found: t.clone(),
                expected: "link\" or \"layout",
            },
        )),
        _ => Err(err(format!("{path}._type"), Problem::Missing)),
    }
}

impl Envelope {
    /// Parses an envelope file. Nothing here is trusted: see `verify`.
    pub fn parse(bytes: &[u8], limits: JsonLimits) -> Result<Envelope, FormatError> {
        // Links go straight to typed values when they are plainly well
        // formed; anything else (and every refusal) takes the general path.
        if let Some((link, sigs)) = fast::metablock_link(bytes, limits) {
            if let Ok(env) = Envelope::metablock(Payload::Link(link), Some(&sigs)) {
                return Ok(env);
            }
        }
        Envelope::parse_general(bytes, limits)
    }

    /// [`Envelope::parse`] through a `Value` tree, for every kind of document:
    /// without the fast path for links, which must agree with it (the
    /// `fast_path` fuzz target and this module's tests compare the two).
    pub fn parse_general(bytes: &[u8], limits: JsonLimits) -> Result<Envelope, FormatError> {
        let doc = parse_strict(bytes, limits)
            .map_err(|e| err("(document)", Problem::BadPayload(e.to_string())))?;
        let Value::Object(top) = &doc else {
            return Err(err("(document)", Problem::WrongType("an object")));
        };
        if top.contains_key("payload") {
            if top.get("payloadType").and_then(Value::as_str) != Some(DSSE_PAYLOAD_TYPE) {
                return Err(err("payloadType", Problem::UnknownEnvelope));
            }
            let payload_b64 = top
                .get("payload")
                .and_then(Value::as_str)
                .ok_or_else(|| err("payload", Problem::WrongType("a base64 string")))?;
            let dsse_payload =
                b64_decode(payload_b64).ok_or_else(|| err("payload", Problem::BadBase64))?;
            let payload = match fast::link(&dsse_payload, limits) {
                Some(link) => Payload::Link(link),
                None => {
                    let inner = parse_strict(&dsse_payload, limits)
                        .map_err(|e| err("payload", Problem::BadPayload(e.to_string())))?;
                    payload_from_value(&inner, "payload")?
                }
            };
            let mut signatures: Vec<Signature> = Vec::new();
            let sigs = match top.get("signatures") {
                Some(Value::Array(s)) => s,
                _ => return Err(err("signatures", Problem::WrongType("a list"))),
            };
            for (i, s) in sigs.iter().enumerate() {
                let at = format!("signatures[{i}]");
                // DSSE signatures must have `sig` (the reference's DSSE
                // envelopes carry no GPG signatures).
                let sig =
                    parse_signature(s, &at, false, |v| b64_decode(v).ok_or(Problem::BadBase64))?;
                if signatures.iter().any(|x| x.keyid == sig.keyid) {
                    return Err(err(at, Problem::DuplicateSignature(sig.keyid)));
                }
                signatures.push(sig);
            }
            Ok(Envelope {
                kind: EnvelopeKind::Dsse,
                signed_bytes: pae(DSSE_PAYLOAD_TYPE, &dsse_payload),
                payload,
                signatures,
                dsse_payload,
            })
        } else if let Some(signed) = top.get("signed") {
            let payload = payload_from_value(signed, "signed")?;
            Envelope::metablock(payload, top.get("signatures"))
        } else {
            Err(err("(document)", Problem::UnknownEnvelope))
        }
    }

    /// [`Envelope::parse`] of bytes it may free early: a large link's file
    /// is dropped once its typed fields and signatures are read, before its
    /// canonical bytes (about as large) are made, so the two are never in
    /// memory together (fresh pages cost more than writing them here).
    /// The result is [`Envelope::parse`]'s: the fast path's link is the
    /// general path's, and both end in the same [`Envelope::metablock`].
    pub fn parse_owned(bytes: Vec<u8>, limits: JsonLimits) -> Result<Envelope, FormatError> {
        if let Some((link, sigs)) = fast::metablock_link(&bytes, limits) {
            if let Ok(signatures) = Envelope::metablock_signatures(Some(&sigs)) {
                drop(bytes);
                return Envelope::metablock_of(Payload::Link(link), signatures);
            }
        }
        Envelope::parse_general(&bytes, limits)
    }

    /// A Metablock around `payload`, with its `signatures` field parsed.
    pub(super) fn metablock(
        payload: Payload,
        signatures: Option<&Value>,
    ) -> Result<Envelope, FormatError> {
        let signatures = Envelope::metablock_signatures(signatures)?;
        Envelope::metablock_of(payload, signatures)
    }

    fn metablock_of(payload: Payload, signatures: Vec<Signature>) -> Result<Envelope, FormatError> {
        Envelope::assemble(EnvelopeKind::Metablock, payload, signatures)
            .map_err(|e| err("signed", Problem::BadPayload(e.to_string())))
    }

    /// A Metablock's `signatures` field.
    fn metablock_signatures(signatures: Option<&Value>) -> Result<Vec<Signature>, FormatError> {
        Ok(match signatures {
            None => Vec::new(),
            Some(Value::Array(s)) => s
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    parse_signature(s, &format!("signatures[{i}]"), true, |v| {
                        if is_hex(v) || v.is_empty() {
                            hex::decode(v).map_err(|_| Problem::NotHex(v.into()))
                        } else {
                            Err(Problem::NotHex(v.into()))
                        }
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err("signatures", Problem::WrongType("a list"))),
        })
    }

    fn assemble(
        kind: EnvelopeKind,
        payload: Payload,
        signatures: Vec<Signature>,
    ) -> Result<Envelope, cjson::CanonicalError> {
        let (signed_bytes, dsse_payload) = match (kind, &payload) {
            // Opaque fields (byproducts, environment) may hold floats, which
            // canonical JSON cannot encode: such a Metablock cannot be signed.
            (EnvelopeKind::Metablock, Payload::Link(l)) => (l.canonical_bytes()?, Vec::new()),
            (EnvelopeKind::Metablock, Payload::Layout(l)) => {
                (cjson::encode(&l.to_value())?, Vec::new())
            }
            (EnvelopeKind::Dsse, p) => {
                let mut json = String::new();
                p.write_py(PyStyle::Default, 0, &mut json);
                let p = json.into_bytes();
                (pae(DSSE_PAYLOAD_TYPE, &p), p)
            }
        };
        Ok(Envelope {
            kind,
            payload,
            signatures,
            signed_bytes,
            dsse_payload,
        })
    }

    /// A new, unsigned envelope around `payload`, serialised as the reference
    /// does. Fails only for a Metablock whose opaque fields hold a float.
    pub fn new(kind: EnvelopeKind, payload: Payload) -> Result<Envelope, cjson::CanonicalError> {
        Envelope::assemble(kind, payload, Vec::new())
    }

    pub fn kind(&self) -> EnvelopeKind {
        self.kind
    }
    /// The payload, not yet verified.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
    /// The payload, not yet verified, by value.
    pub fn into_payload(self) -> Payload {
        self.payload
    }
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed_bytes
    }

    /// Drops every signature (as `in-toto-sign` does unless `--append`).
    pub fn clear_signatures(&mut self) {
        self.signatures.clear();
    }

    /// Adds a signature by `key` over the signed bytes. DSSE keeps one
    /// signature per key id (a re-sign replaces), as securesystemslib does.
    pub fn sign(&mut self, key: &PrivateKey) -> Result<&Signature, KeyError> {
        let sig = key.sign(&self.signed_bytes)?;
        Ok(self.add_signature(key, sig))
    }

    /// [`Envelope::sign`], then [`Envelope::to_file_bytes`]. A Metablock's
    /// payload is rendered while the signature is computed: on links of tens
    /// of thousands of artifacts each takes milliseconds.
    pub fn sign_to_file_bytes(&mut self, key: &PrivateKey) -> Result<Vec<u8>, KeyError> {
        if self.kind != EnvelopeKind::Metablock {
            self.sign(key)?;
            return Ok(self.to_file_bytes());
        }
        let (sig, signed) = rayon::join(
            || key.sign(&self.signed_bytes),
            || {
                let mut s = String::new();
                self.payload.write_py(PyStyle::Indent1, 1, &mut s);
                s
            },
        );
        self.add_signature(key, sig?);
        Ok(self.metablock_file_bytes(Some(&signed)))
    }

    fn add_signature(&mut self, key: &PrivateKey, sig: Vec<u8>) -> &Signature {
        let keyid = key.public().keyid().as_str().to_owned();
        if self.kind == EnvelopeKind::Dsse {
            self.signatures.retain(|s| s.keyid != keyid);
        }
        self.signatures.push(Signature {
            keyid,
            sig: Some(sig),
            extra: Map::new(),
        });
        self.signatures.last().expect("just pushed")
    }

    /// Checks the signature `key` made, the way the reference picks it:
    /// Metablock: the first signature whose keyid is the key's or (GPG) one
    /// of its subkeys'; DSSE: any signature with that keyid (there is at
    /// most one). GPG signatures are checked as securesystemslib does,
    /// including the (sub)key's validity period against the current time.
    pub fn check_signature(&self, key: &PublicKey) -> Result<(), SignatureProblem> {
        if self.kind == EnvelopeKind::Dsse {
            if key.gpg().is_some() {
                return Err(SignatureProblem::GpgInDsse);
            }
            let Some(sig) = self
                .signatures
                .iter()
                .find(|s| s.keyid == key.keyid().as_str())
            else {
                return Err(SignatureProblem::Missing);
            };
            let bytes = sig.sig.as_deref().ok_or(SignatureProblem::Invalid)?;
            return key
                .verify(&self.signed_bytes, bytes)
                .map_err(|_| SignatureProblem::Invalid);
        }
        let Some(sig) = self
            .signatures
            .iter()
            .find(|s| key.matches_signature_keyid(&s.keyid))
        else {
            return Err(SignatureProblem::Missing);
        };
        if sig.is_gpg() {
            let gpg = key.gpg().ok_or(SignatureProblem::Invalid)?;
            let field = |f: &str| sig.extra.get(f).and_then(Value::as_str);
            let (Some(signature), Some(headers)) = (field("signature"), field("other_headers"))
            else {
                return Err(SignatureProblem::Invalid);
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            return gpg
                .verify(&sig.keyid, signature, headers, &self.signed_bytes, now)
                .map_err(|p| match p {
                    GpgProblem::Expired => SignatureProblem::KeyExpired,
                    GpgProblem::Unsupported => SignatureProblem::GpgUnsupported,
                    GpgProblem::Invalid => SignatureProblem::Invalid,
                });
        }
        let bytes = sig.sig.as_deref().ok_or(SignatureProblem::Invalid)?;
        key.verify(&self.signed_bytes, bytes)
            .map_err(|_| SignatureProblem::Invalid)
    }

    /// The signature dicts, with `sig` encoded as the envelope kind wants
    /// (hex for Metablock, base64 for DSSE).
    fn signature_values(&self, encode: impl Fn(&[u8]) -> String) -> Value {
        let sigs = self.signatures.iter().map(|s| {
            let mut m = s.extra.clone();
            m.insert("keyid".into(), json!(s.keyid));
            if let Some(sig) = &s.sig {
                m.insert("sig".into(), json!(encode(sig)));
            }
            Value::Object(m)
        });
        Value::Array(sigs.collect())
    }

    /// A Metablock file, with `signed` already rendered (at depth 1) if given.
    fn metablock_file_bytes(&self, signed: Option<&str>) -> Vec<u8> {
        let style = PyStyle::Indent1;
        let mut out = String::with_capacity(signed.map_or(0, str::len) + 1024);
        let mut doc = PyContainer::object(&mut out, style, 0);
        write_py(
            &self.signature_values(|b| hex::encode(b)),
            style,
            1,
            doc.key("signatures"),
        );
        match signed {
            Some(s) => doc.key("signed").push_str(s),
            None => self.payload.write_py(style, 1, doc.key("signed")),
        }
        doc.end();
        out.into_bytes()
    }

    /// The file as the reference writes it (no trailing newline).
    pub fn to_file_bytes(&self) -> Vec<u8> {
        match self.kind {
            EnvelopeKind::Metablock => self.metablock_file_bytes(None),
            EnvelopeKind::Dsse => {
                use base64::engine::general_purpose::STANDARD;
                let doc = json!({
                    "payload": STANDARD.encode(&self.dsse_payload),
                    "payloadType": DSSE_PAYLOAD_TYPE,
                    "signatures": self.signature_values(|b| STANDARD.encode(b)),
                });
                to_python_json(&doc, PyStyle::Default).into_bytes()
            }
        }
    }
}

/// Writes the file the reference writes for an unsigned link
/// (`Metablock(signed=link).dump(path)`, as `in-toto-verify` leaves each
/// inspection's link behind) to `w` in chunks of about 64 KiB, without
/// making its canonical bytes or holding the whole text.
pub fn write_unsigned_link_file(link: &Link, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 16;
    let style = PyStyle::Indent1;
    let mut out = String::with_capacity(CHUNK + 1024);
    let mut flush = |s: &mut String| -> std::io::Result<()> {
        if s.len() >= CHUNK {
            w.write_all(s.as_bytes())?;
            s.clear();
        }
        Ok(())
    };
    let mut doc = PyContainer::object(&mut out, style, 0);
    write_py(&Value::Array(Vec::new()), style, 1, doc.key("signatures"));
    link.write_py_flushing(style, 1, doc.key("signed"), &mut flush)?;
    doc.end();
    w.write_all(out.as_bytes())
}

/// Why a key's signature on an envelope does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("no signature by this key")]
    Missing,
    #[error("signature does not verify")]
    Invalid,
    #[error("the GPG key's type is not supported (only RSA and Ed25519 GPG keys verify here)")]
    GpgUnsupported,
    #[error("the GPG key has expired (creation time + validity period is past)")]
    KeyExpired,
    #[error("a GPG key cannot verify a DSSE envelope (in-toto signs only Metablocks with GPG)")]
    GpgInDsse,
}

fn parse_signature(
    v: &Value,
    at: &str,
    allow_gpg: bool,
    decode: impl Fn(&str) -> Result<Vec<u8>, Problem>,
) -> Result<Signature, FormatError> {
    let Value::Object(m) = v else {
        return Err(err(at, Problem::WrongType("a signature object")));
    };
    let keyid = match m.get("keyid") {
        Some(Value::String(k)) => k.clone(),
        _ => return Err(err(format!("{at}.keyid"), Problem::WrongType("a string"))),
    };
    let mut extra = m.clone();
    extra.remove("keyid");
    let sig = match extra.remove("sig") {
        Some(Value::String(s)) => Some(decode(&s).map_err(|p| err(format!("{at}.sig"), p))?),
        // GPG signature dicts have `signature` + `other_headers` instead of
        // `sig`; like in-toto, their values are only looked at when verifying.
        None if allow_gpg && m.contains_key("signature") && m.contains_key("other_headers") => None,
        _ => return Err(err(format!("{at}.sig"), Problem::WrongType("a string"))),
    };
    Ok(Signature { keyid, sig, extra })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_value() -> Value {
        json!({"_type": "link", "name": "x", "command": [], "materials": {}, "products": {},
               "byproducts": {}, "environment": {}})
    }

    #[test]
    fn gpg_signature_dicts_keep_their_shape() {
        let sig = json!({"keyid": "aa", "other_headers": "0400", "signature": "00ff"});
        let doc = json!({"signatures": [sig], "signed": link_value()});
        let bytes = to_python_json(&doc, PyStyle::Indent1).into_bytes();
        let env = Envelope::parse(&bytes, JsonLimits::default()).unwrap();
        assert!(env.signatures()[0].is_gpg());
        assert_eq!(env.signatures()[0].sig, None);
        // No `sig` is added on the way out.
        assert_eq!(env.to_file_bytes(), bytes);
        // A non-GPG key does not verify a GPG signature.
        let key = crate::crypto::generate(crate::crypto::KeyType::Ed25519, false).unwrap();
        assert_eq!(
            env.check_signature(key.public()),
            Err(SignatureProblem::Missing)
        );
    }

    #[test]
    fn dsse_signatures_need_sig() {
        use base64::engine::general_purpose::STANDARD;
        let payload = STANDARD.encode(link_value().to_string());
        let doc = json!({"payload": payload, "payloadType": DSSE_PAYLOAD_TYPE,
            "signatures": [{"keyid": "aa", "other_headers": "0400", "signature": "00ff"}]});
        assert!(Envelope::parse(doc.to_string().as_bytes(), JsonLimits::default()).is_err());
    }
}
