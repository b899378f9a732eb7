// The llamacpp_integrations._core extension: one entry point, one init per bound concept.
#include "bindings.h"

NB_MODULE(_core, m) {
    m.doc() = "Native llama.cpp engine of llamacpp_integrations (private; use llamacpp_integrations.Llama)";
    init_exit(m);
    init_errors(m);
    init_log(m);
    init_model(m);
    init_vision(m);
    init_engine(m);
    init_chat(m);
    // Objects still referenced at interpreter exit (from other libraries' module-level
    // registries, e.g. LlamaIndex's instrumentation handlers) are not leaks of ours; the engine
    // threads they own are stopped by their destructors or by the OS at exit.
    nb::set_leak_warnings(false);
}
