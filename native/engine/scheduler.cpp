// The worker's continuous-batching scheduler.
//
// Up to n_seq_max requests are active at once, each in its own slot. Every step builds one batch:
// the pending token of each generating request first (one each), then prompt chunks of requests
// still reading their prompt, as far as n_batch and the free KV cells allow. One llama_decode
// runs the batch; then each request samples from its own logits with its own sampler (and
// grammar), hands out text, and either ends (freeing its slot at once) or queues its next token.
// Exclusive tasks (reset, state) run between steps, once no request is active; new requests are
// not admitted while one waits, so it is never starved. Embeddings run between steps too, one
// packed batch at a time, on their own context (embeddings.cpp). With speculative decoding, a
// generating request's token is followed by its draft in the same batch (speculation.cpp).
//
// The worker never takes the process down: an exception fails the requests it concerns (a
// sampler's, the request alone; anything else, every active request) and the worker goes on.
#include "active_request.h"
#include "engine.h"

#include "batch.h"
#include "compute.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lci {

namespace {

// The share of the worker's time that embeddings may take while requests generate, and the
// most tokens one embedding batch holds then (a longer input still goes whole).
constexpr double kEmbedShare = 0.2;

const char * decode_status_text(int32_t status) {
    switch (status) {
        case 1:  return "no KV cache slot for the batch (the context is full)";
        case 2:  return "aborted";
        case -1: return "invalid input batch";
        default: return "fatal error in the backend";
    }
}

} // namespace

void engine::worker_main() {
    std::vector<std::unique_ptr<active_request>> active;
    for (;;) {
        try {
            if (!take_work(active)) {
                break;
            }
            const bool generating = !active.empty();
            if (generating) {
                const auto t0 = clock_type::now();
                step(active);
                embed_credit_ms_ = std::min(0.0, embed_credit_ms_ + ms_since(t0));
            } else {
                embed_credit_ms_ = 0.0;
            }
            // beside generating requests, embeddings get at most kEmbedShare of the worker's
            // time, in small batches, so that generation keeps most of its speed and its
            // inter-token latency; alone, they run at full speed
            if (!generating || embed_credit_ms_ >= 0.0) {
                const auto t0 = clock_type::now();
                if (embed_step(generating) && generating) {
                    embed_credit_ms_ -= ms_since(t0) * (1.0 - kEmbedShare) / kEmbedShare;
                }
            }
        } catch (...) {
            // a bug or an exhausted resource outside any one request's handling: the requests
            // in flight fail with it, the engine keeps serving
            fail_active(active, std::current_exception());
        }
    }
    fail_active(active, std::make_exception_ptr(engine_closed_error("the engine was closed")));
}

void engine::fail_active(std::vector<std::unique_ptr<active_request>> & active, const std::exception_ptr & err) {
    in_batch_.clear();
    for (auto & a : active) {
        if (a->s != nullptr) {
            sync_slot_after_failure(*a->s);
            a->s->busy = false;
            a->s->last_used = ++use_clock_;
        }
        a->rs->fail(err);
    }
    active.clear();
}

bool engine::take_work(std::vector<std::unique_ptr<active_request>> & active) {
    std::vector<std::shared_ptr<request_state>> admitted;
    {
        std::unique_lock<std::mutex> lock(queue_mutex_);
        if (active.empty() && embed_queue_.empty()) {
            queue_cv_.wait(lock, [&] { return closed_ || !queue_.empty() || !embed_queue_.empty(); });
        }
        if (closed_) {
            return false;
        }
        while (!queue_.empty() && admitted.size() + active.size() < n_seq_max_) {
            task & front = queue_.front();
            if (!front.request) {
                if (!active.empty() || !admitted.empty()) {
                    break; // wait until the active requests are done
                }
                task t = std::move(front);
                queue_.pop_front();
                lock.unlock();
                try {
                    t.fn(ctx_.get());
                    t.done->set_value();
                } catch (...) {
                    t.done->set_exception(std::current_exception());
                }
                lock.lock();
                continue;
            }
            admitted.push_back(std::move(front.request));
            queue_.pop_front();
        }
    }
    for (auto & rs : admitted) {
        try {
            admit(active, rs);
        } catch (...) {
            rs->fail(std::current_exception());
        }
    }
    return true;
}

void engine::admit(std::vector<std::unique_ptr<active_request>> & active, std::shared_ptr<request_state> rs) {
    auto a = std::make_unique<active_request>(std::move(rs), ++use_clock_);
    a->policy = drafts_seen_.seed();
    const completion_request & req = a->req();
    a->res.n_prompt = (int32_t) req.prompt.size();
    if (a->rs->cancelled()) {
        a->res.finish_reason = "cancelled";
        a->rs->finish(std::move(a->res));
        return;
    }
    slot * s = choose_slot(req.prompt);
    s->busy = true;
    s->reply_from = req.prompt.size();
    a->s = s;

    // reuse the cached prefix; at least the last prompt token is decoded again for its logits
    llama_memory_t mem = llama_get_memory(ctx_.get());
    size_t n_keep = req.prompt_logprobs ? 0 : common_prefix(s->tokens, req.prompt);
    n_keep = std::min(n_keep, req.prompt.size() - 1);
    for (const auto & span : req.media) {
        if (span.start < n_keep && n_keep < span.start + span.n_tokens) {
            n_keep = span.start; // half an image is no cache: decode it whole
        }
    }
    if (!llama_memory_seq_rm(mem, s->id, (llama_pos) n_keep, -1)) {
        llama_memory_seq_rm(mem, s->id, -1, -1); // cannot cut this cache (recurrent): start over
        n_keep = 0;
    }
    s->tokens.resize(n_keep);
    a->n_done = n_keep;
    a->res.n_cached = (int32_t) n_keep;

    // the penalties look back over the prompt too
    if (!a->rs->greedy_) {
        const size_t n_hist = std::min<size_t>(req.prompt.size(), (size_t) std::max(req.sampling.penalty_last_n, 64));
        for (size_t i = req.prompt.size() - n_hist; i < req.prompt.size(); ++i) {
            if (!is_media_token(req.prompt[i])) {
                common_sampler_accept(a->rs->sampler_.get(), req.prompt[i], false);
            }
        }
    }
    if (req.prompt_logprobs && req.logprobs >= 0) {
        token_logprob first; // nothing predicts the first prompt token
        first.token = req.prompt[0];
        first.text = utf8_sanitize(model_->token_to_piece(req.prompt[0], true));
        first.logprob = std::numeric_limits<float>::quiet_NaN();
        a->res.prompt_logprobs.push_back(std::move(first));
    }
    active.push_back(std::move(a));
}

void engine::finish(active_request & a, const std::string & reason) {
    if (a.s != nullptr) {
        a.s->busy = false;
        a.s->last_used = ++use_clock_;
    }
    try {
        finish_result(a, reason);
    } catch (...) {
        a.rs->fail(std::current_exception()); // e.g. a parser that rejects the final text
    }
}

void engine::finish_result(active_request & a, const std::string & reason) {
    completion_result & res = a.res;
    const completion_request & req = a.req();
    std::string tail;
    if (!a.out.stopped()) {
        tail = utf8_sanitize(a.out.flush());
    }
    // drop logprobs of tokens that only made up a cut stop string
    const size_t kept = a.out.size();
    while (!res.logprobs.empty() && res.logprobs.back().offset >= kept && kept > 0) {
        res.logprobs.pop_back();
    }
    res.text = utf8_sanitize(a.out.text());
    res.finish_reason = reason;
    if (a.generating) {
        res.time.eval_ms = ms_since(a.t_eval);
    } else {
        res.time.prompt_ms = ms_since(a.t_start);
        res.time.prompt_n = (int32_t) (a.n_done - (size_t) res.n_cached);
    }
    res.time.eval_n = res.n_completion;
    if (req.chat && a.parser) {
        stream_event ev;
        ev.text = std::move(tail);
        ev.deltas = a.parser->update(res.text, false);
        if (!ev.text.empty() || !ev.deltas.empty()) {
            a.rs->push_event(std::move(ev));
        }
        res.message = a.parser->message();
    } else if (req.chat) {
        res.message = req.chat->parse(res.text, false);
    } else if (req.stream && !tail.empty()) {
        a.rs->push_event(stream_event{std::move(tail), {}, {}});
    }
    a.rs->finish(std::move(res));
}

bool engine::accept_token(active_request & a, llama_token tok, int32_t idx) {
    const completion_request & req = a.req();
    completion_result & res = a.res;
    res.n_completion++;
    res.tokens.push_back(tok);
    if (llama_vocab_is_eog(model_->vocab(), tok)) {
        finish(a, "stop");
        return false;
    }
    const size_t offset = a.out.size();
    std::string emitted = a.out.push(model_->token_to_piece(tok, false));
    stream_event ev;
    if (req.logprobs >= 0) {
        token_logprob lp = logprob_of(idx, tok, req.logprobs);
        lp.offset = offset;
        if (req.stream) {
            ev.logprobs.push_back(lp);
        }
        res.logprobs.push_back(std::move(lp));
    }
    if (req.stream) {
        ev.text = utf8_sanitize(emitted);
        if (a.parser && !ev.text.empty()) {
            a.streamed += ev.text;
            ev.deltas = a.parser->update(a.streamed, true);
        }
        // a chat stream wakes its reader only when the message changed (or for logprobs)
        if (a.parser ? !ev.deltas.empty() || !ev.logprobs.empty() : !ev.text.empty() || !ev.logprobs.empty()) {
            a.rs->push_event(std::move(ev));
        }
    }
    if (a.out.stopped()) {
        res.stop_word = a.out.stop_word();
        finish(a, "stop");
        return false;
    }
    const int64_t max_tokens = req.max_tokens < 0 ? std::numeric_limits<int64_t>::max() : req.max_tokens;
    if (res.n_completion >= max_tokens || a.s->tokens.size() >= n_ctx_seq_) {
        finish(a, "length");
        return false;
    }
    a.next_token = tok;
    return true;
}

void engine::step(std::vector<std::unique_ptr<active_request>> & active) {
    // cancelled requests end now, freeing their slots
    std::vector<active_request *> done;
    for (auto & a : active) {
        if (a->rs->cancelled()) {
            finish(*a, "cancelled");
            done.push_back(a.get());
        }
    }
    drop(active, done);
    if (active.empty()) {
        return;
    }
    // Generating requests share one decode; each prompt chunk gets a decode of its own. llama.cpp
    // picks matmul kernels by the number of rows (below 8 rows, one row at a time), so a prompt
    // decoded beside other prompts, or a token decoded beside a prompt, could differ in the last
    // bits from the same work done alone, and greedy output would depend on the traffic. This
    // way a request's numbers are those of running alone as long as at most 7 generate at once.
    decode_phase(active, true, nullptr);
    std::vector<active_request *> prompts;
    for (auto & a : active) {
        if (!a->generating) {
            prompts.push_back(a.get());
        }
    }
    for (active_request * a : prompts) {
        const bool still_active = std::any_of(active.begin(), active.end(), [&](const auto & x) { return x.get() == a; });
        if (still_active) {
            decode_phase(active, false, a);
        }
    }
}

void engine::drop(std::vector<std::unique_ptr<active_request>> & active, const std::vector<active_request *> & done) {
    active.erase(std::remove_if(active.begin(), active.end(),
                                [&](const auto & a) { return std::find(done.begin(), done.end(), a.get()) != done.end(); }),
                 active.end());
}

void engine::decode_phase(std::vector<std::unique_ptr<active_request>> & active, bool generating,
                          active_request * only) {
    std::vector<active_request *> done;
    auto member = [&](const active_request & a) {
        return a.generating == generating && (only == nullptr || &a == only);
    };
    size_t wanted = 0;
    for (auto & a : active) {
        if (member(*a)) {
            wanted += generating ? 1 : a->req().prompt.size() - a->n_done;
        }
    }
    if (wanted == 0) {
        return;
    }
    if (!generating) {
        if (const media_span * span = only->media_at(only->n_done)) {
            decode_image(active, *only, *span);
            return;
        }
    }
    if (generating && drafter_) {
        // drafts use only what is left of the batch and, with one shared pool, cells that are
        // free without dropping an idle cache; with a stream per slot, each slot's own room
        const size_t spare_cells = params_.kv_unified ? n_ctx_ - std::min<size_t>(n_ctx_, kv_used_cells() + wanted) : n_batch_;
        plan_drafts(active, std::min<size_t>(n_batch_ - std::min<size_t>(n_batch_, wanted), spare_cells));
    }
    size_t free_cells = 0;
    if (!params_.kv_unified) {
        // each slot has a stream of n_ctx_seq cells: a prompt fits its slot (submit checked
        // it), and a generating request ends with "length" before its slot is full
        free_cells = generating ? n_batch_ : n_ctx_seq_ - std::min<size_t>(n_ctx_seq_, only->s->tokens.size());
    } else {
        free_cells = make_room(std::min<size_t>(wanted, n_batch_));
    }
    if (generating && params_.kv_unified) {
        // the context is full of active requests: the newest generating one gives way
        while (wanted > free_cells) {
            evict_newest(active, false);
            wanted--;
            free_cells = make_room(std::min<size_t>(wanted, n_batch_));
        }
    }

    batch_clear(batch_);
    in_batch_.clear();
    size_t budget = std::min<size_t>(n_batch_, free_cells);
    // in sequence-id order: with a stream per slot, llama.cpp puts only consecutive sequence ids
    // into one ubatch
    std::vector<active_request *> order;
    order.reserve(active.size());
    for (auto & a : active) {
        a->n_in_batch = 0;
        order.push_back(a.get());
    }
    std::sort(order.begin(), order.end(), [](const active_request * x, const active_request * y) {
        return x->s->id < y->s->id;
    });
    for (active_request * a : order) {
        if (!member(*a) || budget == 0) {
            continue;
        }
        a->first_index = batch_.n_tokens;
        if (generating) {
            const llama_pos pos = (llama_pos) a->s->tokens.size();
            if (a->draft.size() + 1 > budget) {
                a->draft.clear();
            }
            a->n_in_batch = 1 + (int32_t) a->draft.size();
            batch_add(batch_, a->next_token, pos, a->s->id, true);
            for (size_t k = 0; k < a->draft.size(); ++k) {
                batch_add(batch_, a->draft[k], pos + 1 + (llama_pos) k, a->s->id, true);
            }
        } else {
            const auto & prompt = a->req().prompt;
            // text up to the next image, which gets a decode of its own
            const size_t n = std::min(budget, a->next_media(a->n_done) - a->n_done);
            a->n_in_batch = (int32_t) n;
            for (size_t k = 0; k < n; ++k) {
                const size_t i = a->n_done + k;
                batch_add(batch_, prompt[i], (llama_pos) i, a->s->id, i + 1 == prompt.size() || a->req().prompt_logprobs);
            }
        }
        budget -= (size_t) a->n_in_batch;
        in_batch_.push_back(a->rs.get());
    }
    if (batch_.n_tokens == 0) {
        bool any_generating = false;
        for (auto & a : active) {
            any_generating = any_generating || a->generating;
        }
        if (!any_generating && only != nullptr) {
            // a prompt that cannot fit while nothing generates will never fit
            only->s->busy = false;
            only->rs->fail(std::make_exception_ptr(context_window_exceeded_error(
                "the context is full: " + std::to_string(active.size()) + " requests share n_ctx=" +
                std::to_string(n_ctx_) + "; create the model with a larger n_ctx")));
            drop(active, {only});
        }
        return; // otherwise the prompt waits for generating requests to end
    }

    const auto t_decode = clock_type::now();
    int32_t status = 0;
    compute_run([&] {
        compute_apply_threads(ctx_.get(), threads_);
        status = llama_decode(ctx_.get(), batch_);
    });
    const double decode_ms = ms_since(t_decode);
    in_batch_.clear();
    if (status != 0) {
        for (auto & a : active) {
            if (a->n_in_batch > 0) {
                sync_slot_after_failure(*a->s);
            }
        }
        if (status == 1) {
            // no room for the batch: drop every idle cache and try again next step; with none
            // left to drop, something must give way, or the same decode would fail forever
            const size_t before = kv_used_cells();
            make_room(std::numeric_limits<size_t>::max() / 2);
            if (kv_used_cells() < before) {
                return;
            }
            if (generating) {
                evict_newest(active, true);
                return;
            }
            const bool any_generating =
                std::any_of(active.begin(), active.end(), [](const auto & x) { return x->generating; });
            if (!any_generating) {
                only->s->busy = false;
                only->rs->fail(std::make_exception_ptr(context_window_exceeded_error(
                    "the KV cache has no room for the prompt (n_ctx=" + std::to_string(n_ctx_) +
                    " cells shared by " + std::to_string(n_seq_max_) +
                    " slots); create the model with a larger n_ctx")));
                drop(active, {only});
            }
            return; // the prompt waits for generating requests to end
        }
        if (status == 2) {
            return; // every request in the batch was cancelled: the next step ends them
        }
        auto err = std::make_exception_ptr(decode_error(std::string("llama_decode failed: ") + decode_status_text(status) +
                                                        " (status " + std::to_string(status) + ")"));
        for (auto & a : active) {
            if (a->n_in_batch > 0) {
                a->s->busy = false;
                a->rs->fail(err);
                done.push_back(a.get());
            }
        }
        drop(active, done);
        return;
    }

    for (auto & a : active) {
        if (a->n_in_batch == 0) {
            continue;
        }
        const completion_request & req = a->req();
        int32_t idx = a->first_index;
        try {
            if (generating) {
                a->s->tokens.push_back(a->next_token);
                a->res.time.decode_ms += decode_ms;
                if (!a->draft.empty()) {
                    if (!verify_draft(*a, idx)) {
                        done.push_back(a.get());
                    }
                    continue;
                }
            } else {
                const size_t n = (size_t) a->n_in_batch;
                a->s->tokens.insert(a->s->tokens.end(), req.prompt.begin() + (ptrdiff_t) a->n_done,
                                    req.prompt.begin() + (ptrdiff_t) (a->n_done + n));
                if (req.prompt_logprobs && req.logprobs >= 0) {
                    for (size_t j = 0; j < n; ++j) {
                        const size_t next = a->n_done + j + 1;
                        if (next < req.prompt.size()) {
                            a->res.prompt_logprobs.push_back(logprob_of(idx + (int32_t) j, req.prompt[next], req.logprobs));
                        }
                    }
                }
                a->n_done += n;
                idx = a->first_index + a->n_in_batch - 1;
                if (a->n_done < req.prompt.size()) {
                    continue; // more prompt next step
                }
                a->generating = true;
                if (drafter_ && a->drafts()) {
                    drafter_->begin(a->s->id, a->s->tokens);
                }
                a->res.time.prompt_ms = ms_since(a->t_start);
                a->res.time.prompt_n = (int32_t) (a->n_done - (size_t) a->res.n_cached);
                a->t_eval = clock_type::now();
                if (req.max_tokens == 0) {
                    finish(*a, "length");
                    done.push_back(a.get());
                    continue;
                }
            }
            debug_fail_hook(*a);
            const auto t_sample = clock_type::now();
            const llama_token tok = sample(*a->rs, idx);
            a->res.time.sample_ms += ms_since(t_sample);
            if (generating && drafter_) {
                check_shadow(*a, tok);
            }
            if (!accept_token(*a, tok, idx)) {
                done.push_back(a.get());
            }
        } catch (...) {
            a->s->busy = false;
            a->rs->fail(std::current_exception());
            done.push_back(a.get());
        }
    }
    drop(active, done);
}

void engine::evict_newest(std::vector<std::unique_ptr<active_request>> & active, bool in_batch_only) {
    active_request * newest = nullptr;
    for (auto & a : active) {
        const bool candidate = in_batch_only ? a->n_in_batch > 0 : a->generating;
        if (candidate && (newest == nullptr || a->admitted > newest->admitted)) {
            newest = a.get();
        }
    }
    if (newest == nullptr) {
        return;
    }
    // its cells are the room the others need: its cache goes with it
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), newest->s->id, -1, -1);
    newest->s->tokens.clear();
    newest->s->busy = false;
    newest->s->last_used = ++use_clock_;
    newest->rs->fail(std::make_exception_ptr(kv_cache_full_error(
        "the KV cache is full: " + std::to_string(active.size()) + " requests share n_ctx=" + std::to_string(n_ctx_) +
        " cells and no idle slot holds a cache to drop, so the newest request was ended after " +
        std::to_string(newest->res.n_completion) +
        " generated tokens; create the model with a larger n_ctx or a smaller n_seq_max")));
    drop(active, {newest});
}

} // namespace lci
