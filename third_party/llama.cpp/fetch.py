#!/usr/bin/env python3
"""Obtain the pinned llama.cpp source and print the directory that holds it.

llama.cpp is not committed to this repository. Its source is published on PyPI inside the
sdist of ``llama-cpp-python`` (folder ``vendor/llama.cpp``). This script downloads that exact
sdist with pip, checks its SHA-256 against ``pin.json``, keeps it in a cache outside the
repository (so a second build does not download again) and extracts ``vendor/llama.cpp`` once.

The last line printed on stdout is the source directory; everything else goes to stderr.
CMake runs this script at configure time; the benchmarks run it to build the reference tools.

Environment:
    LLAMACPP_INTEGRATIONS_CACHE: cache root (default: ``$XDG_CACHE_HOME/llamacpp-integrations``
        or ``~/.cache/llamacpp-integrations``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


class FetchError(Exception):
    """The engine source could not be obtained; the message says what to do."""


def load_pin() -> dict[str, str]:
    with open(HERE / "pin.json", encoding="utf-8") as f:
        pin: dict[str, str] = json.load(f)
    return pin


def cache_root() -> Path:
    env = os.environ.get("LLAMACPP_INTEGRATIONS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llamacpp-integrations"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sdist_name(pin: dict[str, str]) -> str:
    return f"{pin['package'].replace('-', '_')}-{pin['version']}.tar.gz"


def download_sdist(pin: dict[str, str], dest_dir: Path) -> Path:
    """Download the pinned sdist into ``dest_dir`` with pip and verify its hash."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / sdist_name(pin)
    if target.exists() and sha256_of(target) == pin["sha256"]:
        return target
    spec = f"{pin['package']}=={pin['version']}"
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps",
            "--no-binary", pin["package"], "--disable-pip-version-check",
            "-d", tmp, spec,
        ]  # fmt: skip
        print(f"-- llama.cpp source: downloading {spec} (sdist)", file=sys.stderr)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        got = Path(tmp) / sdist_name(pin)
        if proc.returncode != 0 or not got.exists():
            raise FetchError(
                f"could not download {spec} with pip (exit {proc.returncode}).\n"
                f"{proc.stdout[-2000:]}\n"
                "Check that the package index is reachable, or build against a local llama.cpp "
                "checkout with LLAMA_CPP_SOURCE_DIR=/path/to/llama.cpp."
            )
        digest = sha256_of(got)
        if digest != pin["sha256"]:
            raise FetchError(
                f"SHA-256 mismatch for {got.name}: expected {pin['sha256']}, got {digest}.\n"
                "The download is not the pinned engine source. Remove the cache "
                f"({dest_dir}) and retry; if it persists, your package index serves a different "
                "file, so build with LLAMA_CPP_SOURCE_DIR=/path/to/llama.cpp instead."
            )
        os.replace(got, target)
    return target


def extract(pin: dict[str, str], sdist: Path, root: Path) -> Path:
    """Extract ``vendor/llama.cpp`` from the sdist into the cache, once."""
    out = root / f"llama.cpp-{pin['version']}-{pin['sha256'][:12]}"
    if (out / ".complete").exists():
        return out
    prefix = f"{pin['package'].replace('-', '_')}-{pin['version']}/{pin['subdir']}/"
    print(f"-- llama.cpp source: extracting {prefix} into {out}", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix) or m.name == prefix:
                    continue
                m.name = m.name[len(prefix) :]
                members.append(m)
            if not members:
                raise FetchError(f"{sdist.name} holds no {pin['subdir']} folder")
            tar.extractall(tmp, members=members, filter="data")
        (tmp / ".complete").write_text(pin["sha256"] + "\n", encoding="utf-8")
        if out.exists():  # an interrupted earlier extraction
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / ".complete").exists():  # lost a race with nobody: re-raise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    pin = load_pin()
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        sdist = download_sdist(pin, root / "sdist")
        src = extract(pin, sdist, root)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
