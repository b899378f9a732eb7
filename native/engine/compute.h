// One thread for every graph computation in the process.
//
// ggml's CPU backend parallelises each graph with OpenMP, and the thread that calls llama_decode
// becomes the master of an OpenMP team. Each engine has its own worker thread; if each decoded
// on it, a process with two engines (a chat model and an embedding model, two chat models, a
// server with several models) would own two teams, more busy threads than cores, and libgomp
// stops spinning at ggml's barriers: measured, a second engine used once slowed the first from
// 74 to 18 tokens/s. So every llama_decode / llama_encode of every engine runs here, on one
// process-wide thread, and there is one team. Engines still schedule on their own workers; only
// the computation is handed over (two condition-variable hand-offs, microseconds per decode).
#pragma once

#include <functional>

namespace lci {

// Runs fn on the process-wide compute thread and waits for it; rethrows what fn threw. Calls
// from several threads are served one at a time, in arrival order.
void compute_run(const std::function<void()> & fn);

// How many computations have run on the compute thread (for tests and benchmarks).
unsigned long long compute_count();

} // namespace lci
