#include "engine.h"

#include "batch.h"
#include "logging.h"

#include "common.h" // common/common.h: common_cpu_get_num_math

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

namespace lci {

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) {
        ++i;
    }
    return i;
}

const char * decode_status_text(int32_t status) {
    switch (status) {
        case 1:  return "no KV cache slot for the batch (the context is full)";
        case 2:  return "aborted";
        case -1: return "invalid input batch";
        default: return "fatal error in the backend";
    }
}

} // namespace

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

    n_threads_       = p.n_threads > 0 ? p.n_threads : common_cpu_get_num_math();
    n_threads_batch_ = p.n_threads_batch > 0 ? p.n_threads_batch : n_threads_;

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = p.n_ctx == 0 ? (uint32_t) std::max(model_->n_ctx_train(), 1) : p.n_ctx;
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
    cp.kv_unified      = true; // every slot may use the whole context
    cp.no_perf         = true;
    cp.abort_callback  = [](void * data) -> bool {
        auto * self = static_cast<engine *>(data);
        request_state * r = self->current_.load(std::memory_order_relaxed);
        return r != nullptr && r->cancelled();
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
    embeddings_ = p.embeddings;
    batch_     = llama_batch_init((int32_t) n_batch_, 0, 1);
    for (uint32_t i = 0; i < n_seq_max_; ++i) {
        slots_.push_back(slot{(llama_seq_id) i, {}});
    }
    worker_ = std::thread([this] { worker_main(); });
}

engine::~engine() {
    close();
    llama_batch_free(batch_);
}

void engine::close() {
    std::deque<task> dropped;
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (closed_.exchange(true)) {
            return;
        }
        dropped.swap(queue_);
        if (request_state * r = current_.load()) {
            r->cancel();
        }
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
    for (llama_token t : req.prompt) {
        model_->check_token(t);
    }
    if (req.prompt.size() > n_ctx_seq_) {
        throw context_window_exceeded_error(
            "the prompt has " + std::to_string(req.prompt.size()) + " tokens but the context window holds " +
            std::to_string(n_ctx_seq_) + " (n_ctx=" + std::to_string(n_ctx_) +
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
    rs->greedy_ = sp.temperature <= 0.0f && sp.grammar.empty() && sp.mirostat == 0 && sp.dry_multiplier == 0.0f && sp.repeat_penalty == 1.0f &&
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

void engine::worker_main() {
    for (;;) {
        task t;
        {
            std::unique_lock<std::mutex> lock(queue_mutex_);
            queue_cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
            if (queue_.empty()) {
                return; // closed
            }
            t = std::move(queue_.front());
            queue_.pop_front();
            if (t.request) {
                current_.store(t.request.get());
                if (closed_) {
                    t.request->cancel();
                }
            }
        }
        if (t.request) {
            try {
                run_request(*t.request);
            } catch (...) {
                t.request->fail(std::current_exception());
            }
            current_.store(nullptr);
        } else {
            try {
                t.fn(ctx_.get());
                t.done->set_value();
            } catch (...) {
                t.done->set_exception(std::current_exception());
            }
        }
    }
}

engine::slot & engine::choose_slot(const std::vector<llama_token> & prompt) {
    // the longest cached prefix wins; ties go to the emptiest slot
    slot * best = &slots_[0];
    size_t best_len = common_prefix(best->tokens, prompt);
    for (auto & s : slots_) {
        const size_t len = common_prefix(s.tokens, prompt);
        if (len > best_len || (len == best_len && s.tokens.size() < best->tokens.size())) {
            best = &s;
            best_len = len;
        }
    }
    return *best;
}

int32_t engine::decode_into(slot & s, const std::vector<llama_token> & tokens, size_t begin, size_t end,
                            bool all_logits, const std::function<void(int32_t, size_t)> & on_outputs) {
    for (size_t i = begin; i < end; i += n_batch_) {
        const size_t n = std::min<size_t>(n_batch_, end - i);
        batch_clear(batch_);
        for (size_t k = 0; k < n; ++k) {
            const bool last = i + k + 1 == end;
            batch_add(batch_, tokens[i + k], (llama_pos) s.tokens.size() + (llama_pos) k, s.id, all_logits || last);
        }
        const int32_t status = llama_decode(ctx_.get(), batch_);
        if (status != 0) {
            return status;
        }
        s.tokens.insert(s.tokens.end(), tokens.begin() + (ptrdiff_t) i, tokens.begin() + (ptrdiff_t) (i + n));
        if (on_outputs) {
            on_outputs((int32_t) n, i);
        }
    }
    return 0;
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
        const llama_token tok = common_sampler_sample(rs.sampler_.get(), ctx_.get(), output_index);
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

void engine::run_request(request_state & rs) {
    const completion_request & req = rs.req_;
    common_sampler * smpl = rs.sampler_.get();
    llama_memory_t mem = llama_get_memory(ctx_.get());
    completion_result res;
    res.n_prompt = (int32_t) req.prompt.size();

    if (rs.cancelled()) {
        res.finish_reason = "cancelled";
        rs.finish(std::move(res));
        return;
    }

    const auto t_start = clock_type::now();
    slot & s = choose_slot(req.prompt);

    // reuse the cached prefix; at least the last prompt token is decoded again for its logits
    size_t n_keep = req.prompt_logprobs ? 0 : common_prefix(s.tokens, req.prompt);
    n_keep = std::min(n_keep, req.prompt.size() - 1);
    if (!llama_memory_seq_rm(mem, s.id, (llama_pos) n_keep, -1)) {
        llama_memory_seq_rm(mem, s.id, -1, -1); // cannot cut this cache (recurrent): start over
        n_keep = 0;
    }
    s.tokens.resize(n_keep);
    res.n_cached = (int32_t) n_keep;

    // the penalties look back over the prompt too
    if (!rs.greedy_) {
        const size_t n_hist =
            std::min<size_t>(req.prompt.size(), (size_t) std::max(req.sampling.penalty_last_n, 64));
        for (size_t i = req.prompt.size() - n_hist; i < req.prompt.size(); ++i) {
            common_sampler_accept(smpl, req.prompt[i], false);
        }
    }

    std::function<void(int32_t, size_t)> on_prompt_outputs;
    if (req.prompt_logprobs && req.logprobs >= 0) {
        token_logprob first; // nothing predicts the first prompt token
        first.token = req.prompt[0];
        first.text = utf8_sanitize(model_->token_to_piece(req.prompt[0], true));
        first.logprob = std::numeric_limits<float>::quiet_NaN();
        res.prompt_logprobs.push_back(std::move(first));
        on_prompt_outputs = [&](int32_t n, size_t first) {
            for (int32_t j = 0; j < n; ++j) {
                const size_t next = first + (size_t) j + 1;
                if (next < req.prompt.size()) {
                    res.prompt_logprobs.push_back(logprob_of(j, req.prompt[next], req.logprobs));
                }
            }
        };
    }
    int32_t status = decode_into(s, req.prompt, n_keep, req.prompt.size(), req.prompt_logprobs, on_prompt_outputs);
    res.time.prompt_ms = ms_since(t_start);
    res.time.prompt_n = (int32_t) (req.prompt.size() - n_keep);
    if (status != 0) {
        sync_slot_after_failure(s);
        if (status == 2) {
            res.finish_reason = "cancelled";
            rs.finish(std::move(res));
            return;
        }
        throw decode_error(std::string("llama_decode failed on the prompt: ") + decode_status_text(status) +
                           " (status " + std::to_string(status) + ")");
    }

    const auto t_eval = clock_type::now();
    text_stream out(req.stop);
    const int64_t max_tokens = req.max_tokens < 0 ? std::numeric_limits<int64_t>::max() : req.max_tokens;
    int32_t idx = batch_.n_tokens - 1;
    std::string finish;
    for (;;) {
        if (rs.cancelled()) {
            finish = "cancelled";
            break;
        }
        if (res.n_completion >= max_tokens) {
            finish = "length";
            break;
        }
        const auto t_sample = clock_type::now();
        const llama_token tok = sample(rs, idx);
        res.time.sample_ms += ms_since(t_sample);
        res.n_completion++;
        res.tokens.push_back(tok);
        if (llama_vocab_is_eog(model_->vocab(), tok)) {
            finish = "stop";
            break;
        }
        const size_t offset = out.size();
        std::string emitted = out.push(model_->token_to_piece(tok, false));
        stream_event ev;
        if (req.logprobs >= 0) {
            token_logprob lp = logprob_of(idx, tok, req.logprobs);
            lp.offset = offset;
            if (req.stream) {
                ev.logprobs.push_back(lp);
            }
            res.logprobs.push_back(std::move(lp));
        }
        if (req.stream && (!emitted.empty() || !ev.logprobs.empty())) {
            ev.text = utf8_sanitize(emitted);
            rs.push_event(std::move(ev));
        }
        if (out.stopped()) {
            finish = "stop";
            res.stop_word = out.stop_word();
            break;
        }
        if (res.n_completion >= max_tokens || s.tokens.size() >= n_ctx_seq_) {
            finish = "length";
            break;
        }
        const std::vector<llama_token> one{tok};
        const auto t_decode = clock_type::now();
        status = decode_into(s, one, 0, 1, false, nullptr);
        res.time.decode_ms += ms_since(t_decode);
        if (status != 0) {
            sync_slot_after_failure(s);
            if (status == 2) {
                finish = "cancelled";
                break;
            }
            throw decode_error(std::string("llama_decode failed while generating: ") + decode_status_text(status) +
                               " (status " + std::to_string(status) + ")");
        }
        idx = 0;
    }
    if (!out.stopped()) {
        std::string tail = out.flush();
        if (req.stream && !tail.empty()) {
            rs.push_event(stream_event{utf8_sanitize(tail), {}});
        }
    }
    // drop logprobs of tokens that only made up a cut stop string
    const size_t kept = out.size();
    while (!res.logprobs.empty() && res.logprobs.back().offset >= kept && kept > 0) {
        res.logprobs.pop_back();
    }
    res.text = utf8_sanitize(out.text());
    res.finish_reason = finish;
    res.time.eval_ms = ms_since(t_eval);
    res.time.eval_n = res.n_completion;
    rs.finish(std::move(res));
}

void engine::reset() {
    run_exclusive([this](llama_context * ctx) {
        llama_memory_clear(llama_get_memory(ctx), true);
        for (auto & s : slots_) {
            s.tokens.clear();
        }
    });
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
