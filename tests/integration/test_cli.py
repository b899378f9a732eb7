"""The console script: info, complete and demo run with nothing but the prompt."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamacpp_integrations", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_info(model_path: str) -> None:
    out = run("info", "--model", model_path)
    assert out.returncode == 0, out.stderr
    assert "backends:" in out.stdout and "CPU" in out.stdout.split("backends:")[1].splitlines()[0]
    assert "architecture llama" in out.stdout
    assert "n_vocab 49152" in out.stdout


def test_complete_streams_the_text(model_path: str) -> None:
    out = run("complete", "The capital of France is", "--max-tokens", "8", "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


def test_demo(model_path: str) -> None:
    out = run("demo")
    assert out.returncode == 0, out.stderr
    for section in (
        "1. Completion",
        "2. Streaming",
        "3. Chat",
        "4. A grammar",
        "5. Tool calling",
        "6. Bad input",
    ):
        assert section in out.stdout
    assert "get_weather(" in out.stdout
    assert "GrammarError" in out.stdout


def test_errors_are_reported_not_raised(tmp_path: object) -> None:
    out = run("complete", "hi", "--model", "/nonexistent/model.gguf")
    assert out.returncode == 1
    assert "ModelLoadError" in out.stderr and "Traceback" not in out.stderr
