"""The sampling settings of one request, defined once.

:class:`SamplingOptions` names each setting with its type, its meaning and its valid range.
Everything else is built from it: the keywords of ``Llama.create_completion`` and
``create_chat_completion`` (their signatures and docstrings), the fields of the LangChain
adapters and of the server's request bodies (pydantic models made from :func:`settings`), and the
check of LlamaIndex's ``generate_kwargs``. The defaults are the native engine's, read from the
C++ ``sampling_params`` struct. Adding a setting means a field of that struct, its binding, and a
line here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from inspect import Parameter
from typing import Annotated, Any, NamedTuple, TypedDict, TypeVar, get_args

from typing_extensions import Doc, get_type_hints

from . import _core
from .errors import InvalidParameterError

__all__ = [
    "SAMPLING_ARGS",
    "Range",
    "SamplingOptions",
    "Setting",
    "native_sampling",
    "settings",
    "with_sampling",
]


class Range(NamedTuple):
    """The valid values of a numeric setting (None: unbounded)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def check(self, name: str, value: float) -> None:
        if (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
        ):
            bounds = [
                f"{op} {bound:g}"
                for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le))
                if bound is not None
            ]
            raise InvalidParameterError(f"{name} must be {' and '.join(bounds)}, got {value!r}")


class SamplingOptions(TypedDict, total=False):
    """The sampling settings of one request (llama.cpp's sampler chain)."""

    temperature: Annotated[float, Doc("Sampling temperature; 0 is greedy."), Range(ge=0)]
    top_k: Annotated[int, Doc("Sample among the k most likely tokens; <= 0: all of them.")]
    top_p: Annotated[float, Doc("Nucleus sampling threshold."), Range(ge=0, le=1)]
    min_p: Annotated[
        float, Doc("Minimum probability relative to the best token."), Range(ge=0, le=1)
    ]
    typical_p: Annotated[
        float, Doc("Locally typical sampling threshold (1: off)."), Range(gt=0, le=1)
    ]
    top_n_sigma: Annotated[
        float,
        Doc("Keep tokens within this many standard deviations of the best logit (<= 0: off)."),
    ]
    repeat_penalty: Annotated[
        float,
        Doc(
            "Penalty on recently seen tokens (1: off; 1.1, langchain_community's default, also "
            "penalizes the quotes and braces JSON repeats and garbles tool calls)."
        ),
        Range(gt=0),
    ]
    frequency_penalty: Annotated[float, Doc("Penalty growing with how often a token appeared.")]
    presence_penalty: Annotated[float, Doc("Penalty for tokens that appeared at all.")]
    mirostat_mode: Annotated[int, Doc("0: off, 1: Mirostat, 2: Mirostat 2.0."), Range(ge=0, le=2)]
    mirostat_tau: Annotated[float, Doc("Mirostat's target entropy.")]
    mirostat_eta: Annotated[float, Doc("Mirostat's learning rate.")]
    dry_multiplier: Annotated[
        float,
        Doc(
            "DRY penalty on tokens that extend a sequence already seen (0: off); about 0.8 "
            "stops the loops small models fall into without penalizing JSON's punctuation."
        ),
        Range(ge=0),
    ]
    dry_base: Annotated[float, Doc("DRY penalty growth per repeated token."), Range(ge=1)]
    dry_allowed_length: Annotated[
        int, Doc("Repeats this long are not penalized by DRY."), Range(ge=0)
    ]
    dry_penalty_last_n: Annotated[int, Doc("Tokens DRY looks back over (-1: all)."), Range(ge=-1)]
    seed: Annotated[int | None, Doc("Sampling seed; None: the Llama's seed; -1: random.")]
    logit_bias: Annotated[
        Mapping[int, float] | None, Doc("Added to the logits of these token ids (-100 bans one).")
    ]


@dataclass(frozen=True)
class Setting:
    """One sampling setting, as :class:`SamplingOptions` declares it."""

    name: str
    type: Any
    doc: str
    range: Range
    default: Any


_SPECIAL = ("seed", "logit_bias")  # not plain fields of the native struct


@functools.cache
def settings() -> tuple[Setting, ...]:
    """Every setting in declaration order, with the native default."""
    native = _core.SamplingParams()
    out = []
    for name, hint in get_type_hints(SamplingOptions, include_extras=True).items():
        kind, *extras = get_args(hint)  # Annotated[type, Doc, Range]
        doc = next(e.documentation for e in extras if isinstance(e, Doc))
        bounds = next((e for e in extras if isinstance(e, Range)), Range())
        default = None if name in _SPECIAL else getattr(native, name)
        if isinstance(default, float):
            default = float(f"{default:.6g}")  # the C++ float 0.8f is 0.8
        out.append(Setting(name, kind, doc, bounds, default))
    return tuple(out)


SAMPLING_ARGS: tuple[str, ...] = tuple(SamplingOptions.__annotations__)
"""The sampling keywords, in declaration order."""


def native_sampling(
    values: Mapping[str, Any], *, default_seed: int, penalty_last_n: int
) -> _core.SamplingParams:
    """The native settings of one request: ``values`` over the defaults, checked.

    Raises:
        TypeError: A keyword that is no sampling setting.
        InvalidParameterError: A value out of its range, or of the wrong type.
    """
    unknown = set(values) - set(SAMPLING_ARGS)
    if unknown:
        raise TypeError(f"unexpected sampling keyword(s) {sorted(unknown)}")
    sp = _core.SamplingParams()
    sp.penalty_last_n = penalty_last_n
    for s in settings():
        value = values.get(s.name, s.default)
        if s.name in _SPECIAL or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidParameterError(f"{s.name} must be a number, got {value!r}")
        if s.type is int and value != int(value):
            raise InvalidParameterError(f"{s.name} must be an integer, got {value!r}")
        s.range.check(s.name, value)
        setattr(sp, s.name, s.type(value))
    seed = values.get("seed")
    chosen = default_seed if seed is None else int(seed)
    sp.seed = 0xFFFFFFFF if chosen < 0 else chosen & 0xFFFFFFFF
    bias = values.get("logit_bias")
    if bias:
        sp.logit_bias = [(int(k), float(v)) for k, v in bias.items()]
    return sp


F = TypeVar("F", bound=Callable[..., Any])


def with_sampling(defaults: Mapping[str, Any] | None = None) -> Callable[[F], F]:
    """Gives a method taking ``**sampling`` the sampling settings as keyword-only parameters
    (``inspect.signature``, ``help()``), with ``defaults`` over the native ones, and documents
    them at the end of its docstring."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        over = dict(defaults or {})
        for s in settings():
            default = over.get(s.name, s.default)
            params.append(
                inspect.Parameter(
                    s.name, Parameter.KEYWORD_ONLY, default=default, annotation=s.type
                )
            )
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        lines = [f"{s.name} (default {over.get(s.name, s.default)!r}): {s.doc}" for s in settings()]
        doc = (fn.__doc__ or "").rstrip()
        fn.__doc__ = f"{doc}\n\n        Sampling keywords:\n" + "".join(
            f"            {x}\n" for x in lines
        )
        return fn

    return decorate
