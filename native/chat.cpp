// ChatTemplates, ChatPrompt, ChatStream: the chat layer of native/engine/chat_templates.h.
#include "bindings.h"

#include "chat_templates.h"
#include "model.h"
#include "template_check.h"

#include <nanobind/stl/map.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

lci::chat_request make_chat_request(std::string messages_json, std::string tools_json, std::string tool_choice,
                                    bool parallel_tool_calls, std::string json_schema, bool json_object,
                                    std::string grammar, bool add_generation_prompt, bool enable_thinking,
                                    bool parse_reasoning, std::map<std::string, std::string> template_kwargs) {
    lci::chat_request req;
    req.messages_json = std::move(messages_json);
    req.tools_json = std::move(tools_json);
    req.tool_choice = std::move(tool_choice);
    req.parallel_tool_calls = parallel_tool_calls;
    req.json_schema = std::move(json_schema);
    req.json_object = json_object;
    req.grammar = std::move(grammar);
    req.add_generation_prompt = add_generation_prompt;
    req.enable_thinking = enable_thinking;
    req.parse_reasoning = parse_reasoning;
    req.template_kwargs = std::move(template_kwargs);
    return req;
}

void init_chat(nb::module_ & m) {
    nb::class_<lci::chat_tool_call>(m, "ChatToolCall")
        .def_ro("id", &lci::chat_tool_call::id)
        .def_ro("name", &lci::chat_tool_call::name)
        .def_ro("arguments", &lci::chat_tool_call::arguments, "The arguments as JSON text.");

    nb::class_<lci::chat_message>(m, "ChatMessage", "A parsed assistant reply.")
        .def_ro("content", &lci::chat_message::content)
        .def_ro("reasoning_content", &lci::chat_message::reasoning_content)
        .def_ro("tool_calls", &lci::chat_message::tool_calls);

    nb::class_<lci::chat_delta>(m, "ChatDelta", "One streamed change to the reply.")
        .def_ro("content", &lci::chat_delta::content)
        .def_ro("reasoning_content", &lci::chat_delta::reasoning_content)
        .def_ro("tool_index", &lci::chat_delta::tool_index, "-1 unless the delta belongs to a tool call.")
        .def_ro("tool_id", &lci::chat_delta::tool_id)
        .def_ro("tool_name", &lci::chat_delta::tool_name)
        .def_ro("tool_arguments", &lci::chat_delta::tool_arguments);

    nb::class_<lci::chat_stream>(m, "ChatStream", "Turns the growing text of a reply into deltas.")
        .def("update", &lci::chat_stream::update, nb::arg("text"), nb::arg("is_partial"),
             nb::call_guard<gil_release>(),
             "text is everything generated so far; returns what changed since the last call.")
        .def_prop_ro("message", &lci::chat_stream::message);

    nb::class_<lci::chat_prompt>(m, "ChatPrompt", "A rendered chat prompt with its grammar and parser.")
        .def_ro("prompt", &lci::chat_prompt::prompt)
        .def_ro("tokens", &lci::chat_prompt::tokens, "The prompt tokenized (BOS once).")
        .def_ro("stops", &lci::chat_prompt::stops)
        .def_ro("format", &lci::chat_prompt::format, "llama.cpp's format name, or 'generic'.")
        .def_ro("generic_tools", &lci::chat_prompt::generic_tools)
        .def_ro("has_tools", &lci::chat_prompt::has_tools)
        .def_ro("grammar", &lci::chat_prompt::grammar)
        .def_ro("grammar_lazy", &lci::chat_prompt::grammar_lazy)
        .def_ro("tool_choice_forced", &lci::chat_prompt::tool_choice_forced)
        .def("configure", &lci::chat_prompt::configure, nb::arg("model"), nb::arg("sampling"),
             "Puts the grammar, its triggers and preserved tokens into the sampling settings.")
        .def("parse", &lci::chat_prompt::parse, nb::arg("text"), nb::arg("is_partial") = false,
             nb::call_guard<gil_release>())
        .def("stream",
             [](std::shared_ptr<lci::chat_prompt> self) { return std::make_unique<lci::chat_stream>(self); },
             "A fresh ChatStream for this prompt.");

    nb::class_<lci::chat_templates>(m, "ChatTemplates", "The model's chat template (or an override).")
        .def(nb::init<std::shared_ptr<lci::model>, const std::string &>(), nb::arg("model"),
             nb::arg("template") = "", nb::call_guard<gil_release>())
        .def("apply",
             [](const lci::chat_templates & self, std::string messages_json, std::string tools_json,
                std::string tool_choice, bool parallel_tool_calls, std::string json_schema, bool json_object,
                std::string grammar, bool add_generation_prompt, bool enable_thinking, bool parse_reasoning,
                std::map<std::string, std::string> template_kwargs) {
                 lci::chat_request req = make_chat_request(
                     std::move(messages_json), std::move(tools_json), std::move(tool_choice), parallel_tool_calls,
                     std::move(json_schema), json_object, std::move(grammar), add_generation_prompt, enable_thinking,
                     parse_reasoning, std::move(template_kwargs));
                 gil_release release;
                 return self.apply(req);
             },
             nb::arg("messages_json"), nb::kw_only(), nb::arg("tools_json") = "", nb::arg("tool_choice") = "auto",
             nb::arg("parallel_tool_calls") = true, nb::arg("json_schema") = "", nb::arg("json_object") = false,
             nb::arg("grammar") = "", nb::arg("add_generation_prompt") = true, nb::arg("enable_thinking") = true,
             nb::arg("parse_reasoning") = true,
             nb::arg("template_kwargs") = std::map<std::string, std::string>{},
             "Renders OpenAI-shaped messages (JSON text) with the template; tools and response_format "
             "choose the grammar and the parser.")
        .def_prop_ro("source", &lci::chat_templates::source)
        .def_prop_ro("uses_jinja", &lci::chat_templates::uses_jinja)
        .def_prop_ro("fallback", &lci::chat_templates::fallback,
                     "The built-in format chosen because the GGUF has no template ('' if it has one).")
        .def_prop_ro("native_tool_calls", &lci::chat_templates::native_tool_calls,
                     "The template expresses tool calls itself (otherwise the generic protocol is used).")
        .def("capabilities", &lci::chat_templates::capabilities);

    m.def("builtin_chat_formats", &lci::builtin_chat_formats, "Names accepted as chat_format.");
    m.def(
        "trial_render_size",
        [] {
            const lci::render_size & s = lci::trial_size();
            return std::map<std::string, size_t>{
                {"messages", s.messages}, {"tools", s.tools}, {"longest", s.longest}, {"bytes", s.bytes},
                {"depth", s.depth}};
        },
        "The size of the conversation every chat template renders once, under limits, before its "
        "first use: a request larger in any measure renders first in a child process under the same "
        "limits.");
    m.def("schema_to_grammar", &lci::schema_to_grammar, nb::arg("schema_json"),
          "llama.cpp's JSON schema to GBNF converter; raises GrammarError.");
}
