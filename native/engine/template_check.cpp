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

// The trial render: a short conversation with tools, rendered in a child process (fork) under a
// CPU-time and a memory limit. llama.cpp's Jinja runtime has no step counter, output limit or
// interrupt, so in this process a template that loops for minutes or doubles a string until the
// memory is gone cannot be stopped; in a child it can be killed.
constexpr int kTrialCpuSeconds = 5;
constexpr rlim_t kTrialExtraMemory = rlim_t(1) << 30; // beyond what the process had
constexpr size_t kMaxRendered = size_t(16) << 20;
constexpr int kTrialWallSeconds = 60; // a child that uses no CPU (stuck on a lock): inconclusive

enum trial_outcome : int { trial_ok = 0, trial_too_long = 2, trial_out_of_memory = 3 };

nlohmann::ordered_json trial_inputs() {
    using json = nlohmann::ordered_json;
    json tools = json::array();
    for (const char * name : {"get_weather", "add"}) {
        tools.push_back({{"type", "function"},
                         {"function",
                          {{"name", name},
                           {"description", "A tool of the trial render."},
                           {"parameters",
                            {{"type", "object"},
                             {"properties", {{"a", {{"type", "string"}}}, {"b", {{"type", "integer"}}}}},
                             {"required", json::array({"a"})}}}}}});
    }
    json messages = json::array({{{"role", "system"}, {"content", "You are a helpful assistant."}}});
    for (int i = 0; i < 8; ++i) {
        messages.push_back({{"role", "user"}, {"content", "Question " + std::to_string(i) + "?"}});
        messages.push_back({{"role", "assistant"},
                            {"content", ""},
                            {"tool_calls",
                             json::array({{{"id", "call_" + std::to_string(i)},
                                           {"type", "function"},
                                           {"function", {{"name", "add"}, {"arguments", {{"a", "1"}, {"b", 2}}}}}}})}});
        messages.push_back({{"role", "tool"}, {"tool_call_id", "call_" + std::to_string(i)}, {"content", "3"}});
        messages.push_back({{"role", "assistant"}, {"content", "Answer " + std::to_string(i) + "."}});
    }
    messages.push_back({{"role", "user"}, {"content", "And now?"}});
    return {{"messages", messages},  {"tools", tools},
            {"bos_token", "<s>"},    {"eos_token", "</s>"},
            {"add_generation_prompt", true}};
}

[[noreturn]] void trial_child(const jinja::program & prog, const std::string & src) {
    rlimit cpu{kTrialCpuSeconds, kTrialCpuSeconds + 1}; // SIGXCPU, then SIGKILL
    setrlimit(RLIMIT_CPU, &cpu);
    // RLIMIT_DATA counts what malloc and the sanitizers' allocators take (heap and private
    // writable mappings), not the address space the sanitizers reserve up front
    if (FILE * f = std::fopen("/proc/self/status", "r")) {
        char line[256];
        unsigned long long kib = 0;
        while (std::fgets(line, sizeof line, f) != nullptr) {
            if (std::sscanf(line, "VmData: %llu kB", &kib) == 1) {
                const rlim_t size = (rlim_t) kib * 1024 + kTrialExtraMemory;
                rlimit data{size, size};
                setrlimit(RLIMIT_DATA, &data);
                break;
            }
        }
        std::fclose(f);
    }
    // the runtime turns exceptions into its own errors: a failed allocation must end the child
    std::set_new_handler([] { _exit(trial_out_of_memory); });
    int code = trial_ok;
    try {
        jinja::context ctx(src);
        jinja::global_from_json(ctx, common_json::parse(trial_inputs().dump()), true);
        jinja::runtime runtime(ctx);
        const auto parts = jinja::runtime::gather_string_parts(runtime.execute(prog));
        if (parts->as_string().str().size() > kMaxRendered) {
            code = trial_too_long;
        }
    } catch (...) {
        // a template that raises is reported when it is rendered for a request, with its message
    }
    _exit(code);
}

void trial_render(const jinja::program & prog, const std::string & src, const std::string & what) {
    std::fflush(nullptr); // the child must not write the parent's buffered output again
    const pid_t pid = fork();
    if (pid < 0) {
        return; // no process to spare: the static checks alone
    }
    if (pid == 0) {
        trial_child(prog, src);
    }
    int status = 0;
    rusage usage{};
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(kTrialWallSeconds);
    bool killed = false;
    for (;;) {
        const pid_t r = wait4(pid, &status, WNOHANG, &usage);
        if (r == pid) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            return;
        }
        if (!killed && std::chrono::steady_clock::now() > until) {
            kill(pid, SIGKILL);
            killed = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double cpu_s = (double) usage.ru_utime.tv_sec + (double) usage.ru_stime.tv_sec +
                         1e-6 * (double) (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
    const std::string trial = " to render a short conversation (17 messages, 2 tools)";
    if (WIFEXITED(status)) {
        switch (WEXITSTATUS(status)) {
            case trial_too_long:
                throw invalid_argument_error(what + " is refused: it writes more than " +
                                             std::to_string(kMaxRendered >> 20) + " MiB" + trial);
            case trial_out_of_memory:
                throw invalid_argument_error(what + " is refused: it needs more than " +
                                             std::to_string(kTrialExtraMemory >> 30) + " GiB of memory" + trial);
            default:
                return;
        }
    }
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        if (sig == SIGXCPU || (sig == SIGKILL && cpu_s >= kTrialCpuSeconds)) {
            throw invalid_argument_error(what + " is refused: it takes more than " +
                                         std::to_string(kTrialCpuSeconds) + " s of CPU" + trial);
        }
        if (killed) {
            return; // it used no CPU: stuck on a lock the fork copied held, not the template's doing
        }
        throw invalid_argument_error(what + " is refused: rendering it" + trial + " crashed (signal " +
                                     std::to_string(sig) + ")");
    }
}

#endif

} // namespace

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
    for (const auto & name : names) {
        if (state[name] == 0 && cycle(name)) {
            const auto from = std::find(path.begin(), path.end(), path.back());
            std::string chain;
            for (auto it = from; it != path.end(); ++it) {
                chain += (chain.empty() ? "" : " -> ") + *it;
            }
            throw invalid_argument_error(what + " is refused: its macros call themselves (" + chain +
                                         "), which recurses without bound; a template must not recurse");
        }
    }
#ifndef _WIN32
    trial_render(prog, src, what);
#endif
}

} // namespace lci
