// The engine: one llama_context over a shared model, its KV sequence slots, and the worker thread
// that runs every decode.
//
// Callers submit requests from any thread; each gets a request handle to wait on (with the GIL
// released) for streamed text and the final result, or to cancel. The worker owns the context and
// schedules continuously (scheduler.cpp): up to n_seq_max requests are active at once, each in its
// own slot (a KV sequence that remembers its tokens, so a prompt sharing a prefix with what the
// slot holds decodes only the new suffix). Every step decodes one batch with the next token of
// each generating request plus prompt chunks of new ones, then samples each request with its own
// sampler. Requests beyond n_seq_max wait in FIFO order. Per-token work never leaves C++.
//
// A chat request arrives whole (submit_chat): the template is rendered, the prompt tokenized and
// the grammar set up before it is queued, and the worker parses the reply as it grows, handing
// out OpenAI-shaped deltas only to a request that streams. A request that does not stream wakes
// its waiter once, when it ends. Embeddings run on a second context owned by the engine,
// interleaved with the generation steps, so neither waits for the other and no slot's cache is
// touched. Every graph computation runs on the process-wide compute thread (compute.h).
#pragma once

#include "chat_templates.h"
#include "drafts.h"
#include "errors.h"
#include "model.h"
#include "sampler.h"
#include "text.h"
#include "vision.h"

#include "llama-cpp.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace lci {

struct context_params {
    // Tokens of context per slot (0: the model's training context). With kv_unified, the total
    // that all slots share instead.
    uint32_t n_ctx           = 512;
    uint32_t n_batch         = 512;
    uint32_t n_ubatch        = 512;
    uint32_t n_seq_max       = 1;
    int32_t  n_threads       = -1;   // -1: physical cores
    int32_t  n_threads_batch = -1;   // -1: same as n_threads
    int32_t  flash_attn      = -1;   // -1 auto, 0 off, 1 on
    int32_t  type_k          = -1;   // ggml_type; -1: f16
    int32_t  type_v          = -1;
    bool     embeddings      = false;
    bool     offload_kqv     = true;
    // false: each slot has a KV stream of its own (n_ctx cells), so a decode attends only to its
    // own sequence's cells; true: one pool of n_ctx cells that every slot draws on (idle caches
    // are dropped, least recently used first, when the active requests need room).
    bool     kv_unified      = false;
    float    rope_freq_base  = 0.0f; // 0: from the model
    float    rope_freq_scale = 0.0f;
    // speculative decoding (drafts.h): how the generating requests draft
    speculative_params speculative;
    // images in chat (vision.h): the vision projector loaded beside the model; null for none
    std::shared_ptr<projector> vision;
};

struct top_logprob {
    llama_token token = -1;
    std::string text;
    float logprob = 0.0f;
};

struct token_logprob {
    llama_token token = -1;
    std::string text;     // the token's text (invalid UTF-8 replaced)
    float logprob = 0.0f; // log-softmax of the model's logits; NaN for the first prompt token
    size_t offset = 0;    // byte offset of the token's text in the completion
    std::vector<top_logprob> top; // the most likely tokens at this position, best first
};

struct completion_request {
    std::vector<llama_token> prompt;
    // the images of the prompt: each span's positions in prompt hold placeholders (vision.h)
    std::vector<media_span> media;
    sampling_params sampling;
    int32_t max_tokens = 16;  // < 0: until the context is full
    std::vector<std::string> stop;
    int32_t logprobs = -1;    // < 0: none; k >= 0: chosen token plus the top k
    bool prompt_logprobs = false; // also report logprobs of the prompt tokens (echo)
    bool stream = false;      // deliver text as it becomes final
    bool ignore_eos = false;
    bool speculative = true;  // false: this request never drafts, whatever the engine's setting
    // A chat request: the reply is parsed into a message (and into deltas when streaming).
    std::shared_ptr<const chat_prompt> chat;
    // Test hook: the sampler throws once this many tokens were generated (< 0: never).
    int32_t debug_fail_at = -1;
};

struct timings {
    double prompt_ms = 0.0;
    double eval_ms = 0.0;
    int32_t prompt_n = 0; // prompt tokens decoded (not served from cache)
    int32_t eval_n = 0;   // tokens generated
    double decode_ms = 0.0; // of eval_ms: time inside llama_decode
    double sample_ms = 0.0; // of eval_ms: time in the sampler chain
    int32_t draft_n = 0;          // speculative decoding: drafted tokens verified
    int32_t draft_accepted_n = 0; // of those, accepted (each one a token without a decode of its own)
    int32_t image_n = 0;          // image chunks encoded (not served from the cache)
    double image_encode_ms = 0.0; // of prompt_ms: time in the vision encoder
};

struct completion_result {
    std::string text;
    std::string finish_reason; // "stop", "length" or "cancelled"
    std::string stop_word;     // the stop string that ended generation, if any
    std::vector<llama_token> tokens;
    int32_t n_prompt = 0;
    int32_t n_cached = 0;      // prompt tokens whose KV came from the cache
    int32_t n_completion = 0;
    timings time;
    std::vector<token_logprob> logprobs;
    std::vector<token_logprob> prompt_logprobs;
    std::optional<chat_message> message; // chat requests: the parsed reply
};

struct stream_event {
    std::string text;
    std::vector<token_logprob> logprobs;
    std::vector<chat_delta> deltas; // chat requests: what the new text changed in the message
};

// Shared between the caller and the worker.
class request_state {
public:
    explicit request_state(completion_request req) : req_(std::move(req)) {}

    // Waits until an event is queued or the request finished, at most timeout_s (< 0: forever).
    // Returns true when an event or the end is available.
    bool wait(double timeout_s);
    // Whether an event or the end is available now; never blocks (wait(0) would sleep in the
    // kernel, and on a busy machine lose the CPU to the decode threads for a time slice).
    bool ready() const;
    // Pops the next streamed event, if any.
    std::optional<stream_event> next_event();
    bool done() const;
    // The final result; rethrows the worker's exception if the request failed.
    completion_result result();
    void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
    bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
    // Writes one byte to fd (a non-blocking pipe) whenever an event is queued or the request
    // ends, so an event loop can wait on it without a thread; -1 stops that. POSIX only.
    void set_notify_fd(int fd);
    // How many times the worker woke this request's waiter (events plus the end).
    uint32_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }

private:
    friend class engine;
    friend struct active_request;
    void push_event(stream_event ev);
    void finish(completion_result res);
    void fail(std::exception_ptr err);
    void notify_locked() const; // with mutex_ held

    completion_request req_;
    common_sampler_ptr sampler_;
    // Greedy with no grammar, penalties or mirostat: the argmax of the (biased) logits is the
    // whole sampler, so the chain and its 49k-entry candidate array are skipped.
    bool greedy_ = false;
    std::vector<float> bias_; // dense logit bias for the greedy path (empty: none)
    std::atomic<bool> cancelled_{false};

    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<stream_event> events_;
    bool done_ = false;
    completion_result result_;
    std::exception_ptr error_;
    int notify_fd_ = -1;
    mutable std::atomic<uint32_t> wakeups_{0};
};

struct active_request; // scheduler.cpp: a request being served in a slot

class engine {
public:
    engine(std::shared_ptr<model> m, const context_params & params);
    ~engine();
    engine(const engine &) = delete;
    engine & operator=(const engine &) = delete;

    // Closes every engine of the process (at interpreter exit: no worker may still be computing
    // when the process's static objects, ggml's among them, are destroyed).
    static void close_all();

    // Validates the request and queues it. Throws invalid_argument_error,
    // context_window_exceeded_error or grammar_error before anything is queued.
    std::shared_ptr<request_state> submit(completion_request req);
    // A chat request: renders chat with the templates, tokenizes it, puts the format's grammar,
    // triggers and stop strings into req, and submits it. Throws before queueing as submit does,
    // and invalid_argument_error for malformed messages or tools.
    std::shared_ptr<request_state> submit_chat(const chat_templates & templates, const chat_request & chat,
                                               completion_request req);
    // The prompt tokens a chat request renders to (an image's positions hold its placeholders),
    // without queueing anything.
    std::vector<llama_token> chat_tokens(const chat_templates & templates, const chat_request & chat) const;

    // Embeddings of each input (token ids), one vector of n_embd floats per input. Uses the
    // model's pooling, or the mean over the tokens for models without one; normalize: -1 none,
    // 2 Euclidean (unit length). Inputs are packed into as few decodes as the batch allows, on
    // the engine's embedding context, between generation steps: generation goes on meanwhile
    // and no slot's cache is touched. Throws invalid_argument_error for an empty input or one
    // longer than the batch.
    std::vector<std::vector<float>> embed(const std::vector<std::vector<llama_token>> & inputs, int32_t normalize);

    // Runs fn on the worker, between requests, and waits for it.
    void run_exclusive(const std::function<void(llama_context *)> & fn);

    // Drops every cached token (the KV cache of all slots).
    void reset();
    // The whole context state (KV cache and the cached tokens) as bytes, and back.
    std::string save_state();
    void load_state(const std::string & data);

    // Stops the worker: every queued and running request (and embedding) fails with
    // engine_closed_error, then the worker is joined. Idempotent.
    void close();
    bool closed() const { return closed_.load(); }

    const model & get_model() const { return *model_; }
    uint32_t n_ctx() const { return n_ctx_; }
    uint32_t n_ctx_seq() const { return n_ctx_seq_; }
    uint32_t n_batch() const { return n_batch_; }
    uint32_t n_seq_max() const { return n_seq_max_; }
    // What decodes of 1, 2, 4, ... rows cost when the engine started (empty unless the cost policy drafts).
    const std::vector<std::pair<int32_t, double>> & decode_costs() const { return cost_.measured(); }
    double decode_time(int32_t rows) const { return cost_.time(rows); }
    bool kv_unified() const { return params_.kv_unified; }
    const speculative_params & speculative() const { return params_.speculative; }
    const std::shared_ptr<projector> & vision() const { return params_.vision; }
    // The most tokens one embedding input may have.
    uint32_t n_embed_max() const;
    int32_t n_threads() const { return n_threads_; }
    int32_t n_threads_batch() const { return n_threads_batch_; }
    // The tokens cached in slot 0 (for tests and introspection).
    std::vector<llama_token> cached_tokens(uint32_t slot = 0);
    // KV cells in use, from llama.cpp's memory state (for tests and introspection).
    size_t kv_used();

private:
    struct slot {
        llama_seq_id id = 0;
        std::vector<llama_token> tokens; // what the KV cache holds for this sequence
        bool busy = false;               // serving an active request
        uint64_t last_used = 0;          // for least-recently-used choices
        size_t reply_from = 0;           // the prompt length of its last request: its reply follows
    };
    struct task {
        std::shared_ptr<request_state> request;
        std::function<void(llama_context *)> fn;
        std::shared_ptr<std::promise<void>> done;
    };
    // One embed() call; owned jointly by the caller and the worker.
    struct embed_job {
        std::vector<std::vector<llama_token>> inputs;
        int32_t normalize = 2;
        std::vector<std::vector<float>> out;
        size_t next = 0; // the first input not yet embedded
        std::promise<void> done;
    };

    friend struct active_request;
    // Renders and tokenizes a chat request into req.prompt (and req.media); returns the prompt.
    std::shared_ptr<const chat_prompt> render_chat(const chat_templates & templates, const chat_request & chat,
                                                   completion_request & req) const;
    void worker_main();
    // Fails every active request with err and frees their slots (the worker's exception barrier,
    // and close()).
    void fail_active(std::vector<std::unique_ptr<active_request>> & active, const std::exception_ptr & err);
    // Embeds the next packed batch of the oldest embed() call; false when there was none.
    bool embed_step(bool beside_generation);
    void embed_batch(embed_job & job, uint32_t max_batch);
    // The most tokens an embedding batch holds while requests generate.
    static constexpr uint32_t kEmbedBatchBeside = 128;
    // The newest request of the batch (or of those generating) ends with kv_cache_full_error.
    void evict_newest(std::vector<std::unique_ptr<active_request>> & active, bool in_batch_only);
    size_t kv_used_cells() const;
    // Takes queued work: runs exclusive tasks when nothing is active, admits requests into free
    // slots. Returns false when the worker should exit.
    bool take_work(std::vector<std::unique_ptr<active_request>> & active);
    void admit(std::vector<std::unique_ptr<active_request>> & active, std::shared_ptr<request_state> rs);
    // One scheduling step: ends cancelled requests, then decodes and samples the generating
    // requests (one token each, one decode), then each other request's next prompt chunk.
    void step(std::vector<std::unique_ptr<active_request>> & active);
    // One decode over the generating requests, or over the prompt chunk of `only`.
    void decode_phase(std::vector<std::unique_ptr<active_request>> & active, bool generating,
                      active_request * only);
    // The image that a's prompt reaches next: encoded and decoded into its slot (vision.h).
    void decode_image(std::vector<std::unique_ptr<active_request>> & active, active_request & a, const media_span & span);
    static void drop(std::vector<std::unique_ptr<active_request>> & active, const std::vector<active_request *> & done);
    // Handles a sampled token; returns false when the request finished.
    bool accept_token(active_request & a, llama_token tok, int32_t output_index);
    // Speculative decoding: drafts for the generating requests of this step, at most `budget`
    // tokens in all; then, after the decode, a's verification (samples each position, accepts
    // the agreeing prefix, removes the rest's KV cells). Returns false when a finished.
    void plan_drafts(std::vector<std::unique_ptr<active_request>> & active, size_t budget);
    bool verify_draft(active_request & a, int32_t first_index);
    // A token sampled without a verified draft, compared with the request's unverified draft.
    void check_shadow(active_request & a, llama_token tok);
    void finish(active_request & a, const std::string & reason);
    void finish_result(active_request & a, const std::string & reason);
    // Frees KV cells by dropping the caches of idle slots (least recently used first) until
    // `needed` cells are free or no idle slot holds anything. Returns the free cells.
    size_t make_room(size_t needed);
    void sync_slot_after_failure(slot & s);
    token_logprob logprob_of(int32_t output_index, llama_token token, int32_t top_n) const;
    llama_token sample(request_state & rs, int32_t output_index);
    slot * choose_slot(const std::vector<llama_token> & prompt);

    std::shared_ptr<model> model_;
    llama_context_ptr ctx_;
    llama_batch batch_{};
    uint32_t n_ctx_ = 0, n_ctx_seq_ = 0, n_batch_ = 0, n_seq_max_ = 1;
    int32_t n_threads_ = 0, n_threads_batch_ = 0;
    thread_counts threads_;
    context_params params_;
    std::unique_ptr<drafter> drafter_; // speculative decoding; null when off
    decode_cost cost_;                 // what the rows of a verification cost (measured at start)
    draft_policy drafts_seen_;         // worker only: every request's drafts, to seed the next one's
    llama_context_ptr embd_ctx_; // created by the first embed()
    uint32_t embd_seqs_ = 0;
    double embed_credit_ms_ = 0.0; // worker only: < 0 while embeddings wait for generation
    std::vector<slot> slots_;

    std::mutex queue_mutex_;
    std::condition_variable queue_cv_;
    std::deque<task> queue_;
    std::deque<std::shared_ptr<embed_job>> embed_queue_;
    std::atomic<bool> closed_{false};
    static std::mutex & live_mutex();
    static std::set<engine *> & live_engines();
    std::vector<request_state *> in_batch_; // the requests of the decode in progress (worker only)
    uint64_t use_clock_ = 0;
    std::thread worker_;
};

} // namespace lci
