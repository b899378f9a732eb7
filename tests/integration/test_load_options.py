"""The load settings are defined once (``LoadOptions``): Llama's constructor (signature, docs,
checks), the LangChain fields, the adapters' ``model_kwargs`` check and the server's config
entries and flags all come from that definition."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llamacpp_integrations import InvalidParameterError, Llama
from llamacpp_integrations._loading import LOAD_ARGS, LoadOptions, load_settings
from llamacpp_integrations.langchain import ChatLlamaCpp, LlamaCpp, LlamaCppEmbeddings
from llamacpp_integrations.langchain._common import _LOAD_FIELDS
from llamacpp_integrations.llama_index import LlamaCPP, LlamaCppEmbedding
from llamacpp_integrations.server.settings import (
    NOT_SERVED,
    PER_MODEL,
    ModelConfig,
    ServerSettings,
    build_parser,
    parse_settings,
)

pytestmark = pytest.mark.integration

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"


def test_every_setting_is_a_keyword_of_llama_with_its_default_and_doc() -> None:
    assert tuple(LoadOptions.__annotations__) == LOAD_ARGS
    params = inspect.signature(Llama).parameters
    assert list(params) == ["model_path", *LOAD_ARGS]
    for s in load_settings():
        assert params[s.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[s.name].default == s.default
        assert s.doc in (Llama.__doc__ or "") and s.doc in (Llama.__init__.__doc__ or "")


def test_values_are_checked_against_the_definition_before_the_model_loads() -> None:
    missing = "/nonexistent/model.gguf"  # a check that passed would fail on the file instead
    with pytest.raises(TypeError, match=r"'n_gpu_layer': did you mean 'n_gpu_layers'\?"):
        Llama(missing, n_gpu_layer=1)  # type: ignore[call-arg]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"n_ctx": -1}, "n_ctx must be >= 0, got -1"),
        ({"n_threads": 0}, "n_threads must be >= 1"),
        ({"n_batch": 8.0}, "n_batch must be an integer"),
        ({"use_mmap": "no"}, "use_mmap must be True or False, got 'no'"),
        ({"rope_freq_base": -1.0}, "rope_freq_base must be >= 0"),
        ({"type_k": "q9"}, "type_k='q9' is not a ggml type"),
        ({"chat_format": "nope"}, "chat_format must be None or one of .*'chatml'.*, got 'nope'"),
        (
            {"speculative": "ngram-bogus"},
            "speculative must be None or one of 'none', 'ngram'.*, got 'ngram-bogus'",
        ),
        ({"mmproj_path": 5}, r"mmproj_path must be a path \(str or os.PathLike\) or None"),
        ({"max_image_pixels": 0}, "max_image_pixels must be >= 1"),
        ({"progress_callback": 1}, "progress_callback must be callable"),
    ]
    for kwargs, match in bad:
        with pytest.raises(InvalidParameterError, match=match):
            Llama(missing, **kwargs)


def test_every_front_takes_every_setting(llm: Llama) -> None:
    """Each LoadOptions key is a model_kwargs key of every adapter, a key of a server config
    entry (but for what a server never takes), and a server flag (but for per-model ones)."""
    everything = {s.name: s.default for s in load_settings()}
    ChatLlamaCpp(client=llm, model_kwargs=everything)
    LlamaCpp(client=llm, model_kwargs=everything)
    LlamaCppEmbeddings(client=llm, model_kwargs=everything)
    LlamaCPP(client=llm, model_kwargs=everything)
    LlamaCppEmbedding(client=llm, model_kwargs=everything)
    flags = {a.dest for a in build_parser()._actions}
    for name in LOAD_ARGS:
        if name in NOT_SERVED:
            assert name not in ModelConfig.model_fields
            continue
        assert name in ModelConfig.model_fields
        assert (name in ServerSettings.model_fields) == (name not in PER_MODEL)
        assert (name in flags) == (name not in PER_MODEL)
    docs = {s.name: s.doc for s in load_settings()}
    for name, override in _LOAD_FIELDS.items():  # langchain_community's load fields
        field = ChatLlamaCpp.model_fields[name]
        assert field.description == (docs[name] if override is None else override[2])


@pytest.mark.parametrize("front", ["ChatLlamaCpp", "LlamaCpp", "LlamaCPP", "LlamaCppEmbedding"])
def test_a_typo_in_model_kwargs_fails_naming_it(llm: Llama, front: str) -> None:
    """Even with a client (where model_kwargs load nothing), so the typo never goes unseen."""
    make = {
        "ChatLlamaCpp": ChatLlamaCpp,
        "LlamaCpp": LlamaCpp,
        "LlamaCPP": LlamaCPP,
        "LlamaCppEmbedding": LlamaCppEmbedding,
    }[front]
    with pytest.raises(TypeError, match=r"'flash_atn': did you mean 'flash_attn'\?"):
        make(client=llm, model_kwargs={"flash_atn": True})
    with pytest.raises((InvalidParameterError, ValidationError), match="n_ubatch must be >= 1"):
        make(client=llm, model_kwargs={"n_ubatch": 0})


def test_a_typo_in_a_server_config_entry_or_flag_fails_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"models": [{"path": "m.gguf", "max_image_pixel": 10}]}))
    with pytest.raises(ValidationError, match=r"models\.0\.max_image_pixel\n\s+Extra inputs"):
        parse_settings(["--config", str(config)])
    config.write_text(json.dumps({"models": [{"path": "m.gguf", "type_v": "q9"}]}))
    with pytest.raises(ValidationError, match="type_v='q9' is not a ggml type"):
        parse_settings(["--config", str(config)])
    with pytest.raises(SystemExit):
        parse_settings(["--max-image-pixles", "10"])
    with pytest.raises(ValidationError, match="draft_min must be >= 0"):
        parse_settings(["--draft-min", "-1"])


def test_a_setting_reaches_the_llama_from_every_front(llm: Llama, model_path: str) -> None:
    """chat_template, neither a field of any adapter nor a hand-written server setting, reaches
    the engine from model_kwargs and from a server config entry, and the chat follows it."""
    extra = {"chat_template": TEMPLATE, "n_seq_max": 3, "n_ctx": 256}
    loaded = [
        ChatLlamaCpp(
            model_path=model_path, model_kwargs={"chat_template": TEMPLATE}, n_ctx=256, n_seq_max=3
        ).llama,
        LlamaCPP(model_path=model_path, model_kwargs=extra).client,
        LlamaCppEmbedding(model_path=model_path, model_kwargs={**extra, "n_batch": 256}).client,
    ]
    server = parse_settings(["--n-ctx", "256", "--no-use-mmap"])
    entry = ModelConfig.model_validate({"path": model_path, **extra})
    kwargs = server.llama_kwargs(entry)
    assert (kwargs["use_mmap"], kwargs["allow_image_files"]) == (False, False)
    loaded.append(Llama(model_path=model_path, **kwargs))
    messages = [{"role": "user", "content": "Say something long, please"}]

    def prompt_tokens(llama: Llama) -> int:
        out = llama.create_chat_completion(messages, max_tokens=1, temperature=0)
        return int(out["usage"]["prompt_tokens"])  # type: ignore[index]

    with Llama(model_path=model_path, n_ctx=256, chat_template=TEMPLATE) as direct:
        expected = prompt_tokens(direct)
    assert expected != prompt_tokens(llm)  # the model's own template is longer
    for llama in loaded:
        assert llama.chat_template == TEMPLATE and llama.native_engine.n_seq_max == 3
        assert prompt_tokens(llama) == expected


def test_verbose_sends_llama_cpp_log_lines_to_the_logger(model_path: str) -> None:
    # in a child process: verbose=True sets the process-wide log level and adds a handler
    code = (
        "import sys\n"
        "from llamacpp_integrations import Llama\n"
        "Llama(sys.argv[1], n_ctx=256, verbose=True, speculative='ngram', draft_max=4).close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code, model_path], capture_output=True,
                         text=True, timeout=300, check=True)  # fmt: skip
    assert "llama_model_loader: loaded meta data" in out.stderr
    # the engine's own line: what a verification of 1..5 rows costs here
    line = r"speculative decoding: measured decodes of 1 row [\d.]+ ms, .*5 rows"
    assert re.search(line, out.stderr)
    quiet = subprocess.run([sys.executable, "-c", code.replace("True", "False"), model_path],
                           capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    assert "llama_model_loader" not in quiet.stderr
