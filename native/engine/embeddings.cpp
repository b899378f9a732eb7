// engine::embed: sentence embeddings as ordinary scheduled work.
//
// The engine owns a second llama_context over the same weights, in embedding mode, created by the
// first embed() and sized for one batch. The worker runs one packed batch of it between two
// generation steps, so generating requests go on while texts are embedded and no slot loses its
// cached prefix. (Measured against the alternative of embedding sequences in the generating
// context: that context would have to switch its output mode per decode and give up KV cells
// that conversations cache; a batch-sized second KV costs n_batch cells, 12 MB on the default
// model.) Several inputs share one decode, each in its own sequence. Models that declare a
// pooling type (BERT-style encoders, embedding fine-tunes) are pooled by llama.cpp; decoder
// models without one get the mean of their token embeddings.
#include "engine.h"

#include "batch.h"
#include "compute.h"
#include "logging.h"

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
    if (inputs.empty()) {
        return {};
    }
    auto job = std::make_shared<embed_job>();
    job->inputs = inputs;
    job->normalize = normalize;
    job->out.resize(inputs.size());
    auto fut = job->done.get_future();
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (closed_) {
            throw engine_closed_error("the engine is closed");
        }
        embed_queue_.push_back(job);
    }
    queue_cv_.notify_one();
    fut.get();
    return std::move(job->out);
}

bool engine::embed_step(bool beside_generation) {
    std::shared_ptr<embed_job> job;
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (embed_queue_.empty()) {
            return false;
        }
        job = embed_queue_.front();
    }
    std::exception_ptr err;
    try {
        embed_batch(*job, beside_generation ? kEmbedBatchBeside : n_batch_);
    } catch (...) {
        err = std::current_exception();
    }
    if (!err && job->next < job->inputs.size()) {
        return true; // more batches on the next round
    }
    {
        // close() may have taken the job meanwhile and failed it: settle it only if it is ours
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (embed_queue_.empty() || embed_queue_.front() != job) {
            return true;
        }
        embed_queue_.pop_front();
    }
    if (err) {
        job->done.set_exception(err);
    } else {
        job->done.set_value();
    }
    return true;
}

void engine::embed_batch(embed_job & job, uint32_t max_batch) {
    if (!embd_ctx_) {
        llama_context_params cp = llama_context_default_params();
        embd_seqs_       = std::min<uint32_t>(std::max<uint32_t>(n_seq_max_, 8), (uint32_t) llama_max_parallel_sequences());
        cp.n_ctx         = n_batch_;
        cp.n_batch       = n_batch_;
        cp.n_ubatch      = llama_n_ubatch(ctx_.get());
        cp.n_seq_max     = embd_seqs_;
        cp.n_threads     = n_threads_;
        cp.n_threads_batch = n_threads_batch_;
        cp.flash_attn_type = (llama_flash_attn_type) params_.flash_attn;
        if (params_.type_k >= 0) cp.type_k = (ggml_type) params_.type_k;
        if (params_.type_v >= 0) cp.type_v = (ggml_type) params_.type_v;
        cp.embeddings      = true;
        cp.offload_kqv     = params_.offload_kqv;
        cp.rope_freq_base  = params_.rope_freq_base;
        cp.rope_freq_scale = params_.rope_freq_scale;
        cp.kv_unified      = true;
        cp.no_perf         = true;
        cp.abort_callback  = [](void * data) -> bool { return static_cast<engine *>(data)->closed_.load(); };
        cp.abort_callback_data = this;
        log_capture capture;
        embd_ctx_.reset(llama_init_from_model(const_cast<llama_model *>(model_->get()), cp));
        if (!embd_ctx_) {
            throw llama_error(capture.explain("failed to create the embedding context"));
        }
    }
    llama_context * ctx = embd_ctx_.get();
    llama_memory_t mem = llama_get_memory(ctx);
    const bool pooled = llama_pooling_type(ctx) != LLAMA_POOLING_TYPE_NONE;
    const bool encode = model_->has_encoder();
    const uint32_t batch_tokens = pooled || encode ? std::min(llama_n_ubatch(ctx), n_batch_) : n_batch_;
    const int32_t n_embd = model_->n_embd();

    // pack whole inputs into one batch, one sequence each (the first one whatever its size)
    const size_t limit = std::max<size_t>(std::min(max_batch, batch_tokens), job.inputs[job.next].size());
    const size_t first = job.next;
    batch_clear(batch_);
    uint32_t n_seqs = 0;
    while (job.next < job.inputs.size() && n_seqs < embd_seqs_ &&
           (size_t) batch_.n_tokens + job.inputs[job.next].size() <= limit) {
        const auto & toks = job.inputs[job.next];
        for (size_t k = 0; k < toks.size(); ++k) {
            batch_add(batch_, toks[k], (llama_pos) k, (llama_seq_id) n_seqs, true);
        }
        ++n_seqs;
        ++job.next;
    }
    llama_memory_clear(mem, true);
    int32_t status = 0;
    compute_run([&] {
        compute_apply_threads(ctx, threads_);
        status = encode ? llama_encode(ctx, batch_) : llama_decode(ctx, batch_);
    });
    if (status != 0) {
        llama_memory_clear(mem, true);
        if (closed_) {
            throw engine_closed_error("the engine was closed");
        }
        throw decode_error("embedding failed: llama_" + std::string(encode ? "encode" : "decode") + " returned " +
                           std::to_string(status));
    }
    int32_t row = 0;
    for (uint32_t s = 0; s < n_seqs; ++s) {
        const size_t n_tok = job.inputs[first + s].size();
        std::vector<float> v((size_t) n_embd, 0.0f);
        if (pooled) {
            const float * e = llama_get_embeddings_seq(ctx, (llama_seq_id) s);
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
        normalize_in_place(v, job.normalize);
        job.out[first + s] = std::move(v);
    }
    llama_memory_clear(mem, true);
}

} // namespace lci
