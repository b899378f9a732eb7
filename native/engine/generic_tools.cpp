#include "generic_tools.h"

#include "errors.h"

#include "json-schema-to-grammar.h" // common/

#include <cstring>
#include <vector>

namespace lci {

std::string content_text(const ojson & message) {
    if (!message.contains("content")) {
        return {};
    }
    const ojson & c = message.at("content");
    if (c.is_string()) {
        return c.get<std::string>();
    }
    std::string out;
    if (c.is_array()) {
        for (const auto & part : c) {
            if (part.is_object() && part.value("type", "") == "text" && part.contains("text") && part.at("text").is_string()) {
                if (!out.empty()) {
                    out += "\n";
                }
                out += part.at("text").get<std::string>();
            }
        }
    }
    return out;
}

namespace {

// The decoded prefix of the string value in {"response": "...  (for streaming).
std::string partial_response(const std::string & text) {
    size_t i = 0;
    auto ws = [&] {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) {
            ++i;
        }
    };
    auto lit = [&](const char * s) {
        const size_t n = std::strlen(s);
        if (text.compare(i, n, s) != 0) {
            return false;
        }
        i += n;
        return true;
    };
    ws();
    if (!lit("{")) return {};
    ws();
    if (!lit("\"response\"")) return {};
    ws();
    if (!lit(":")) return {};
    ws();
    if (!lit("\"")) return {};
    // decode complete escapes only; stop at the closing quote or where the text ends
    std::string raw = "\"";
    for (; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '"') {
            break;
        }
        if (c == '\\') {
            if (i + 1 >= text.size()) break;
            const char e = text[i + 1];
            if (e == 'u') {
                if (i + 6 > text.size()) break;
                // a high surrogate needs its low half before it can be decoded
                const std::string hex = text.substr(i + 2, 4);
                const unsigned long cp = std::strtoul(hex.c_str(), nullptr, 16);
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (i + 12 > text.size()) break;
                    raw.append(text, i, 12);
                    i += 11;
                    continue;
                }
                raw.append(text, i, 6);
                i += 5;
                continue;
            }
            raw.append(text, i, 2);
            ++i;
            continue;
        }
        raw += c;
    }
    raw += "\"";
    const ojson j = ojson::parse(raw, nullptr, false);
    return j.is_string() ? j.get<std::string>() : std::string();
}

// The complete call objects of a cut-off {"tool_calls": [ ... reply (streaming, or max_tokens).
std::vector<common_chat_tool_call> complete_calls(const std::string & text) {
    std::vector<common_chat_tool_call> calls;
    static const std::string head = "{\"tool_calls\": [";
    if (text.compare(0, head.size(), head) != 0) {
        return calls;
    }
    size_t i = head.size();
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ',' || text[i] == ' ' || text[i] == '\n')) {
            ++i;
        }
        if (i >= text.size() || text[i] != '{') {
            break;
        }
        // find the matching brace, skipping strings
        int depth = 0;
        bool in_string = false;
        size_t end = std::string::npos;
        for (size_t k = i; k < text.size() && end == std::string::npos; ++k) {
            const char c = text[k];
            if (in_string) {
                if (c == '\\') {
                    ++k;
                } else if (c == '"') {
                    in_string = false;
                }
            } else if (c == '"') {
                in_string = true;
            } else if (c == '{') {
                ++depth;
            } else if (c == '}' && --depth == 0) {
                end = k;
            }
        }
        if (end == std::string::npos) {
            break;
        }
        const ojson call = ojson::parse(text.substr(i, end - i + 1), nullptr, false);
        if (call.is_object() && call.contains("name") && call.at("name").is_string()) {
            common_chat_tool_call tc;
            tc.name = call.at("name").get<std::string>();
            tc.arguments = call.contains("arguments") ? call.at("arguments").dump() : "{}";
            calls.push_back(tc);
        }
        i = end + 1;
    }
    return calls;
}

} // namespace

std::string generic_instructions(const ojson & tools, bool must_call, bool parallel) {
    std::string s = must_call ? "Answer by calling tools. The tools, each with a JSON schema of its arguments:\n"
                              : "You may call tools, but only when the user's request needs one. "
                                "The tools, each with a JSON schema of its arguments:\n";
    for (const auto & t : tools) {
        const ojson & fn = t.at("function");
        ojson line{{"name", fn.at("name")}};
        if (fn.contains("description")) {
            line["description"] = fn.at("description");
        }
        line["parameters"] = fn.at("parameters");
        s += line.dump() + "\n";
    }
    s += "\nReply with one JSON object and nothing else:\n";
    s += parallel ? "- to call tools: {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}, ...]}\n"
                  : "- to call a tool: {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}]}\n";
    if (!must_call) {
        s += "- to answer directly: {\"response\": \"<your answer>\"}\n";
    }
    s += "Tool results come back as {\"tool_response\": ...}.";
    return s;
}

// The reply grammar: a compact envelope (no room for stray whitespace) around each tool's
// argument schema, composed with llama.cpp's grammar builder.
std::string generic_grammar(const ojson & tools, bool must_call, bool parallel) {
    std::vector<common_chat_schema_document> docs; // the builder keeps pointers into these
    docs.reserve(tools.size() + 1);
    for (const auto & t : tools) {
        const ojson & fn = t.at("function");
        try {
            docs.push_back(common_chat_schema_from_json(to_common(fn.at("parameters"))));
        } catch (const std::exception & e) {
            throw grammar_error("the parameters schema of tool '" + fn.at("name").get<std::string>() +
                                "' cannot be turned into a grammar: " + e.what());
        }
    }
    // an answer is never empty: {"response": ""} would end an agent's run with no answer
    docs.push_back(common_chat_schema_from_json(to_common(ojson{{"type", "string"}, {"minLength", 1}})));
    try {
        return build_grammar([&](const common_grammar_builder & b) {
            std::string alternatives;
            for (size_t i = 0; i < tools.size(); ++i) {
                const ojson & name = tools[i].at("function").at("name");
                const std::string args = b.add_schema("args-" + std::to_string(i), *docs[i].root);
                const std::string head = gbnf_format_literal("{\"name\": " + name.dump() + ", \"arguments\": ");
                const std::string rule = b.add_rule("call-" + std::to_string(i), head + " " + args + " \"}\"");
                alternatives += (alternatives.empty() ? "" : " | ") + rule;
            }
            const std::string call = b.add_rule("call", alternatives);
            // a small model can repeat calls forever: at most kMaxParallelCalls per reply
            const std::string more = parallel ? " ( \", \" " + call + " ){0," + std::to_string(kMaxParallelCalls - 1) + "}" : "";
            const std::string calls =
                b.add_rule("calls", gbnf_format_literal("{\"tool_calls\": [") + " " + call + more + " \"]}\"");
            if (must_call) {
                b.add_rule("root", calls);
                return;
            }
            const std::string text = b.add_schema("response-text", *docs.back().root);
            const std::string response = b.add_rule("response", gbnf_format_literal("{\"response\": ") + " " + text + " \"}\"");
            b.add_rule("root", calls + " | " + response);
        });
    } catch (const std::exception & e) {
        throw grammar_error(std::string("could not build the tool-call grammar: ") + e.what());
    }
}

// History in the generic protocol: calls and results become the JSON the model is told to use,
// so that every template can render them.
ojson generic_messages(const ojson & messages, const std::string & instructions) {
    ojson out = ojson::array();
    bool placed = false;
    for (const auto & m : messages) {
        const std::string role = m.at("role").get<std::string>();
        if ((role == "system" || role == "developer") && !placed) {
            const std::string text = content_text(m);
            out.push_back(ojson{{"role", "system"}, {"content", text.empty() ? instructions : text + "\n\n" + instructions}});
            placed = true;
        } else if (role == "assistant") {
            ojson envelope;
            if (m.contains("tool_calls") && m.at("tool_calls").is_array() && !m.at("tool_calls").empty()) {
                ojson calls = ojson::array();
                for (const auto & tc : m.at("tool_calls")) {
                    const ojson & fn = tc.at("function");
                    ojson args = ojson::object();
                    if (fn.contains("arguments")) {
                        const ojson & a = fn.at("arguments");
                        if (a.is_string()) {
                            args = ojson::parse(a.get<std::string>(), nullptr, false);
                            if (args.is_discarded()) {
                                args = a;
                            }
                        } else {
                            args = a;
                        }
                    }
                    calls.push_back(ojson{{"name", fn.at("name")}, {"arguments", args}});
                }
                envelope = ojson{{"tool_calls", calls}};
            } else {
                envelope = ojson{{"response", content_text(m)}};
            }
            out.push_back(ojson{{"role", "assistant"}, {"content", envelope.dump()}});
        } else if (role == "tool") {
            ojson result{{"tool_call_id", m.at("tool_call_id")}};
            if (m.contains("name")) {
                result["name"] = m.at("name");
            }
            result["content"] = content_text(m);
            out.push_back(ojson{{"role", "user"}, {"content", ojson{{"tool_response", result}}.dump()}});
        } else {
            out.push_back(ojson{{"role", role == "developer" ? "system" : role}, {"content", content_text(m)}});
        }
    }
    if (!placed) {
        out.insert(out.begin(), ojson{{"role", "system"}, {"content", instructions}});
    }
    return out;
}

common_chat_msg generic_parse(const std::string & text, bool is_partial) {
    common_chat_msg msg;
    msg.role = "assistant";
    const ojson j = ojson::parse(text, nullptr, false);
    if (!j.is_discarded() && j.is_object()) {
        if (j.contains("tool_calls") && j.at("tool_calls").is_array()) {
            for (const auto & call : j.at("tool_calls")) {
                if (!call.is_object() || !call.contains("name") || !call.at("name").is_string()) {
                    continue;
                }
                common_chat_tool_call tc;
                tc.name = call.at("name").get<std::string>();
                tc.arguments = call.contains("arguments") ? call.at("arguments").dump() : "{}";
                msg.tool_calls.push_back(tc);
            }
            return msg;
        }
        if (j.contains("response") && j.at("response").is_string()) {
            msg.content = j.at("response").get<std::string>();
            return msg;
        }
    }
    // cut off (streaming, or max_tokens): the calls completed so far, or the answer so far
    msg.tool_calls = complete_calls(text);
    if (msg.tool_calls.empty() && text.compare(0, 14, "{\"tool_calls\":") != 0) {
        msg.content = partial_response(text);
        if (!is_partial && msg.content.empty()) {
            msg.content = text; // not the protocol at all: keep what the model said
        }
    }
    return msg;
}

} // namespace lci
