#!/usr/bin/env bash
# verify (b) on one core and on two: totogate and the reference, pinned with
# `taskset`, in alternating single runs (the same fixture as verify.sh (b)).
# totogate spreads the inspection's hashing and the links' checks over the
# cores; the reference runs on one. Prints each run, then means and ratios.
#
# Usage: benches/cores.sh   (after benches/verify.sh built target/bench/verify)
# Env:   TOTOGATE, ORACLE_BIN, BENCH_DIR as for verify.sh
#        ROUNDS   rounds (default 6), each running both tools on each set
#        CORES    space-separated `taskset -c` lists (default: "0 0,1")
set -euo pipefail

bench=cores
. "$(dirname "$0")/lib.sh"
oracle in-toto-verify
needs taskset
ROUNDS=${ROUNDS:-6}
CORES=${CORES:-0 0,1}
work=$(realpath -m "$BENCH_DIR/verify")
[ -f "$work/big/root.layout" ] || die "no (b) fixture in $work/big: run benches/verify.sh first (ONLY=b will do)"
pin_binary "$work"
REF=$ORACLE_BIN/in-toto-verify
args=(-l ../root.layout --verification-keys "$work/owner.pub" --link-dir ../links)
cd "$work/big/ws"
echo "# machine: nproc=$(nproc), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp)
for _ in $(seq "$ROUNDS"); do
  for c in $CORES; do
    for tool in reference totogate; do
      if [ "$tool" = reference ]; then cmd=("$REF"); else cmd=("$TG" verify); fi
      s=$(date +%s%N)
      taskset -c "$c" "${cmd[@]}" "${args[@]}" >/dev/null 2>&1 || die "$tool on cores $c did not pass"
      e=$(date +%s%N)
      echo "$c $tool $(((e - s) / 1000000))" | tee -a "$out"
    done
  done
done
awk '{ k = $1; t[k, $2] += $3; n[k, $2]++; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
  END { for (i = 1; i <= m; i++) { k = order[i]; r = t[k, "reference"] / n[k, "reference"]; g = t[k, "totogate"] / n[k, "totogate"]
    printf "cores %s: reference %.0f ms, totogate %.1f ms, %.1fx\n", k, r, g, r / g } }' "$out"
rm -f "$out"
