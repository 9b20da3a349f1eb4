"""Reference-side helper for tests/cli/interop.rs.

Runs under the oracle venv (in-toto 3.1.0, securesystemslib 1.6.0,
cryptography). Every subcommand prints JSON (or nothing) on stdout.

  genkeys DIR PW          PKCS#8 PEM keys made with `cryptography`:
                          ed25519, rsa (3072), p256, p384, and `enc`
                          (ed25519, encrypted with BestAvailableEncryption(PW));
                          each NAME + NAME.pub. Prints {name: keyid}.
  keyid PUB...            securesystemslib keyid + key dict of each public PEM.
  canon                   [[json_text, hex(encode_canonical(value))], ...]
  canonlink DIR KEY       writes DIR/canon.link (Metablock) and
                          DIR/canon.dsse.link (DSSE), a Link carrying the
                          canonical-JSON vectors, signed with KEY.
  layout OUT KEY PW DSSE PUB1 PUB2 [ADDKEY]
                          a 2-step layout ("write" by PUB1, "package" by
                          PUB2) via the Python API, signed with KEY (PW "-"
                          = unencrypted; DSSE "1" = Envelope); ADDKEY, if
                          given, adds a second signature (Metablock only).
"""

import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey

from in_toto.models._signer import (
    load_crypto_signer_from_pkcs8_file,
    load_public_key_from_file,
)
from in_toto.models.layout import Inspection, Layout, Step
from in_toto.models.link import Link
from in_toto.models.metadata import Envelope, Metablock


def keyid_of(pub_path):
    with open(pub_path, "rb") as f:
        key = SSlibKey.from_crypto(serialization.load_pem_public_key(f.read()))
    return key.keyid, key.to_dict()


def genkeys(d, pw):
    made = {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=3072),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "enc": ed25519.Ed25519PrivateKey.generate(),
    }
    out = {}
    for name, key in made.items():
        enc = (
            serialization.BestAvailableEncryption(pw.encode())
            if name == "enc"
            else serialization.NoEncryption()
        )
        priv = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        with open(os.path.join(d, name), "wb") as f:
            f.write(priv)
        with open(os.path.join(d, name + ".pub"), "wb") as f:
            f.write(pub)
        out[name] = keyid_of(os.path.join(d, name + ".pub"))[0]
    return out


# Strings that stress canonical JSON: non-ASCII, the two escaped characters,
# raw control characters (canonical JSON does not escape them), and keys
# whose UTF-16 order differs from code-point order ("\ue000" sorts after
# "\U0001F600" in UTF-16, before it by code point).
STRINGS = [
    "plain",
    "caf\u00e9 \u00fc\u00df \u4e2d\u6587",
    "quote \" backslash \\ end",
    "newline\nand\ttab\u0001ctl\u001f\u007f",
    "emoji \U0001F600 astral",
    "\ue000 private use",
    "\U0001F600",
    "\ue000",
    "",
    "/slash/ and \u2028 \u2029 separators",
]

VECTORS = [
    *STRINGS,
    {"\ue000": 1, "\U0001F600": 2, "a": 3, "B": 4, "\u00e9": 5, "": 6},
    {"nested": {"z": [1, {"y": []}, {}], "a": {"b": {"c": "d"}}}},
    [],
    {},
    [[], {}, [[]], [{}]],
    0,
    -1,
    -9223372036854775808,
    9223372036854775807,
    18446744073709551615,
    9007199254740993,
    True,
    False,
    None,
    {"mixed": ["\"", "\\", "\n", "\t", "\u0001", None, True, -42]},
]


def canon():
    return [
        [json.dumps(v), encode_canonical(v).encode("utf-8").hex()] for v in VECTORS
    ]


def canon_link():
    materials = {}
    for i, s in enumerate(STRINGS):
        materials[s] = {"sha256": "%064x" % (i + 1)}
    byproducts = {
        "stdout": "".join(STRINGS),
        "stderr": "\u0001\n\t\"\\",
        "return-value": -9223372036854775808,
        "vectors": VECTORS,
        "\ue000": "pua key",
        "\U0001F600": "astral key",
    }
    return Link(
        name="canon-\u00e9\U0001F600",
        materials=materials,
        products={"out/\u00fc \"q\".txt": {"sha256": "ab" * 32, "sha512": "cd" * 64}},
        byproducts=byproducts,
        command=["sh", "-c", "printf '%s\\n' \"$x\"", "\u00fc\U0001F600"],
        environment={"variables": "\u0001", "n": 18446744073709551615},
    )


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "genkeys":
        print(json.dumps(genkeys(args[0], args[1])))
    elif cmd == "keyid":
        print(json.dumps([list(keyid_of(p)) for p in args]))
    elif cmd == "canon":
        print(json.dumps(canon()))
    elif cmd == "canonlink":
        d, key = args
        signer = load_crypto_signer_from_pkcs8_file(key)
        mb = Metablock(signed=canon_link())
        mb.create_signature(signer)
        mb.dump(os.path.join(d, "canon.link"))
        env = Envelope.from_signable(canon_link())
        env.create_signature(signer)
        env.dump(os.path.join(d, "canon.dsse.link"))
    elif cmd == "layout":
        out, key, pw, dsse, pub1, pub2 = args[:6]
        add = args[6] if len(args) > 6 else None
        layout = Layout()
        layout.set_relative_expiration(days=30)
        k1 = load_public_key_from_file(pub1)
        k2 = load_public_key_from_file(pub2)
        layout.add_functionary_key(k1)
        layout.add_functionary_key(k2)
        write = Step(name="write")
        write.pubkeys = [k1["keyid"]]
        write.set_expected_command_from_string("sh -c")
        write.add_material_rule_from_string("DISALLOW *")
        write.add_product_rule_from_string("CREATE foo.txt")
        write.add_product_rule_from_string("DISALLOW *")
        package = Step(name="package")
        package.pubkeys = [k2["keyid"]]
        package.add_material_rule_from_string("MATCH foo.txt WITH PRODUCTS FROM write")
        package.add_material_rule_from_string("DISALLOW *")
        package.add_product_rule_from_string("CREATE foo.tar")
        package.add_product_rule_from_string("ALLOW foo.txt")
        package.add_product_rule_from_string("DISALLOW *")
        check = Inspection(name="check")
        check.set_run_from_string("test -f foo.tar")
        check.add_material_rule_from_string("MATCH foo.tar WITH PRODUCTS FROM package")
        layout.steps = [write, package]
        layout.inspect = [check]
        signer = load_crypto_signer_from_pkcs8_file(
            key, None if pw == "-" else pw.encode()
        )
        md = Envelope.from_signable(layout) if dsse == "1" else Metablock(signed=layout)
        md.create_signature(signer)
        if add:
            md.create_signature(load_crypto_signer_from_pkcs8_file(add))
        md.dump(out)
    else:
        sys.exit("unknown subcommand " + cmd)


if __name__ == "__main__":
    main()
