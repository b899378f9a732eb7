"""Package-level behaviour that needs no model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llamacpp_integrations as lci
from llamacpp_integrations import Llama, ModelLoadError


def test_import_does_not_import_the_frameworks() -> None:
    code = (
        "import sys, llamacpp_integrations\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'llama_index')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_system_info_names_the_cpu_backend() -> None:
    info = lci.system_info()
    assert "CPU" in info
    assert "CPU" in lci.backends()


def test_unknown_keyword_is_a_type_error() -> None:
    # a typo must never be silently ignored (llama-cpp-python swallows **kwargs)
    with pytest.raises(TypeError, match="n_gpu_layer"):
        Llama(model_path="unused.gguf", n_gpu_layer=10)  # type: ignore[call-arg]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        Llama(model_path=str(tmp_path / "missing.gguf"))


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="directory"):
        Llama(model_path=str(tmp_path))


def test_not_gguf(tmp_path: Path) -> None:
    p = tmp_path / "model.gguf"
    p.write_text("this is not a model\n")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        Llama(model_path=str(p))


def test_random_bytes_after_the_magic(tmp_path: Path) -> None:
    import random

    p = tmp_path / "random.gguf"
    p.write_bytes(b"GGUF" + random.Random(0).randbytes(200_000))
    with pytest.raises(ModelLoadError, match=r"random\.gguf"):
        Llama(model_path=str(p))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_ctx": -1}, "n_ctx"),
        ({"n_batch": 0}, "n_batch"),
        ({"n_threads": 0}, "n_threads"),
        ({"n_seq_max": 0}, "n_seq_max"),
        ({"type_k": "not-a-type"}, "type_k"),
    ],
)
def test_bad_sizes_are_rejected_before_loading(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(lci.InvalidParameterError, match=match):
        Llama(model_path="unused.gguf", **kwargs)  # type: ignore[arg-type]
