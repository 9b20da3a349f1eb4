#!/usr/bin/env bash
# Hashing throughput: `totogate run -x -p DIR` vs the reference `in-toto-run`
# vs `openssl dgst -sha256` on the same trees.
#
#   (a) 1 GiB in 8 files of 128 MiB (random data)
#   (b) 20,000 files of 4 KiB in 20 dirs x 10 subdirs x 100 files
#
# Usage: benches/hashing.sh            (from the crate root, or anywhere)
# Env:   TOTOGATE   totogate binary        (default: target/release/totogate)
#        ORACLE_BIN reference venv bin dir (default: target/oracle-venv/bin,
#                   falling back to /opt/intoto-venv/bin)
#        BENCH_DIR  fixtures + results     (default: target/bench)
#        RUNS_A / RUNS_B  hyperfine runs   (default: 5 / 10)
#        ONLY       "a" or "b" to run one tree only
# Fixtures are built once and reused (delete $BENCH_DIR/hashing to rebuild).
# The page cache is warm: hyperfine does a warmup run before measuring and
# the fixtures were just written / read.
set -euo pipefail

bench=hashing
. "$(dirname "$0")/lib.sh"
oracle in-toto-run
needs hyperfine openssl jq
RUNS_A=${RUNS_A:-5}
RUNS_B=${RUNS_B:-10}
ONLY=${ONLY:-}

work=$(realpath -m "$BENCH_DIR/hashing")
mkdir -p "$work/out-tg" "$work/out-ref" "$work/results"
cd "$work"

pin_binary "$work"
TOTOGATE=$TG

echo "# totogate:  $TOTOGATE ($("$TOTOGATE" --version))"
echo "# reference: $ORACLE_BIN/in-toto-run ($("$ORACLE_BIN/in-toto-run" --version 2>&1 | head -1))"
echo "# openssl:   $(openssl version)"
echo "# machine:   nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%FT%TZ)"

# --- signing key (ed25519, made by totogate) --------------------------------
# `totogate keygen` before commit 67253a4 wrote PKCS#8 v2 (RFC 5958, with the
# public key), which the reference (pyca/cryptography 50) and OpenSSL 3.0
# refuse ("ASN.1 parsing error: extra data"), so if in-toto-run cannot sign with it, fall back to an
# OpenSSL-made ed25519 key (PKCS#8 v1), which both tools read.
make_key() { # NAME
  local k=$1 probe
  [ -f "$k" ] && [ -f "$k.pub" ] && return 0
  "$TOTOGATE" keygen "$k" >/dev/null 2>&1 || die "totogate keygen $k failed"
  probe=$(mktemp -d)
  if ! "$ORACLE_BIN/in-toto-run" -n probe --signing-key "$k" -x -d "$probe" >/dev/null 2>&1; then
    echo "# WARNING: in-toto-run cannot load the key from 'totogate keygen $k'; using openssl genpkey -algorithm ed25519 instead" >&2
    openssl genpkey -algorithm ed25519 -out "$k" && openssl pkey -in "$k" -pubout -out "$k.pub"
    "$ORACLE_BIN/in-toto-run" -n probe --signing-key "$k" -x -d "$probe" >/dev/null || die "in-toto-run cannot use $k"
  fi
  rm -rf "$probe"
}
make_key key

# --- fixtures ---------------------------------------------------------------
if [ ! -f big.done ]; then
  echo "# building tree (a): 8 x 128 MiB random files"
  rm -rf big; mkdir big
  for i in 1 2 3 4 5 6 7 8; do head -c $((128 << 20)) /dev/urandom > big/f$i.bin; done
  touch big.done
fi
if [ ! -f small.done ]; then
  echo "# building tree (b): 20 x 10 x 100 files of 4 KiB"
  rm -rf small; mkdir small
  for d in $(seq -w 0 19); do
    for s in $(seq -w 0 9); do
      mkdir -p small/d$d/s$s
      # one urandom read split into 100 x 4 KiB files
      head -c $((100 * 4096)) /dev/urandom | (cd small/d$d/s$s && split -b 4096 -a 3 -d - f)
    done
  done
  touch small.done
fi
nbig=$(find big -type f | wc -l); nsmall=$(find small -type f | wc -l)
[ "$nbig" = 8 ] || die "tree (a) has $nbig files, expected 8"
[ "$nsmall" = 20000 ] || die "tree (b) has $nsmall files, expected 20000"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# --- sanity: both tools record the same digests ------------------------------
check_same() {
  local dir=$1
  rm -f out-tg/*.link out-ref/*.link
  "$TOTOGATE" run -n bench --signing-key key -x -p "$dir" -d out-tg >/dev/null
  "$ORACLE_BIN/in-toto-run" -n bench --signing-key key -x -p "$dir" -d out-ref >/dev/null
  local a b
  a=$(jq -S -c '.signed.products' out-tg/bench.*.link | sha256sum)
  b=$(jq -S -c '.signed.products' out-ref/bench.*.link | sha256sum)
  [ "$a" = "$b" ] || die "products of $dir differ between totogate and in-toto-run"
  echo "# $dir: totogate and in-toto-run record identical products ($(jq '.signed.products | length' out-tg/bench.*.link) artifacts)"
}

# --- (a) 1 GiB in 8 x 128 MiB ---------------------------------------------------
if [ -z "$ONLY" ] || [ "$ONLY" = a ]; then
  check_same big
  echo "# (a) load before: $(loadavg)"
  hyperfine --warmup 1 --runs "$RUNS_A" \
    --export-json results/a.json --export-markdown results/a.md \
    -n "totogate run -x -p big" "$TOTOGATE run -n bench --signing-key key -x -p big -d out-tg" \
    -n "in-toto-run -x -p big" "$ORACLE_BIN/in-toto-run -n bench --signing-key key -x -p big -d out-ref" \
    -n "openssl dgst -sha256 (1 process)" "openssl dgst -sha256 big/f1.bin big/f2.bin big/f3.bin big/f4.bin big/f5.bin big/f6.bin big/f7.bin big/f8.bin > /dev/null" \
    -n "openssl dgst -sha256 (xargs -P2)" "printf '%s\n' big/f*.bin | xargs -P2 -n4 openssl dgst -sha256 > /dev/null"
  echo "# (a) load after: $(loadavg)"
  echo
  echo "## (a) throughput (1024 MiB / mean)"
  jq -r '.results[] | "| \(.command) | \(.mean*1000|floor) ms ± \(.stddev*1000|floor) | \(1024/.mean|floor) MiB/s |"' results/a.json
  jq -r '
    (.results | map({(.command): .mean}) | add) as $m
    | "totogate vs single openssl: \($m["openssl dgst -sha256 (1 process)"] / $m["totogate run -x -p big"] * 100 | floor / 100)x (target >= 1.8x)",
      "totogate vs xargs -P2 openssl: \($m["openssl dgst -sha256 (xargs -P2)"] / $m["totogate run -x -p big"] * 100 | floor / 100)x",
      "totogate vs in-toto-run: \($m["in-toto-run -x -p big"] / $m["totogate run -x -p big"] * 100 | floor / 100)x"' results/a.json
fi

# --- (b) 20,000 x 4 KiB --------------------------------------------------------
if [ -z "$ONLY" ] || [ "$ONLY" = b ]; then
  check_same small
  echo "# (b) load before: $(loadavg)"
  hyperfine --warmup 1 --runs "$RUNS_B" \
    --export-json results/b.json --export-markdown results/b.md \
    -n "totogate run -x -p small" "$TOTOGATE run -n bench --signing-key key -x -p small -d out-tg" \
    -n "in-toto-run -x -p small" "$ORACLE_BIN/in-toto-run -n bench --signing-key key -x -p small -d out-ref" \
    -n "find | xargs openssl dgst -sha256" "find small -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null"
  echo "# (b) load after: $(loadavg)"
  echo
  echo "## (b) 20,000 x 4 KiB"
  jq -r '.results[] | "| \(.command) | \(.mean*1000|floor) ms ± \(.stddev*1000|floor) |"' results/b.json
  jq -r '
    (.results | map({(.command): .mean}) | add) as $m
    | "totogate vs in-toto-run: \($m["in-toto-run -x -p small"] / $m["totogate run -x -p small"] * 10 | floor / 10)x (target >= 10x, aim 20x)",
      "totogate vs find|xargs openssl: \($m["find | xargs openssl dgst -sha256"] / $m["totogate run -x -p small"] * 100 | floor / 100)x"' results/b.json
fi
