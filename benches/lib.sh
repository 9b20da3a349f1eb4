# Shared by benches/*.sh (sourced, after `set -euo pipefail` and setting
# `bench`): the repository root, the totogate binary, the reference oracle.

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
TOTOGATE=${TOTOGATE:-target/release/totogate}
BENCH_DIR=${BENCH_DIR:-target/bench}

die() { echo "$bench.sh: $*" >&2; exit 1; }

TOTOGATE=$(realpath "$TOTOGATE") || die "no totogate binary at $TOTOGATE (cargo build --release)"
[ -x "$TOTOGATE" ] || die "not executable: $TOTOGATE"

# oracle TOOL: sets ORACLE_BIN to a venv bin dir holding the reference TOOL
# (target/oracle-venv, made by scripts/oracle-venv.sh, else /opt/intoto-venv).
oracle() {
  if [ -z "${ORACLE_BIN:-}" ]; then
    if [ -x "target/oracle-venv/bin/$1" ]; then ORACLE_BIN=target/oracle-venv/bin
    else ORACLE_BIN=/opt/intoto-venv/bin; fi
  fi
  [ -x "$ORACLE_BIN/$1" ] || die "no $1 in $ORACLE_BIN (scripts/oracle-venv.sh)"
  ORACLE_BIN=$(realpath "$ORACLE_BIN")
}

# needs TOOL...: fail unless every tool is on PATH.
needs() { for t in "$@"; do command -v "$t" >/dev/null || die "needs $t (apt-get install -y $t)"; done; }

# pin_binary DIR: benchmark a private copy of the binary (a concurrent
# `cargo build` must not swap it mid-run); prints its sha256 and the source
# revision at run time; sets TG to the copy.
pin_binary() {
  local src_rev
  src_rev=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
  cp "$TOTOGATE" "$1/totogate.bin"
  # The small sandbox monitor, used when it sits beside the binary.
  local helper
  helper="$(dirname "$TOTOGATE")/totogate-sandbox"
  if [ -x "$helper" ]; then cp "$helper" "$1/totogate-sandbox"; fi
  echo "# binary:    $TOTOGATE (copied to $1/totogate.bin, sha256 $(sha256sum "$1/totogate.bin" | cut -c1-16), tree $src_rev, built $(date -u -r "$TOTOGATE" +%FT%TZ))"
  TG=$1/totogate.bin
}
