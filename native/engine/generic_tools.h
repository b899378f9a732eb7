// The generic tool-call protocol, for chat templates that cannot express tool calls.
//
// The tools are described in the system message; a grammar composed from their parameter
// schemas restricts the reply to {"tool_calls": [{"name": ..., "arguments": {...}}, ...]} or,
// when the model may choose, {"response": "..."}. History is rewritten into the same JSON so
// that every template can render calls and results.
#pragma once

#include "chat.h" // common/chat.h

#include <nlohmann/json.hpp>

#include <string>

namespace lci {

using ojson = nlohmann::ordered_json;

// at most this many calls in one reply: a small model can otherwise repeat calls forever
constexpr int kMaxParallelCalls = 16;

inline common_json to_common(const ojson & j) {
    return common_json::parse(j.dump());
}

// The text of a message's content (a string, or the text parts joined by newlines).
std::string content_text(const ojson & message);

std::string generic_instructions(const ojson & tools, bool must_call, bool parallel);
std::string generic_grammar(const ojson & tools, bool must_call, bool parallel);
ojson generic_messages(const ojson & messages, const std::string & instructions);
// The message in a (possibly cut-off) reply; complete calls only.
common_chat_msg generic_parse(const std::string & text, bool is_partial);

} // namespace lci
