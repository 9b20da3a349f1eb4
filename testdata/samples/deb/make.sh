#!/usr/bin/env bash
# Regenerates the sample .deb and its in-toto metadata (sample keys, demo only).
# Needs dpkg-deb. Usage: testdata/samples/deb/make.sh  (uses $TOTOGATE or target/release/totogate)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tt=${TOTOGATE:-$here/../../../target/release/totogate}
cd "$here"
rm -rf pkgroot links root.layout hello_1.0_all.deb owner owner.pub alice alice.pub
"$tt" keygen owner
"$tt" keygen alice
mkdir -p pkgroot/DEBIAN pkgroot/usr/bin links
cat > pkgroot/DEBIAN/control <<'CONTROL'
Package: hello
Version: 1.0
Architecture: all
Maintainer: totogate samples <samples@totogate.invalid>
Description: says hello
 A tiny package for totogate's sample supply chain.
CONTROL
printf '#!/bin/sh\necho "hello from a verified package"\n' > pkgroot/usr/bin/hello
chmod 0755 pkgroot/usr/bin/hello
# The build step: alice builds the .deb from the staged tree.
SOURCE_DATE_EPOCH=1767225600 "$tt" run -n build --signing-key alice -d links \
  -m pkgroot --lstrip-paths pkgroot/ -p hello_1.0_all.deb -- \
  dpkg-deb --root-owner-group -Zgzip --build pkgroot hello_1.0_all.deb
cat > layout.json <<'JSON'
{
  "expires": "2036-01-01T00:00:00Z",
  "readme": "Sample: alice builds hello_1.0_all.deb; at install time its contents must be exactly what she built from.",
  "keys": {"alice": "alice.pub"},
  "steps": [
    {"name": "build", "pubkeys": ["alice"],
     "expected_command": ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", "pkgroot", "hello_1.0_all.deb"],
     "expected_materials": [["ALLOW", "DEBIAN/*"], ["ALLOW", "usr/*"], ["DISALLOW", "*"]],
     "expected_products": [["CREATE", "*.deb"], ["DISALLOW", "*"]]}
  ],
  "inspect": [
    {"name": "contents", "run": ["sh", "-c", "test -x usr/bin/hello && ./usr/bin/hello"],
     "expected_materials": [["MATCH", "*.deb", "WITH", "PRODUCTS", "FROM", "build"],
                            ["MATCH", "usr/*", "WITH", "MATERIALS", "FROM", "build"],
                            ["MATCH", "DEBIAN/*", "WITH", "MATERIALS", "FROM", "build"],
                            ["DISALLOW", "*"]],
     "expected_products": [["MATCH", "*", "WITH", "MATERIALS", "FROM", "contents"], ["DISALLOW", "*"]]}
  ]
}
JSON
"$tt" layout layout.json -o root.layout --signing-key owner
rm -rf pkgroot
