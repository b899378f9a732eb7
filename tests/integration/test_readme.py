"""Every Python snippet in the README runs as written, and prints what the README shows after
it (a ```text block following the snippet), so the docs never rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
# a snippet, then optionally the output the README shows for it
BLOCKS = re.findall(
    r"```python\n(.*?)```\n(?:\n[^`\n]*\n\n```text\n(.*?)```)?",
    README.read_text(encoding="utf-8"),
    flags=re.S,
)
SNIPPETS = [code for code, _ in BLOCKS]


def test_the_readme_has_snippets_and_shows_outputs() -> None:
    assert len(SNIPPETS) >= 3
    assert sum(1 for _, shown in BLOCKS if shown) >= 3


# a printed decimal; ggml's kernels for different CPUs (AVX2, AVX-512) round differently, so a
# logprob rounded to one decimal may move by one step from machine to machine
NUMBER = re.compile(r"-?\d+\.\d+")


def same_output(got: str, shown: str) -> bool:
    """The text exactly, and each printed decimal to within 0.1."""
    if NUMBER.split(got) != NUMBER.split(shown):
        return False
    pairs = zip(NUMBER.findall(got), NUMBER.findall(shown), strict=True)
    return all(abs(float(a) - float(b)) <= 0.1 + 1e-9 for a, b in pairs)


def test_same_output_allows_one_rounding_step_and_nothing_else() -> None:
    assert same_output("{'a': -0.3}\n", "{'a': -0.2}\n")
    assert not same_output("{'a': -0.4}\n", "{'a': -0.2}\n")
    assert not same_output("the city began\n", "the city began to\n")
    assert not same_output("{'b': -0.2}\n", "{'a': -0.2}\n")


@pytest.mark.parametrize(("code", "shown"), BLOCKS, ids=[f"snippet{i}" for i in range(len(BLOCKS))])
def test_snippet_runs(code: str, shown: str, model_path: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    if shown:
        assert same_output(out.stdout, shown), (out.stdout, "the README shows another output")
