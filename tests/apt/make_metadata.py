"""Builds the in-toto metadata for the apt end-to-end test with the reference
implementation (in-toto 3.1.0), the way Debian's rebuilder setup looks:

- root.layout: one step `rebuild` whose products must be the .deb, performed
  by the rebuilders' GPG keys (threshold 1), and an inspection
  `verify-reprobuilds` requiring the installed .deb to match what the
  rebuilders produced (apt-transport-in-toto's data/root.layout, signed and
  not expired). Signed with `in-toto-sign --gpg`.
- links: `in-toto-run -n rebuild --gpg KEY -p <deb>` for each .deb in
  --debs and each rebuilder key, as <out>/links/<n>/<name>_<version>.link,
  where <n> is the rebuilder's index.

Usage: python make_metadata.py --gpg-home H --owner FPR --rebuilder FPR...
           --debs DIR --out DIR
"""
import argparse
import os
import subprocess
import sys

from in_toto.models.layout import Inspection, Layout, Step
from in_toto.models.metadata import Metablock


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gpg-home", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--rebuilder", nargs="+", required=True)
    p.add_argument("--debs", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.gpg_home, a.debs, a.out = (os.path.abspath(x) for x in (a.gpg_home, a.debs, a.out))
    bindir = os.path.dirname(sys.executable)
    os.makedirs(a.out, exist_ok=True)

    layout = Layout()
    layout.set_relative_expiration(years=10)
    keyids = [layout.add_functionary_key_from_gpg_keyid(k, a.gpg_home)["keyid"]
              for k in a.rebuilder]
    step = Step(name="rebuild")
    step.pubkeys = keyids
    step.threshold = 1
    step.add_product_rule_from_string("CREATE *.deb")
    step.add_product_rule_from_string("DISALLOW *.deb")
    layout.steps = [step]
    insp = Inspection(name="verify-reprobuilds")
    insp.set_run_from_string("true")
    insp.add_material_rule_from_string("MATCH *.deb WITH PRODUCTS FROM rebuild")
    insp.add_material_rule_from_string("DISALLOW *.deb")
    layout.inspect = [insp]
    path = os.path.join(a.out, "root.layout")
    Metablock(signed=layout).dump(path)
    subprocess.run([os.path.join(bindir, "in-toto-sign"), "-f", path,
                    "--gpg", a.owner, "--gpg-home", a.gpg_home, "-o", path],
                   check=True)

    for n, key in enumerate(a.rebuilder):
        for deb in sorted(os.listdir(a.debs)):
            if not deb.endswith(".deb"):
                continue
            name, version, _ = deb[:-4].split("_")
            tmp = os.path.join(a.out, "tmp")
            os.makedirs(tmp, exist_ok=True)
            subprocess.run([os.path.join(bindir, "in-toto-run"), "-n", "rebuild",
                            "--gpg", key, "--gpg-home", a.gpg_home,
                            "-p", deb, "-d", tmp, "--no-command"],
                           check=True, cwd=a.debs)
            (made,) = os.listdir(tmp)
            dest = os.path.join(a.out, "links", str(n))
            os.makedirs(dest, exist_ok=True)
            os.rename(os.path.join(tmp, made),
                      os.path.join(dest, "%s_%s.link" % (name, version)))
            os.rmdir(tmp)


if __name__ == "__main__":
    main()
