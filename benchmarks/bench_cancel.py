"""How fast a cancel takes effect in the middle of a long prompt, for several n_batch values.

A cancel sets a flag that llama.cpp's abort callback reads between graph nodes, so a
4000-token prompt decoded as one batch stops long before the batch would finish. Prints the
latency from cancel() to the result being available, and the share of the prompt processed.

    python benchmarks/bench_cancel.py [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from llamacpp_integrations import Llama, default_model_path


def measure(llm: Llama, tokens: list[int], delay_s: float) -> tuple[float, int]:
    llm.reset()
    engine = llm.native_engine
    request = engine.submit(tokens, llm.sampling_params(temperature=0), max_tokens=1)
    time.sleep(delay_s)
    started = time.perf_counter()
    request.cancel()
    result = request.result()
    latency = time.perf_counter() - started
    assert result.finish_reason == "cancelled", result.finish_reason
    return latency, len(engine.cached_tokens())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    path = default_model_path()
    print(f"{'n_batch':>8} {'median ms':>10} {'max ms':>8} {'kept cached':>12}")
    for n_batch in (512, 2048, 4096):
        with Llama(model_path=path, n_ctx=4096, n_batch=n_batch, n_ubatch=min(n_batch, 512),
                   n_threads=args.threads) as llm:  # fmt: skip
            tokens = llm.tokenize("The quick brown fox jumps over the lazy dog. " * 400)[:4000]
            runs = [measure(llm, tokens, 0.3) for _ in range(args.reps)]
            lat = [r[0] * 1e3 for r in runs]
            done = statistics.mean(r[1] for r in runs) / len(tokens)
            print(f"{n_batch:>8} {statistics.median(lat):>10.1f} {max(lat):>8.1f} {done:>11.0%}")


if __name__ == "__main__":
    main()
