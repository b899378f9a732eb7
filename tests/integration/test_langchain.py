"""The LangChain adapters as people use them: the langchain_community idioms with only the import
changed, tools, structured output, streaming callbacks, async, usage, errors, embeddings."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, StreamingStdOutCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from loop_lag import LoopLag
from pydantic import BaseModel, Field, ValidationError

from llamacpp_integrations import InvalidParameterError, Llama, ModelLoadError, _core, grammars
from llamacpp_integrations.langchain import ChatLlamaCpp, LlamaCpp, LlamaCppEmbeddings
from llamacpp_integrations.langchain._messages import ai_message, to_openai_messages

pytestmark = pytest.mark.integration


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def translate(text: str, language: str) -> str:
    """Translate text into a language."""
    return f"{text} ({language})"


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


@pytest.fixture(scope="module")
def chat(model_path: str) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=model_path, n_ctx=2048, temperature=0, max_tokens=48, seed=1234)


@pytest.fixture(scope="module")
def completion_llm(chat: ChatLlamaCpp) -> LlamaCpp:
    return LlamaCpp(client=chat.llama, temperature=0, max_tokens=24)


# ---------------------------------------------------------------- the community idioms


def test_invoke_messages_and_prompt_pipelines(chat: ChatLlamaCpp) -> None:
    messages = [
        SystemMessage("You are a helpful assistant that translates English to French."),
        HumanMessage("I love programming."),
    ]
    reply = chat.invoke(messages)
    assert isinstance(reply, AIMessage) and reply.content
    assert reply.response_metadata["finish_reason"] in ("stop", "length")

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You translate {input_language} to {output_language}."), ("human", "{input}")]
    )
    out = (prompt | chat | StrOutputParser()).invoke(
        {"input_language": "English", "output_language": "German", "input": "I love cats."}
    )
    assert isinstance(out, str) and out


def test_prompt_template_with_llm(completion_llm: LlamaCpp) -> None:
    prompt = PromptTemplate.from_template("The capital of {country} is")
    out = (prompt | completion_llm).invoke({"country": "France"})
    assert "Paris" in out


def test_bind_tools_openai_dict_choice(chat: ChatLlamaCpp) -> None:
    bound = chat.bind_tools(
        tools=[add, translate],
        tool_choice={"type": "function", "function": {"name": "translate"}},
    )
    msg = bound.invoke("Say hello in Spanish.")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "translate"
    assert set(msg.tool_calls[0]["args"]) == {"text", "language"}


def test_structured_output_from_openai_tool_dict(chat: ChatLlamaCpp) -> None:
    structured = chat.with_structured_output(convert_to_openai_tool(Joke))
    chat.llama.reset()
    # room and DRY: the 135M model otherwise rambles in "setup" past max_tokens
    out = structured.invoke("Tell me a joke about cats", max_tokens=200, dry_multiplier=0.8)
    assert isinstance(out, dict) and set(out) == {"setup", "punchline"}


def test_stream_chunks(chat: ChatLlamaCpp) -> None:
    chunks = list(chat.stream("Tell me a short fact about the sea."))
    assert len(chunks) > 2
    full: Any = None
    for c in chunks:
        full = c if full is None else full + c
    assert isinstance(full, AIMessageChunk) and full.content
    assert chunks[-1].chunk_position == "last"
    assert full.usage_metadata and full.usage_metadata["output_tokens"] > 0


def test_llamacpp_grammar_path_with_streaming_stdout(
    model_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = LlamaCpp(
        model_path=model_path,
        n_ctx=1024,
        temperature=0,
        max_tokens=64,
        grammar_path=grammars.path("json_object"),
        callbacks=[StreamingStdOutCallbackHandler()],
        streaming=True,
    )
    out = llm.invoke("Describe a person as a JSON object with name and age:")
    printed = capsys.readouterr().out
    assert printed == out
    assert isinstance(json.loads(out), dict)


def test_gpu_style_parameters_accepted_on_cpu(model_path: str) -> None:
    llm = ChatLlamaCpp(
        model_path=model_path,
        n_gpu_layers=40,
        n_batch=512,
        f16_kv=True,
        n_ctx=1024,
        max_tokens=4,
        temperature=0,
    )
    assert llm.invoke("Hi").content is not None


# ---------------------------------------------------------------- tools


def test_model_decides_whether_to_call(chat: ChatLlamaCpp) -> None:
    bound = chat.bind_tools([add])
    chat.llama.reset()
    called = bound.invoke("What is 2 plus 3?")
    assert [c["name"] for c in called.tool_calls] == ["add"]
    assert called.tool_calls[0]["args"] == {"a": 2, "b": 3}
    chat.llama.reset()
    answered = bound.invoke("Translate 'cat' to French.")
    assert not answered.tool_calls and answered.content


@pytest.mark.parametrize("choice", ["any", "required", "add", True])
def test_forced_tool_choices(chat: ChatLlamaCpp, choice: Any) -> None:
    msg = chat.bind_tools([add], tool_choice=choice).invoke("Hello there")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "add"


def test_tool_choice_none_and_parallel_false(chat: ChatLlamaCpp) -> None:
    none = chat.bind_tools([add], tool_choice="none").invoke("What is 2 plus 3?")
    assert not none.tool_calls and none.content
    one = chat.bind_tools([add], tool_choice="any", parallel_tool_calls=False).invoke(
        "What are 1+2 and 3+4?"
    )
    assert len(one.tool_calls) == 1


def test_bad_tool_choice_raises(chat: ChatLlamaCpp) -> None:
    with pytest.raises(ValueError, match="not among the tools"):
        chat.bind_tools([add], tool_choice="multiply")
    with pytest.raises(ValueError, match="exactly one tool"):
        chat.bind_tools([add, translate], tool_choice=True)


def test_streamed_tool_call_chunks_aggregate_to_the_calls(chat: ChatLlamaCpp) -> None:
    bound = chat.bind_tools([add], tool_choice="add")
    chat.llama.reset()
    whole = bound.invoke("What is 2 plus 3?")
    chat.llama.reset()
    full: Any = None
    for c in bound.stream("What is 2 plus 3?"):
        full = c if full is None else full + c
    assert full.tool_call_chunks
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [
        (c["name"], c["args"]) for c in whole.tool_calls
    ]


def test_agent_loop_with_two_tools(chat: ChatLlamaCpp) -> None:
    """A model bound to two tools calls one, gets the result, and answers.

    The 135M model, asked again with the tools on offer, repeats its call forever, so the
    answer turn offers them with tool_choice="none" (the "final answer" step of many agents).
    """
    tools = {"add": add, "translate": translate}
    chat.llama.reset()
    history: list[Any] = [HumanMessage("What is 2 plus 3?")]
    call = chat.bind_tools(list(tools.values())).invoke(history)
    assert [c["name"] for c in call.tool_calls] == ["add"]
    history.append(call)
    for tc in call.tool_calls:
        history.append(tools[tc["name"]].invoke(tc))
    assert history[-1].content == "5"
    final = chat.bind_tools(list(tools.values()), tool_choice="none").invoke(history)
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert "5" in final.text


# ---------------------------------------------------------------- structured output


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_methods(chat: ChatLlamaCpp, method: str) -> None:
    structured = chat.with_structured_output(Person, method=method, include_raw=True)  # type: ignore[arg-type]
    chat.llama.reset()
    out = structured.invoke("Alice is 30 years old. Extract the person.")
    assert out["parsing_error"] is None
    assert out["parsed"] == Person(name="Alice", age=30)
    assert isinstance(out["raw"], AIMessage)


# ---------------------------------------------------------------- metadata, stop, callbacks


def test_usage_metadata_and_response_metadata(chat: ChatLlamaCpp) -> None:
    msg = chat.invoke("Hello", logprobs=True, top_logprobs=2)
    usage = msg.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    meta = msg.response_metadata
    assert meta["model_name"] == chat.resolved_model_name
    assert meta["timings"]["predicted_n"] == usage["output_tokens"]
    content = meta["logprobs"]["content"]
    assert content and all(len(t["top_logprobs"]) == 2 for t in content)
    assert chat._get_ls_params()["ls_provider"] == "llamacpp"


def test_per_call_and_constructor_stop(model_path: str) -> None:
    llm = ChatLlamaCpp(model_path=model_path, n_ctx=1024, temperature=0, max_tokens=40)
    question = "Tell me about the sea."
    full = llm.invoke(question).text
    words = full.split()
    assert len(words) > 4
    word = words[3]
    cut = llm.invoke(question, stop=[word])
    assert word not in cut.text and full.startswith(cut.text)
    assert cut.response_metadata["finish_reason"] == "stop"
    llm2 = ChatLlamaCpp(client=llm.llama, temperature=0, max_tokens=40, stop=[word])
    assert word not in llm2.invoke(question).text


class _Collector(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.chunks: list[Any] = []

    def on_llm_new_token(self, token: str, *, chunk: Any = None, **kwargs: Any) -> None:
        self.tokens.append(token)
        self.chunks.append(chunk)


def test_on_llm_new_token_per_token_with_chunk(model_path: str) -> None:
    collector = _Collector()
    llm = ChatLlamaCpp(
        model_path=model_path,
        n_ctx=1024,
        temperature=0,
        max_tokens=16,
        streaming=True,
        callbacks=[collector],
    )
    msg = llm.invoke("Name a colour.")
    assert "".join(collector.tokens) == msg.content
    assert len([t for t in collector.tokens if t]) > 1
    assert all(c is not None and hasattr(c, "message") for c in collector.chunks)


# ---------------------------------------------------------------- async


async def test_ainvoke_and_astream_do_not_block_the_loop(
    chat: ChatLlamaCpp, loop_lag: LoopLag
) -> None:
    async with loop_lag:
        replies = await chat.abatch(["Name a fruit.", "Name a city.", "Name an animal."])
        chunks = [c async for c in chat.astream("Name a colour.")]
    assert all(isinstance(r, AIMessage) and r.content for r in replies)
    assert "".join(str(c.content) for c in chunks)
    assert len(loop_lag.lags) > 10 and loop_lag.worst < 0.25  # the loop kept ticking


async def test_async_structured_output_and_tools(chat: ChatLlamaCpp) -> None:
    person = await chat.with_structured_output(Person).ainvoke(
        "Bob is 41 years old. Extract the person."
    )
    assert isinstance(person, Person) and person.name == "Bob"
    msg = await chat.bind_tools([add], tool_choice="add").ainvoke("What is 2 plus 3?")
    assert msg.tool_calls[0]["name"] == "add"


# ---------------------------------------------------------------- LlamaCpp (text completion)


def test_llamacpp_usage_echo_tokens_and_batch(completion_llm: LlamaCpp) -> None:
    result = completion_llm.generate(["The capital of France is", "One, two, three,"])
    assert len(result.generations) == 2
    assert result.llm_output and result.llm_output["token_usage"]["completion_tokens"] > 0
    echo = LlamaCpp(client=completion_llm.llama, echo=True, temperature=0, max_tokens=4)
    assert echo.invoke("The capital of France is").startswith("The capital of France is")
    text = "The quick brown fox"
    assert completion_llm.get_num_tokens(text) == len(completion_llm.llama.tokenize(text))
    assert completion_llm.batch(["1, 2, 3,", "a, b, c,"], stop=["\n"])


async def test_llamacpp_async(completion_llm: LlamaCpp) -> None:
    outs = await completion_llm.abatch(["The capital of France is", "The capital of Italy is"])
    assert "Paris" in outs[0] and "Rome" in outs[1]
    chunks = [c async for c in completion_llm.astream("The capital of Spain is")]
    assert "Madrid" in "".join(chunks)


def test_llamacpp_suffix_needs_a_fim_model(completion_llm: LlamaCpp) -> None:
    llm = LlamaCpp(client=completion_llm.llama, suffix="return x")
    with pytest.raises(InvalidParameterError, match="FIM"):
        llm.invoke("def f(x):")


# ---------------------------------------------------------------- errors and sharing


def test_unknown_field_raises(model_path: str) -> None:
    with pytest.raises(ValidationError, match="n_gpu_layer"):
        ChatLlamaCpp(model_path=model_path, n_gpu_layer=1)
    with pytest.raises(ValidationError, match="model_path"):
        ChatLlamaCpp()
    with pytest.raises(TypeError, match="unexpected keyword"):
        ChatLlamaCpp(model_path=model_path, n_ctx=512).invoke("Hi", not_a_sampling_arg=1)


def test_missing_model_file_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(ModelLoadError, match=r"no_such\.gguf"):
        ChatLlamaCpp(model_path=str(tmp_path / "no_such.gguf"))


def test_timeout_cancels_and_raises(model_path: str) -> None:
    llm = ChatLlamaCpp(model_path=model_path, n_ctx=2048, max_tokens=2000, timeout=0.2)
    before = _core.compute_count()
    with pytest.raises(TimeoutError):
        llm.invoke("Write a very long story about a dragon.", ignore_eos=True)
    # kv_used() waits until no request is active: a generation that went on after the timeout
    # would run its 2000 decodes first (decodes, not seconds: a slow machine cannot fail this)
    llm.llama.native_engine.kv_used()
    assert _core.compute_count() - before < 1000
    # the engine is free again (no timeout here: a busy machine may take 0.2 s for anything)
    assert ChatLlamaCpp(client=llm.llama, max_tokens=2).invoke("Hi").content is not None


def test_instances_share_the_loaded_model(model_path: str, chat: ChatLlamaCpp) -> None:
    a = ChatLlamaCpp(model_path=model_path, n_ctx=512)
    b = LlamaCpp(model_path=model_path, n_ctx=1024)
    assert a.llama.native_model is chat.llama.native_model is b.llama.native_model
    shared = Llama(model_path=model_path, n_ctx=512)
    assert ChatLlamaCpp(client=shared).llama is shared


def test_reasoning_content_goes_to_additional_kwargs() -> None:
    msg = ai_message(
        {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4"}, None, {}
    )
    assert msg.additional_kwargs["reasoning_content"] == "2+2 is 4" and msg.content == "4"


def test_get_num_tokens_from_messages_counts_the_rendered_prompt(chat: ChatLlamaCpp) -> None:
    messages = [HumanMessage("Hello there")]
    n = chat.get_num_tokens_from_messages(messages)
    assert n == chat.invoke(messages, max_tokens=1).usage_metadata["input_tokens"]  # type: ignore[index]
    assert chat.get_num_tokens_from_messages(messages, tools=[add]) > n


# ---------------------------------------------------------------- embeddings


def test_embeddings_normalised_batched_and_async(model_path: str) -> None:
    emb = LlamaCppEmbeddings(model_path=model_path)
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Stocks fell sharply."]
    vectors = emb.embed_documents(texts)
    assert len(vectors) == 3 and all(len(v) == emb.llama.n_embd() for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    single = emb.embed_query(texts[0])
    assert max(abs(a - b) for a, b in zip(single, vectors[0], strict=True)) < 1e-4

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    again = asyncio.run(emb.aembed_documents(texts))
    assert max(abs(a - b) for a, b in zip(again[2], vectors[2], strict=True)) < 1e-4
    assert emb.embed_documents([]) == []


def test_chat_grammar_path_constrains_the_reply(model_path: str) -> None:
    llm = ChatLlamaCpp(
        model_path=model_path,
        n_ctx=1024,
        temperature=0,
        max_tokens=64,
        grammar_path=grammars.path("json_object"),
    )
    reply = llm.invoke("Describe a cat as JSON.")
    assert isinstance(json.loads(reply.text), dict)
    with pytest.raises(ValidationError, match="not both"):
        ChatLlamaCpp(client=llm.llama, grammar='root ::= "a"', grammar_path="x.gbnf")


def test_function_messages_answer_the_calls_they_follow(chat: ChatLlamaCpp) -> None:
    """Legacy function calling: a ``FunctionMessage`` is the result of the call before it,
    whether that call is a ``function_call`` or a tool call of the same name."""
    from langchain_core.messages import FunctionMessage

    from llamacpp_integrations._chat import pair_function_messages

    legacy = AIMessage(
        "", additional_kwargs={"function_call": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    )
    modern = AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "c7"}])
    for call in (legacy, modern):
        messages = [HumanMessage("What is 2 plus 3?"), call, FunctionMessage("517", name="add")]
        paired = pair_function_messages(to_openai_messages(messages))
        assert paired[2]["role"] == "tool"
        assert paired[2]["tool_call_id"] == paired[1]["tool_calls"][0]["id"]
        assert paired[1]["tool_calls"][0]["function"]["name"] == "add"
        prompt = chat.llama.chat_templates.apply(json.dumps(paired)).prompt
        assert "tool\n517" in prompt  # rendered as the tool result (SmolLM's template drops calls)
        reply = chat.invoke(messages, max_tokens=8)
        assert isinstance(reply, AIMessage) and reply.usage_metadata
    with pytest.raises(InvalidParameterError, match="'add', which no earlier assistant"):
        chat.invoke([HumanMessage("Hi"), FunctionMessage("517", name="add")])
