"""Chat completions: the model's own template, tools the model chooses, constrained output."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from chat_data import ADD, THINKING_TEMPLATE, WEATHER, user

from llamacpp_integrations import (
    ContextWindowExceededError,
    GrammarError,
    InvalidParameterError,
    Llama,
    grammars,
)
from llamacpp_integrations._chat import ChatCompletionStream


def chat(llm: Llama, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    # a cold cache every time: greedy output depends (slightly, through floating point) on how
    # the prompt was split into batches, and these tests assert what the model chose
    llm.reset()
    out = llm.create_chat_completion(messages, temperature=0, **kwargs)
    assert isinstance(out, dict)
    return dict(out)


def check_calls(out: dict[str, Any], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        args = json.loads(call["function"]["arguments"])
        jsonschema.validate(args, schemas[call["function"]["name"]])
    return list(calls)


def test_plain_chat(llm: Llama) -> None:
    out = chat(llm, user("What is the capital of France?"), max_tokens=24)
    assert out["object"] == "chat.completion"
    msg = out["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str) and msg["content"]
    assert "tool_calls" not in msg
    assert out["usage"]["prompt_tokens"] > 5


def test_the_default_model_uses_its_own_template(llm: Llama) -> None:
    prompt = llm.chat_templates.apply(json.dumps(user("Hi"))).prompt
    assert "<|im_start|>user\nHi<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_gemma_template_has_its_own_role_markers(gemma_path: str) -> None:
    # the Gemma 3 270M base GGUF has no template: its vocabulary's markers choose llama.cpp's
    # built-in "gemma" format rather than ChatML
    with Llama(model_path=gemma_path, n_ctx=512) as gemma:
        assert gemma.chat_templates.fallback == "gemma"
        prompt = gemma.chat_templates.apply(json.dumps(user("Hi"))).prompt
        assert "<start_of_turn>user" in prompt and "<end_of_turn>" in prompt
        assert prompt.rstrip().endswith("<start_of_turn>model")
        out = gemma.create_chat_completion(user("Say hello."), max_tokens=8, temperature=0)
        assert isinstance(out, dict) and out["choices"][0]["message"]["content"] is not None


def test_chat_format_and_chat_template_overrides(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=512, chat_format="llama2") as l2:
        assert "[INST]" in l2.chat_templates.apply(json.dumps(user("Hi"))).prompt
    custom = "{% for m in messages %}<<{{ m.role }}>>{{ m.content }}{% endfor %}<<assistant>>"
    with Llama(model_path=model_path, n_ctx=512, chat_template=custom) as c:
        assert c.chat_templates.apply(json.dumps(user("Hi"))).prompt == "<<user>>Hi<<assistant>>"
    with pytest.raises(InvalidParameterError, match="chat_format"):
        Llama(model_path=model_path, chat_format="no-such-format")


def test_tool_choice_required_calls_a_tool(llm: Llama) -> None:
    # the model answers this one in prose when it may choose (see the auto test)
    out = chat(llm, user("What is the weather in Paris?"), tools=[WEATHER], tool_choice="required")
    calls = check_calls(out, [WEATHER])
    assert calls[0]["function"]["name"] == "get_weather"
    assert "city" in json.loads(calls[0]["function"]["arguments"])
    assert out["choices"][0]["message"]["content"] is None


def test_named_tool_choice(llm: Llama) -> None:
    out = chat(
        llm,
        user("What is the weather in Paris?"),
        tools=[WEATHER, ADD],
        tool_choice={"type": "function", "function": {"name": "add"}},
    )
    calls = check_calls(out, [WEATHER, ADD])
    assert {c["function"]["name"] for c in calls} == {"add"}


def test_tool_choice_none_answers_in_text(llm: Llama) -> None:
    out = chat(
        llm,
        user("What is the weather in Paris?"),
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=24,
    )
    choice = out["choices"][0]
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] in ("stop", "length")


def test_tool_choice_auto_lets_the_model_decide(llm: Llama) -> None:
    # The grammar allows a call or an answer and the model chooses. SmolLM2-135M chooses poorly
    # (it answers "What is the weather in Paris?" in prose and calls tools on "Hi!"), so the
    # pair below is one it gets right.
    relevant = chat(llm, user("What is 2 plus 3?"), tools=[WEATHER, ADD], max_tokens=96)
    calls = check_calls(relevant, [WEATHER, ADD])
    assert calls[0]["function"]["name"] == "add"
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 2, "b": 3}
    irrelevant = chat(llm, user("Translate 'cat' to French."), tools=[WEATHER, ADD], max_tokens=96)
    msg = irrelevant["choices"][0]["message"]
    assert "tool_calls" not in msg and msg["content"]
    assert irrelevant["choices"][0]["finish_reason"] == "stop"


def test_parallel_calls_with_two_tools(llm: Llama) -> None:
    messages = [
        {"role": "system", "content": "Call every tool the user needs, all at once."},
        {"role": "user", "content": "Get the weather in Paris and in Rome, and add 2 and 3."},
    ]
    out = chat(llm, messages, tools=[WEATHER, ADD], tool_choice="required", max_tokens=160)
    calls = check_calls(out, [WEATHER, ADD])
    assert len(calls) >= 2
    assert len({c["id"] for c in calls}) == len(calls)
    single = chat(
        llm, messages, tools=[WEATHER, ADD], tool_choice="required", parallel_tool_calls=False
    )
    assert len(check_calls(single, [WEATHER, ADD])) == 1


def test_tool_result_round_trip(llm: Llama) -> None:
    messages: list[dict[str, Any]] = user("What is the weather in Paris?")
    first = chat(llm, messages, tools=[WEATHER], tool_choice="required")
    call = check_calls(first, [WEATHER])[0]
    messages.append(first["choices"][0]["message"])
    messages.append(
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "name": "get_weather",
            "content": '{"temp_c": 21, "sky": "sunny"}',
        }
    )
    answer = chat(llm, messages, tools=[WEATHER], tool_choice="none", max_tokens=48)
    msg = answer["choices"][0]["message"]
    assert "tool_calls" not in msg and msg["content"]


def collect(stream: Any) -> tuple[str, list[dict[str, Any]], str, list[dict[str, Any]]]:
    """(content, reassembled tool calls, finish_reason, chunks) of a chat stream."""
    assert isinstance(stream, ChatCompletionStream)
    content = ""
    calls: dict[int, dict[str, Any]] = {}
    chunks = list(stream)
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        delta = chunk["choices"][0]["delta"]
        content += delta.get("content") or ""
        for tc in delta.get("tool_calls", []):
            entry = calls.setdefault(
                tc["index"],
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            entry["id"] = tc.get("id", entry["id"])
            fn = tc.get("function", {})
            entry["function"]["name"] += fn.get("name", "")
            entry["function"]["arguments"] += fn.get("arguments", "")
    finish = chunks[-1]["choices"][0]["finish_reason"]
    return content, [calls[i] for i in sorted(calls)], finish, chunks


def test_streaming_content_equals_non_streaming(llm: Llama) -> None:
    messages = user("Write two sentences about the sea.")
    full = chat(llm, messages, max_tokens=48)
    llm.reset()
    content, calls, finish, chunks = collect(
        llm.create_chat_completion(messages, temperature=0, max_tokens=48, stream=True)
    )
    assert content == full["choices"][0]["message"]["content"]
    assert not calls
    assert finish == full["choices"][0]["finish_reason"]
    assert len(chunks) > 5
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"] == {
        **full["usage"],
        "prompt_tokens_details": chunks[-1]["usage"]["prompt_tokens_details"],
    }


@pytest.mark.parametrize("tool_choice", ["required", "auto"])
def test_streaming_tool_calls_equal_non_streaming(llm: Llama, tool_choice: str) -> None:
    messages = user("What is the weather in Paris and in Rome?")
    full = chat(llm, messages, tools=[WEATHER, ADD], tool_choice=tool_choice, max_tokens=128)
    llm.reset()
    content, calls, finish, _ = collect(
        llm.create_chat_completion(
            messages,
            tools=[WEATHER, ADD],
            tool_choice=tool_choice,
            temperature=0,
            max_tokens=128,
            stream=True,
        )
    )
    msg = full["choices"][0]["message"]
    assert finish == full["choices"][0]["finish_reason"]
    strip = [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in msg.get("tool_calls", [])
    ]
    assert [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in calls
    ] == strip
    assert all(c["id"].startswith("call_") for c in calls)
    assert (content or None) == msg["content"]


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {"first": {"type": "string"}, "last": {"type": "string"}},
                "required": ["first", "last"],
            },
            "city": {"type": "string"},
        },
        "required": ["person"],
    },
    {"type": "array", "items": {"type": "string", "maxLength": 30}, "minItems": 2, "maxItems": 4},
    {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}},
        "required": ["color"],
    },
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "score": {"type": "number"}},
        "required": ["ok", "score"],
    },
    {
        "type": "object",
        "properties": {"code": {"type": "string", "minLength": 3, "maxLength": 5}},
        "required": ["code"],
    },
    {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3}
        },
        "required": ["tags"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 10}},
        "required": ["n"],
    },
    {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "subtitle": {"type": "string"},
            "year": {"type": "integer"},
        },
        "required": ["title"],
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}},
                    "required": ["name", "qty"],
                },
                "minItems": 1,
                "maxItems": 2,
            }
        },
        "required": ["items"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[f"schema{i}" for i in range(len(SCHEMAS))])
def test_json_schema_output_always_validates(llm: Llama, schema: dict[str, Any]) -> None:
    out = chat(
        llm,
        user("Make up an example that fits the requested format."),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "example", "schema": schema},
        },
        max_tokens=256,
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), schema)


def test_json_object_mode(llm: Llama) -> None:
    out = chat(
        llm,
        user("Give a JSON object with the name and age of a cat."),
        response_format={"type": "json_object"},
        max_tokens=512,
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(out["choices"][0]["message"]["content"]), dict)


def test_grammar_files(llm: Llama) -> None:
    obj = chat(
        llm, user("Describe a dog."), grammar_path=grammars.path("json_object"), max_tokens=96
    )
    assert isinstance(json.loads(obj["choices"][0]["message"]["content"]), dict)
    lst = chat(
        llm, user("Name some colors."), grammar_path=grammars.path("string_list"), max_tokens=64
    )
    parsed = json.loads(lst["choices"][0]["message"]["content"])
    assert (
        isinstance(parsed, list)
        and 1 <= len(parsed) <= 5
        and all(isinstance(x, str) for x in parsed)
    )
    # the same grammar on a plain completion
    out = llm("Colors: ", grammar_path=grammars.path("string_list"), max_tokens=64, temperature=0)
    assert isinstance(out, dict) and isinstance(json.loads(out["choices"][0]["text"]), list)


def test_chat_logprobs(llm: Llama) -> None:
    out = chat(llm, user("Hi"), max_tokens=4, logprobs=True, top_logprobs=2)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"]
    for entry in content:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 2
        assert bytes(entry["bytes"]).decode() == entry["token"]


def test_content_parts_and_system_messages(llm: Llama) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": "yes."}],
        },
    ]
    prompt = llm.chat_templates.apply(json.dumps(messages)).prompt
    assert "You are terse." in prompt and "Say" in prompt and "yes." in prompt
    assert chat(llm, messages, max_tokens=4)["choices"][0]["message"]["content"] is not None


# --- error paths -----------------------------------------------------------------------------


def test_malformed_grammar(llm: Llama) -> None:
    with pytest.raises(GrammarError):
        chat(llm, user("x"), grammar='root ::= "a" (')


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}},
        {"type": "no-such-type"},
    ],
)
def test_malformed_schema(llm: Llama, schema: dict[str, Any]) -> None:
    with pytest.raises(GrammarError, match="schema"):
        chat(
            llm,
            user("x"),
            response_format={"type": "json_schema", "json_schema": {"schema": schema}},
        )


def test_unknown_role(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError, match="unknown role 'wizard'"):
        chat(llm, [{"role": "wizard", "content": "hi"}])


def test_malformed_messages(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError, match="non-empty"):
        chat(llm, [])
    with pytest.raises(InvalidParameterError, match="role"):
        chat(llm, [{"content": "no role"}])
    with pytest.raises(InvalidParameterError, match="tool_call_id"):
        chat(llm, [{"role": "tool", "content": "result"}])


def test_tool_choice_naming_a_missing_tool(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError, match="not among the tools"):
        chat(
            llm,
            user("x"),
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    with pytest.raises(InvalidParameterError, match="needs tools"):
        chat(llm, user("x"), tool_choice="required")


def test_bad_tool_definitions(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError, match="name"):
        chat(llm, user("x"), tools=[{"type": "function", "function": {"description": "nameless"}}])
    with pytest.raises(InvalidParameterError, match="two tools"):
        chat(llm, user("x"), tools=[WEATHER, WEATHER])


def test_messages_that_do_not_fit(model_path: str) -> None:
    small = Llama(model_path=model_path, n_ctx=256)
    with small, pytest.raises(ContextWindowExceededError):
        small.create_chat_completion(user("word " * 600))


def test_reasoning_content_is_separate_and_can_be_turned_off(model_path: str) -> None:
    # a reasoning-style template; the grammar makes the tiny model "think" deterministically
    thinking = 'root ::= "<think>\\nThe user greets me.\\n</think>\\n\\nHello there!"'
    with Llama(model_path=model_path, n_ctx=1024, chat_template=THINKING_TEMPLATE) as llm:
        messages = user("Hi")
        out = llm.create_chat_completion(messages, grammar=thinking, temperature=0, max_tokens=40)
        msg = out["choices"][0]["message"]
        assert msg["reasoning_content"].strip() == "The user greets me."
        assert msg["content"].strip() == "Hello there!"

        inline = llm.create_chat_completion(
            messages, grammar=thinking, temperature=0, max_tokens=40, reasoning_format="none"
        )
        msg = inline["choices"][0]["message"]
        assert "reasoning_content" not in msg and msg["content"].startswith("<think>")

        stream = llm.create_chat_completion(
            messages, grammar=thinking, temperature=0, max_tokens=40, stream=True
        )
        deltas = [c["choices"][0]["delta"] for c in stream]
        assert (
            "".join(d.get("reasoning_content", "") for d in deltas).strip() == "The user greets me."
        )
        assert "".join(d.get("content", "") for d in deltas).strip() == "Hello there!"

        no_think = llm.chat_templates.apply(json.dumps(messages), enable_thinking=False).prompt
        assert no_think.rstrip().endswith("<think>\n\n</think>")


def test_a_repeated_call_is_dropped_and_held_back_while_streaming(llm: Llama) -> None:
    """A call that repeats an earlier one exactly (a small model looping) is dropped; while it
    is being written it is held back, so streamed deltas and the final message agree."""
    prompt = llm.chat_templates.apply(
        json.dumps(user("What is 2 plus 3?")),
        tools_json=json.dumps([ADD, WEATHER]),
        tool_choice="required",
    )
    add = '{"name": "add", "arguments": {"a": 2, "b": 3}}'
    other = '{"name": "add", "arguments": {"a": 2, "b": 4}}'
    text = '{"tool_calls": [' + ", ".join([add, add, other, add]) + "]}"
    parsed = prompt.parse(text, False)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [
        ("add", {"a": 2, "b": 3}),
        ("add", {"a": 2, "b": 4}),
    ]
    stream = prompt.stream()
    seen: dict[int, str] = {}
    for end in range(1, len(text) + 1):
        for d in stream.update(text[:end], end < len(text)):
            if d.tool_index >= 0:
                seen[d.tool_index] = seen.get(d.tool_index, "") + d.tool_arguments
    assert {i: json.loads(a) for i, a in seen.items()} == {0: {"a": 2, "b": 3}, 1: {"a": 2, "b": 4}}
