// Filling a llama_batch, one token at a time, and comparing token sequences.
#pragma once

#include "llama.h"

#include <algorithm>
#include <vector>

namespace lci {

inline void batch_clear(llama_batch & b) { b.n_tokens = 0; }

inline void batch_add(llama_batch & b, llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
    const int32_t i = b.n_tokens++;
    b.token[i]     = token;
    b.pos[i]       = pos;
    b.n_seq_id[i]  = 1;
    b.seq_id[i][0] = seq;
    b.logits[i]    = logits ? 1 : 0;
}

// How many leading tokens a and b share.
inline size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) {
        ++i;
    }
    return i;
}

} // namespace lci
