#!/usr/bin/env python3
"""Regenerates every hostile (and control) package archive in this directory.

Python 3 standard library only; no dpkg, tar or zip tools needed. Output is
deterministic (fixed mtimes, gzip mtime 0), so rerunning leaves git clean.

    python3 testdata/hostile/make.py
"""

import gzip
import io
import os
import struct
import tarfile
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = "evil-1.0.0/"
# 32 MiB of zeros compresses to ~32 KiB: well over the 200:1 ratio limit,
# small enough to commit. A real 1 GiB bomb trips the same check at ~1 MiB.
BOMB = 32 << 20
# Entry-count bombs hold 1,001 members; tests unpack them with
# max_entries = 1,000 (200,001 members would not be small to commit).
MANY = 1001
CONTROL = (
    b"Package: evil\nVersion: 1.0\nArchitecture: all\n"
    b"Maintainer: Test <test@example.org>\nDescription: hostile test vector\n"
)
# Deterministic, poorly compressible filler, so truncation lands mid-stream.
FILLER = b"".join(struct.pack("<Q", (i * 0x9E3779B97F4A7C15) % (1 << 64)) for i in range(2048))


def out(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


# --- tar ---------------------------------------------------------------

def reg(name, data=b"", mode=0o644):
    return ("reg", name, data, mode)


def sym(name, target):
    return ("sym", name, target, 0o777)


def hard(name, target):
    return ("lnk", name, target, 0o644)


def chr_dev(name):
    return ("chr", name, None, 0o666)


def dirent(name):
    return ("dir", name, None, 0o755)


def tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for kind, name, extra, mode in members:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.mtime = 0
            ti.uname = ti.gname = "root"
            if kind == "reg":
                ti.size = len(extra)
                t.addfile(ti, io.BytesIO(extra))
                continue
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra
            elif kind == "lnk":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            t.addfile(ti)
    return buf.getvalue()


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def zeros_tar(name):
    """A tar holding one file of BOMB zeros, streamed into gzip (never all in memory)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as g:
        with tarfile.open(fileobj=g, mode="w|", format=tarfile.GNU_FORMAT) as t:
            ti = tarfile.TarInfo(name)
            ti.size = BOMB
            ti.mtime = 0

            class Zeros(io.RawIOBase):
                left = BOMB

                def readable(self):
                    return True

                def readinto(self, b):
                    n = min(len(b), self.left)
                    b[:n] = bytes(n)
                    self.left -= n
                    return n

            t.addfile(ti, io.BufferedReader(Zeros()))
    return buf.getvalue()


# --- ar / deb ----------------------------------------------------------

def ar(members):
    data = b"!<arch>\n"
    for name, body in members:
        hdr = b"%-16s%-12s%-6s%-6s%-8s%-10s`\n" % (
            name.encode(), b"0", b"0", b"0", b"100644", str(len(body)).encode())
        assert len(hdr) == 60
        data += hdr + body + (b"\n" if len(body) % 2 else b"")
    return data


def control_tar_gz():
    return gz(tar([dirent("./"), reg("./control", CONTROL)]))


def deb(data_members=None, data_tar_gz=None):
    if data_tar_gz is None:
        data_tar_gz = gz(tar([dirent("./")] + data_members))
    return ar([("debian-binary", b"2.0\n"), ("control.tar.gz", control_tar_gz()),
               ("data.tar.gz", data_tar_gz)])


def crate(members):
    return gz(tar(members))


# --- zip ---------------------------------------------------------------

def zinfo(name, mode):
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.create_system = 3  # unix: external attributes carry st_mode
    zi.external_attr = mode << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    return zi


def zip_of(members):
    """members: (name, data, st_mode)"""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is the point
        with zipfile.ZipFile(buf, "w") as z:
            for name, data, mode in members:
                z.writestr(zinfo(name, mode), data)
    return buf.getvalue()


def zip_bomb():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        with z.open(zinfo("zeros", 0o100644), "w", force_zip64=False) as f:
            chunk = bytes(1 << 20)
            for _ in range(BOMB >> 20):
                f.write(chunk)
    return buf.getvalue()


LONG = "/".join(["a" * 200] * 25)  # 5,024 bytes, 25 deep: trips max_path_len only
DEEP = "d/" * 100 + "f"  # 201 bytes, 101 deep: trips max_depth only


def main():
    # .deb: every attack sits in data.tar.gz after a valid control.tar.gz.
    debs = {
        "path-traversal": [reg("./../../etc/passwd", b"pwned\n")],
        "absolute-path": [reg("/etc/passwd", b"pwned\n")],
        "symlink-escape": [dirent("./usr/"), sym("./usr/escape", "../../../../etc")],
        "symlink-absolute": [sym("./etc-link", "/etc")],
        "symlink-write-through": [dirent("./usr/"), sym("./usr/up", ".."),
                                  reg("./usr/up/evil", b"pwned\n")],
        "hardlink-escape": [hard("./passwd", "../../etc/passwd")],
        "device-node": [dirent("./dev/"), chr_dev("./dev/null")],
        "entry-count-bomb": [reg("./e/%05d" % i) for i in range(MANY)],
        "long-path": [reg("./" + LONG, b"x")],
        "deep-path": [reg("./" + DEEP, b"x")],
        "duplicate-entries": [reg("./etc/x", b"first\n"), reg("etc//x", b"second\n")],
    }
    for name, members in debs.items():
        out(name + ".deb", deb(members))
    out("gzip-bomb.deb", deb(data_tar_gz=zeros_tar("./zeros")))
    good = deb([dirent("./usr/"), reg("./usr/filler", FILLER)])
    out("truncated.deb", good[: len(good) * 2 // 3])
    out("wrong-magic.deb", b"!<arcX>\n" + good[8:])
    out("control-not-second.deb", ar([
        ("debian-binary", b"2.0\n"), ("data.tar.gz", gz(tar([dirent("./")]))),
        ("control.tar.gz", control_tar_gz())]))
    out("extra-member.deb", good + ar([("evil.sh", b"#!/bin/sh\nrm -rf /\n")])[8:])
    out("bad-version.deb", ar([("debian-binary", b"3.0\n")]))

    # .crate: every member under evil-1.0.0/ except where that is the attack.
    crates = {
        "path-traversal": [reg(CRATE + "../../etc/passwd", b"pwned\n")],
        "absolute-path": [reg("/etc/passwd", b"pwned\n")],
        "symlink-escape": [sym(CRATE + "src/escape", "../../../etc")],
        "symlink-absolute": [sym(CRATE + "etc-link", "/etc")],
        "symlink-write-through": [sym(CRATE + "up", ".."), reg(CRATE + "up/evil", b"pwned\n")],
        "hardlink-escape": [hard(CRATE + "passwd", "../../etc/passwd")],
        "device-node": [chr_dev(CRATE + "null")],
        "entry-count-bomb": [reg(CRATE + "e/%05d" % i) for i in range(MANY)],
        "long-path": [reg(CRATE + LONG, b"x")],
        "deep-path": [reg(CRATE + DEEP, b"x")],
        "duplicate-entries": [reg(CRATE + "Cargo.toml", b"first\n"),
                              reg("./" + CRATE + "Cargo.toml", b"second\n")],
        "outside-crate-dir": [reg(CRATE + "Cargo.toml", b"[package]\n"),
                              reg("other-2.0.0/build.rs", b"fn main() {}\n")],
    }
    for name, members in crates.items():
        out(name + ".crate", crate(members))
    out("gzip-bomb.crate", zeros_tar(CRATE + "zeros"))
    good = crate([reg(CRATE + "Cargo.toml", b"[package]\n"), reg(CRATE + "filler", FILLER)])
    out("truncated.crate", good[: len(good) * 2 // 3])
    out("wrong-magic.crate", b"\x1f\x8c" + good[2:])

    # .zip: unix modes in the external attributes carry the file type.
    f, d, l, c = 0o100644, 0o040755, 0o120777, 0o020644
    zips = {
        "path-traversal": [("../../etc/passwd", b"pwned\n", f)],
        "absolute-path": [("/etc/passwd", b"pwned\n", f)],
        "symlink-escape": [("escape", b"../../etc", l)],
        "symlink-absolute": [("etc-link", b"/etc", l)],
        "device-node": [("null", b"", c)],
        "entry-count-bomb": [("e/%05d" % i, b"", f) for i in range(MANY)],
        "long-path": [(LONG, b"x", f)],
        "deep-path": [(DEEP, b"x", f)],
        "duplicate-entries": [("dup.txt", b"first\n", f), ("./dup.txt", b"second\n", f)],
        "duplicate-names": [("dup.txt", b"first\n", f), ("dup.txt", b"second\n", f)],
    }
    for name, members in zips.items():
        out(name + ".zip", zip_of(members))
    out("deflate-bomb.zip", zip_bomb())
    good = zip_of([("pkg/", b"", d), ("pkg/__init__.py", b"print('hi')\n", f),
                   ("pkg/filler", FILLER, f), ("bin/tool", b"#!/bin/sh\n", 0o100755)])
    out("truncated.zip", good[: len(good) // 2])
    out("wrong-magic.zip", b"PK\x03\x05" + good[4:])

    # Controls: well-formed packages that must unpack.
    out("good.deb", deb([dirent("./usr/"), dirent("./usr/bin/"),
                         reg("./usr/bin/hello", b"#!/bin/sh\necho hello\n", 0o4755),
                         sym("./usr/bin/hi", "hello"), hard("./usr/bin/hello2", "./usr/bin/hello"),
                         reg("./usr/filler", FILLER)]))
    out("good.crate", crate([reg(CRATE + "Cargo.toml", b"[package]\nname = \"evil\"\n"),
                             reg(CRATE + "src/lib.rs", b"pub fn f() {}\n"),
                             sym(CRATE + "src/alias.rs", "lib.rs")]))
    out("good.zip", good)


if __name__ == "__main__":
    main()
