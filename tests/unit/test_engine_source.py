"""third_party/llama.cpp/fetch.py: the pinned engine source, verified and extracted once."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fetch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch", ROOT / "third_party/llama.cpp/fetch.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sdist(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_pin_is_the_documented_release() -> None:
    pin = json.loads((ROOT / "third_party/llama.cpp/pin.json").read_text())
    assert pin["package"] == "llama-cpp-python"
    assert pin["version"] == "0.3.36"
    assert pin["sha256"] == "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"


def test_extracts_only_the_engine_folder(tmp_path: Path) -> None:
    fetch = _fetch_module()
    pin = {
        "package": "demo-pkg",
        "version": "1.0",
        "sha256": "0" * 64,
        "subdir": "vendor/llama.cpp",
    }
    sdist = tmp_path / "demo_pkg-1.0.tar.gz"
    _sdist(
        sdist,
        {
            "demo_pkg-1.0/setup.py": b"print()",
            "demo_pkg-1.0/vendor/llama.cpp/include/llama.h": b"// header",
            "demo_pkg-1.0/vendor/llama.cpp/CMakeLists.txt": b"project(x)",
        },
    )
    out = fetch.extract(pin, sdist, tmp_path)
    assert (out / "include/llama.h").read_bytes() == b"// header"
    assert not (out / "setup.py").exists()
    assert (out / ".complete").is_file()
    # a second call reuses the extraction
    assert fetch.extract(pin, sdist, tmp_path) == out


def test_hash_mismatch_stops_with_instructions(tmp_path: Path) -> None:
    # a real download of a small sdist whose hash is not the pinned one
    fetch = _fetch_module()
    pin = {"package": "six", "version": "1.16.0", "sha256": "f" * 64, "subdir": "vendor/llama.cpp"}
    with pytest.raises(fetch.FetchError, match="SHA-256 mismatch") as info:
        fetch.download_sdist(pin, tmp_path / "sdist")
    assert "LLAMA_CPP_SOURCE_DIR" in str(info.value)
    assert not list((tmp_path / "sdist").glob("*.tar.gz")), "a file that failed its check is kept"


def test_failed_download_says_what_to_do(tmp_path: Path) -> None:
    fetch = _fetch_module()
    pin = {
        "package": "llamacpp-integrations-no-such-package",
        "version": "1.0",
        "sha256": "f" * 64,
        "subdir": "vendor/llama.cpp",
    }
    with pytest.raises(fetch.FetchError, match="could not download") as info:
        fetch.download_sdist(pin, tmp_path / "sdist")
    assert "LLAMA_CPP_SOURCE_DIR" in str(info.value)
