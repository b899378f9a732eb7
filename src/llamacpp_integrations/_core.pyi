"""
Native llama.cpp engine of llamacpp_integrations (private; use llamacpp_integrations.Llama)
"""

from collections.abc import Callable, Mapping, Sequence

def begin_exit() -> None:
    """
    Registered with atexit by the package: from now on, threads other than this one that come back from a blocking call wait for the process to end instead of re-entering Python (which CPython would end with pthread_exit, aborting the process).
    """

def set_log_level(min_level: int) -> None:
    """
    Forward llama.cpp log lines at or above min_level (1 debug, 2 info, 3 warn, 4 error) to the 'llamacpp_integrations' logger; 0 silences llama.cpp entirely (the default).
    """

def get_log_level() -> int:
    """The level set by set_log_level."""

class Model:
    """A loaded GGUF model (weights, vocabulary, metadata)."""

    @staticmethod
    def load(
        path: str,
        n_gpu_layers: int = 0,
        main_gpu: int = 0,
        tensor_split: Sequence[float] = [],
        use_mmap: bool = True,
        use_mlock: bool = False,
        vocab_only: bool = False,
        check_tensors: bool = False,
        lora: Sequence[tuple[str, float]] = [],
        progress: Callable[[float], bool | None] | None = None,
    ) -> Model:
        """
        Loads a GGUF file. progress(fraction) may return False to cancel; its exceptions propagate.
        """

    @property
    def n_vocab(self) -> int: ...
    @property
    def token_bos(self) -> int: ...
    @property
    def token_eos(self) -> int: ...
    @property
    def token_eot(self) -> int: ...
    @property
    def token_nl(self) -> int: ...
    @property
    def token_fim_pre(self) -> int: ...
    @property
    def token_fim_suf(self) -> int: ...
    @property
    def token_fim_mid(self) -> int: ...
    @property
    def add_bos(self) -> bool: ...
    @property
    def add_eos(self) -> bool: ...
    def is_eog(self, token: int) -> bool: ...
    def is_control(self, token: int) -> bool: ...
    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        """UTF-8 text to token ids."""

    def detokenize(
        self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False
    ) -> bytes:
        """Token ids to bytes (a prefix may end inside a UTF-8 character)."""

    def token_to_piece(self, token: int, special: bool = False) -> bytes: ...
    @property
    def description(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def n_ctx_train(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def size(self) -> int:
        """Size of the weights in bytes."""

    @property
    def n_params(self) -> int: ...
    @property
    def has_encoder(self) -> bool: ...
    @property
    def has_decoder(self) -> bool: ...
    @property
    def is_recurrent(self) -> bool: ...
    @property
    def vocab_only(self) -> bool: ...
    @property
    def path(self) -> str: ...
    def metadata(self) -> dict[str, str]:
        """The GGUF key/value pairs, values as strings."""

    def vocab_mismatch(self, other: Model) -> str:
        """
        Why other cannot draft for this model (a differing tokenizer type, size, token text, BOS or EOS), or '' when its vocabulary matches.
        """

    def chat_template(self, name: str = "") -> str:
        """
        The GGUF's chat template (a named one if name is given); '' when there is none.
        """

def system_info() -> str:
    """llama.cpp's system info line (CPU features, BLAS, backends)."""

def backend_names() -> list[str]:
    """Names of the registered ggml backends."""

def supports_gpu_offload() -> bool: ...
def supports_mmap() -> bool: ...
def supports_mlock() -> bool: ...
def ggml_type_from_name(name: str) -> int:
    """
    The ggml_type id of a type name such as 'f16' or 'q8_0'; -1 if unknown.
    """

class Projector:
    """A vision projector (mmproj GGUF) for a model: images in chat messages."""

    @staticmethod
    def load(
        model: Model,
        path: str,
        *,
        n_threads: int = -1,
        use_gpu: bool = True,
        max_pixels: int = 50000000,
    ) -> Projector:
        """
        Loads the projector for model; raises ModelLoadError naming the cause (missing file, not a projector, an embedding width other than the model's).
        """

    @property
    def path(self) -> str: ...
    @property
    def max_pixels(self) -> int: ...
    @property
    def supports_vision(self) -> bool: ...

class SamplingParams:
    """Sampler chain settings of one request."""

    def __init__(self) -> None: ...
    @property
    def temperature(self) -> float: ...
    @temperature.setter
    def temperature(self, arg: float, /) -> None: ...
    @property
    def top_k(self) -> int: ...
    @top_k.setter
    def top_k(self, arg: int, /) -> None: ...
    @property
    def top_p(self) -> float: ...
    @top_p.setter
    def top_p(self, arg: float, /) -> None: ...
    @property
    def min_p(self) -> float: ...
    @min_p.setter
    def min_p(self, arg: float, /) -> None: ...
    @property
    def typical_p(self) -> float: ...
    @typical_p.setter
    def typical_p(self, arg: float, /) -> None: ...
    @property
    def top_n_sigma(self) -> float: ...
    @top_n_sigma.setter
    def top_n_sigma(self, arg: float, /) -> None: ...
    @property
    def repeat_penalty(self) -> float: ...
    @repeat_penalty.setter
    def repeat_penalty(self, arg: float, /) -> None: ...
    @property
    def frequency_penalty(self) -> float: ...
    @frequency_penalty.setter
    def frequency_penalty(self, arg: float, /) -> None: ...
    @property
    def presence_penalty(self) -> float: ...
    @presence_penalty.setter
    def presence_penalty(self, arg: float, /) -> None: ...
    @property
    def penalty_last_n(self) -> int: ...
    @penalty_last_n.setter
    def penalty_last_n(self, arg: int, /) -> None: ...
    @property
    def mirostat_mode(self) -> int: ...
    @mirostat_mode.setter
    def mirostat_mode(self, arg: int, /) -> None: ...
    @property
    def mirostat_tau(self) -> float: ...
    @mirostat_tau.setter
    def mirostat_tau(self, arg: float, /) -> None: ...
    @property
    def mirostat_eta(self) -> float: ...
    @mirostat_eta.setter
    def mirostat_eta(self, arg: float, /) -> None: ...
    @property
    def dry_multiplier(self) -> float: ...
    @dry_multiplier.setter
    def dry_multiplier(self, arg: float, /) -> None: ...
    @property
    def dry_base(self) -> float: ...
    @dry_base.setter
    def dry_base(self, arg: float, /) -> None: ...
    @property
    def dry_allowed_length(self) -> int: ...
    @dry_allowed_length.setter
    def dry_allowed_length(self, arg: int, /) -> None: ...
    @property
    def dry_penalty_last_n(self) -> int: ...
    @dry_penalty_last_n.setter
    def dry_penalty_last_n(self, arg: int, /) -> None: ...
    @property
    def seed(self) -> int: ...
    @seed.setter
    def seed(self, arg: int, /) -> None: ...
    @property
    def logit_bias(self) -> list[tuple[int, float]]: ...
    @logit_bias.setter
    def logit_bias(self, arg: Sequence[tuple[int, float]], /) -> None: ...
    @property
    def grammar(self) -> str: ...
    @grammar.setter
    def grammar(self, arg: str, /) -> None: ...
    @property
    def grammar_lazy(self) -> bool: ...
    @grammar_lazy.setter
    def grammar_lazy(self, arg: bool, /) -> None: ...
    @property
    def grammar_trigger_words(self) -> list[str]: ...
    @grammar_trigger_words.setter
    def grammar_trigger_words(self, arg: Sequence[str], /) -> None: ...
    @property
    def grammar_trigger_patterns(self) -> list[str]: ...
    @grammar_trigger_patterns.setter
    def grammar_trigger_patterns(self, arg: Sequence[str], /) -> None: ...
    @property
    def grammar_trigger_patterns_full(self) -> list[str]: ...
    @grammar_trigger_patterns_full.setter
    def grammar_trigger_patterns_full(self, arg: Sequence[str], /) -> None: ...
    @property
    def grammar_trigger_tokens(self) -> list[int]: ...
    @grammar_trigger_tokens.setter
    def grammar_trigger_tokens(self, arg: Sequence[int], /) -> None: ...
    @property
    def preserved_tokens(self) -> list[int]: ...
    @preserved_tokens.setter
    def preserved_tokens(self, arg: Sequence[int], /) -> None: ...
    @property
    def generation_prompt(self) -> str: ...
    @generation_prompt.setter
    def generation_prompt(self, arg: str, /) -> None: ...
    @property
    def grammar_is_output_format(self) -> bool: ...
    @grammar_is_output_format.setter
    def grammar_is_output_format(self, arg: bool, /) -> None: ...

class TopLogprob:
    @property
    def token(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def logprob(self) -> float: ...

class TokenLogprob:
    @property
    def token(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def logprob(self) -> float: ...
    @property
    def offset(self) -> int:
        """Byte offset of the token's text in the completion."""

    @property
    def top(self) -> list[TopLogprob]:
        """The most likely tokens at this position, best first."""

class Timings:
    @property
    def prompt_ms(self) -> float: ...
    @property
    def eval_ms(self) -> float: ...
    @property
    def prompt_n(self) -> int: ...
    @property
    def eval_n(self) -> int: ...
    @property
    def decode_ms(self) -> float:
        """Part of eval_ms spent inside llama_decode."""

    @property
    def sample_ms(self) -> float:
        """Part of eval_ms spent in the sampler chain."""

    @property
    def draft_n(self) -> int:
        """Speculative decoding: drafted tokens verified."""

    @property
    def draft_accepted_n(self) -> int:
        """
        Speculative decoding: drafted tokens accepted (tokens that cost no decode of their own).
        """

    @property
    def image_n(self) -> int:
        """Image chunks encoded (not served from the cache)."""

    @property
    def image_encode_ms(self) -> float:
        """Part of prompt_ms spent in the vision encoder."""

class CompletionResult:
    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> str: ...
    @property
    def stop_word(self) -> str: ...
    @property
    def tokens(self) -> list[int]: ...
    @property
    def n_prompt(self) -> int: ...
    @property
    def n_cached(self) -> int: ...
    @property
    def n_completion(self) -> int: ...
    @property
    def timings(self) -> Timings: ...
    @property
    def logprobs(self) -> list[TokenLogprob]: ...
    @property
    def prompt_logprobs(self) -> list[TokenLogprob]: ...
    @property
    def message(self) -> ChatMessage | None:
        """Chat requests: the parsed reply (None otherwise)."""

class StreamEvent:
    @property
    def text(self) -> str: ...
    @property
    def logprobs(self) -> list[TokenLogprob]: ...
    @property
    def deltas(self) -> list[ChatDelta]:
        """Chat requests: the changes to the message."""

class Request:
    """A submitted completion: wait on it, read its events, cancel it."""

    def wait(self, timeout: float = -1.0) -> bool:
        """
        Blocks (without the GIL) until an event or the end is available, at most timeout seconds (< 0: no limit). Returns whether something is available.
        """

    @property
    def ready(self) -> bool:
        """
        Whether an event or the end is available now (never blocks, keeps the GIL).
        """

    def next_event(self) -> StreamEvent | None:
        """The next streamed event, or None."""

    @property
    def done(self) -> bool:
        """True once finished and every event was read."""

    def result(self) -> CompletionResult:
        """
        The final result (blocks until finished); raises the error the request failed with.
        """

    def cancel(self) -> None:
        """Stops the request within one token (or one graph node)."""

    @property
    def cancelled(self) -> bool: ...
    @property
    def wakeups(self) -> int:
        """
        How many times the engine woke this request's waiter (streamed events plus the end).
        """

    def set_notify_fd(self, fd: int) -> None:
        """
        Writes a byte to fd (a non-blocking pipe) on every event and at the end, so an event loop can wait without a thread; -1 stops it. POSIX only.
        """

class Engine:
    """A llama context with its KV slots and decode worker."""

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_seq_max: int = 1,
        n_threads: int = -1,
        n_threads_batch: int = -1,
        flash_attn: int = -1,
        type_k: int = -1,
        type_v: int = -1,
        embeddings: bool = False,
        offload_kqv: bool = True,
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        kv_unified: bool = False,
        speculative: str = "none",
        draft_model: Model | None = None,
        draft_max: int = 16,
        draft_min: int = 0,
        ngram_size: int = 3,
        ngram_min_hits: int = 1,
        draft_always: bool = False,
        vision: Projector | None = None,
    ) -> None:
        """
        speculative: none, an n-gram kind (ngram, ngram-simple, ngram-map-k, ngram-map-k4v, ngram-mod, ngram-cache) or draft (with draft_model, a model sharing this one's vocabulary); draft_max and draft_min bound each draft; ngram_size is the n-gram length looked up, ngram_min_hits how often a key must occur (map kinds); draft_always verifies every draft instead of those worth their cost.
        """

    def submit(
        self,
        prompt: Sequence[int],
        sampling: SamplingParams,
        *,
        max_tokens: int = 16,
        stop: Sequence[str] = [],
        logprobs: int = -1,
        prompt_logprobs: bool = False,
        stream: bool = False,
        ignore_eos: bool = False,
        speculative: bool = True,
        debug_fail_at: int = -1,
    ) -> Request:
        """
        Validates and queues a completion; raises before queuing when something is wrong. debug_fail_at (tests only): the sampler throws after that many tokens.
        """

    def submit_chat(
        self,
        templates: ChatTemplates,
        messages_json: str,
        sampling: SamplingParams,
        *,
        tools_json: str = "",
        tool_choice: str = "auto",
        parallel_tool_calls: bool = True,
        json_schema: str = "",
        json_object: bool = False,
        grammar: str = "",
        enable_thinking: bool = True,
        parse_reasoning: bool = True,
        template_kwargs: Mapping[str, str] = {},
        max_tokens: int = 16,
        stop: Sequence[str] = [],
        logprobs: int = -1,
        stream: bool = False,
        ignore_eos: bool = False,
        speculative: bool = True,
        debug_fail_at: int = -1,
        images: Sequence[bytes] = [],
    ) -> Request:
        """
        Renders, tokenizes and queues a chat request whole; the result carries the parsed message and, when streaming, each event the deltas of the message. Raises before queuing when something is wrong.
        """

    def chat_tokens(
        self,
        templates: ChatTemplates,
        messages_json: str,
        *,
        tools_json: str = "",
        images: Sequence[bytes] = [],
    ) -> list[int]:
        """
        The prompt tokens a chat request renders to, images included (each image position holds a negative placeholder id); nothing is queued.
        """

    def embed(self, inputs: Sequence[Sequence[int]], normalize: int = 2) -> list[list[float]]:
        """
        One embedding per input (token ids): the model's pooling, or the mean over the tokens. normalize: -1 none, 2 unit length.
        """

    @property
    def n_embed_max(self) -> int:
        """The most tokens one embedding input may have."""

    def reset(self) -> None:
        """Forgets every cached token."""

    def save_state(self) -> bytes: ...
    def load_state(self, data: bytes) -> None: ...
    def cached_tokens(self, slot: int = 0) -> list[int]: ...
    def kv_used(self) -> int:
        """KV cells in use by the slots, from llama.cpp's memory state."""

    def close(self) -> None:
        """Stops the worker; pending requests fail with EngineClosedError."""

    @property
    def closed(self) -> bool: ...
    @property
    def model(self) -> Model: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_ctx_seq(self) -> int: ...
    @property
    def n_batch(self) -> int: ...
    @property
    def n_seq_max(self) -> int: ...
    @property
    def kv_unified(self) -> bool: ...
    @property
    def speculative(self) -> str: ...
    @property
    def vision(self) -> Projector:
        """The vision projector given at creation, or None."""

    @property
    def draft_max(self) -> int: ...
    @property
    def decode_costs(self) -> list[tuple[int, float]]:
        """
        Speculative decoding's cost policy: (rows, ms) of the decodes it measured when the engine started, one row up to draft_max + 1 rows (empty without the policy).
        """

    def decode_time(self, rows: int) -> float:
        """
        The cost policy's expected time (ms) of a decode of this many rows: decode_costs interpolated (0 without the policy).
        """

    @property
    def n_threads(self) -> int: ...
    @property
    def n_threads_batch(self) -> int: ...

def compute_count() -> int:
    """
    How many graph computations have run on the process-wide compute thread.
    """

def compute_stats() -> dict[str, int]:
    """
    The compute thread's thread policy: computations run, the current level (threads that were not set explicitly are divided by 2**level while the cores are contended), and how often it halved the threads, tried more again, and kept them.
    """

class ChatToolCall:
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> str:
        """The arguments as JSON text."""

class ChatMessage:
    """A parsed assistant reply."""

    @property
    def content(self) -> str: ...
    @property
    def reasoning_content(self) -> str: ...
    @property
    def tool_calls(self) -> list[ChatToolCall]: ...

class ChatDelta:
    """One streamed change to the reply."""

    @property
    def content(self) -> str: ...
    @property
    def reasoning_content(self) -> str: ...
    @property
    def tool_index(self) -> int:
        """-1 unless the delta belongs to a tool call."""

    @property
    def tool_id(self) -> str: ...
    @property
    def tool_name(self) -> str: ...
    @property
    def tool_arguments(self) -> str: ...

class ChatStream:
    """Turns the growing text of a reply into deltas."""

    def update(self, text: str, is_partial: bool) -> list[ChatDelta]:
        """
        text is everything generated so far; returns what changed since the last call.
        """

    @property
    def message(self) -> ChatMessage: ...

class ChatPrompt:
    """A rendered chat prompt with its grammar and parser."""

    @property
    def prompt(self) -> str: ...
    @property
    def tokens(self) -> list[int]:
        """The prompt tokenized (BOS once)."""

    @property
    def stops(self) -> list[str]: ...
    @property
    def format(self) -> str:
        """llama.cpp's format name, or 'generic'."""

    @property
    def generic_tools(self) -> bool: ...
    @property
    def has_tools(self) -> bool: ...
    @property
    def grammar(self) -> str: ...
    @property
    def grammar_lazy(self) -> bool: ...
    @property
    def tool_choice_forced(self) -> bool: ...
    def configure(self, model: Model, sampling: SamplingParams) -> None:
        """
        Puts the grammar, its triggers and preserved tokens into the sampling settings.
        """

    def parse(self, text: str, is_partial: bool = False) -> ChatMessage: ...
    def stream(self) -> ChatStream:
        """A fresh ChatStream for this prompt."""

class ChatTemplates:
    """The model's chat template (or an override)."""

    def __init__(self, model: Model, template: str = "") -> None: ...
    def apply(
        self,
        messages_json: str,
        *,
        tools_json: str = "",
        tool_choice: str = "auto",
        parallel_tool_calls: bool = True,
        json_schema: str = "",
        json_object: bool = False,
        grammar: str = "",
        add_generation_prompt: bool = True,
        enable_thinking: bool = True,
        parse_reasoning: bool = True,
        template_kwargs: Mapping[str, str] = {},
    ) -> ChatPrompt:
        """
        Renders OpenAI-shaped messages (JSON text) with the template; tools and response_format choose the grammar and the parser.
        """

    @property
    def source(self) -> str: ...
    @property
    def uses_jinja(self) -> bool: ...
    @property
    def fallback(self) -> str:
        """
        The built-in format chosen because the GGUF has no template ('' if it has one).
        """

    @property
    def native_tool_calls(self) -> bool:
        """
        The template expresses tool calls itself (otherwise the generic protocol is used).
        """

    def capabilities(self) -> dict[str, bool]: ...

def builtin_chat_formats() -> list[str]:
    """Names accepted as chat_format."""

def trial_render_size() -> dict[str, int]:
    """
    The size of the conversation every chat template renders once, under limits, before its first use: a request larger in any measure renders first in a child process under the same limits.
    """

def schema_to_grammar(schema_json: str) -> str:
    """llama.cpp's JSON schema to GBNF converter; raises GrammarError."""
