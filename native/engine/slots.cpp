// The slots' KV cache: which slot a new request takes, how many cells are in use, and the room
// a unified pool makes by dropping idle caches. The scheduler (scheduler.cpp) asks; this file
// decides what each slot's cache keeps.
#include "engine.h"

#include "batch.h"

#include <algorithm>

namespace lci {

engine::slot * engine::choose_slot(const std::vector<llama_token> & prompt) {
    // Among free slots: the one with the longest cached prefix, if reusing it keeps at least half
    // of what that slot holds (a short accidental match, e.g. the same system-prompt opening,
    // must not wipe another conversation's cache), or if the prompt repeats the slot's last
    // prompt whole (a retry, another sample, the same question again: only the earlier reply is
    // given up, as llama-server does). Otherwise an empty slot, with a KV stream per slot
    // preferably one next to the busy slots (llama.cpp splits a decode into one ubatch per run
    // of consecutive sequence ids; measured, a gap costs ~2%, far less than a lost cache), else
    // the least recently used one.
    slot * best = nullptr;
    size_t best_len = 0;
    slot * fallback = nullptr;
    int fallback_runs = 0;
    auto runs_with = [&](const slot & extra) {
        int runs = 0;
        bool prev = false;
        for (const auto & s : slots_) {
            const bool busy = s.busy || &s == &extra;
            runs += busy && !prev ? 1 : 0;
            prev = busy;
        }
        return params_.kv_unified ? 0 : runs;
    };
    for (auto & s : slots_) {
        if (s.busy) {
            continue;
        }
        const size_t len = common_prefix(s.tokens, prompt);
        const bool repeats_last_prompt = s.reply_from > 0 && len >= s.reply_from && len < s.tokens.size();
        if (len > 0 && (2 * len >= s.tokens.size() || repeats_last_prompt) && len > best_len) {
            best = &s;
            best_len = len;
        }
        const int runs = s.tokens.empty() ? runs_with(s) : 0;
        const bool better =
            fallback == nullptr || (s.tokens.empty() && !fallback->tokens.empty()) ||
            (s.tokens.empty() && fallback->tokens.empty() && runs < fallback_runs) ||
            (!s.tokens.empty() && !fallback->tokens.empty() && s.last_used < fallback->last_used);
        if (better) {
            fallback = &s;
            fallback_runs = runs;
        }
    }
    return best != nullptr ? best : fallback;
}

size_t engine::make_room(size_t needed) {
    if (!params_.kv_unified) {
        return n_ctx_seq_; // each slot has its own stream: idle caches take no one's room
    }
    auto used = [&] { return kv_used_cells(); };
    size_t free_cells = n_ctx_ - std::min<size_t>(n_ctx_, used());
    while (free_cells < needed) {
        slot * victim = nullptr;
        for (auto & s : slots_) {
            if (!s.busy && !s.tokens.empty() && (victim == nullptr || s.last_used < victim->last_used)) {
                victim = &s;
            }
        }
        if (victim == nullptr) {
            break;
        }
        llama_memory_seq_rm(llama_get_memory(ctx_.get()), victim->id, -1, -1);
        victim->tokens.clear();
        free_cells = n_ctx_ - std::min<size_t>(n_ctx_, used());
    }
    return free_cells;
}

void engine::sync_slot_after_failure(slot & s) {
    // After an abort or a fatal error, the ubatches of the failed call that were processed stay in
    // the cache; s.tokens ends at the last call that succeeded. Make the cache match s.tokens.
    llama_memory_t mem = llama_get_memory(ctx_.get());
    if (!llama_memory_seq_rm(mem, s.id, (llama_pos) s.tokens.size(), -1)) {
        llama_memory_seq_rm(mem, s.id, -1, -1);
        s.tokens.clear();
    }
}

size_t engine::kv_used_cells() const {
    llama_memory_t mem = llama_get_memory(ctx_.get());
    size_t n = 0;
    for (const auto & s : slots_) {
        const llama_pos lo = llama_memory_seq_pos_min(mem, s.id);
        const llama_pos hi = llama_memory_seq_pos_max(mem, s.id);
        if (lo >= 0 && hi >= lo) {
            n += (size_t) (hi - lo + 1);
        }
    }
    return n;
}

} // namespace lci
