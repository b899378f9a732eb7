"""The pinned llama.cpp source for tests: its ``models/`` folder holds llama.cpp's vocabulary
test files (``ggml-vocab-*.gguf`` with ``.inp``/``.out`` cases)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def engine_models_dir() -> Path:
    """``models/`` of the extracted engine source (fetched and extracted once, as the build
    does)."""
    spec = importlib.util.spec_from_file_location("fetch", ROOT / "third_party/llama.cpp/fetch.py")
    assert spec is not None and spec.loader is not None
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    pin = fetch.load_pin()
    root = fetch.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(fetch.extract(pin, fetch.download_sdist(pin, root / "sdist"), root)) / "models"
