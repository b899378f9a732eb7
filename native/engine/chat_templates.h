// Chat: the model's own template, tool-call prompts, grammars and output parsing.
//
// Templates, native tool-call formats (Hermes, Llama 3.x, Qwen, Mistral, Functionary, ...),
// their lazy grammars and their parsers come from llama.cpp's common/chat.h. For a template that
// cannot express tool calls (llama.cpp then silently drops the tools), the engine uses its own
// generic protocol instead: the tool list goes into the system message and a grammar built from
// the tool schemas (json_schema_to_grammar) constrains the reply to
//     {"tool_calls": [{"name": ..., "arguments": {...}}]}
// or, when the model may choose, {"response": "..."}. Every tool-choice mode works on every model.
#pragma once

#include "sampler.h"

#include "chat.h" // common/chat.h (our header has another name on purpose)

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lci {

class model;

struct chat_request {
    std::string messages_json;          // OpenAI messages (a JSON array)
    std::string tools_json;             // OpenAI tools (a JSON array); "" for none
    std::string tool_choice = "auto";   // "auto", "none", "required", or a function name
    bool        parallel_tool_calls = true;
    std::string json_schema;            // response_format json_schema; "" for none
    bool        json_object = false;    // response_format json_object
    std::string grammar;                // a user GBNF grammar; "" for none
    bool        add_generation_prompt = true;
    bool        enable_thinking = true;
    bool        parse_reasoning = true; // put <think> content in reasoning_content
    std::map<std::string, std::string> template_kwargs; // extra Jinja variables (JSON values)
    // The encoded bytes of each {"type": "image_url"} content part, in message order (the
    // engine's projector decodes them; vision.h).
    std::vector<std::string> images;
};

struct chat_tool_call {
    std::string id;
    std::string name;
    std::string arguments; // JSON text
};

struct chat_message {
    std::string content;
    std::string reasoning_content;
    std::vector<chat_tool_call> tool_calls;
};

// One incremental change to the message being generated (OpenAI stream deltas).
struct chat_delta {
    std::string content;
    std::string reasoning_content;
    int32_t     tool_index = -1;  // >= 0 when this delta belongs to a tool call
    std::string tool_id;          // set on a tool call's first delta
    std::string tool_name;        // set on a tool call's first delta
    std::string tool_arguments;   // the next fragment of the arguments
};

// The rendered prompt and everything needed to constrain and parse the reply.
class chat_prompt {
public:
    std::string prompt;
    std::vector<llama_token> tokens; // the prompt tokenized (BOS once, special tokens parsed);
                                     // empty with images: the projector tokenizes (vision.h)
    std::string media_marker;        // with images: what stands for each image in prompt
    std::vector<std::string> stops;  // extra stop strings of the format
    std::string format;              // llama.cpp's format name, or "generic"
    bool generic_tools = false;      // our own protocol is in use
    bool has_tools = false;

    // Grammar, triggers and preserved tokens into the sampler settings.
    void configure(const model & m, sampling_params & sp) const;
    // The final message from the whole generated text.
    chat_message parse(const std::string & text, bool is_partial) const;

    // what configure() applies
    std::string grammar;
    bool grammar_lazy = false;
    bool grammar_is_output_format = false;
    std::vector<common_grammar_trigger> triggers;
    std::vector<std::string> preserved;
    std::string generation_prompt;
    common_chat_parser_params parser;
    bool tool_choice_forced = false; // required or named: a reply must be a call
};

// Turns the growing text of a streamed reply into deltas; tool call ids are stable.
class chat_stream {
public:
    explicit chat_stream(std::shared_ptr<const chat_prompt> prompt);
    // text: everything generated so far. is_partial: more may follow.
    std::vector<chat_delta> update(const std::string & text, bool is_partial);
    const chat_message & message() const { return current_; }

private:
    std::shared_ptr<const chat_prompt> prompt_;
    common_chat_msg previous_;
    chat_message current_;
    std::vector<std::string> ids_;
};

class chat_templates {
public:
    // template_override: a Jinja template, or the name of a llama.cpp built-in format ("chatml",
    // "llama2", "llama3", "gemma", ...); "" uses the GGUF's own template. A GGUF without one gets
    // the built-in format whose role markers its vocabulary holds (gemma, llama3, chatml,
    // llama2), else ChatML.
    chat_templates(std::shared_ptr<model> m, const std::string & template_override);

    // Throws invalid_argument_error for malformed messages, tools or settings.
    std::shared_ptr<chat_prompt> apply(const chat_request & req) const;

    std::string source() const;
    bool uses_jinja() const { return use_jinja_; }
    bool native_tool_calls() const; // the template can express tool calls itself
    std::map<std::string, bool> capabilities() const;
    // The built-in format chosen for a GGUF without a template ("" when it has one).
    const std::string & fallback() const { return fallback_; }

private:
    std::shared_ptr<chat_prompt> apply_request(const chat_request & req) const;
    // A request larger than the trial render's conversation renders first in a child process
    // under limits (template_check.h).
    void guard(const nlohmann::ordered_json & messages, const nlohmann::ordered_json & tools, const chat_request & req) const;

    std::string fallback_;
    std::shared_ptr<model> model_;
    common_chat_templates_ptr templates_;
    bool use_jinja_ = true;
};

// Names of llama.cpp's built-in chat formats.
std::vector<std::string> builtin_chat_formats();

// A GBNF grammar for a JSON schema (llama.cpp's converter); throws grammar_error.
std::string schema_to_grammar(const std::string & schema_json);

// A random id for a tool call ("call_" + 24 alphanumerics).
std::string make_tool_call_id();

} // namespace lci
