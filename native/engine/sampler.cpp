#include "sampler.h"

#include "errors.h"
#include "logging.h"
#include "model.h"

#include <cmath>
#include <cstdio>
#include <mutex>

#ifdef _WIN32
#    include <io.h>
#    define lci_dup _dup
#    define lci_dup2 _dup2
#    define lci_close _close
#else
#    include <unistd.h>
#    define lci_dup dup
#    define lci_dup2 dup2
#    define lci_close close
#endif

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

// llama.cpp's grammar parser prints its diagnostics with fprintf(stderr) rather than through the
// log callback. To put them into the exception (and keep stderr quiet), stderr is pointed at a
// temporary file while the parser runs; anything else written meanwhile is passed on.
class stderr_capture {
public:
    stderr_capture() {
        std::fflush(stderr);
        file_ = std::tmpfile();
        saved_ = file_ ? lci_dup(2) : -1;
        if (saved_ >= 0 && lci_dup2(fileno(file_), 2) < 0) {
            lci_close(saved_);
            saved_ = -1;
        }
    }
    ~stderr_capture() { finish(); }

    std::string finish() {
        std::string out;
        if (saved_ >= 0) {
            std::fflush(stderr);
            lci_dup2(saved_, 2);
            lci_close(saved_);
            saved_ = -1;
            std::rewind(file_);
            char buf[4096];
            size_t n;
            while ((n = std::fread(buf, 1, sizeof(buf), file_)) > 0) {
                out.append(buf, n);
            }
        }
        if (file_) {
            std::fclose(file_);
            file_ = nullptr;
        }
        return out;
    }

private:
    std::FILE * file_ = nullptr;
    int saved_ = -1;
};

void grammar_check(const model & m, const std::string & grammar) {
    static std::mutex mutex; // one redirection at a time
    std::string printed;
    llama_sampler_ptr g;
    log_capture capture;
    {
        std::lock_guard<std::mutex> lock(mutex);
        stderr_capture err;
        g.reset(llama_sampler_init_grammar(m.vocab(), grammar.c_str(), "root"));
        printed = err.finish();
    }
    // keep the parser's own diagnosis, pass anything else on to the real stderr
    std::string diagnosis, others;
    size_t start = 0;
    while (start < printed.size()) {
        size_t end = printed.find('\n', start);
        end = end == std::string::npos ? printed.size() : end + 1;
        const std::string line = printed.substr(start, end - start);
        (line.find("error parsing grammar") != std::string::npos ? diagnosis : others) += line;
        start = end;
    }
    if (!others.empty() && (g || diagnosis.empty())) {
        std::fwrite(others.data(), 1, others.size(), stderr);
    }
    if (!g) {
        std::string why = diagnosis;
        const size_t colon = why.find("error parsing grammar: ");
        if (colon != std::string::npos) {
            why = why.substr(colon + 23);
        }
        while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) {
            why.pop_back();
        }
        if (why.size() >= 3 && why.compare(why.size() - 3, 3, " at") == 0) {
            why += " the end of the grammar";
        }
        if (why.empty()) {
            why = capture.text();
        }
        throw grammar_error(why.empty() ? "invalid GBNF grammar" : "invalid GBNF grammar: " + why);
    }
}

common_sampler_ptr sampler_make(const model & m, const sampling_params & p, int32_t n_ctx) {
    check_finite(p.temperature, "temperature");
    check_finite(p.top_p, "top_p");
    check_finite(p.min_p, "min_p");
    check_finite(p.typical_p, "typical_p");
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
    require(p.mirostat >= 0 && p.mirostat <= 2, "mirostat must be 0, 1 or 2, got " + std::to_string(p.mirostat));
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
    cp.penalty_repeat    = p.repeat_penalty;
    cp.penalty_freq      = p.frequency_penalty;
    cp.penalty_present   = p.presence_penalty;
    cp.penalty_last_n    = p.penalty_last_n < 0 ? n_ctx : p.penalty_last_n;
    cp.n_prev            = std::max(cp.penalty_last_n, 64);
    cp.mirostat          = p.mirostat;
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
