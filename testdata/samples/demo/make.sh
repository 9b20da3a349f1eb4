#!/usr/bin/env bash
# Regenerates the bundled sample supply chain with totogate itself.
# Usage: testdata/samples/demo/make.sh   (uses $TOTOGATE or target/release/totogate)
# The keys here are sample keys, for this demo only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tt=${TOTOGATE:-$here/../../../target/release/totogate}
cd "$here"
rm -rf links root.layout hello.tar.gz owner owner.pub alice alice.pub bob bob.pub
for k in owner alice bob; do "$tt" keygen "$k"; done
mkdir -p links project
printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' > project/hello.c
printf 'hello: hello.c\n\tcc -o hello hello.c\n' > project/Makefile
# Step 1: alice writes the code.
"$tt" run -n write-code --signing-key alice -p project -d links -x
# Step 2: bob packages it (reproducible tarball: fixed order, owner, mtime).
"$tt" run -n package --signing-key bob -m project -p hello.tar.gz -d links -- \
  sh -c 'tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=2026-01-01 -cf - project | gzip -n > hello.tar.gz'
cat > layout.json <<'JSON'
{
  "expires": "2036-01-01T00:00:00Z",
  "readme": "totogate sample: alice writes the code, bob packages it; the verifier lists the tarball, and the tarball and sources in its working directory must be what they made (other files there, such as this metadata, are allowed).",
  "keys": {"alice": "alice.pub", "bob": "bob.pub"},
  "steps": [
    {"name": "write-code", "pubkeys": ["alice"], "expected_command": [],
     "expected_materials": [],
     "expected_products": [["CREATE", "project/hello.c"], ["CREATE", "project/Makefile"], ["DISALLOW", "*"]]},
    {"name": "package", "pubkeys": ["bob"],
     "expected_command": ["sh", "-c", "tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=2026-01-01 -cf - project | gzip -n > hello.tar.gz"],
     "expected_materials": [["MATCH", "project/*", "WITH", "PRODUCTS", "FROM", "write-code"], ["DISALLOW", "*"]],
     "expected_products": [["CREATE", "hello.tar.gz"], ["DISALLOW", "*"]]}
  ],
  "inspect": [
    {"name": "list-tarball", "run": ["tar", "tzf", "hello.tar.gz"],
     "expected_materials": [["MATCH", "hello.tar.gz", "WITH", "PRODUCTS", "FROM", "package"],
                            ["MATCH", "project/*", "WITH", "PRODUCTS", "FROM", "write-code"],
                            ["DISALLOW", "hello.tar.gz"], ["DISALLOW", "project/*"],
                            ["ALLOW", "*"]],
     "expected_products": [["MATCH", "hello.tar.gz", "WITH", "PRODUCTS", "FROM", "package"],
                           ["MATCH", "project/*", "WITH", "PRODUCTS", "FROM", "write-code"],
                           ["DISALLOW", "hello.tar.gz"], ["DISALLOW", "project/*"],
                           ["ALLOW", "*"]]}
  ]
}
JSON
"$tt" layout layout.json -o root.layout --signing-key owner
"$tt" verify -l root.layout --verification-keys owner.pub --link-dir links -v
