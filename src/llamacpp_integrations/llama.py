"""The high-level engine: ``Llama``, with llama-cpp-python's constructor and completion API.

``Llama`` owns one native ``Model`` (shared with every other ``Llama`` loaded with the same
parameters) and one native ``Engine`` (a llama context with its KV cache and decode worker).
Everything per token runs in C++ with the GIL released; this module only converts arguments
and builds the OpenAI-shaped results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from typing_extensions import Unpack

from . import _core
from ._chat import ChatCompletionMixin, read_grammar
from ._completion import CompletionStream, ResponseMeta
from ._embedding import EmbeddingMixin
from ._images import ImagePolicy
from ._loading import LLAMA_DEFAULT_SEED, LoadOptions, check_load, load_doc, with_loading
from ._params import (
    bind_call,
    check_int,
    enable_verbose_logging,
    kv_type,
    load_model,
    max_tokens_limit,
    sampling_values,
    speculative_type,
    stop_list,
)
from ._sampling import SamplingOptions, native_sampling, with_sampling
from .errors import EngineClosedError, InvalidParameterError
from .types import CompletionResponse

__all__ = ["LLAMA_DEFAULT_SEED", "CompletionStream", "Llama"]

logger = logging.getLogger("llamacpp_integrations")


class Llama(ChatCompletionMixin, EmbeddingMixin):
    """A GGUF model running in-process on llama.cpp.

    The constructor takes llama-cpp-python's parameter names. Unlike llama-cpp-python, an unknown
    keyword raises ``TypeError`` (a typo such as ``n_gpu_layer`` is never silently ignored), the
    process never aborts on bad input, and one instance is safe to call from many threads.

    Example:
        >>> llm = Llama(model_path=path, n_ctx=2048)
        >>> out = llm("Q: Name the planets in the solar system? A: ", max_tokens=32,
        ...           stop=["Q:", "\\n"], echo=True)
        >>> print(out["choices"][0]["text"])

    Args:
        model_path: Path to a GGUF file.
        **options: The load keywords (:class:`~llamacpp_integrations._loading.LoadOptions`,
            listed below with their defaults): how the weights are loaded, and the context,
            slots and extras of the engine.
    """

    @with_loading()
    def __init__(self, model_path: str | os.PathLike[str], **options: Unpack[LoadOptions]) -> None:
        """Loads the model (shared with every ``Llama`` loaded with the same weights settings)
        and starts its engine.

        Raises:
            TypeError: An unknown keyword (named, with the closest known one).
            InvalidParameterError: A value of the wrong type, out of range, or not one of its
                choices, or settings that contradict each other.
            ModelLoadError: The file (model, adapter, draft or projector) is missing or invalid.
        """
        self._closed = True  # until fully constructed: close() and __del__ must be safe
        o = check_load(options)
        if o["verbose"]:
            enable_verbose_logging()
        self.model_path = os.fspath(model_path)
        self.verbose = o["verbose"]
        self.chat_format = o["chat_format"]
        self.chat_template = o["chat_template"]
        if self.chat_format is not None and self.chat_template is not None:
            raise InvalidParameterError("pass chat_format or chat_template, not both")
        self.lora_base = o["lora_base"]
        self.last_n_tokens_size = o["last_n_tokens_size"]
        self.seed = o["seed"]
        vocab_only = o["vocab_only"]
        type_k, type_v = o["type_k"], o["type_v"]
        if not o["f16_kv"] and type_k is None:
            type_k = "f32"
        if not o["f16_kv"] and type_v is None:
            type_v = "f32"
        spec = speculative_type(o["speculative"], o["draft_model_path"])
        self._model = load_model(
            self.model_path,
            n_gpu_layers=o["n_gpu_layers"],
            main_gpu=o["main_gpu"],
            tensor_split=o["tensor_split"],
            use_mmap=o["use_mmap"],
            use_mlock=o["use_mlock"],
            vocab_only=vocab_only,
            lora_path=o["lora_path"],
            lora_scale=o["lora_scale"],
            progress_callback=o["progress_callback"],
        )
        self._engine: _core.Engine | None = None
        self._image_policy = ImagePolicy(
            local_files=o["allow_image_files"],
            remote=o["allow_image_urls"],
            max_bytes=o["max_image_bytes"],
        )
        mmproj_path = o["mmproj_path"]
        self.mmproj_path = None if mmproj_path is None else os.fspath(mmproj_path)
        n_threads = o["n_threads"]
        projector = None
        if self.mmproj_path is not None:
            if vocab_only:
                raise InvalidParameterError("mmproj_path needs the model's weights, not vocab_only")
            projector = _core.Projector.load(
                self._model,
                self.mmproj_path,
                n_threads=n_threads or -1,
                use_gpu=o["n_gpu_layers"] != 0,
                max_pixels=o["max_image_pixels"],
            )
        if not vocab_only:
            draft_model = None
            draft_path = o["draft_model_path"]
            if draft_path is not None:
                # the vocabulary first: a draft for another tokenizer fails before its weights load
                why = self._model.vocab_mismatch(load_model(draft_path, vocab_only=True))
                if why:
                    raise InvalidParameterError(
                        f"draft model {os.fspath(draft_path)!r} cannot draft for "
                        f"{self.model_path!r}: {why}; a draft model must share the model's "
                        "vocabulary"
                    )
                draft_layers = o["draft_n_gpu_layers"]
                draft_model = load_model(
                    draft_path,
                    n_gpu_layers=o["n_gpu_layers"] if draft_layers is None else draft_layers,
                    main_gpu=o["main_gpu"],
                    use_mmap=o["use_mmap"],
                    use_mlock=o["use_mlock"],
                )
            flash_attn = o["flash_attn"]
            self._engine = _core.Engine(
                self._model,
                n_ctx=o["n_ctx"],
                n_batch=o["n_batch"],
                n_ubatch=o["n_ubatch"],
                n_seq_max=o["n_seq_max"],
                n_threads=n_threads or -1,
                n_threads_batch=o["n_threads_batch"] or -1,
                flash_attn=-1 if flash_attn is None else int(flash_attn),
                type_k=kv_type(type_k, "type_k"),
                type_v=kv_type(type_v, "type_v"),
                embeddings=o["embedding"],
                offload_kqv=o["offload_kqv"],
                rope_freq_base=float(o["rope_freq_base"]),
                rope_freq_scale=float(o["rope_freq_scale"]),
                kv_unified=o["kv_unified"],
                speculative=spec,
                draft_model=draft_model,
                draft_max=o["draft_max"],
                draft_min=o["draft_min"],
                ngram_size=o["draft_ngram_size"],
                ngram_min_hits=o["draft_ngram_min_hits"],
                draft_always=o["draft_always"],
                vision=projector,
            )
        self._n_ctx_requested = o["n_ctx"]
        self._chat_templates: _core.ChatTemplates | None = None
        self.metadata: dict[str, str] = self._model.metadata()
        self._closed = False

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str,
        filename: str,
        additional_files: Sequence[str] | None = None,
        local_dir: str | os.PathLike[str] | None = None,
        local_dir_use_symlinks: bool | str = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        mmproj_filename: str | None = None,
        **kwargs: Any,
    ) -> Llama:
        """Downloads a GGUF model from the Hugging Face Hub (once) and loads it, as in
        llama-cpp-python. Needs ``pip install "llamacpp-integrations[hub]"``.

        Example:
            >>> llm = Llama.from_pretrained("owner/name-GGUF", "*Q4_K_M.gguf", n_ctx=4096)

        Args:
            repo_id: The model repository, ``"owner/name"``.
            filename: A file of the repository, or an ``fnmatch`` pattern matching exactly one
                file (or the parts of one split GGUF, which are all downloaded).
            additional_files: More files (names or patterns) to download next to the model.
            local_dir: Put the files in this folder instead of the hub cache.
            local_dir_use_symlinks: Accepted for compatibility; huggingface_hub no longer uses
                it (a value other than ``"auto"`` warns).
            cache_dir: The hub cache folder (default: huggingface_hub's, ``HF_HUB_CACHE``).
            revision: A branch, tag or commit hash (default: the default branch).
            token: A Hub token for gated or private repositories (default: the saved login
                or ``HF_TOKEN``).
            local_files_only: Use the cached file and make no request (as ``HF_HUB_OFFLINE=1``).
            mmproj_filename: A vision projector of the same repository (a name or a pattern,
                e.g. ``"mmproj-*.gguf"``), downloaded too and loaded as ``mmproj_path``.
            **kwargs: The keyword arguments of :class:`Llama` (``n_ctx``, ``n_gpu_layers``, ...).

        Returns:
            The loaded model.

        Raises:
            ModelLoadError: The repository, revision or file is missing, ``filename`` matches
                several files, access is refused, the download failed, or the file is not
                cached in offline mode; each message names the cause.
        """
        from .hub import from_hub

        options: dict[str, Any] = {
            "additional_files": additional_files,
            "local_dir": local_dir,
            "local_dir_use_symlinks": local_dir_use_symlinks,
            "cache_dir": cache_dir,
            "revision": revision,
            "token": token,
            "local_files_only": local_files_only,
            "mmproj_filename": mmproj_filename,
        }
        return from_hub(cls, repo_id, filename, {**options, **kwargs})

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stops the decode worker and releases the context; pending requests fail."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._engine is not None:
            self._engine.close()
        self._engine = None

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def _require_engine(self) -> _core.Engine:
        if self._closed:
            raise EngineClosedError("this Llama was closed")
        if self._engine is None:
            raise InvalidParameterError(
                "the model was loaded with vocab_only=True and cannot generate"
            )
        return self._engine

    def _require_model(self) -> _core.Model:
        if self._closed:
            raise EngineClosedError("this Llama was closed")
        return self._model

    # ------------------------------------------------------------------ model facts

    @property
    def native_model(self) -> _core.Model:
        """The shared native model (for the chat layer and adapters)."""
        return self._require_model()

    @property
    def native_engine(self) -> _core.Engine:
        """The native engine (context, KV slots, worker)."""
        return self._require_engine()

    @property
    def supports_vision(self) -> bool:
        """Chat messages may hold images: a vision projector is loaded (``mmproj_path``)."""
        return self.mmproj_path is not None

    def n_ctx(self) -> int:
        """The context window in tokens."""
        if self._engine is None:
            return int(self._n_ctx_requested or self._model.n_ctx_train)
        return int(self._require_engine().n_ctx_seq)

    def n_vocab(self) -> int:
        return int(self._require_model().n_vocab)

    def n_embd(self) -> int:
        return int(self._require_model().n_embd)

    def token_bos(self) -> int:
        return int(self._require_model().token_bos)

    def token_eos(self) -> int:
        return int(self._require_model().token_eos)

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Text to token ids.

        Args:
            text: UTF-8 bytes or str.
            add_bos: Add the model's BOS token (when the model uses one).
            special: Parse special tokens such as ``<|im_start|>`` in the text.
        """
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._require_model().tokenize(text, add_bos, special))

    def detokenize(
        self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None, special: bool = False
    ) -> bytes:
        """Token ids to bytes, as llama-cpp-python gives them: the tokens' pieces joined, less
        the one leading space that a vocabulary adding a space prefix puts after BOS. With
        ``prev_tokens``, only the bytes ``tokens`` add after them."""
        model = self._require_model()
        if prev_tokens:
            full = self._pieces(model, [*prev_tokens, *tokens], special)
            return full[len(self._pieces(model, prev_tokens, special)) :]
        return self._pieces(model, tokens, special)

    @staticmethod
    def _pieces(model: _core.Model, tokens: Sequence[int], special: bool) -> bytes:
        out = b"".join([model.token_to_piece(int(t), special) for t in tokens])
        if tokens and tokens[0] == model.token_bos and out.startswith(b" "):
            return out[1:]  # SentencePiece's space prefix of the first word
        return out

    def reset(self) -> None:
        """Forgets the cached prompt (the KV cache)."""
        self._require_engine().reset()

    def save_state(self) -> bytes:
        """The context state (KV cache and cached tokens) as bytes."""
        return bytes(self._require_engine().save_state())

    def load_state(self, state: bytes) -> None:
        """Restores a state from :meth:`save_state` of a Llama with the same model and n_ctx."""
        self._require_engine().load_state(state)

    # ------------------------------------------------------------------ completion

    def _prompt_tokens(self, prompt: str | Sequence[int], suffix: str | None) -> list[int]:
        model = self._require_model()
        if suffix is not None:
            if not isinstance(prompt, str):
                raise InvalidParameterError("suffix needs a text prompt")
            pre, suf, mid = model.token_fim_pre, model.token_fim_suf, model.token_fim_mid
            if min(pre, suf, mid) < 0:
                raise InvalidParameterError(
                    "suffix (fill-in-the-middle) needs a model with FIM tokens; "
                    f"{os.path.basename(self.model_path)} has none"
                )
            bos = [model.token_bos] if model.add_bos and model.token_bos >= 0 else []
            return [
                *bos,
                pre,
                *model.tokenize(prompt, False, False),
                suf,
                *model.tokenize(suffix, False, False),
                mid,
            ]
        if isinstance(prompt, str):
            return list(model.tokenize(prompt, True, False))
        if isinstance(prompt, (bytes, bytearray)):
            return list(
                model.tokenize(bytes(prompt).decode("utf-8", errors="replace"), True, False)
            )
        tokens = list(prompt)
        for t in tokens:
            if isinstance(t, bool) or not isinstance(t, int):
                raise InvalidParameterError(f"prompt tokens must be ints, got {t!r}")
        return tokens

    @with_sampling()
    def sampling_params(
        self,
        *,
        grammar: str | None = None,
        grammar_path: str | os.PathLike[str] | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> _core.SamplingParams:
        """Builds the native sampler settings of one request (checked here, and natively at
        submit)."""
        sp = native_sampling(
            sampling, default_seed=self.seed, penalty_last_n=self.last_n_tokens_size
        )
        text = read_grammar(grammar, grammar_path)
        if text is not None:
            sp.grammar = text
        return sp

    @with_sampling()
    def create_completion(
        self,
        prompt: str | Sequence[int],
        suffix: str | None = None,
        max_tokens: int | None = 16,
        logprobs: int | None = None,
        echo: bool = False,
        stop: str | Sequence[str] | None = None,
        stream: bool = False,
        model: str | None = None,
        grammar: str | None = None,
        grammar_path: str | os.PathLike[str] | None = None,
        ignore_eos: bool = False,
        **sampling: Unpack[SamplingOptions],
    ) -> CompletionResponse | CompletionStream:
        """Generates text from a prompt (OpenAI ``text_completion`` shape).

        Args:
            prompt: Text, or token ids.
            suffix: Text after the gap, for fill-in-the-middle models.
            max_tokens: Tokens to generate at most; None or <= 0 generates until the context
                is full.
            logprobs: Return the log-probability of each token and of this many alternatives.
            echo: Put the prompt in front of the generated text.
            stop: Strings that end generation; they are not part of the output.
            stream: Return an iterator of ``text_completion`` chunks.
            model: Name reported in the response (defaults to the model path).
            grammar: A GBNF grammar the output must follow.
            grammar_path: A .gbnf file with the grammar.
            ignore_eos: Keep generating past end-of-generation tokens.
            **sampling: The sampling settings (listed below; :class:`SamplingOptions`).

        Raises:
            ContextWindowExceededError: The prompt does not fit in n_ctx.
            GrammarError: The grammar does not parse.
            InvalidParameterError: A value is out of range.
        """
        handle = self._start_completion(locals())
        return handle if stream else handle.response()

    def _start_completion(self, args: Mapping[str, Any]) -> CompletionStream:
        """Submits a completion (the arguments of :meth:`create_completion`); its handle."""
        engine = self._require_engine()
        tokens = self._prompt_tokens(args["prompt"], args["suffix"])
        sampling = self.sampling_params(
            grammar=args["grammar"], grammar_path=args["grammar_path"], **sampling_values(args)
        )
        logprobs = args["logprobs"]
        if logprobs is not None:
            check_int(logprobs, "logprobs", 0)
        echo = bool(args["echo"])
        request = engine.submit(
            tokens,
            sampling,
            max_tokens=max_tokens_limit(args["max_tokens"]),
            stop=stop_list(args["stop"]),
            logprobs=-1 if logprobs is None else logprobs,
            prompt_logprobs=echo and logprobs is not None,
            stream=bool(args["stream"]),
            ignore_eos=bool(args["ignore_eos"]),
        )
        meta = ResponseMeta(
            id=f"cmpl-{uuid.uuid4()}",
            created=int(time.time()),
            model=args["model"] or self.model_path,
            echo_text=self._echo_text(tokens) if echo else "",
            want_logprobs=logprobs is not None,
        )
        return CompletionStream(request, meta)

    def submit_completion(
        self, prompt: str | Sequence[int], *, stream: bool = False, **kwargs: Any
    ) -> CompletionStream:
        """Queues a completion and returns its handle at once, with the arguments of
        :meth:`create_completion`. Iterate it (``stream=True``), or call ``response()`` or
        ``await aresponse()``: a request that does not stream wakes its waiter only once, when
        it ends. Closing the handle cancels the request."""
        return self._start_completion(
            bind_call(self.create_completion, prompt, stream=stream, **kwargs)
        )

    async def acreate_completion(
        self, prompt: str | Sequence[int], *, stream: bool = False, **kwargs: Any
    ) -> CompletionResponse | CompletionStream:
        """:meth:`create_completion` for asyncio: the same keyword arguments, and it never blocks
        the event loop. With ``stream=True`` it returns the stream, to be consumed with
        ``async for``. Cancelling the awaiting task cancels the generation."""
        handle = self.submit_completion(prompt, stream=stream, **kwargs)
        return handle if stream else await handle.aresponse()

    def __call__(
        self, prompt: str | Sequence[int], *args: Any, **kwargs: Any
    ) -> CompletionResponse | CompletionStream:
        """Same as :meth:`create_completion`."""
        return self.create_completion(prompt, *args, **kwargs)

    def _echo_text(self, tokens: Sequence[int]) -> str:
        model = self._require_model()
        return bytes(model.detokenize(list(tokens), True, False)).decode("utf-8", errors="replace")


Llama.__doc__ = f"{(Llama.__doc__ or '').rstrip()}\n\n    Load keywords:\n{load_doc('        ')}"
