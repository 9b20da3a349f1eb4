#!/usr/bin/env bash
# `totogate mirror check`: bulk verification throughput and memory.
#   (a) 1,000 packages (500 .deb + 500 .crate, 10% tampered: rebuilt with
#       changed contents under the genuine metadata), sibling <pkg>.intoto/
#       metadata; packages/s with --jobs 1 and --jobs 2; peak RSS
#   (b) peak RSS at 10,000 packages (same files, hardlinked into more dirs)
#   (c) the reference in-toto-verify in a shell loop over the first 100
#       packages of (a), extrapolated per package (see below for what it does)
#
# Usage: benches/mirror.sh
# Env:   TOTOGATE   totogate binary        (default: target/release/totogate)
#        ORACLE_BIN reference venv bin dir (default: target/oracle-venv/bin,
#                   falling back to /opt/intoto-venv/bin)
#        BENCH_DIR  fixtures + results     (default: target/bench)
#        N_SMALL, N_LARGE, N_REF   pool sizes (default 1000, 10000, 100)
#        ONLY       one of a b c to run one case only
# Disk: packages and metadata files are hardlinks of a few originals, so the
# 10,000-package pool costs inodes and directories (~100 MB), not copies.
# Timing is one run each with /usr/bin/time (wall clock and max RSS), page
# cache warm (each pool is walked once before).
set -euo pipefail

bench=mirror
. "$(dirname "$0")/lib.sh"
oracle in-toto-verify
needs dpkg-deb tar jq /usr/bin/time
N_SMALL=${N_SMALL:-1000}
N_LARGE=${N_LARGE:-10000}
N_REF=${N_REF:-100}
ONLY=${ONLY:-}
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

work=$(realpath -m "$BENCH_DIR/mirror")
rm -rf "$work"
mkdir -p "$work/results" "$work/orig"
pin_binary "$work"
echo "# reference: $ORACLE_BIN/in-toto-verify ($("$ORACLE_BIN/in-toto-verify" --version 2>&1 | head -1))"
echo "# machine:   nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

DEB=hello_1.0_all.deb
CRATE=hello-sample-0.1.0.crate
S=$root/testdata/samples
o=$work/orig
cp "$S/deb/$DEB" "$o/good.deb"
cp "$S/crate/$CRATE" "$o/good.crate"
# Tampered .deb: same metadata, rebuilt by dpkg-deb with another /usr/bin/hello.
dpkg-deb -R "$S/deb/$DEB" "$o/deb-tree"
printf '#!/bin/sh\necho "tampered"\n' > "$o/deb-tree/usr/bin/hello"
dpkg-deb --root-owner-group -Zgzip --build "$o/deb-tree" "$o/tampered.deb" >/dev/null
# Tampered .crate: same metadata, re-tarred with another src/main.rs.
mkdir -p "$o/crate-tree"
tar -xzf "$S/crate/$CRATE" -C "$o/crate-tree"
echo 'fn main() { println!("tampered"); }' > "$o/crate-tree/hello-sample-0.1.0/src/main.rs"
tar -czf "$o/tampered.crate" -C "$o/crate-tree" hello-sample-0.1.0
for k in deb crate; do
  mkdir -p "$o/$k.intoto"
  cp "$S/$k/root.layout" "$S/$k/links/"* "$o/$k.intoto/"
  cp "$S/$k/owner.pub" "$work/$k-owner.pub"
done
cat > "$work/policy.toml" <<'EOF'
[defaults]
required = true

[[rule]]
ecosystem = "deb"
name = "*"
layout_keys = ["deb-owner.pub"]

[[rule]]
ecosystem = "crate"
name = "*"
layout_keys = ["crate-owner.pub"]
EOF

# make_pool DIR N: N packages, even i a .deb, odd i a .crate; 10% tampered
# (i % 20 == 0: a .deb, i % 20 == 1: a .crate).
make_pool() {
  local dir=$1 n=$2 i kind file src
  for ((i = 0; i < n; i++)); do
    if ((i % 2 == 0)); then kind=deb; file=$DEB; else kind=crate; file=$CRATE; fi
    if ((i % 20 <= 1)); then src=tampered; else src=good; fi
    local d=$dir/$kind/$(printf %02d $((i % 97)))/p$i
    mkdir -p "$d/$file.intoto"
    ln "$o/$src.$kind" "$d/$file"
    ln "$o/$kind.intoto/"* "$d/$file.intoto/"
  done
}
make_pool "$work/pool1k" "$N_SMALL"
if want b; then make_pool "$work/pool10k" "$N_LARGE"; else mkdir -p "$work/pool10k"; fi
n_tampered=$(find "$work/pool1k" \( -name '*.deb' -o -name '*.crate' \) -not -path '*.intoto*' -samefile "$o/tampered.deb" | wc -l)
n_tampered=$((n_tampered + $(find "$work/pool1k" -name '*.crate' -not -path '*.intoto*' -samefile "$o/tampered.crate" | wc -l)))
echo "# pool:      $N_SMALL packages ($n_tampered tampered), and $N_LARGE for memory; du $(du -sh "$work" | cut -f1)"
find "$work/pool1k" "$work/pool10k" -type f -exec cat {} + >/dev/null # warm the page cache

cd "$work"
# run NAME POOL JOBS: one timed run, printing packages/s and max RSS.
run() {
  local name=$1 pool=$2 jobs=$3
  /usr/bin/time -f '%e %M' -o "results/$name.time" \
    "$TG" mirror check "$pool" --policy policy.toml --jobs "$jobs" --json -q --no-fail \
    --report "results/$name.jsonl" > "results/$name.json"
  read -r secs rss < "results/$name.time"
  local n allowed refused
  n=$(jq .packages "results/$name.json"); allowed=$(jq .allowed "results/$name.json"); refused=$(jq .refused "results/$name.json")
  printf '%-22s %6d packages (%d allowed, %d refused) in %7.2f s = %7.1f packages/s, peak RSS %6.1f MiB\n' \
    "$name" "$n" "$allowed" "$refused" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}
if want a; then
  echo "## (a) $N_SMALL packages"
  run "1k-jobs1" pool1k 1
  run "1k-jobs2" pool1k 2
fi
if want b; then
  echo "## (b) $N_LARGE packages"
  run "10k-jobs2" pool10k 2
fi
want c || exit 0

# (c) The reference cannot open packages: for each package, a directory with
# the package file and its contents unpacked beside it (dpkg-deb -R for a
# .deb, control files under DEBIAN/; tar -xzf for a .crate) is prepared
# untimed, then `in-toto-verify --layout <pkg>.intoto/root.layout
# --verification-keys owner.pub --link-dir <pkg>.intoto` runs in it: layout
# signature and expiry, the link's signature, the artifact rules, and the
# sample's inspection (sh -c 'test -x usr/bin/hello && ./usr/bin/hello', or
# test -f .../src/main.rs), unsandboxed. What it skips compared with
# totogate mirror: walking the pool, hashing the file for the report,
# unpacking (with limits), the sandbox.
echo "## (c) reference in-toto-verify, first $N_REF packages of (a), shell loop"
ref=$work/ref
mkdir -p "$ref"
mapfile -t pkgs < <(cd pool1k && find . \( -name '*.deb' -o -name '*.crate' \) -not -path '*.intoto*' | sed 's|^\./||' | sort | head -n "$N_REF")
# Per package: $d/meta (layout, links), $d/owner.pub, and $d/cwd, the
# verifier's working directory holding only the package and its contents
# (inspection materials are everything in the cwd; the layouts DISALLOW *).
for p in "${pkgs[@]}"; do
  d=$ref/$(echo "$p" | tr / _)
  mkdir -p "$d/cwd"
  cp "pool1k/$p" "$d/cwd/"
  case $p in
    *.deb) dpkg-deb -R "pool1k/$p" "$d/tmp" && mv "$d/tmp/DEBIAN" "$d/tmp/usr" "$d/cwd/" && rmdir "$d/tmp"
           cp "$work/deb-owner.pub" "$d/owner.pub" ;;
    *.crate) tar -xzf "pool1k/$p" -C "$d/cwd"; cp "$work/crate-owner.pub" "$d/owner.pub" ;;
  esac
  cp -r "pool1k/$p.intoto" "$d/meta"
done
start=$(date +%s.%N)
pass=0; fail=0
for d in "$ref"/*/; do
  if (cd "$d/cwd" && "$ORACLE_BIN/in-toto-verify" --layout ../meta/root.layout --verification-keys ../owner.pub --link-dir ../meta >/dev/null 2>&1); then
    pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
end=$(date +%s.%N)
secs=$(echo "$end - $start" | bc -l)
printf 'in-toto-verify loop     %6d packages (%d pass, %d fail) in %7.2f s = %7.1f packages/s (%.0f ms per package; %d packages would take %.0f s)\n' \
  "${#pkgs[@]}" "$pass" "$fail" "$secs" "$(echo "${#pkgs[@]} / $secs" | bc -l)" \
  "$(echo "1000 * $secs / ${#pkgs[@]}" | bc -l)" "$N_SMALL" "$(echo "$N_SMALL * $secs / ${#pkgs[@]}" | bc -l)"
# Agreement: the same packages through totogate (from the (a) report).
if [ -f results/1k-jobs1.jsonl ]; then
  tg_pass=$(for p in "${pkgs[@]}"; do jq -r --arg p "$p" 'select(.path == $p) | .verdict' results/1k-jobs1.jsonl; done | grep -c '^allowed$' || true)
  echo "totogate on the same $N_REF: $tg_pass allowed (reference: $pass pass)"
fi
