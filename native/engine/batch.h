// Filling a llama_batch, one token at a time.
#pragma once

#include "llama.h"

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

} // namespace lci
