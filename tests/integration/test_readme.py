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


@pytest.mark.parametrize(("code", "shown"), BLOCKS, ids=[f"snippet{i}" for i in range(len(BLOCKS))])
def test_snippet_runs(code: str, shown: str, model_path: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    if shown:
        assert out.stdout == shown, "the README shows another output for this snippet"
