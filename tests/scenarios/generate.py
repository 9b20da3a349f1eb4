#!/usr/bin/env python3
"""Generate in-toto verification scenarios for totogate conformance tests.

Usage:
    python generate.py OUTDIR [--only NAME...] [--check-reference]

All metadata is produced by the in-toto reference implementation (in-toto
3.1.0, securesystemslib CryptoSigner).  Tampering scenarios edit the bytes of
an already signed file afterwards.  See README.md in this directory.
"""

import argparse
import base64
import concurrent.futures
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.signer import CryptoSigner

from in_toto.models._signer import load_public_key_from_file
from in_toto.models.layout import Inspection, Layout, Step
from in_toto.models.metadata import Envelope, Metablock
from in_toto.runlib import in_toto_run

logging.getLogger("in_toto").setLevel(logging.CRITICAL)

DEFAULT_LAYOUT = "root.layout"

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class Key:
    """A key pair saved as NAME.key (PKCS8) / NAME.pub (SPKI) in a scenario."""

    def __init__(self, directory, name, kind):
        if kind == "ed25519":
            priv = ed25519.Ed25519PrivateKey.generate()
        elif kind == "rsa":
            priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "ecdsa-p256":
            priv = ec.generate_private_key(ec.SECP256R1())
        elif kind == "ecdsa-p384":
            priv = ec.generate_private_key(ec.SECP384R1())
        else:
            raise ValueError(kind)
        self.name = name
        self.kind = kind
        self.keyfile = os.path.join(directory, name + ".key")
        self.pubfile = os.path.join(directory, name + ".pub")
        with open(self.keyfile, "wb") as f:
            f.write(
                priv.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        with open(self.pubfile, "wb") as f:
            f.write(
                priv.public_key().public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                )
            )
        # Load exactly like the reference CLI does.
        with open(self.keyfile, "rb") as f:
            self.signer = CryptoSigner(
                serialization.load_pem_private_key(f.read(), None)
            )
        self.pub = load_public_key_from_file(self.pubfile)
        self.keyid = self.pub["keyid"]
        assert self.keyid == self.signer.public_key.keyid

    @property
    def short(self):
        return self.keyid[:8]


def _argv(cmd):
    return ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def load_json(path):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def dump_json(path, data):
    with open(path, "wb") as f:
        f.write(json.dumps(data, sort_keys=True).encode("utf-8"))


class Scenario:
    def __init__(self, outdir, name, description):
        self.name = name
        self.description = description
        self.dir = os.path.join(outdir, name)
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        self.links = os.path.join(self.dir, "links")
        os.makedirs(self.links)
        self.work = tempfile.mkdtemp(prefix="totogate-work-")
        self.keys = {}
        self.args = None
        self.expect = None

    # -- keys ---------------------------------------------------------------
    def key(self, name, kind="ed25519"):
        if name not in self.keys:
            self.keys[name] = Key(self.dir, name, kind)
        return self.keys[name]

    # -- files --------------------------------------------------------------
    def wpath(self, rel):
        return os.path.join(self.work, rel)

    def write(self, rel, content, base=None):
        path = os.path.join(base or self.work, rel)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)

    def export(self, rel, dest=None):
        """Copy an artifact from the work dir into the scenario dir."""
        src = self.wpath(rel)
        dst = os.path.join(self.dir, dest or rel)
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)

    def link_path(self, step, key, link_dir=None):
        return os.path.join(link_dir or self.links, f"{step}.{key.short}.link")

    # -- steps --------------------------------------------------------------
    def run(self, name, key, materials, products, cmd, dsse=False,
            link_dir=None, sign=True):
        """Run a step with in_toto_run in the work dir and store its link."""
        link_dir = link_dir or self.links
        os.makedirs(link_dir, exist_ok=True)
        old = os.getcwd()
        os.chdir(self.work)
        try:
            md = in_toto_run(
                name,
                list(materials),
                list(products),
                _argv(cmd),
                signer=key.signer if (key and sign) else None,
                metadata_directory=link_dir,
                use_dsse=dsse,
            )
        finally:
            os.chdir(old)
        return md

    # -- layout -------------------------------------------------------------
    def layout(self, steps, inspections=(), signers=None, functionaries=(),
               expires=None, dsse=False, path=None, readme=""):
        lay = Layout(
            steps=list(steps),
            inspect=list(inspections),
            keys={k.keyid: k.pub for k in functionaries},
            readme=readme,
            **({"expires": expires} if expires else {}),
        )
        lay.validate()
        md = Envelope.from_signable(lay) if dsse else Metablock(signed=lay)
        for signer in signers if signers is not None else [self.key("alice")]:
            md.create_signature(signer.signer)
        md.dump(path or os.path.join(self.dir, DEFAULT_LAYOUT))
        return md

    # -- finish -------------------------------------------------------------
    def finish(self, expect, args=None, keys=("alice",), link_dir="links",
               extra_args=()):
        if args is None:
            args = ["--layout", DEFAULT_LAYOUT, "--verification-keys"]
            args += [k + ".pub" for k in keys]
            if link_dir is not None:
                args += ["--link-dir", link_dir]
            args += list(extra_args)
        self.args = args
        self.expect = expect
        dump_json(
            os.path.join(self.dir, "scenario.json"),
            {
                "name": self.name,
                "description": self.description,
                "args": args,
                "expect": expect,
            },
        )
        shutil.rmtree(self.work, ignore_errors=True)


def step(name, key_or_keys, materials=(), products=(), cmd=(), threshold=1):
    keys = key_or_keys if isinstance(key_or_keys, (list, tuple)) else [key_or_keys]
    return Step(
        name=name,
        pubkeys=[k.keyid for k in keys],
        expected_command=_argv(cmd) if cmd else [],
        threshold=threshold,
        expected_materials=[list(r) for r in materials],
        expected_products=[list(r) for r in products],
    )


def inspection(name, run, materials=(), products=()):
    return Inspection(
        name=name,
        run=list(run),
        expected_materials=[list(r) for r in materials],
        expected_products=[list(r) for r in products],
    )


def R(s):
    """Rule from a whitespace separated string (no quoting needed here)."""
    return s.split()


# --- tampering helpers (edit bytes of already signed files) -----------------

def tamper_link_artifact(path, section="products", artifact=None):
    data = load_json(path)
    if "payloadType" in data:  # DSSE
        payload = json.loads(base64.b64decode(data["payload"]))
        _flip_hash(payload[section], artifact)
        data["payload"] = base64.b64encode(
            json.dumps(payload, sort_keys=True).encode()).decode()
    else:
        _flip_hash(data["signed"][section], artifact)
    dump_json(path, data)


def _flip_hash(artifacts, artifact):
    name = artifact or sorted(artifacts)[0]
    h = artifacts[name]["sha256"]
    artifacts[name]["sha256"] = ("0" if h[0] != "0" else "1") + h[1:]


def forge_signature(path, index=0):
    data = load_json(path)
    sig = data["signatures"][index]
    if "sig" in sig:  # DSSE: base64
        raw = bytearray(base64.b64decode(sig["sig"]))
        raw[len(raw) // 2] ^= 0x01
        sig["sig"] = base64.b64encode(bytes(raw)).decode()
    else:
        s = sig["signature"]
        mid = len(s) // 2
        sig["signature"] = s[:mid] + ("0" if s[mid] != "0" else "1") + s[mid + 1:]
    dump_json(path, data)


# --------------------------------------------------------------------------
# reusable chains
# --------------------------------------------------------------------------

CLONE_CMD = "mkdir -p demo-project && cp upstream/foo.py demo-project/foo.py"
UPDATE_CMD = "printf 'VERSION = \"foo-v1\"\\n' > demo-project/foo.py"
PACKAGE_CMD = "tar --exclude .git -zcf demo-project.tar.gz demo-project"


def demo(s, kind="ed25519", dsse_layout=False, dsse_links=(False, False, False),
         with_inspection=True):
    """The in-toto demo: clone -> update-version -> package + untar inspection."""
    alice = s.key("alice", kind)
    bob = s.key("bob", kind)
    carl = s.key("carl", kind)
    s.write("upstream/foo.py", 'VERSION = "foo-v0"\n')
    s.run("clone", bob, [], ["demo-project"], CLONE_CMD, dsse=dsse_links[0])
    s.run("update-version", bob, ["demo-project"], ["demo-project"], UPDATE_CMD,
          dsse=dsse_links[1])
    s.run("package", carl, ["demo-project"], ["demo-project.tar.gz"],
          PACKAGE_CMD, dsse=dsse_links[2])
    s.export("demo-project.tar.gz")
    steps = [
        step("clone", bob, [], [R("CREATE demo-project/foo.py"), R("DISALLOW *")],
             CLONE_CMD),
        step("update-version", bob,
             [R("MATCH demo-project/* WITH PRODUCTS FROM clone"), R("DISALLOW *")],
             [R("MODIFY demo-project/foo.py"), R("DISALLOW *")], UPDATE_CMD),
        step("package", carl,
             [R("MATCH demo-project/* WITH PRODUCTS FROM update-version"),
              R("DISALLOW *")],
             [R("CREATE demo-project.tar.gz"), R("DISALLOW *")], PACKAGE_CMD),
    ]
    insp = []
    if with_inspection:
        insp = [inspection(
            "untar", ["tar", "xzf", "demo-project.tar.gz"],
            [R("MATCH demo-project.tar.gz WITH PRODUCTS FROM package"),
             R("DISALLOW demo-project.tar.gz"), R("ALLOW *")],
            [R("MATCH demo-project/foo.py WITH PRODUCTS FROM update-version"),
             R("DISALLOW demo-project/foo.py"), R("ALLOW *")],
        )]
    s.layout(steps, insp, signers=[alice], functionaries=[bob, carl],
             dsse=dsse_layout)
    return alice, bob, carl


def chain(s, files, steps_spec, inspections=(), kind="ed25519"):
    """Generic chain.  steps_spec: list of dicts with keys
    name, cmd, m (material paths), p (product paths), mr, pr (rules),
    optional pre (callable run before the step), key (Key)."""
    alice = s.key("alice", kind)
    bob = s.key("bob", kind)
    for rel, content in files.items():
        s.write(rel, content)
    layout_steps = []
    for sp in steps_spec:
        if sp.get("pre"):
            sp["pre"](s)
        k = sp.get("key", bob)
        s.run(sp["name"], k, sp.get("m", ["."]), sp.get("p", ["."]),
              sp.get("cmd", "true"))
        layout_steps.append(step(sp["name"], k, sp.get("mr", []),
                                 sp.get("pr", []), sp.get("cmd", "true")))
    s.layout(layout_steps, inspections, signers=[alice], functionaries=[bob])
    return alice, bob


def two_step(s, mr, pr=(), files=None, cmd1="mkdir -p src && echo one > src/a.txt",
             p1=("src",), between=None, m2=("src",), p2=(), cmd2="true",
             pr1=None, m1=()):
    """make (creates things) -> use (consumes things, rules under test)."""
    files = files or {}
    steps_spec = [
        dict(name="make", cmd=cmd1, m=list(m1), p=list(p1),
             pr=pr1 if pr1 is not None else [R("ALLOW *")]),
        dict(name="use", cmd=cmd2, m=list(m2), p=list(p2), mr=mr, pr=list(pr),
             pre=between),
    ]
    return chain(s, files, steps_spec)


def sh(cmd):
    """`between` callable running a shell command in the work dir."""
    def _f(s):
        subprocess.run(["sh", "-c", cmd], cwd=s.work, check=True)
    return _f


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------

SCENARIOS = []


def scenario(name, description):
    def deco(fn):
        SCENARIOS.append((name, description, fn))
        return fn
    return deco


# ---- demo supply chain -----------------------------------------------------

for _kind in ("ed25519", "rsa", "ecdsa-p256", "ecdsa-p384"):
    def _mk(kind):
        def fn(s):
            demo(s, kind)
            s.finish("pass")
        return fn
    scenario(f"demo-{_kind}",
             f"in-toto demo chain (clone, update-version, package, untar "
             f"inspection); all keys {_kind}")(_mk(_kind))


@scenario("demo-dsse", "demo chain with DSSE envelopes for all links and the layout")
def _(s):
    demo(s, dsse_layout=True, dsse_links=(True, True, True))
    s.finish("pass")


@scenario("demo-mixed-dsse-metablock",
          "demo chain: DSSE layout, clone+package links DSSE, update-version link Metablock")
def _(s):
    demo(s, dsse_layout=True, dsse_links=(True, False, True))
    s.finish("pass")


@scenario("demo-dsse-links-metablock-layout",
          "demo chain: Metablock layout, all links DSSE")
def _(s):
    demo(s, dsse_layout=False, dsse_links=(True, True, True))
    s.finish("pass")


@scenario("demo-dsse-tampered-link-payload",
          "demo chain with DSSE links; a product hash inside the package link payload is edited")
def _(s):
    _, _, carl = demo(s, dsse_links=(True, True, True))
    tamper_link_artifact(s.link_path("package", carl), "products")
    s.finish("fail")


@scenario("demo-dsse-forged-layout-signature",
          "demo chain with DSSE layout whose signature bytes are altered")
def _(s):
    demo(s, dsse_layout=True, dsse_links=(True, True, True))
    forge_signature(os.path.join(s.dir, DEFAULT_LAYOUT))
    s.finish("fail")


@scenario("demo-tampered-final-product",
          "demo chain; the tarball handed to the untar inspection differs from the package product")
def _(s):
    demo(s)
    # a valid tarball (so `tar xzf` succeeds) with different content, so the
    # inspection's MATCH ... WITH PRODUCTS FROM package rule does not consume it
    sh("printf 'VERSION = \"evil\"\\n' > demo-project/foo.py && "
       "tar -zcf demo-project.tar.gz demo-project")(s)
    s.export("demo-project.tar.gz")
    s.finish("fail")


@scenario("demo-links-in-cwd",
          "demo chain with links next to the layout and no --link-dir (default: cwd)")
def _(s):
    demo(s)
    for f in os.listdir(s.links):
        shutil.move(os.path.join(s.links, f), os.path.join(s.dir, f))
    os.rmdir(s.links)
    s.finish("pass", link_dir=None)


# ---- MATCH -------------------------------------------------------------------

@scenario("rule-match-pass", "MATCH src/a.txt WITH PRODUCTS FROM make; DISALLOW *")
def _(s):
    two_step(s, [R("MATCH src/a.txt WITH PRODUCTS FROM make"), R("DISALLOW *")])
    s.finish("pass")


@scenario("rule-match-fail",
          "MATCH src/a.txt WITH PRODUCTS FROM make, but src/a.txt changed between steps; DISALLOW *")
def _(s):
    two_step(s, [R("MATCH src/a.txt WITH PRODUCTS FROM make"), R("DISALLOW *")],
             between=sh("echo changed > src/a.txt"))
    s.finish("fail")


@scenario("rule-match-source-prefix-pass",
          "MATCH a.txt IN build WITH PRODUCTS FROM make (make produced a.txt, use consumes build/a.txt)")
def _(s):
    two_step(s, [R("MATCH a.txt IN build WITH PRODUCTS FROM make"), R("DISALLOW *")],
             cmd1="echo one > a.txt", p1=["a.txt"],
             between=sh("mkdir -p build && cp a.txt build/a.txt"), m2=["build"])
    s.finish("pass")


@scenario("rule-match-source-prefix-fail",
          "MATCH a.txt IN build WITH PRODUCTS FROM make, build/a.txt content differs")
def _(s):
    two_step(s, [R("MATCH a.txt IN build WITH PRODUCTS FROM make"), R("DISALLOW *")],
             cmd1="echo one > a.txt", p1=["a.txt"],
             between=sh("mkdir -p build && echo other > build/a.txt"), m2=["build"])
    s.finish("fail")


@scenario("rule-match-dest-prefix-pass",
          "MATCH a.txt WITH PRODUCTS IN out FROM make (make produced out/a.txt, use consumes a.txt)")
def _(s):
    two_step(s, [R("MATCH a.txt WITH PRODUCTS IN out FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p out && echo one > out/a.txt", p1=["out"],
             between=sh("cp out/a.txt a.txt"), m2=["a.txt"])
    s.finish("pass")


@scenario("rule-match-dest-prefix-fail",
          "MATCH a.txt WITH PRODUCTS IN wrong FROM make (prefix does not exist in make's products)")
def _(s):
    two_step(s, [R("MATCH a.txt WITH PRODUCTS IN wrong FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p out && echo one > out/a.txt", p1=["out"],
             between=sh("cp out/a.txt a.txt"), m2=["a.txt"])
    s.finish("fail")


@scenario("rule-match-both-prefixes-pass",
          "MATCH * IN dist WITH PRODUCTS IN src FROM make (nested files too)")
def _(s):
    two_step(s, [R("MATCH * IN dist WITH PRODUCTS IN src FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p src/sub && echo one > src/a.txt && echo two > src/sub/b.txt",
             between=sh("cp -r src dist"), m2=["dist"])
    s.finish("pass")


@scenario("rule-match-both-prefixes-fail",
          "MATCH * IN dist WITH PRODUCTS IN src FROM make, dist/sub/b.txt modified")
def _(s):
    two_step(s, [R("MATCH * IN dist WITH PRODUCTS IN src FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p src/sub && echo one > src/a.txt && echo two > src/sub/b.txt",
             between=sh("cp -r src dist && echo evil > dist/sub/b.txt"), m2=["dist"])
    s.finish("fail")


@scenario("rule-match-materials-dest-pass",
          "use's products MATCH input.txt WITH MATERIALS FROM make (both saw the same input.txt)")
def _(s):
    two_step(s, [R("ALLOW *")],
             pr=[R("MATCH input.txt WITH MATERIALS FROM make"), R("DISALLOW *")],
             files={"input.txt": "input\n"},
             cmd1="cat input.txt > /dev/null", p1=[], pr1=[], m1=["input.txt"],
             m2=["input.txt"], p2=["input.txt"])
    s.finish("pass")


@scenario("rule-match-materials-dest-fail",
          "use's products MATCH input.txt WITH MATERIALS FROM make, but input.txt changed after make")
def _(s):
    two_step(s, [R("ALLOW *")],
             pr=[R("MATCH input.txt WITH MATERIALS FROM make"), R("DISALLOW *")],
             files={"input.txt": "input\n"},
             cmd1="cat input.txt > /dev/null", p1=[], pr1=[], m1=["input.txt"],
             between=sh("echo changed > input.txt"),
             m2=["input.txt"], p2=["input.txt"])
    s.finish("fail")


@scenario("rule-match-materials-vs-products-dest-fail",
          "MATCH out.txt WITH MATERIALS FROM make where out.txt only exists in make's products")
def _(s):
    two_step(s, [R("MATCH out.txt WITH MATERIALS FROM make"), R("DISALLOW *")],
             cmd1="echo out > out.txt", p1=["out.txt"], m2=["out.txt"])
    s.finish("fail")


@scenario("rule-match-unknown-step-fail",
          "MATCH * WITH PRODUCTS FROM nosuchstep consumes nothing; DISALLOW * then fails")
def _(s):
    two_step(s, [R("MATCH * WITH PRODUCTS FROM nosuchstep"), R("DISALLOW *")])
    s.finish("fail")


# ---- CREATE / DELETE / MODIFY -----------------------------------------------

def _one_step(s, files, cmd, m, p, mr, pr):
    chain(s, files, [dict(name="work", cmd=cmd, m=m, p=p, mr=mr, pr=pr)])


@scenario("rule-create-pass", "CREATE new.txt; DISALLOW * (new.txt is new)")
def _(s):
    _one_step(s, {"old.txt": "old\n"}, "echo new > new.txt", ["."], ["."],
              [R("ALLOW *")], [R("CREATE new.txt"), R("ALLOW old.txt"), R("DISALLOW *")])
    s.finish("pass")


@scenario("rule-create-fail", "CREATE old.txt; DISALLOW * (old.txt already was a material)")
def _(s):
    _one_step(s, {"old.txt": "old\n"}, "echo new > new.txt", ["."], ["."],
              [R("ALLOW *")], [R("CREATE old.txt"), R("ALLOW new.txt"), R("DISALLOW *")])
    s.finish("fail")


@scenario("rule-delete-pass", "materials: DELETE gone.txt; DISALLOW * after removing gone.txt")
def _(s):
    _one_step(s, {"gone.txt": "x\n", "keep.txt": "k\n"}, "rm gone.txt", ["."], ["."],
              [R("DELETE gone.txt"), R("ALLOW keep.txt"), R("DISALLOW *")], [R("ALLOW *")])
    s.finish("pass")


@scenario("rule-delete-fail", "materials: DELETE keep.txt; DISALLOW * but keep.txt is still a product")
def _(s):
    _one_step(s, {"gone.txt": "x\n", "keep.txt": "k\n"}, "rm gone.txt", ["."], ["."],
              [R("DELETE keep.txt"), R("ALLOW gone.txt"), R("DISALLOW *")], [R("ALLOW *")])
    s.finish("fail")


@scenario("rule-modify-pass", "products: MODIFY f.txt; DISALLOW * (f.txt changed)")
def _(s):
    _one_step(s, {"f.txt": "before\n"}, "echo after > f.txt", ["."], ["."],
              [R("ALLOW *")], [R("MODIFY f.txt"), R("DISALLOW *")])
    s.finish("pass")


@scenario("rule-modify-fail", "products: MODIFY f.txt; DISALLOW * (f.txt unchanged)")
def _(s):
    _one_step(s, {"f.txt": "before\n"}, "true", ["."], ["."],
              [R("ALLOW *")], [R("MODIFY f.txt"), R("DISALLOW *")])
    s.finish("fail")


# ---- ALLOW / DISALLOW / REQUIRE / ordering ------------------------------------

@scenario("rule-allow-pass", "products: ALLOW *.txt; DISALLOW * with only .txt products")
def _(s):
    _one_step(s, {}, "echo a > a.txt && echo b > b.txt", [], ["."],
              [], [R("ALLOW *.txt"), R("DISALLOW *")])
    s.finish("pass")


@scenario("rule-allow-fail", "products: ALLOW *.txt; DISALLOW * with an extra .bin product")
def _(s):
    _one_step(s, {}, "echo a > a.txt && echo b > b.bin", [], ["."],
              [], [R("ALLOW *.txt"), R("DISALLOW *")])
    s.finish("fail")


@scenario("rule-disallow-pass", "products: DISALLOW *.exe with no .exe product")
def _(s):
    _one_step(s, {}, "echo a > a.txt", [], ["."], [], [R("DISALLOW *.exe")])
    s.finish("pass")


@scenario("rule-disallow-fail", "products: DISALLOW *.exe with evil.exe produced")
def _(s):
    _one_step(s, {}, "echo a > a.txt && echo x > evil.exe", [], ["."], [],
              [R("DISALLOW *.exe")])
    s.finish("fail")


@scenario("rule-require-pass", "products: REQUIRE needed.txt, which is produced")
def _(s):
    _one_step(s, {}, "echo n > needed.txt", [], ["."], [],
              [R("REQUIRE needed.txt"), R("ALLOW *")])
    s.finish("pass")


@scenario("rule-require-fail", "products: REQUIRE needed.txt, which is not produced")
def _(s):
    _one_step(s, {}, "echo n > other.txt", [], ["."], [],
              [R("REQUIRE needed.txt"), R("ALLOW *")])
    s.finish("fail")


@scenario("rule-order-allow-before-disallow-pass",
          "products: ALLOW secret.key then DISALLOW *.key -> the ALLOW consumes it first")
def _(s):
    _one_step(s, {}, "echo k > secret.key", [], ["."], [],
              [R("ALLOW secret.key"), R("DISALLOW *.key")])
    s.finish("pass")


@scenario("rule-order-disallow-before-allow-fail",
          "products: DISALLOW *.key then ALLOW secret.key -> DISALLOW fires first")
def _(s):
    _one_step(s, {}, "echo k > secret.key", [], ["."], [],
              [R("DISALLOW *.key"), R("ALLOW secret.key")])
    s.finish("fail")


@scenario("rule-empty-rules-pass", "a step with no rules at all accepts any artifacts")
def _(s):
    _one_step(s, {"x.txt": "x"}, "echo y > y.txt && rm x.txt", ["."], ["."], [], [])
    s.finish("pass")


# ---- glob semantics --------------------------------------------------------

@scenario("glob-star-crosses-slash-disallow-fail",
          "products: DISALLOW * catches the nested artifact a/b/c")
def _(s):
    _one_step(s, {}, "mkdir -p a/b && echo c > a/b/c", [], ["."], [], [R("DISALLOW *")])
    s.finish("fail")


@scenario("glob-star-crosses-slash-allow-pass",
          "products: ALLOW a/* covers a/b/c (fnmatch * matches '/'); DISALLOW *")
def _(s):
    _one_step(s, {}, "mkdir -p a/b && echo c > a/b/c", [], ["."], [],
              [R("ALLOW a/*"), R("DISALLOW *")])
    s.finish("pass")


@scenario("glob-match-nested-pass",
          "MATCH src/* WITH PRODUCTS FROM make matches src/x/y/z.txt; DISALLOW *")
def _(s):
    two_step(s, [R("MATCH src/* WITH PRODUCTS FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p src/x/y && echo z > src/x/y/z.txt && echo a > src/a.txt")
    s.finish("pass")


@scenario("glob-question-mark-and-class-pass",
          "products: ALLOW file?.txt, ALLOW data[0-9].bin; DISALLOW *")
def _(s):
    _one_step(s, {}, "echo > file1.txt && echo > data7.bin", [], ["."], [],
              [R("ALLOW file?.txt"), R("ALLOW data[0-9].bin"), R("DISALLOW *")])
    s.finish("pass")


@scenario("glob-case-sensitive-fail",
          "products: ALLOW *.TXT; DISALLOW * with a.txt -> patterns are case sensitive")
def _(s):
    _one_step(s, {}, "echo a > a.txt", [], ["."], [], [R("ALLOW *.TXT"), R("DISALLOW *")])
    s.finish("fail")


@scenario("glob-case-sensitive-pass",
          "products: DISALLOW *.TXT with only a.txt -> no match, passes")
def _(s):
    _one_step(s, {}, "echo a > a.txt", [], ["."], [], [R("DISALLOW *.TXT")])
    s.finish("pass")


@scenario("rule-lowercase-keywords-pass",
          "rules written in lower case: match ... with products from make; disallow *")
def _(s):
    two_step(s, [R("match src/* with products from make"), R("disallow *")],
             pr1=[R("create src/a.txt"), R("disallow *")])
    s.finish("pass")


@scenario("rule-lowercase-keywords-fail",
          "lower-case rules still enforced: disallow * after a failing lower-case match")
def _(s):
    two_step(s, [R("match src/* with products from make"), R("disallow *")],
             between=sh("echo changed > src/a.txt"))
    s.finish("fail")


@scenario("rule-mixed-case-keywords-pass",
          "rules written in mixed case: Match ... With Products From make; Disallow *")
def _(s):
    two_step(s, [R("Match src/* With Products From make"), R("Disallow *")])
    s.finish("pass")


# ---- thresholds -------------------------------------------------------------

def _threshold(s, signers_for_links, pubkeys, threshold=2, products_differ=False):
    alice = s.key("alice")
    keys = {k: s.key(k) for k in ("bob", "carl")}
    s.write("f.txt", "same\n")
    for i, name in enumerate(signers_for_links):
        if products_differ and i == 1:
            s.write("f.txt", "different\n")
        s.run("build", keys[name], [], ["f.txt"], "true")
    st = step("build", [keys[k] for k in pubkeys], [], [R("ALLOW f.txt"), R("DISALLOW *")],
              "true", threshold=threshold)
    s.layout([st], signers=[alice], functionaries=list(keys.values()))
    return keys


@scenario("threshold-2-met", "step threshold 2 met by links from two distinct authorized keys")
def _(s):
    _threshold(s, ["bob", "carl"], ["bob", "carl"])
    s.finish("pass")


@scenario("threshold-2-unmet", "step threshold 2 but only one link (bob) present")
def _(s):
    _threshold(s, ["bob"], ["bob", "carl"])
    s.finish("fail")


@scenario("threshold-2-disagreeing-products",
          "step threshold 2, two links whose products differ")
def _(s):
    _threshold(s, ["bob", "carl"], ["bob", "carl"], products_differ=True)
    s.finish("fail")


@scenario("threshold-2-one-link-bad-signature",
          "step threshold 2, two links but carl's link signature is forged (only 1 valid)")
def _(s):
    keys = _threshold(s, ["bob", "carl"], ["bob", "carl"])
    forge_signature(s.link_path("build", keys["carl"]))
    s.finish("fail")


@scenario("threshold-same-keyid-listed-twice",
          "pubkeys lists bob's keyid twice with threshold 2; only bob's link exists")
def _(s):
    _threshold(s, ["bob"], ["bob", "bob"])
    s.finish("fail")


@scenario("threshold-1-link-with-duplicate-signatures",
          "threshold 1; bob's link carries two signatures by bob")
def _(s):
    keys = _threshold(s, ["bob"], ["bob"], threshold=1)
    path = s.link_path("build", keys["bob"])
    # re-sign the existing link with the same key through the reference model
    from in_toto.models.metadata import Metadata
    md = Metadata.load(path)
    md.create_signature(keys["bob"].signer)
    md.dump(path)
    s.finish("pass")


@scenario("threshold-2-link-with-duplicate-signatures",
          "threshold 2 with pubkeys bob,carl; only bob's link, signed twice by bob")
def _(s):
    keys = _threshold(s, ["bob"], ["bob", "carl"])
    path = s.link_path("build", keys["bob"])
    from in_toto.models.metadata import Metadata
    md = Metadata.load(path)
    md.create_signature(keys["bob"].signer)
    md.dump(path)
    s.finish("fail")


@scenario("link-duplicate-signatures-first-invalid",
          "bob's link has two bob signatures, the FIRST forged: reference checks only the first matching signature")
def _(s):
    keys = _threshold(s, ["bob"], ["bob"], threshold=1)
    path = s.link_path("build", keys["bob"])
    from in_toto.models.metadata import Metadata
    md = Metadata.load(path)
    md.create_signature(keys["bob"].signer)
    md.dump(path)
    forge_signature(path, index=0)
    s.finish("fail")


# ---- sublayouts -----------------------------------------------------------

def _sublayout(s, variant=None):
    alice, bob, carl, dave = (s.key(n) for n in ("alice", "bob", "carl", "dave"))
    sub_dir = os.path.join(s.links, f"build.{bob.short}")
    s.write("src/main.c", "int main(){return 0;}\n")
    s.run("compile", dave, ["src"], ["src", "out"],
          "mkdir -p out && cp src/main.c out/app.bin", link_dir=sub_dir)
    if variant == "rule-violation":
        subprocess.run(["sh", "-c", "echo evil > out/app.bin"], cwd=s.work, check=True)
    s.run("test", dave, ["out"], ["out"], "true", link_dir=sub_dir)
    sub_steps = [
        step("compile", dave, [R("ALLOW src/*"), R("DISALLOW *")],
             [R("CREATE out/app.bin"), R("ALLOW src/*"), R("DISALLOW *")]),
        step("test", dave, [R("MATCH out/* WITH PRODUCTS FROM compile"), R("DISALLOW *")],
             [R("ALLOW out/*"), R("DISALLOW *")]),
    ]
    sub_inspections = []
    if variant == "sub-inspection-writes":
        # The sublayout's inspection runs in the verifier's working directory
        # before the root layout's inspection, which must see its file.
        sub_inspections = [inspection("leave-file", ["sh", "-c", "echo sub > from-sub.txt"])]
    s.layout(sub_steps, sub_inspections, signers=[bob], functionaries=[dave],
             path=s.link_path("build", bob))
    s.run("package", carl, ["out"], ["app.tar.gz"], "tar -czf app.tar.gz out")
    root_steps = [
        step("build", bob, [R("ALLOW *")], [R("ALLOW out/*"), R("DISALLOW *")]),
        step("package", carl, [R("MATCH out/* WITH PRODUCTS FROM build"), R("DISALLOW *")],
             [R("CREATE app.tar.gz"), R("DISALLOW *")]),
    ]
    root_inspections = []
    if variant == "sub-inspection-writes":
        root_inspections = [inspection("look", ["true"],
                                       [R("DISALLOW from-sub.txt"), R("ALLOW *")])]
    s.layout(root_steps, root_inspections, signers=[alice], functionaries=[bob, carl])
    if variant == "tampered":
        tamper_link_artifact(os.path.join(sub_dir, f"compile.{dave.short}.link"),
                             "products", "out/app.bin")
    if variant == "wrong-dir":
        os.rename(sub_dir, os.path.join(s.links, f"build.{bob.keyid}"))
    return bob, dave


@scenario("sublayout-pass",
          "step 'build' delegated to a sublayout signed by bob; sub-links in links/build.<bob8>/")
def _(s):
    _sublayout(s)
    s.finish("pass")


@scenario("sublayout-tampered-sublink",
          "sublayout chain where a product hash in the sub-step 'compile' link was edited after signing")
def _(s):
    _sublayout(s, "tampered")
    s.finish("fail")


@scenario("sublayout-rule-violation",
          "sublayout chain where out/app.bin changed between compile and test (sub-step MATCH fails)")
def _(s):
    _sublayout(s, "rule-violation")
    s.finish("fail")


@scenario("sublayout-wrong-link-dir",
          "sublayout links stored in build.<full keyid>/ instead of build.<keyid8>/")
def _(s):
    _sublayout(s, "wrong-dir")
    s.finish("fail")


@scenario("sublayout-inspection-changes-workdir",
          "a sublayout's inspection writes from-sub.txt in the working directory; the root "
          "layout's inspection, which runs after it, disallows that file among its materials")
def _(s):
    _sublayout(s, "sub-inspection-writes")
    s.finish("fail")


# ---- inspections -----------------------------------------------------------

def _insp(s, run, mr=(), pr=(), files_in_scenario=None):
    alice, bob = s.key("alice"), s.key("bob")
    s.write("product.txt", "the product\n")
    s.run("make", bob, [], ["product.txt"], "true")
    for rel, content in (files_in_scenario or {}).items():
        s.write(rel, content, base=s.dir)
    s.layout([step("make", bob, [], [R("ALLOW product.txt"), R("DISALLOW *")], "true")],
             [inspection("check", run, mr, pr)], signers=[alice], functionaries=[bob])


@scenario("inspection-pass", "inspection 'check' runs `ls` and exits 0")
def _(s):
    _insp(s, ["ls"])
    s.finish("pass")


@scenario("inspection-true-pass", "inspection 'check' runs `true`")
def _(s):
    _insp(s, ["true"])
    s.finish("pass")


@scenario("inspection-nonzero-exit", "inspection 'check' runs `false` (exit 1)")
def _(s):
    _insp(s, ["false"])
    s.finish("fail")


@scenario("inspection-exit-code-3", "inspection runs `sh -c 'exit 3'`")
def _(s):
    _insp(s, ["sh", "-c", "exit 3"])
    s.finish("fail")


@scenario("inspection-timeout",
          "inspection runs `sleep 5` with --inspection-timeout 1")
def _(s):
    _insp(s, ["sleep", "5"])
    s.finish("fail", extra_args=["--inspection-timeout", "1"])


@scenario("inspection-command-not-found", "inspection runs a command that does not exist")
def _(s):
    _insp(s, ["totogate-no-such-command-xyz"])
    s.finish("fail")


@scenario("inspection-match-step-products-pass",
          "inspection materials: MATCH product.txt WITH PRODUCTS FROM make (file present, same)")
def _(s):
    _insp(s, ["true"], [R("MATCH product.txt WITH PRODUCTS FROM make"),
                        R("DISALLOW product.txt"), R("ALLOW *")],
          files_in_scenario={"product.txt": "the product\n"})
    s.finish("pass")


@scenario("inspection-match-step-products-fail",
          "inspection materials: MATCH product.txt WITH PRODUCTS FROM make, local product.txt differs")
def _(s):
    _insp(s, ["true"], [R("MATCH product.txt WITH PRODUCTS FROM make"),
                        R("DISALLOW product.txt"), R("ALLOW *")],
          files_in_scenario={"product.txt": "a different product\n"})
    s.finish("fail")


@scenario("inspection-require-missing-fail",
          "inspection products: REQUIRE product.txt but no product.txt in the scenario dir")
def _(s):
    _insp(s, ["true"], [], [R("REQUIRE product.txt"), R("ALLOW *")])
    s.finish("fail")


@scenario("inspection-products-match-pass",
          "inspection copies product.txt to copied.txt; products: MATCH product.txt WITH PRODUCTS FROM make")
def _(s):
    _insp(s, ["cp", "product.txt", "copied.txt"],
          [R("MATCH product.txt WITH PRODUCTS FROM make"), R("DISALLOW product.txt"),
           R("ALLOW *")],
          [R("MATCH product.txt WITH PRODUCTS FROM make"), R("DISALLOW product.txt"),
           R("REQUIRE copied.txt"), R("ALLOW *")],
          files_in_scenario={"product.txt": "the product\n"})
    s.finish("pass")


def _two_inspections(s, second_materials):
    alice, bob = s.key("alice"), s.key("bob")
    s.write("product.txt", "the product\n")
    s.run("make", bob, [], ["product.txt"], "true")
    s.layout([step("make", bob, [], [R("ALLOW product.txt"), R("DISALLOW *")], "true")],
             [inspection("first", ["true"]),
              inspection("second", ["true"], second_materials)],
             signers=[alice], functionaries=[bob])


@scenario("inspection-links-not-recorded-pass",
          "two inspections; the second's materials DISALLOW first.link: the verifier "
          "writes first.link into its working directory, but *.link* files are excluded "
          "from what inspections record")
def _(s):
    _two_inspections(s, [R("DISALLOW first.link"), R("ALLOW *")])
    s.finish("pass")


@scenario("inspection-links-not-recorded-fail",
          "two inspections; the second's materials REQUIRE first.link, which is never "
          "recorded (*.link* is excluded)")
def _(s):
    _two_inspections(s, [R("REQUIRE first.link"), R("ALLOW *")])
    s.finish("fail")


# ---- tampering / signatures / links ----------------------------------------

def _basic(s):
    """Single step 'build' by bob producing out.txt; layout by alice."""
    alice, bob = s.key("alice"), s.key("bob")
    s.write("in.txt", "input\n")
    s.run("build", bob, ["in.txt"], ["out.txt"], "cp in.txt out.txt")
    s.run("publish", bob, ["out.txt"], ["out.txt"], "true")
    s.layout([
        step("build", bob, [R("ALLOW in.txt"), R("DISALLOW *")],
             [R("CREATE out.txt"), R("DISALLOW *")], "cp in.txt out.txt"),
        step("publish", bob, [R("MATCH out.txt WITH PRODUCTS FROM build"), R("DISALLOW *")],
             [R("MATCH out.txt WITH PRODUCTS FROM build"), R("DISALLOW *")], "true"),
    ], signers=[alice], functionaries=[bob])
    return alice, bob


@scenario("basic-pass", "two-step chain build -> publish, all good")
def _(s):
    _basic(s)
    s.finish("pass")


@scenario("tampered-link-product",
          "product hash edited in the signed build link -> invalid signature")
def _(s):
    _, bob = _basic(s)
    tamper_link_artifact(s.link_path("build", bob), "products")
    s.finish("fail")


@scenario("tampered-layout",
          "a rule in the signed root.layout edited after signing")
def _(s):
    _basic(s)
    path = os.path.join(s.dir, DEFAULT_LAYOUT)
    data = load_json(path)
    data["signed"]["steps"][0]["expected_products"] = [["ALLOW", "*"]]
    dump_json(path, data)
    s.finish("fail")


@scenario("forged-link-signature", "signature bytes of the build link altered")
def _(s):
    _, bob = _basic(s)
    forge_signature(s.link_path("build", bob))
    s.finish("fail")


@scenario("forged-layout-signature", "signature bytes of root.layout altered")
def _(s):
    _basic(s)
    forge_signature(os.path.join(s.dir, DEFAULT_LAYOUT))
    s.finish("fail")


@scenario("unauthorized-link-key",
          "build link signed by mallory (not authorized) and named build.<mallory8>.link; bob's link removed")
def _(s):
    _, bob = _basic(s)
    mallory = s.key("mallory")
    os.remove(s.link_path("build", bob))
    s.write("in.txt", "input\n")
    s.run("build", mallory, ["in.txt"], ["out.txt"], "cp in.txt out.txt")
    s.finish("fail")


@scenario("unauthorized-key-under-authorized-name",
          "link signed by mallory saved under bob's file name build.<bob8>.link")
def _(s):
    _, bob = _basic(s)
    mallory = s.key("mallory")
    s.write("in.txt", "input\n")
    s.run("build", mallory, ["in.txt"], ["out.txt"], "cp in.txt out.txt")
    shutil.move(s.link_path("build", mallory), s.link_path("build", bob))
    s.finish("fail")


@scenario("missing-link", "the publish link is missing")
def _(s):
    _, bob = _basic(s)
    os.remove(s.link_path("publish", bob))
    s.finish("fail")


@scenario("missing-link-dir", "--link-dir points to a directory that does not exist")
def _(s):
    _basic(s)
    s.finish("fail", link_dir="no-such-dir")


@scenario("extra-files-in-link-dir",
          "unrelated files in the link dir (junk, other steps' links, non-JSON .link) are ignored")
def _(s):
    _, bob = _basic(s)
    mallory = s.key("mallory")
    s.write("README.txt", "not a link\n", base=s.links)
    s.write(f"garbage.{bob.short}.link", "{not json", base=s.links)
    s.run("unrelated-step", mallory, [], [], "true")
    s.run("unrelated-step", bob, [], [], "true")
    s.finish("pass")


@scenario("link-name-field-mismatch",
          "build.<bob8>.link file whose signed 'name' field is 'something-else'")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    s.write("in.txt", "input\n")
    md = s.run("something-else", bob, ["in.txt"], ["out.txt"], "cp in.txt out.txt",
               sign=False)
    md.create_signature(bob.signer)
    md.dump(s.link_path("build", bob))
    s.layout([step("build", bob, [R("ALLOW in.txt"), R("DISALLOW *")],
                   [R("CREATE out.txt"), R("DISALLOW *")], "cp in.txt out.txt")],
             signers=[alice], functionaries=[bob])
    s.finish("pass")


@scenario("link-is-a-layout-in-place-of-link-unauthorized",
          "step's link file contains a layout signed by an unauthorized key")
def _(s):
    alice, bob, mallory = s.key("alice"), s.key("bob"), s.key("mallory")
    s.layout([], signers=[mallory], functionaries=[], path=s.link_path("build", bob))
    s.layout([step("build", bob, [], [])], signers=[alice], functionaries=[bob])
    s.finish("fail")


# ---- layout-level checks ---------------------------------------------------

@scenario("expired-layout", "layout expired in 2000")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    s.run("build", bob, [], [], "true")
    s.layout([step("build", bob, [], [], "true")], signers=[alice],
             functionaries=[bob], expires="2000-01-01T00:00:00Z")
    s.finish("fail")


@scenario("far-future-expiry", "layout expires in 2099")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    s.run("build", bob, [], [], "true")
    s.layout([step("build", bob, [], [], "true")], signers=[alice],
             functionaries=[bob], expires="2099-12-31T23:59:59Z")
    s.finish("pass")


@scenario("wrong-layout-key", "root.layout signed by alice, verified with bob.pub")
def _(s):
    _basic(s)
    s.finish("fail", keys=("bob",))


@scenario("layout-two-signers-verify-both", "layout signed by alice and dan, verified with both")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    dan = s.key("dan", "ecdsa-p256")
    s.run("build", bob, [], [], "true")
    s.layout([step("build", bob, [], [], "true")], signers=[alice, dan],
             functionaries=[bob])
    s.finish("pass", keys=("alice", "dan"))


@scenario("layout-two-signers-verify-one", "layout signed by alice and dan, verified with dan only")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    dan = s.key("dan", "ecdsa-p256")
    s.run("build", bob, [], [], "true")
    s.layout([step("build", bob, [], [], "true")], signers=[alice, dan],
             functionaries=[bob])
    s.finish("pass", keys=("dan",))


@scenario("layout-verification-key-without-signature",
          "layout signed by alice only, verified with alice.pub AND erin.pub (erin did not sign)")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    s.key("erin")
    s.run("build", bob, [], [], "true")
    s.layout([step("build", bob, [], [], "true")], signers=[alice], functionaries=[bob])
    s.finish("fail", keys=("alice", "erin"))


@scenario("layout-unsigned", "layout with no signatures at all")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    s.run("build", bob, [], [], "true")
    s.layout([step("build", bob, [], [], "true")], signers=[], functionaries=[bob])
    s.finish("fail")


@scenario("layout-rsa-owner-ed25519-functionary",
          "layout signed with RSA 2048, functionary link signed with ed25519")
def _(s):
    alice, bob = s.key("alice", "rsa"), s.key("bob")
    s.run("build", bob, [], [], "true")
    s.layout([step("build", bob, [], [], "true")], signers=[alice], functionaries=[bob])
    s.finish("pass")


@scenario("no-verification-keys",
          "in-toto-verify invoked without --verification-keys (usage error, exit 2)")
def _(s):
    _basic(s)
    s.finish("fail", args=["--layout", DEFAULT_LAYOUT, "--link-dir", "links"])


@scenario("layout-passed-as-link",
          "--layout points at a link file instead of a layout")
def _(s):
    _, bob = _basic(s)
    shutil.copy(s.link_path("build", bob), os.path.join(s.dir, "build.link"))
    s.finish("fail", args=["--layout", "build.link", "--verification-keys", "bob.pub",
                           "--link-dir", "links"])


@scenario("empty-layout", "layout with no steps and no inspections")
def _(s):
    s.key("alice")
    s.layout([], signers=[s.key("alice")])
    s.finish("pass")


@scenario("expected-command-mismatch",
          "step expected_command differs from the link's command (reference only warns)")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    s.run("build", bob, [], ["out.txt"], "echo hi > out.txt")
    s.layout([step("build", bob, [], [R("CREATE out.txt"), R("DISALLOW *")],
                   ["make", "all"])], signers=[alice], functionaries=[bob])
    s.finish("pass")


# ---- unicode / spaces --------------------------------------------------------

def _unicode(s, tamper=False):
    alice, bob = s.key("alice"), s.key("bob")
    s.write("my file ü.txt", "héllo wörld\n")
    s.run("build café", bob, ["my file ü.txt"], ["my file ü.txt", "out dir/résumé.txt"],
          "mkdir -p 'out dir' && cp 'my file ü.txt' 'out dir/résumé.txt'")
    if tamper:
        subprocess.run(["sh", "-c", "echo evil > 'out dir/résumé.txt'"], cwd=s.work,
                       check=True)
    s.run("ship ✓", bob, ["out dir"], [], "true")
    s.layout([
        step("build café", bob, [["ALLOW", "my file ü.txt"], R("DISALLOW *")],
             [["CREATE", "out dir/résumé.txt"], ["ALLOW", "my file ü.txt"],
              R("DISALLOW *")]),
        step("ship ✓", bob,
             [["MATCH", "out dir/*", "WITH", "PRODUCTS", "FROM", "build café"],
              R("DISALLOW *")], []),
    ], signers=[alice], functionaries=[bob])


@scenario("unicode-step-and-artifact-names",
          "step names 'build café' and 'ship ✓', artifacts 'my file ü.txt' and 'out dir/résumé.txt'")
def _(s):
    _unicode(s)
    s.finish("pass")


@scenario("unicode-step-and-artifact-names-fail",
          "as unicode-step-and-artifact-names but 'out dir/résumé.txt' changed before 'ship ✓'")
def _(s):
    _unicode(s, tamper=True)
    s.finish("fail")


# ---- found in review: metadata parsing ---------------------------------------

def _resign_link_field(s, step_name, key, field, value):
    """Sets `field` of a Metablock link's payload and signs it again."""
    p = s.link_path(step_name, key)
    from in_toto.models.metadata import Metadata
    md = Metadata.load(p)
    setattr(md.signed, field, value)
    md.signatures = []
    md.create_signature(key.signer)
    md.dump(p)


@scenario("parse-neg-zero-return-value",
          "make's link byproducts spell return-value as -0 (Python reads int 0, signs '0')")
def _(s):
    two_step(s, [R("ALLOW *")])
    p = s.link_path("make", s.key("bob"))
    with open(p, "rb") as f:
        text = f.read()
    changed = text.replace(b'"return-value": 0', b'"return-value": -0')
    assert changed != text
    with open(p, "wb") as f:
        f.write(changed)
    s.finish("pass")


@scenario("parse-threshold-true",
          "step threshold is JSON true (a Python bool is an int, True == 1)")
def _(s):
    alice, bob = chain(s, {}, [dict(name="make", cmd="echo hi > a.txt", m=[],
                                    p=["a.txt"], pr=[R("ALLOW *")])])
    s.layout([step("make", bob, [], [R("ALLOW *")], "echo hi > a.txt",
                   threshold=True)], signers=[alice], functionaries=[bob])
    s.finish("pass")


@scenario("parse-link-command-not-strings",
          "make's link command is ['sh', 1, null] (the reference checks only for a list), re-signed")
def _(s):
    two_step(s, [R("ALLOW *")])
    _resign_link_field(s, "make", s.key("bob"), "command", ["sh", 1, None])
    s.finish("pass")


@scenario("parse-link-name-null",
          "make's link name is null (the reference does not check it), re-signed")
def _(s):
    two_step(s, [R("ALLOW *")])
    _resign_link_field(s, "make", s.key("bob"), "name", None)
    s.finish("pass")


@scenario("parse-link-name-null-tampered",
          "as parse-link-name-null, then a product hash of make changed after signing")
def _(s):
    two_step(s, [R("ALLOW *")])
    _resign_link_field(s, "make", s.key("bob"), "name", None)
    tamper_link_artifact(s.link_path("make", s.key("bob")))
    s.finish("fail")



# ---- found in review: verification and rules ----------------------------------


# MATCH: the reference turns `\` into `/` in a rule's source prefix, in its
# destination prefix and in the paths it joins with a prefix
# (verifylib.py verify_match_rule).
@scenario("match-backslash-source-prefix",
          "MATCH * IN build\\sub WITH PRODUCTS IN build/sub FROM make: the reference reads the prefix as build/sub")
def _(s):
    two_step(s, [R("MATCH * IN build\\sub WITH PRODUCTS IN build/sub FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p build/sub && echo one > build/sub/a.txt", p1=["build"], m2=["build"])
    s.finish("pass")


@scenario("match-backslash-dest-prefix",
          "MATCH * IN build/sub WITH PRODUCTS IN build\\sub FROM make: the reference reads the prefix as build/sub")
def _(s):
    two_step(s, [R("MATCH * IN build/sub WITH PRODUCTS IN build\\sub FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p build/sub && echo one > build/sub/a.txt", p1=["build"], m2=["build"])
    s.finish("pass")


def _rename_signed_artifact(s, step_name, key, section, old, new):
    from in_toto.models.metadata import Metadata
    p = s.link_path(step_name, key)
    md = Metadata.load(p)
    d = getattr(md.signed, section)
    d[new] = d.pop(old)
    md.signatures = []
    md.create_signature(key.signer)
    md.dump(p)


@scenario("match-backslash-artifact-dest-join",
          "signed links name out/a\\b.txt and a\\b.txt; MATCH * WITH PRODUCTS IN out FROM make looks up out/a/b.txt")
def _(s):
    two_step(s, [R("MATCH * WITH PRODUCTS IN out FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p out/a && echo one > out/a/b.txt", p1=["out"],
             between=sh("mkdir -p a && cp out/a/b.txt a/b.txt"), m2=["a"])
    bob = s.key("bob")
    _rename_signed_artifact(s, "make", bob, "products", "out/a/b.txt", "out/a\\b.txt")
    _rename_signed_artifact(s, "use", bob, "materials", "a/b.txt", "a\\b.txt")
    s.finish("fail")


@scenario("match-backslash-artifact-source-join",
          "signed links name a\\b.txt and src/a\\b.txt; MATCH * IN src WITH PRODUCTS FROM make looks up src/a/b.txt (reference KeyError)")
def _(s):
    two_step(s, [R("MATCH * IN src WITH PRODUCTS FROM make"), R("DISALLOW *")],
             cmd1="mkdir -p a && echo one > a/b.txt", p1=["a"],
             between=sh("mkdir -p src/a && cp a/b.txt src/a/b.txt"), m2=["src"])
    bob = s.key("bob")
    _rename_signed_artifact(s, "make", bob, "products", "a/b.txt", "a\\b.txt")
    _rename_signed_artifact(s, "use", bob, "materials", "src/a/b.txt", "src/a\\b.txt")
    s.finish("fail")


@scenario("non-gpg-key-subkeys-name-the-link",
          "bob's ed25519 key dict in the layout lists a 'subkeys' entry; bob's link is named after the subkey id (the reference reads 'subkeys' of any key)")
def _(s):
    alice, bob = chain(s, {}, [dict(name="make", cmd="echo hi > a.txt", m=[], p=["a.txt"],
                                     pr=[R("ALLOW *")])])
    sub = "abcdef12" * 8
    lay = Layout(steps=[step("make", bob, [], [R("ALLOW *")], "echo hi > a.txt")], inspect=[],
                 keys={bob.keyid: dict(bob.pub, subkeys={sub: {}})})
    lay.validate()
    md = Metablock(signed=lay)
    md.create_signature(alice.signer)
    md.dump(os.path.join(s.dir, DEFAULT_LAYOUT))
    os.rename(s.link_path("make", bob), os.path.join(s.links, f"make.{sub[:8]}.link"))
    s.finish("pass")


@scenario("sublayout-inspection-then-missing-link",
          "as sublayout-inspection-changes-workdir, without the later root step package's link: the reference checks every step's links before it verifies a sublayout, so the sublayout's inspection never runs")
def _(s):
    _sublayout(s, "sub-inspection-writes")
    os.remove(s.link_path("package", s.key("carl")))
    s.finish("fail")


# ---- found in review: signatures ------------------------------------------------

def _resign_link_rsa_pss(s, step_name, keyname, salt_length):
    """Re-sign `step_name`'s link with `keyname`'s RSA key, RSA-PSS/SHA-256
    with the given salt length (as other tools and HSMs may sign)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from in_toto.models.metadata import Metadata
    key = s.key(keyname)
    path = s.link_path(step_name, key)
    msg = Metadata.load(path).signed.signable_bytes
    with open(key.keyfile, "rb") as f:
        priv = serialization.load_pem_private_key(f.read(), None)
    sig = priv.sign(msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                     salt_length=salt_length), hashes.SHA256())
    data = load_json(path)
    data["signatures"] = [{"keyid": key.keyid, "sig": sig.hex()}]
    dump_json(path, data)


@scenario("sig-rsa-pss-max-salt",
          "bob (RSA) signs make's link with RSA-PSS salt length MAX_LENGTH; PSS.AUTO accepts it")
def _(s):
    from cryptography.hazmat.primitives.asymmetric import padding
    chain(s, {}, [dict(name="make", cmd="echo hi > a.txt", m=[], p=["a.txt"],
                       pr=[R("ALLOW *")])], kind="rsa")
    _resign_link_rsa_pss(s, "make", "bob", padding.PSS.MAX_LENGTH)
    s.finish("pass")


@scenario("sig-rsa-pss-zero-salt",
          "bob (RSA) signs make's link with RSA-PSS salt length 0; PSS.AUTO accepts it")
def _(s):
    chain(s, {}, [dict(name="make", cmd="echo hi > a.txt", m=[], p=["a.txt"],
                       pr=[R("ALLOW *")])], kind="rsa")
    _resign_link_rsa_pss(s, "make", "bob", 0)
    s.finish("pass")



# ---- found in review: recording inspections -------------------------------------

@scenario("inspection-backslash-name-fail",
          "inspection writes a file named 'a\\evil', recorded as 'a/evil' (backslashes become "
          "slashes); products DISALLOW a/*")
def _(s):
    _insp(s, ["sh", "-c", "echo x > 'a\\evil'"], [], [R("DISALLOW a/*"), R("ALLOW *")])
    s.finish("fail")


# A process the first inspection leaves behind: it maps product.txt, dirties
# its page (which moves ctime), and later writes through that dirty page,
# which does not move ctime again.
_MAPPED_WRITER = (
    "import mmap, os, time\n"
    "f = open('product.txt', 'r+b'); m = mmap.mmap(f.fileno(), 0)\n"
    "m[0:1] = b't'\n"
    "while not os.path.exists('trigger'): time.sleep(0.02)\n"
    "m[0:3] = b'BAD'\n"
    "open('done', 'w').close()\n"
    "time.sleep(2)\n")


@scenario("inspection-write-through-dirty-mapping-fail",
          "inspection 'start' leaves a process with product.txt mapped and a page dirtied and "
          "waits 3 s; inspection 'poke' has it write BAD through that page (ctime does not "
          "move); poke's products MATCH product.txt WITH PRODUCTS FROM make")
def _(s):
    alice, bob = s.key("alice"), s.key("bob")
    s.write("product.txt", "the product\n")
    s.run("make", bob, [], ["product.txt"], "true")
    s.write("product.txt", "the product\n", base=s.dir)
    s.write("writer.py", _MAPPED_WRITER, base=s.dir)
    s.layout([step("make", bob, [], [R("ALLOW product.txt"), R("DISALLOW *")], "true")],
             [inspection("start", ["sh", "-c", "setsid python3 writer.py >/dev/null 2>&1 "
                                   "</dev/null & sleep 3"]),
              inspection("poke", ["sh", "-c", "touch trigger; while [ ! -e done ]; do "
                                  "sleep 0.02; done"],
                         [], [R("MATCH product.txt WITH PRODUCTS FROM make"),
                              R("DISALLOW product.txt"), R("ALLOW *")])],
             signers=[alice], functionaries=[bob])
    s.finish("fail")



# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def check_reference(outdir, names):
    verify = os.path.join(os.path.dirname(sys.executable), "in-toto-verify")
    if not os.path.exists(verify):
        print(f"cannot find {verify}", file=sys.stderr)
        return 2

    def one(name):
        sdir = os.path.join(outdir, name)
        meta = load_json(os.path.join(sdir, "scenario.json"))
        # Run in a throw-away copy so inspection links / extracted files do not
        # pollute the generated scenario.
        tmp = tempfile.mkdtemp(prefix="totogate-check-")
        try:
            cdir = os.path.join(tmp, name)
            shutil.copytree(sdir, cdir, symlinks=True)
            try:
                p = subprocess.run([verify] + meta["args"], cwd=cdir, timeout=60,
                                   capture_output=True, text=True)
                rc, err = p.returncode, (p.stderr or "").strip().splitlines()
            except subprocess.TimeoutExpired:
                rc, err = "timeout", []
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        ok = (rc == 0) == (meta["expect"] == "pass")
        return name, meta["expect"], rc, ok, (err[-1] if err else "")

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(one, names))
    bad = 0
    for name, expect, rc, ok, last in results:
        status = "ok" if ok else "MISMATCH"
        if not ok:
            bad += 1
        print(f"[reference {status}] {name}: expect={expect} rc={rc} {last[:150]}")
    print(f"reference check: {len(results) - bad}/{len(results)} match")
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--check-reference", action="store_true",
                    help="run the reference in-toto-verify (sibling of this "
                         "python) on every scenario and compare with 'expect'")
    ap.add_argument("--list", action="store_true", help="list scenario names and exit")
    args = ap.parse_args(argv)

    if args.list:
        for name, desc, _fn in SCENARIOS:
            print(f"{name}: {desc}")
        return 0

    names = [n for n, _, _ in SCENARIOS]
    assert len(names) == len(set(names)), "duplicate scenario names"
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            ap.error("unknown scenario(s): " + ", ".join(sorted(unknown)))
    outdir = os.path.abspath(args.outdir)
    os.makedirs(outdir, exist_ok=True)
    start = time.time()
    generated = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    for name, desc, fn in SCENARIOS:
        if args.only and name not in args.only:
            continue
        s = Scenario(outdir, name, desc)
        # silence step commands' stdout
        saved = os.dup(1)
        sys.stdout.flush()
        os.dup2(devnull, 1)
        try:
            fn(s)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            shutil.rmtree(s.work, ignore_errors=True)
        assert s.expect in ("pass", "fail"), f"{name}: finish() not called"
        generated.append(name)
        print(f"{name:55s} expect={s.expect}")
    os.close(devnull)
    index_path = os.path.join(outdir, "index.json")
    if args.only and os.path.exists(index_path):
        # keep previously generated names that still exist
        old = [n for n in load_json(index_path)
               if os.path.exists(os.path.join(outdir, n, "scenario.json"))]
        generated = [n for n in names if n in set(old) | set(generated)]
    dump_json(index_path, generated)
    print(f"generated {len(generated)} scenario(s) in {outdir} "
          f"({time.time() - start:.1f}s)")

    if args.check_reference:
        to_check = args.only or generated
        return check_reference(outdir, to_check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
