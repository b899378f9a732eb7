"""One engine per model and settings in a process: adapter instances that name the same GGUF and
context settings, in LangChain and LlamaIndex alike, share one ``Llama``."""

from __future__ import annotations

import threading

import pytest
from llama_index.core.base.llms.types import ChatMessage

from llamacpp_integrations import EngineClosedError, Llama
from llamacpp_integrations.langchain import ChatLlamaCpp, LlamaCpp, LlamaCppEmbeddings
from llamacpp_integrations.llama_index import LlamaCPP, LlamaCppEmbedding

pytestmark = pytest.mark.integration


def test_langchain_chat_llm_and_embeddings_share_one_engine(model_path: str) -> None:
    chat = ChatLlamaCpp(model_path=model_path, max_tokens=4, temperature=0)
    llm = LlamaCpp(model_path=model_path, max_tokens=4, temperature=0)
    emb = LlamaCppEmbeddings(model_path=model_path)
    assert chat.llama is llm.llama is emb.llama
    # the sampling settings are per call, not per engine
    assert ChatLlamaCpp(model_path=model_path, temperature=0.3).llama is chat.llama
    # other context settings, or asking for one's own, give another engine
    assert ChatLlamaCpp(model_path=model_path, n_ctx=1024).llama is not chat.llama
    own = ChatLlamaCpp(model_path=model_path, share_client=False)
    assert own.llama is not chat.llama
    assert own.llama.native_model is chat.llama.native_model  # the weights are loaded once


def test_llama_index_and_langchain_share_across_frameworks(model_path: str) -> None:
    chat = ChatLlamaCpp(model_path=model_path)
    li_llm = LlamaCPP(model_path=model_path, context_window=512)
    li_emb = LlamaCppEmbedding(model_path=model_path, n_ctx=512)
    try:
        assert li_llm.client is li_emb.client is chat.llama
    finally:
        li_llm.close()
        li_emb.close()
    # LlamaIndex's close() gave its references back; LangChain still holds the engine
    assert chat.llama.tokenize(b"still open")


def test_closing_one_sharer_leaves_the_others_working(model_path: str) -> None:
    a = LlamaCPP(model_path=model_path, context_window=768, max_new_tokens=4)
    b = LlamaCppEmbedding(model_path=model_path, n_ctx=768, model_kwargs={"n_batch": 512})
    c = LlamaCPP(model_path=model_path, context_window=768, max_new_tokens=4)
    assert a.client is c.client
    assert b.client is not a.client  # another n_batch: another engine
    engine = a.client
    a.close()
    a.close()  # idempotent: gives back one reference only
    assert c.complete("The sea is").text is not None
    c.close()
    with pytest.raises(EngineClosedError):
        engine.create_completion("The sea is", max_tokens=2)
    b.close()
    # a new adapter after the last one closed gets a fresh engine
    d = LlamaCPP(model_path=model_path, context_window=768, max_new_tokens=4)
    try:
        assert d.client is not engine and d.complete("Hi").text is not None
    finally:
        d.close()


def test_a_client_passed_in_is_used_as_is_and_never_shared(model_path: str) -> None:
    with Llama(model_path=model_path) as mine:
        assert ChatLlamaCpp(client=mine).llama is mine
        assert ChatLlamaCpp(model_path=model_path).llama is not mine
        li = LlamaCPP(client=mine)
        li.close()  # not ours to close
        assert mine.tokenize(b"open")


def test_embeddings_and_chat_run_through_one_scheduler(model_path: str) -> None:
    chat = ChatLlamaCpp(model_path=model_path, max_tokens=64, temperature=0)
    emb = LlamaCppEmbedding(model_path=model_path, n_ctx=512)
    try:
        assert emb.client is chat.llama
        vectors: list[list[float]] = []

        def embed() -> None:
            for i in range(8):
                vectors.append(emb.get_text_embedding(f"text number {i}"))

        worker = threading.Thread(target=embed)
        worker.start()
        reply = chat.invoke("Write a story about a lighthouse.", ignore_eos=True)
        worker.join(120)
        assert not worker.is_alive()
        assert len(vectors) == 8 and len(set(map(tuple, vectors))) == 8
        assert reply.usage_metadata and reply.usage_metadata["output_tokens"] == 64
        # LlamaIndex chat on the same engine too
        li = LlamaCPP(model_path=model_path, context_window=512, max_new_tokens=4)
        assert li.client is chat.llama
        assert li.chat([ChatMessage(role="user", content="Hi")]).message.content is not None
        li.close()
    finally:
        emb.close()
