#include "template_check.h"

#include "errors.h"

#include "jinja/lexer.h" // common/
#include "jinja/parser.h"
#include "jinja/runtime.h"
#include "json.h" // common/

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

#ifndef _WIN32
#include <pthread.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace lci {

namespace {

constexpr int64_t kMaxTemplateLiteral = 1000000;

// llama.cpp's Jinja parser recurses once (through several frames) per nested block, bracket,
// prefix operator and inline if; 100,000 nested ifs or parentheses overflowed the C++ stack
// (SIGSEGV) while parsing. Real templates nest about ten levels.
constexpr int kMaxTemplateNesting = 200;

bool opens_block(const std::string & keyword) {
    return keyword == "if" || keyword == "for" || keyword == "macro" || keyword == "call" || keyword == "filter" ||
           keyword == "generation" || keyword == "set";
}

// The deepest nesting the parser would recurse through, from the tokens alone.
int nesting_depth(const std::vector<jinja::token> & tokens) {
    using T = jinja::token;
    int blocks = 0, brackets = 0, prefix_run = 0, inline_ifs = 0, deepest = 0;
    bool in_tag = false, statement_start = false, set_has_equals = false;
    int set_blocks_pending = 0;
    for (const auto & tok : tokens) {
        switch (tok.t) {
            case T::open_statement:
            case T::open_expression:
                in_tag = true;
                statement_start = tok.t == T::open_statement;
                brackets = prefix_run = inline_ifs = 0;
                set_has_equals = false;
                set_blocks_pending = 0;
                continue;
            case T::close_statement:
            case T::close_expression:
                if (set_blocks_pending > 0 && !set_has_equals) {
                    ++blocks; // {% set x %}...{% endset %}
                }
                in_tag = false;
                continue;
            case T::open_paren:
            case T::open_square_bracket:
            case T::open_curly_bracket:
                ++brackets;
                break;
            case T::close_paren:
            case T::close_square_bracket:
            case T::close_curly_bracket:
                --brackets;
                break;
            case T::equals:
                set_has_equals = true;
                break;
            default:
                break;
        }
        if (!in_tag) {
            continue;
        }
        const bool keyword = tok.t == T::identifier;
        if (statement_start && keyword) {
            if (tok.value == "set") {
                set_blocks_pending = 1;
            } else if (opens_block(tok.value)) {
                ++blocks;
            } else if (tok.value.rfind("end", 0) == 0) {
                --blocks;
            }
            statement_start = false;
            continue;
        }
        statement_start = false;
        const bool prefix = tok.t == T::unary_operator || (tok.t == T::additive_binary_operator && prefix_run > 0) ||
                            (keyword && tok.value == "not");
        prefix_run = prefix ? prefix_run + 1 : 0;
        if (keyword && tok.value == "if") {
            ++inline_ifs;
        }
        deepest = std::max(deepest, blocks + brackets + prefix_run + inline_ifs);
    }
    return std::max(deepest, blocks);
}

#ifndef _WIN32

// Renders run in a child process (fork) under a CPU-time and a memory limit. llama.cpp's Jinja
// runtime has no step counter, output limit or interrupt, so in this process a template that
// loops for minutes or doubles a string until the memory is gone cannot be stopped; in a child
// it can be killed.
constexpr int kRenderCpuSeconds = 5;
constexpr rlim_t kRenderExtraMemory = rlim_t(1) << 30; // beyond what the process had
constexpr size_t kMaxRendered = size_t(16) << 20;     // at least; more for a larger input
constexpr int kRenderWallSeconds = 60; // a child that uses no CPU (stuck on a lock): inconclusive

enum child_exit : int { child_ok = 0, child_too_long = 2, child_out_of_memory = 3 };

// The trial render's conversation: larger in every measure (render_size) than all but unusually
// large requests, which alone then pay for a guard render: 130 messages (a 16 KiB document
// first, then 32 rounds of question, tool call, tool result and answer of 1 KiB each) and 16
// tools, about 130 KiB of JSON.
constexpr int kTrialRounds = 32;
constexpr size_t kTrialDocument = 16384; // characters of the first user message
constexpr size_t kTrialTurn = 1024;      // of each later message
constexpr int kTrialTools = 16;
constexpr size_t kTrialDescription = 512;

std::string filler(size_t n, int seed) {
    static const char * const words[] = {"the", "model", "reads", "a", "long", "passage", "about", "rivers,",
                                         "and", "answers", "with", "care."};
    std::string out;
    for (size_t i = (size_t) seed; out.size() < n; ++i) {
        out += words[i % (sizeof words / sizeof words[0])];
        out += ' ';
    }
    out.resize(n);
    return out;
}

nlohmann::ordered_json trial_messages() {
    using json = nlohmann::ordered_json;
    json messages = json::array({{{"role", "system"}, {"content", "You are a helpful assistant."}}});
    for (int i = 0; i < kTrialRounds; ++i) {
        const std::string id = "call_" + std::to_string(i);
        messages.push_back({{"role", "user"}, {"content", filler(i == 0 ? kTrialDocument : kTrialTurn, i)}});
        messages.push_back({{"role", "assistant"},
                            {"content", ""},
                            {"tool_calls",
                             json::array({{{"id", id},
                                           {"type", "function"},
                                           {"function", {{"name", "tool_1"}, {"arguments", {{"a", "1"}, {"b", 2}}}}}}})}});
        messages.push_back({{"role", "tool"}, {"tool_call_id", id}, {"content", filler(kTrialTurn, i + 1)}});
        messages.push_back({{"role", "assistant"}, {"content", filler(kTrialTurn, i + 2)}});
    }
    messages.push_back({{"role", "user"}, {"content", "And now?"}});
    return messages;
}

nlohmann::ordered_json trial_tools() {
    using json = nlohmann::ordered_json;
    // a parameter of objects nested 8 deep (templates that print schemas recurse into them)
    json nested = {{"type", "array"}, {"items", {{"type", "string"}}}};
    for (int level = 0; level < 8; ++level) {
        nested = {{"type", "object"},
                  {"description", "level " + std::to_string(level)},
                  {"properties", {{"inner", nested}, {"n", {{"type", "integer"}}}}}};
    }
    json tools = json::array();
    for (int i = 0; i < kTrialTools; ++i) {
        tools.push_back({{"type", "function"},
                         {"function",
                          {{"name", "tool_" + std::to_string(i)},
                           {"description", filler(kTrialDescription, i)},
                           {"parameters",
                            {{"type", "object"},
                             {"properties",
                              {{"a", {{"type", "string"}, {"enum", json::array({"x", "y"})}}},
                               {"b", {{"type", "integer"}}},
                               {"c", nested}}},
                             {"required", json::array({"a"})}}}}}});
    }
    return tools;
}

// How a render in a child process ended.
struct child_render {
    enum kind { ok, too_long, out_of_memory, too_slow, crashed, inconclusive } outcome = ok;
    int signal = 0;
};

// A render in a child process, forked for it. (A child forked once and kept would cost less per
// render, but it would keep the parent's memory of the moment of the fork: every page of KV cache
// the parent writes afterwards would exist twice.) The fork copies this process's page tables:
// about 10 ms for a small model, 70 ms with 1.5 GB of KV cache; the trial is made large enough
// that only requests much larger than usual pay it (trial_size).
int render_one(const std::string & src, const std::string & inputs, size_t max_out) {
    try {
        jinja::lexer lx;
        const jinja::program prog = jinja::parse_from_tokens(lx.tokenize(src));
        jinja::context ctx(src);
        jinja::global_from_json(ctx, common_json::parse(inputs), true);
        jinja::runtime runtime(ctx);
        const auto parts = jinja::runtime::gather_string_parts(runtime.execute(prog));
        if (parts->as_string().str().size() > max_out) {
            return child_too_long;
        }
    } catch (...) {
        // a template that raises is reported when this process renders it, with its message
    }
    return child_ok;
}

[[noreturn]] void render_child(const std::string & src, const std::string & inputs, size_t max_out) {
    rlimit cpu{kRenderCpuSeconds, kRenderCpuSeconds + 1}; // SIGXCPU, then SIGKILL
    setrlimit(RLIMIT_CPU, &cpu);
    std::signal(SIGXCPU, SIG_DFL);
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGXCPU);
    pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
    // RLIMIT_DATA counts what malloc and the sanitizers' allocators take (heap and private
    // writable mappings), not the address space the sanitizers reserve up front
    if (FILE * f = std::fopen("/proc/self/status", "r")) {
        char line[256];
        unsigned long long kib = 0;
        while (std::fgets(line, sizeof line, f) != nullptr) {
            if (std::sscanf(line, "VmData: %llu kB", &kib) == 1) {
                const rlim_t size = (rlim_t) kib * 1024 + kRenderExtraMemory;
                rlimit data{size, size};
                setrlimit(RLIMIT_DATA, &data);
                break;
            }
        }
        std::fclose(f);
    }
    // the runtime turns exceptions into its own errors: a failed allocation must end the child
    std::set_new_handler([] { _exit(child_out_of_memory); });
    _exit(render_one(src, inputs, max_out));
}

// Renders src with the JSON inputs in a child process under the limits above.
child_render bounded_render(const std::string & src, const std::string & inputs, size_t max_out) {
    std::fflush(nullptr); // the child must not write the parent's buffered output again
    const pid_t pid = fork();
    if (pid < 0) {
        return {child_render::inconclusive}; // no process to spare
    }
    if (pid == 0) {
        render_child(src, inputs, max_out);
    }
    int status = 0;
    rusage usage{};
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(kRenderWallSeconds);
    bool killed = false;
    for (auto pause = std::chrono::microseconds(50);; pause = std::min(pause * 2, std::chrono::microseconds(2000))) {
        const pid_t r = wait4(pid, &status, WNOHANG, &usage);
        if (r == pid) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            return {child_render::inconclusive}; // reaped elsewhere (SIGCHLD ignored)
        }
        if (!killed && std::chrono::steady_clock::now() > until) {
            kill(pid, SIGKILL);
            killed = true;
        }
        std::this_thread::sleep_for(pause);
    }
    const double cpu_s = (double) usage.ru_utime.tv_sec + (double) usage.ru_stime.tv_sec +
                         1e-6 * (double) (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
    if (WIFEXITED(status)) {
        switch (WEXITSTATUS(status)) {
            case child_too_long:
                return {child_render::too_long};
            case child_out_of_memory:
                return {child_render::out_of_memory};
            case child_ok:
                return {child_render::ok};
            default: // a sanitizer's report of a stack overflow, say
                return {child_render::crashed, -WEXITSTATUS(status)};
        }
    }
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        if (sig == SIGXCPU || (sig == SIGKILL && cpu_s >= kRenderCpuSeconds)) {
            return {child_render::too_slow};
        }
        if (killed) {
            return {child_render::inconclusive}; // it used no CPU: stuck on a lock the fork copied held
        }
        return {child_render::crashed, sig};
    }
    return {child_render::ok};
}

// "it takes more than 5 s of CPU", ...; "" when the render stayed within the limits.
std::string exceeded(const child_render & r, size_t max_out) {
    switch (r.outcome) {
        case child_render::too_long:
            return "it writes more than " + std::to_string(max_out >> 20) + " MiB";
        case child_render::out_of_memory:
            return "it needs more than " + std::to_string(kRenderExtraMemory >> 30) + " GiB of memory";
        case child_render::too_slow:
            return "it takes more than " + std::to_string(kRenderCpuSeconds) + " s of CPU";
        case child_render::crashed:
            return r.signal > 0 ? "rendering it crashed (signal " + std::to_string(r.signal) + ")"
                                : "rendering it crashed (exit status " + std::to_string(-r.signal) + ")";
        default:
            return "";
    }
}

std::string describe(const render_size & size) {
    return std::to_string(size.messages) + " messages, " + std::to_string(size.tools) + " tools, " +
           std::to_string((size.bytes + 1023) / 1024) + " KiB, nested " + std::to_string(size.depth) + " deep";
}

std::string trial_inputs() {
    return nlohmann::ordered_json{{"messages", trial_messages()},
                                  {"tools", trial_tools()},
                                  {"bos_token", "<s>"},
                                  {"eos_token", "</s>"},
                                  {"add_generation_prompt", true}}
        .dump();
}

void trial_render(const std::string & src, const std::string & what, const std::string & chain) {
    const child_render r = bounded_render(src, trial_inputs(), kMaxRendered);
    const std::string trial = " a trial conversation (" + describe(trial_size()) + ")";
    if (r.outcome == child_render::crashed && !chain.empty()) {
        throw invalid_argument_error(what + " is refused: its macros call themselves (" + chain +
                                     ") without end: rendering" + trial + " overflowed the stack");
    }
    const std::string problem = exceeded(r, kMaxRendered);
    if (!problem.empty()) {
        throw invalid_argument_error(what + " is refused: " + problem + " to render" + trial);
    }
}

#endif

// Raises size.longest and size.depth to what j holds (one walk for both).
void walk_sizes(const nlohmann::ordered_json & j, size_t depth, render_size & size) {
    if (j.is_string()) {
        size.longest = std::max(size.longest, j.get_ref<const std::string &>().size());
        return;
    }
    if (!j.is_structured()) {
        return;
    }
    size.depth = std::max(size.depth, depth + 1);
    if (j.is_object()) {
        for (const auto & item : j.items()) {
            size.longest = std::max(size.longest, item.key().size());
            walk_sizes(item.value(), depth + 1, size);
        }
    } else {
        for (const auto & item : j) {
            walk_sizes(item, depth + 1, size);
        }
    }
}

} // namespace

render_size measure_render(const nlohmann::ordered_json & messages, const nlohmann::ordered_json & tools) {
    render_size size;
    size.messages = messages.size();
    size.tools = tools.size();
    walk_sizes(messages, 0, size);
    walk_sizes(tools, 0, size);
    size.bytes = messages.dump().size() + tools.dump().size();
    return size;
}

const render_size & trial_size() {
#ifndef _WIN32
    static const render_size size = measure_render(trial_messages(), trial_tools());
#else
    static const render_size size;
#endif
    return size;
}

bool trial_covers(const render_size & size) {
    const render_size & trial = trial_size();
    return size.messages <= trial.messages && size.tools <= trial.tools && size.longest <= trial.longest &&
           size.depth <= trial.depth &&
           size.bytes <= trial.bytes;
}

void guard_render(const std::string & src, const std::string & inputs, const render_size & size) {
#ifndef _WIN32
    if (src.empty() || trial_covers(size)) {
        return;
    }
    const size_t max_out = std::max(kMaxRendered, 4 * size.bytes);
    const std::string problem = exceeded(bounded_render(src, inputs, max_out), max_out);
    if (!problem.empty()) {
        throw invalid_argument_error("the chat template cannot render this request: " + problem + " for " +
                                     describe(size) + " (the template rendered a trial conversation of " +
                                     describe(trial_size()) + " within the limits)");
    }
#else
    (void) src, (void) inputs, (void) size;
#endif
}

void check_template(const std::string & src, const std::string & what) {
    if (src.empty()) {
        return; // no template (the model has no tool-use variant, say)
    }
    jinja::program prog;
    try {
        jinja::lexer lx;
        const jinja::lexer_result lexed = lx.tokenize(src);
        const int depth = nesting_depth(lexed.tokens);
        if (depth > kMaxTemplateNesting) {
            throw invalid_argument_error(what + " is refused: it nests blocks, brackets or operators " +
                                         std::to_string(depth) + " levels deep (at most " +
                                         std::to_string(kMaxTemplateNesting) + ")");
        }
        prog = jinja::parse_from_tokens(lexed);
    } catch (const invalid_argument_error &) {
        throw;
    } catch (const std::exception &) {
        return; // llama.cpp's own parse reports the syntax errors
    }
    std::map<std::string, std::set<std::string>> calls; // macro -> macros its body calls
    std::vector<std::string> inside;                     // the macro bodies being walked
    jinja::context ctx;
    ctx.visitor = [&](bool leaf, const jinja::statement * node, std::vector<jinja::visitor_pair> children) {
        if (leaf) {
            return;
        }
        auto huge = [](const jinja::statement * e) {
            const auto * lit = dynamic_cast<const jinja::integer_literal *>(e);
            return lit != nullptr && (lit->val > kMaxTemplateLiteral || lit->val < -kMaxTemplateLiteral);
        };
        if (const auto * c = dynamic_cast<const jinja::call_expression *>(node)) {
            const auto * id = dynamic_cast<const jinja::identifier *>(c->callee.get());
            if (id != nullptr && id->val == "range" &&
                std::any_of(c->args.begin(), c->args.end(), [&](const auto & a) { return huge(a.get()); })) {
                throw invalid_argument_error(what + " is refused: it loops over range() of more than " +
                                             std::to_string(kMaxTemplateLiteral) + " items");
            }
        }
        if (const auto * b = dynamic_cast<const jinja::binary_expression *>(node)) {
            if ((b->op.value == "*" || b->op.value == "**") && (huge(b->left.get()) || huge(b->right.get()))) {
                throw invalid_argument_error(what + " is refused: it repeats or raises by more than " +
                                             std::to_string(kMaxTemplateLiteral));
            }
        }
        std::string macro;
        if (const auto * m = dynamic_cast<const jinja::macro_statement *>(node)) {
            if (const auto * id = dynamic_cast<const jinja::identifier *>(m->name.get())) {
                macro = id->val;
                calls[macro];
            }
        } else if (const auto * c = dynamic_cast<const jinja::call_expression *>(node)) {
            const auto * id = dynamic_cast<const jinja::identifier *>(c->callee.get());
            if (id != nullptr && !inside.empty()) {
                calls[inside.back()].insert(id->val);
            }
        }
        if (!macro.empty()) {
            inside.push_back(macro);
        }
        for (auto & [label, nodes] : children) {
            for (const auto * child : nodes) {
                if (child != nullptr) {
                    child->visit(ctx);
                }
            }
        }
        if (!macro.empty()) {
            inside.pop_back();
        }
    };
    for (const auto & stmt : prog.body) {
        stmt->visit(ctx);
    }
    // a depth-first search for a cycle among the macros
    std::map<std::string, int> state; // 1: on the path, 2: done
    std::vector<std::string> path;
    std::function<bool(const std::string &)> cycle = [&](const std::string & name) {
        state[name] = 1;
        path.push_back(name);
        for (const auto & callee : calls[name]) {
            if (calls.count(callee) == 0) {
                continue; // a builtin or a variable, not a macro
            }
            if (state[callee] == 1) {
                path.push_back(callee);
                return true;
            }
            if (state[callee] == 0 && cycle(callee)) {
                return true;
            }
        }
        path.pop_back();
        state[name] = 2;
        return false;
    };
    std::vector<std::string> names;
    for (const auto & [name, _] : calls) {
        names.push_back(name);
    }
    // Macros that call themselves are legal (templates walk JSON schemas that way, with a depth
    // the data bounds); one that recurses without end overflows the stack in the trial render
    // below, and the chain names the cause.
    std::string chain;
    for (const auto & name : names) {
        if (state[name] == 0 && cycle(name)) {
            const auto from = std::find(path.begin(), path.end(), path.back());
            for (auto it = from; it != path.end(); ++it) {
                chain += (chain.empty() ? "" : " -> ") + *it;
            }
            break;
        }
    }
#ifndef _WIN32
    trial_render(src, what, chain);
#else
    if (!chain.empty()) {
        throw invalid_argument_error(what + " is refused: its macros call themselves (" + chain +
                                     "), and without a trial render in a child process a recursion without end "
                                     "would overflow the stack");
    }
#endif
}

} // namespace lci
