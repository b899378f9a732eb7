// The llamacpp_integrations._core extension: one entry point, one init per bound concept.
#include "bindings.h"

NB_MODULE(_core, m) {
    m.doc() = "Native llama.cpp engine of llamacpp_integrations (private; use llamacpp_integrations.Llama)";
    init_errors(m);
    init_log(m);
    init_model(m);
    init_engine(m);
    init_chat(m);
}
