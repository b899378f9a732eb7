// Chat templates are untrusted input (anyone can publish a GGUF), and llama.cpp's Jinja runtime
// bounds neither recursion nor work. check_template refuses, before anything renders it:
// - blocks, brackets or operators nested more than 200 deep (the parser recurses per level);
// - range() of, or repetition (*, **) by, an integer literal above a million: a render that runs
//   for minutes or fills the memory;
// and then renders a trial conversation in a child process under limits of CPU time, memory and
// output, refusing a template that exceeds them or crashes (macros that call themselves without
// end overflow the stack; the message names the chain). A request larger than the trial
// conversation in any measure (a template may do work that grows faster than its input, or
// recurse as deep as its data) first renders in a child process under the same limits
// (guard_render).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>

namespace lci {

// The size of a render's input, in the measures the trial render covers.
struct render_size {
    size_t messages = 0;
    size_t tools = 0;
    size_t longest = 0; // the longest string (or key) anywhere in the messages and tools
    size_t bytes = 0;   // the messages' and tools' JSON text
    size_t depth = 0;   // how deep arrays and objects nest in them (templates recurse over it)
};

render_size measure_render(const nlohmann::ordered_json & messages, const nlohmann::ordered_json & tools);

// The trial conversation's size.
const render_size & trial_size();

// Whether the trial covered an input of this size: at most as large in every measure.
bool trial_covers(const render_size & size);

// For an input the trial did not cover: renders the template source src with inputs (a JSON
// object of the template's variables) in a child process under the trial's limits (the output
// limit grows with the input), and throws invalid_argument_error naming the request's size and
// the limit when the render exceeds them. Nothing happens for a covered input or where no child
// process can be made (Windows); a template that raises is left for the real render to report.
void guard_render(const std::string & src, const std::string & inputs, const render_size & size);

// Throws invalid_argument_error naming `what` (e.g. "the model's chat template") and the cause.
void check_template(const std::string & src, const std::string & what);

} // namespace lci
