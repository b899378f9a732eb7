"""Every bad input gets a clear Python exception, and the engine stays usable afterwards."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_source import engine_models_dir

from llamacpp_integrations import (
    ContextWindowExceededError,
    EngineClosedError,
    GrammarError,
    InvalidParameterError,
    Llama,
    ModelLoadError,
    _core,
)
from llamacpp_integrations._offload import renders_in_thread


def still_works(llm: Llama) -> None:
    out = llm("Hello", max_tokens=2, temperature=0)
    assert isinstance(out, dict) and out["usage"]["completion_tokens"] >= 1


def test_truncated_gguf(model_path: str, tmp_path: Path) -> None:
    p = tmp_path / "truncated.gguf"
    with open(model_path, "rb") as src:
        p.write_bytes(src.read(5_000_000))
    with pytest.raises(ModelLoadError, match=r"not within the file bounds|corrupted|incomplete"):
        Llama(model_path=str(p))


def test_invalid_grammar(llm: Llama) -> None:
    with pytest.raises(GrammarError) as info:
        llm("x", max_tokens=2, grammar='root ::= "a" | undefined-rule')
    assert "undefined-rule" in str(info.value)
    with pytest.raises(GrammarError):
        llm("x", max_tokens=2, grammar="root ::= (")
    still_works(llm)


def test_prompt_longer_than_the_context(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=64) as small:
        assert small.n_ctx() == 256  # llama.cpp rounds the context up to a multiple of 256
        with pytest.raises(ContextWindowExceededError, match="context window"):
            small("word " * 400, max_tokens=4)
        still_works(small)


def test_generation_stops_at_the_end_of_the_context(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=64) as small:
        out = small("Tell me a long story.", max_tokens=500, temperature=0, ignore_eos=True)
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["usage"]["total_tokens"] <= small.n_ctx() + 1


def test_empty_prompt(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError, match="empty"):
        llm("", max_tokens=2)
    with pytest.raises(InvalidParameterError, match="empty"):
        llm([], max_tokens=2)


@pytest.mark.parametrize("token", [-1, 49152, 10**9])
def test_token_ids_out_of_range(llm: Llama, token: int) -> None:
    with pytest.raises(InvalidParameterError, match="out of range"):
        llm([1, token], max_tokens=2)
    with pytest.raises(InvalidParameterError, match="out of range"):
        llm.detokenize([token])
    with pytest.raises(InvalidParameterError, match="out of range"):
        llm("x", max_tokens=2, logit_bias={token: 1.0})
    still_works(llm)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_p": 2.0}, "top_p"),
        ({"min_p": -0.5}, "min_p"),
        ({"temperature": float("nan")}, "temperature"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"mirostat_mode": 5}, "mirostat"),
        ({"logprobs": -3}, "logprobs"),
        ({"stop": [3]}, "stop"),
    ],
)
def test_bad_sampling_values(llm: Llama, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        llm("x", max_tokens=2, **kwargs)  # type: ignore[arg-type]


def test_unknown_call_keyword(llm: Llama) -> None:
    with pytest.raises(TypeError, match="max_token"):
        llm("x", max_token=2)


def test_missing_grammar_file(llm: Llama, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="grammar_path"):
        llm("x", grammar_path=tmp_path / "missing.gbnf")


def test_suffix_without_fim_tokens(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError, match="fill-in-the-middle"):
        llm("def f(", suffix="return x", max_tokens=4)


def test_use_after_close(model_path: str) -> None:
    llm = Llama(model_path=model_path, n_ctx=128)
    llm.close()
    llm.close()  # idempotent
    with pytest.raises(EngineClosedError):
        llm("x", max_tokens=2)


def test_vocab_only_model_cannot_generate(model_path: str) -> None:
    with Llama(model_path=model_path, vocab_only=True) as vocab:
        assert vocab.tokenize("hello", add_bos=False)
        with pytest.raises(InvalidParameterError, match="vocab_only"):
            vocab("hello", max_tokens=2)


def test_corrupt_state(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError):
        llm.load_state(b"not a state")
    with pytest.raises(InvalidParameterError):
        llm.load_state(llm.save_state()[:100])
    still_works(llm)


def test_progress_callback_can_cancel_and_raise(model_path: str) -> None:
    seen: list[float] = []

    def cancel(p: float) -> bool:
        seen.append(p)
        return False

    with pytest.raises(ModelLoadError, match="cancelled"):
        Llama(model_path=model_path, progress_callback=cancel)
    assert seen

    def boom(p: float) -> bool:
        raise RuntimeError("stop loading")

    with pytest.raises(RuntimeError, match="stop loading"):
        Llama(model_path=model_path, progress_callback=boom)


def test_progress_callback_reports_completion(model_path: str) -> None:
    seen: list[float] = []
    with Llama(model_path=model_path, n_ctx=128, progress_callback=seen.append):
        pass
    assert seen and seen[-1] == pytest.approx(1.0)


def test_unreadable_lora(model_path: str, tmp_path: Path) -> None:
    bad = tmp_path / "adapter.gguf"
    shutil.copy(__file__, bad)
    with pytest.raises(ModelLoadError, match="LoRA"):
        Llama(model_path=model_path, lora_path=str(bad))
    with pytest.raises(ModelLoadError, match="LoRA adapter file not found"):
        Llama(model_path=model_path, lora_path=str(tmp_path / "missing.gguf"))


def refusal_of(model_path: str, template: str, n_messages: int = 1) -> str:
    """In a child process (a crash or an OOM kill fails the test): a chat request of n_messages
    with the template, whose InvalidParameterError is printed, then a completion showing that
    the engine still serves. Returns the printed error."""
    script = (
        "from llamacpp_integrations import Llama, InvalidParameterError\n"
        f"llm = Llama({model_path!r}, n_ctx=256, chat_template={template!r})\n"
        "try:\n"
        f"    messages = [{{'role': 'user', 'content': 'hi'}}] * {n_messages}\n"
        "    llm.create_chat_completion(messages, max_tokens=2)\n"
        "except InvalidParameterError as e:\n"
        "    print(e)\n"
        "out = llm('Hello', max_tokens=2, temperature=0)\n"
        "print(out['usage']['completion_tokens'])\n"
    )
    cmd = [sys.executable, "-c", script]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("2"), run.stdout
    return run.stdout


RECURSIVE_TEMPLATES = {
    "itself": ("{% macro x() %}{{ x() }}{% endmacro %}{{ x() }}", "x -> x"),
    "each other": (
        "{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{% if n %}{{ a(n) }}{% endif %}"
        "{% endmacro %}{% for m in messages %}{{ a(m.content) }}{% endfor %}",
        "a -> b -> a",
    ),
    "a call block": (
        "{% macro x() %}{% call x() %}{% endcall %}{% endmacro %}{{ x() }}",
        "x -> x",
    ),
}


@pytest.mark.parametrize("name", list(RECURSIVE_TEMPLATES))
def test_a_recursive_chat_template_is_refused(model_path: str, name: str) -> None:
    """llama.cpp's Jinja runtime has no depth limit: such a template overflowed the C++ stack and
    killed the process (SIGSEGV). It runs in a child process, so a crash fails the test."""
    template, chain = RECURSIVE_TEMPLATES[name]
    assert f"its macros call themselves ({chain})" in refusal_of(model_path, template)


EXPLOSIVE_TEMPLATES = {
    "a billion loop steps": (
        "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "it takes more than 5 s of CPU",
    ),
    "a string doubled 64 times": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s }}",
        "it needs more than 1 GiB of memory",
    ),
    "40 MB of output": (
        "{% set t = tools | tojson %}{% for i in range(2000) %}{{ t }}{% endfor %}",
        "it writes more than 16 MiB",
    ),
}


@pytest.mark.parametrize("name", list(EXPLOSIVE_TEMPLATES))
def test_a_chat_template_that_explodes_on_a_short_conversation_is_refused(
    model_path: str, name: str
) -> None:
    """llama.cpp's Jinja runtime limits neither steps, memory nor output, and llama.cpp renders a
    template in-process when it loads it: these hung the process or exhausted the memory. A
    trial render in a child process under limits refuses them first, naming the template."""
    template, cause = EXPLOSIVE_TEMPLATES[name]
    stdout = refusal_of(model_path, template)
    assert f"the chat template is refused: {cause}" in stdout, stdout
    assert (
        "to render a trial conversation (130 messages, 16 tools, 142 KiB, nested 23 deep)" in stdout
    )


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n"
)
GROWING_TEMPLATES = {
    # work that grows with the square of the messages: 16,900 steps for the trial's 130 messages,
    # 9 million (minutes in llama.cpp's Jinja runtime) for 3,000
    "loops": (
        "{% for a in messages %}{% for b in messages %}{% endfor %}{% endfor %}" + CHATML,
        3000,
        "it takes more than 5 s of CPU for 3000 messages, 0 tools, 91 KiB, nested 2 deep",
    ),
    # memory that grows with their cube: 2.2 million characters for the trial, 64 million for 400
    "memory": (
        "{% set n = messages | length %}{% set s = 'x' * (n * n * n) %}" + CHATML,
        400,
        "it needs more than 1 GiB of memory for 400 messages, 0 tools, 13 KiB, nested 2 deep",
    ),
}


@pytest.mark.parametrize("name", list(GROWING_TEMPLATES))
def test_a_request_larger_than_the_trial_renders_first_under_limits(
    model_path: str, name: str
) -> None:
    """A template whose work grows faster than its input passes the trial render; a request
    larger than the trial's conversation renders first in a child process, under the same
    limits, and is refused naming its size (in-process it hung for minutes or exhausted the
    memory)."""
    template, n_messages, cause = GROWING_TEMPLATES[name]
    stdout = refusal_of(model_path, template, n_messages)
    assert f"the chat template cannot render this request: {cause}" in stdout, stdout


def test_requests_larger_than_the_trial_render_as_before(model_path: str) -> None:
    """The guard render only checks: a long conversation renders to what it would without it
    (the template's output grows linearly), with or without tools."""
    template = "{% for a in messages %}{% for b in messages %}{% endfor %}{% endfor %}" + CHATML
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
        for i in range(200)
    ]
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
        for i in range(6)
    ]
    with Llama(model_path=model_path, n_ctx=4096, chat_template=template) as llm:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in turns)
        # (Jinja drops the template's final newline)
        expected = llm.tokenize(text + "<|im_start|>assistant", add_bos=False, special=True)
        assert llm.count_chat_tokens(turns) == len(expected)
    with Llama(model_path=model_path, n_ctx=4096) as llm:
        assert llm.count_chat_tokens(turns, tools=tools) > llm.count_chat_tokens(turns[:150])


def test_a_chat_template_with_macros_that_do_not_recurse_works(model_path: str) -> None:
    template = (
        "{% macro say(m) %}<{{ m.role }}>{{ m.content }}{% endmacro %}"
        "{% for m in messages %}{{ say(m) }}{% endfor %}<assistant>"
    )
    with Llama(model_path=model_path, n_ctx=256, chat_template=template) as llm:
        out = llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=2)
        rendered = llm.tokenize(b"<user>hi<assistant>", special=True)
        assert out["usage"]["prompt_tokens"] == len(rendered)


def test_chats_that_the_engine_renders_first_under_limits_are_submitted_from_a_thread() -> None:
    """An asyncio submit (and the server's) goes through a worker thread for every request the
    engine renders first in a child process (larger than the trial in any measure), which
    can take seconds, so that the event loop does not wait for it."""
    trial = _core.trial_render_size()
    assert trial == {"messages": 130, "tools": 16, "longest": 16384, "bytes": 145268, "depth": 23}
    short = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "f"}}
    deep: dict[str, object] = {"type": "string"}
    for _ in range(9):
        deep = {"type": "object", "properties": {"inner": deep}}  # two levels each
    assert not renders_in_thread(short)
    assert not renders_in_thread(short, [tool] * 16)
    assert not renders_in_thread(short, [{**tool, "parameters": deep}])  # 21 deep
    deeper = {"type": "object", "properties": {"x": {"type": "object", "properties": {"y": deep}}}}
    assert renders_in_thread(short * 131)  # more messages
    assert renders_in_thread(short, [tool] * 17)  # more tools
    assert renders_in_thread([{"role": "user", "content": "x" * 16385}])  # a longer string
    assert renders_in_thread(short, [{**tool, "description": "x" * 16385}])
    assert renders_in_thread(short, [{**tool, "parameters": deeper}])  # 25 deep
    tools = (t for t in [tool])  # a generator: not walked, not consumed
    assert renders_in_thread(short, tools)  # type: ignore[arg-type]
    assert next(tools) == tool
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert renders_in_thread([{"role": "user", "content": [image]}])


def test_every_chat_template_llama_cpp_ships_passes_the_checks(model_path: str) -> None:
    """The checks must not refuse real templates: llama.cpp's collection of model templates
    (Hermes, Functionary, gpt-oss, Gemma, Command R, ... whose macros walk JSON schemas
    recursively) all load and render a conversation with nested tool parameters."""
    templates = sorted((engine_models_dir() / "templates").glob("*.jinja"))
    assert len(templates) > 50
    nested: dict[str, object] = {"type": "string"}
    for _ in range(5):
        nested = {"type": "object", "properties": {"inner": nested}}
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Looks it up.",
                "parameters": {"type": "object", "properties": {"q": nested}, "required": ["q"]},
            },
        }
    ]
    messages = [{"role": "user", "content": "Look it up."}]
    refused = []
    rendered = 0  # templates that wrote the tool into the prompt
    with Llama(model_path=model_path, n_ctx=256) as llm:
        model = llm._require_model()
        for path in templates:
            try:
                templates_ = _core.ChatTemplates(model, path.read_text())
            except InvalidParameterError as e:
                refused.append(f"{path.name}: {e}")
                continue
            # (a template may raise for its own requirements: a system message, say)
            with contextlib.suppress(InvalidParameterError):
                prompt = templates_.apply(json.dumps(messages), tools_json=json.dumps(tools))
                rendered += "lookup" in prompt.prompt
    assert refused == []
    assert rendered > 60, rendered
