#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris) of what takes untrusted input, on the default model.

Targets:
- ``grammar``: GBNF text, checked and used for one token;
- ``schema``: JSON (bytes, often a schema) turned into a grammar;
- ``template``: chat messages and tools, rendered by the model's template (``count_chat_tokens``);
- ``tokens``: tokenize arbitrary bytes, detokenize arbitrary token ids;
- ``gguf``: a GGUF file from bytes (a real vocabulary file, mutated), loaded vocabulary-only;
- ``image``: image bytes (a PNG, a BMP and a GIF, mutated) in a chat message, decoded, checked,
  preprocessed and tokenized by the vision projector (tests/vision_model.py) without generating.

Each input must succeed or raise a ``LlamaError`` (or ``TypeError``/``ValueError``); anything
else, and any crash, is a finding: libFuzzer stops and writes the input to
``build/fuzz/<target>-crash-*``, to be added to the bad-input corpus (tests/integration/
test_corpus.py) once fixed.

    python tests/fuzz/fuzz.py --seconds 60            # every target for 60 s (make fuzz)
    python tests/fuzz/fuzz.py grammar -max_total_time=600
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = ("grammar", "schema", "template", "tokens", "gguf", "image")
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "fuzz"


SCHEMA_KEYS = ["type", "properties", "items", "enum", "const", "$ref", "$defs", "minimum",
               "maximum", "pattern", "anyOf", "allOf", "oneOf", "not", "required", "format",
               "additionalProperties", "minItems", "maxItems", "minLength", "maxLength",
               "prefixItems", "role", "content", "tool_calls", "function", "name", "arguments",
               "parameters", "tool_call_id", "string", "object", "array", "integer", "user",
               "assistant", "system", "tool", "#", "#/$defs/a", "a"]  # fmt: skip


def random_json(fdp: object, depth: int = 0) -> object:
    """A JSON value drawn from the input, with the keys and words of schemas and messages, so
    that every input reaches the engine (random text rarely parses as JSON)."""
    kind = fdp.ConsumeIntInRange(0, 7 if depth < 6 else 4)  # type: ignore[attr-defined]
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()  # type: ignore[attr-defined]
    if kind == 2:
        return fdp.ConsumeIntInRange(-(2**40), 2**40)  # type: ignore[attr-defined]
    if kind == 3:
        return fdp.PickValueInList(SCHEMA_KEYS)  # type: ignore[attr-defined]
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16))  # type: ignore[attr-defined]
    if kind == 5:
        return [random_json(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]  # type: ignore[attr-defined]
    return {
        fdp.PickValueInList(SCHEMA_KEYS): random_json(fdp, depth + 1)  # type: ignore[attr-defined]
        for _ in range(fdp.ConsumeIntInRange(0, 5))  # type: ignore[attr-defined]
    }


def run_target(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports():
        from llamacpp_integrations import Llama, LlamaError, default_model_path

    allowed = (LlamaError, TypeError, ValueError)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-gguf-"))
    if name == "image":
        sys.path.insert(0, str(ROOT / "tests"))
        from vision_model import write_projector, write_text_model

        write_projector(tmp / "mmproj.gguf")
        write_text_model(default_model_path(), tmp / "vlm.gguf")
        llm = Llama(
            str(tmp / "vlm.gguf"),
            mmproj_path=str(tmp / "mmproj.gguf"),
            n_ctx=256,
            n_seq_max=1,
            max_image_pixels=1 << 20,
        )
    else:
        llm = None if name == "gguf" else Llama(str(default_model_path()), n_ctx=256, n_seq_max=1)

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        try:
            if name == "grammar":
                assert llm is not None
                grammar = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
                llm.create_completion("A", grammar=grammar, max_tokens=1, temperature=0)
            elif name == "schema":
                assert llm is not None
                schema = random_json(fdp)
                fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
                llm.create_chat_completion(
                    [{"role": "user", "content": "x"}], response_format=fmt, max_tokens=1
                )  # type: ignore[arg-type]
            elif name == "template":
                assert llm is not None
                messages = [
                    {
                        "role": fdp.PickValueInList(["user", "assistant", "system", "tool", "x"]),
                        "content": random_json(fdp) if fdp.ConsumeBool() else "hi",
                        **(
                            {k: random_json(fdp)} if (k := fdp.PickValueInList(SCHEMA_KEYS)) else {}
                        ),
                    }
                    for _ in range(fdp.ConsumeIntInRange(1, 4))
                ]
                tools = [random_json(fdp)] if fdp.ConsumeBool() else None
                llm.count_chat_tokens(messages, tools)  # type: ignore[arg-type]
            elif name == "tokens":
                assert llm is not None
                text = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
                ids = llm.tokenize(text, add_bos=fdp.ConsumeBool(), special=fdp.ConsumeBool())
                llm.detokenize(ids)
                llm.detokenize([fdp.ConsumeIntInRange(-(2**31), 2**31 - 1) for _ in range(8)])
            elif name == "image":
                assert llm is not None
                url = "data:image/png;base64," + base64.b64encode(data).decode()
                part = {"type": "image_url", "image_url": {"url": url}}
                llm.count_chat_tokens([{"role": "user", "content": [part]}])
            elif name == "gguf":
                path = tmp / "input.gguf"
                path.write_bytes(data)
                Llama(str(path), vocab_only=True).close()
        except allowed:
            pass

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def seed_dir(name: str) -> Path:
    """A few valid inputs to start from."""
    d = OUT / f"{name}-seeds"
    d.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, bytes] = {
        "grammar": b'root ::= "yes" | "no"\n',
        "schema": json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}}).encode(),
        "template": json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
        "tokens": b"\x00\x10Hello, world! \xc3\xa9",
    }
    if name == "image":
        sys.path.insert(0, str(ROOT / "tests"))
        import numpy as np
        from vision_model import write_png

        pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
        write_png(d / "png", pixels)
        # a 2 x 2 24-bit BMP and a 1 x 1 GIF, by hand
        row = b"\x00\x00\xff\xff\x00\x00\x00\x00"
        dib = (40).to_bytes(4, "little") + (2).to_bytes(4, "little") * 2 + b"\x01\x00\x18\x00"
        dib += bytes(24)
        (d / "bmp").write_bytes(b"BM" + (70).to_bytes(4, "little") + bytes(4)
                                + (54).to_bytes(4, "little") + dib + row * 2)  # fmt: skip
        (d / "gif").write_bytes(
            b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\x00\x00\x00\x00\x00"
            b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
        )
    elif name == "gguf":
        sys.path.insert(0, str(ROOT / "tests"))
        from engine_source import engine_models_dir

        (d / "spm").write_bytes((engine_models_dir() / "ggml-vocab-llama-spm.gguf").read_bytes())
    else:
        (d / "seed").write_bytes(seeds[name])
    return d


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "target", nargs="?", choices=TARGETS, help="one target (default: all, each in a child)"
    )
    ap.add_argument("--seconds", type=int, default=60, help="time budget per target")
    args, libfuzzer_args = ap.parse_known_args()
    if args.target:
        run_target(args.target, libfuzzer_args)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in TARGETS:
        cmd = [sys.executable, __file__, name, f"-max_total_time={args.seconds}", "-seed=1",
               f"-artifact_prefix={OUT}/{name}-", "-rss_limit_mb=4096", "-timeout=30",
               str(seed_dir(name))]  # fmt: skip
        print(f"fuzzing {name} for {args.seconds} s", flush=True)
        run = subprocess.run(
            cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True
        )
        tail = [line for line in run.stderr.splitlines() if line.startswith(("#", "Done", "=="))]
        print("  " + (tail[-1] if tail else "(no libFuzzer summary)"), flush=True)
        if run.returncode != 0:
            failed.append(name)
            print(run.stderr[-4000:], flush=True)
    print("fuzzing: " + (f"findings in {', '.join(failed)}" if failed else "no findings"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
