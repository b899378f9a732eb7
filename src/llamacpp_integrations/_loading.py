"""The load settings of a :class:`~llamacpp_integrations.Llama`, defined once.

:class:`LoadOptions` names each constructor keyword with its type, its meaning, its default and
its valid values. Everything else is built from it: the keywords of ``Llama.__init__`` (its
signature, docstring and checks), the load fields of the LangChain adapters, the check of the
adapters' ``model_kwargs`` (LangChain and LlamaIndex), and the server's per-model config keys and
server-wide flags. Adding a load setting means its native part (if any), a line here, and using
the value in ``Llama.__init__``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from inspect import Parameter
from types import NoneType, UnionType
from typing import Annotated, Any, NamedTuple, TypedDict, TypeVar, Union, cast, get_args, get_origin

from typing_extensions import Doc, get_type_hints

from . import _core
from ._images import MAX_IMAGE_BYTES
from ._params import SPECULATIVE_TYPES, kv_type
from ._sampling import Range
from .errors import InvalidParameterError

__all__ = [
    "LLAMA_DEFAULT_SEED",
    "LOAD_ARGS",
    "Choices",
    "Default",
    "LoadOptions",
    "LoadSetting",
    "check_load",
    "check_load_names",
    "load_settings",
    "with_loading",
]

LLAMA_DEFAULT_SEED = 0xFFFFFFFF
"""The seed value meaning "a random seed" (as in llama.cpp and llama-cpp-python)."""


class Default(NamedTuple):
    """The value a load setting has when it is not given."""

    value: Any


class Choices(NamedTuple):
    """The valid values of a text setting: a tuple, or a function giving them (read when
    checked, e.g. from the native module)."""

    values: Sequence[str] | Callable[[], Sequence[str]]

    def allowed(self) -> tuple[str, ...]:
        values = self.values() if callable(self.values) else self.values
        return tuple(values)


def _chat_formats() -> Sequence[str]:
    return cast("Sequence[str]", _core.builtin_chat_formats())


PathArg = str | os.PathLike[str]
"""A file path: str or ``os.PathLike``."""

ProgressCallback = Callable[[float], bool | None]
"""Called with the load progress in [0, 1]; returns False to cancel."""


class LoadOptions(TypedDict, total=False):
    """The constructor keywords of :class:`~llamacpp_integrations.Llama` (llama-cpp-python's
    names): how the weights are loaded, and the context, slots and extras of its engine."""

    n_gpu_layers: Annotated[
        int,
        Doc("Layers to offload to the GPU; -1 offloads all (needs a CUDA/Metal build)."),
        Range(ge=-1),
        Default(0),
    ]
    main_gpu: Annotated[
        int, Doc("The GPU used for the whole model when it is not split."), Default(0)
    ]
    tensor_split: Annotated[
        Sequence[float] | None,
        Doc("How to split the model across GPUs (proportions, one per device)."),
        Default(None),
    ]
    vocab_only: Annotated[
        bool, Doc("Load only the vocabulary (tokenize/detokenize; no generation)."), Default(False)
    ]
    use_mmap: Annotated[
        bool, Doc("Memory-map the weights (fast loads, shared pages)."), Default(True)
    ]
    use_mlock: Annotated[bool, Doc("Lock the weights in RAM."), Default(False)]
    seed: Annotated[
        int,
        Doc("Default sampling seed; ``LLAMA_DEFAULT_SEED`` (or -1) picks a random one per call."),
        Default(LLAMA_DEFAULT_SEED),
    ]
    n_ctx: Annotated[
        int,
        Doc(
            "Context window of each conversation in tokens (each slot gets this many KV cells, "
            "see ``n_seq_max``); 0 uses the model's training context."
        ),
        Range(ge=0),
        Default(512),
    ]
    n_batch: Annotated[
        int,
        Doc("Maximum tokens per ``llama_decode`` call during prompt processing."),
        Range(ge=1),
        Default(512),
    ]
    n_ubatch: Annotated[
        int, Doc("Physical batch size (at most n_batch)."), Range(ge=1), Default(512)
    ]
    n_threads: Annotated[
        int | None,
        Doc("Threads for generation; None uses the physical cores."),
        Range(ge=1),
        Default(None),
    ]
    n_threads_batch: Annotated[
        int | None,
        Doc("Threads for prompt processing; None uses ``n_threads``."),
        Range(ge=1),
        Default(None),
    ]
    rope_freq_base: Annotated[
        float, Doc("RoPE base frequency; 0 takes the model's."), Range(ge=0), Default(0.0)
    ]
    rope_freq_scale: Annotated[
        float, Doc("RoPE frequency scale; 0 takes the model's."), Range(ge=0), Default(0.0)
    ]
    flash_attn: Annotated[
        bool | None, Doc("Flash attention on/off; None lets llama.cpp decide."), Default(None)
    ]
    type_k: Annotated[
        int | str | None,
        Doc("KV cache type of K ('f16', 'q8_0', ... or a ggml type id); None: f16."),
        Default(None),
    ]
    type_v: Annotated[int | str | None, Doc("KV cache type of V; None: f16."), Default(None)]
    f16_kv: Annotated[
        bool,
        Doc(
            "Kept for compatibility: False stores the KV cache as f32 unless type_k/type_v say "
            "otherwise."
        ),
        Default(True),
    ]
    offload_kqv: Annotated[
        bool, Doc("Keep the KV cache on the GPU when layers are offloaded."), Default(True)
    ]
    embedding: Annotated[
        bool,
        Doc(
            "Accepted for compatibility: every ``Llama`` can ``embed``; True makes the context "
            "output embeddings by default."
        ),
        Default(False),
    ]
    last_n_tokens_size: Annotated[
        int,
        Doc("How many recent tokens the repetition penalties look at."),
        Range(ge=-1),
        Default(64),
    ]
    lora_path: Annotated[
        PathArg | None, Doc("A LoRA adapter (GGUF) applied to the model."), Default(None)
    ]
    lora_scale: Annotated[float, Doc("The adapter's scale."), Default(1.0)]
    lora_base: Annotated[
        PathArg | None,
        Doc("Accepted for compatibility; GGUF adapters need no base model."),
        Default(None),
    ]
    n_seq_max: Annotated[
        int,
        Doc(
            "Requests served at once, each in its own slot with its own prompt cache; more "
            "wait in line. Each slot has a KV stream of its own with n_ctx cells, so the KV "
            "cache holds ``n_ctx * n_seq_max`` tokens, and a request attends only to its own "
            "cells (another slot's cached conversation costs it nothing). 8 slots reach "
            "llama-server's throughput at 8 concurrent requests "
            "(``benchmarks/bench_batching.py``). Decoded together, up to 4 sequences give "
            "bit-identical greedy output to decoding alone; with more, llama.cpp's wider matmul "
            "kernels can flip near-tied greedy choices."
        ),
        Range(ge=1),
        Default(8),
    ]
    kv_unified: Annotated[
        bool,
        Doc(
            "One pool of n_ctx KV cells shared by all slots instead of a stream per slot: less "
            "memory for many slots, and one request may use the whole pool, but every decode "
            "attends over all cached cells, and idle slots' caches are dropped (least recently "
            "used first) when the pool fills."
        ),
        Default(False),
    ]
    speculative: Annotated[
        str | None,
        Doc(
            "Speculative decoding: each generating request drafts the tokens likely to come "
            "next, and one decode verifies the whole draft (the request's own sampler samples "
            "every position and keeps the draft while it agrees), so greedy output is unchanged "
            'and sampled output keeps its distribution. ``"ngram"`` drafts what followed the place '
            "in the request's own prompt and output that agrees longest with its last tokens "
            "(RAG answers quoting their context, extraction, edits, tool arguments repeating "
            "the user); llama.cpp's n-gram kinds by name "
            '(``"ngram-simple"``, ``"ngram-map-k"``, ``"ngram-map-k4v"``, ``"ngram-mod"``, '
            '``"ngram-cache"``); ``"draft"`` with ``draft_model_path`` (the default when one '
            "is given). None (the default otherwise): off. A draft is verified only when its "
            "expected yield beats its cost, weighed with the cost of a decode of more rows "
            "measured when the engine starts: on a 2-core CPU a second row costs nearly a whole "
            "decode, so drafts pay only while a request copies long runs "
            "(``benchmarks/bench_speculative.py``); on a GPU rows are nearly free. Greedy output "
            "equals non-speculative output while the context holds fewer than 256 tokens; "
            "beyond, llama.cpp's CPU attention sums one-token and several-token decodes in "
            "different orders, so near-tied greedy choices can differ. ``timings`` report "
            "``draft_n`` and ``draft_n_accepted``, ``usage`` the accepted and rejected "
            "prediction tokens."
        ),
        Choices(SPECULATIVE_TYPES),
        Default(None),
    ]
    draft_model_path: Annotated[
        PathArg | None,
        Doc(
            "A small GGUF sharing this model's vocabulary, used to draft (a different "
            "vocabulary raises ``InvalidParameterError``)."
        ),
        Default(None),
    ]
    draft_n_gpu_layers: Annotated[
        int | None,
        Doc("The draft model's GPU layers; None: as ``n_gpu_layers``."),
        Range(ge=-1),
        Default(None),
    ]
    draft_max: Annotated[int, Doc("The longest draft, in tokens."), Range(ge=1), Default(16)]
    draft_min: Annotated[
        int, Doc("Drafts shorter than this are not verified."), Range(ge=0), Default(0)
    ]
    draft_ngram_size: Annotated[
        int,
        Doc(
            "n-gram kinds: how many tokens of the history must match before the tokens that "
            "followed them are drafted."
        ),
        Range(ge=1),
        Default(3),
    ]
    draft_ngram_min_hits: Annotated[
        int,
        Doc(
            '``"ngram-map-k"``/``"ngram-map-k4v"``: how often an n-gram must have occurred '
            "before it drafts."
        ),
        Range(ge=1),
        Default(1),
    ]
    draft_always: Annotated[
        bool,
        Doc(
            "Verify every draft the drafter proposes (as llama-server does) instead of only "
            "those whose expected yield beats their cost."
        ),
        Default(False),
    ]
    mmproj_path: Annotated[
        PathArg | None,
        Doc(
            "A vision projector GGUF (``mmproj``) made for this model: chat messages may then "
            "hold images as OpenAI ``image_url`` parts (llama.cpp's mtmd library does the image "
            "preprocessing and the vision encoder). A projector whose output width differs from "
            "the model's raises ``ModelLoadError``."
        ),
        Default(None),
    ]
    allow_image_files: Annotated[
        bool,
        Doc("Image parts may name local files (paths or ``file://`` URLs)."),
        Default(True),
    ]
    allow_image_urls: Annotated[
        bool,
        Doc(
            "Image parts may be ``http(s)`` URLs, fetched when the request is made (off by "
            "default; ``data:`` URLs always work)."
        ),
        Default(False),
    ]
    max_image_bytes: Annotated[
        int,
        Doc("The most bytes one image may have (data, file or fetched)."),
        Range(ge=1),
        Default(MAX_IMAGE_BYTES),
    ]
    max_image_pixels: Annotated[
        int,
        Doc("The most pixels one image may have, checked on its header before it is decoded."),
        Range(ge=1),
        Default(50_000_000),
    ]
    chat_format: Annotated[
        str | None,
        Doc("Name of a llama.cpp built-in chat template for chat completions."),
        Choices(_chat_formats),
        Default(None),
    ]
    chat_template: Annotated[
        str | None, Doc("A Jinja chat template overriding the GGUF's own."), Default(None)
    ]
    progress_callback: Annotated[
        ProgressCallback | None,
        Doc("Called with the load progress in [0, 1]; return False to cancel."),
        Default(None),
    ]
    verbose: Annotated[
        bool,
        Doc(
            "Forward llama.cpp's log to the ``llamacpp_integrations`` logger (printed to stderr "
            "when that logger has no handler). Silent otherwise."
        ),
        Default(False),
    ]


def _kind(hint: Any) -> tuple[str, bool]:
    """What a setting's type asks of a value (``int``, ``float``, ``bool``, ``str``, ``path``,
    ``ggml_type``, ``floats``, ``callable``), and whether None is allowed."""
    args = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    optional = NoneType in args
    rest = [a for a in args if a is not NoneType]
    plain = {get_origin(a) or a for a in rest}
    if plain == {int}:
        return "int", optional
    if plain == {float}:
        return "float", optional
    if plain == {bool}:
        return "bool", optional
    if plain == {str}:
        return "str", optional
    if plain == {str, os.PathLike}:
        return "path", optional
    if plain == {int, str}:
        return "ggml_type", optional
    if plain == {Sequence}:
        return "floats", optional
    if plain == {Callable}:
        return "callable", optional
    raise TypeError(f"LoadOptions: no check for the type {hint!r}")


_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "True or False",
    "str": "a string",
    "path": "a path (str or os.PathLike)",
    "ggml_type": "a ggml type name such as 'f16' or 'q8_0', or its id",
    "floats": "a sequence of numbers",
    "callable": "callable",
}


@dataclass(frozen=True)
class LoadSetting:
    """One load setting, as :class:`LoadOptions` declares it."""

    name: str
    type: Any
    doc: str
    range: Range
    default: Any
    choices: Choices | None
    kind: str
    optional: bool

    def check(self, value: Any) -> Any:
        """``value`` if it is valid for this setting.

        Raises:
            InvalidParameterError: The wrong type, out of range, or not one of the choices.
        """
        if value is None:
            if self.optional:
                return None
            raise InvalidParameterError(f"{self.name} must be {self.expected()}, got None")
        if not self._type_ok(value):
            raise InvalidParameterError(f"{self.name} must be {self.expected()}, got {value!r}")
        if self.kind in ("int", "float"):
            self.range.check(self.name, value)
        elif self.kind == "ggml_type":
            kv_type(value, self.name)  # a name that is no ggml type raises, naming the known ones
        if self.choices is not None:
            allowed = self.choices.allowed()
            if value not in allowed:
                known = ", ".join(repr(c) for c in allowed)
                none = "None or " if self.optional else ""
                raise InvalidParameterError(
                    f"{self.name} must be {none}one of {known}, got {value!r}"
                )
        return value

    def expected(self) -> str:
        text = _EXPECTED[self.kind]
        return f"{text} or None" if self.optional else text

    def _type_ok(self, value: Any) -> bool:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind == "float":
            return number
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "path":
            return isinstance(value, (str, os.PathLike))
        if self.kind == "ggml_type":
            return isinstance(value, (int, str)) and not isinstance(value, bool)
        if self.kind == "floats":
            return not isinstance(value, (str, bytes)) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool)
                for x in (value if isinstance(value, Sequence) else [value])
            )
        return callable(value)


@functools.cache
def load_settings() -> tuple[LoadSetting, ...]:
    """Every load setting in declaration order."""
    out = []
    for name, hint in get_type_hints(LoadOptions, include_extras=True).items():
        kind_type, *extras = get_args(hint)  # Annotated[type, Doc, Range?, Choices?, Default]
        doc = next(e.documentation for e in extras if isinstance(e, Doc))
        bounds = next((e for e in extras if isinstance(e, Range)), Range())
        choices = next((e for e in extras if isinstance(e, Choices)), None)
        default = next(e for e in extras if isinstance(e, Default)).value
        kind, optional = _kind(kind_type)
        out.append(LoadSetting(name, kind_type, doc, bounds, default, choices, kind, optional))
    return tuple(out)


LOAD_ARGS: tuple[str, ...] = tuple(LoadOptions.__annotations__)
"""The load keywords, in declaration order."""


def check_load_names(names: Collection[str], where: str = "Llama") -> None:
    """Raises ``TypeError`` naming every one of ``names`` that is no load setting, with the
    closest known names (a typo such as ``n_gpu_layer`` fails, never silently ignored)."""
    unknown = [n for n in names if n not in LOAD_ARGS]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), LOAD_ARGS, n=1)
        if close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise TypeError(
        f"{where}: unknown load argument(s) {sorted(map(str, unknown))}{hint}; the load "
        "arguments are llamacpp_integrations.LoadOptions' keys"
    )


def check_load(values: Mapping[str, Any], where: str = "Llama") -> LoadOptions:
    """``values`` over the defaults, every one checked against its definition.

    Raises:
        TypeError: A name that is no load setting (named, with the closest known one).
        InvalidParameterError: A value of the wrong type, out of its range or not one of its
            choices.
    """
    check_load_names(values, where)
    out: dict[str, Any] = {}
    for s in load_settings():
        out[s.name] = s.check(values[s.name]) if s.name in values else s.default
    return cast("LoadOptions", out)


F = TypeVar("F", bound=Callable[..., Any])


def load_doc(indent: str = "        ") -> str:
    """The load keywords, one ``name (default ...): doc`` line each, for a docstring."""
    return "".join(f"{indent}{s.name} (default {s.default!r}): {s.doc}\n" for s in load_settings())


def with_loading() -> Callable[[F], F]:
    """Gives a constructor taking ``**options`` the load settings as keyword-only parameters
    (``inspect.signature``, ``help()``) with their defaults, and documents them at the end of its
    docstring."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        for s in load_settings():
            params.append(
                inspect.Parameter(
                    s.name, Parameter.KEYWORD_ONLY, default=s.default, annotation=s.type
                )
            )
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        doc = (fn.__doc__ or "").rstrip()
        fn.__doc__ = f"{doc}\n\n        Load keywords:\n" + load_doc("            ")
        return fn

    return decorate
