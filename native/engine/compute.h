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
//
// The compute thread also decides how many threads a computation gets. While the cores are free
// it is what the engine was configured with. While another process (or a busy thread of this
// one) computes on the same cores, OpenMP's spinning threads and ggml's barriers starve each
// other: two processes on a 2-core machine each ran at 0.07x their speed alone. So the compute
// thread measures how much of each computation's wall time it was actually running
// (CLOCK_THREAD_CPUTIME_ID against the wall clock). When most recent measurements are below
// kBusyShare it halves the threads of adaptive contexts, and from time to time it tries the next
// larger count again, keeping it when it runs unhindered. Contexts whose threads the user set
// explicitly are never changed.
#pragma once

#include <cstdint>
#include <functional>

struct llama_context;

namespace lci {

// The threads of one llama context.
struct thread_counts {
    int32_t n        = 1;     // generation (llama_context_params::n_threads)
    int32_t n_batch  = 1;     // prompt processing (n_threads_batch)
    bool    adaptive = false; // fewer while the cores are contended (the user did not set them)
};

// Sets ctx's threads for the computation about to run. Call it inside compute_run, right before
// llama_decode / llama_encode, so that the compute thread's measurement covers that computation.
void compute_apply_threads(llama_context * ctx, const thread_counts & t);

// The compute thread's thread policy, for tests and benchmarks.
struct compute_stats {
    unsigned long long count      = 0; // computations run
    int                level      = 0; // adaptive threads are divided by 2^level now
    unsigned long long reductions = 0; // times the level went up (threads halved)
    unsigned long long probes     = 0; // times a larger count was tried again
    unsigned long long restored   = 0; // probes that kept the larger count
};
compute_stats compute_get_stats();

// Runs fn on the process-wide compute thread and waits for it; rethrows what fn threw. Calls
// from several threads are served one at a time, in arrival order.
void compute_run(const std::function<void()> & fn);

// How many computations have run on the compute thread (for tests and benchmarks).
unsigned long long compute_count();

} // namespace lci
