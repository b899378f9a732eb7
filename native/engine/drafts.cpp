#include "drafts.h"

#include "batch.h"
#include "compute.h"
#include "errors.h"
#include "logging.h"

#include "ggml.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace lci {

namespace {

// llama.cpp's n-gram implementations, one state per slot (common/speculative.h).
class ngram_drafter : public drafter {
public:
    ngram_drafter(common_params_speculative & params, uint32_t n_seq) : spec_(common_speculative_init(params, n_seq)) {
        if (!spec_) {
            throw invalid_argument_error("llama.cpp built no n-gram drafter for these settings");
        }
    }

    void begin(llama_seq_id seq, const std::vector<llama_token> & history) override {
        common_speculative_begin(spec_.get(), seq, history);
    }

    void draft(std::vector<draft_request> & requests) override {
        for (auto & r : requests) {
            common_speculative_get_draft_params(spec_.get(), r.seq) = {
                /* .drafting = */ true,
                /* .n_max    = */ r.n_max,
                /* .pos0     = */ (llama_pos) r.tokens->size(),
                /* .id_last  = */ r.last,
                /* .prompt   = */ r.tokens,
                /* .result   = */ r.out,
            };
        }
        common_speculative_draft(spec_.get());
    }

    void accept(llama_seq_id seq, int32_t n) override {
        common_speculative_accept(spec_.get(), seq, (uint16_t) std::min<int32_t>(n, UINT16_MAX));
    }

private:
    common_speculative_ptr spec_;
};

// "ngram": the tokens that followed the earlier place in the request's own history (prompt and
// output) whose tokens agree longest with its last ones, at least min_match of them (compared up
// to kMaxMatch back; on a tie, the latest place). llama.cpp's ngram-simple takes the latest place
// that agrees over exactly n tokens: a common phrase of n tokens then drafts from wherever it last
// occurred, where the longest agreement finds the passage being copied. Replayed over
// bench_speculative's greedy replies at this machine's decode costs, the cost policy gains more
// with it (JSON extraction 1.15 -> 1.19, free writing 1.09 -> 1.19, the same on the others).
class longest_match_drafter : public drafter {
public:
    explicit longest_match_drafter(int32_t min_match) : min_match_(std::max(1, min_match)) {}

    void begin(llama_seq_id, const std::vector<llama_token> &) override {}

    void draft(std::vector<draft_request> & requests) override {
        for (auto & r : requests) {
            draft_one(*r.tokens, r.last, r.n_max, *r.out);
        }
    }

    void accept(llama_seq_id, int32_t) override {}

private:
    static constexpr int32_t kMaxMatch = 32;

    // history: the decoded tokens; last: sampled after them, not decoded yet. The draft continues
    // after `last`, so it copies what followed an earlier occurrence of `last`.
    void draft_one(const std::vector<llama_token> & history, llama_token last, int32_t n_max,
                   std::vector<llama_token> & out) const {
        if (n_max <= 0) {
            return;
        }
        const auto n = (int64_t) history.size();
        int64_t best_at = -1;
        int32_t best_len = 0;
        // the earlier occurrence must leave at least one token to copy: at most n - 2
        for (int64_t i = n - 2; i >= 0 && best_len < kMaxMatch; --i) {
            if (history[(size_t) i] != last) {
                continue;
            }
            int32_t len = 1; // `last` itself; then history[i - j] against history[n - j]
            while (len < kMaxMatch && i - len >= 0 && history[(size_t) (i - len)] == history[(size_t) (n - len)]) {
                ++len;
            }
            if (len > best_len) {
                best_len = len;
                best_at = i;
            }
        }
        if (best_at < 0 || best_len < min_match_) {
            return;
        }
        const int64_t end = std::min<int64_t>(n, best_at + 1 + n_max);
        out.assign(history.begin() + best_at + 1, history.begin() + end);
    }

    int32_t min_match_;
};

// A draft model: greedy drafts from its own context, one KV sequence per slot.
class model_drafter : public drafter {
public:
    model_drafter(const model & target, std::shared_ptr<model> m, uint32_t n_seq, uint32_t n_ctx_seq, uint32_t n_batch,
                  const thread_counts & threads)
        : m_(std::move(m)), n_vocab_target_(target.n_vocab()), n_batch_(n_batch), threads_(threads), cached_(n_seq) {
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx           = n_ctx_seq * n_seq;
        cp.n_batch         = n_batch;
        cp.n_ubatch        = n_batch;
        cp.n_seq_max       = n_seq;
        cp.n_threads       = threads.n;
        cp.n_threads_batch = threads.n;
        cp.kv_unified      = false;
        cp.no_perf         = true;
        log_capture capture;
        ctx_.reset(llama_init_from_model(const_cast<llama_model *>(m_->get()), cp));
        if (!ctx_) {
            throw llama_error(capture.explain("failed to create the draft model's context"));
        }
        batch_ = llama_batch_init((int32_t) n_batch, 0, 1);
    }
    ~model_drafter() override { llama_batch_free(batch_); }

    void begin(llama_seq_id, const std::vector<llama_token> &) override {}

    void draft(std::vector<draft_request> & requests) override {
        // 1. bring each sequence's cache to the slot's tokens plus the sampled one, keeping the
        //    prefix it already holds (the last token is decoded again for its logits)
        llama_memory_t mem = llama_get_memory(ctx_.get());
        std::vector<std::vector<llama_token>> want(requests.size());
        std::vector<size_t> next(requests.size());
        std::vector<int32_t> out_idx(requests.size(), -1);
        for (size_t r = 0; r < requests.size(); ++r) {
            const auto & req = requests[r];
            want[r] = *req.tokens;
            want[r].push_back(req.last);
            auto & cached = cached_[(size_t) req.seq];
            size_t keep = std::min(common_prefix(cached, want[r]), want[r].size() - 1);
            if (!llama_memory_seq_rm(mem, req.seq, (llama_pos) keep, -1)) {
                llama_memory_seq_rm(mem, req.seq, -1, -1);
                keep = 0;
            }
            cached.resize(keep);
            next[r] = keep;
        }
        for (;;) {
            batch_clear(batch_);
            std::vector<std::pair<size_t, size_t>> in_batch; // (request, tokens)
            for (size_t r = 0; r < requests.size() && (uint32_t) batch_.n_tokens < n_batch_; ++r) {
                const size_t n = std::min<size_t>(want[r].size() - next[r], n_batch_ - (uint32_t) batch_.n_tokens);
                for (size_t k = 0; k < n; ++k) {
                    const size_t i = next[r] + k;
                    if (i + 1 == want[r].size()) {
                        out_idx[r] = batch_.n_tokens;
                    }
                    batch_add(batch_, want[r][i], (llama_pos) i, requests[r].seq, i + 1 == want[r].size());
                }
                if (n > 0) {
                    in_batch.emplace_back(r, n);
                }
            }
            if (batch_.n_tokens == 0) {
                break;
            }
            if (!decode()) {
                return drop(requests);
            }
            for (const auto & [r, n] : in_batch) {
                auto & cached = cached_[(size_t) requests[r].seq];
                cached.insert(cached.end(), want[r].begin() + (ptrdiff_t) next[r], want[r].begin() + (ptrdiff_t) (next[r] + n));
                next[r] += n;
            }
        }
        // 2. one greedy token per drafting sequence per decode
        std::vector<size_t> drafting;
        for (size_t r = 0; r < requests.size(); ++r) {
            if (requests[r].n_max > 0) {
                drafting.push_back(r);
            }
        }
        const int32_t n_vocab = llama_vocab_n_tokens(m_->vocab());
        while (!drafting.empty()) {
            batch_clear(batch_);
            std::vector<size_t> still;
            for (size_t r : drafting) {
                const float * logits = llama_get_logits_ith(ctx_.get(), out_idx[r]);
                const llama_token tok = (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
                if (tok >= n_vocab_target_) {
                    continue; // a token the target does not have ends the draft
                }
                auto & out = *requests[r].out;
                out.push_back(tok);
                if ((int32_t) out.size() >= requests[r].n_max) {
                    continue;
                }
                out_idx[r] = batch_.n_tokens;
                batch_add(batch_, tok, (llama_pos) (want[r].size() + out.size() - 1), requests[r].seq, true);
                still.push_back(r);
            }
            if (still.empty()) {
                break;
            }
            if (!decode()) {
                return drop(requests);
            }
            for (size_t r : still) {
                cached_[(size_t) requests[r].seq].push_back(requests[r].out->back());
            }
            drafting.swap(still);
        }
    }

    void accept(llama_seq_id, int32_t) override {} // the next draft keeps the prefix that matches

private:
    void forget(llama_seq_id seq) {
        llama_memory_seq_rm(llama_get_memory(ctx_.get()), seq, -1, -1);
        cached_[(size_t) seq].clear();
    }

    bool decode() {
        int32_t status = 0;
        compute_run([&] {
            compute_apply_threads(ctx_.get(), {threads_.n, threads_.n, threads_.adaptive});
            status = llama_decode(ctx_.get(), batch_);
        });
        if (status != 0) {
            log_message(GGML_LOG_LEVEL_WARN, "draft model decode failed (status " + std::to_string(status) +
                                                 "); these requests go on without drafts this step");
        }
        return status == 0;
    }

    // A failed draft decode: no drafts this step, and the caches start over.
    void drop(std::vector<draft_request> & requests) {
        for (auto & r : requests) {
            r.out->clear();
            forget(r.seq);
        }
    }

    std::shared_ptr<model> m_;
    llama_context_ptr ctx_;
    llama_batch batch_{};
    int32_t n_vocab_target_;
    uint32_t n_batch_;
    thread_counts threads_;
    std::vector<std::vector<llama_token>> cached_;
};

const std::vector<std::pair<std::string, common_speculative_type>> & ngram_kinds() {
    static const std::vector<std::pair<std::string, common_speculative_type>> kinds = {
        {"ngram", COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE}, // ours (longest_match_drafter); listed for the names
        {"ngram-simple", COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE},
        {"ngram-map-k", COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K},
        {"ngram-map-k4v", COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K4V},
        {"ngram-mod", COMMON_SPECULATIVE_TYPE_NGRAM_MOD},
        {"ngram-cache", COMMON_SPECULATIVE_TYPE_NGRAM_CACHE},
    };
    return kinds;
}

} // namespace

int32_t draft_policy::choose(int32_t n_max, const decode_cost & cost, int32_t & rows, double & tokens) const {
    const double t0 = cost.time(rows);
    if (n_max <= 0 || t0 <= 0.0 || own_ == 0) {
        return 0;
    }
    const double p_first = (first_right_ + 1.0) / (first_n_ + 2.0);
    const double p_next = (next_right_ + 1.0) / (next_n_ + 2.0);
    int32_t best_k = 0;
    double best = tokens / t0; // no draft
    double expected = 0.0, reach = p_first;
    for (int32_t k = 1; k <= n_max; ++k, reach *= p_next) {
        expected += reach;
        const double rate = (tokens + expected) / cost.time(rows + k);
        if (rate > best) {
            best = rate;
            best_k = k;
        }
    }
    if (best_k > 0) {
        rows += best_k;
        tokens = best * cost.time(rows);
    }
    return best_k;
}

void draft_policy::update(int32_t drafted, int32_t accepted) {
    if (drafted <= 0) {
        return;
    }
    constexpr double kDecay = 0.9;
    ++own_;
    first_n_ = kDecay * first_n_ + 1.0;
    first_right_ = kDecay * first_right_ + (accepted > 0 ? 1.0 : 0.0);
    // the tokens after a right one: all after the first up to the first wrong one
    next_n_ = kDecay * next_n_ + (accepted > 0 ? (double) std::min(accepted, drafted - 1) : 0.0);
    next_right_ = kDecay * next_right_ + (accepted > 0 ? (double) (accepted - 1) : 0.0);
}

draft_policy draft_policy::seed() const {
    constexpr double kSeedDrafts = 2.0;
    draft_policy out = *this;
    out.own_ = 0;
    if (first_n_ > kSeedDrafts) {
        const double scale = kSeedDrafts / first_n_;
        out.first_n_ *= scale;
        out.first_right_ *= scale;
        out.next_n_ *= scale;
        out.next_right_ *= scale;
    }
    return out;
}

void decode_cost::calibrate(llama_context * ctx, llama_seq_id seq, int32_t max_rows) {
    ms_.clear();
    std::vector<int32_t> sizes;
    for (int32_t rows = 1; rows <= max_rows; rows = rows < max_rows && rows * 2 > max_rows ? max_rows : rows * 2) {
        sizes.push_back(rows);
        if (rows == max_rows) {
            break;
        }
    }
    llama_batch batch = llama_batch_init(max_rows, 0, 1);
    std::vector<double> best(sizes.size(), 0.0);
    // The first sweep pages the weights in and sizes the buffers, and is not counted; then the
    // fastest of a few sweeps, each over every size, so that a busy moment of the machine does
    // not land on one size only (the choice between k and k+1 rows rests on their ratio).
    constexpr int kSweeps = 4;
    bool failed = false;
    for (int sweep = 0; sweep < kSweeps && !failed; ++sweep) {
        for (size_t s = 0; s < sizes.size(); ++s) {
            batch_clear(batch);
            for (int32_t i = 0; i < sizes[s]; ++i) {
                batch_add(batch, 0, i, seq, true);
            }
            int32_t status = 0;
            const auto t0 = std::chrono::steady_clock::now();
            compute_run([&] { status = llama_decode(ctx, batch); });
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            llama_memory_seq_rm(llama_get_memory(ctx), seq, -1, -1);
            if (status != 0) {
                failed = true; // e.g. out of memory for the largest: keep what was measured
                sizes.resize(s);
                break;
            }
            if (sweep > 0) {
                best[s] = best[s] > 0.0 ? std::min(best[s], ms) : ms;
            }
        }
    }
    for (size_t s = 0; s < sizes.size(); ++s) {
        if (best[s] > 0.0) {
            ms_.emplace_back(sizes[s], best[s]);
        }
    }
    llama_batch_free(batch);
    std::string line = "speculative decoding: measured decodes of";
    for (const auto & [rows, ms] : ms_) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " %d row%s %.2f ms,", rows, rows == 1 ? "" : "s", ms);
        line += buf;
    }
    line.pop_back();
    log_message(GGML_LOG_LEVEL_INFO, line);
}

double decode_cost::time(int32_t rows) const {
    if (ms_.empty() || rows < 1) {
        return 0.0;
    }
    auto hi = std::lower_bound(ms_.begin(), ms_.end(), rows, [](const auto & e, int32_t r) { return e.first < r; });
    if (hi != ms_.end() && hi->first == rows) {
        return hi->second;
    }
    if (hi == ms_.begin()) {
        return hi->second * rows / hi->first;
    }
    const auto lo = hi - 1;
    if (hi == ms_.end()) {
        // beyond the largest measured decode: its cost per row, or the last step's slope
        const double slope = lo == ms_.begin() ? lo->second / lo->first
                                               : (lo->second - (lo - 1)->second) / (lo->first - (lo - 1)->first);
        return lo->second + (rows - lo->first) * slope;
    }
    const double f = (double) (rows - lo->first) / (hi->first - lo->first);
    return lo->second + f * (hi->second - lo->second);
}

std::string vocab_mismatch(const model & target, const model & draft) {
    const llama_vocab * vt = target.vocab();
    const llama_vocab * vd = draft.vocab();
    if (llama_vocab_type(vt) != llama_vocab_type(vd)) {
        auto name = [](enum llama_vocab_type t) -> std::string {
            static const char * names[] = {"none", "SPM", "BPE", "WPM", "UGM", "RWKV", "PLaMo-2"};
            return (size_t) t < sizeof(names) / sizeof(names[0]) ? names[t] : std::to_string((int) t);
        };
        return "the tokenizer types differ (" + name(llama_vocab_type(vt)) + " in the model, " +
               name(llama_vocab_type(vd)) + " in the draft model)";
    }
    const int32_t nt = llama_vocab_n_tokens(vt);
    const int32_t nd = llama_vocab_n_tokens(vd);
    if (std::abs(nt - nd) > 128) {
        return "the vocabularies have " + std::to_string(nt) + " and " + std::to_string(nd) + " tokens";
    }
    if (target.add_bos() != draft.add_bos() || (target.add_bos() && target.bos() != draft.bos())) {
        return "the BOS tokens differ";
    }
    if (target.add_eos() != draft.add_eos() || (target.add_eos() && target.eos() != draft.eos())) {
        return "the EOS tokens differ";
    }
    for (int32_t i = 0; i < std::min(nt, nd); ++i) {
        if (std::strcmp(llama_vocab_get_text(vt, i), llama_vocab_get_text(vd, i)) != 0) {
            return "token " + std::to_string(i) + " is '" + llama_vocab_get_text(vt, i) + "' in the model and '" +
                   llama_vocab_get_text(vd, i) + "' in the draft model";
        }
    }
    return "";
}

std::string speculative_types() {
    std::string out = "none";
    for (const auto & k : ngram_kinds()) {
        out += ", " + k.first;
    }
    return out + ", draft";
}

std::unique_ptr<drafter> drafter_make(const model & target, const speculative_params & p, uint32_t n_seq,
                                      uint32_t n_ctx_seq, uint32_t n_batch, const thread_counts & threads) {
    if (p.type != "none" && p.type != "draft" && p.draft_model) {
        throw invalid_argument_error("a draft model drafts with speculative=\"draft\", not \"" + p.type + "\"");
    }
    if (p.type == "none") {
        return nullptr;
    }
    if (p.draft_max < 1 || p.draft_max > 256) {
        throw invalid_argument_error("draft_max must be in [1, 256], got " + std::to_string(p.draft_max));
    }
    if (p.draft_min < 0 || p.draft_min > p.draft_max) {
        throw invalid_argument_error("draft_min must be in [0, draft_max], got " + std::to_string(p.draft_min));
    }
    if (p.type == "draft") {
        if (!p.draft_model) {
            throw invalid_argument_error("speculative=\"draft\" needs a draft model (draft_model_path)");
        }
        const std::string why = vocab_mismatch(target, *p.draft_model);
        if (!why.empty()) {
            throw invalid_argument_error("the draft model cannot draft for this model: " + why +
                                         "; a draft model must share the model's vocabulary");
        }
        if (p.draft_model->params().vocab_only) {
            throw invalid_argument_error("the draft model was loaded with vocab_only=True and has no weights to run");
        }
        return std::make_unique<model_drafter>(target, p.draft_model, n_seq, n_ctx_seq, n_batch, threads);
    }
    const auto & kinds = ngram_kinds();
    const auto it = std::find_if(kinds.begin(), kinds.end(), [&](const auto & k) { return k.first == p.type; });
    if (it == kinds.end()) {
        throw invalid_argument_error("unknown speculative type '" + p.type + "'; expected one of: " + speculative_types());
    }
    if (p.ngram_size < 1 || p.ngram_size > 1024) {
        throw invalid_argument_error("ngram_size must be in [1, 1024], got " + std::to_string(p.ngram_size));
    }
    if (p.ngram_min_hits < 1 || p.ngram_min_hits > UINT16_MAX) {
        throw invalid_argument_error("ngram_min_hits must be at least 1, got " + std::to_string(p.ngram_min_hits));
    }
    if (p.type == "ngram") {
        return std::make_unique<longest_match_drafter>(p.ngram_size);
    }
    common_params_speculative cp;
    cp.types = {it->second};
    for (auto * m : {&cp.ngram_simple, &cp.ngram_map_k, &cp.ngram_map_k4v}) {
        m->size_n = (uint16_t) p.ngram_size;
        m->size_m = (uint16_t) p.draft_max;
        m->min_hits = (uint16_t) p.ngram_min_hits;
    }
    cp.ngram_mod.n_match = p.ngram_size;
    cp.ngram_mod.n_max = p.draft_max;
    cp.ngram_mod.n_min = p.draft_min;
    return std::make_unique<ngram_drafter>(cp, n_seq);
}

} // namespace lci
