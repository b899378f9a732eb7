// Releasing the GIL around blocking calls without crashing at interpreter exit (bindings.h).
#include "bindings.h"

#include "engine.h"

#include <atomic>
#include <chrono>
#include <thread>

namespace {

std::atomic<bool> g_exiting{false};
std::atomic<int> g_reacquiring{0}; // threads between the exit check and holding the GIL again
std::atomic<std::thread::id> g_exit_thread{};

[[noreturn]] void park_forever() {
    for (;;) {
        std::this_thread::sleep_for(std::chrono::hours(24));
    }
}

bool parks_at_exit() {
    return g_exiting.load() && std::this_thread::get_id() != g_exit_thread.load();
}

} // namespace

gil_release::gil_release() : state_(PyEval_SaveThread()) {}

gil_release::~gil_release() {
    g_reacquiring.fetch_add(1);
    if (parks_at_exit()) {
        g_reacquiring.fetch_sub(1);
        park_forever();
    }
    PyEval_RestoreThread(state_);
    g_reacquiring.fetch_sub(1);
}

void park_if_exiting() {
    if (parks_at_exit()) {
        park_forever();
    }
}

bool python_exiting() {
    return g_exiting.load();
}

void init_exit(nb::module_ & m) {
    m.def(
        "begin_exit",
        [] {
            g_exit_thread.store(std::this_thread::get_id());
            g_exiting.store(true);
            // let the threads already on their way back into Python get there: after this, the
            // interpreter would end them inside PyEval_RestoreThread
            Py_BEGIN_ALLOW_THREADS
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
            while (g_reacquiring.load() > 0 && std::chrono::steady_clock::now() < until) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            // and no engine may still compute while the process's static objects are destroyed
            lci::engine::close_all();
            Py_END_ALLOW_THREADS
        },
        "Registered with atexit by the package: from now on, threads other than this one that "
        "come back from a blocking call wait for the process to end instead of re-entering "
        "Python (which CPython would end with pthread_exit, aborting the process).");
}
