use serde_json::{json, Map, Value};

use super::{err, is_hex, Fields, FormatError, Problem};
use crate::json::{write_py, write_py_object, write_py_str, PyContainer, PyStyle};

/// Hash algorithm name → hex digest, in name order.
///
/// Links list tens of thousands of these and almost every one is exactly
/// `{"sha256": <64 lowercase hex digits>}`, so that case is held as the 32
/// bytes themselves, inline: no allocation, and comparing two is comparing
/// 32 bytes. Anything else (another algorithm, several, upper-case or
/// odd-length hex) is kept as text, sorted by algorithm.
///
/// The representation is normal: a dict that is exactly one lower-case
/// SHA-256 always takes the short form, so the derived equality is equality
/// of the text the reference compares. The hex round trip is exact for
/// lower-case digits, the only ones that take the short form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HashDict(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Repr {
    Sha256([u8; 32]),
    Text(Vec<(String, String)>),
}

impl Default for HashDict {
    fn default() -> HashDict {
        HashDict::new()
    }
}

impl HashDict {
    pub fn new() -> HashDict {
        HashDict(Repr::Text(Vec::new()))
    }
    /// `{"sha256": hex(digest)}`.
    pub fn sha256(digest: [u8; 32]) -> HashDict {
        HashDict(Repr::Sha256(digest))
    }
    /// `{alg: digest}` from borrowed text, allocating only when it is not
    /// the short form.
    pub fn single(alg: &str, digest: &str) -> HashDict {
        match short_sha256(alg, digest) {
            Some(d) => HashDict::sha256(d),
            None => HashDict(Repr::Text(vec![(alg.to_owned(), digest.to_owned())])),
        }
    }
    /// Sets `alg` to `digest`, returning the digest it replaces.
    pub fn insert(&mut self, alg: String, digest: String) -> Option<String> {
        if let Repr::Sha256(d) = self.0 {
            let hex = Digest::bytes(&d).as_str().to_owned();
            self.0 = Repr::Text(vec![("sha256".to_owned(), hex)]);
        }
        let Repr::Text(v) = &mut self.0 else {
            unreachable!("the short form was just expanded")
        };
        let old = match v.binary_search_by(|(a, _)| a.as_str().cmp(&alg)) {
            Ok(i) => Some(std::mem::replace(&mut v[i].1, digest)),
            Err(i) => {
                v.insert(i, (alg, digest));
                None
            }
        };
        if let [(a, d)] = v.as_slice() {
            if let Some(d) = short_sha256(a, d) {
                self.0 = Repr::Sha256(d);
            }
        }
        old
    }
    pub fn get(&self, alg: &str) -> Option<Digest<'_>> {
        match &self.0 {
            Repr::Sha256(d) => (alg == "sha256").then(|| Digest::bytes(d)),
            Repr::Text(v) => v
                .binary_search_by(|(a, _)| a.as_str().cmp(alg))
                .ok()
                .map(|i| Digest(DigestRepr::Text(&v[i].1))),
        }
    }
    /// Whether this is not the short form (one lower-case SHA-256, whose
    /// digits are known to be hex).
    pub fn is_text(&self) -> bool {
        matches!(self.0, Repr::Text(_))
    }
    /// The length of every algorithm name and digest, plus `extra` for each
    /// entry (sizes output buffers).
    fn text_len(&self, extra: usize) -> usize {
        match &self.0 {
            Repr::Sha256(_) => "sha256".len() + 64 + extra,
            Repr::Text(v) => v.iter().map(|(a, d)| a.len() + d.len() + extra).sum(),
        }
    }
    /// Appends the canonical JSON entries (`"alg":"digest"`, comma
    /// separated) to `out`.
    fn write_canonical_entries(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Repr::Sha256(d) => {
                // Built whole, then appended once (this runs for every
                // artifact of every link whose signature is checked).
                const HEAD: &[u8] = b"\"sha256\":\"";
                let mut text = [b'"'; HEAD.len() + 65];
                text[..HEAD.len()].copy_from_slice(HEAD);
                for (pair, b) in text[HEAD.len()..].chunks_exact_mut(2).zip(d) {
                    pair[0] = HEX_DIGITS[(b >> 4) as usize];
                    pair[1] = HEX_DIGITS[(b & 0x0f) as usize];
                }
                out.extend_from_slice(&text);
            }
            Repr::Text(v) => {
                for (j, (alg, digest)) in v.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    crate::cjson::write_str(alg, out);
                    out.push(b':');
                    crate::cjson::write_str(digest, out);
                }
            }
        }
    }
    pub fn contains_key(&self, alg: &str) -> bool {
        self.get(alg).is_some()
    }
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Sha256(_) => 1,
            Repr::Text(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (algorithm, digest) in algorithm order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Digest<'_>)> {
        let (short, text) = match &self.0 {
            Repr::Sha256(d) => (Some(("sha256", Digest::bytes(d))), &[][..]),
            Repr::Text(v) => (None, v.as_slice()),
        };
        short.into_iter().chain(
            text.iter()
                .map(|(a, d)| (a.as_str(), Digest(DigestRepr::Text(d)))),
        )
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(a, _)| a)
    }
}

/// The 32 bytes of `{alg: digest}` when that is one lower-case SHA-256.
///
/// Decoded by table: every artifact of every link passes here, and a
/// general hex decoder costs several times the parsing around it.
fn short_sha256(alg: &str, digest: &str) -> Option<[u8; 32]> {
    if alg != "sha256" || digest.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(digest.as_bytes().chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
        bad |= (hi | lo) & 0x10;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    (bad == 0).then_some(out)
}

/// Lower-case hex digit → its value; anything else → 0x10.
const NIBBLE: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// One digest of a [`HashDict`] as hex text: borrowed, or spelled out on the
/// stack from the short form. Dereferences to `str`.
#[derive(Clone, Copy)]
pub struct Digest<'a>(DigestRepr<'a>);

#[derive(Clone, Copy)]
enum DigestRepr<'a> {
    Text(&'a str),
    Hex([u8; 64]),
}

impl Digest<'_> {
    fn bytes(d: &[u8; 32]) -> Digest<'static> {
        let mut hex = [0u8; 64];
        for (pair, b) in hex.chunks_exact_mut(2).zip(d) {
            pair[0] = HEX_DIGITS[(b >> 4) as usize];
            pair[1] = HEX_DIGITS[(b & 0x0f) as usize];
        }
        Digest(DigestRepr::Hex(hex))
    }
    pub fn as_str(&self) -> &str {
        match &self.0 {
            DigestRepr::Text(s) => s,
            DigestRepr::Hex(h) => std::str::from_utf8(h).expect("hex digits are ASCII"),
        }
    }
}

impl std::ops::Deref for Digest<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Digest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Digest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Digest<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Digest<'_> {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl FromIterator<(String, String)> for HashDict {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> HashDict {
        let mut d = HashDict::new();
        for (a, h) in iter {
            d.insert(a, h);
        }
        d
    }
}

impl serde::Serialize for HashDict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl serde::Serialize for Digest<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Artifact path → its hashes, in path order (the order of the reference's
/// sorted JSON and of canonical JSON: both compare code points, which for
/// UTF-8 is byte order).
///
/// Held as one sorted vector with unique paths rather than a B-tree: links
/// and snapshots arrive sorted or are sorted once, and are then only read
/// (looked up by binary search, walked in order). One allocation of the
/// final size, where a B-tree was built from a vector of the same entries:
/// twice the memory touched per map, and fresh pages are costly on the
/// machines we measure on (BENCHMARKS.md, eighth session).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtifactMap {
    entries: Vec<(String, HashDict)>,
}

impl ArtifactMap {
    pub fn new() -> ArtifactMap {
        ArtifactMap::default()
    }

    /// `entries` strictly increasing by path (sorted, no path twice); the
    /// callers check it, and so does this in debug builds.
    pub(crate) fn from_sorted_unique(entries: Vec<(String, HashDict)>) -> ArtifactMap {
        debug_assert!(entries.is_sorted_by(|a, b| a.0 < b.0));
        ArtifactMap { entries }
    }

    /// From entries in any order; of several with one path, the last wins
    /// (as inserting them one by one).
    fn from_unsorted(mut entries: Vec<(String, HashDict)>) -> ArtifactMap {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so equal paths keep their order; keep the last of each run.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.reverse();
            entries.dedup_by(|later, earlier| later.0 == earlier.0);
            entries.reverse();
        }
        ArtifactMap { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `path` is in [`ArtifactMap::as_slice`] (`Ok`), or would go (`Err`).
    pub fn position(&self, path: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(path))
    }

    pub fn get(&self, path: &str) -> Option<&HashDict> {
        self.position(path).ok().map(|i| &self.entries[i].1)
    }

    pub fn contains_key(&self, path: &str) -> bool {
        self.position(path).is_ok()
    }

    /// Sets `path`'s hashes, returning those it replaces. Linear in the
    /// size of the map: for building small maps; large ones are collected.
    pub fn insert(&mut self, path: String, hashes: HashDict) -> Option<HashDict> {
        match self.position(&path) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, hashes)),
            Err(i) => {
                self.entries.insert(i, (path, hashes));
                None
            }
        }
    }

    /// The entries, in path order.
    pub fn as_slice(&self) -> &[(String, HashDict)] {
        &self.entries
    }

    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&String, &HashDict)> + ExactSizeIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| k)
    }
}

impl FromIterator<(String, HashDict)> for ArtifactMap {
    fn from_iter<I: IntoIterator<Item = (String, HashDict)>>(iter: I) -> ArtifactMap {
        ArtifactMap::from_unsorted(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a ArtifactMap {
    type Item = (&'a String, &'a HashDict);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, HashDict)>,
        fn(&'a (String, HashDict)) -> (&'a String, &'a HashDict),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for ArtifactMap {
    type Item = (String, HashDict);
    type IntoIter = std::vec::IntoIter<(String, HashDict)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// `map[path]`: the hashes of `path`, which must be there.
impl std::ops::Index<&str> for ArtifactMap {
    type Output = HashDict;
    fn index(&self, path: &str) -> &HashDict {
        match self.get(path) {
            Some(h) => h,
            None => panic!("no artifact {path:?} in the map"),
        }
    }
}

impl serde::Serialize for ArtifactMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Link metadata (spec §4.2): what one functionary did in one step.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub name: String,
    pub command: Vec<String>,
    pub materials: ArtifactMap,
    pub products: ArtifactMap,
    /// Opaque: `stdout`, `stderr`, `return-value` by convention.
    pub byproducts: Map<String, Value>,
    /// Opaque: `workdir` and the like.
    pub environment: Map<String, Value>,
    /// `name` and `command` as the document has them, kept only when they
    /// are not a string and a list of strings: the reference checks only
    /// that `command` is a list (and nothing of `name`, which defaults to
    /// null), and signs them as they are. `name` and `command` above then
    /// hold their JSON text, for messages.
    pub odd: Option<Box<OddFields>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OddFields {
    pub name: Value,
    pub command: Vec<Value>,
}

/// Equality as the reference's (attrs compares the fields as Python values):
/// an odd `name` or `command` compares as a value, so a dict in it equals one
/// with the same keys in another order, and the JSON text kept of it for
/// messages (which follows the document's order) does not count.
impl PartialEq for Link {
    fn eq(&self, other: &Link) -> bool {
        let name_and_command = match (&self.odd, &other.odd) {
            (None, None) => self.name == other.name && self.command == other.command,
            (Some(a), Some(b)) => a == b,
            // A string name and a list of strings never equal anything else.
            _ => false,
        };
        name_and_command
            && self.materials == other.materials
            && self.products == other.products
            && self.byproducts == other.byproducts
            && self.environment == other.environment
    }
}

/// A string as itself, anything else as its JSON text.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Link {
    pub fn from_value(v: &Value, path: &str) -> Result<Link, FormatError> {
        let f = Fields::new(v, path)?;
        let mut link = Link {
            materials: artifacts(&f, "materials")?,
            products: artifacts(&f, "products")?,
            byproducts: f.object("byproducts")?,
            environment: f.object("environment")?,
            ..Link::default()
        };
        // `Link(**data)`: a missing name is None, a missing command [].
        let name = f.get("name").cloned().unwrap_or(Value::Null);
        link.set_name_command(name, f.list("command")?.to_vec());
        Ok(link)
    }

    /// Sets `name` and `command` from their JSON values, keeping the values
    /// in [`Link::odd`] only when they are not all strings.
    pub fn set_name_command(&mut self, name: Value, command: Vec<Value>) {
        self.name = text_of(&name);
        self.command = command.iter().map(text_of).collect();
        self.odd = (!name.is_string() || command.iter().any(|c| !c.is_string()))
            .then(|| Box::new(OddFields { name, command }));
    }

    /// The `command` as the document has it.
    pub fn command_values(&self) -> Vec<Value> {
        match &self.odd {
            Some(o) => o.command.clone(),
            None => self.command.iter().cloned().map(Value::String).collect(),
        }
    }

    /// Python's `link.command == expected_command`: a command with anything
    /// but strings in it never equals a list of strings.
    pub fn command_equals(&self, expected: &[String]) -> bool {
        match &self.odd {
            Some(o) => {
                o.command.len() == expected.len()
                    && o.command
                        .iter()
                        .zip(expected)
                        .all(|(c, e)| c.as_str() == Some(e))
            }
            None => self.command == expected,
        }
    }

    /// Canonical JSON of [`Link::to_value`], written straight from the typed
    /// fields (links can list tens of thousands of artifacts; the maps are
    /// already in code point order).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, crate::cjson::CanonicalError> {
        use crate::cjson::{encode_into, write_array, write_object, write_str};
        let artifacts = |m: &ArtifactMap, out: &mut Vec<u8>| {
            out.push(b'{');
            for (i, (path, hashes)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(path, out);
                out.extend_from_slice(b":{");
                hashes.write_canonical_entries(out);
                out.push(b'}');
            }
            out.push(b'}');
        };
        // 6 bytes of quotes and separators per artifact and per hash, as
        // many as canonical JSON writes: one allocation, not a doubling of
        // megabytes.
        let mut out = Vec::with_capacity(1024 + self.artifact_text_len(6));
        out.extend_from_slice(b"{\"_type\":\"link\",\"byproducts\":");
        write_object(&self.byproducts, &mut out)?;
        out.extend_from_slice(b",\"command\":");
        match &self.odd {
            Some(o) => write_array(&o.command, &mut out)?,
            None => {
                out.push(b'[');
                for (i, c) in self.command.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(c, &mut out);
                }
                out.push(b']');
            }
        }
        out.extend_from_slice(b",\"environment\":");
        write_object(&self.environment, &mut out)?;
        out.extend_from_slice(b",\"materials\":");
        artifacts(&self.materials, &mut out);
        out.extend_from_slice(b",\"name\":");
        match &self.odd {
            Some(o) => encode_into(&o.name, &mut out)?,
            None => write_str(&self.name, &mut out),
        }
        out.extend_from_slice(b",\"products\":");
        artifacts(&self.products, &mut out);
        out.push(b'}');
        Ok(out)
    }

    /// [`Link::to_value`] as Python's `json.dumps(..., sort_keys=True)`
    /// writes it at nesting `depth`, without building the value tree.
    pub fn write_py(&self, style: PyStyle, depth: usize, out: &mut String) {
        out.reserve(1024 + self.artifact_text_len(16 + 4 * depth));
        self.write_py_flushing(style, depth, out, &mut |_| Ok(()))
            .expect("writing into a String does not fail");
    }

    /// [`Link::write_py`], calling `flush` with the text so far after each
    /// block of artifacts; it may write some out and drain it, so a large
    /// link goes to a file in chunks rather than through one buffer as large.
    pub fn write_py_flushing(
        &self,
        style: PyStyle,
        depth: usize,
        out: &mut String,
        flush: &mut dyn FnMut(&mut String) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut artifacts = |m: &ArtifactMap, out: &mut String| -> std::io::Result<()> {
            write_py_artifacts(m, style, depth + 1, out, flush)
        };
        let mut c = PyContainer::object(out, style, depth);
        write_py_str("link", c.key("_type"));
        write_py_object(&self.byproducts, style, depth + 1, c.key("byproducts"));
        match &self.odd {
            Some(o) => write_py(
                &Value::Array(o.command.clone()),
                style,
                depth + 1,
                c.key("command"),
            ),
            None => {
                let mut cmd = PyContainer::array(c.key("command"), style, depth + 1);
                for word in &self.command {
                    write_py_str(word, cmd.item());
                }
                cmd.end();
            }
        }
        write_py_object(&self.environment, style, depth + 1, c.key("environment"));
        artifacts(&self.materials, c.key("materials"))?;
        match &self.odd {
            Some(o) => write_py(&o.name, style, depth + 1, c.key("name")),
            None => write_py_str(&self.name, c.key("name")),
        }
        artifacts(&self.products, c.key("products"))?;
        c.end();
        Ok(())
    }

    /// About how many bytes the artifact maps take as JSON text, with `extra`
    /// bytes of quotes, separators and indentation per entry (sizes output
    /// buffers once: growing a multi-megabyte buffer by doubling costs more
    /// than the writing).
    fn artifact_text_len(&self, extra: usize) -> usize {
        self.materials
            .iter()
            .chain(&self.products)
            .map(|(path, hashes)| path.len() + extra + hashes.text_len(extra))
            .sum()
    }

    /// The dict the reference signs (`attr.asdict(link)`).
    pub fn to_value(&self) -> Value {
        let (name, command) = match &self.odd {
            Some(o) => (o.name.clone(), Value::Array(o.command.clone())),
            None => (json!(self.name), json!(self.command)),
        };
        json!({
            "_type": "link",
            "name": name,
            "command": command,
            "materials": self.materials,
            "products": self.products,
            "byproducts": self.byproducts,
            "environment": self.environment,
        })
    }
}

/// An artifact map as Python's `json.dumps` writes it as an object at
/// `depth` (what [`PyContainer`] writes entry by entry), calling `flush`
/// between blocks of entries.
///
/// The text of an inspection's link (two maps of every file of its
/// directory) is written after the inspection, when nothing else is left to
/// do: a large map is formatted in blocks on every core, each block straight
/// from its entries, and the blocks are appended in order.
fn write_py_artifacts(
    m: &ArtifactMap,
    style: PyStyle,
    depth: usize,
    out: &mut String,
    flush: &mut dyn FnMut(&mut String) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use rayon::prelude::*;
    /// Entries per block (about 440 KB of text for SHA-256 entries).
    const BLOCK: usize = 4096;
    let entries = m.as_slice();
    if entries.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    let f = PyFormat::new(style, depth);
    out.push('{');
    if entries.len() <= BLOCK {
        f.entries(entries, true, out);
        flush(out)?;
    } else {
        // Formatted a few blocks at a time (text in memory stays bounded).
        let blocks: Vec<&[(String, HashDict)]> = entries.chunks(BLOCK).collect();
        for (g, group) in blocks.chunks(8).enumerate() {
            let texts: Vec<String> = group
                .par_iter()
                .enumerate()
                .map(|(i, block)| {
                    let mut s = String::with_capacity(
                        block.iter().map(|(p, h)| p.len() + h.text_len(32)).sum(),
                    );
                    f.entries(block, g == 0 && i == 0, &mut s);
                    s
                })
                .collect();
            for t in texts {
                out.push_str(&t);
                flush(out)?;
            }
        }
    }
    out.push_str(&f.close);
    Ok(())
}

/// The separators and indentation [`PyContainer`] writes around an artifact
/// map's entries at one depth, precomputed.
struct PyFormat {
    /// Between two items.
    item: &'static str,
    /// Between a key and its value.
    key: &'static str,
    /// Before an artifact's path: a newline and its indentation.
    entry: String,
    /// Before an algorithm name inside an artifact's dict.
    alg: String,
    /// Closes an artifact's non-empty dict.
    dict_close: String,
    /// Closes the map.
    close: String,
}

impl PyFormat {
    fn new(style: PyStyle, depth: usize) -> PyFormat {
        let nl = |d: usize| match style {
            PyStyle::Indent1 => format!("\n{}", " ".repeat(d)),
            PyStyle::Default | PyStyle::Compact => String::new(),
        };
        PyFormat {
            item: match style {
                PyStyle::Default => ", ",
                PyStyle::Indent1 | PyStyle::Compact => ",",
            },
            key: match style {
                PyStyle::Compact => ":",
                PyStyle::Indent1 | PyStyle::Default => ": ",
            },
            entry: nl(depth + 1),
            alg: nl(depth + 2),
            dict_close: format!("{}}}", nl(depth + 1)),
            close: format!("{}}}", nl(depth)),
        }
    }

    /// `entries`, each after the item separator unless `first` and it is
    /// the first.
    fn entries(&self, entries: &[(String, HashDict)], first: bool, out: &mut String) {
        for (i, (path, hashes)) in entries.iter().enumerate() {
            if i > 0 || !first {
                out.push_str(self.item);
            }
            out.push_str(&self.entry);
            write_py_str(path, out);
            out.push_str(self.key);
            out.push('{');
            match &hashes.0 {
                Repr::Sha256(d) => {
                    out.push_str(&self.alg);
                    out.push_str("\"sha256\"");
                    out.push_str(self.key);
                    out.push('"');
                    out.push_str(Digest::bytes(d).as_str());
                    out.push('"');
                    out.push_str(&self.dict_close);
                }
                Repr::Text(v) if v.is_empty() => out.push('}'),
                Repr::Text(v) => {
                    for (j, (alg, digest)) in v.iter().enumerate() {
                        if j > 0 {
                            out.push_str(self.item);
                        }
                        out.push_str(&self.alg);
                        write_py_str(alg, out);
                        out.push_str(self.key);
                        write_py_str(digest, out);
                    }
                    out.push_str(&self.dict_close);
                }
            }
        }
    }
}

fn artifacts(f: &Fields, field: &str) -> Result<ArtifactMap, FormatError> {
    let Some(map) = f.object_ref(field)? else {
        return Ok(ArtifactMap::new());
    };
    // In the document's order (the parser keeps it), sorted once at the end.
    let mut out = Vec::with_capacity(map.len());
    // Paths for messages are built only on error: links list tens of
    // thousands of artifacts.
    let at = |name: &str| format!("{}[{name:?}]", f.at(field));
    for (name, hashes) in map {
        let Value::Object(hashes) = hashes else {
            return Err(err(at(name), Problem::WrongType("an object of hashes")));
        };
        let mut dict = HashDict::new();
        for (alg, digest) in hashes {
            match digest {
                Value::String(d) if is_hex(d) => {
                    if hashes.len() == 1 {
                        dict = HashDict::single(alg, d);
                    } else {
                        dict.insert(alg.clone(), d.clone());
                    }
                }
                Value::String(d) => {
                    return Err(err(
                        format!("{}.{alg}", at(name)),
                        Problem::NotHex(d.clone()),
                    ))
                }
                _ => {
                    return Err(err(
                        format!("{}.{alg}", at(name)),
                        Problem::WrongType("a hex string"),
                    ))
                }
            }
        }
        out.push((name.clone(), dict));
    }
    Ok(ArtifactMap::from_unsorted(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOWER: &str = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";

    fn text(d: &HashDict) -> Vec<(String, String)> {
        d.iter()
            .map(|(a, h)| (a.to_owned(), h.to_string()))
            .collect()
    }

    /// However a dict is built, one lower-case SHA-256 takes the short form,
    /// so equality stays equality of the text.
    #[test]
    fn one_lower_case_sha256_is_held_as_bytes_however_it_is_built() {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(LOWER, &mut bytes).unwrap();
        let by_bytes = HashDict::sha256(bytes);
        let by_single = HashDict::single("sha256", LOWER);
        let by_insert: HashDict = [("sha256".to_string(), LOWER.to_string())]
            .into_iter()
            .collect();
        let mut replaced = HashDict::single("sha256", "ab");
        assert_eq!(
            replaced.insert("sha256".into(), LOWER.into()).as_deref(),
            Some("ab")
        );
        for d in [&by_single, &by_insert, &replaced] {
            assert_eq!(d, &by_bytes);
            assert!(matches!(d.0, Repr::Sha256(_)));
        }
        assert_eq!(text(&by_bytes), [("sha256".to_string(), LOWER.to_string())]);
        assert_eq!(by_bytes.get("sha256").unwrap(), LOWER);
        assert!(by_bytes.get("sha512").is_none());
        assert_eq!(
            serde_json::to_string(&by_bytes).unwrap(),
            format!("{{\"sha256\":\"{LOWER}\"}}")
        );
    }

    #[test]
    fn anything_else_is_held_as_text_and_compares_as_text() {
        let upper = LOWER.to_uppercase();
        let short = &LOWER[..63];
        for (alg, digest) in [
            ("sha256", upper.as_str()),
            ("sha256", short),
            ("sha512", LOWER),
        ] {
            let d = HashDict::single(alg, digest);
            assert!(matches!(d.0, Repr::Text(_)), "{alg} {digest}");
            assert_eq!(text(&d), [(alg.to_string(), digest.to_string())]);
            assert_ne!(d, HashDict::single("sha256", LOWER));
        }
        // Two algorithms, in either order; the short form expands.
        let mut a = HashDict::single("sha256", LOWER);
        a.insert("sha512".into(), "ff".into());
        let mut b = HashDict::single("sha512", "ff");
        b.insert("sha256".into(), LOWER.into());
        assert_eq!(a, b);
        assert_eq!(a.keys().collect::<Vec<_>>(), ["sha256", "sha512"]);
        assert_eq!(a.get("sha256").unwrap(), LOWER);
        assert_eq!(a.len(), 2);
        assert!(HashDict::new().is_empty());
    }

    /// Only the 16 lower-case digits decode, at any position.
    #[test]
    fn the_short_form_takes_lower_case_hex_digits_only() {
        for c in (0u8..128).map(char::from).chain(['é', '٣']) {
            for at in [0, 1, 62, 63] {
                let mut digest = LOWER.to_string();
                digest.replace_range(at..at + 1, &c.to_string());
                let short = HashDict::single("sha256", &digest);
                let digit = c.is_ascii_digit() || ('a'..='f').contains(&c);
                assert_eq!(!short.is_text(), digit, "{c:?} at {at}");
                assert_eq!(short.get("sha256").unwrap(), digest, "{c:?} at {at}");
            }
        }
    }

    /// The map keeps paths in code point order whatever order they come in;
    /// of one path given twice the last counts, as with one insert after
    /// another; it writes as a JSON object in that order.
    #[test]
    fn artifact_map_is_in_path_order_and_the_last_of_a_path_wins() {
        let h = |c: char| HashDict::sha256([c as u8; 32]);
        let mut m: ArtifactMap = [
            ("b".to_string(), h('1')),
            ("é".to_string(), h('2')),
            ("a/b".to_string(), h('3')),
            ("b".to_string(), h('4')),
            ("a".to_string(), h('5')),
        ]
        .into_iter()
        .collect();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "a/b", "b", "é"]);
        assert_eq!(m.get("b"), Some(&h('4')));
        assert_eq!(m["a/b"], h('3'));
        assert!(m.get("c").is_none() && !m.contains_key("a/"));

        assert_eq!(m.insert("c".into(), h('6')), None);
        assert_eq!(m.insert("a".into(), h('7')), Some(h('5')));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "a/b", "b", "c", "é"]);
        assert_eq!(m.len(), 5);

        let json = serde_json::to_value(&m).unwrap();
        let order: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(order, ["a", "a/b", "b", "c", "é"]);
        assert_eq!(json["c"]["sha256"], "36".repeat(32));

        // A link whose artifacts are not in order, read the general way
        // (the fast path sorts too): sorted once, not inserted one by one.
        let paths: Vec<String> = (0..3000).rev().map(|i| format!("f{i:05}")).collect();
        let v = json!({
            "_type": "link", "name": "x", "command": [],
            "materials": paths.iter().map(|p| (p.clone(), json!({"sha256": "ab"}))).collect::<Map<_, _>>(),
            "products": {}, "byproducts": {}, "environment": {},
        });
        let link = Link::from_value(&v, "x.link").unwrap();
        assert!(link.materials.keys().rev().eq(paths.iter()));

        // Already in order: taken as it is.
        let sorted: ArtifactMap = m.clone().into_iter().collect();
        assert_eq!(sorted, m);
        assert!(ArtifactMap::new().is_empty());
    }

    /// The artifact maps are written block by block on several threads; the
    /// text is what the general writer makes of [`Link::to_value`], in every
    /// style, at every depth, and however many blocks there are.
    #[test]
    fn large_maps_write_as_the_value_writer_does() {
        let hex = |i: usize| format!("{:064x}", i * 7919);
        for n in [0, 1, 5, 4096, 4097, 9000, 40_000] {
            let mut materials = Map::new();
            let mut products = Map::new();
            for i in 0..n {
                let path = match i % 5 {
                    0 => format!("src/d{i:05}/f \"q\"\\"),
                    1 => format!("src/d{i:05}/caf\u{e9}\u{1f600}"),
                    _ => format!("src/d{i:05}/f{i}"),
                };
                let hashes = match i % 7 {
                    0 => json!({}),
                    1 => json!({"sha256": hex(i), "sha512": "ab"}),
                    2 => json!({"sha256": hex(i).to_uppercase()}),
                    _ => json!({"sha256": hex(i)}),
                };
                materials.insert(path.clone(), hashes.clone());
                if i % 3 != 0 {
                    products.insert(path, hashes);
                }
            }
            let v = json!({"_type": "link", "name": "check", "command": ["true"],
                "materials": materials, "products": products,
                "byproducts": {"return-value": 0}, "environment": {}});
            let link = Link::from_value(&v, "x.link").unwrap();
            for style in [PyStyle::Indent1, PyStyle::Default, PyStyle::Compact] {
                for depth in [0, 1, 3] {
                    let mut ours = String::new();
                    link.write_py(style, depth, &mut ours);
                    let mut general = String::new();
                    write_py(&v, style, depth, &mut general);
                    assert!(ours == general, "n = {n}, {style:?}, depth {depth}");
                }
            }
            assert_eq!(
                link.canonical_bytes().unwrap(),
                crate::cjson::encode(&v).unwrap(),
                "n = {n}"
            );
        }
    }

    /// Byproducts and environment are encoded from the link's own maps:
    /// keys sorted at every depth, only `"` and `\` escaped, a float refused.
    #[test]
    fn opaque_fields_encode_canonically() {
        let v = json!({"_type": "link", "name": "make", "command": [],
            "materials": {}, "products": {},
            "byproducts": {"stdout": "é\"\\", "b": [1, {"z": null, "a": true}], "return-value": 0},
            "environment": {"z": {}, "a": ["x"]}});
        let link = Link::from_value(&v, "link").unwrap();
        let expected = r#"{"_type":"link","byproducts":{"b":[1,{"a":true,"z":null}],"return-value":0,"stdout":"é\"\\"},"command":[],"environment":{"a":["x"],"z":{}},"materials":{},"name":"make","products":{}}"#;
        assert_eq!(
            String::from_utf8(link.canonical_bytes().unwrap()).unwrap(),
            expected
        );
        let mut float = v.clone();
        float["environment"]["a"] = json!([0.5]);
        assert!(Link::from_value(&float, "link")
            .unwrap()
            .canonical_bytes()
            .is_err());
    }

    /// An odd name that is a dict equals one with its keys in another
    /// order (as Python's dicts do), though the text kept for messages
    /// differs; a name or command of another type or value does not.
    /// Found by the `parse_metadata` fuzz target: a written link (keys
    /// sorted) read back did not equal the link it was written from.
    #[test]
    fn odd_fields_compare_as_values() {
        let link = |name: Value, command: Value| {
            let v = json!({"_type": "link", "name": name, "command": command,
                "materials": {}, "products": {}, "byproducts": {}, "environment": {}});
            Link::from_value(&v, "link").unwrap()
        };
        let ab = serde_json::from_str::<Value>(r#"{"a": 1, " b": [2]}"#).unwrap();
        let ba = serde_json::from_str::<Value>(r#"{" b": [2], "a": 1}"#).unwrap();
        let (x, y) = (link(ab.clone(), json!([])), link(ba.clone(), json!([])));
        assert_ne!(
            x.name, y.name,
            "the message text keeps each document's order"
        );
        assert_eq!(x, y);
        assert_eq!(
            link(json!("s"), json!([ab.clone()])),
            link(json!("s"), json!([ba]))
        );
        assert_ne!(x, link(json!({"a": 1, " b": [3]}), json!([])));
        assert_ne!(x, link(json!("{\"a\":1,\" b\":[2]}"), json!([])));
        assert_ne!(link(json!("s"), json!(["1"])), link(json!("s"), json!([1])));
        assert_eq!(
            link(json!("s"), json!(["1"])),
            link(json!("s"), json!(["1"]))
        );
        assert_ne!(
            link(json!("s"), json!(["1"])),
            link(json!("t"), json!(["1"]))
        );
    }

    /// The reference checks only that `command` is a list and nothing of
    /// `name` (missing is None): such a link signs and writes its values as
    /// they are, and its command never equals a list of strings.
    #[test]
    fn odd_name_and_command_are_kept_as_written() {
        let v = json!({"_type": "link", "name": null, "command": ["sh", 1, null, {"a": []}],
            "materials": {}, "products": {}, "byproducts": {}, "environment": {}});
        let link = Link::from_value(&v, "link").unwrap();
        assert!(link.odd.is_some());
        assert_eq!(link.to_value(), v);
        assert_eq!(
            link.canonical_bytes().unwrap(),
            crate::cjson::encode(&v).unwrap()
        );
        let mut py = String::new();
        link.write_py(PyStyle::Default, 0, &mut py);
        assert_eq!(serde_json::from_str::<Value>(&py).unwrap(), v);
        assert!(!link.command_equals(&[
            "sh".into(),
            "1".into(),
            "null".into(),
            "{\"a\":[]}".into()
        ]));

        let mut missing = v.clone();
        missing.as_object_mut().unwrap().remove("name");
        assert_eq!(Link::from_value(&missing, "link").unwrap().to_value(), v);

        let plain = json!({"_type": "link", "name": "make", "command": ["sh", "1"],
            "materials": {}, "products": {}, "byproducts": {}, "environment": {}});
        let link = Link::from_value(&plain, "link").unwrap();
        assert!(link.odd.is_none());
        assert!(link.command_equals(&["sh".into(), "1".into()]));
        assert!(Link::from_value(&json!({"command": "sh"}), "link").is_err());
        assert!(Link::from_value(&json!({"command": ["sh", 1.5]}), "link")
            .unwrap()
            .canonical_bytes()
            .is_err());
    }
}
