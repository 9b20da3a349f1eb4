#!/usr/bin/env bash
# `totogate check` on a 50 MB .deb with 5,000 files vs the floor of doing the
# unpack-and-hash by hand: `dpkg-deb -x` followed by `openssl dgst -sha256`
# over the unpacked tree (OpenSSL uses SHA-NI here), side by side in one run.
# Target: totogate check within 1.5x of that pair.
#
#   fixture: pkgroot/ = DEBIAN/control + 5,000 files of 10,000 bytes of
#            /dev/urandom data (incompressible) in usr/share/bench/dNN/sNN/
#            (10 x 10 dirs x 50 files, ~50 MB), built with
#            `dpkg-deb --root-owner-group -Zgzip --build` (gzip: the common,
#            fast case; on random data it cannot shrink anything).
#   metadata: step `build` (alice) records pkgroot as materials
#            (--lstrip-paths pkgroot/) and pkg.deb as product; the layout
#            (owner) has one inspection `contents` running `true` whose
#            materials must MATCH the .deb against build's products and the
#            unpacked tree against build's materials (same shape as
#            testdata/samples/deb/make.sh).
#
#   (A) totogate check pkg.deb --layout root.layout --layout-key owner.pub --link-dir links
#   (B) rm -rf x && mkdir x && dpkg-deb -x pkg.deb x &&
#       find x -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null
#
# (A) does more work than (B): besides unpacking, it verifies the layout and
# link signatures and the step's rules, copies the .deb beside its contents,
# records the working dir twice (the inspection's materials before and
# products after, i.e. it hashes the 50 MB tree + the .deb twice), and
# starts the inspection in the sandbox.
#
# Usage: benches/check.sh
# Env:   TOTOGATE   totogate binary        (default: target/release/totogate)
#        BENCH_DIR  fixtures + results     (default: target/bench)
#        RUNS       hyperfine runs         (default: 5)
#        CHECK_ARGS extra args for totogate check (e.g. --allow-weak-sandbox)
# The fixture is built once and reused (delete $BENCH_DIR/check to rebuild).
# Page cache warm (hyperfine --warmup 1).
set -euo pipefail

bench=check
. "$(dirname "$0")/lib.sh"
needs hyperfine openssl jq dpkg-deb
RUNS=${RUNS:-5}
CHECK_ARGS=${CHECK_ARGS:-}

work=$(realpath -m "$BENCH_DIR/check")
mkdir -p "$work/results"
cd "$work"

pin_binary "$work"
echo "# totogate:  $TG ($("$TG" --version))"
echo "# dpkg-deb:  $(dpkg-deb --version | head -1)"
echo "# openssl:   $(openssl version)"
echo "# machine:   nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%FT%TZ)"

# --- fixture ------------------------------------------------------------------
if [ ! -f fixture.done ]; then
  echo "# building fixture: 5,000 x 10,000 B random files + DEBIAN/control, dpkg-deb -Zgzip"
  rm -rf pkgroot links pkg.deb root.layout layout.json owner owner.pub alice alice.pub
  "$TG" keygen owner >/dev/null
  "$TG" keygen alice >/dev/null
  mkdir -p pkgroot/DEBIAN links
  cat > pkgroot/DEBIAN/control <<'CONTROL'
Package: benchdata
Version: 1.0
Architecture: all
Maintainer: totogate bench <bench@totogate.invalid>
Description: 5,000 files of random data
 Benchmark fixture for benches/check.sh.
CONTROL
  for a in $(seq -w 0 9); do for b in $(seq -w 0 9); do
    d=pkgroot/usr/share/bench/d$a/s$b
    mkdir -p "$d"
    # one urandom read split into 50 x 10,000-byte files
    head -c $((50 * 10000)) /dev/urandom | (cd "$d" && split -b 10000 -a 2 -d - f)
  done; done
  # The build step: alice builds the .deb from the staged tree.
  SOURCE_DATE_EPOCH=1767225600 "$TG" run -q -n build --signing-key alice -d links \
    -m pkgroot --lstrip-paths pkgroot/ -p pkg.deb -- \
    dpkg-deb --root-owner-group -Zgzip --build pkgroot pkg.deb
  cat > layout.json <<'JSON'
{
  "expires_in_days": 365,
  "keys": {"alice": "alice.pub"},
  "steps": [
    {"name": "build", "pubkeys": ["alice"], "threshold": 1,
     "expected_command": ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", "pkgroot", "pkg.deb"],
     "expected_materials": [["ALLOW", "DEBIAN/*"], ["ALLOW", "usr/*"], ["DISALLOW", "*"]],
     "expected_products": [["CREATE", "*.deb"], ["DISALLOW", "*"]]}
  ],
  "inspect": [
    {"name": "contents", "run": ["true"],
     "expected_materials": [["MATCH", "*.deb", "WITH", "PRODUCTS", "FROM", "build"],
                            ["MATCH", "usr/*", "WITH", "MATERIALS", "FROM", "build"],
                            ["MATCH", "DEBIAN/*", "WITH", "MATERIALS", "FROM", "build"],
                            ["DISALLOW", "*"]],
     "expected_products": [["MATCH", "*", "WITH", "MATERIALS", "FROM", "contents"], ["DISALLOW", "*"]]}
  ]
}
JSON
  "$TG" layout layout.json -o root.layout --signing-key owner >/dev/null
  touch fixture.done
fi
nfiles=$(find pkgroot -type f | wc -l)
[ "$nfiles" = 5001 ] || die "pkgroot has $nfiles files, expected 5001 (5,000 + DEBIAN/control)"
echo "# fixture: pkg.deb $(stat -c %s pkg.deb) bytes, $(find pkgroot/usr -type f -printf '%s\n' | awk '{s+=$1} END{print s}') bytes in $((nfiles - 1)) data files + DEBIAN/control;" \
  "build link lists $(jq '.signed.materials | length' links/build.*.link) materials"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# --- sanity: the check must allow the package, and (B) must see every file --
A_CMD="$TG check pkg.deb --layout root.layout --layout-key owner.pub --link-dir links $CHECK_ARGS"
B_CMD="rm -rf x && mkdir x && dpkg-deb -x pkg.deb x && find x -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null"
rc=0; $A_CMD > results/check.out 2>&1 || rc=$?
if [ "$rc" != 0 ]; then cat results/check.out >&2; die "'totogate check' exited $rc, expected 0 (allow)"; fi
echo "# totogate check exits 0: $(tail -1 results/check.out)"
rm -rf x && mkdir x && dpkg-deb -x pkg.deb x
n=$(find x -type f | wc -l)
[ "$n" = 5000 ] || die "dpkg-deb -x gave $n files, expected 5000"
echo "# dpkg-deb -x unpacks $n files"

echo "# load before: $(loadavg)"
hyperfine --warmup 1 --runs "$RUNS" \
  --export-json results/check.json --export-markdown results/check.md \
  -n "totogate check" "$A_CMD" \
  -n "dpkg-deb -x + openssl dgst" "bash -c '$B_CMD'"
echo "# load after: $(loadavg)"
echo
echo "## check: 50 MB .deb, 5,000 files"
jq -r '.results[] | "| \(.command) | \(.mean*1000|floor) ms ± \(.stddev*1000|floor) | user \(.user*1000|floor) ms, sys \(.system*1000|floor) ms |"' results/check.json
jq -r '
  (.results | map({(.command): .mean}) | add) as $m
  | "ratio totogate check / (dpkg-deb -x + openssl): \($m["totogate check"] / $m["dpkg-deb -x + openssl dgst"] * 100 | floor / 100)x (target <= 1.5x)"' results/check.json

