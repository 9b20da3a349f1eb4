use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{err, is_hex, Fields, FormatError, Problem};
use crate::json::{write_py_object, write_py_str, PyContainer, PyStyle};

/// Hash algorithm name → hex digest, in name order.
///
/// Almost every dict holds one entry (`sha256`), and links list tens of
/// thousands of them, so this is a sorted vector rather than a tree: one small
/// allocation per artifact instead of a 0.5 KiB B-tree node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct HashDict(Vec<(String, String)>);

impl HashDict {
    pub fn new() -> HashDict {
        HashDict(Vec::new())
    }
    /// Sets `alg` to `digest`, returning the digest it replaces.
    pub fn insert(&mut self, alg: String, digest: String) -> Option<String> {
        match self.0.binary_search_by(|(a, _)| a.as_str().cmp(&alg)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, digest)),
            Err(i) => {
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (alg, digest));
                None
            }
        }
    }
    pub fn get(&self, alg: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(a, _)| a.as_str().cmp(alg))
            .ok()
            .map(|i| &self.0[i].1)
    }
    pub fn contains_key(&self, alg: &str) -> bool {
        self.get(alg).is_some()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// (algorithm, digest) in algorithm order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(a, d)| (a, d))
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(a, _)| a)
    }
}

impl std::ops::Index<&str> for HashDict {
    type Output = String;
    fn index(&self, alg: &str) -> &String {
        self.get(alg)
            .unwrap_or_else(|| panic!("no {alg:?} hash in this dict"))
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

impl<'a> IntoIterator for &'a HashDict {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(a, d)| (a, d))
    }
}

impl serde::Serialize for HashDict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Artifact path → its hashes.
pub type ArtifactMap = BTreeMap<String, HashDict>;

/// Link metadata (spec §4.2): what one functionary did in one step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    pub name: String,
    pub command: Vec<String>,
    pub materials: ArtifactMap,
    pub products: ArtifactMap,
    /// Opaque: `stdout`, `stderr`, `return-value` by convention.
    pub byproducts: Map<String, Value>,
    /// Opaque: `workdir` and the like.
    pub environment: Map<String, Value>,
}

impl Link {
    pub fn from_value(v: &Value, path: &str) -> Result<Link, FormatError> {
        let f = Fields::new(v, path)?;
        Ok(Link {
            name: f.string("name")?,
            command: f.string_list("command")?,
            materials: artifacts(&f, "materials")?,
            products: artifacts(&f, "products")?,
            byproducts: f.object("byproducts")?,
            environment: f.object("environment")?,
        })
    }

    /// Canonical JSON of [`Link::to_value`], written straight from the typed
    /// fields (links can list tens of thousands of artifacts; the maps are
    /// already in code point order).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, crate::cjson::CanonicalError> {
        use crate::cjson::{encode_into, write_str};
        let artifacts = |m: &ArtifactMap, out: &mut Vec<u8>| {
            out.push(b'{');
            for (i, (path, hashes)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(path, out);
                out.extend_from_slice(b":{");
                for (j, (alg, digest)) in hashes.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_str(alg, out);
                    out.push(b':');
                    write_str(digest, out);
                }
                out.push(b'}');
            }
            out.push(b'}');
        };
        let mut out = Vec::with_capacity(1024 + self.artifact_text_len(4));
        out.extend_from_slice(b"{\"_type\":\"link\",\"byproducts\":");
        encode_into(&Value::Object(self.byproducts.clone()), &mut out)?;
        out.extend_from_slice(b",\"command\":[");
        for (i, c) in self.command.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(c, &mut out);
        }
        out.extend_from_slice(b"],\"environment\":");
        encode_into(&Value::Object(self.environment.clone()), &mut out)?;
        out.extend_from_slice(b",\"materials\":");
        artifacts(&self.materials, &mut out);
        out.extend_from_slice(b",\"name\":");
        write_str(&self.name, &mut out);
        out.extend_from_slice(b",\"products\":");
        artifacts(&self.products, &mut out);
        out.push(b'}');
        Ok(out)
    }

    /// [`Link::to_value`] as Python's `json.dumps(..., sort_keys=True)`
    /// writes it at nesting `depth`, without building the value tree.
    pub fn write_py(&self, style: PyStyle, depth: usize, out: &mut String) {
        let artifacts = |m: &ArtifactMap, out: &mut String| {
            let mut c = PyContainer::object(out, style, depth + 1);
            for (path, hashes) in m {
                let mut h = PyContainer::object(c.key(path), style, depth + 2);
                for (alg, digest) in hashes {
                    write_py_str(digest, h.key(alg));
                }
                h.end();
            }
            c.end();
        };
        out.reserve(1024 + self.artifact_text_len(16 + 4 * depth));
        let mut c = PyContainer::object(out, style, depth);
        write_py_str("link", c.key("_type"));
        write_py_object(&self.byproducts, style, depth + 1, c.key("byproducts"));
        let mut cmd = PyContainer::array(c.key("command"), style, depth + 1);
        for word in &self.command {
            write_py_str(word, cmd.item());
        }
        cmd.end();
        write_py_object(&self.environment, style, depth + 1, c.key("environment"));
        artifacts(&self.materials, c.key("materials"));
        write_py_str(&self.name, c.key("name"));
        artifacts(&self.products, c.key("products"));
        c.end();
    }

    /// About how many bytes the artifact maps take as JSON text, with `extra`
    /// bytes of quotes, separators and indentation per entry (sizes output
    /// buffers once: growing a multi-megabyte buffer by doubling costs more
    /// than the writing).
    fn artifact_text_len(&self, extra: usize) -> usize {
        self.materials
            .iter()
            .chain(&self.products)
            .map(|(path, hashes)| {
                path.len()
                    + extra
                    + hashes
                        .iter()
                        .map(|(a, d)| a.len() + d.len() + extra)
                        .sum::<usize>()
            })
            .sum()
    }

    /// The dict the reference signs (`attr.asdict(link)`).
    pub fn to_value(&self) -> Value {
        json!({
            "_type": "link",
            "name": self.name,
            "command": self.command,
            "materials": self.materials,
            "products": self.products,
            "byproducts": self.byproducts,
            "environment": self.environment,
        })
    }
}

fn artifacts(f: &Fields, field: &str) -> Result<ArtifactMap, FormatError> {
    let mut out = ArtifactMap::new();
    let Some(map) = f.object_ref(field)? else {
        return Ok(out);
    };
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
                    dict.insert(alg.clone(), d.clone());
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
        out.insert(name.clone(), dict);
    }
    Ok(out)
}
