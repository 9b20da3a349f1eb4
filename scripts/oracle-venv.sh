#!/usr/bin/env bash
# Provision the reference implementation (the test oracle) into a venv.
# Usage: scripts/oracle-venv.sh [DEST]   (default: target/oracle-venv)
set -euo pipefail
dest=${1:-"$(dirname "$0")/../target/oracle-venv"}
if [ -x "$dest/bin/in-toto-verify" ] && "$dest/bin/in-toto-verify" --version 2>/dev/null | grep -q 3.1.0; then
  exit 0
fi
python3 -m venv "$dest"
"$dest/bin/pip" install --quiet --disable-pip-version-check \
  in-toto==3.1.0 securesystemslib==1.6.0 cryptography==50.0.2
"$dest/bin/in-toto-verify" --version
