// Chat templates are untrusted input (anyone can publish a GGUF), and llama.cpp's Jinja runtime
// bounds neither recursion nor work. check_template refuses, before anything renders it:
// - macros that call themselves, directly or through each other (the macro call graph, by name
//   inside macro bodies, must have no cycle): they recurse until the C++ stack overflows and the
//   process dies;
// - range() of, or repetition (*, **) by, an integer literal above a million: a render that runs
//   for minutes or fills the memory. Sizes that come from the messages are bounded by them.
#pragma once

#include <string>

namespace lci {

// Throws invalid_argument_error naming `what` (e.g. "the model's chat template") and the cause.
void check_template(const std::string & src, const std::string & what);

} // namespace lci
