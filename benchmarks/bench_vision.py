#!/usr/bin/env python3
"""Images in chat: time to encode an image and time to first token with one, ours against
llama.cpp's own ``llama-mtmd-cli`` built from the same source, on the same projector, text
model, image and thread count, in one script.

The projector is generated (``tests/vision_model.py``; no vision model can be downloaded here):
SmolVLM's architecture (idefics3) with random weights, sized to cost real encoder time: 128 x 128
tiles of 8 x 8 patches, width 256, 4 blocks, pixel shuffle 4 (16 tokens a tile), images resized
to 256 on the longer side, so llama.cpp's ``tools/mtmd/test-1.jpeg`` (640 x 488) becomes a 2 x 2
grid plus an overview: 5 encodes, 80 image tokens, ~100 prompt tokens. The text model is a copy
of the default model whose vocabulary holds SmolVLM's image tokens. Both sides render the same
prompt: the GGUF's own chat template (llama-mtmd-cli with ``--jinja``), the image before the
text (where llama-mtmd-cli puts it).

What is measured, per round, each side cold (no cached prompt, the same greedy request):
- **encode**: time inside the vision encoder, summed over the image's tiles
  (``timings.image_encode_ms`` for us; llama-mtmd-cli's "mtmd batch encoding done in N ms"
  lines, whole milliseconds, summed);
- **TTFT**: from the request to the first generated token. Ours: from the
  ``create_chat_completion(stream=True)`` call to the first chunk with content (the image read
  from its file, decoded, tokenized, encoded, decoded into the KV, the first token sampled).
  llama-mtmd-cli's: from its "For normal use cases" log line (printed after the model and
  projector are loaded, right before it reads the image) to the first token on its stdout,
  both stamped by this script as they arrive; the same work, with the model already loaded.

Sides alternate every round; the report gives medians and ours/theirs ratios (above 1.00: ours
is faster). Each round also asks ours the same request again, warm: the image is found in the
prefix cache by its pixels and neither encoded nor decoded (llama-mtmd-cli has no cache).

Usage::

    python benchmarks/build_reference.py     # once: builds llama-mtmd-cli
    python benchmarks/bench_vision.py        # nothing else busy; ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from engine_source import engine_models_dir  # noqa: E402
from vision_model import write_projector, write_text_model  # noqa: E402

CLI = REPO / ".bench" / "llama.cpp-build" / "bin" / "llama-mtmd-cli"
IMAGE = engine_models_dir().parent / "tools" / "mtmd" / "test-1.jpeg"
PROMPT = "Describe the image."
PROJECTOR = {
    "image_size": 128, "patch_size": 8, "n_embd": 256, "n_ff": 1024, "n_head": 4,
    "n_layer": 4, "scale_factor": 4, "preproc_image_size": 256,
}  # fmt: skip
N_CTX = 1024


def ours(llm: Any, cold: bool = True) -> tuple[float, float]:
    if cold:
        llm.reset()
    t0 = time.perf_counter()
    stream = llm.create_chat_completion(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": str(IMAGE)}},
                    {"type": "text", "text": PROMPT},
                ],
            }
        ],
        temperature=0,
        max_tokens=2,
        stream=True,
    )
    ttft = None
    for chunk in stream:
        if ttft is None and chunk["choices"][0]["delta"].get("content"):
            ttft = time.perf_counter() - t0
    response = stream.response()
    assert ttft is not None, "no token"
    return response["timings"]["image_encode_ms"], ttft * 1e3


def theirs(model: Path, projector: Path, threads: int) -> tuple[float, float]:
    cmd = [
        str(CLI), "-m", str(model), "--mmproj", str(projector), "--image", str(IMAGE),
        "-p", PROMPT, "-n", "2", "--temp", "0", "--jinja", "-t", str(threads), "-c", str(N_CTX),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    start: list[float] = []
    encode_ms: list[int] = []
    first: list[float] = []

    def read_log() -> None:
        for raw in iter(proc.stderr.readline, b""):  # type: ignore[union-attr]
            line = raw.decode(errors="replace")
            if "For normal use cases" in line:
                start.append(time.perf_counter())
            m = re.search(r"mtmd batch encoding done in (\d+) ms", line)
            if m:
                encode_ms.append(int(m.group(1)))

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    seen = b""
    while byte := proc.stdout.read(1):
        seen += byte
        # stdout holds a newline when the prompt is read, then the tokens
        if byte != b"\n" and not first:
            first.append(time.perf_counter())
    proc.wait()
    reader.join()
    if proc.returncode != 0 or not start or not first:
        raise RuntimeError(f"llama-mtmd-cli failed (rc {proc.returncode}): {seen!r}")
    return float(sum(encode_ms)), (first[0] - start[0]) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if not CLI.exists():
        sys.exit(f"{CLI} is missing: python benchmarks/build_reference.py")
    from llamacpp_integrations import Llama, default_model_path

    with tempfile.TemporaryDirectory() as d:
        projector, model = Path(d) / "mmproj.gguf", Path(d) / "smollm2-vlm.gguf"
        write_projector(projector, **PROJECTOR)
        write_text_model(default_model_path(), model)
        llm = Llama(model, mmproj_path=projector, n_ctx=N_CTX, n_seq_max=1, n_threads=args.threads)
        ours(llm)  # warm-up: first-touch of the weights
        theirs(model, projector, args.threads)
        rows: dict[str, list[tuple[float, float]]] = {"ours": [], "llama-mtmd-cli": []}
        again: list[float] = []
        for r in range(args.rounds):
            sides = ["ours", "llama-mtmd-cli"] if r % 2 == 0 else ["llama-mtmd-cli", "ours"]
            for side in sides:
                m = ours(llm) if side == "ours" else theirs(model, projector, args.threads)
                rows[side].append(m)
            again.append(ours(llm, cold=False)[1])  # the same image again: the prefix cache
        llm.close()

    print(f"\nimage {IMAGE.name} (640x488: 5 tiles, 80 image tokens), {args.threads} threads, "
          f"{args.rounds} alternating rounds, medians\n")  # fmt: skip
    print(f"| {'side':16} | encode ms | TTFT ms |")
    print(f"|{'-' * 18}|----------:|--------:|")
    med = {s: tuple(statistics.median(m[i] for m in v) for i in (0, 1)) for s, v in rows.items()}
    for side, (enc, ttft) in med.items():
        print(f"| {side:16} | {enc:9.1f} | {ttft:7.1f} |")
    ratios = [t[1] / o[1] for o, t in zip(rows["ours"], rows["llama-mtmd-cli"], strict=True)]
    enc_ratio = med["llama-mtmd-cli"][0] / med["ours"][0]
    ttft_ratio = statistics.median(ratios)
    print(
        f"\nours/llama-mtmd-cli speed: encode {enc_ratio:.2f}x, TTFT {ttft_ratio:.2f}x "
        f"(per-round TTFT ratios {min(ratios):.2f}-{max(ratios):.2f})"
    )
    print(
        f"ours, the same image again (found in the prefix cache, by content): TTFT "
        f"{statistics.median(again):.1f} ms"
    )


if __name__ == "__main__":
    main()
