#include "template_check.h"

#include "errors.h"

#include "jinja/lexer.h" // common/
#include "jinja/parser.h"
#include "jinja/runtime.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

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

} // namespace

void check_template(const std::string & src, const std::string & what) {
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
}

} // namespace lci
