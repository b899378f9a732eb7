"""Tokenizing and detokenizing on llama.cpp's own vocabulary test files (the pinned source's
``models/ggml-vocab-*.gguf`` with their ``.inp`` texts and ``.out`` token ids)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_source import engine_models_dir

from llamacpp_integrations import Llama

SEPARATOR = "\n__ggml_vocab_test__\n"


MODELS = engine_models_dir()
VOCABS = sorted(p.name for p in MODELS.glob("ggml-vocab-*.gguf") if Path(f"{p}.inp").exists())


def cases(name: str) -> list[tuple[str, list[int]]]:
    texts = (MODELS / f"{name}.inp").read_text(encoding="utf-8").split(SEPARATOR)
    outs = (MODELS / f"{name}.out").read_text(encoding="utf-8").splitlines()
    texts = texts[: len(outs)]  # the file ends with a separator
    assert len(texts) == len(outs) > 10
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs, strict=True)]


@pytest.fixture(scope="module", params=VOCABS)
def vocab(request: pytest.FixtureRequest) -> Iterator[tuple[str, Llama]]:
    with Llama(str(MODELS / request.param), vocab_only=True) as llm:
        yield request.param, llm


def test_the_vocab_files_are_there() -> None:
    assert len(VOCABS) >= 12, VOCABS


def test_tokenize_matches_llama_cpps_expected_ids(vocab: tuple[str, Llama]) -> None:
    name, llm = vocab
    for text, ids in cases(name):
        assert llm.tokenize(text.encode(), add_bos=False) == ids, (name, text)


def test_detokenize_drops_the_space_prefix_after_bos_only() -> None:
    # llama-cpp-python's bytes: "▁Hello" after BOS starts the text; without BOS its space stays
    with Llama(str(MODELS / "ggml-vocab-llama-spm.gguf"), vocab_only=True) as llm:
        assert llm.token_bos() == 1
        assert llm.detokenize([1, 15043, 2787]) == b"Hello World"
        assert llm.detokenize([15043, 2787]) == b" Hello World"
        assert llm.detokenize([1, 15043, 2787], special=True) == b"<s> Hello World"
        assert llm.detokenize([2787], prev_tokens=[1, 15043]) == b" World"
        assert llm.detokenize([]) == b""


def test_detokenize_matches_llama_cpp_python(vocab: tuple[str, Llama]) -> None:
    """Byte for byte against llama-cpp-python where it is installed (the benchmarks' reference;
    not a dependency), with and without BOS, special tokens shown or not."""
    llama_cpp = pytest.importorskip("llama_cpp")
    name, llm = vocab
    ref = llama_cpp.Llama(str(MODELS / name), vocab_only=True, verbose=False)
    try:
        for _text, ids in cases(name):
            for tokens in (ids, [llm.token_bos(), *ids]):
                if min(tokens, default=0) < 0:
                    continue  # a vocabulary without BOS
                for special in (False, True):
                    try:
                        expected = ref.detokenize(tokens, special=special)
                    except AssertionError:
                        continue  # llama-cpp-python's 32-byte piece buffer overflowed
                    assert llm.detokenize(tokens, special=special) == expected, (name, tokens)
    finally:
        ref.close()
