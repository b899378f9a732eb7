"""_core.pyi is generated from the built module and must not drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STUB = Path(__file__).resolve().parents[2] / "src/llamacpp_integrations/_core.pyi"


def test_stub_matches_the_module(tmp_path: Path) -> None:
    out = tmp_path / "_core.pyi"
    stubgen = [sys.executable, "-m", "nanobind.stubgen", "-m", "llamacpp_integrations._core"]
    subprocess.run([*stubgen, "-o", str(out)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(out)], check=True)
    assert out.read_text() == STUB.read_text(), "the native module changed: run `make stubs`"
