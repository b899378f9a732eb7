// Speculative decoding: drafts of the next tokens, verified by the target model in the
// scheduler's generating decode (scheduler.cpp).
//
// A drafter proposes, for each generating request, tokens that probably follow what its slot
// holds plus the token just sampled. The scheduler puts that token and its draft into the one
// batch of the step; the request's own sampler then samples at every position in turn, and
// accepts draft tokens while they equal what it sampled. What it samples is what it would have
// sampled one token per decode (llama.cpp's acceptance rule), so greedy output is unchanged and
// sampled output keeps its distribution; a draft only decides how many tokens one decode yields.
// The KV cells of rejected draft tokens are removed.
//
// Two kinds of drafter:
// - n-grams of the request's own tokens (prompt and output), llama.cpp's implementations in
//   common/speculative.h: ngram-simple, ngram-map-k, ngram-map-k4v, ngram-mod, ngram-cache.
//   They cost no decode: a lookup in the token history per step.
// - a draft model (a small GGUF with the target's vocabulary): its own context, a KV sequence
//   per slot kept equal to the slot's tokens, greedy drafts, all drafting slots in one decode
//   per draft position.
#pragma once

#include "compute.h"
#include "model.h"

#include "llama-cpp.h"
#include "speculative.h" // common/speculative.h (ours is drafts.h)

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lci {

struct speculative_params {
    // "none"; "ngram" (ngram-simple with the sizes below); llama.cpp's n-gram kinds by name;
    // "draft" with draft_model
    std::string type = "none";
    int32_t draft_max = 16;   // most tokens per draft
    int32_t draft_min = 0;    // shorter drafts are not verified
    int32_t ngram_size = 3;   // n-gram kinds: tokens matched in the history (ngram-mod: at least 16)
    int32_t ngram_min_hits = 1; // ngram-map-k/k4v: occurrences before a key is used
    // true: verify every draft (as llama-server does); false: only drafts whose expected yield
    // beats their cost (draft_policy)
    bool always = false;
    std::shared_ptr<model> draft_model;
};

// One drafting slot in a step.
struct draft_request {
    llama_seq_id seq = 0;
    const std::vector<llama_token> * tokens = nullptr; // what the slot's KV holds
    llama_token last = -1;                              // sampled, not yet decoded
    int32_t n_max = 0;
    std::vector<llama_token> * out = nullptr;           // empty on entry
};

// Decode time by the number of rows (all with logits, as a verification has), measured once when
// the engine starts (calibrate), so that the same request drafts the same way on every run. On a
// CPU the second row of a decode costs about as much as the first (each row's logits over the
// whole vocabulary are a large part of a small model), later ones less; on a GPU extra rows cost
// next to nothing. Counts between those measured are interpolated, larger ones extrapolated.
class decode_cost {
public:
    // Decodes 1, 2, 4, 8, ... rows (up to max_rows) of sequence seq twice each on ctx, keeps the
    // faster time of each, and removes the cells again. ctx must be otherwise idle.
    void calibrate(llama_context * ctx, llama_seq_id seq, int32_t max_rows);
    // The expected time of a decode of `rows` rows (ms); 0 when nothing was measured.
    double time(int32_t rows) const;
    // What was measured: (rows, ms), rows ascending.
    const std::vector<std::pair<int32_t, double>> & measured() const { return ms_; }

private:
    std::vector<std::pair<int32_t, double>> ms_; // (rows, ms), rows ascending
};

// How long a draft is worth verifying, per request. Drafts are right in runs: while a request
// copies from its prompt, draft after draft is accepted whole; when it stops copying, they miss.
// The policy estimates two rates from the request's recent drafts: that a draft's first token is
// right (p_first), and that a token after a right one is right too (p_next); each starts from one
// right and one wrong, and older drafts weigh less (a factor of 0.9 per draft), so the estimates
// follow the text as it turns to copying and away. A draft of k tokens then yields an expected
// 1 + p_first (1 + p_next + ... + p_next^(k-1)) tokens for a decode of k more rows
// (decode_cost), and the policy picks the k that maximises the step's tokens per unit of decode
// time, or no draft when none beats the step without it. The drafts counted include those that
// were not verified (the scheduler compares them with the tokens the request goes on to sample,
// which costs no decode), so a request that stopped drafting starts again when its text turns
// to copying. (A rule of succession over the right tokens in a row, which a single miss reset,
// stopped drafting after every edit of a rewritten paragraph.)
class draft_policy {
public:
    // n_max: the longest draft allowed now. rows: the step's rows so far (one per generating
    // request, plus the drafts chosen for others); tokens: what the step is expected to yield
    // so far. Picks the k that maximises the whole step's expected tokens per unit of decode
    // time (a draft's rows slow every request of the step), and adds its rows and tokens.
    int32_t choose(int32_t n_max, const decode_cost & cost, int32_t & rows, double & tokens) const;
    // After a draft was checked: `drafted` tokens, the first `accepted` of them right.
    void update(int32_t drafted, int32_t accepted);
    // A new request's policy: what this one learnt (the engine keeps one over all its requests'
    // drafts), weighing as much as kSeedDrafts drafts at most, so that a request whose text
    // differs from the last ones' soon follows its own. It verifies no draft before one of its
    // own was compared with its output (free): a wrong draft of 16 tokens costs as much as 6
    // single decodes, which a short reply after a run of copying ones would pay on its first draft.
    draft_policy seed() const;

private:
    // decayed counts: drafts and those whose first token was right; tokens that followed a
    // right one and those that were right too
    double first_n_ = 0.0, first_right_ = 0.0, next_n_ = 0.0, next_right_ = 0.0;
    int32_t own_ = 0; // drafts checked since seed(): none, and the request verifies nothing yet
};

class drafter {
public:
    virtual ~drafter() = default;
    // A request starts generating in seq with this history (prompt).
    virtual void begin(llama_seq_id seq, const std::vector<llama_token> & history) = 0;
    // Fills each request's out with at most n_max tokens (or leaves it empty).
    virtual void draft(std::vector<draft_request> & requests) = 0;
    // The target accepted n of the last draft of seq.
    virtual void accept(llama_seq_id seq, int32_t n) = 0;
};

// Validates params and builds the drafter (nullptr for "none"). Throws invalid_argument_error
// for an unknown type or out-of-range sizes, and for a draft model whose vocabulary differs from
// the target's (naming the difference). n_ctx_seq, n_batch and the threads size a draft context.
std::unique_ptr<drafter> drafter_make(const model & target, const speculative_params & params, uint32_t n_seq,
                                      uint32_t n_ctx_seq, uint32_t n_batch, const thread_counts & threads);

// Why draft cannot draft for target, or "" when it can: the same tokenizer (type, size within a
// few padding tokens, the same text for each id, the same BOS/EOS handling).
std::string vocab_mismatch(const model & target, const model & draft);

// The names drafter_make accepts, comma separated.
std::string speculative_types();

} // namespace lci
