"""The exception hierarchy and the mapping of native errors onto it."""

from __future__ import annotations

import pytest

from llamacpp_integrations import _core, errors


@pytest.mark.parametrize(
    ("kind", "cls", "builtin"),
    [
        ("model_load", errors.ModelLoadError, OSError),
        ("grammar", errors.GrammarError, ValueError),
        ("context", errors.ContextWindowExceededError, ValueError),
        ("decode", errors.DecodeError, RuntimeError),
        ("invalid", errors.InvalidParameterError, ValueError),
        ("closed", errors.EngineClosedError, RuntimeError),
        ("kv_full", errors.KVCacheFullError, RuntimeError),
        ("other", errors.LlamaError, Exception),
    ],
)
def test_native_errors_map_to_the_hierarchy(kind: str, cls: type, builtin: type) -> None:
    with pytest.raises(cls) as info:
        _core._raise_for_test(kind)
    assert type(info.value) is cls
    assert isinstance(info.value, errors.LlamaError)
    assert isinstance(info.value, builtin)
    assert str(info.value) == "test"


def test_every_public_error_is_exported() -> None:
    import llamacpp_integrations as lci

    for name in errors.__all__:
        assert getattr(lci, name) is getattr(errors, name)
