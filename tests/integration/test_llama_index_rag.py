"""``LlamaCppEmbedding`` and a ``VectorStoreIndex`` RAG pipeline on the default model.

The same queries run with the default context window and with ``context_window=1024``, where the
retrieved text (about 770 tokens) no longer fits in one prompt next to the template, the answer's
64 tokens and the 500 tokens of padding LlamaIndex's refine keeps: LlamaIndex must split it, and
with ``Settings.tokenizer = llm.tokenizer`` it counts the model's real tokens, so no prompt
overflows the engine's window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

import llama_index.core
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index.core.node_parser import SentenceSplitter

from llamacpp_integrations import Llama
from llamacpp_integrations.llama_index import LlamaCPP, LlamaCppEmbedding

TOPICS = {
    "llama.cpp": (
        "llama.cpp is a C and C++ library for running large language models on ordinary "
        "computers, without a Python runtime or a GPU. It reads model weights from GGUF files, a "
        "single-file format that stores the tensors together with the tokenizer, the chat "
        "template and other metadata. Quantized weights such as Q4_0, Q4_1 and Q8_0 shrink a "
        "model to a fraction of its original size: a model with 135 million parameters fits in "
        "about 100 megabytes. The library runs on x86 and ARM processors and can offload layers "
        "to CUDA, Metal or Vulkan GPUs. Its server, llama-server, speaks an OpenAI-compatible "
        "HTTP API, batches requests from many users together, and reuses the key-value cache "
        "when a new prompt starts like an old one. Grammars written in GBNF constrain the "
        "output, so a reply can be forced to be valid JSON that follows a schema. The project "
        "was started by Georgi Gerganov in March 2023."
    ),
    "Paris": (
        "Paris is the capital and largest city of France, with about two million people in the "
        "city proper and more than twelve million in its metropolitan area. The river Seine "
        "flows through the middle of the city and divides it into the Left Bank and the Right "
        "Bank. The Eiffel Tower was completed in 1889 as the entrance arch of the World's Fair; "
        "it is 330 metres tall and was the tallest structure in the world until 1930. The "
        "Louvre, the most visited museum in the world, holds the Mona Lisa and the Venus de "
        "Milo. Notre-Dame cathedral, begun in 1163, was badly damaged by a fire in April 2019 "
        "and reopened in December 2024. The city is divided into twenty districts called "
        "arrondissements that spiral outwards from the centre, and its underground railway, "
        "the Metro, opened in 1900."
    ),
    "photosynthesis": (
        "Photosynthesis is the process that plants, algae and some bacteria use to turn light "
        "energy into chemical energy. In the chloroplasts of leaf cells, the green pigment "
        "chlorophyll absorbs mostly red and blue light and reflects green light, which is why "
        "leaves look green. The light-dependent reactions split water molecules, release "
        "oxygen as a by-product and store energy in ATP and NADPH. The Calvin cycle then uses "
        "that energy to fix carbon dioxide from the air into sugars such as glucose. Almost all "
        "of the oxygen in the atmosphere was produced by photosynthesis, and nearly every food "
        "chain on Earth starts with it. Plants that grow in hot, dry places, such as maize and "
        "cacti, use variants called C4 and CAM photosynthesis to save water."
    ),
    "Jupiter": (
        "Jupiter is the fifth planet from the Sun and the largest in the solar system: more "
        "than twice as massive as all the other planets combined. It is a gas giant made mostly "
        "of hydrogen and helium, with no solid surface. Its Great Red Spot is a storm wider "
        "than the Earth that has been observed for more than three hundred years. Jupiter spins "
        "faster than any other planet, so a day there lasts under ten hours. It has at least 95 "
        "known moons; the four largest, Io, Europa, Ganymede and Callisto, were discovered by "
        "Galileo Galilei in 1610. Ganymede is the largest moon in the solar system, bigger than "
        "the planet Mercury, and Europa is thought to hide a salty ocean beneath its icy crust."
    ),
}
QUESTION = "How tall is the Eiffel Tower in Paris?"
TOP_K = len(TOPICS)  # every document comes back: more than a 1024-token window holds


class LLMCalls(BaseEventHandler):
    """Counts LLM chat calls (LlamaIndex instrumentation events)."""

    count: int = 0

    @classmethod
    def class_name(cls) -> str:
        return "LLMCalls"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatStartEvent):
            self.count += 1


@pytest.fixture
def llm_calls() -> Iterator[LLMCalls]:
    counter = LLMCalls()
    root = get_dispatcher()
    root.add_event_handler(counter)
    try:
        yield counter
    finally:
        root.event_handlers.remove(counter)


@pytest.fixture(scope="module")
def embed_model(model_path: str) -> Iterator[LlamaCppEmbedding]:
    model = LlamaCppEmbedding(model_path=model_path)
    yield model
    model.close()


@pytest.fixture(scope="module")
def index(embed_model: LlamaCppEmbedding) -> VectorStoreIndex:
    documents = [Document(text=text, metadata={"topic": t}) for t, text in TOPICS.items()]
    return VectorStoreIndex.from_documents(
        documents,
        embed_model=embed_model,
        transformations=[SentenceSplitter(chunk_size=512, chunk_overlap=0)],
    )


@pytest.fixture(scope="module", params=[None, 1024], ids=["default-window", "window-1024"])
def rag_llm(request: pytest.FixtureRequest, model_path: str) -> Iterator[LlamaCPP]:
    """LlamaCPP with its default window (3900 tokens), or a 1024-token one.

    The stop string ends the answer at its paragraph: under the refine prompt SmolLM2-135M
    otherwise repeats "Rewrite: <answer>" until max_new_tokens.
    """
    kwargs = {} if request.param is None else {"context_window": request.param}
    llm = LlamaCPP(
        model_path=model_path,
        temperature=0.0,
        max_new_tokens=64,
        generate_kwargs={"stop": ["\n\n"]},
        **kwargs,
    )
    assert llm.metadata.context_window == (request.param or 4096)  # 3900, rounded by the engine
    assert llm.metadata.num_output == 64
    yield llm
    llm.close()


@pytest.fixture(autouse=True)
def real_token_counts(llm: Llama) -> Iterator[None]:
    """``Settings.tokenizer`` set to the model's tokenizer for the test, then restored."""
    saved = dict(vars(Settings))
    tokenizer = llama_index.core.global_tokenizer
    Settings.tokenizer = LlamaCPP(client=llm).tokenizer
    try:
        yield
    finally:
        vars(Settings).clear()
        vars(Settings).update(saved)
        llama_index.core.global_tokenizer = tokenizer


def topics(response: object) -> list[str]:
    return [n.node.metadata["topic"] for n in getattr(response, "source_nodes", [])]


def check_answer(text: str) -> None:
    assert text.strip()
    assert "<|im_" not in text and "[INST]" not in text


# ---------------------------------------------------------------------------- embeddings


def test_embeddings_are_normalized_vectors_of_the_models_width(
    embed_model: LlamaCppEmbedding,
) -> None:
    query = embed_model.get_query_embedding(QUESTION)
    assert len(query) == embed_model.client.n_embd() == 576
    assert math.isclose(math.fsum(x * x for x in query), 1.0, rel_tol=1e-4)
    assert embed_model.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_batches_match_single_texts(embed_model: LlamaCppEmbedding) -> None:
    texts = ["The Seine flows through Paris.", "Jupiter has 95 moons.", "short", "a, b, c"]
    batch = embed_model.get_text_embedding_batch(texts)
    singles = [embed_model.get_text_embedding(t) for t in texts]
    for a, b in zip(batch, singles, strict=True):
        assert embed_model.similarity(a, b) > 0.999


async def test_async_embeddings(embed_model: LlamaCppEmbedding) -> None:
    texts = ["The Seine flows through Paris.", "Jupiter has 95 moons."]
    vectors = await embed_model.aget_text_embedding_batch(texts)
    for a, b in zip(vectors, embed_model.get_text_embedding_batch(texts), strict=True):
        assert embed_model.similarity(a, b) > 0.999
    q = await embed_model.aget_query_embedding(QUESTION)
    assert embed_model.similarity(q, embed_model.get_query_embedding(QUESTION)) > 0.999


def test_instructions_prefix_queries_and_texts(embed_model: LlamaCppEmbedding) -> None:
    prefixed = LlamaCppEmbedding(
        client=embed_model.client,
        query_instruction="search_query: ",
        text_instruction="search_document: ",
    )
    plain = embed_model
    q = prefixed.get_query_embedding("Eiffel Tower")
    assert plain.similarity(q, plain.get_text_embedding("search_query: Eiffel Tower")) > 0.999
    assert plain.similarity(q, plain.get_query_embedding("Eiffel Tower")) < 0.999
    t = prefixed.get_text_embedding("Eiffel Tower")
    assert plain.similarity(t, plain.get_text_embedding("search_document: Eiffel Tower")) > 0.999


def test_long_texts_are_cut_not_refused(model_path: str, embed_model: LlamaCppEmbedding) -> None:
    assert embed_model.n_ctx == 1024  # LlamaIndex's default chunk size
    small = LlamaCppEmbedding(model_path=model_path, n_ctx=64)
    try:
        text = TOPICS["Paris"]  # about 190 tokens
        cut = small.get_text_embedding(text)
        assert len(cut) == 576
        # only the first 64 tokens count: what follows them changes nothing
        assert small.similarity(cut, small.get_text_embedding(text + " Jupiter!")) > 0.9999
        assert small.similarity(cut, embed_model.get_text_embedding(text)) < 0.999
    finally:
        small.close()


@pytest.mark.parametrize(
    ("question", "topic"),
    [(QUESTION, "Paris"), ("How many moons does Jupiter have?", "Jupiter")],
)
def test_retrieval_ranks_the_relevant_document_first(
    index: VectorStoreIndex, question: str, topic: str
) -> None:
    nodes = index.as_retriever(similarity_top_k=2).retrieve(question)
    assert nodes[0].node.metadata["topic"] == topic
    assert (nodes[0].score or 0.0) > (nodes[1].score or 0.0)


# ---------------------------------------------------------------------------- RAG queries


def test_streaming_query(index: VectorStoreIndex, rag_llm: LlamaCPP, llm_calls: LLMCalls) -> None:
    engine = index.as_query_engine(llm=rag_llm, streaming=True, similarity_top_k=TOP_K)
    response = engine.query(QUESTION)
    tokens = list(response.response_gen)  # type: ignore[union-attr]
    assert len(tokens) > 1
    check_answer("".join(tokens))
    assert topics(response)[0] == "Paris" and len(topics(response)) == TOP_K
    # the 1024-token window cannot hold all the text at once: LlamaIndex split it
    if rag_llm.metadata.context_window > 1024:
        assert llm_calls.count == 1
    else:
        assert llm_calls.count > 1


async def test_aquery(index: VectorStoreIndex, rag_llm: LlamaCPP) -> None:
    engine = index.as_query_engine(llm=rag_llm, similarity_top_k=TOP_K)
    response = await engine.aquery(QUESTION)
    check_answer(str(response))
    assert topics(response)[0] == "Paris" and len(topics(response)) == TOP_K


@pytest.mark.parametrize("mode", ["compact", "refine", "tree_summarize"])
def test_response_modes(index: VectorStoreIndex, rag_llm: LlamaCPP, mode: str) -> None:
    engine = index.as_query_engine(llm=rag_llm, response_mode=mode, similarity_top_k=TOP_K)
    response = engine.query(QUESTION)
    check_answer(str(response))
    assert topics(response)[0] == "Paris" and len(topics(response)) == TOP_K
