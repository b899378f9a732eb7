// Speculative decoding in the scheduler (drafts.h): which generating requests draft this step and
// how much, the verification of a draft after the step's decode, and the comparison of drafts not
// worth verifying with what the request samples next.
#include "active_request.h"
#include "engine.h"

#include <algorithm>
#include <limits>

namespace lci {

namespace {

// A draft the policy does not verify is still asked for, this long, and compared with what the
// request samples next (the drafts of the n-gram kinds cost no decode). While it is compared the
// request does not draft, so a short one lets a request that turns to copying start drafting
// sooner (4 against 8: 15% against 8% faster on bench_speculative's JSON extraction, the same on
// the others).
constexpr int64_t kShadowDraft = 4;

} // namespace

void engine::plan_drafts(std::vector<std::unique_ptr<active_request>> & active, size_t budget) {
    const speculative_params & sp = params_.speculative;
    std::vector<draft_request> requests;
    std::vector<active_request *> drafting;
    // the step so far: a row and a token per generating request; drafts add to both
    int32_t rows = (int32_t) std::count_if(active.begin(), active.end(), [](const auto & a) { return a->generating; });
    double tokens = rows;
    std::vector<bool> shadows; // per drafting request: not to be verified
    for (auto & a : active) {
        a->draft.clear();
        if (!a->generating || !a->drafts() || !a->shadow.empty()) {
            continue;
        }
        const completion_request & req = a->req();
        // next_token is counted already; each accepted draft token is one more, and so is the
        // token sampled after the last accepted one
        const int64_t left = req.max_tokens < 0 ? std::numeric_limits<int64_t>::max()
                                                : (int64_t) req.max_tokens - a->res.n_completion;
        const int64_t room = (int64_t) n_ctx_seq_ - (int64_t) a->s->tokens.size() - 1; // after next_token
        const int64_t limit = std::min<int64_t>({(int64_t) sp.draft_max, left - 1, room});
        if (limit < std::max(1, sp.draft_min)) {
            continue;
        }
        int32_t n_max = sp.always ? (int32_t) limit : a->policy.choose((int32_t) limit, cost_, rows, tokens);
        const bool shadow = n_max < std::max(1, sp.draft_min);
        if (shadow) {
            n_max = (int32_t) std::min<int64_t>(limit, kShadowDraft);
        }
        requests.push_back(draft_request{a->s->id, &a->s->tokens, a->next_token, n_max, &a->draft});
        drafting.push_back(a.get());
        shadows.push_back(shadow);
    }
    if (requests.empty()) {
        return;
    }
    drafter_->draft(requests);
    for (size_t i = 0; i < drafting.size(); ++i) {
        active_request * a = drafting[i];
        if (shadows[i]) {
            a->shadow.swap(a->draft);
            a->shadow_hits = 0;
            continue;
        }
        if ((int32_t) a->draft.size() < sp.draft_min) {
            a->draft.clear();
        }
        a->draft.resize(std::min(a->draft.size(), budget));
        budget -= a->draft.size();
    }
}

void engine::check_shadow(active_request & a, llama_token tok) {
    if (a.shadow.empty()) {
        return;
    }
    if (tok == a.shadow[a.shadow_hits] && ++a.shadow_hits < a.shadow.size()) {
        return; // right so far
    }
    drafter_->accept(a.s->id, (int32_t) a.shadow_hits);
    a.policy.update((int32_t) a.shadow.size(), (int32_t) a.shadow_hits);
    drafts_seen_.update((int32_t) a.shadow.size(), (int32_t) a.shadow_hits);
    a.shadow.clear();
}

bool engine::verify_draft(active_request & a, int32_t idx) {
    const size_t n_draft = a.draft.size();
    size_t n_accepted = 0; // draft tokens the request sampled too
    bool alive = true;
    // counted as they are known: the token that ends the request publishes its result
    a.res.time.draft_n += (int32_t) n_draft;
    for (;;) {
        debug_fail_hook(a);
        const auto t_sample = clock_type::now();
        const llama_token tok = sample(*a.rs, idx);
        a.res.time.sample_ms += ms_since(t_sample);
        const bool right = n_accepted < n_draft && tok == a.draft[n_accepted];
        if (right) {
            ++n_accepted;
            ++a.res.time.draft_accepted_n;
        }
        alive = accept_token(a, tok, idx);
        if (!alive || !right) {
            break;
        }
        a.s->tokens.push_back(tok); // the draft token's cell holds its KV already
        ++idx;
    }
    // the cells of the draft tokens after the accepted ones
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), a.s->id, (llama_pos) a.s->tokens.size(), -1);
    drafter_->accept(a.s->id, (int32_t) n_accepted);
    a.policy.update((int32_t) n_draft, (int32_t) n_accepted);
    drafts_seen_.update((int32_t) n_draft, (int32_t) n_accepted);
    a.draft.clear();
    return alive;
}

} // namespace lci
