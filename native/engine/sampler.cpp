#include "sampler.h"

#include "errors.h"
#include "logging.h"
#include "model.h"

#include "llama-grammar.h" // llama.cpp's src/: the grammar parser, for its diagnosis

#include <cmath>

namespace lci {

namespace {

void require(bool ok, const std::string & what) {
    if (!ok) {
        throw invalid_argument_error(what);
    }
}

void check_finite(float v, const char * name) {
    require(std::isfinite(v), std::string(name) + " must be a finite number");
}

} // namespace

namespace {

// Skips blanks, newlines and # comments, as llama.cpp's grammar parser does between rules.
const char * skip_space(const char * pos) {
    while (*pos == ' ' || *pos == '\t' || *pos == '#' || *pos == '\r' || *pos == '\n') {
        if (*pos == '#') {
            while (*pos && *pos != '\r' && *pos != '\n') {
                pos++;
            }
        } else {
            pos++;
        }
    }
    return pos;
}

// Why llama.cpp's parser rejects the grammar ("" if it parses). llama_grammar_parser::parse()
// writes its diagnosis to stderr and returns false; calling its rule parser directly yields the
// same diagnosis as an exception, without touching a file descriptor or another thread's output.
// Groups nested deeper than this are refused: llama.cpp's parser recurses once per level (several
// frames each), and 100,000 levels overflowed the C++ stack (SIGSEGV). Real grammars nest a few
// levels; those generated from JSON schemas refer to rules by name instead.
constexpr int kMaxGrammarNesting = 200;

// What llama.cpp's parser would mishandle, found by a scan that skips literals, classes and
// comments: a repetition {m,n} with n < m, which it accepts and then expands forever, and groups
// nested deeper than kMaxGrammarNesting.
std::string lexical_problem(const std::string & g) {
    int depth = 0;
    for (size_t i = 0; i < g.size(); ++i) {
        const char c = g[i];
        if (c == '(' && ++depth > kMaxGrammarNesting) {
            return "its groups nest more than " + std::to_string(kMaxGrammarNesting) + " levels deep";
        }
        if (c == ')') {
            --depth;
        } else if (c == '"' || c == '[') { // skip a literal or a character class, escapes included
            const char close = c == '"' ? '"' : ']';
            for (++i; i < g.size() && g[i] != close; ++i) {
                if (g[i] == '\\') {
                    ++i;
                }
            }
        } else if (c == '#') {
            while (i < g.size() && g[i] != '\n') {
                ++i;
            }
        } else if (c == '{') {
            size_t j = i + 1;
            auto number = [&](unsigned long long & v) {
                const size_t start = j;
                v = 0;
                while (j < g.size() && g[j] >= '0' && g[j] <= '9' && v < (1ull << 40)) {
                    v = v * 10 + (unsigned long long) (g[j++] - '0');
                }
                return j > start;
            };
            auto blanks = [&] {
                while (j < g.size() && (g[j] == ' ' || g[j] == '\t')) {
                    ++j;
                }
            };
            unsigned long long lo = 0, hi = 0;
            blanks();
            if (number(lo)) {
                blanks();
                if (j < g.size() && g[j] == ',') {
                    ++j;
                    blanks();
                    if (number(hi) && hi < lo) {
                        return "the repetition " + g.substr(i, j - i + 1) + " has its upper bound below its lower bound";
                    }
                }
            }
        }
    }
    return "";
}

// A code point as UTF-8, for messages.
std::string utf8_of(uint32_t cp) {
    std::string out;
    if (cp < 0x80) {
        out += (char) cp;
    } else if (cp < 0x800) {
        out += (char) (0xC0 | (cp >> 6));
        out += (char) (0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += (char) (0xE0 | (cp >> 12));
        out += (char) (0x80 | ((cp >> 6) & 0x3F));
        out += (char) (0x80 | (cp & 0x3F));
    } else {
        out += (char) (0xF0 | (cp >> 18));
        out += (char) (0x80 | ((cp >> 12) & 0x3F));
        out += (char) (0x80 | ((cp >> 6) & 0x3F));
        out += (char) (0x80 | (cp & 0x3F));
    }
    return out;
}

std::string grammar_diagnose(const model & m, const std::string & grammar) {
    const size_t nul = grammar.find('\0');
    if (nul != std::string::npos) {
        return "the grammar contains a NUL character at offset " + std::to_string(nul);
    }
    const std::string lexical = lexical_problem(grammar);
    if (!lexical.empty()) {
        return lexical;
    }
    llama_grammar_parser parser(m.vocab());
    try {
        const char * pos = skip_space(grammar.c_str());
        while (*pos) {
            pos = parser.parse_rule(pos);
        }
    } catch (const std::exception & e) {
        std::string why = e.what();
        why = why.substr(0, why.find('\n'));
        while (!why.empty() && why.back() == ' ') {
            why.pop_back();
        }
        if (why.size() >= 3 && why.compare(why.size() - 3, 3, " at") == 0) {
            why += " the end of the grammar";
        }
        return why;
    }
    for (const auto & rule : parser.rules) {
        if (rule.empty()) {
            return "Undefined rule";
        }
        for (size_t i = 0; i < rule.size(); ++i) {
            const auto & elem = rule[i];
            // [b-a]: a range whose upper end is below its lower end matches nothing, and a
            // grammar that needs it can never be satisfied
            if (elem.type == LLAMA_GRETYPE_CHAR_RNG_UPPER && i > 0 && elem.value < rule[i - 1].value) {
                return "the character range [" + utf8_of(rule[i - 1].value) + "-" + utf8_of(elem.value) +
                       "] has its upper end below its lower end";
            }
            if (elem.type == LLAMA_GRETYPE_RULE_REF &&
                (elem.value >= parser.rules.size() || parser.rules[elem.value].empty())) {
                for (const auto & [name, id] : parser.symbol_ids) {
                    if (id == elem.value) {
                        return "Undefined rule identifier '" + name + "'";
                    }
                }
                return "Undefined rule";
            }
        }
    }
    return "";
}

} // namespace

void grammar_check(const model & m, const std::string & grammar) {
    const std::string why = grammar_diagnose(m, grammar);
    if (!why.empty()) {
        throw grammar_error("invalid GBNF grammar: " + why);
    }
    // it parses; llama.cpp may still refuse it (left recursion, no root), through its log
    log_capture capture;
    llama_sampler_ptr g(llama_sampler_init_grammar(m.vocab(), grammar.c_str(), "root"));
    if (!g) {
        const std::string logged = capture.text();
        throw grammar_error(logged.empty() ? "invalid GBNF grammar" : "invalid GBNF grammar: " + logged);
    }
}

common_sampler_ptr sampler_make(const model & m, const sampling_params & p, int32_t n_ctx) {
    check_finite(p.temperature, "temperature");
    check_finite(p.top_p, "top_p");
    check_finite(p.min_p, "min_p");
    check_finite(p.typical_p, "typical_p");
    check_finite(p.top_n_sigma, "top_n_sigma");
    check_finite(p.repeat_penalty, "repeat_penalty");
    check_finite(p.frequency_penalty, "frequency_penalty");
    check_finite(p.presence_penalty, "presence_penalty");
    check_finite(p.mirostat_tau, "mirostat_tau");
    check_finite(p.mirostat_eta, "mirostat_eta");
    require(p.top_p >= 0.0f && p.top_p <= 1.0f, "top_p must be in [0, 1], got " + std::to_string(p.top_p));
    require(p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p must be in [0, 1], got " + std::to_string(p.min_p));
    require(p.typical_p > 0.0f && p.typical_p <= 1.0f,
            "typical_p must be in (0, 1], got " + std::to_string(p.typical_p));
    require(p.repeat_penalty > 0.0f, "repeat_penalty must be greater than 0, got " + std::to_string(p.repeat_penalty));
    require(p.mirostat_mode >= 0 && p.mirostat_mode <= 2, "mirostat_mode must be 0, 1 or 2, got " + std::to_string(p.mirostat_mode));
    require(p.penalty_last_n >= -1, "penalty_last_n must be >= -1");
    check_finite(p.dry_multiplier, "dry_multiplier");
    check_finite(p.dry_base, "dry_base");
    require(p.dry_multiplier >= 0.0f, "dry_multiplier must be >= 0");
    require(p.dry_base >= 1.0f, "dry_base must be >= 1");
    require(p.dry_allowed_length >= 0, "dry_allowed_length must be >= 0");
    require(p.dry_penalty_last_n >= -1, "dry_penalty_last_n must be >= -1");
    for (const auto & [token, bias] : p.logit_bias) {
        m.check_token(token);
        require(!std::isnan(bias), "logit_bias values must be numbers");
    }

    common_params_sampling cp;
    cp.seed              = p.seed;
    cp.temp              = p.temperature;
    cp.top_k             = p.top_k;
    cp.top_p             = p.top_p;
    cp.min_p             = p.min_p;
    cp.typ_p             = p.typical_p;
    cp.top_n_sigma       = p.top_n_sigma;
    cp.penalty_repeat    = p.repeat_penalty;
    cp.penalty_freq      = p.frequency_penalty;
    cp.penalty_present   = p.presence_penalty;
    cp.penalty_last_n    = p.penalty_last_n < 0 ? n_ctx : p.penalty_last_n;
    cp.n_prev            = std::max(cp.penalty_last_n, 64);
    cp.mirostat          = p.mirostat_mode;
    cp.mirostat_tau      = p.mirostat_tau;
    cp.mirostat_eta      = p.mirostat_eta;
    cp.dry_multiplier     = p.dry_multiplier;
    cp.dry_base           = p.dry_base;
    cp.dry_allowed_length = p.dry_allowed_length;
    cp.dry_penalty_last_n = p.dry_penalty_last_n < 0 ? n_ctx : p.dry_penalty_last_n;
    cp.no_perf           = true;
    for (const auto & [token, bias] : p.logit_bias) {
        cp.logit_bias.push_back({token, bias});
    }

    if (!p.grammar.empty()) {
        grammar_check(m, p.grammar); // a clear message, and no leak inside common_sampler_init
        cp.grammar = common_grammar(
            p.grammar_is_output_format ? COMMON_GRAMMAR_TYPE_OUTPUT_FORMAT : COMMON_GRAMMAR_TYPE_USER, p.grammar);
        cp.grammar_lazy = p.grammar_lazy;
        for (const auto & w : p.grammar_trigger_words) {
            cp.grammar_triggers.push_back({COMMON_GRAMMAR_TRIGGER_TYPE_WORD, w});
        }
        for (const auto & pat : p.grammar_trigger_patterns) {
            cp.grammar_triggers.push_back({COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN, pat});
        }
        for (const auto & pat : p.grammar_trigger_patterns_full) {
            cp.grammar_triggers.push_back({COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL, pat});
        }
        for (llama_token t : p.grammar_trigger_tokens) {
            m.check_token(t);
            common_grammar_trigger trig;
            trig.type  = COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN;
            trig.value = m.token_to_piece(t, true);
            trig.token = t;
            cp.grammar_triggers.push_back(trig);
        }
        for (llama_token t : p.preserved_tokens) {
            m.check_token(t);
            cp.preserved_tokens.insert(t);
        }
        cp.generation_prompt = p.generation_prompt;
    }

    log_capture capture;
    try {
        common_sampler_ptr s(common_sampler_init(m.get(), cp));
        if (!s) {
            throw llama_error(capture.explain("could not create the sampler"));
        }
        return s;
    } catch (const llama_error &) {
        throw;
    } catch (const std::exception & e) {
        if (!p.grammar.empty()) {
            throw grammar_error(capture.explain(std::string("grammar rejected: ") + e.what()));
        }
        throw invalid_argument_error(capture.explain(e.what()));
    }
}

} // namespace lci
