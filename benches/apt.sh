#!/usr/bin/env bash
# `apt-get download` of 20 packages through totogate's `intoto://` method
# (download, fetch the links from a rebuilder, check each .deb: GPG-signed
# layout and link, unpack, sandboxed inspection) against apt's own `http://`
# method (download only), side by side in one run, both from the same
# repository on loopback. Target: intoto within 1.3x of http.
#
#   fixture: 20 .debs of ~200 KiB each (a 200,000-byte random file + a
#            README), a flat repository (apt-ftparchive packages/release),
#            served with `python3 -m http.server` on 127.0.0.1; one rebuilder
#            (same server) serving links at /sources/NAME/VERSION/metadata;
#            layout + links made and GPG-signed (ed25519) by the reference
#            in-toto 3.1.0 (tests/apt/make_metadata.py), as the apt tests do.
#   two throwaway apt roots (the recipe in testdata/apt/README.md), one with
#            `deb [trusted=yes] intoto://...`, one with `http://...`;
#            `apt-get update` once in each.
#
#   (A) rm -f *.deb && apt-get download pkg01 ... pkg20   (intoto://)
#   (B) rm -f *.deb && apt-get download pkg01 ... pkg20   (http://)
#
#   First with hyperfine, which runs A's runs as one block and then B's; on
#   this VM the machine's speed drifts between blocks (the http:// side
#   alone moved between 110 and 150 ms from run to run). Then interleaved:
#   A, B, A, B, ... ($ROUNDS each; the deletion is outside the timing),
#   reporting each side's median and the median of the per-round ratios.
#
# Usage: benches/apt.sh
# Env:   TOTOGATE, BENCH_DIR (default target/bench), RUNS (default 10),
#        ROUNDS (interleaved rounds, default 20),
#        SANDBOX_USER (APT::Sandbox::User, default _apt: both methods drop
#        root for their downloads, as on a real system)
# As root (apt's locks in the throwaway roots, dpkg-deb --root-owner-group).
set -euo pipefail

bench=apt
. "$(dirname "$0")/lib.sh"
needs hyperfine apt-get apt-ftparchive dpkg-deb gpg python3 bc
oracle in-toto-run
RUNS=${RUNS:-10}
ROUNDS=${ROUNDS:-20}
SANDBOX_USER=${SANDBOX_USER:-_apt}
N=20

W=$(realpath -m "$BENCH_DIR/apt")
rm -rf "$W"
mkdir -p "$W/debs" "$W/repo" "$W/gnupg"
chmod 700 "$W/gnupg"
# The sandbox user must reach the throwaway roots and the binary.
d=$W; while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
pin_binary "$W"

gpg_batch() { gpg --batch --homedir "$W/gnupg" --pinentry-mode loopback --passphrase '' "$@"; }
newkey() {
  gpg_batch --quick-gen-key "$1 <$1@example.org>" ed25519 sign never 2>/dev/null
  gpg_batch --with-colons --list-keys "$1" | awk -F: '/^fpr/ {print $10; exit}'
}
OWNER=$(newkey owner)
REBUILDER=$(newkey rebuilder)

for i in $(seq -w 1 $N); do
  p="$W/build/pkg$i"
  mkdir -p "$p/DEBIAN" "$p/usr/share/pkg$i"
  printf 'Package: pkg%s\nVersion: 1.0\nArchitecture: all\nMaintainer: bench <b@example.org>\nDescription: bench\n' "$i" > "$p/DEBIAN/control"
  head -c 200000 /dev/urandom > "$p/usr/share/pkg$i/data"
  echo "pkg$i" > "$p/usr/share/pkg$i/README"
  dpkg-deb --root-owner-group --build "$p" "$W/debs/pkg${i}_1.0_all.deb" >/dev/null
done
"$ORACLE_BIN/python" tests/apt/make_metadata.py --gpg-home "$W/gnupg" --owner "$OWNER" \
  --rebuilder "$REBUILDER" --debs "$W/debs" --out "$W/meta"
cp "$W"/debs/*.deb "$W/repo/"
for i in $(seq -w 1 $N); do
  mkdir -p "$W/repo/sources/pkg$i/1.0"
  cp "$W/meta/links/0/pkg${i}_1.0.link" "$W/repo/sources/pkg$i/1.0/metadata"
done
(cd "$W/repo" && apt-ftparchive packages . > Packages && apt-ftparchive release . > Release)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$W/repo" "$PORT" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; gpgconf --homedir "$W/gnupg" --kill gpg-agent 2>/dev/null; true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/Release" >/dev/null 2>&1 && break; sleep 0.1; done

# mkroot NAME SCHEME: a throwaway apt root (testdata/apt/README.md).
mkroot() {
  local d="$W/$1" r="$W/$1/root"
  mkdir -p "$r"/etc/apt/{apt.conf.d,sources.list.d,preferences.d,trusted.gpg.d} \
    "$r"/var/lib/apt/lists/partial "$r"/var/cache/apt/archives/partial "$r"/var/log/apt \
    "$r"/var/lib/dpkg/{info,updates,triggers} "$d/methods" "$d/out"
  touch "$r/var/lib/dpkg/status" "$r/var/lib/dpkg/available"
  echo "deb [trusted=yes] $2://127.0.0.1:$PORT/ ./" > "$r/etc/apt/sources.list"
  printf 'Dir::Etc::Parts "%s/etc/apt/apt.conf.d";\nDir::Etc::Main "%s/etc/apt/apt.conf";\n' "$r" "$r" > "$d/apt.conf"
  "$TG" install-hooks apt --root "$r" --exe "$TG" --no-hook --layout "$W/meta/root.layout" \
    --keyid "$OWNER" --gpg-home "$W/gnupg" --rebuilder "http://127.0.0.1:$PORT" >/dev/null
  ln -s /usr/lib/apt/methods/* "$d/methods/"
  ln -s "$r/usr/lib/apt/methods/intoto" "$d/methods/intoto"
  cat > "$d/apt" <<EOF
#!/bin/sh
exec env APT_CONFIG=$d/apt.conf apt-get -q -y -o Dir=$r -o Dir::State::status=$r/var/lib/dpkg/status \
  -o Dir::Etc::SourceList=$r/etc/apt/sources.list -o Dir::Etc::SourceParts=$r/etc/apt/sources.list.d \
  -o Dir::Bin::Methods=$d/methods -o Dir::Log=$r/var/log/apt -o APT::Sandbox::User=$SANDBOX_USER \
  -o APT::Architecture=amd64 -o Acquire::Languages=none "\$@"
EOF
  chmod +x "$d/apt"
  chmod 777 "$d/out"   # apt-get download hands the files to the sandbox user
  "$d/apt" update >/dev/null
}
mkroot intoto intoto
mkroot http http

PKGS=$(for i in $(seq -w 1 $N); do printf 'pkg%s ' "$i"; done)
echo "# $N packages of $(du -b "$W/debs/pkg01_1.0_all.deb" | cut -f1) bytes each; $(nproc) cores"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$W/result.json" \
  -n "intoto:// (totogate method)" "cd $W/intoto/out && rm -f ./*.deb && $W/intoto/apt download $PKGS" \
  -n "http:// (apt's http method)" "cd $W/http/out && rm -f ./*.deb && $W/http/apt download $PKGS"
ls "$W/intoto/out" | grep -c '\.deb$' | grep -qx "$N" || die "intoto:// did not download all $N packages"

# Interleaved rounds: microseconds of one download of the 20 packages.
timed() {
  rm -f "$W/$1/out"/*.deb
  local s e
  s=$(date +%s%N)
  (cd "$W/$1/out" && exec "$W/$1/apt" download $PKGS >/dev/null)
  e=$(date +%s%N)
  echo $(((e - s) / 1000))
}
ratios=(); ta=(); tb=()
for _ in $(seq "$ROUNDS"); do
  a=$(timed intoto); b=$(timed http)
  ta+=("$a"); tb+=("$b"); ratios+=("$(echo "$a / $b" | bc -l)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf 'interleaved, %d rounds: intoto:// median %.1f ms, http:// median %.1f ms, median per-round ratio %.2fx (target <= 1.3x)\n' \
  "$ROUNDS" "$(echo "$(median "${ta[@]}") / 1000" | bc -l)" "$(echo "$(median "${tb[@]}") / 1000" | bc -l)" "$(median "${ratios[@]}")"
