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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from typing_extensions import Unpack

from . import _core
from ._chat import ChatCompletionMixin, read_grammar
from ._completion import CompletionStream, ResponseMeta
from ._embedding import EmbeddingMixin
from ._images import MAX_IMAGE_BYTES, ImagePolicy
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

LLAMA_DEFAULT_SEED = 0xFFFFFFFF
"""The seed value meaning "a random seed" (as in llama.cpp and llama-cpp-python)."""

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
        n_gpu_layers: Layers to offload to the GPU; -1 offloads all (needs a CUDA/Metal build).
        main_gpu: The GPU used for the whole model when it is not split.
        tensor_split: How to split the model across GPUs (proportions, one per device).
        vocab_only: Load only the vocabulary (tokenize/detokenize; no generation).
        use_mmap: Memory-map the weights (fast loads, shared pages).
        use_mlock: Lock the weights in RAM.
        seed: Default sampling seed; ``LLAMA_DEFAULT_SEED`` (or -1) picks a random one per call.
        n_ctx: Context window of each conversation in tokens (each slot gets this many KV cells,
            see ``n_seq_max``); 0 uses the model's training context.
        n_batch: Maximum tokens per ``llama_decode`` call during prompt processing.
        n_ubatch: Physical batch size (at most n_batch).
        n_threads: Threads for generation; None uses the physical cores.
        n_threads_batch: Threads for prompt processing; None uses ``n_threads``.
        rope_freq_base: RoPE base frequency; 0 takes the model's.
        rope_freq_scale: RoPE frequency scale; 0 takes the model's.
        flash_attn: Flash attention on/off; None lets llama.cpp decide.
        type_k: KV cache type of K ('f16', 'q8_0', ... or a ggml type id); None: f16.
        type_v: KV cache type of V; None: f16.
        f16_kv: Kept for compatibility: False stores the KV cache as f32 unless type_k/type_v say
            otherwise.
        offload_kqv: Keep the KV cache on the GPU when layers are offloaded.
        embedding: Accepted for compatibility: every ``Llama`` can :meth:`embed`; True makes
            the context output embeddings by default.
        last_n_tokens_size: How many recent tokens the repetition penalties look at.
        lora_path: A LoRA adapter (GGUF) applied to the model.
        lora_scale: The adapter's scale.
        lora_base: Accepted for compatibility; GGUF adapters need no base model.
        n_seq_max: Requests served at once, each in its own slot with its own prompt cache; more
            wait in line. Each slot has a KV stream of its own with n_ctx cells, so the KV cache
            holds ``n_ctx * n_seq_max`` tokens, and a request attends only to its own cells
            (another slot's cached conversation costs it nothing). 8 slots reach llama-server's
            throughput at 8 concurrent requests (``benchmarks/bench_batching.py``). Decoded
            together, up to 4 sequences give bit-identical greedy output to decoding alone;
            with more, llama.cpp's wider matmul kernels can flip near-tied greedy choices.
        kv_unified: One pool of n_ctx KV cells shared by all slots instead of a stream per slot:
            less memory for many slots, and one request may use the whole pool, but every decode
            attends over all cached cells, and idle slots' caches are dropped (least recently
            used first) when the pool fills.
        speculative: Speculative decoding: each generating request drafts the tokens likely to
            come next, and one decode verifies the whole draft (the request's own sampler samples
            every position and keeps the draft while it agrees), so greedy output is unchanged
            and sampled output keeps its distribution. ``"ngram"`` drafts from n-grams of the
            request's own prompt and output (RAG answers quoting their context, extraction,
            edits, tool arguments repeating the user); llama.cpp's n-gram kinds by name
            (``"ngram-simple"``, ``"ngram-map-k"``, ``"ngram-map-k4v"``, ``"ngram-mod"``,
            ``"ngram-cache"``); ``"draft"`` with ``draft_model_path`` (the default when one is
            given). None (the default otherwise): off. A draft is verified only when its
            expected yield beats its cost, weighed with the cost of a decode of more rows
            measured when the engine starts: on a 2-core CPU a second row costs nearly a whole
            decode, so drafts pay only while a request copies long runs
            (``benchmarks/bench_speculative.py``); on a GPU rows are nearly free. Greedy output
            equals non-speculative output while the context holds fewer than 256 tokens; beyond,
            llama.cpp's CPU attention sums one-token and several-token decodes in different
            orders, so near-tied greedy choices can differ. ``timings`` report ``draft_n`` and
            ``draft_n_accepted``, ``usage`` the accepted and rejected prediction tokens.
        draft_model_path: A small GGUF sharing this model's vocabulary, used to draft (a
            different vocabulary raises ``InvalidParameterError``).
        draft_n_gpu_layers: The draft model's GPU layers; None: as ``n_gpu_layers``.
        draft_max: The longest draft, in tokens.
        draft_min: Drafts shorter than this are not verified.
        draft_ngram_size: n-gram kinds: how many tokens of the history must match before the
            tokens that followed them are drafted.
        draft_ngram_min_hits: ``"ngram-map-k"``/``"ngram-map-k4v"``: how often an n-gram must
            have occurred before it drafts.
        draft_always: Verify every draft the drafter proposes (as llama-server does) instead of
            only those whose expected yield beats their cost.
        mmproj_path: A vision projector GGUF (``mmproj``) made for this model: chat messages may
            then hold images as OpenAI ``image_url`` parts (llama.cpp's mtmd library does the
            image preprocessing and the vision encoder). A projector whose output width differs
            from the model's raises ``ModelLoadError``.
        allow_image_files: Image parts may name local files (paths or ``file://`` URLs).
        allow_image_urls: Image parts may be ``http(s)`` URLs, fetched when the request is
            made (off by default; ``data:`` URLs always work).
        max_image_bytes: The most bytes one image may have (data, file or fetched).
        max_image_pixels: The most pixels one image may have, checked on its header before it
            is decoded.
        chat_format: Name of a llama.cpp built-in chat template for chat completions.
        chat_template: A Jinja chat template overriding the GGUF's own.
        progress_callback: Called with the load progress in [0, 1]; return False to cancel.
        verbose: Forward llama.cpp's log to the ``llamacpp_integrations`` logger (printed to
            stderr when that logger has no handler). Silent otherwise.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_gpu_layers: int = 0,
        main_gpu: int = 0,
        tensor_split: Sequence[float] | None = None,
        vocab_only: bool = False,
        use_mmap: bool = True,
        use_mlock: bool = False,
        seed: int = LLAMA_DEFAULT_SEED,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        flash_attn: bool | None = None,
        type_k: int | str | None = None,
        type_v: int | str | None = None,
        f16_kv: bool = True,
        offload_kqv: bool = True,
        embedding: bool = False,
        last_n_tokens_size: int = 64,
        lora_path: str | os.PathLike[str] | None = None,
        lora_scale: float = 1.0,
        lora_base: str | os.PathLike[str] | None = None,
        n_seq_max: int = 8,
        kv_unified: bool = False,
        speculative: str | None = None,
        draft_model_path: str | os.PathLike[str] | None = None,
        draft_n_gpu_layers: int | None = None,
        draft_max: int = 16,
        draft_min: int = 0,
        draft_ngram_size: int = 3,
        draft_ngram_min_hits: int = 1,
        draft_always: bool = False,
        mmproj_path: str | os.PathLike[str] | None = None,
        allow_image_files: bool = True,
        allow_image_urls: bool = False,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_image_pixels: int = 50_000_000,
        chat_format: str | None = None,
        chat_template: str | None = None,
        progress_callback: Callable[[float], bool | None] | None = None,
        verbose: bool = False,
    ) -> None:
        self._closed = True  # until fully constructed: close() and __del__ must be safe
        if verbose:
            enable_verbose_logging()
        self.model_path = os.fspath(model_path)
        self.verbose = verbose
        self.chat_format = chat_format
        self.chat_template = chat_template
        self.lora_base = lora_base
        self.last_n_tokens_size = check_int(last_n_tokens_size, "last_n_tokens_size", -1)
        self.seed = int(seed)
        check_int(n_ctx, "n_ctx", 0)
        check_int(n_batch, "n_batch", 1)
        check_int(n_ubatch, "n_ubatch", 1)
        check_int(n_seq_max, "n_seq_max", 1)
        check_int(n_gpu_layers, "n_gpu_layers", -1)
        if n_threads is not None:
            check_int(n_threads, "n_threads", 1)
        if n_threads_batch is not None:
            check_int(n_threads_batch, "n_threads_batch", 1)
        if not f16_kv and type_k is None:
            type_k = "f32"
        if not f16_kv and type_v is None:
            type_v = "f32"
        type_k_id = kv_type(type_k, "type_k")
        type_v_id = kv_type(type_v, "type_v")
        self._model = load_model(
            self.model_path,
            n_gpu_layers=n_gpu_layers,
            main_gpu=main_gpu,
            tensor_split=tensor_split,
            use_mmap=use_mmap,
            use_mlock=use_mlock,
            vocab_only=vocab_only,
            lora_path=lora_path,
            lora_scale=lora_scale,
            progress_callback=progress_callback,
        )
        self._engine: _core.Engine | None = None
        self._image_policy = ImagePolicy(
            local_files=bool(allow_image_files),
            remote=bool(allow_image_urls),
            max_bytes=check_int(max_image_bytes, "max_image_bytes", 1),
        )
        self.mmproj_path = None if mmproj_path is None else os.fspath(mmproj_path)
        projector = None
        if self.mmproj_path is not None:
            if vocab_only:
                raise InvalidParameterError("mmproj_path needs the model's weights, not vocab_only")
            projector = _core.Projector.load(
                self._model,
                self.mmproj_path,
                n_threads=n_threads or -1,
                use_gpu=n_gpu_layers != 0,
                max_pixels=check_int(max_image_pixels, "max_image_pixels", 1),
            )
        if not vocab_only:
            spec = speculative_type(speculative, draft_model_path)
            draft_model = None
            if draft_model_path is not None:
                # the vocabulary first: a draft for another tokenizer fails before its weights load
                why = self._model.vocab_mismatch(load_model(draft_model_path, vocab_only=True))
                if why:
                    raise InvalidParameterError(
                        f"draft model {os.fspath(draft_model_path)!r} cannot draft for "
                        f"{self.model_path!r}: {why}; a draft model must share the model's "
                        "vocabulary"
                    )
                draft_model = load_model(
                    draft_model_path,
                    n_gpu_layers=n_gpu_layers if draft_n_gpu_layers is None else draft_n_gpu_layers,
                    main_gpu=main_gpu,
                    use_mmap=use_mmap,
                    use_mlock=use_mlock,
                )
            self._engine = _core.Engine(
                self._model,
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_ubatch=n_ubatch,
                n_seq_max=n_seq_max,
                n_threads=n_threads or -1,
                n_threads_batch=n_threads_batch or -1,
                flash_attn=-1 if flash_attn is None else int(bool(flash_attn)),
                type_k=type_k_id,
                type_v=type_v_id,
                embeddings=embedding,
                offload_kqv=offload_kqv,
                rope_freq_base=float(rope_freq_base),
                rope_freq_scale=float(rope_freq_scale),
                kv_unified=bool(kv_unified),
                speculative=spec,
                draft_model=draft_model,
                draft_max=check_int(draft_max, "draft_max", 1),
                draft_min=check_int(draft_min, "draft_min", 0),
                ngram_size=check_int(draft_ngram_size, "draft_ngram_size", 1),
                ngram_min_hits=check_int(draft_ngram_min_hits, "draft_ngram_min_hits", 1),
                draft_always=bool(draft_always),
                vision=projector,
            )
        self._n_ctx_requested = n_ctx
        self._chat_templates: _core.ChatTemplates | None = None
        if chat_format is not None and chat_template is not None:
            raise InvalidParameterError("pass chat_format or chat_template, not both")
        if chat_format is not None and chat_format not in _core.builtin_chat_formats():
            known = ", ".join(_core.builtin_chat_formats())
            raise InvalidParameterError(f"chat_format {chat_format!r} is not one of: {known}")
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
