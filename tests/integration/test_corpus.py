"""A corpus of bad inputs, each run in a worker process that is restarted when a case kills it.

Every case must either succeed (the input is legal) or raise a documented error: a
``LlamaError`` subclass, ``TypeError`` or ``ValueError``. It must do so within a time limit, and
the engine must answer a one-token completion afterwards. A crash, a hang, another exception
type or an engine that stops serving fails the test, which names the case.
"""

from __future__ import annotations

import base64
import json
import os
import random
import selectors
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_source import engine_models_dir

pytestmark = pytest.mark.integration

ALLOWED = {
    "LlamaError", "ModelLoadError", "GrammarError", "InvalidParameterError",
    "ContextWindowExceededError", "KVCacheFullError", "DecodeError",
    "TypeError", "ValueError", "ValidationError",
}  # fmt: skip
# generous: a slow machine must never fail a legal case; tests/sanitize.sh scales it (a sanitized
# build runs several times slower)
CASE_TIMEOUT_S = 60 * float(os.environ.get("LLAMACPP_TEST_TIME_SCALE", "1"))
WORKER = Path(__file__).resolve().parents[1] / "corpus_worker.py"
MARK = "@@corpus@@ "

Case = tuple[str, str, dict[str, Any]]  # (id, kind, args)


# ------------------------------------------------------------------ the cases


def gguf_cases(tmp: Path, model_path: str) -> list[Case]:
    """Truncated and bit-flipped GGUF files, and hand-made headers with absurd counts, versions
    and types: llama.cpp's vocabulary test files (vocabulary only) and the default model's
    first megabytes (header, metadata and tensor table, loaded whole)."""
    rng = random.Random(1234)
    cases: list[Case] = []
    sources = [
        ("spm", (engine_models_dir() / "ggml-vocab-llama-spm.gguf").read_bytes(), True),
        ("bpe", (engine_models_dir() / "ggml-vocab-gpt-2.gguf").read_bytes(), True),
    ]
    with open(model_path, "rb") as f:
        sources.append(("model", f.read(3 << 20), False))  # the first 3 MiB: a truncation
    for name, data, vocab_only in sources:
        cuts = sorted({0, 3, 4, 7, 8, 15, 16, 23, 24, 30, 40, 64, 100, 1000, 4096}
                      | {rng.randrange(len(data)) for _ in range(15)})  # fmt: skip
        for cut in cuts:
            p = tmp / f"{name}-cut{cut}.gguf"
            p.write_bytes(data[:cut])
            cases.append(
                (
                    f"gguf-{name}-truncated-at-{cut}",
                    "gguf",
                    {"path": str(p), "vocab_only": vocab_only},
                )
            )
        if not vocab_only:
            continue
        for i in range(25):
            b = bytearray(data)
            at = rng.randrange(min(len(b), 65536))
            b[at] ^= 1 << rng.randrange(8)
            p = tmp / f"{name}-flip{i}.gguf"
            p.write_bytes(bytes(b))
            cases.append(
                (f"gguf-{name}-bitflip-{at}", "gguf", {"path": str(p), "vocab_only": True})
            )
    spm = sources[0][1]
    headers = {
        "wrong-magic": b"GGML" + spm[4:],
        "version-0": spm[:4] + struct.pack("<I", 0) + spm[8:],
        "version-99": spm[:4] + struct.pack("<I", 99) + spm[8:],
        "tensor-count-2^62": spm[:8] + struct.pack("<Q", 1 << 62) + spm[16:],
        "kv-count-2^62": spm[:16] + struct.pack("<Q", 1 << 62) + spm[24:],
        "kv-count-0": spm[:16] + struct.pack("<Q", 0) + spm[24:],
        "first-key-length-2^62": spm[:24] + struct.pack("<Q", 1 << 62) + spm[32:],
        "first-key-length-0": spm[:24] + struct.pack("<Q", 0) + spm[32:],
        "header-only": spm[:24],
    }
    # the first value's type (after the first key) set to each invalid type id
    key_len = struct.unpack_from("<Q", spm, 24)[0]
    type_at = 32 + key_len
    for t in (13, 99, 0xFFFFFFFF):
        headers[f"first-value-type-{t}"] = spm[:type_at] + struct.pack("<I", t) + spm[type_at + 4 :]
    for name, data in headers.items():
        p = tmp / f"hand-{name}.gguf"
        p.write_bytes(data)
        cases.append((f"gguf-{name}", "gguf", {"path": str(p), "vocab_only": True}))
    return cases


GRAMMARS = {
    "empty": "",
    "no-root": 'a ::= "x"',
    "reversed-bounds": 'root ::= "a"{3,1}',
    "huge-repetition": 'root ::= "a"{0,1000000000}',
    "huge-exact-repetition": 'root ::= "a"{99999999}',
    "deep-nesting": "root ::= " + "(" * 150 + '"a"' + ")" * 150,
    "too-deep-nesting": "root ::= " + "(" * 100000 + '"a"' + ")" * 100000,  # was SIGSEGV
    "unbalanced": 'root ::= ("a"',
    "left-recursion": 'root ::= root "a" | "a"',
    "mutual-recursion-only": "root ::= a\na ::= b\nb ::= a",
    "empty-rule": "root ::= ",
    "undefined-rule": "root ::= missing",
    "nul-byte": 'root ::= "a\x00b"',
    "invalid-escape": 'root ::= "\\q"',
    "bad-hex-escape": 'root ::= "\\xZZ"',
    "invalid-utf8-range": "root ::= [\\uD800-\\uDFFF]",
    "reversed-char-range": "root ::= [z-a]",
    "unterminated-string": 'root ::= "abc',
    "unterminated-class": "root ::= [abc",
    "only-empty-string": 'root ::= ""',
    "never-a-token": 'root ::= "\\x01\\x02\\x03"',
    "huge-alternation": "root ::= " + " | ".join(f'"w{i}"' for i in range(3000)),
    "long-literal": 'root ::= "' + "a" * 20000 + '"',
    "star-of-empty": 'root ::= ("")*',
    "nested-star": 'root ::= (("a")*)*',
    "dup-rule": 'root ::= "a"\nroot ::= "b"',
    "rule-named-like-keyword": "root ::= ws\nws ::= [ \\t\\n]*",
}


def random_grammars(n: int) -> dict[str, str]:
    rng = random.Random(99)
    atoms = ['"a"', '"bc"', "[a-z]", "[^x]", ".", "x", "root", '"\\n"', "[0-9]+", "(", ")", "|"]
    atoms += ["*", "+", "?", "{2}", "{1,3}", "{,2}", "::=", '"', "\\", "[", "]", "#c\n"]
    out = {}
    for i in range(n):
        body = " ".join(rng.choice(atoms) for _ in range(rng.randrange(1, 12)))
        extra = "\nx ::= " + " ".join(rng.choice(atoms) for _ in range(rng.randrange(1, 6)))
        out[f"random-{i}"] = f"root ::= {body}" + (extra if rng.random() < 0.5 else "")
    return out


SCHEMAS: dict[str, Any] = {
    "not-an-object": [1, 2],
    "string": "object",
    "number": 42,
    "unknown-type": {"type": "banana"},
    "type-list-empty": {"type": []},
    "min-above-max": {"type": "integer", "minimum": 10, "maximum": 1},
    "minlength-above-maxlength": {"type": "string", "minLength": 5, "maxLength": 2},
    "minitems-above-maxitems": {"type": "array", "minItems": 4, "maxItems": 1},
    "huge-minitems": {"type": "array", "items": {"type": "string"}, "minItems": 100000000},
    "huge-minlength": {"type": "string", "minLength": 1000000000},
    "empty-enum": {"enum": []},
    "const-and-enum-disagree": {"const": 1, "enum": [2]},
    "self-ref": {"$ref": "#"},
    "recursive-ref": {"type": "object", "properties": {"a": {"$ref": "#"}}},
    "ref-loop": {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    },
    "dangling-ref": {"$ref": "#/$defs/missing"},
    "remote-ref": {"$ref": "http://127.0.0.1:9/schema.json"},
    "invalid-pattern": {"type": "string", "pattern": "([a-z"},
    "pattern-with-nul": {"type": "string", "pattern": "a\x00b"},
    "pattern-backreference": {"type": "string", "pattern": "(a)\\1"},
    "required-missing-property": {"type": "object", "properties": {}, "required": ["x"]},
    "properties-not-object": {"type": "object", "properties": [1]},
    "items-not-schema": {"type": "array", "items": 5},
    "all-of-contradiction": {"allOf": [{"type": "string"}, {"type": "integer"}]},
    "any-of-empty": {"anyOf": []},
    "not-everything": {"not": {}},
    "deep-nesting": json.loads('{"type":"array","items":' * 200 + '{"type":"string"}' + "}" * 200),
    "format-unknown": {"type": "string", "format": "no-such-format"},
    "additional-properties-false-required": {
        "type": "object",
        "additionalProperties": False,
        "required": ["a"],
    },
    "integer-float-bounds": {"type": "integer", "minimum": 0.5, "maximum": 0.7},
    "nan-bound": {"type": "number", "maximum": float("nan")},
    "huge-number-bound": {"type": "integer", "minimum": 10**40},
}

TEMPLATES = {
    "raise-exception": "{{ raise_exception('refused by the template') }}",
    "undefined-attribute": "{{ messages[0].nope.deeper }}",
    "undefined-call": "{{ nope() }}",
    "index-out-of-range": "{{ messages[99].content }}",
    "divide-by-zero": "{{ 1 / 0 }}",
    "type-error": "{{ messages + 1 }}",
    "syntax-error": "{% if %}",
    "unclosed-block": "{% for m in messages %}{{ m.content }}",
    "self-macro": "{% macro x() %}{{ x() }}{% endmacro %}{{ x() }}",
    "mutual-macros": "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}"
    "{{ a() }}",
    "empty": "",
    "only-text": "no variables at all",
    "nul-in-template": "{{ messages[0].content }}\x00tail",
    "deep-if-nesting": "{% if true %}" * 150 + "x" + "{% endif %}" * 150,
    # each of these overflowed the C++ stack in llama.cpp's parser (SIGSEGV)
    "too-deep-if-nesting": "{% if true %}" * 100000 + "x" + "{% endif %}" * 100000,
    "too-deep-parentheses": "{{ " + "(" * 100000 + "1" + ")" * 100000 + " }}",
    "too-deep-lists": "{{ " + "[" * 100000 + "]" * 100000 + " }}",
    "too-many-nots": "{{ " + "not " * 100000 + "true }}",
    "too-many-minuses": "{{ " + "-" * 100000 + "1 }}",
    "too-deep-inline-ifs": "{{ " + "1 if true else " * 100000 + "1 }}",
    "too-deep-for-nesting": "{% for m in messages %}" * 100000 + "{% endfor %}" * 100000,
    "filters-on-none": "{{ none | length }}{{ none | upper }}",
    # no literal above a million, yet minutes of work or gigabytes of memory: refused by the
    # trial render (a child process under CPU and memory limits)
    "range-of-a-product": "{% for i in range(1000 * 1000 * 1000) %}x{% endfor %}",
    "nested-ranges": "{% for i in range(1000) %}{% for j in range(1000) %}"
    "{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}",
    "doubling-string": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "hundred-megabyte-output": "{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}",
    "range-scaled-by-the-messages": "{% for i in range(messages | length * 1000 * 1000 * 1000) %}"
    "{% endfor %}",
    "moderate-loop": "{% for i in range(2000) %}.{% endfor %}{{ messages[0].content }}",
    "huge-range": "{% for i in range(1000000000) %}x{% endfor %}",
    "huge-range-step": "{% for i in range(0, 5000000000, 1) %}x{% endfor %}",
    "huge-repeat": "{{ 'x' * 2000000000 }}",
    "huge-power": "{{ 'x' * 10 ** 12 }}",
    "nested-moderate-loops": "{% for i in range(300) %}{% for j in range(300) %}.{% endfor %}"
    "{% endfor %}",
}


def nested(inner: Any, depth: int) -> Any:
    """inner in depth one-key objects ({"type": ...} schemas: in depth arrays), built by the
    worker (corpus_worker.unfold): too deep to send it as JSON."""
    return {"__nest__": [inner, depth]}


def deep_tool(depth: int) -> dict[str, Any]:
    params = {"type": "object", "properties": {"a": nested({"type": "string"}, depth)}}
    return {"type": "function", "function": {"name": "f", "parameters": params}}


def chat_cases() -> dict[str, dict[str, Any]]:
    user = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    return {
        "messages-none": {"messages": None},
        "messages-empty": {"messages": []},
        "messages-string": {"messages": "hi"},
        "message-not-dict": {"messages": ["hi"]},
        "role-missing": {"messages": [{"content": "hi"}]},
        "role-unknown": {"messages": [{"role": "wizard", "content": "hi"}]},
        "role-int": {"messages": [{"role": 1, "content": "hi"}]},
        "content-int": {"messages": [{"role": "user", "content": 5}]},
        "content-parts-bad": {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "content-nul": {"messages": [{"role": "user", "content": "a\x00b"}]},
        "content-lone-surrogate": {"messages": [{"role": "user", "content": "a\ud800b"}]},
        "tool-message-without-id": {"messages": [*user, {"role": "tool", "content": "x"}]},
        "tool-calls-not-list": {"messages": [*user, {"role": "assistant", "tool_calls": 5}]},
        "tool-call-without-name": {
            "messages": [
                *user,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "1", "type": "function", "function": {"arguments": "{}"}}
                    ],
                },
            ]
        },
        "tool-call-arguments-not-json": {
            "messages": [
                *user,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                },
            ]
        },
        "tools-not-list": {"messages": user, "tools": {"a": 1}},
        "tool-not-function": {"messages": user, "tools": [{"type": "retrieval"}]},
        "tool-name-empty": {
            "messages": user,
            "tools": [{"type": "function", "function": {"name": ""}}],
        },
        "tool-parameters-not-schema": {
            "messages": user,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}],
        },
        "tools-duplicate-names": {"messages": user, "tools": [tool, tool]},
        "tool-parameters-nested-900": {"messages": user, "tools": [deep_tool(900)]},
        "tool-parameters-nested-100000": {"messages": user, "tools": [deep_tool(100000)]},
        "message-field-nested-100000": {
            "messages": [{"role": "user", "content": "hi", "extra": nested({}, 100000)}]
        },
        "tool-type-null": {"messages": user, "tools": [{"type": None}]},  # found by fuzzing
        "tool-choice-unknown-name": {
            "messages": user,
            "tools": [tool],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        "tool-choice-int": {"messages": user, "tools": [tool], "tool_choice": 3},
        "tool-choice-bogus-string": {"messages": user, "tools": [tool], "tool_choice": "sometimes"},
        "tool-choice-without-tools": {"messages": user, "tool_choice": "required"},
        "response-format-bogus": {"messages": user, "response_format": {"type": "yaml"}},
        "response-format-not-dict": {"messages": user, "response_format": "json"},
        "grammar-and-tools": {"messages": user, "tools": [tool], "grammar": 'root ::= "a"'},
        "stop-not-strings": {"messages": user, "stop": [1, 2]},
        "logprobs-huge": {"messages": user, "logprobs": True, "top_logprobs": 10**6},
        "unknown-keyword": {"messages": user, "temprature": 0.5},
    }


def completion_cases() -> dict[str, dict[str, Any]]:
    nan, inf = float("nan"), float("inf")
    cases: dict[str, dict[str, Any]] = {}
    for name, value in [("nan", nan), ("inf", inf), ("-inf", -inf), ("neg", -5.0), ("huge", 1e30),
                        ("string", "0.5"), ("none", None), ("list", [1])]:  # fmt: skip
        for setting in ("temperature", "top_p", "min_p", "repeat_penalty", "typical_p", "dry_base"):
            cases[f"{setting}-{name}"] = {"prompt": "Hi", setting: value}
    for name, value in [("neg", -7), ("huge", 10**12), ("float", 2.5), ("bool", True)]:
        for setting in ("top_k", "max_tokens", "seed", "mirostat_mode", "dry_allowed_length"):
            cases[f"{setting}-{name}"] = {"prompt": "Hi", setting: value}
    cases |= {
        "tokens-negative": {"prompt": [-1]},
        "tokens-huge": {"prompt": [10**9]},
        "tokens-empty": {"prompt": []},
        "tokens-mixed-types": {"prompt": [1, "a"]},
        "prompt-nul": {"prompt": "a\x00b"},
        "prompt-lone-surrogate": {"prompt": "a\ud800"},
        "prompt-too-long": {"prompt": "word " * 3000},
        "logit-bias-bad-token": {"prompt": "Hi", "logit_bias": {10**9: 5.0}},
        "logit-bias-nan": {"prompt": "Hi", "logit_bias": {1: float("nan")}},
        "stop-empty-string": {"prompt": "Hi", "stop": [""]},
        "stop-nul": {"prompt": "Hi", "stop": ["\x00"]},
        "logprobs-negative": {"prompt": "Hi", "logprobs": -3},
        "logprobs-huge": {"prompt": "Hi", "logprobs": 10**7},
        "suffix-without-fim": {"prompt": "Hi", "suffix": "end"},
    }
    return cases


def constructor_cases() -> dict[str, dict[str, Any]]:
    return {
        "n-ctx-negative": {"n_ctx": -1},
        "n-ctx-huge": {"n_ctx": 10**12},
        "n-batch-zero": {"n_batch": 0},
        "n-ubatch-huge": {"n_ubatch": 10**9, "n_ctx": 256},
        "n-seq-max-zero": {"n_seq_max": 0},
        "n-seq-max-huge": {"n_seq_max": 10**6},
        "n-threads-zero": {"n_threads": 0},
        "n-threads-string": {"n_threads": "2"},
        "type-k-bogus": {"type_k": "q3_bogus"},
        "type-k-id-huge": {"type_k": 10**6},
        "rope-base-nan": {"rope_freq_base": float("nan")},
        "rope-scale-negative": {"rope_freq_scale": -1.0},
        "flash-attn-string": {"flash_attn": "maybe", "n_ctx": 256},
        "n-gpu-layers-negative": {"n_gpu_layers": -7},
        "lora-missing": {"lora_path": "/nonexistent/adapter.gguf"},
        "chat-format-unknown": {"chat_format": "no-such-format"},
        "chat-format-and-template": {"chat_format": "chatml", "chat_template": "{{ x }}"},
        "unknown-keyword": {"n_gpu_layer": 1},
        "speculative-unknown": {"speculative": "psychic"},
        "draft-max-negative": {"speculative": "ngram", "draft_max": -1},
    }


def state_cases(model_path: str) -> dict[str, bytes]:
    from llamacpp_integrations import Llama

    with Llama(model_path=model_path, n_ctx=256, n_seq_max=1) as llm:
        llm("The state of things", max_tokens=2, temperature=0)
        good = llm.save_state()
    rng = random.Random(7)
    out = {
        "empty": b"",
        "garbage": bytes(rng.randrange(256) for _ in range(4096)),
        "one-byte": b"\x01",
    }
    for cut in (4, 16, 64, len(good) // 3, len(good) // 2, len(good) - 1):
        out[f"truncated-{cut}"] = good[:cut]
    for _i in range(8):
        b = bytearray(good)
        at = rng.randrange(min(len(b), 256))
        b[at] ^= 0xFF
        out[f"flipped-{at}"] = bytes(b)
    return out


def all_cases(tmp: Path, model_path: str) -> dict[str, list[Case]]:
    grammars = {**GRAMMARS, **random_grammars(60)}
    return {
        "gguf": gguf_cases(tmp, model_path),
        "grammar": [(f"grammar-{k}", "grammar", {"grammar": v}) for k, v in grammars.items()],
        "schema": [(f"schema-{k}", "schema", {"schema": v}) for k, v in SCHEMAS.items()],
        "template": [(f"template-{k}", "template", {"template": v}) for k, v in TEMPLATES.items()],
        "chat": [(f"chat-{k}", "chat", v) for k, v in chat_cases().items()],
        "completion": [(f"completion-{k}", "completion", v) for k, v in completion_cases().items()],
        "constructor": [
            (f"constructor-{k}", "constructor", v) for k, v in constructor_cases().items()
        ],
        "state": [
            (f"state-{k}", "state", {"data": base64.b64encode(v).decode()})
            for k, v in state_cases(model_path).items()
        ],
    }


# ------------------------------------------------------------------ the worker


class Worker:
    """The worker process; restarted after a case that kills it or does not answer."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(WORKER), self.model_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert json.loads(self.read(120) or "{}").get("ready"), "the corpus worker did not start"

    def read(self, timeout: float) -> str | None:
        """The worker's next line of ours; "" when it exited, None when it did not answer."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                line = self.proc.stdout.readline()
                if not line or line.startswith(MARK):
                    return line[len(MARK) :] if line else ""

    def run(self, case: Case) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        case_id, kind, args = case
        try:
            self.proc.stdin.write(json.dumps({"id": case_id, "kind": kind, "args": args}) + "\n")
            self.proc.stdin.flush()
            line = self.read(CASE_TIMEOUT_S)
        except BrokenPipeError:
            line = ""
        if line:
            return dict(json.loads(line))
        if line is None:
            self.stop()
            return {"outcome": "hang", "message": f"no answer within {CASE_TIMEOUT_S} s"}
        code = self.proc.wait()
        self.proc = None
        return {"outcome": "crash", "message": f"the worker died (exit status {code})"}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> dict[str, list[Case]]:
    return all_cases(tmp_path_factory.mktemp("corpus"), model_path)


@pytest.fixture(scope="module")
def worker(model_path: str) -> Iterator[Worker]:
    w = Worker(model_path)
    yield w
    w.stop()


def verdict(result: dict[str, Any]) -> str | None:
    """Why a case's result is not acceptable, or None."""
    if result["outcome"] in ("crash", "hang"):
        return f"{result['outcome']}: {result['message']}"
    if result["outcome"] == "raised" and result["type"] not in ALLOWED:
        return f"raised {result['type']}: {result['message']}"
    if not result.get("serving", False):
        return f"the engine stopped serving afterwards ({result.get('message', '')})"
    return None


KINDS = ["gguf", "grammar", "schema", "template", "chat", "completion", "constructor", "state"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise_documented_errors(
    corpus: dict[str, list[Case]], worker: Worker, kind: str
) -> None:
    failures = []
    raised = 0
    for case in corpus[kind]:
        result = worker.run(case)
        why = verdict(result)
        if why:
            failures.append(f"{case[0]}: {why}")
        raised += result["outcome"] == "raised"
    assert not failures, f"{len(failures)} of {len(corpus[kind])} cases failed:\n" + "\n".join(
        failures
    )
    assert raised > 0  # the corpus holds bad inputs, and they were refused


def test_the_corpus_is_large(corpus: dict[str, list[Case]]) -> None:
    assert sum(len(v) for v in corpus.values()) >= 300
