//! `totogate layout`: build a layout from a small JSON template that names
//! functionary keys by their PEM files, then sign it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use totogate::model::{format_expiry, Envelope, Layout, Payload};

#[derive(Args)]
#[command(
    after_help = "Template (JSON; key paths are relative to the template's directory):\n\
{\n  \"expires\": \"2027-01-01T00:00:00Z\",   (or \"expires_in_days\": 30)\n  \"readme\": \"...\",\n  \
\"keys\": {\"alice\": \"alice.pub\"},\n  \"steps\": [{\"name\": \"build\", \"pubkeys\": [\"alice\"], \"threshold\": 1,\n    \
\"expected_command\": [\"make\"], \"expected_materials\": [[\"ALLOW\", \"*\"]],\n    \
\"expected_products\": [[\"CREATE\", \"out\"], [\"DISALLOW\", \"*\"]]}],\n  \
\"inspect\": [{\"name\": \"check\", \"run\": [\"true\"], \"expected_materials\": [], \"expected_products\": []}]\n}"
)]
pub struct LayoutArgs {
    /// The template to build the layout from
    template: PathBuf,
    /// Where to write the signed layout
    #[arg(short = 'o', long, value_name = "PATH")]
    output: PathBuf,
    /// Private keys of the layout owner(s) to sign with
    #[arg(long = "signing-key", value_name = "PATH", num_args = 1.., required = true)]
    signing_key: Vec<PathBuf>,
    /// Password for encrypted signing keys; `-P` alone prompts
    #[arg(short = 'P', long, value_name = "PASSWORD", num_args = 0..=1, default_missing_value = "\u{0}prompt")]
    password: Option<String>,
    /// Write a DSSE envelope instead of a Metablock
    #[arg(long = "use-dsse")]
    use_dsse: bool,
}

pub fn run(a: LayoutArgs) -> Result<u8> {
    let text = crate::read_text(&a.template)?;
    let t: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not JSON", a.template.display()))?;
    let base = a.template.parent().unwrap_or(Path::new(".")).to_path_buf();
    let layout = build(&t, &base).with_context(|| format!("{}", a.template.display()))?;
    let pw = super::password(&a.password, "the layout key(s)")?;
    let mut env = Envelope::new(super::envelope_kind(a.use_dsse), Payload::Layout(layout))?;
    for k in &a.signing_key {
        let key = crate::load_private(k, pw.as_deref())?;
        env.sign(&key)?;
    }
    crate::write_envelope(&a.output, &env)?;
    Ok(0)
}

fn build(t: &Value, base: &Path) -> Result<Layout> {
    let obj = t
        .as_object()
        .ok_or_else(|| anyhow!("template must be a JSON object"))?;
    let mut names: Map<String, Value> = Map::new();
    let mut keys = Map::new();
    if let Some(k) = obj.get("keys") {
        let k = k
            .as_object()
            .ok_or_else(|| anyhow!("`keys` must map names to PEM paths"))?;
        for (name, path) in k {
            let path = path
                .as_str()
                .ok_or_else(|| anyhow!("keys.{name}: expected a path"))?;
            let key = crate::load_public(&base.join(path))?;
            names.insert(name.clone(), json!(key.keyid().as_str()));
            keys.insert(key.keyid().as_str().to_owned(), key.to_dict());
        }
    }
    let expires = match (obj.get("expires"), obj.get("expires_in_days")) {
        (Some(Value::String(s)), None) => s.clone(),
        (None, Some(Value::Number(n))) => {
            let days = n
                .as_i64()
                .ok_or_else(|| anyhow!("expires_in_days: whole days"))?;
            format_expiry(time::OffsetDateTime::now_utc() + time::Duration::days(days))
        }
        (None, None) => bail!("give `expires` (YYYY-MM-DDTHH:MM:SSZ) or `expires_in_days`"),
        _ => bail!("give one of `expires` (a string) or `expires_in_days` (a number)"),
    };
    let command = |v: Option<&Value>| -> Value {
        match v {
            Some(Value::String(s)) => json!(s.split_whitespace().collect::<Vec<_>>()),
            Some(v) => v.clone(),
            None => json!([]),
        }
    };
    let mut steps = Vec::new();
    for s in obj
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut s = s.clone();
        let pubkeys: Vec<Value> = s
            .get("pubkeys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                let n = p.as_str().unwrap_or_default();
                names.get(n).cloned().unwrap_or_else(|| p.clone())
            })
            .collect();
        s["pubkeys"] = json!(pubkeys);
        s["expected_command"] = command(s.get("expected_command"));
        steps.push(s);
    }
    let mut inspect = Vec::new();
    for i in obj
        .get("inspect")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut i = i.clone();
        i["run"] = command(i.get("run"));
        inspect.push(i);
    }
    let v = json!({
        "_type": "layout",
        "expires": expires,
        "readme": obj.get("readme").cloned().unwrap_or(json!("")),
        "keys": keys,
        "steps": steps,
        "inspect": inspect,
    });
    Ok(Layout::from_value(&v, "layout")?)
}
