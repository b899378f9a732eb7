// engine::embed: sentence embeddings from the same context that generates.
//
// The context switches to embedding output for the call (llama_set_embeddings) and back. Several
// inputs share one decode, each in its own sequence; the slots they used lose their prompt cache.
// Models that declare a pooling type (BERT-style encoders, embedding fine-tunes) are pooled by
// llama.cpp; decoder models without one get the mean of their token embeddings.
#include "engine.h"

#include "batch.h"

#include <algorithm>
#include <cmath>

namespace lci {

namespace {

void normalize_in_place(std::vector<float> & v, int32_t norm) {
    if (norm < 0) {
        return;
    }
    double sum = 0.0;
    if (norm == 0) { // max absolute value, scaled to int16 like llama.cpp's common_embd_normalize
        for (float x : v) {
            sum = std::max(sum, (double) std::fabs(x));
        }
        sum /= 32760.0;
    } else if (norm == 2) {
        for (float x : v) {
            sum += (double) x * x;
        }
        sum = std::sqrt(sum);
    } else {
        for (float x : v) {
            sum += std::pow(std::fabs((double) x), norm);
        }
        sum = std::pow(sum, 1.0 / norm);
    }
    if (sum > 0.0) {
        const float inv = (float) (1.0 / sum);
        for (float & x : v) {
            x *= inv;
        }
    }
}

} // namespace

uint32_t engine::n_embed_max() const {
    const bool pooled = llama_pooling_type(ctx_.get()) != LLAMA_POOLING_TYPE_NONE;
    // a pooled (or non-causal) sequence must fit in one physical batch
    const uint32_t limit = pooled || model_->has_encoder() ? llama_n_ubatch(ctx_.get()) : n_batch_;
    return std::min(limit, n_ctx_seq_);
}

std::vector<std::vector<float>> engine::embed(const std::vector<std::vector<llama_token>> & inputs,
                                              int32_t normalize) {
    if (closed_) {
        throw engine_closed_error("the engine is closed");
    }
    const uint32_t max_tokens = n_embed_max();
    for (size_t i = 0; i < inputs.size(); ++i) {
        if (inputs[i].empty()) {
            throw invalid_argument_error("input " + std::to_string(i) + " has no tokens to embed");
        }
        if (inputs[i].size() > max_tokens) {
            throw invalid_argument_error("input " + std::to_string(i) + " has " + std::to_string(inputs[i].size()) +
                                         " tokens but one embedding input holds at most " +
                                         std::to_string(max_tokens) +
                                         " (n_batch/n_ubatch); truncate it or raise n_batch and n_ubatch");
        }
        for (llama_token t : inputs[i]) {
            model_->check_token(t);
        }
    }
    if (normalize < -1) {
        throw invalid_argument_error("normalize must be -1 (none), 0 (max abs), 1 (taxicab), 2 (Euclidean) or p > 2");
    }

    const int32_t n_embd = model_->n_embd();
    std::vector<std::vector<float>> out(inputs.size());
    run_exclusive([&](llama_context * ctx) {
        llama_memory_t mem = llama_get_memory(ctx);
        const bool pooled = llama_pooling_type(ctx) != LLAMA_POOLING_TYPE_NONE;
        const bool encode = model_->has_encoder();
        const uint32_t batch_tokens = pooled || encode ? std::min(llama_n_ubatch(ctx), n_batch_) : n_batch_;

        auto clear_seqs = [&](uint32_t n) {
            for (uint32_t s = 0; s < n; ++s) {
                llama_memory_seq_rm(mem, slots_[s].id, -1, -1);
                slots_[s].tokens.clear();
            }
        };

        llama_set_embeddings(ctx, true);
        struct restore {
            llama_context * ctx;
            bool value;
            ~restore() { llama_set_embeddings(ctx, value); }
        } restore_mode{ctx, embeddings_};

        size_t next = 0;
        while (next < inputs.size()) {
            // pack whole inputs into one batch, one sequence each
            const size_t first = next;
            batch_clear(batch_);
            uint32_t n_seqs = 0;
            while (next < inputs.size() && n_seqs < n_seq_max_ &&
                   (size_t) batch_.n_tokens + inputs[next].size() <= batch_tokens) {
                const auto & toks = inputs[next];
                for (size_t k = 0; k < toks.size(); ++k) {
                    batch_add(batch_, toks[k], (llama_pos) k, slots_[n_seqs].id, true);
                }
                ++n_seqs;
                ++next;
            }
            clear_seqs(n_seqs);
            const int32_t status = encode ? llama_encode(ctx, batch_) : llama_decode(ctx, batch_);
            if (status != 0) {
                clear_seqs(n_seqs);
                throw decode_error("embedding failed: llama_" + std::string(encode ? "encode" : "decode") +
                                   " returned " + std::to_string(status));
            }
            int32_t row = 0;
            for (uint32_t s = 0; s < n_seqs; ++s) {
                const size_t n_tok = inputs[first + s].size();
                std::vector<float> v((size_t) n_embd, 0.0f);
                if (pooled) {
                    const float * e = llama_get_embeddings_seq(ctx, slots_[s].id);
                    if (e == nullptr) {
                        throw decode_error("llama.cpp returned no pooled embedding");
                    }
                    std::copy(e, e + n_embd, v.begin());
                } else {
                    for (size_t k = 0; k < n_tok; ++k) {
                        const float * e = llama_get_embeddings_ith(ctx, row + (int32_t) k);
                        if (e == nullptr) {
                            throw decode_error("llama.cpp returned no token embedding");
                        }
                        for (int32_t d = 0; d < n_embd; ++d) {
                            v[(size_t) d] += e[d];
                        }
                    }
                    for (float & x : v) {
                        x /= (float) n_tok;
                    }
                }
                row += (int32_t) n_tok;
                normalize_in_place(v, normalize);
                out[first + s] = std::move(v);
            }
            clear_seqs(n_seqs);
        }
    });
    return out;
}

} // namespace lci
