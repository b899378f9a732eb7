// Sampling parameters and the llama.cpp sampler chain built from them.
//
// The chain is llama.cpp's common_sampler (common/sampling.h): penalties, top-k, typical, top-p,
// min-p, temperature or mirostat, logit bias, and a GBNF grammar (optionally lazy, with
// triggers, as the chat layer's tool-call grammars need).
#pragma once

#include "llama.h"
#include "sampling.h" // common/sampling.h

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lci {

class model;

struct sampling_params {
    float    temperature       = 0.8f; // <= 0: greedy
    int32_t  top_k             = 40;   // <= 0: whole vocabulary
    float    top_p             = 0.95f;
    float    min_p             = 0.05f;
    float    typical_p         = 1.0f;
    float    top_n_sigma       = -1.0f; // keep logits within n standard deviations of the top; <= 0: off
    float    repeat_penalty    = 1.0f;
    float    frequency_penalty = 0.0f;
    float    presence_penalty  = 0.0f;
    int32_t  penalty_last_n    = 64;   // -1: the whole context
    int32_t  mirostat_mode     = 0;    // 0 off, 1 mirostat, 2 mirostat 2.0
    float    mirostat_tau      = 5.0f;
    float    mirostat_eta      = 0.1f;
    float    dry_multiplier    = 0.0f; // DRY repetition penalty; 0: off
    float    dry_base          = 1.75f;
    int32_t  dry_allowed_length = 2;
    int32_t  dry_penalty_last_n = -1;  // -1: the whole context
    uint32_t seed              = LLAMA_DEFAULT_SEED; // LLAMA_DEFAULT_SEED: random
    std::vector<std::pair<llama_token, float>> logit_bias;

    std::string grammar;                    // GBNF; empty: none
    bool        grammar_lazy = false;       // apply only after a trigger
    std::vector<std::string> grammar_trigger_words;
    std::vector<std::string> grammar_trigger_patterns;      // regex, matched anywhere
    std::vector<std::string> grammar_trigger_patterns_full; // regex, matched on the whole output
    std::vector<llama_token> grammar_trigger_tokens;
    std::vector<llama_token> preserved_tokens;
    std::string generation_prompt; // what the template already put after the last message
    bool        grammar_is_output_format = false; // schema / tool grammar (prefilled) vs user GBNF
};

// Throws invalid_argument_error for values out of range and grammar_error, with llama.cpp's
// explanation, for a grammar that does not parse.
common_sampler_ptr sampler_make(const model & m, const sampling_params & params, int32_t n_ctx);

// Checks a GBNF grammar; throws grammar_error with llama.cpp's message when it does not parse.
void grammar_check(const model & m, const std::string & grammar);

} // namespace lci
