// What the worker keeps for each request it serves (scheduler.cpp, speculation.cpp); private to
// the engine.
#pragma once

#include "engine.h"

#include <chrono>
#include <stdexcept>
#include <memory>
#include <string>
#include <vector>

namespace lci {

using clock_type = std::chrono::steady_clock;

inline double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

struct active_request {
    std::shared_ptr<request_state> rs;
    engine::slot * s = nullptr;
    size_t n_done = 0;          // prompt tokens in the slot's KV
    bool generating = false;    // the prompt is read; next_token waits to be decoded
    llama_token next_token = -1;
    int32_t first_index = -1;   // this step: batch index of the request's first token
    int32_t n_in_batch = 0;     // this step: how many of its tokens are in the batch
    uint64_t admitted = 0;      // admission order (the newest gives way when the context is full)
    // speculative decoding: this step's draft (decoded after next_token) and how long a draft is
    // worth verifying
    std::vector<llama_token> draft;
    draft_policy policy;
    // a draft not worth verifying, checked against the tokens sampled next (shadow_hits so far)
    std::vector<llama_token> shadow;
    size_t shadow_hits = 0;
    text_stream out;
    std::unique_ptr<chat_stream> parser; // a streamed chat reply: deltas as it grows
    std::string streamed;                 // the final text the parser has seen
    completion_result res;
    clock_type::time_point t_start, t_eval;

    active_request(std::shared_ptr<request_state> r, uint64_t order)
        : rs(std::move(r)), admitted(order), out(rs->req_.stop), t_start(clock_type::now()) {
        if (rs->req_.chat && rs->req_.stream) {
            parser = std::make_unique<chat_stream>(rs->req_.chat);
        }
    }
    bool drafts() const { return rs->req_.speculative; }
    // The image span that starts at prompt position pos, if any.
    const media_span * media_at(size_t pos) const {
        for (const auto & m : rs->req_.media) {
            if (m.start == pos) {
                return &m;
            }
        }
        return nullptr;
    }
    // Where the next image at or after pos starts (the prompt's end when none).
    size_t next_media(size_t pos) const {
        for (const auto & m : rs->req_.media) {
            if (m.start >= pos) {
                return m.start;
            }
        }
        return rs->req_.prompt.size();
    }
    const completion_request & req() const { return rs->req_; }
};

// The test hook of completion_request::debug_fail_at: the sampler "fails" there.
inline void debug_fail_hook(const active_request & a) {
    const int32_t at = a.req().debug_fail_at;
    if (at >= 0 && a.res.n_completion >= at) {
        throw std::runtime_error("the sampler failed (test hook: debug_fail_at=" + std::to_string(at) + ")");
    }
}

} // namespace lci
