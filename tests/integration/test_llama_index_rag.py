"""``LlamaCppEmbedding`` and a ``VectorStoreIndex`` RAG pipeline on the default model.

The same queries run with the default context window and with ``context_window=1024``, where the
retrieved text (about 1150 tokens) no longer fits in one prompt: LlamaIndex must split it, and
with ``Settings.tokenizer = llm.tokenizer`` it counts the model's real tokens, so no prompt
overflows the engine's window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

pytest.importorskip("llama_index.core")

import llama_index.core  # noqa: E402
from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402

from llamacpp_integrations import Llama  # noqa: E402
from llamacpp_integrations.llama_index import LlamaCPP, LlamaCppEmbedding  # noqa: E402

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
    "Marie Curie": (
        "Marie Curie was a physicist and chemist, born Maria Sklodowska in Warsaw in 1867, who "
        "moved to Paris to study at the Sorbonne. With her husband Pierre she discovered two new "
        "chemical elements in 1898: polonium, which she named after her native Poland, and "
        "radium. She coined the word radioactivity. In 1903 she shared the Nobel Prize in "
        "Physics with Pierre Curie and Henri Becquerel, becoming the first woman to win a Nobel "
        "Prize, and in 1911 she won a second one, in Chemistry, alone. She remains the only "
        "person to have won Nobel Prizes in two different sciences. During the First World War "
        "she built mobile X-ray units that helped surgeons find bullets in wounded soldiers."
    ),
    "the Great Wall": (
        "The Great Wall of China is a series of fortifications built across the northern "
        "borders of ancient Chinese states to protect them against raids by nomadic groups from "
        "the Eurasian steppe. The earliest walls date from the seventh century BC; the "
        "best-known sections, made of brick and stone, were built by the Ming dynasty between "
        "1368 and 1644. Taken together, all of its branches measure about 21,196 kilometres. "
        "Watchtowers along the wall sent warnings with smoke by day and fire by night. Contrary "
        "to a popular myth, the wall cannot be seen with the naked eye from the Moon. It was "
        "declared a UNESCO World Heritage Site in 1987."
    ),
}
QUESTION = "How tall is the Eiffel Tower?"
TOP_K = len(TOPICS)  # every document comes back: more text than a 1024-token window holds


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
    kwargs = {} if request.param is None else {"context_window": request.param}
    llm = LlamaCPP(model_path=model_path, temperature=0.0, max_new_tokens=24, **kwargs)
    if request.param is not None:
        assert llm.metadata.context_window == request.param
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
    texts = list(TOPICS.values())[:3] + ["short", "a second short one"]
    batch = embed_model.get_text_embedding_batch(texts)
    singles = [embed_model.get_text_embedding(t) for t in texts]
    for a, b in zip(batch, singles, strict=True):
        assert embed_model.similarity(a, b) > 0.999


def test_similarity_ranks_the_relevant_text_first(embed_model: LlamaCppEmbedding) -> None:
    query = embed_model.get_query_embedding(QUESTION)
    docs = dict(
        zip(TOPICS, embed_model.get_text_embedding_batch(list(TOPICS.values())), strict=True)
    )
    ranked = sorted(docs, key=lambda t: embed_model.similarity(query, docs[t]), reverse=True)
    assert ranked[0] == "Paris"


def test_instructions_prefix_queries_and_texts(
    model_path: str, embed_model: LlamaCppEmbedding
) -> None:
    prefixed = LlamaCppEmbedding(
        client=embed_model.client,
        query_instruction="search_query: ",
        text_instruction="search_document: ",
    )
    q = prefixed.get_query_embedding("Eiffel Tower")
    assert (
        embed_model.similarity(q, embed_model.get_text_embedding("search_query: Eiffel Tower"))
        > 0.999
    )
    assert embed_model.similarity(q, embed_model.get_query_embedding("Eiffel Tower")) < 0.999
    t = prefixed.get_text_embedding("Eiffel Tower")
    assert (
        embed_model.similarity(t, embed_model.get_text_embedding("search_document: Eiffel Tower"))
        > 0.999
    )


def test_long_texts_are_cut_not_refused(embed_model: LlamaCppEmbedding) -> None:
    long_text = " ".join(TOPICS.values()) * 2  # about 2300 tokens, n_ctx is 512
    assert len(embed_model.get_text_embedding(long_text)) == 576


async def test_async_embeddings(embed_model: LlamaCppEmbedding) -> None:
    texts = list(TOPICS.values())[:4]
    vectors = await embed_model.aget_text_embedding_batch(texts)
    assert len(vectors) == 4
    for a, b in zip(vectors, embed_model.get_text_embedding_batch(texts), strict=True):
        assert embed_model.similarity(a, b) > 0.999
    q = await embed_model.aget_query_embedding(QUESTION)
    assert embed_model.similarity(q, embed_model.get_query_embedding(QUESTION)) > 0.999


# ---------------------------------------------------------------------------- RAG queries


def test_streaming_query(index: VectorStoreIndex, rag_llm: LlamaCPP) -> None:
    engine = index.as_query_engine(llm=rag_llm, streaming=True, similarity_top_k=TOP_K)
    response = engine.query(QUESTION)
    tokens = list(response.response_gen)  # type: ignore[union-attr]
    assert len(tokens) > 1
    check_answer("".join(tokens))
    assert topics(response)[0] == "Paris" and len(topics(response)) == TOP_K


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
