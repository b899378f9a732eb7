"""LangChain's own standard test suites (langchain-tests) on the default model.

Capability flags are stated explicitly and truthfully: tool calling with every tool_choice,
structured output (json_schema, function_calling, json_mode), usage metadata with cached
prompt tokens; no image, audio or PDF input.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    EmbeddingsIntegrationTests,
)
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

from llamacpp_integrations import default_model_path
from llamacpp_integrations.langchain import ChatLlamaCpp, LlamaCppEmbeddings

pytestmark = pytest.mark.integration

# dry_multiplier: the 135M model otherwise loops inside JSON strings ("a cat is a cat, a cat is
# a cat, ...") until max_tokens; DRY is the setting we recommend for small models
# a loaded engine of its own per test (share_client=False): a sampled reply depends on the last
# bits of the logits, which a warm prefix cache (another test's turns on a shared engine) can
# change (see the README on the prompt cache), and these tests judge the 135M model's choices
CHAT_PARAMS: dict[str, Any] = {
    "n_ctx": 4096, "seed": 1234, "dry_multiplier": 0.8, "share_client": False,
}  # fmt: skip


class _ChatCapabilities:
    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model_path": default_model_path(), **CHAT_PARAMS}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict[str, Any]:
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False


class TestChatLlamaCppStandardUnit(_ChatCapabilities, ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # the unit suite adds api_key="test" for hosted models; a local model has no key, and an
        # unknown field raises here by design
        params = dict(super().standard_chat_model_params)
        params.pop("api_key", None)
        return params


RAMBLES = pytest.mark.xfail(
    reason="the 135M model's answer: its 'setup' string rambles past max_tokens=100, so the "
    "(grammar-valid) JSON is cut before 'punchline'. Only the Pydantic variants fail; the "
    "TypedDict and JSON-schema ones pass (XPASS)",
    strict=False,
)


class TestChatLlamaCppStandardIntegration(_ChatCapabilities, ChatModelIntegrationTests):
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    @RAMBLES
    def test_structured_output(self, model: BaseChatModel, schema_type: Any) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    @RAMBLES
    async def test_structured_output_async(self, model: BaseChatModel, schema_type: Any) -> None:
        await super().test_structured_output_async(model, schema_type)

    @RAMBLES
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        # the engine keeps the previous prompt's KV cache: the second call reads the shared
        # prefix from it, and reports it as cache_read
        llm = ChatLlamaCpp(**self.chat_model_params, temperature=0, max_tokens=8)
        prompt = "Here is a long note about caching. " * 20 + "Summarize it."
        llm.invoke(prompt)
        if stream:
            full: Any = None
            for chunk in llm.stream(prompt):
                full = chunk if full is None else full + chunk
            assert isinstance(full, AIMessageChunk)
            message: AIMessage = full
        else:
            message = llm.invoke(prompt)
        assert message.usage_metadata is not None
        assert message.usage_metadata.get("input_token_details", {}).get("cache_read", 0) > 0
        return message


class _EmbeddingParams:
    @property
    def embeddings_class(self) -> type[LlamaCppEmbeddings]:
        return LlamaCppEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model_path": default_model_path()}


class TestLlamaCppEmbeddingsStandardUnit(_EmbeddingParams, EmbeddingsUnitTests):
    pass


class TestLlamaCppEmbeddingsStandardIntegration(_EmbeddingParams, EmbeddingsIntegrationTests):
    pass
