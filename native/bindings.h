// Shared by the binding files: each exposes init_<concept>(module) and only converts and
// forwards to the engine in native/engine/.
#pragma once

#include "chat_templates.h"

#include <nanobind/nanobind.h>

#include <map>
#include <string>

namespace nb = nanobind;

// The chat request of ChatTemplates.apply and Engine.submit_chat (chat.cpp).
lci::chat_request make_chat_request(std::string messages_json, std::string tools_json, std::string tool_choice,
                                    bool parallel_tool_calls, std::string json_schema, bool json_object,
                                    std::string grammar, bool add_generation_prompt, bool enable_thinking,
                                    bool parse_reasoning, std::map<std::string, std::string> template_kwargs);

// Releases the GIL for a blocking call (use it instead of nb::gil_scoped_release, also as a
// call_guard). At interpreter exit CPython 3.11-3.13 ends a daemon thread that takes the GIL
// back with pthread_exit, whose forced unwind cannot pass the noexcept destructor doing it: the
// process aborted ("terminate called without an active exception") when a daemon thread was
// waiting on a request at exit. Once the package's atexit hook has run (gil.cpp, begin_exit),
// such a thread waits for the process to end instead.
class gil_release {
public:
    gil_release();
    ~gil_release();
    gil_release(const gil_release &) = delete;
    gil_release & operator=(const gil_release &) = delete;

private:
    PyThreadState * state_;
};

// Whether the exit hook has run; and, for a thread other than the exiting one, waiting for the
// process to end instead of taking the GIL (before a gil_scoped_acquire).
bool python_exiting();
void park_if_exiting();

void init_exit(nb::module_ & m);
void init_errors(nb::module_ & m);
void init_log(nb::module_ & m);
void init_model(nb::module_ & m);
void init_vision(nb::module_ & m);
void init_engine(nb::module_ & m);
void init_chat(nb::module_ & m);
