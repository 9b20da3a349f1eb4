#!/usr/bin/env bash
# Regenerates the sample .crate and its in-toto metadata (sample keys, demo only).
# Needs cargo. Usage: testdata/samples/crate/make.sh  (uses $TOTOGATE or target/release/totogate)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tt=${TOTOGATE:-$here/../../../target/release/totogate}
cd "$here"
rm -rf links root.layout hello-sample-0.1.0.crate owner owner.pub alice alice.pub
# Package outside any git checkout, so cargo adds no .cargo_vcs_info.json.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
"$tt" keygen owner
"$tt" keygen alice
mkdir -p "$src/src" links
cat > "$src/Cargo.toml" <<'TOML'
[package]
name = "hello-sample"
version = "0.1.0"
edition = "2021"
description = "totogate sample crate"
license = "Apache-2.0"

[workspace]
TOML
printf 'fn main() {\n    println!("hello from a verified crate");\n}\n' > "$src/src/main.rs"
# The package step: alice runs `cargo package` on the sources.
(cd "$src" && "$tt" run -n package --signing-key "$here/alice" -d "$here/links" \
  -m src/main.rs Cargo.toml -p target/package/hello-sample-0.1.0.crate --lstrip-paths target/package/ -- \
  cargo package --allow-dirty --no-verify --offline --quiet)
cp "$src/target/package/hello-sample-0.1.0.crate" .
cat > layout.json <<'JSON'
{
  "expires": "2036-01-01T00:00:00Z",
  "readme": "Sample: alice packages hello-sample; at install time the crate's sources must be what she packaged.",
  "keys": {"alice": "alice.pub"},
  "steps": [
    {"name": "package", "pubkeys": ["alice"],
     "expected_command": ["cargo", "package", "--allow-dirty", "--no-verify", "--offline", "--quiet"],
     "expected_materials": [["ALLOW", "src/*"], ["ALLOW", "Cargo.toml"], ["DISALLOW", "*"]],
     "expected_products": [["CREATE", "*.crate"], ["DISALLOW", "*"]]}
  ],
  "inspect": [
    {"name": "sources", "run": ["test", "-f", "hello-sample-0.1.0/src/main.rs"],
     "expected_materials": [["MATCH", "*.crate", "WITH", "PRODUCTS", "FROM", "package"],
                            ["MATCH", "src/*", "IN", "hello-sample-0.1.0", "WITH", "MATERIALS", "FROM", "package"],
                            ["ALLOW", "hello-sample-0.1.0/Cargo.toml.orig"],
                            ["ALLOW", "hello-sample-0.1.0/Cargo.toml"],
                            ["ALLOW", "hello-sample-0.1.0/Cargo.lock"],
                            ["DISALLOW", "*"]],
     "expected_products": [["MATCH", "*", "WITH", "MATERIALS", "FROM", "sources"], ["DISALLOW", "*"]]}
  ]
}
JSON
"$tt" layout layout.json -o root.layout --signing-key owner
