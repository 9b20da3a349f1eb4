//! in-toto metadata as the reference (in-toto 3.1.0) models it: layouts, steps,
//! inspections, links, artifact rules, and the two signature envelopes.
//!
//! Parsing follows the reference's `Layout.read`/`Link.read`: unknown fields are
//! dropped, missing optional fields take the reference's defaults, and the
//! canonical (signed) form is re-derived from the typed values, so a signature
//! covers exactly what the reference would sign.

mod envelope;
mod fast;
mod layout;
mod link;
mod rule;

pub use envelope::{
    write_unsigned_link_file, Envelope, EnvelopeKind, Payload, Signature, SignatureProblem,
    DSSE_PAYLOAD_TYPE,
};
pub use layout::{format_expiry, parse_expiry, Inspection, Layout, Step};
pub use link::{ArtifactMap, HashDict, Link};
pub use rule::{ArtifactRule, DestType, RuleError, RuleKind};

use serde_json::{Map, Value};

/// Malformed metadata: `path` locates the field (`signed.steps[1].pubkeys[0]`).
#[derive(Debug, thiserror::Error)]
#[error("field `{path}`: {problem}")]
pub struct FormatError {
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("expected {0}")]
    WrongType(&'static str),
    #[error("is required")]
    Missing,
    #[error("{0:?} is not a hex string")]
    NotHex(String),
    #[error("{0:?} is not a date of the form YYYY-MM-DDTHH:MM:SSZ")]
    BadDate(String),
    #[error("`_type` is {found:?}, expected {expected:?}")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    #[error("name {0:?} is used twice (step and inspection names must be unique)")]
    DuplicateName(String),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Key(#[from] crate::crypto::KeyError),
    #[error("not a recognised envelope (neither a Metablock with `signed` nor DSSE with payloadType {DSSE_PAYLOAD_TYPE:?})")]
    UnknownEnvelope,
    #[error("base64 payload does not decode")]
    BadBase64,
    #[error("payload is not JSON: {0}")]
    BadPayload(String),
    #[error("keyid {0:?} has two signatures")]
    DuplicateSignature(String),
}

pub(crate) fn err(path: impl Into<String>, problem: Problem) -> FormatError {
    FormatError {
        path: path.into(),
        problem,
    }
}

/// Typed access to an object's fields with reference defaults and paths in errors.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(value: &'a Value, path: &str) -> Result<Fields<'a>, FormatError> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                path: path.to_owned(),
            }),
            _ => Err(err(path, Problem::WrongType("an object"))),
        }
    }
    pub(crate) fn at(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }
    /// `None` when the field is absent or null (Python's `kwargs.get` default
    /// also applies to an explicit `null` only for `expires`; elsewhere a null
    /// fails the type check, as here).
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }
    pub(crate) fn string(&self, field: &str) -> Result<String, FormatError> {
        match self.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            None => Err(err(self.at(field), Problem::Missing)),
            Some(_) => Err(err(self.at(field), Problem::WrongType("a string"))),
        }
    }
    pub(crate) fn string_or(&self, field: &str, default: &str) -> Result<String, FormatError> {
        match self.get(field) {
            None => Ok(default.to_owned()),
            Some(_) => self.string(field),
        }
    }
    pub(crate) fn string_list(&self, field: &str) -> Result<Vec<String>, FormatError> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(v) => string_list(v, &self.at(field)),
        }
    }
    pub(crate) fn object(&self, field: &str) -> Result<Map<String, Value>, FormatError> {
        Ok(self.object_ref(field)?.cloned().unwrap_or_default())
    }
    pub(crate) fn object_ref(
        &self,
        field: &str,
    ) -> Result<Option<&'a Map<String, Value>>, FormatError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(err(self.at(field), Problem::WrongType("an object"))),
        }
    }
    pub(crate) fn list(&self, field: &str) -> Result<&'a [Value], FormatError> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(v)) => Ok(v),
            Some(_) => Err(err(self.at(field), Problem::WrongType("a list"))),
        }
    }
}

pub(crate) fn string_list(v: &Value, path: &str) -> Result<Vec<String>, FormatError> {
    let Value::Array(items) = v else {
        return Err(err(path, Problem::WrongType("a list of strings")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            _ => Err(err(format!("{path}[{i}]"), Problem::WrongType("a string"))),
        })
        .collect()
}

pub(crate) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod proptests;
