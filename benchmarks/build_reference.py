#!/usr/bin/env python3
"""Build llama.cpp's ``llama-bench``, ``llama-server`` and ``llama-mtmd-cli`` from the pin.

The reference tools are built from exactly the llama.cpp source our extension compiles
(``third_party/llama.cpp/fetch.py`` prints its directory), into ``.bench/llama.cpp-build``
(git-ignored). ``llama-mtmd-cli`` (the multimodal CLI over the mtmd library) is the reference
for vision input; llama.cpp builds it whenever ``LLAMA_BUILD_TOOLS`` is on. The build is skipped
when all three binaries exist and were configured from the same source with the same
``CMAKE_ARGS``; otherwise cmake configures and builds the three targets in one go.

``CMAKE_ARGS`` (split like a shell would) is passed to the configure step, as it is to our own
build by scikit-build-core, so that a user who builds with e.g. ``-DGGML_BLAS=ON`` or
``-DGGML_CUDA=ON`` benchmarks the same backend on both sides.

Usage::

    python benchmarks/build_reference.py          # prints the three binary paths
    python benchmarks/build_reference.py --force  # reconfigure and rebuild
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FETCH = REPO / "third_party" / "llama.cpp" / "fetch.py"
BUILD_DIR = REPO / ".bench" / "llama.cpp-build"
STAMP = BUILD_DIR / "reference-build.json"
TARGETS = ("llama-bench", "llama-server", "llama-mtmd-cli")

BASE_CMAKE_ARGS = [
    "-G",
    "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_OPENSSL=OFF",
    # the server's web UI would otherwise be downloaded at build time; the benchmarks need none
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_CCACHE=ON",
]


class BuildError(RuntimeError):
    """The reference tools could not be built; the message says why."""


def source_dir() -> Path:
    """The pinned llama.cpp source directory (the last stdout line of fetch.py)."""
    proc = subprocess.run(
        [sys.executable, str(FETCH)], stdout=subprocess.PIPE, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BuildError(f"{FETCH} failed (exit {proc.returncode}); see its output above")
    src = Path(lines[-1])
    if not (src / "CMakeLists.txt").is_file():
        raise BuildError(f"{FETCH} printed {src}, which is not a llama.cpp source tree")
    return src


def binary_paths(build_dir: Path = BUILD_DIR) -> dict[str, Path]:
    return {name: build_dir / "bin" / name for name in TARGETS}


def user_cmake_args() -> list[str]:
    return shlex.split(os.environ.get("CMAKE_ARGS", ""))


def _run(cmd: list[str], quiet: bool) -> None:
    print("+ " + shlex.join(cmd), file=sys.stderr)
    proc = subprocess.run(
        cmd,
        stdout=subprocess.PIPE if quiet else sys.stderr,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-4000:] if quiet else ""
        raise BuildError(f"command failed (exit {proc.returncode}): {shlex.join(cmd)}\n{tail}")


def build(force: bool = False, quiet: bool = False) -> dict[str, Path]:
    """Builds the reference tools unless up to date; returns {target: binary path}."""
    src = source_dir()
    config = {"source": str(src), "cmake_args": BASE_CMAKE_ARGS + user_cmake_args()}
    paths = binary_paths()
    stamp = json.loads(STAMP.read_text(encoding="utf-8")) if STAMP.is_file() else None
    if not force and stamp == config and all(p.is_file() for p in paths.values()):
        return paths

    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    STAMP.unlink(missing_ok=True)
    print(f"Building {', '.join(TARGETS)} from {src} into {BUILD_DIR} ...", file=sys.stderr)
    _run(["cmake", "-S", str(src), "-B", str(BUILD_DIR), *config["cmake_args"]], quiet)
    _run(["cmake", "--build", str(BUILD_DIR), "--target", *TARGETS], quiet)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise BuildError(f"the build finished but did not produce {', '.join(missing)}")
    STAMP.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="reconfigure and rebuild")
    parser.add_argument("--quiet", action="store_true", help="show the build log only on failure")
    args = parser.parse_args()
    try:
        paths = build(force=args.force, quiet=args.quiet)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
