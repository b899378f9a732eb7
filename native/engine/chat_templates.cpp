#include "chat_templates.h"

#include "errors.h"
#include "logging.h"
#include "model.h"

#include "generic_tools.h"
#include "template_check.h"

#include "json-schema-to-grammar.h" // common/

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>

namespace lci {

namespace {

constexpr const char * kGenericFormat = "generic";

ojson parse_json(const std::string & text, const char * what) {
    try {
        return ojson::parse(text);
    } catch (const std::exception & e) {
        throw invalid_argument_error(std::string(what) + " is not valid JSON: " + e.what());
    }
}


void validate_messages(const ojson & messages) {
    static const std::set<std::string> roles = {"system", "developer", "user", "assistant", "tool"};
    if (!messages.is_array() || messages.empty()) {
        throw invalid_argument_error("messages must be a non-empty list");
    }
    for (size_t i = 0; i < messages.size(); ++i) {
        const ojson & m = messages[i];
        const std::string where = "messages[" + std::to_string(i) + "]";
        if (!m.is_object() || !m.contains("role") || !m.at("role").is_string()) {
            throw invalid_argument_error(where + " needs a string 'role'");
        }
        const std::string role = m.at("role").get<std::string>();
        if (roles.count(role) == 0) {
            throw invalid_argument_error(where + " has unknown role '" + role +
                                         "' (expected system, developer, user, assistant or tool)");
        }
        if (m.contains("content")) {
            const ojson & c = m.at("content");
            if (!c.is_null() && !c.is_string() && !c.is_array()) {
                throw invalid_argument_error(where + ".content must be a string, a list of parts, or null");
            }
            if (c.is_array()) {
                for (const auto & part : c) {
                    if (part.is_object() && part.value("type", "") == "image_url") {
                        if (role != "user") {
                            throw invalid_argument_error(where + " (role " + role + ") has an image; only user messages may");
                        }
                        continue;
                    }
                    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
                        !part.at("text").is_string()) {
                        throw invalid_argument_error(where + ".content parts must be {\"type\": \"text\", \"text\": ...} "
                                                     "or {\"type\": \"image_url\", ...}");
                    }
                }
            }
        }
        if (role == "tool" && !m.contains("tool_call_id")) {
            throw invalid_argument_error(where + " (role tool) needs 'tool_call_id'");
        }
        if (m.contains("tool_calls") && !m.at("tool_calls").is_null()) {
            if (role != "assistant" || !m.at("tool_calls").is_array()) {
                throw invalid_argument_error(where + ".tool_calls must be a list on an assistant message");
            }
            for (const auto & tc : m.at("tool_calls")) {
                if (!tc.is_object() || !tc.contains("function") || !tc.at("function").is_object() ||
                    !tc.at("function").contains("name")) {
                    throw invalid_argument_error(where + ".tool_calls entries need function.name");
                }
            }
        }
    }
}

// Replaces each image part of the messages with llama.cpp's media-marker part holding `marker`;
// returns how many there were.
size_t mark_images(ojson & messages, const std::string & marker) {
    size_t n = 0;
    for (auto & m : messages) {
        if (!m.contains("content") || !m.at("content").is_array()) {
            continue;
        }
        for (auto & part : m.at("content")) {
            if (part.value("type", "") == "image_url") {
                part = ojson{{"type", "media_marker"}, {"text", marker}};
                n++;
            }
        }
    }
    return n;
}

// A marker no message text contains: random, per request.
std::string make_media_marker() {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    char buf[48];
    snprintf(buf, sizeof(buf), "<__image_%016llx__>", (unsigned long long) rng());
    return buf;
}

// OpenAI tools, validated; each one's parameters default to an empty object schema.
ojson normalize_tools(const ojson & tools) {
    if (!tools.is_array()) {
        throw invalid_argument_error("tools must be a list");
    }
    ojson out = ojson::array();
    std::set<std::string> names;
    for (size_t i = 0; i < tools.size(); ++i) {
        const ojson & t = tools[i];
        const std::string where = "tools[" + std::to_string(i) + "]";
        const bool is_function = !t.is_object() || !t.contains("type") ||
                                 (t.at("type").is_string() && t.at("type").get<std::string>() == "function");
        if (!t.is_object() || !is_function || !t.contains("function") ||
            !t.at("function").is_object()) {
            throw invalid_argument_error(where + " must be {\"type\": \"function\", \"function\": {...}}");
        }
        ojson fn = t.at("function");
        if (!fn.contains("name") || !fn.at("name").is_string() || fn.at("name").get<std::string>().empty()) {
            throw invalid_argument_error(where + ".function needs a non-empty 'name'");
        }
        const std::string name = fn.at("name").get<std::string>();
        if (!names.insert(name).second) {
            throw invalid_argument_error("two tools are named '" + name + "'");
        }
        if (!fn.contains("parameters") || fn.at("parameters").is_null()) {
            fn["parameters"] = ojson{{"type", "object"}, {"properties", ojson::object()}};
        } else if (!fn.at("parameters").is_object()) {
            throw invalid_argument_error(where + ".function.parameters must be a JSON schema object");
        }
        out.push_back(ojson{{"type", "function"}, {"function", fn}});
    }
    return out;
}

chat_message from_common(const common_chat_msg & m) {
    chat_message out;
    out.content = m.content;
    if (out.content.empty() && !m.content_parts.empty()) {
        out.content = m.render_content("");
    }
    out.reasoning_content = m.reasoning_content;
    for (const auto & tc : m.tool_calls) {
        out.tool_calls.push_back({tc.id, tc.name, tc.arguments});
    }
    return out;
}

} // namespace

std::string make_tool_call_id() {
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    thread_local std::mt19937_64 rng(std::random_device{}());
    std::uniform_int_distribution<size_t> pick(0, sizeof(chars) - 2);
    std::string id = "call_";
    for (int i = 0; i < 24; ++i) {
        id += chars[pick(rng)];
    }
    return id;
}

std::vector<std::string> builtin_chat_formats() {
    const int32_t n = llama_chat_builtin_templates(nullptr, 0);
    std::vector<const char *> names((size_t) std::max(n, 0));
    llama_chat_builtin_templates(names.data(), names.size());
    return std::vector<std::string>(names.begin(), names.end());
}

std::string schema_to_grammar(const std::string & schema_json) {
    const ojson schema = parse_json(schema_json, "the JSON schema");
    if (!schema.is_object() && !schema.is_boolean()) {
        throw grammar_error("a JSON schema must be an object");
    }
    log_capture capture;
    try {
        return json_schema_to_grammar(to_common(schema));
    } catch (const std::exception & e) {
        throw grammar_error(capture.explain(std::string("the JSON schema cannot be turned into a grammar: ") + e.what()));
    }
}

// --- chat_prompt ----------------------------------------------------------------------------

void chat_prompt::configure(const model & m, sampling_params & sp) const {
    if (grammar.empty()) {
        return;
    }
    sp.grammar = grammar;
    sp.grammar_lazy = grammar_lazy;
    sp.grammar_is_output_format = grammar_is_output_format;
    sp.generation_prompt = generation_prompt;
    for (const auto & t : triggers) {
        switch (t.type) {
            case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:         sp.grammar_trigger_words.push_back(t.value); break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:      sp.grammar_trigger_patterns.push_back(t.value); break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: sp.grammar_trigger_patterns_full.push_back(t.value); break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:        sp.grammar_trigger_tokens.push_back(t.token); break;
        }
    }
    for (const auto & piece : preserved) {
        const auto ids = m.tokenize(piece, false, true);
        if (ids.size() == 1) {
            sp.preserved_tokens.push_back(ids[0]);
        }
    }
}

chat_message chat_prompt::parse(const std::string & text, bool is_partial) const {
    chat_stream stream(std::make_shared<chat_prompt>(*this));
    stream.update(text, is_partial);
    return stream.message();
}

// --- chat_stream ----------------------------------------------------------------------------

namespace {

bool starts_with(const std::string & s, const std::string & prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

// A call that repeats an earlier call of the same reply exactly (same name, same arguments) is a
// small model looping, not a second request, and running a tool twice can do harm: it is
// dropped. While the last call is still being written it is held back for as long as it could
// turn out to be such a repeat, so streamed deltas and the final message always agree.
void drop_repeated_calls(common_chat_msg & msg, bool is_partial) {
    std::vector<common_chat_tool_call> kept;
    for (size_t i = 0; i < msg.tool_calls.size(); ++i) {
        const auto & tc = msg.tool_calls[i];
        const bool unfinished = is_partial && i + 1 == msg.tool_calls.size();
        bool repeat = false;
        for (const auto & k : kept) {
            repeat = unfinished ? starts_with(k.name, tc.name) && starts_with(k.arguments, tc.arguments)
                                : k.name == tc.name && k.arguments == tc.arguments;
            if (repeat) {
                break;
            }
        }
        if (!repeat) {
            kept.push_back(tc);
        }
    }
    msg.tool_calls = std::move(kept);
}

} // namespace

chat_stream::chat_stream(std::shared_ptr<const chat_prompt> prompt) : prompt_(std::move(prompt)) {
    previous_.role = "assistant";
}

std::vector<chat_delta> chat_stream::update(const std::string & text, bool is_partial) {
    common_chat_msg msg;
    if (prompt_->generic_tools) {
        msg = generic_parse(text, is_partial);
    } else {
        try {
            msg = common_chat_parse(text, is_partial, prompt_->parser);
        } catch (const std::exception &) {
            if (is_partial) {
                return {}; // wait for more text
            }
            msg = common_chat_msg();
            msg.role = "assistant";
            msg.content = text;
        }
    }
    drop_repeated_calls(msg, is_partial);
    msg.set_tool_call_ids(ids_, make_tool_call_id);
    std::vector<common_chat_msg_diff> diffs;
    try {
        diffs = common_chat_msg_diff::compute_diffs(previous_, msg);
    } catch (const std::exception &) {
        if (is_partial) {
            return {}; // a partial parse went back on itself: wait for more text
        }
        throw;
    }
    previous_ = msg;
    current_ = from_common(msg);

    std::vector<chat_delta> out;
    for (const auto & d : diffs) {
        chat_delta delta;
        delta.content = d.content_delta;
        delta.reasoning_content = d.reasoning_content_delta;
        if (d.tool_call_index != std::string::npos) {
            delta.tool_index = (int32_t) d.tool_call_index;
            delta.tool_id = d.tool_call_delta.id;
            delta.tool_name = d.tool_call_delta.name;
            delta.tool_arguments = d.tool_call_delta.arguments;
        }
        out.push_back(std::move(delta));
    }
    return out;
}

// --- chat_templates -------------------------------------------------------------------------

namespace {

// For a GGUF without a chat template: the llama.cpp built-in format whose role markers are
// single control tokens of the vocabulary, else ChatML.
std::string fallback_format(const model & m) {
    static const std::pair<const char *, const char *> candidates[] = {
        {"<start_of_turn>", "gemma"},
        {"<|start_header_id|>", "llama3"},
        {"<|im_start|>", "chatml"},
        {"[INST]", "llama2"},
    };
    for (const auto & [marker, format] : candidates) {
        const auto ids = m.tokenize(marker, false, true);
        if (ids.size() == 1 && (m.is_control(ids[0]) || llama_vocab_get_attr(m.vocab(), ids[0]) & LLAMA_TOKEN_ATTR_USER_DEFINED)) {
            return format;
        }
    }
    return "chatml";
}

} // namespace

chat_templates::chat_templates(std::shared_ptr<model> m, const std::string & template_override) : model_(std::move(m)) {
    std::string override_src = template_override;
    if (override_src.empty() && model_->chat_template().empty()) {
        override_src = fallback_format(*model_);
        fallback_ = override_src;
    }
    if (!override_src.empty() && override_src != "chatml") {
        const auto names = builtin_chat_formats();
        if (std::find(names.begin(), names.end(), override_src) != names.end()) {
            use_jinja_ = false; // a llama.cpp built-in format by name
        }
    }
    if (use_jinja_) {
        // before llama.cpp renders it (it does, to learn the template's capabilities)
        if (!override_src.empty()) {
            check_template(override_src, "the chat template");
        } else {
            check_template(model_->chat_template(), "the model's chat template");
            check_template(model_->chat_template("tool_use"), "the model's tool-use chat template");
        }
    }
    log_capture capture;
    try {
        templates_ = common_chat_templates_init(model_->get(), override_src);
    } catch (const std::exception & e) {
        throw invalid_argument_error(capture.explain(std::string("the chat template does not parse: ") + e.what()));
    }
    if (!templates_) {
        throw invalid_argument_error(capture.explain("the chat template could not be loaded"));
    }
}

std::string chat_templates::source() const {
    return common_chat_templates_source(templates_.get());
}

std::map<std::string, bool> chat_templates::capabilities() const {
    return common_chat_templates_get_caps(templates_.get());
}

bool chat_templates::native_tool_calls() const {
    if (!use_jinja_) {
        return false;
    }
    const auto caps = capabilities();
    const auto it = caps.find("supports_tool_calls");
    return it != caps.end() && it->second;
}

std::shared_ptr<chat_prompt> chat_templates::apply(const chat_request & req) const {
    try {
        return apply_request(req);
    } catch (const ojson::exception & e) {
        // a value of the wrong JSON type that a check above missed: the caller's input
        throw invalid_argument_error(std::string("malformed chat request: ") + e.what());
    }
}

namespace {

std::string special_text(const model & m, llama_token token) {
    return token == LLAMA_TOKEN_NULL ? std::string() : m.token_to_piece(token, true);
}

} // namespace

void chat_templates::guard(const ojson & messages, const ojson & tools, const chat_request & req) const {
    const render_size size = measure_render(messages, tools);
    if (trial_covers(size)) {
        return;
    }
    ojson inputs = {{"messages", messages},
                    {"tools", tools},
                    {"bos_token", special_text(*model_, model_->bos())},
                    {"eos_token", special_text(*model_, model_->eos())},
                    {"add_generation_prompt", req.add_generation_prompt}};
    for (const auto & [key, value] : req.template_kwargs) {
        inputs[key] = ojson::parse(value, nullptr, false); // a malformed value: the render reports it
    }
    std::string src;
    if (!tools.empty()) {
        src = common_chat_templates_source(templates_.get(), "tool_use");
    }
    if (src.empty()) {
        src = common_chat_templates_source(templates_.get());
    }
    guard_render(src, inputs.dump(), size);
}

std::shared_ptr<chat_prompt> chat_templates::apply_request(const chat_request & req) const {
    ojson messages = parse_json(req.messages_json, "messages");
    validate_messages(messages);
    std::string marker = make_media_marker();
    const size_t n_images = mark_images(messages, marker);
    if (n_images != req.images.size()) {
        throw invalid_argument_error("the messages hold " + std::to_string(n_images) + " image parts but " +
                                     std::to_string(req.images.size()) + " images were given");
    }
    if (n_images == 0) {
        marker.clear();
    }
    ojson tools = ojson::array();
    if (!req.tools_json.empty()) {
        tools = normalize_tools(parse_json(req.tools_json, "tools"));
    }
    const std::string & choice = req.tool_choice;
    const bool named = choice != "auto" && choice != "none" && choice != "required";
    if (named || choice == "required") {
        if (tools.empty()) {
            throw invalid_argument_error("tool_choice '" + choice + "' needs tools");
        }
    }
    if (named) {
        ojson only = ojson::array();
        for (const auto & t : tools) {
            if (t.at("function").at("name") == choice) {
                only.push_back(t);
            }
        }
        if (only.empty()) {
            std::string known;
            for (const auto & t : tools) {
                known += (known.empty() ? "" : ", ") + t.at("function").at("name").get<std::string>();
            }
            throw invalid_argument_error("tool_choice names '" + choice + "', which is not among the tools (" + known + ")");
        }
        tools = only;
    }
    const bool tools_active = !tools.empty() && choice != "none";
    const bool must_call = tools_active && (named || choice == "required");
    const bool wants_schema = !req.json_schema.empty() || req.json_object;
    if (!req.grammar.empty() && (tools_active || wants_schema)) {
        throw invalid_argument_error("a grammar cannot be combined with tools or response_format");
    }
    if (wants_schema && tools_active) {
        throw invalid_argument_error("response_format cannot be combined with tools; use tool_choice='none' or drop one");
    }
    std::string schema_text = req.json_schema;
    if (req.json_object && schema_text.empty()) {
        schema_text = R"({"type": "object"})";
    }
    if (!schema_text.empty()) {
        (void) schema_to_grammar(schema_text); // a clear GrammarError for a bad schema, before rendering
    }

    auto out = std::make_shared<chat_prompt>();
    out->has_tools = tools_active;
    out->tool_choice_forced = must_call;

    common_chat_templates_inputs inputs;
    inputs.use_jinja = use_jinja_;
    inputs.add_generation_prompt = req.add_generation_prompt;
    inputs.enable_thinking = req.enable_thinking;
    inputs.reasoning_format = req.parse_reasoning ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
    inputs.chat_template_kwargs = req.template_kwargs;
    inputs.add_bos = false;
    inputs.add_eos = false;

    bool generic = tools_active && !native_tool_calls();
    if (use_jinja_) {
        guard(messages, tools_active && !generic ? tools : ojson::array(), req);
    }
    log_capture capture;
    common_chat_params params;
    try {
        if (!generic) {
            inputs.messages = common_chat_msgs_parse_oaicompat(to_common(messages));
            if (tools_active) {
                inputs.tools = common_chat_tools_parse_oaicompat(to_common(tools));
                inputs.tool_choice = must_call ? COMMON_CHAT_TOOL_CHOICE_REQUIRED : COMMON_CHAT_TOOL_CHOICE_AUTO;
                inputs.parallel_tool_calls = req.parallel_tool_calls;
            }
            if (use_jinja_) {
                inputs.json_schema = schema_text;
                inputs.grammar = req.grammar;
            }
            params = common_chat_templates_apply(templates_.get(), inputs);
            if (!req.grammar.empty()) {
                params.grammar = req.grammar; // a user grammar applies to the whole reply
                params.grammar_lazy = false;
                params.grammar_triggers.clear();
            } else if (!use_jinja_ && !schema_text.empty()) {
                params.grammar = schema_to_grammar(schema_text);
            }
            // a template that took the tools but gave no way to call them gets the generic protocol
            generic = tools_active && params.grammar.empty();
        }
        if (generic) {
            const std::string instructions = generic_instructions(tools, must_call, req.parallel_tool_calls);
            inputs.messages = common_chat_msgs_parse_oaicompat(to_common(generic_messages(messages, instructions)));
            inputs.tools.clear();
            inputs.tool_choice = COMMON_CHAT_TOOL_CHOICE_NONE;
            inputs.json_schema.clear();
            inputs.grammar.clear();
            params = common_chat_templates_apply(templates_.get(), inputs);
            params.grammar = generic_grammar(tools, must_call, req.parallel_tool_calls);
            params.grammar_lazy = false;
            params.grammar_triggers.clear();
        }
    } catch (const llama_error &) {
        throw;
    } catch (const std::exception & e) {
        throw invalid_argument_error(capture.explain(std::string("the chat template failed to render: ") + e.what()));
    }

    out->prompt = params.prompt;
    out->media_marker = marker;
    if (marker.empty()) {
        out->tokens = model_->tokenize(out->prompt, true, true);
        if (out->tokens.size() >= 2 && out->tokens[0] == model_->bos() && out->tokens[1] == model_->bos()) {
            out->tokens.erase(out->tokens.begin()); // the template wrote the BOS already
        }
    }
    out->stops = params.additional_stops;
    out->generic_tools = generic;
    out->format = generic ? kGenericFormat : common_chat_format_name(params.format);
    out->grammar = params.grammar;
    out->grammar_lazy = params.grammar_lazy;
    out->grammar_is_output_format = !generic && req.grammar.empty() && !params.grammar.empty();
    out->triggers = params.grammar_triggers;
    out->preserved = params.preserved_tokens;
    out->generation_prompt = params.generation_prompt;
    out->parser = common_chat_parser_params(params);
    out->parser.reasoning_format = inputs.reasoning_format;
    out->parser.parse_tool_calls = tools_active;
    if (!params.parser.empty()) {
        out->parser.parser.load(params.parser);
    }
    return out;
}

} // namespace lci
