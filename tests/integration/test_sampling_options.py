"""The sampling settings are defined once (``SamplingOptions``): Llama's signatures, the
LangChain fields, the server's request bodies and LlamaIndex's ``generate_kwargs`` check all
come from that definition, with the native engine's defaults."""

from __future__ import annotations

import inspect

import pytest

from llamacpp_integrations import InvalidParameterError, Llama, SamplingOptions, _core
from llamacpp_integrations._sampling import SAMPLING_ARGS, settings
from llamacpp_integrations.langchain import ChatLlamaCpp, LlamaCpp
from llamacpp_integrations.llama_index import LlamaCPP
from llamacpp_integrations.server.protocol import ChatCompletionRequest

pytestmark = pytest.mark.integration


def test_every_setting_is_a_keyword_of_both_methods_with_the_native_default() -> None:
    native = _core.SamplingParams()
    assert tuple(SamplingOptions.__annotations__) == SAMPLING_ARGS
    completion = inspect.signature(Llama.create_completion).parameters
    chat = inspect.signature(Llama.create_chat_completion).parameters
    for s in settings():
        assert completion[s.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert s.name in chat and s.doc in (Llama.create_completion.__doc__ or "")
        if s.name not in ("seed", "logit_bias"):
            assert completion[s.name].default == pytest.approx(getattr(native, s.name))
    assert chat["temperature"].default == 0.2  # llama-cpp-python's chat default


def test_values_are_checked_against_the_definition(llm: Llama) -> None:
    with pytest.raises(TypeError, match="top_kk"):
        llm.create_completion("Hi", max_tokens=1, top_kk=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="top_kk"):
        llm.submit_completion("Hi", max_tokens=1, top_kk=3)
    with pytest.raises(InvalidParameterError, match="top_p must be >= 0 and <= 1"):
        llm.create_chat_completion([{"role": "user", "content": "Hi"}], top_p=1.5)
    with pytest.raises(InvalidParameterError, match="top_k must be an integer"):
        llm.create_completion("Hi", max_tokens=1, top_k=2.5)
    sp = llm.sampling_params(mirostat_mode=2, dry_multiplier=0.8, logit_bias={5: -100})
    assert (sp.mirostat_mode, sp.logit_bias) == (2, [(5, -100.0)])
    assert sp.dry_multiplier == pytest.approx(0.8)


def test_the_adapters_and_the_server_take_every_setting(llm: Llama) -> None:
    chat = ChatLlamaCpp(client=llm, mirostat_mode=2, typical_p=0.9, max_tokens=2)
    for s in settings():
        if s.name != "seed":  # a load field of the LangChain classes, as in langchain_community
            assert s.name in ChatLlamaCpp.model_fields and s.name in LlamaCpp.model_fields
        assert s.name in ChatCompletionRequest.model_fields
    kwargs = chat.sampling_call_kwargs(None, {"top_k": 7})
    assert (kwargs["mirostat_mode"], kwargs["typical_p"], kwargs["top_k"]) == (2, 0.9, 7)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        ChatLlamaCpp(client=llm, top_p=3)
    with pytest.raises(InvalidParameterError, match=r"unknown argument\(s\) \['top_kk'\]"):
        LlamaCPP(client=llm, generate_kwargs={"top_kk": 1})
    li = LlamaCPP(client=llm, generate_kwargs={"top_k": 1, "mirostat_mode": 0, "echo": False})
    assert li.generate_kwargs["top_k"] == 1


def test_top_n_sigma_reaches_the_sampler_from_every_front(llm: Llama) -> None:
    """A tiny top_n_sigma keeps only the best token, so a hot temperature samples the greedy text:
    added in one line of SamplingOptions, it works in Llama, LangChain and LlamaIndex."""
    prompt = "Once upon a time, in a small village,"
    greedy = llm(prompt, max_tokens=16, temperature=0)["choices"][0]["text"]  # type: ignore[index]
    hot = {"temperature": 1.5, "seed": 7}
    assert llm(prompt, max_tokens=16, top_n_sigma=1e-4, **hot)["choices"][0]["text"] == greedy  # type: ignore[index]
    assert llm(prompt, max_tokens=16, **hot)["choices"][0]["text"] != greedy  # type: ignore[index]
    lc = LlamaCpp(client=llm, max_tokens=16, top_n_sigma=1e-4, temperature=1.5)
    assert lc.invoke(prompt) == greedy
    li = LlamaCPP(
        client=llm, max_new_tokens=16, temperature=1.5, generate_kwargs={"top_n_sigma": 1e-4}
    )
    assert li.complete(prompt, formatted=True).text == greedy
