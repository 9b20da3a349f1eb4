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
    for (name, hashes) in f.object(field)? {
        let path = format!("{}[{name:?}]", f.at(field));
        let Value::Object(hashes) = hashes else {
            return Err(err(path, Problem::WrongType("an object of hashes")));
        };
        let mut dict = HashDict::new();
        for (alg, digest) in hashes {
            match digest {
                Value::String(d) if is_hex(&d) => {
                    dict.insert(alg, d);
                }
                Value::String(d) => return Err(err(format!("{path}.{alg}"), Problem::NotHex(d))),
                _ => {
                    return Err(err(
                        format!("{path}.{alg}"),
                        Problem::WrongType("a hex string"),
                    ))
                }
            }
        }
        out.insert(name, dict);
    }
    Ok(out)
}
