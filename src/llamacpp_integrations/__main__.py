"""Command line: ``llamacpp-integrations`` (or ``python -m llamacpp_integrations``).

    llamacpp-integrations info                 system info, backends, model metadata
    llamacpp-integrations complete "PROMPT"    stream a completion to the terminal
    llamacpp-integrations demo                 a short tour on the default model

Every command works with no argument but the prompt: the model defaults to SmolLM2-135M-Instruct
(downloaded and verified on first use); ``--model PATH`` or ``$LLAMACPP_INTEGRATIONS_MODEL``
choose another.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import (
    CompletionStream,
    Llama,
    LlamaError,
    __version__,
    backends,
    default_model_path,
    system_info,
)
from ._chat import ChatCompletionStream
from .types import ChatCompletionResponse, CompletionResponse


def _load(args: argparse.Namespace) -> Llama:
    return Llama(
        model_path=default_model_path(args.model),
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_gpu_layers=args.n_gpu_layers,
        verbose=args.verbose,
    )


def cmd_info(args: argparse.Namespace) -> int:
    print(f"llamacpp-integrations {__version__}")
    print(f"backends: {', '.join(backends())}")
    print(f"system:   {system_info().strip()}")
    with _load(args) as llm:
        m = llm.native_model
        print(f"model:    {llm.model_path}")
        print(
            f"          {m.description}, {m.n_params / 1e6:.0f}M parameters, {m.size / 1e6:.0f} MB"
        )
        print(f"          architecture {m.architecture}, {m.n_layer} layers, n_embd {m.n_embd}")
        print(f"          n_vocab {m.n_vocab}, n_ctx_train {m.n_ctx_train}, n_ctx {llm.n_ctx()}")
        print(f"          chat template: {'yes' if m.chat_template() else 'no'}")
        if args.metadata:
            for key, value in sorted(llm.metadata.items()):
                shown = value if len(value) <= 80 else value[:77] + "..."
                print(f"  {key} = {shown}")
    return 0


def _complete(llm: Llama, prompt: str, **kwargs: object) -> CompletionResponse:
    out = llm(prompt, **kwargs)
    assert not isinstance(out, CompletionStream)
    return out


def _chat(llm: Llama, messages: list[dict[str, Any]], **kwargs: Any) -> ChatCompletionResponse:
    out = llm.create_chat_completion(messages, temperature=0, **kwargs)
    assert not isinstance(out, ChatCompletionStream)
    return out


def _stream(llm: Llama, prompt: str, max_tokens: int, temperature: float) -> dict[str, object]:
    stream = llm(prompt, max_tokens=max_tokens, temperature=temperature, stream=True)
    assert isinstance(stream, CompletionStream)
    last: dict[str, object] = {}
    with stream:
        for chunk in stream:
            sys.stdout.write(chunk["choices"][0]["text"])
            sys.stdout.flush()
            last = dict(chunk)
    print()
    return last


def cmd_complete(args: argparse.Namespace) -> int:
    with _load(args) as llm:
        last = _stream(llm, args.prompt, args.max_tokens, args.temperature)
        timings = last.get("timings")
        if args.stats and isinstance(timings, dict):
            print(
                f"[{timings['prompt_n']} prompt tokens at {timings['prompt_per_second']:.0f} t/s, "
                f"{timings['predicted_n']} generated at {timings['predicted_per_second']:.0f} t/s]",
                file=sys.stderr,
            )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    print("== llamacpp-integrations demo ==")
    print(f"backends: {', '.join(backends())}")
    started = time.perf_counter()
    with _load(args) as llm:
        print(f"model: {llm.native_model.description} ({llm.model_path})")
        print(f"loaded in {time.perf_counter() - started:.2f} s\n")

        prompt = "Q: Name the planets in the solar system? A: "
        print("1. Completion (greedy, stop at newline):")
        out = _complete(llm, prompt, max_tokens=48, temperature=0, stop=["\n", "Q:"])
        print(f"   {prompt}{out['choices'][0]['text']}")
        usage = out["usage"]
        n_prompt, n_completion = usage["prompt_tokens"], usage["completion_tokens"]
        print(f"   usage: {n_prompt} prompt + {n_completion} completion tokens\n")

        print("2. Streaming, token by token:")
        sys.stdout.write("   Once upon a time")
        last = _stream(llm, "Once upon a time", 40, 0.7)
        timings = last.get("timings")
        if isinstance(timings, dict):
            print(f"   ({timings['predicted_per_second']:.0f} tokens/s)\n")

        print("3. Chat with the model's own template; the shared prefix is not decoded twice:")
        system = {
            "role": "system",
            "content": "You are a concise assistant. Answer in a few words.",
        }
        for question in ("What colour is the sky?", "What colour is grass?"):
            reply = _chat(llm, [system, {"role": "user", "content": question}], max_tokens=16)
            message = reply["choices"][0]["message"]
            cached = reply["usage"]["prompt_tokens_details"]["cached_tokens"]
            answer = (message["content"] or "").strip()
            n_prompt = reply["usage"]["prompt_tokens"]
            print(f"   {question} -> {answer!r}  ({cached} of {n_prompt} cached)")
        print()

        print("4. A grammar constrains the output:")
        out = _complete(
            llm,
            "Is water wet? Answer:",
            max_tokens=4,
            temperature=0,
            grammar='root ::= " yes" | " no"',
        )
        print(f"   Is water wet? ->{out['choices'][0]['text']}\n")

        print("5. Tool calling (the model's arguments always match the schema):")
        weather = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
        reply = _chat(
            llm,
            [{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[weather],
            tool_choice="required",
            parallel_tool_calls=False,
        )
        for call in reply["choices"][0]["message"].get("tool_calls", []):
            print(f"   {call['function']['name']}({call['function']['arguments']})")
        print()

        print("6. Bad input is an exception, never a crash:")
        try:
            llm("x", grammar="root ::= (")
        except LlamaError as e:
            print(f"   {type(e).__name__}: {e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamacpp-integrations", description="Run GGUF models in-process on llama.cpp."
    )
    parser.add_argument("--version", action="version", version=__version__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help="GGUF file (default: the bundled SmolLM2-135M-Instruct)")
    common.add_argument("--n-ctx", type=int, default=2048, help="context window (default 2048)")
    common.add_argument(
        "--threads", type=int, default=None, help="threads (default: physical cores)"
    )
    common.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload (-1: all)")
    common.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", parents=[common], help="system info, backends, model metadata")
    info.add_argument("--metadata", action="store_true", help="also list the GGUF key/values")
    info.set_defaults(func=cmd_info)

    complete = sub.add_parser("complete", parents=[common], help="stream a completion")
    complete.add_argument("prompt")
    complete.add_argument("--max-tokens", type=int, default=128)
    complete.add_argument("--temperature", type=float, default=0.8)
    complete.add_argument("--stats", action="store_true", help="print speed to stderr")
    complete.set_defaults(func=cmd_complete)

    demo = sub.add_parser("demo", parents=[common], help="a short tour on the default model")
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("serve", help="an OpenAI-compatible server (see 'serve --help')")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # the server has its own flags (llamacpp_integrations.server)
        from .server import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LlamaError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
