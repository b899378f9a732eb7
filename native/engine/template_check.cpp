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

} // namespace

void check_template(const std::string & src, const std::string & what) {
    jinja::program prog;
    try {
        jinja::lexer lx;
        prog = jinja::parse_from_tokens(lx.tokenize(src));
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
