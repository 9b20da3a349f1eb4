use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{err, is_hex, Fields, FormatError, Problem};

/// Hash algorithm name → lowercase hex digest.
pub type HashDict = BTreeMap<String, String>;
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
        let size: usize = self.materials.len() + self.products.len();
        let mut out = Vec::with_capacity(256 + size * 100);
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
