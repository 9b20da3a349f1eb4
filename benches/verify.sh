#!/usr/bin/env bash
# `totogate verify` vs the reference `in-toto-verify`, side by side:
#   (a) demo chain: clone / update / package + inspection untar, tiny files
#   (b) 3 steps over 20,000 artifacts (MATCH between steps, DISALLOW *) plus an
#       inspection running `true` in a working dir holding the 20,000 files
#   (c) 50 steps in a chain, each MATCHing the previous step's products
#   (b) also times benches/floor.c, the inspection's file work alone in C (read
#       and SHA-256 every file, then stat every file): the floor under any
#       verifier's (b) on this machine
#   (d) process start: `totogate --version`, `totogate verify` on an empty
#       layout (hyperfine -N, no shell)
#
# Usage: benches/verify.sh
# Env:   TOTOGATE   totogate binary        (default: target/release/totogate)
#        ORACLE_BIN reference venv bin dir (default: target/oracle-venv/bin,
#                   falling back to /opt/intoto-venv/bin)
#        BENCH_DIR  fixtures + results     (default: target/bench)
#        RUNS       hyperfine runs for (a)-(c) (default: 10)
#        ONLY       one of a b c d to run one case only
# Fixtures are rebuilt on every run (links are cheap to make); the 20,000-file
# tree is reused if present. Page cache warm (hyperfine --warmup 1).
set -euo pipefail

bench=verify
. "$(dirname "$0")/lib.sh"
oracle in-toto-verify
needs hyperfine openssl jq cc
RUNS=${RUNS:-10}
ONLY=${ONLY:-}
REF_VERIFY=$ORACLE_BIN/in-toto-verify
REF_RUN=$ORACLE_BIN/in-toto-run

work=$(realpath -m "$BENCH_DIR/verify")
mkdir -p "$work/results"
cd "$work"

pin_binary "$work"
TOTOGATE=$TG

echo "# totogate:  $TG ($("$TG" --version))"
echo "# reference: $REF_VERIFY ($("$REF_VERIFY" --version 2>&1 | head -1))"
echo "# machine:   nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%FT%TZ)"

# `totogate keygen` before commit 67253a4 wrote PKCS#8 v2 (RFC 5958, with the
# public key), which the reference (pyca/cryptography 50) and OpenSSL 3.0
# refuse ("ASN.1 parsing error: extra data"). Keys are only needed by `totogate run`/`layout` here,
# but keep them usable by both: fall back to an OpenSSL-made ed25519 key.
make_key() { # NAME
  local k=$1 probe
  [ -f "$k" ] && [ -f "$k.pub" ] && return 0
  "$TG" keygen "$k" >/dev/null 2>&1 || die "totogate keygen $k failed"
  probe=$(mktemp -d)
  if ! "$REF_RUN" -n probe --signing-key "$k" -x -d "$probe" >/dev/null 2>&1; then
    echo "# WARNING: in-toto-run cannot load the key from 'totogate keygen $k'; using openssl genpkey -algorithm ed25519 instead" >&2
    openssl genpkey -algorithm ed25519 -out "$k" && openssl pkey -in "$k" -pubout -out "$k.pub"
  fi
  rm -rf "$probe"
}
make_key owner
make_key alice
KEYS=$work

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# check_pass DIR: both verifiers must exit 0 on DIR's chain (cwd = DIR/ws).
check_pass() {
  local d=$1 layout=${2:-root.layout} rc
  for v in "$REF_VERIFY" "$TG verify"; do
    rc=0
    (cd "$d/ws" && $v -l "../$layout" --verification-keys "$KEYS/owner.pub" --link-dir ../links) \
      > "$d/check.out" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
      cat "$d/check.out" >&2
      die "$d: '$v' exited $rc, expected 0 (PASS)"
    fi
  done
  echo "# $d ($layout): in-toto-verify and totogate verify both PASS"
}

# bench NAME DIR [LAYOUT [LABEL COMMAND]]: hyperfine both verifiers on DIR's
# chain, and COMMAND (named LABEL) in the same run if given.
bench() {
  local name=$1 d=$2 layout=${3:-root.layout}
  local extra=()
  [ $# -ge 5 ] && extra=(-n "$4" "$5")
  check_pass "$d" "$layout"
  echo "# ($name) load before: $(loadavg)"
  # -N (no shell): hyperfine runs in DIR/ws so the inspections see that dir.
  (cd "$d/ws" && hyperfine -N --warmup 1 --runs "$RUNS" \
    --export-json "$work/results/$name.json" --export-markdown "$work/results/$name.md" \
    -n "in-toto-verify ($name)" "$REF_VERIFY -l ../$layout --verification-keys $KEYS/owner.pub --link-dir ../links" \
    -n "totogate verify ($name)" "$TG verify -l ../$layout --verification-keys $KEYS/owner.pub --link-dir ../links" \
    "${extra[@]}")
  echo "# ($name) load after: $(loadavg)"
  jq -r --arg n "$name" '
    (.results | map({(.command): .mean}) | add) as $m
    | "(\($n)) speedup totogate vs in-toto-verify: \($m["in-toto-verify (\($n))"] / $m["totogate verify (\($n))"] * 10 | floor / 10)x"' \
    "results/$name.json"
}

# layout DIR TEMPLATE_JSON: write DIR/root.layout signed by owner.
layout() {
  printf '%s\n' "$2" > "$1/layout.json"
  "$TG" layout "$1/layout.json" -o "$1/root.layout" --signing-key "$KEYS/owner" >/dev/null
}

# --- (a) demo chain -------------------------------------------------------------
if [ -z "$ONLY" ] || [ "$ONLY" = a ]; then
  d=$work/demo; rm -rf "$d"; mkdir -p "$d/ws" "$d/links"
  (
    cd "$d/ws"
    mkdir demo-project; printf 'print("hello")\n' > demo-project/foo.py
    "$TG" run -q -n clone --signing-key "$KEYS/alice" -d ../links -p demo-project/foo.py -- true
    "$TG" run -q -n update --signing-key "$KEYS/alice" -d ../links -m demo-project/foo.py -p demo-project/foo.py \
      -- sh -c 'echo "# updated" >> demo-project/foo.py'
    "$TG" run -q -n package --signing-key "$KEYS/alice" -d ../links -m demo-project/foo.py -p demo-project.tar.gz \
      -- tar czf demo-project.tar.gz demo-project
    rm -rf demo-project   # the verifier's working dir holds only the tarball
  )
  layout "$d" '{
    "expires_in_days": 365, "keys": {"alice": "'"$KEYS"'/alice.pub"},
    "steps": [
      {"name": "clone", "pubkeys": ["alice"], "threshold": 1, "expected_command": ["true"],
       "expected_materials": [],
       "expected_products": [["CREATE", "demo-project/foo.py"], ["DISALLOW", "*"]]},
      {"name": "update", "pubkeys": ["alice"], "threshold": 1,
       "expected_command": ["sh", "-c", "echo \"# updated\" >> demo-project/foo.py"],
       "expected_materials": [["MATCH", "demo-project/*", "WITH", "PRODUCTS", "FROM", "clone"], ["DISALLOW", "*"]],
       "expected_products": [["MODIFY", "demo-project/foo.py"], ["DISALLOW", "*"]]},
      {"name": "package", "pubkeys": ["alice"], "threshold": 1,
       "expected_command": ["tar", "czf", "demo-project.tar.gz", "demo-project"],
       "expected_materials": [["MATCH", "demo-project/*", "WITH", "PRODUCTS", "FROM", "update"], ["DISALLOW", "*"]],
       "expected_products": [["CREATE", "demo-project.tar.gz"], ["DISALLOW", "*"]]}
    ],
    "inspect": [
      {"name": "untar", "run": ["tar", "xzf", "demo-project.tar.gz"],
       "expected_materials": [["MATCH", "demo-project.tar.gz", "WITH", "PRODUCTS", "FROM", "package"],
                              ["ALLOW", "demo-project/foo.py"], ["DISALLOW", "*"]],
       "expected_products": [["MATCH", "demo-project/foo.py", "WITH", "PRODUCTS", "FROM", "update"],
                             ["ALLOW", "demo-project.tar.gz"], ["DISALLOW", "*"]]}
    ]}'
  bench a "$d"
fi

# --- (b) 3 steps over 20,000 artifacts + inspection -----------------------------
if [ -z "$ONLY" ] || [ "$ONLY" = b ]; then
  d=$work/big
  if [ ! -f "$d/tree.done" ]; then
    echo "# building 20,000 x 4 KiB tree (20 dirs x 10 subdirs x 100 files)"
    rm -rf "$d"; mkdir -p "$d/ws/src"
    for a in $(seq -w 0 19); do for b in $(seq -w 0 9); do
      mkdir -p "$d/ws/src/d$a/s$b"
      head -c $((100 * 4096)) /dev/urandom | (cd "$d/ws/src/d$a/s$b" && split -b 4096 -a 3 -d - f)
    done; done
    touch "$d/tree.done"
  fi
  n=$(find "$d/ws" -type f -not -name '*.link' | wc -l)
  [ "$n" = 20000 ] || die "(b) working dir has $n files, expected 20000"
  rm -rf "$d/links"; mkdir -p "$d/links"
  (
    cd "$d/ws"
    "$TG" run -q -n fetch --signing-key "$KEYS/alice" -d ../links -x -p src
    "$TG" run -q -n build --signing-key "$KEYS/alice" -d ../links -x -m src -p src
    "$TG" run -q -n package --signing-key "$KEYS/alice" -d ../links -x -m src -p src
  )
  layout "$d" '{
    "expires_in_days": 365, "keys": {"alice": "'"$KEYS"'/alice.pub"},
    "steps": [
      {"name": "fetch", "pubkeys": ["alice"], "threshold": 1,
       "expected_materials": [["DISALLOW", "*"]],
       "expected_products": [["CREATE", "src/*"], ["DISALLOW", "*"]]},
      {"name": "build", "pubkeys": ["alice"], "threshold": 1,
       "expected_materials": [["MATCH", "*", "WITH", "PRODUCTS", "FROM", "fetch"], ["DISALLOW", "*"]],
       "expected_products": [["MATCH", "*", "WITH", "MATERIALS", "FROM", "build"], ["DISALLOW", "*"]]},
      {"name": "package", "pubkeys": ["alice"], "threshold": 1,
       "expected_materials": [["MATCH", "*", "WITH", "PRODUCTS", "FROM", "build"], ["DISALLOW", "*"]],
       "expected_products": [["MATCH", "*", "WITH", "PRODUCTS", "FROM", "build"], ["DISALLOW", "*"]]}
    ],
    "inspect": [
      {"name": "check", "run": ["true"],
       "expected_materials": [["ALLOW", "*"]], "expected_products": [["ALLOW", "*"]]}
    ]}'
  # The floor: only the file work the inspection's two snapshots need (read
  # and SHA-256 every file, then stat every file), in C (benches/floor.c).
  cc -O2 -pthread -o "$work/floor" "$root/benches/floor.c" -lcrypto \
    || die "cannot build benches/floor.c (apt-get install -y gcc libssl-dev)"
  (cd "$d/ws" && "$work/floor" .)
  bench b "$d" root.layout "floor (b): the inspection's file work alone, C" "$work/floor ."
  # Both ratios to the floor: what the machine allows, in the same run.
  jq -r '
    (.results | map({(.command): .mean}) | add) as $m
    | $m["floor (b): the inspection'"'"'s file work alone, C"] as $f
    | "(b) totogate / floor: \($m["totogate verify (b)"] / $f * 100 | floor / 100)x; in-toto-verify / floor: \($m["in-toto-verify (b)"] / $f * 10 | floor / 10)x"' \
    "results/b.json"
  # (b0) diagnostic: the same links without the inspection, to split the time
  # between loading/checking the 3 x 20,000-artifact links and the inspection.
  jq '.inspect = []' "$d/layout.json" > "$d/layout-noinsp.json"
  "$TG" layout "$d/layout-noinsp.json" -o "$d/noinsp.layout" --signing-key "$KEYS/owner" >/dev/null
  bench b0 "$d" noinsp.layout
fi

# --- (c) 50 steps ------------------------------------------------------------------
if [ -z "$ONLY" ] || [ "$ONLY" = c ]; then
  d=$work/chain50; rm -rf "$d"; mkdir -p "$d/ws/files" "$d/links"
  for i in 1 2 3 4 5; do echo "artifact $i" > "$d/ws/files/a$i.txt"; done
  (
    cd "$d/ws"
    "$TG" run -q -n s00 --signing-key "$KEYS/alice" -d ../links -x -p files
    for i in $(seq -w 1 49); do
      "$TG" run -q -n "s$i" --signing-key "$KEYS/alice" -d ../links -x -m files -p files
    done
  )
  tmpl=$(jq -n --arg key "$KEYS/alice.pub" '{
    expires_in_days: 365, keys: {alice: $key},
    steps: ([{name: "s00", pubkeys: ["alice"], threshold: 1,
              expected_materials: [["DISALLOW", "*"]],
              expected_products: [["CREATE", "files/*"], ["DISALLOW", "*"]]}]
            + [range(1; 50) as $i | ($i | tostring | if length < 2 then "0" + . else . end) as $n
               | ($i - 1 | tostring | if length < 2 then "0" + . else . end) as $p
               | {name: "s\($n)", pubkeys: ["alice"], threshold: 1,
                  expected_materials: [["MATCH", "files/*", "WITH", "PRODUCTS", "FROM", "s\($p)"], ["DISALLOW", "*"]],
                  expected_products: [["MATCH", "files/*", "WITH", "PRODUCTS", "FROM", "s\($p)"], ["DISALLOW", "*"]]}]),
    inspect: []}')
  layout "$d" "$tmpl"
  bench c "$d"
fi

# --- (d) process start ---------------------------------------------------------------
if [ -z "$ONLY" ] || [ "$ONLY" = d ]; then
  d=$work/empty; rm -rf "$d"; mkdir -p "$d/ws" "$d/links"
  layout "$d" '{"expires_in_days": 365, "steps": [], "inspect": []}'
  check_pass "$d"
  cd "$d/ws"
  echo "# (d) load before: $(loadavg)"
  hyperfine -N --warmup 20 --runs 200 \
    --export-json "$work/results/d.json" --export-markdown "$work/results/d.md" \
    -n "totogate --version" "$TG --version" \
    -n "totogate verify (empty layout)" "$TG verify -l ../root.layout --verification-keys $KEYS/owner.pub --link-dir ../links" \
    -n "in-toto-verify (empty layout)" "$REF_VERIFY -l ../root.layout --verification-keys $KEYS/owner.pub --link-dir ../links"
  echo "# (d) load after: $(loadavg)"
  cd "$work"
fi
