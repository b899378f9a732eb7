// The scheduler's image step (vision.h): when a request's prompt reaches an image, the worker
// encodes it and decodes its embeddings into the request's slot, as one step of its own, between
// the generating requests' steps, like any prompt chunk (scheduler.cpp).
#include "active_request.h"
#include "engine.h"

#include "compute.h"

#include <algorithm>

namespace lci {

void engine::decode_image(std::vector<std::unique_ptr<active_request>> & active, active_request & a,
                          const media_span & span) {
    const size_t n = span.n_tokens;
    if (params_.kv_unified && make_room(n) < n) {
        const bool any_generating =
            std::any_of(active.begin(), active.end(), [](const auto & x) { return x->generating; });
        if (!any_generating) {
            a.s->busy = false;
            a.rs->fail(std::make_exception_ptr(context_window_exceeded_error(
                "the context is full: an image of " + std::to_string(n) + " tokens does not fit in n_ctx=" +
                std::to_string(n_ctx_) + "; create the model with a larger n_ctx")));
            drop(active, {&a});
        }
        return; // the image waits for generating requests to end
    }
    in_batch_.assign(1, a.rs.get()); // a cancel aborts the image's decodes
    int32_t status = 0;
    double encode_ms = 0.0;
    try {
        compute_run([&] {
            compute_apply_threads(ctx_.get(), threads_);
            status = params_.vision->decode(ctx_.get(), span, (llama_pos) a.n_done, a.s->id, (int32_t) n_batch_, encode_ms);
        });
    } catch (...) {
        in_batch_.clear();
        sync_slot_after_failure(*a.s);
        a.s->busy = false;
        a.rs->fail(std::current_exception());
        drop(active, {&a});
        return;
    }
    in_batch_.clear();
    if (status != 0) {
        sync_slot_after_failure(*a.s);
        if (a.rs->cancelled()) {
            return; // the next step ends it
        }
        a.s->busy = false;
        a.rs->fail(std::make_exception_ptr(decode_error("decoding the image's embeddings failed (no room in the KV "
                                                        "cache, or a backend error)")));
        drop(active, {&a});
        return;
    }
    const auto & prompt = a.req().prompt;
    a.s->tokens.insert(a.s->tokens.end(), prompt.begin() + (ptrdiff_t) span.start,
                       prompt.begin() + (ptrdiff_t) (span.start + n));
    a.n_done += n;
    a.res.time.image_n++;
    a.res.time.image_encode_ms += encode_ms;
}

} // namespace lci
