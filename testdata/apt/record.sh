#!/bin/bash
# Reproduces the recordings in testdata/apt/recorded/ against a real apt
# (recorded with apt 2.6.1 / dpkg 1.21 on Debian bookworm, amd64), as root,
# with nothing touched outside a throwaway directory. See README.md.
#
#   sudo testdata/apt/record.sh [OUTDIR]     (default: testdata/apt/recorded)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/recorded}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
W=$(mktemp -d /tmp/totogate-apt.XXXXXX)
R=$W/root            # the throwaway system root apt and dpkg work on
REPO=$W/repo         # the loopback repository (flat: "deb URI ./")
M=$W/methods         # Dir::Bin::Methods
LOG=$W/log           # raw recordings land here first
mkdir -p "$REPO" "$M" "$LOG"

cleanup() {
  [ -n "${HTTPD_PID:-}" ] && kill "$HTTPD_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# ---------------------------------------------------------------- packages
# Two tiny packages: toto-b depends on toto-a; toto-a is Multi-Arch: same,
# toto-b Multi-Arch: foreign (so the v3 hook input shows both columns).
mkpkg() { # name version multiarch depends
  local d=$W/build/$1
  mkdir -p "$d/DEBIAN" "$d/usr/share/$1"
  echo "$1 $2" >"$d/usr/share/$1/hello.txt"
  {
    echo "Package: $1"
    echo "Version: $2"
    echo "Architecture: amd64"
    echo "Multi-Arch: $3"
    echo "Maintainer: totogate tests <tests@example.invalid>"
    [ -n "$4" ] && echo "Depends: $4"
    echo "Description: totogate apt recording fixture $1"
  } >"$d/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$d" "$REPO/${1}_${2}_amd64.deb" >/dev/null
}
mkpkg toto-a 1.0-1 same ""
mkpkg toto-b 2:1.5~rc1-1 foreign "toto-a (>= 1.0)"
mkpkg toto-a 1.1-1 same ""   # an upgrade for toto-a, used by the v3 run

# Index only toto-a 1.0-1 and toto-b first; toto-a 1.1-1 is added later.
index_repo() {
  (cd "$REPO" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages)
  gzip -9nkf "$REPO/Packages"
  {
    echo "Origin: totogate-test"
    echo "Label: totogate-test"
    echo "Suite: stable"
    echo "Codename: test"
    echo "Architectures: amd64"
    echo "Date: $(date -Ru)"
    echo "SHA256:"
    for f in Packages Packages.gz; do
      echo " $(sha256sum "$REPO/$f" | cut -d' ' -f1) $(stat -c %s "$REPO/$f") $f"
    done
  } >"$REPO/Release"
}
mkdir -p "$W/hold" && mv "$REPO/toto-a_1.1-1_amd64.deb" "$W/hold/"
index_repo

# ---------------------------------------------------------------- server
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$REPO" && exec python3 -m http.server --bind 127.0.0.1 "$PORT") >"$W/httpd.log" 2>&1 &
HTTPD_PID=$!
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT))" 2>/dev/null && break
  sleep 0.1
done

# ---------------------------------------------------------------- methods
for m in /usr/lib/apt/methods/*; do ln -s "$m" "$M/"; done
# "intoto": records both directions and execs the real http method (argv[0]
# stays ".../http", as apt-transport-in-toto's child does).
cat >"$M/intoto" <<EOS
#!/bin/bash
n=\$(date +%s%N)
exec > >(tee -a "$LOG/\$n.intoto.out") < <(tee -a "$LOG/\$n.intoto.in")
exec /usr/lib/apt/methods/http
EOS
# "failintoto": relays to http but turns every 201 URI Done for a .deb into
# a 400 URI Failure (what a refusing in-toto method does).
cat >"$M/failintoto" <<EOS
#!/usr/bin/python3
import os, signal, subprocess, sys, threading, time
# apt SIGINTs its methods when it is done with them.
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
log = open("$LOG/%d.failintoto.out" % time.time_ns(), "w")
child = subprocess.Popen(["/usr/lib/apt/methods/http"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
def messages(fd):
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            msg, buf = buf.split(b"\n\n", 1)
            yield msg.lstrip(b"\n") + b"\n\n"
apt_in, http_out = sys.stdin.fileno(), child.stdout.fileno()
gens = {apt_in: messages(apt_in), http_out: messages(http_out)}
def send(fd, data):
    if fd == 1:  # log first: apt may SIGINT us as soon as it has the answer
        log.write(data.decode()); log.flush()
    os.write(fd, data)
# messages() blocks in os.read, so pump each side from a thread.
def pump(src, dst, rewrite):
    for msg in gens[src]:
        if rewrite and msg.startswith(b"201 "):
            fields = dict(l.split(b": ", 1) for l in msg.strip().split(b"\n")[1:] if b": " in l)
            if fields.get(b"URI", b"").endswith(b".deb"):
                msg = (b"400 URI Failure\nURI: " + fields[b"URI"] +
                       b"\nMessage: in-toto verification failed (test)\n\n")
        send(dst, msg)
    if dst != 1:
        child.stdin.close()
t = threading.Thread(target=pump, args=(apt_in, child.stdin.fileno(), False), daemon=True)
t.start()
pump(http_out, 1, True)
EOS
chmod +x "$M/intoto" "$M/failintoto"

# ---------------------------------------------------------------- root
mkdir -p "$R/etc/apt/apt.conf.d" "$R/etc/apt/sources.list.d" "$R/etc/apt/preferences.d" \
  "$R/etc/apt/trusted.gpg.d" "$R/var/lib/apt/lists/partial" \
  "$R/var/cache/apt/archives/partial" "$R/var/log/apt" \
  "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers" \
  "$R/var/lib/dpkg/alternatives"
touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available"
echo "deb [trusted=yes] intoto://127.0.0.1:$PORT/ ./" >"$R/etc/apt/sources.list"

# APT_CONFIG is read before /etc/apt/apt.conf.d, so this keeps the host's
# snippets (docker-clean, 70debconf's Pre-Install-Pkgs, ...) out. -o options
# alone cannot: they are applied after the host's config has been read.
cat >"$W/apt.conf" <<EOS
Dir::Etc::Parts "$R/etc/apt/apt.conf.d";
Dir::Etc::Main "$R/etc/apt/apt.conf";
Dir::Etc::Preferences "$R/etc/apt/preferences";
Dir::Etc::PreferencesParts "$R/etc/apt/preferences.d";
EOS
# Values with spaces, '=', '%', quotes and non-ASCII, to see how apt
# escapes them in 601 Configuration and in the hook's config dump.
cat >"$R/etc/apt/apt.conf.d/50intoto" <<'EOS'
APT::Intoto {
  LogLevel {"20"};
  Rebuilders {
    "http://127.0.0.1:1/rebuilder-a";
    "https://rebuilder.example/b";
  };
  GPGHomedir {"/path/to/gpg home"};
  Layout "/path/to/root.layout";
  Keyids {
    "88876A89E3D4698F83D3DB0E72E33CA3E0E04E46";
    "8887 6a89 e3d4 698f 83d3  db0e 72e3 3ca3 e0e0 4e47";
  };
  NoFail {"true"};
  Odd "a=b %41 \"q\" ü tab	end";
  Timeout "30";
};
Acquire::http::Timeout "7";
EOS

APT=(env APT_CONFIG="$W/apt.conf" apt-get -q -y
  -o Dir="$R"
  -o Dir::State::status="$R/var/lib/dpkg/status"
  -o Dir::Etc::SourceList="$R/etc/apt/sources.list"
  -o Dir::Etc::SourceParts="$R/etc/apt/sources.list.d"
  -o Dir::Etc::Parts="$R/etc/apt/apt.conf.d"
  -o Dir::Etc::Trusted="$R/etc/apt/trusted.gpg"
  -o Dir::Etc::TrustedParts="$R/etc/apt/trusted.gpg.d"
  -o Dir::Bin::Methods="$M"
  -o Dir::Log="$R/var/log/apt"
  -o APT::Sandbox::User=root
  -o APT::Architecture=amd64
  -o APT::Architectures::=amd64
  -o Acquire::Languages=none
  -o DPkg::Options::=--root="$R"
  -o DPkg::Options::=--force-script-chrootless
  -o DPkg::Options::=--log="$R/var/log/dpkg.log"
  -o DPkg::Use-Pty=false
)

run() { # name expected-rc cmd...
  local name=$1 want=$2; shift 2
  local rc=0
  "$@" >"$OUT/$name.console" 2>&1 || rc=$?
  echo "$name: exit $rc (expected $want)"
  [ "$rc" = "$want" ] || { cat "$OUT/$name.console"; exit 1; }
}
collect() { # name: move the method streams of the last run, numbered by start time
  local i=0 f m
  for f in $(ls "$LOG" | sed 's/\.\(in\|out\)$//' | sort -u); do
    m=${f#*.}
    for d in in out; do
      [ -f "$LOG/$f.$d" ] && mv "$LOG/$f.$d" "$OUT/$1.$i.$m.$d"
    done
    i=$((i + 1))
  done
}

run update 0 "${APT[@]}" update
collect update
run download 0 sh -c "cd '$W' && exec \"\$@\" download toto-b" sh "${APT[@]}"
collect download

# apt looks the protocol version up under DPkg::Tools::Options::<first word
# of the hook command>::Version, so each version needs its own program.
for v in 1 2 3; do
  cat >"$W/hook-v$v" <<EOS
#!/bin/sh
cat >"$OUT/pre-install-pkgs.v$v.txt"
echo "APT_HOOK_INFO_FD=\$APT_HOOK_INFO_FD args=\$*" >"$OUT/pre-install-pkgs.v$v.env"
EOS
  chmod +x "$W/hook-v$v"
done

run install-v2 0 "${APT[@]}" \
  -o DPkg::Pre-Install-Pkgs::="$W/hook-v2 --some-arg" \
  -o DPkg::Tools::Options::"$W/hook-v2"::Version=2 \
  install toto-b
collect install-v2
dpkg --root="$R" -l 'toto-*' >"$OUT/install-v2.dpkg-l" 2>&1 || true

# An upgrade (toto-a 1.1-1), a removal (toto-b) and v3 in one run.
mv "$W/hold/toto-a_1.1-1_amd64.deb" "$REPO/" && index_repo
run update2 0 "${APT[@]}" update
collect update2
run install-v3 0 "${APT[@]}" \
  -o DPkg::Pre-Install-Pkgs::="$W/hook-v3" \
  -o DPkg::Tools::Options::"$W/hook-v3"::Version=3 \
  install toto-a toto-b-
collect install-v3
# Version 1 for completeness (plain .deb paths): install toto-b again.
run install-v1 0 "${APT[@]}" \
  -o DPkg::Pre-Install-Pkgs::="$W/hook-v1" \
  install toto-b
collect install-v1

# A Pre-Install-Pkgs hook that fails: apt must not run dpkg.
run remove-b 0 "${APT[@]}" purge toto-b
run install-hookfail 100 "${APT[@]}" -o DPkg::Pre-Install-Pkgs::="exit 3" install toto-b
collect install-hookfail
dpkg --root="$R" -l 'toto-*' >"$OUT/install-hookfail.dpkg-l" 2>&1 || true

# A method that refuses the .deb: apt must abort before dpkg runs.
run purge 0 "${APT[@]}" purge toto-a toto-b
rm -f "$R"/var/cache/apt/archives/*.deb
sed -i 's,intoto://,failintoto://,' "$R/etc/apt/sources.list"
run update-fail 0 "${APT[@]}" update
collect update-fail
run install-fail 100 "${APT[@]}" \
  -o DPkg::Pre-Install-Pkgs::="touch $W/fail-hook-ran" \
  install toto-b
{ [ -e "$W/fail-hook-ran" ] && echo "hook ran" || echo "hook did not run"; } >"$OUT/install-fail.hook"
collect install-fail
dpkg --root="$R" -l 'toto-*' >"$OUT/install-fail.dpkg-l" 2>&1 || true
(cd "$R/var/cache/apt/archives" && find . | sort) >"$OUT/install-fail.archives" 2>&1 || true

# Keep the paths of this run so the tests know what to expect.
{ echo "PORT=$PORT"; echo "W=$W"; } >"$OUT/run.env"
echo "recorded into $OUT"
