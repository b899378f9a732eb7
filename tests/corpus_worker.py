"""Runs bad-input cases for tests/integration/test_corpus.py, one JSON line in, one out.

The worker loads the default model once and reads cases from stdin: ``{"id", "kind", "args"}``.
For each it prints, after a marker, ``{"id", "outcome", "type", "message", "serving"}``:
``outcome`` is ``ok`` or ``raised`` (``type``: the exception's class; the test decides which are
allowed), and ``serving`` whether the shared engine still answers a one-token completion
afterwards. A case that kills the process or never answers is the test's to see: it restarts
the worker.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from llamacpp_integrations import Llama

MARK = "@@corpus@@ "  # our lines; a dying process may print others (ggml's backtrace)


def unfold(value: Any) -> Any:
    """{"__nest__": [inner, depth]} becomes inner wrapped depth times: a JSON schema (a dict with
    "type") in arrays of it, anything else in one-key objects. Structures too deep to send as
    JSON are built here."""
    if isinstance(value, dict):
        if set(value) == {"__nest__"}:
            inner, depth = value["__nest__"]
            inner = unfold(inner)
            schema = isinstance(inner, dict) and "type" in inner
            for _ in range(depth):
                inner = {"type": "array", "items": inner} if schema else {"a": inner}
            return inner
        return {k: unfold(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unfold(v) for v in value]
    return value


def run_case(llm: Llama, kind: str, args: dict[str, Any]) -> None:
    if kind == "gguf":
        Llama(model_path=args["path"], vocab_only=args.get("vocab_only", False), n_ctx=64).close()
    elif kind == "grammar":
        llm.create_completion("Answer:", grammar=args["grammar"], max_tokens=8, temperature=0)
    elif kind == "schema":
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": args["schema"]}}
        llm.create_chat_completion(
            [{"role": "user", "content": "Give JSON."}],
            response_format=fmt,  # type: ignore[arg-type]
            max_tokens=16,
            temperature=0,
        )
    elif kind == "template":
        with Llama(model_path=llm.model_path, n_ctx=256, chat_template=args["template"]) as other:
            other.create_chat_completion(
                args.get("messages") or [{"role": "user", "content": "hi"}], max_tokens=2
            )
    elif kind == "chat":
        llm.create_chat_completion(max_tokens=4, temperature=0, **unfold(args))
    elif kind == "completion":
        llm.create_completion(**{"max_tokens": 4, **args})
    elif kind == "constructor":
        Llama(model_path=llm.model_path, **args).close()
    elif kind == "state":
        llm.load_state(base64.b64decode(args["data"]))
    else:
        raise AssertionError(f"unknown case kind {kind!r}")


def main() -> None:
    llm = Llama(model_path=sys.argv[1], n_ctx=512, n_seq_max=2)
    print(MARK + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        out: dict[str, Any] = {"id": case["id"], "outcome": "ok"}
        try:
            run_case(llm, case["kind"], case["args"])
        except Exception as e:  # reported, judged by the test
            out.update(outcome="raised", type=type(e).__name__, message=str(e)[:500])
        try:
            llm.reset()
            out["serving"] = (
                llm("Hi", max_tokens=1, temperature=0)["usage"]["completion_tokens"] == 1
            )
        except Exception as e:
            out["serving"] = False
            out["message"] = f"{out.get('message', '')} / afterwards: {type(e).__name__}: {e}"
        print(MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
