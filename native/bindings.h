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

void init_errors(nb::module_ & m);
void init_log(nb::module_ & m);
void init_model(nb::module_ & m);
void init_vision(nb::module_ & m);
void init_engine(nb::module_ & m);
void init_chat(nb::module_ & m);
