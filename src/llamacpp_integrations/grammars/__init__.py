"""GBNF grammars that ship with the package, for ``grammar_path=``.

- ``json_object``: a flat JSON object (string keys; string, number, boolean or null values).
- ``string_list``: a JSON list of one to five short strings.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["names", "path"]

_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """The names of the shipped grammars."""
    return sorted(p.stem for p in _DIR.glob("*.gbnf"))


def path(name: str) -> str:
    """The file of a shipped grammar, e.g. ``path("string_list")``."""
    p = _DIR / f"{name}.gbnf"
    if not p.is_file():
        raise ValueError(f"no grammar named {name!r}; shipped: {', '.join(names())}")
    return str(p)
