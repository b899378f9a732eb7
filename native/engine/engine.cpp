#include "engine.h"

#include "batch.h"
#include "compute.h"
#include "logging.h"

#include "common.h" // common/common.h: common_cpu_get_num_math

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

namespace lci {

// ---------------------------------------------------------------------------------------------
// engine

engine::engine(std::shared_ptr<model> m, const context_params & p) : model_(std::move(m)) {
    backend_init();
    if (model_->params().vocab_only) {
        throw invalid_argument_error("the model was loaded with vocab_only=True and has no weights to run");
    }
    if (p.n_batch < 1) {
        throw invalid_argument_error("n_batch must be at least 1");
    }
    if (p.n_ubatch < 1) {
        throw invalid_argument_error("n_ubatch must be at least 1");
    }
    if (p.n_seq_max < 1 || p.n_seq_max > llama_max_parallel_sequences()) {
        throw invalid_argument_error("n_seq_max must be in [1, " + std::to_string(llama_max_parallel_sequences()) + "]");
    }
    if (p.flash_attn < -1 || p.flash_attn > 1) {
        throw invalid_argument_error("flash_attn must be -1 (auto), 0 (off) or 1 (on)");
    }
    for (int32_t t : {p.type_k, p.type_v}) {
        if (t < -1 || t >= GGML_TYPE_COUNT || (t >= 0 && ggml_type_size((ggml_type) t) == 0)) {
            throw invalid_argument_error("invalid KV cache type " + std::to_string(t));
        }
    }
    if (!std::isfinite(p.rope_freq_base) || p.rope_freq_base < 0 || !std::isfinite(p.rope_freq_scale) ||
        p.rope_freq_scale < 0) {
        throw invalid_argument_error("rope_freq_base and rope_freq_scale must be >= 0 (0: from the model)");
    }

    params_          = p;
    n_threads_       = p.n_threads > 0 ? p.n_threads : common_cpu_get_num_math();
    n_threads_batch_ = p.n_threads_batch > 0 ? p.n_threads_batch : n_threads_;
    // threads the user chose are used as given; the defaults shrink while other work contends for
    // the cores (compute.h). With layers on a GPU, the CPU's share of a decode says nothing.
    threads_ = {n_threads_, n_threads_batch_,
                p.n_threads <= 0 && (model_->params().n_gpu_layers == 0 || !supports_gpu_offload())};

    llama_context_params cp = llama_context_default_params();
    const uint64_t n_ctx = p.n_ctx == 0 ? (uint64_t) std::max(model_->n_ctx_train(), 1) : p.n_ctx;
    // per-slot streams: llama.cpp gives each of n_seq_max streams n_ctx / n_seq_max cells
    const uint64_t n_ctx_total = p.kv_unified ? n_ctx : n_ctx * p.n_seq_max;
    if (n_ctx_total > (uint64_t) std::numeric_limits<int32_t>::max()) {
        throw invalid_argument_error("n_ctx * n_seq_max is too large (" + std::to_string(n_ctx_total) + " KV cells)");
    }
    cp.n_ctx           = (uint32_t) n_ctx_total;
    cp.n_batch         = p.n_batch;
    cp.n_ubatch        = std::min(p.n_ubatch, p.n_batch);
    cp.n_seq_max       = p.n_seq_max;
    cp.n_threads       = n_threads_;
    cp.n_threads_batch = n_threads_batch_;
    cp.flash_attn_type = (llama_flash_attn_type) p.flash_attn;
    if (p.type_k >= 0) cp.type_k = (ggml_type) p.type_k;
    if (p.type_v >= 0) cp.type_v = (ggml_type) p.type_v;
    cp.embeddings      = p.embeddings;
    cp.offload_kqv     = p.offload_kqv;
    cp.rope_freq_base  = p.rope_freq_base;
    cp.rope_freq_scale = p.rope_freq_scale;
    cp.kv_unified      = p.kv_unified;
    cp.no_perf         = true;
    cp.abort_callback  = [](void * data) -> bool {
        // runs on the worker, inside llama_decode: stop when every request in the batch is
        // cancelled (or the engine is closing); one request cannot be cut out of a batch
        auto * self = static_cast<engine *>(data);
        if (self->closed_.load(std::memory_order_relaxed)) {
            return true;
        }
        for (request_state * r : self->in_batch_) {
            if (!r->cancelled()) {
                return false;
            }
        }
        return !self->in_batch_.empty();
    };
    cp.abort_callback_data = this;

    {
        log_capture capture;
        ctx_.reset(llama_init_from_model(const_cast<llama_model *>(model_->get()), cp));
        if (!ctx_) {
            throw llama_error(capture.explain("failed to create the llama context"));
        }
    }
    if (!model_->lora_adapters().empty()) {
        auto adapters = model_->lora_adapters();
        auto scales = model_->lora_scales();
        if (llama_set_adapters_lora(ctx_.get(), adapters.data(), adapters.size(), scales.data()) != 0) {
            throw model_load_error("failed to apply the LoRA adapters to the context");
        }
    }
    n_ctx_     = llama_n_ctx(ctx_.get());
    n_ctx_seq_ = llama_n_ctx_seq(ctx_.get());
    n_batch_   = llama_n_batch(ctx_.get());
    n_seq_max_ = llama_n_seq_max(ctx_.get());
    if (p.speculative.type != "none" || p.speculative.draft_model) {
        if (llama_model_is_recurrent(model_->get()) || llama_model_is_hybrid(model_->get())) {
            throw invalid_argument_error("speculative decoding needs a KV cache whose last cells can be removed; "
                                         "this model's memory is recurrent, so use speculative=None");
        }
        drafter_ = drafter_make(*model_, p.speculative, n_seq_max_, n_ctx_seq_, n_batch_, threads_);
        if (!p.speculative.always) {
            // what a verification of k drafted tokens costs on this machine (the worker is not
            // running yet, so the context is idle)
            cost_.calibrate(ctx_.get(), 0,
                            (int32_t) std::min<uint32_t>({n_batch_, n_ctx_seq_, (uint32_t) p.speculative.draft_max + 1}));
        }
    }
    batch_     = llama_batch_init((int32_t) n_batch_, 0, 1);
    for (uint32_t i = 0; i < n_seq_max_; ++i) {
        slots_.push_back(slot{(llama_seq_id) i, {}});
    }
    worker_ = std::thread([this] { worker_main(); });
    std::lock_guard<std::mutex> lock(live_mutex());
    live_engines().insert(this);
}

std::mutex & engine::live_mutex() {
    static auto * m = new std::mutex(); // never destroyed: used until the process ends
    return *m;
}

std::set<engine *> & engine::live_engines() {
    static auto * s = new std::set<engine *>();
    return *s;
}

void engine::close_all() {
    std::lock_guard<std::mutex> lock(live_mutex());
    for (engine * e : live_engines()) {
        e->close();
    }
}

engine::~engine() {
    {
        std::lock_guard<std::mutex> lock(live_mutex());
        live_engines().erase(this);
    }
    close();
    llama_batch_free(batch_);
}

void engine::close() {
    std::deque<task> dropped;
    std::deque<std::shared_ptr<embed_job>> dropped_embed;
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (closed_.exchange(true)) {
            return;
        }
        dropped.swap(queue_); // the worker fails the active requests when it sees closed_
        dropped_embed.swap(embed_queue_);
    }
    queue_cv_.notify_all();
    auto err = std::make_exception_ptr(engine_closed_error("the engine was closed"));
    for (auto & t : dropped) {
        if (t.request) {
            t.request->fail(err);
        } else if (t.done) {
            t.done->set_exception(err);
        }
    }
    for (auto & j : dropped_embed) {
        j->done.set_exception(err);
    }
    if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) {
        worker_.join();
    }
}

std::shared_ptr<request_state> engine::submit(completion_request req) {
    if (closed_) {
        throw engine_closed_error("the engine is closed");
    }
    if (req.prompt.empty()) {
        throw invalid_argument_error("the prompt is empty (no tokens to condition on)");
    }
    // image placeholders exactly where the spans say, vocabulary ids everywhere else
    size_t next_span = 0;
    for (size_t i = 0; i < req.prompt.size(); ++i) {
        if (next_span < req.media.size() && i == req.media[next_span].start) {
            const media_span & span = req.media[next_span++];
            if (!params_.vision || !span.chunk || span.n_tokens == 0 || span.start + span.n_tokens > req.prompt.size() ||
                !std::all_of(req.prompt.begin() + (ptrdiff_t) i, req.prompt.begin() + (ptrdiff_t) (i + span.n_tokens),
                             is_media_token)) {
                throw invalid_argument_error("the prompt's image spans do not match its tokens");
            }
            i += span.n_tokens - 1;
            continue;
        }
        model_->check_token(req.prompt[i]);
    }
    if (next_span != req.media.size()) {
        throw invalid_argument_error("the prompt's image spans do not match its tokens");
    }
    if (!req.media.empty()) {
        if (req.media.back().start + req.media.back().n_tokens == req.prompt.size()) {
            throw invalid_argument_error("the prompt ends with an image; the model needs text after it to answer");
        }
        if (req.prompt_logprobs) {
            throw invalid_argument_error("prompt logprobs (echo) are not available for prompts with images");
        }
        req.speculative = false; // the drafters work on vocabulary ids
    }
    if (req.prompt.size() > n_ctx_seq_) {
        throw context_window_exceeded_error(
            "the prompt has " + std::to_string(req.prompt.size()) + " tokens but the context window holds " +
            std::to_string(n_ctx_seq_) + " per request (n_ctx=" + std::to_string(n_ctx_seq_) +
            "); shorten the prompt or create the model with a larger n_ctx");
    }
    if (req.logprobs > model_->n_vocab()) {
        throw invalid_argument_error("logprobs must be at most the vocabulary size (" +
                                     std::to_string(model_->n_vocab()) + ")");
    }
    if (req.sampling.logit_bias.size() > (size_t) model_->n_vocab()) {
        throw invalid_argument_error("logit_bias has more entries than the vocabulary");
    }
    auto rs = std::make_shared<request_state>(std::move(req));
    sampling_params & sp = rs->req_.sampling;
    if (rs->req_.ignore_eos) {
        for (llama_token t : model_->eog_tokens()) {
            sp.logit_bias.emplace_back(t, -INFINITY);
        }
    }
    rs->sampler_ = sampler_make(*model_, sp, (int32_t) n_ctx_seq_);
    rs->greedy_ = sp.temperature <= 0.0f && sp.grammar.empty() && sp.mirostat_mode == 0 && sp.dry_multiplier == 0.0f && sp.repeat_penalty == 1.0f &&
                  sp.frequency_penalty == 0.0f && sp.presence_penalty == 0.0f;
    if (rs->greedy_ && !sp.logit_bias.empty()) {
        rs->bias_.assign((size_t) model_->n_vocab(), 0.0f);
        for (const auto & [token, bias] : sp.logit_bias) {
            rs->bias_[(size_t) token] += bias;
        }
    }
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (closed_) {
            throw engine_closed_error("the engine is closed");
        }
        queue_.push_back(task{rs, {}, {}});
    }
    queue_cv_.notify_one();
    return rs;
}

std::shared_ptr<const chat_prompt> engine::render_chat(const chat_templates & templates, const chat_request & chat,
                                                       completion_request & req) const {
    if (!chat.images.empty() && !params_.vision) {
        throw invalid_argument_error("the messages hold " + std::to_string(chat.images.size()) +
                                     " images but the model has no vision projector; load one with mmproj_path=...");
    }
    std::shared_ptr<const chat_prompt> prompt = templates.apply(chat);
    if (prompt->media_marker.empty()) {
        req.prompt = prompt->tokens;
    } else {
        params_.vision->tokenize(prompt->prompt, prompt->media_marker, chat.images, req.prompt, req.media);
    }
    return prompt;
}

std::shared_ptr<request_state> engine::submit_chat(const chat_templates & templates, const chat_request & chat,
                                                   completion_request req) {
    if (closed_) {
        throw engine_closed_error("the engine is closed");
    }
    std::shared_ptr<const chat_prompt> prompt = render_chat(templates, chat, req);
    prompt->configure(*model_, req.sampling);
    req.stop.insert(req.stop.end(), prompt->stops.begin(), prompt->stops.end());
    req.chat = std::move(prompt);
    return submit(std::move(req));
}

std::vector<llama_token> engine::chat_tokens(const chat_templates & templates, const chat_request & chat) const {
    completion_request req;
    render_chat(templates, chat, req);
    return req.prompt;
}

void engine::run_exclusive(const std::function<void(llama_context *)> & fn) {
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (closed_) {
            throw engine_closed_error("the engine is closed");
        }
        queue_.push_back(task{nullptr, fn, done});
    }
    queue_cv_.notify_one();
    fut.get();
}

token_logprob engine::logprob_of(int32_t output_index, llama_token token, int32_t top_n) const {
    const float * logits = llama_get_logits_ith(ctx_.get(), output_index);
    const int32_t n_vocab = model_->n_vocab();
    token_logprob out;
    out.token = token;
    if (logits == nullptr) {
        return out;
    }
    float max_l = -INFINITY;
    for (int32_t i = 0; i < n_vocab; ++i) {
        max_l = std::max(max_l, logits[i]);
    }
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; ++i) {
        sum += std::exp((double) logits[i] - max_l);
    }
    const float log_z = max_l + (float) std::log(sum);
    out.logprob = logits[token] - log_z;
    out.text = utf8_sanitize(model_->token_to_piece(token, true));
    if (top_n > 0) {
        std::vector<std::pair<float, llama_token>> cand((size_t) n_vocab);
        for (int32_t i = 0; i < n_vocab; ++i) {
            cand[(size_t) i] = {logits[i], i};
        }
        const size_t k = std::min<size_t>((size_t) top_n, cand.size());
        std::partial_sort(cand.begin(), cand.begin() + (ptrdiff_t) k, cand.end(),
                          [](const auto & a, const auto & b) { return a.first > b.first; });
        for (size_t i = 0; i < k; ++i) {
            out.top.push_back({cand[i].second, utf8_sanitize(model_->token_to_piece(cand[i].second, true)),
                               cand[i].first - log_z});
        }
    }
    return out;
}

llama_token engine::sample(request_state & rs, int32_t output_index) {
    if (!rs.greedy_) {
        llama_token tok = -1;
        try {
            tok = common_sampler_sample(rs.sampler_.get(), ctx_.get(), output_index);
        } catch (const std::runtime_error & e) {
            // llama.cpp's grammar found no allowed continuation (e.g. a character class that
            // matches nothing): the request ends with the grammar's error, not a bare one
            if (std::strstr(e.what(), "grammar") != nullptr) {
                throw grammar_error(std::string("the grammar allows no token here: ") + e.what());
            }
            throw;
        }
        common_sampler_accept(rs.sampler_.get(), tok, true);
        return tok;
    }
    const float * logits = llama_get_logits_ith(ctx_.get(), output_index);
    const int32_t n = model_->n_vocab();
    llama_token best = 0;
    if (rs.bias_.empty()) {
        for (int32_t i = 1; i < n; ++i) {
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
    } else {
        const float * bias = rs.bias_.data();
        float best_v = logits[0] + bias[0];
        for (int32_t i = 1; i < n; ++i) {
            const float v = logits[i] + bias[i];
            if (v > best_v) {
                best_v = v;
                best = i;
            }
        }
    }
    return best;
}

void engine::reset() {
    run_exclusive([this](llama_context * ctx) {
        llama_memory_clear(llama_get_memory(ctx), true);
        for (auto & s : slots_) {
            s.tokens.clear();
        }
    });
}

size_t engine::kv_used() {
    size_t n = 0;
    run_exclusive([&](llama_context *) { n = kv_used_cells(); });
    return n;
}

std::vector<llama_token> engine::cached_tokens(uint32_t slot_index) {
    if (slot_index >= n_seq_max_) {
        throw invalid_argument_error("slot index out of range");
    }
    std::vector<llama_token> out;
    run_exclusive([&](llama_context *) { out = slots_[slot_index].tokens; });
    return out;
}

} // namespace lci
