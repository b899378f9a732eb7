// Exceptions thrown by the engine. The binding layer maps each one onto the Python hierarchy
// (LlamaError and its subclasses); nothing here knows about Python.
#pragma once

#include <stdexcept>
#include <string>

namespace lci {

// Base of everything the engine throws on purpose.
struct llama_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The file is missing, unreadable, not GGUF, truncated, or llama.cpp refused it.
struct model_load_error : llama_error {
    using llama_error::llama_error;
};

// A GBNF grammar (or a schema turned into one) did not parse.
struct grammar_error : llama_error {
    using llama_error::llama_error;
};

// The prompt (plus what must be generated) does not fit in the context.
struct context_window_exceeded_error : llama_error {
    using llama_error::llama_error;
};

// llama_decode / llama_encode failed.
struct decode_error : llama_error {
    using llama_error::llama_error;
};

// A value passed in is out of range (token ids, sizes, parameters).
struct invalid_argument_error : llama_error {
    using llama_error::llama_error;
};

// The shared KV cache ran out of cells while the request was generating, with no idle cache
// left to drop: the request was ended so that the others can finish (not "length").
struct kv_cache_full_error : llama_error {
    using llama_error::llama_error;
};

// The engine was closed while a request was pending.
struct engine_closed_error : llama_error {
    using llama_error::llama_error;
};

} // namespace lci
