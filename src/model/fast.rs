//! A fast path for the one large kind of metadata: links. They can list tens
//! of thousands of artifacts, and going bytes → `Value` tree → [`Link`]
//! builds and frees a tree several times the size of the file.
//!
//! Here a link is deserialised straight into its typed fields. The path is
//! deliberately narrow: it accepts only a well-formed link with exactly the
//! fields in-toto writes, and gives up (`None`) on anything else — a
//! duplicate key, an unknown field, a wrong type, a non-hex digest, a
//! document over the size cap. The caller then parses the same bytes the
//! general way, which either accepts it or says precisely what is wrong. So
//! this path never decides a refusal, and whatever it accepts the general
//! path accepts too, with the same result (tested below and by the
//! model's property tests).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::is_hex;
use super::link::{ArtifactMap, HashDict, Link};
use crate::json::{JsonLimits, StrictSeed};

/// Levels the typed part takes (document, `signed`, the opaque field); the
/// opaque fields get what is left of the cap, minus one to spare.
const TYPED_LEVELS: usize = 4;

/// Artifacts a document of `len` bytes could list in one map, about: an
/// entry with a SHA-256 takes 80 bytes or more in any way a link is
/// written. Each map's vector starts with room for these, rather than
/// doubling from nothing: every doubling of a megabyte vector is a copy into
/// fresh memory the kernel must first clear.
fn artifacts_hint(len: usize) -> usize {
    len / 100
}

/// A Metablock whose payload is a link: the link and the raw `signatures`.
pub(super) fn metablock_link(bytes: &[u8], limits: JsonLimits) -> Option<(Link, Value)> {
    let depth = limits.max_depth.checked_sub(TYPED_LEVELS)?;
    let hint = artifacts_hint(bytes.len());
    let (link, sigs) = parse(bytes, limits, MetablockSeed { depth, hint })?;
    Some((link?, sigs?))
}

/// A bare link document (a DSSE payload).
pub(super) fn link(bytes: &[u8], limits: JsonLimits) -> Option<Link> {
    let depth = limits.max_depth.checked_sub(TYPED_LEVELS)?;
    let hint = artifacts_hint(bytes.len());
    parse(bytes, limits, LinkSeed { depth, hint })
}

fn parse<T, S>(bytes: &[u8], limits: JsonLimits, seed: S) -> Option<T>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    if bytes.len() > limits.max_bytes {
        return None;
    }
    // Checked as UTF-8 once, in bulk, rather than string by string.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let v = seed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

fn give_up<E: de::Error>(why: &str) -> E {
    E::custom(format_args!("not on the fast path: {why}"))
}

/// `{"signatures": [...], "signed": {link}}`, each exactly once.
struct MetablockSeed {
    depth: usize,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for MetablockSeed {
    type Value = (Option<Link>, Option<Value>);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetablockSeed {
    type Value = (Option<Link>, Option<Value>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Metablock")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut link, mut sigs) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "signed" if link.is_none() => {
                    link = Some(map.next_value_seed(LinkSeed {
                        depth: self.depth,
                        hint: self.hint,
                    })?)
                }
                "signatures" if sigs.is_none() => {
                    sigs = Some(map.next_value_seed(StrictSeed::new(self.depth))?)
                }
                _ => return Err(give_up("field")),
            }
        }
        Ok((link, sigs))
    }
}

/// The link object with all seven fields in-toto writes, nothing else.
struct LinkSeed {
    depth: usize,
    /// Room to make for each artifact map ([`artifacts_hint`]).
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for LinkSeed {
    type Value = Link;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Link, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LinkSeed {
    type Value = Link;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a link")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Link, A::Error> {
        let mut link = Link::default();
        let mut seen = [false; 7];
        while let Some(key) = map.next_key::<String>()? {
            let i = match key.as_str() {
                "_type" => 0,
                "name" => 1,
                "command" => 2,
                "materials" => 3,
                "products" => 4,
                "byproducts" => 5,
                "environment" => 6,
                _ => return Err(give_up("field")),
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(give_up("duplicate field"));
            }
            match i {
                0 => {
                    if map.next_value::<String>()? != "link" {
                        return Err(give_up("not a link"));
                    }
                }
                1 => link.name = map.next_value()?,
                2 => link.command = map.next_value()?,
                3 => link.materials = map.next_value_seed(ArtifactsSeed(self.hint))?,
                4 => link.products = map.next_value_seed(ArtifactsSeed(self.hint))?,
                _ => {
                    let Value::Object(m) = map.next_value_seed(StrictSeed::new(self.depth))? else {
                        return Err(give_up("opaque field is not an object"));
                    };
                    if i == 5 {
                        link.byproducts = m;
                    } else {
                        link.environment = m;
                    }
                }
            }
        }
        if seen.contains(&false) {
            return Err(give_up("missing field"));
        }
        Ok(link)
    }
}

/// `{path: {alg: hex}}`, no path twice; room for about this many.
struct ArtifactsSeed(usize);

impl<'de> DeserializeSeed<'de> for ArtifactsSeed {
    type Value = ArtifactMap;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ArtifactMap, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ArtifactsSeed {
    type Value = ArtifactMap;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("artifacts")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ArtifactMap, A::Error> {
        let mut all: Vec<(String, HashDict)> =
            Vec::with_capacity(map.size_hint().unwrap_or(self.0));
        while let Some(path) = map.next_key::<String>()? {
            let hashes = map.next_value_seed(HashesSeed)?;
            all.push((path, hashes));
        }
        // Files list them sorted; sort anyway, then any duplicate is adjacent.
        if !all.is_sorted_by(|a, b| a.0 < b.0) {
            all.sort_by(|a, b| a.0.cmp(&b.0));
            if all.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(give_up("duplicate artifact"));
            }
        }
        Ok(ArtifactMap::from_sorted_unique(all))
    }
}

/// `{alg: hex}`, no algorithm twice, every digest a hex string.
struct HashesSeed;

impl<'de> DeserializeSeed<'de> for HashesSeed {
    type Value = HashDict;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<HashDict, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HashesSeed {
    type Value = HashDict;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("hashes")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HashDict, A::Error> {
        let hex = |digest: &str| match is_hex(digest) {
            true => Ok(()),
            false => Err(give_up("digest is not hex")),
        };
        // The usual one entry is read as borrowed text, with no allocation
        // when it is one lower-case SHA-256.
        let Some(alg) = map.next_key_seed(Text)? else {
            return Ok(HashDict::new());
        };
        let digest = map.next_value_seed(Text)?;
        let mut out = HashDict::single(&alg, &digest);
        if out.is_text() {
            hex(&digest)?;
        }
        while let Some(alg) = map.next_key_seed(Text)? {
            let digest = map.next_value_seed(Text)?;
            hex(&digest)?;
            if out.insert(alg.into_owned(), digest.into_owned()).is_some() {
                return Err(give_up("duplicate algorithm"));
            }
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<HashDict, A::Error> {
        Err(give_up("hashes are a list"))
    }
}

/// A string, borrowed from the input when it has no escapes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Envelope;

    fn slow(bytes: &[u8]) -> Result<Envelope, crate::model::FormatError> {
        Envelope::parse_general(bytes, JsonLimits::default())
    }

    /// The metadata files under testdata whose names pass `keep`, read.
    fn testdata(keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
        files_under("testdata", keep)
    }

    /// Every metadata file in the test data and every fuzz seed, read.
    fn metadata_and_seeds() -> Vec<(String, Vec<u8>)> {
        let mut files = testdata(|name| name.contains(".link") || name.contains("layout"));
        files.extend(files_under("fuzz/corpus", |_| true));
        assert!(files.len() > 30, "only {} files", files.len());
        files
    }

    /// The files under `dir` (relative to the crate) whose names pass
    /// `keep`, read.
    fn files_under(dir: &str, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        walkdir::WalkDir::new(&root)
            .into_iter()
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file() && keep(&e.file_name().to_string_lossy()))
            .map(|e| {
                let bytes = std::fs::read(e.path()).unwrap();
                (e.path().display().to_string(), bytes)
            })
            .collect()
    }

    fn assert_same(a: &Envelope, b: &Envelope, at: &str) {
        assert_eq!(a.payload(), b.payload(), "{at}");
        assert_eq!(a.signatures(), b.signatures(), "{at}");
        assert_eq!(a.signed_bytes(), b.signed_bytes(), "{at}");
    }

    /// Every link in the repository's test data: where the fast path takes
    /// it, the result equals the general path's.
    #[test]
    fn fast_path_agrees_with_the_general_path_on_testdata() {
        let mut taken = 0;
        for (at, bytes) in testdata(|name| name.contains(".link")) {
            // As `Envelope::parse` takes it: typed link, then signatures.
            let fast = metablock_link(&bytes, JsonLimits::default()).and_then(|(link, sigs)| {
                Envelope::metablock(crate::model::Payload::Link(link), Some(&sigs)).ok()
            });
            if let Some(fast) = fast {
                taken += 1;
                let general = slow(&bytes)
                    .unwrap_or_else(|e| panic!("{at}: fast path took it, general refused: {e}"));
                assert_same(&general, &fast, &at);
            }
        }
        assert!(taken > 5, "only {taken} links took the fast path");
    }

    /// The `fast_path` fuzz target's property, on every metadata file in
    /// the test data and every fuzz seed: `parse` (fast path first) and
    /// `parse_general` accept the same documents with the same envelope,
    /// and refuse the same ones with the same message.
    #[test]
    fn parse_agrees_with_the_general_parser_on_every_file() {
        let files = metadata_and_seeds();
        let limits = JsonLimits::default();
        let mut accepted = 0;
        for (at, bytes) in files {
            match (Envelope::parse(&bytes, limits), slow(&bytes)) {
                (Ok(a), Ok(b)) => {
                    accepted += 1;
                    assert_eq!(a.kind(), b.kind(), "{at}");
                    assert_same(&a, &b, &at);
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{at}"),
                (a, b) => panic!("{at}: parse {:?}, parse_general {:?}", a.is_ok(), b.is_ok()),
            }
        }
        assert!(accepted > 10, "only {accepted} files parse");
    }

    /// The `parse_metadata` fuzz target's round trip, on the same files:
    /// whatever parses is written back (`to_file_bytes`) and read again to
    /// an equal payload. `odd-name-key-order.link`, the fuzzer's find, has
    /// a dict as its link's name, whose keys the writer sorts.
    #[test]
    fn what_parses_is_written_and_read_back_equal() {
        let files = metadata_and_seeds();
        let limits = JsonLimits::default();
        let mut parsed = 0;
        for (at, bytes) in files {
            let Ok(env) = Envelope::parse(&bytes, limits) else {
                continue;
            };
            parsed += 1;
            let again = Envelope::parse(&env.to_file_bytes(), limits)
                .unwrap_or_else(|e| panic!("{at}: written back, it does not parse: {e}"));
            assert_eq!(again.payload(), env.payload(), "{at}");
            assert_eq!(again.signatures(), env.signatures(), "{at}");
        }
        assert!(parsed > 10, "only {parsed} files parse");
    }

    /// Every metadata file in the test data, hostile ones included:
    /// parsing owned bytes (freed early) gives what parsing borrowed ones
    /// does, refusals included.
    #[test]
    fn parsing_owned_bytes_gives_the_same_envelope() {
        let files = testdata(|name| name.contains(".link") || name.contains("layout"));
        assert!(files.len() > 20, "only {} metadata files", files.len());
        let limits = JsonLimits::default();
        for (at, bytes) in files {
            match (
                Envelope::parse(&bytes, limits),
                Envelope::parse_owned(bytes, limits),
            ) {
                (Ok(a), Ok(b)) => assert_same(&a, &b, &at),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{at}"),
                (a, b) => panic!("{at}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }

    #[test]
    fn anything_unusual_leaves_the_fast_path() {
        let ok = r#"{"signatures": [], "signed": {"_type": "link", "byproducts": {}, "command": [], "environment": {}, "materials": {"a": {"sha256": "ab"}}, "name": "s", "products": {}}}"#;
        assert!(metablock_link(ok.as_bytes(), JsonLimits::default()).is_some());
        for (from, to) in [
            (
                r#""a": {"sha256": "ab"}"#,
                r#""a": {"sha256": "ab"}, "a": {"sha256": "ab"}"#,
            ),
            (
                r#""a": {"sha256": "ab"}"#,
                r#""a": {"sha256": "ab", "sha256": "cd"}"#,
            ),
            (r#""a": {"sha256": "ab"}"#, r#""a": {"sha256": "xy"}"#),
            (r#""a": {"sha256": "ab"}"#, r#""a": {"sha256": ""}"#),
            (r#""a": {"sha256": "ab"}"#, r#""a": {"sha256": 12}"#),
            (r#""a": {"sha256": "ab"}"#, r#""a": ["ab"]"#),
            (r#""_type": "link""#, r#""_type": "layout""#),
            (r#""name": "s""#, r#""name": "s", "extra": 1"#),
            (r#""name": "s", "#, ""),
            (r#""command": []"#, r#""command": [1]"#),
            (r#""byproducts": {}"#, r#""byproducts": []"#),
            (
                r#""signatures": [], "#,
                r#""signatures": [], "signatures": [], "#,
            ),
        ] {
            let bad = ok.replace(from, to);
            assert_ne!(bad, ok);
            assert!(
                metablock_link(bad.as_bytes(), JsonLimits::default()).is_none(),
                "{bad}"
            );
        }
        let tight = JsonLimits {
            max_bytes: 10,
            ..JsonLimits::default()
        };
        assert!(metablock_link(ok.as_bytes(), tight).is_none());
        // A byte that is not UTF-8 inside a name: the document leaves the
        // fast path whole (UTF-8 is checked once, up front) and the general
        // parser refuses it, by either entry point.
        let mut not_utf8 = ok.as_bytes().to_vec();
        let at = ok.find(r#""a": {"#).unwrap() + 1;
        not_utf8[at] = 0xff;
        assert!(metablock_link(&not_utf8, JsonLimits::default()).is_none());
        assert!(Envelope::parse(&not_utf8, JsonLimits::default()).is_err());
        assert!(Envelope::parse_owned(not_utf8, JsonLimits::default()).is_err());
    }
}
