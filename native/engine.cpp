// Engine, SamplingParams, Request and the result types.
#include "bindings.h"

#include "compute.h"
#include "engine.h"

#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

namespace {

// Releases the GIL while the worker thread is joined: the worker may be waiting for the GIL
// to deliver a log line.
struct py_engine {
    std::unique_ptr<lci::engine> e;
    std::shared_ptr<lci::model> m;

    py_engine(std::shared_ptr<lci::model> model, const lci::context_params & p) : m(std::move(model)) {
        gil_release release;
        e = std::make_unique<lci::engine>(m, p);
    }
    ~py_engine() {
        gil_release release;
        e.reset();
    }
    lci::engine & get() {
        return *e;
    }
};

using request_ptr = std::shared_ptr<lci::request_state>;

} // namespace

void init_engine(nb::module_ & m) {
    nb::class_<lci::sampling_params>(m, "SamplingParams", "Sampler chain settings of one request.")
        .def(nb::init<>())
        .def_rw("temperature", &lci::sampling_params::temperature)
        .def_rw("top_k", &lci::sampling_params::top_k)
        .def_rw("top_p", &lci::sampling_params::top_p)
        .def_rw("min_p", &lci::sampling_params::min_p)
        .def_rw("typical_p", &lci::sampling_params::typical_p)
        .def_rw("top_n_sigma", &lci::sampling_params::top_n_sigma)
        .def_rw("repeat_penalty", &lci::sampling_params::repeat_penalty)
        .def_rw("frequency_penalty", &lci::sampling_params::frequency_penalty)
        .def_rw("presence_penalty", &lci::sampling_params::presence_penalty)
        .def_rw("penalty_last_n", &lci::sampling_params::penalty_last_n)
        .def_rw("mirostat_mode", &lci::sampling_params::mirostat_mode)
        .def_rw("mirostat_tau", &lci::sampling_params::mirostat_tau)
        .def_rw("mirostat_eta", &lci::sampling_params::mirostat_eta)
        .def_rw("dry_multiplier", &lci::sampling_params::dry_multiplier)
        .def_rw("dry_base", &lci::sampling_params::dry_base)
        .def_rw("dry_allowed_length", &lci::sampling_params::dry_allowed_length)
        .def_rw("dry_penalty_last_n", &lci::sampling_params::dry_penalty_last_n)
        .def_rw("seed", &lci::sampling_params::seed)
        .def_rw("logit_bias", &lci::sampling_params::logit_bias)
        .def_rw("grammar", &lci::sampling_params::grammar)
        .def_rw("grammar_lazy", &lci::sampling_params::grammar_lazy)
        .def_rw("grammar_trigger_words", &lci::sampling_params::grammar_trigger_words)
        .def_rw("grammar_trigger_patterns", &lci::sampling_params::grammar_trigger_patterns)
        .def_rw("grammar_trigger_patterns_full", &lci::sampling_params::grammar_trigger_patterns_full)
        .def_rw("grammar_trigger_tokens", &lci::sampling_params::grammar_trigger_tokens)
        .def_rw("preserved_tokens", &lci::sampling_params::preserved_tokens)
        .def_rw("generation_prompt", &lci::sampling_params::generation_prompt)
        .def_rw("grammar_is_output_format", &lci::sampling_params::grammar_is_output_format);

    nb::class_<lci::top_logprob>(m, "TopLogprob")
        .def_ro("token", &lci::top_logprob::token)
        .def_ro("text", &lci::top_logprob::text)
        .def_ro("logprob", &lci::top_logprob::logprob);

    nb::class_<lci::token_logprob>(m, "TokenLogprob")
        .def_ro("token", &lci::token_logprob::token)
        .def_ro("text", &lci::token_logprob::text)
        .def_ro("logprob", &lci::token_logprob::logprob)
        .def_ro("offset", &lci::token_logprob::offset, "Byte offset of the token's text in the completion.")
        .def_ro("top", &lci::token_logprob::top, "The most likely tokens at this position, best first.");

    nb::class_<lci::timings>(m, "Timings")
        .def_ro("prompt_ms", &lci::timings::prompt_ms)
        .def_ro("eval_ms", &lci::timings::eval_ms)
        .def_ro("prompt_n", &lci::timings::prompt_n)
        .def_ro("eval_n", &lci::timings::eval_n)
        .def_ro("decode_ms", &lci::timings::decode_ms, "Part of eval_ms spent inside llama_decode.")
        .def_ro("sample_ms", &lci::timings::sample_ms, "Part of eval_ms spent in the sampler chain.")
        .def_ro("draft_n", &lci::timings::draft_n, "Speculative decoding: drafted tokens verified.")
        .def_ro("draft_accepted_n", &lci::timings::draft_accepted_n,
                "Speculative decoding: drafted tokens accepted (tokens that cost no decode of their own).")
        .def_ro("image_n", &lci::timings::image_n, "Image chunks encoded (not served from the cache).")
        .def_ro("image_encode_ms", &lci::timings::image_encode_ms, "Part of prompt_ms spent in the vision encoder.");

    nb::class_<lci::completion_result>(m, "CompletionResult")
        .def_ro("text", &lci::completion_result::text)
        .def_ro("finish_reason", &lci::completion_result::finish_reason)
        .def_ro("stop_word", &lci::completion_result::stop_word)
        .def_ro("tokens", &lci::completion_result::tokens)
        .def_ro("n_prompt", &lci::completion_result::n_prompt)
        .def_ro("n_cached", &lci::completion_result::n_cached)
        .def_ro("n_completion", &lci::completion_result::n_completion)
        .def_ro("timings", &lci::completion_result::time)
        .def_ro("logprobs", &lci::completion_result::logprobs)
        .def_ro("prompt_logprobs", &lci::completion_result::prompt_logprobs)
        .def_ro("message", &lci::completion_result::message, "Chat requests: the parsed reply (None otherwise).");

    nb::class_<lci::stream_event>(m, "StreamEvent")
        .def_ro("text", &lci::stream_event::text)
        .def_ro("logprobs", &lci::stream_event::logprobs)
        .def_ro("deltas", &lci::stream_event::deltas, "Chat requests: the changes to the message.");

    nb::class_<lci::request_state>(m, "Request", "A submitted completion: wait on it, read its events, cancel it.")
        .def("wait", &lci::request_state::wait, nb::arg("timeout") = -1.0, nb::call_guard<gil_release>(),
             "Blocks (without the GIL) until an event or the end is available, at most timeout seconds "
             "(< 0: no limit). Returns whether something is available.")
        .def_prop_ro("ready", &lci::request_state::ready,
                     "Whether an event or the end is available now (never blocks, keeps the GIL).")
        .def("next_event", &lci::request_state::next_event, "The next streamed event, or None.")
        .def_prop_ro("done", &lci::request_state::done, "True once finished and every event was read.")
        .def("result", &lci::request_state::result, nb::call_guard<gil_release>(),
             "The final result (blocks until finished); raises the error the request failed with.")
        .def("cancel", &lci::request_state::cancel, "Stops the request within one token (or one graph node).")
        .def_prop_ro("cancelled", &lci::request_state::cancelled)
        .def_prop_ro("wakeups", &lci::request_state::wakeups,
                     "How many times the engine woke this request's waiter (streamed events plus the end).")
        .def("set_notify_fd", &lci::request_state::set_notify_fd, nb::arg("fd"),
             "Writes a byte to fd (a non-blocking pipe) on every event and at the end, so an event "
             "loop can wait without a thread; -1 stops it. POSIX only.");

    nb::class_<py_engine>(m, "Engine", "A llama context with its KV slots and decode worker.", nb::is_weak_referenceable())
        .def("__init__",
             [](py_engine * self, std::shared_ptr<lci::model> model, uint32_t n_ctx, uint32_t n_batch,
                uint32_t n_ubatch, uint32_t n_seq_max, int32_t n_threads, int32_t n_threads_batch,
                int32_t flash_attn, int32_t type_k, int32_t type_v, bool embeddings, bool offload_kqv,
                float rope_freq_base, float rope_freq_scale, bool kv_unified, std::string speculative,
                std::shared_ptr<lci::model> draft_model, int32_t draft_max, int32_t draft_min, int32_t ngram_size,
                int32_t ngram_min_hits, bool draft_always, std::shared_ptr<lci::projector> vision) {
                 lci::context_params p;
                 p.n_ctx = n_ctx;
                 p.n_batch = n_batch;
                 p.n_ubatch = n_ubatch;
                 p.n_seq_max = n_seq_max;
                 p.n_threads = n_threads;
                 p.n_threads_batch = n_threads_batch;
                 p.flash_attn = flash_attn;
                 p.type_k = type_k;
                 p.type_v = type_v;
                 p.embeddings = embeddings;
                 p.offload_kqv = offload_kqv;
                 p.rope_freq_base = rope_freq_base;
                 p.rope_freq_scale = rope_freq_scale;
                 p.kv_unified = kv_unified;
                 p.speculative.type = std::move(speculative);
                 p.speculative.draft_model = std::move(draft_model);
                 p.speculative.draft_max = draft_max;
                 p.speculative.draft_min = draft_min;
                 p.speculative.ngram_size = ngram_size;
                 p.speculative.ngram_min_hits = ngram_min_hits;
                 p.speculative.always = draft_always;
                 p.vision = std::move(vision);
                 new (self) py_engine(std::move(model), p);
             },
             nb::arg("model"), nb::kw_only(), nb::arg("n_ctx") = 512, nb::arg("n_batch") = 512,
             nb::arg("n_ubatch") = 512, nb::arg("n_seq_max") = 1, nb::arg("n_threads") = -1,
             nb::arg("n_threads_batch") = -1, nb::arg("flash_attn") = -1, nb::arg("type_k") = -1,
             nb::arg("type_v") = -1, nb::arg("embeddings") = false, nb::arg("offload_kqv") = true,
             nb::arg("rope_freq_base") = 0.0f, nb::arg("rope_freq_scale") = 0.0f, nb::arg("kv_unified") = false,
             nb::arg("speculative") = "none", nb::arg("draft_model").none() = nb::none(), nb::arg("draft_max") = 16,
             nb::arg("draft_min") = 0, nb::arg("ngram_size") = 3, nb::arg("ngram_min_hits") = 1, nb::arg("draft_always") = false,
             nb::arg("vision").none() = nb::none(),
             "speculative: none, an n-gram kind (ngram, ngram-simple, ngram-map-k, ngram-map-k4v, ngram-mod, "
             "ngram-cache) or draft (with draft_model, a model sharing this one's vocabulary); draft_max and "
             "draft_min bound each draft; ngram_size is the n-gram length looked up, ngram_min_hits how often a "
             "key must occur (map kinds); draft_always verifies every draft instead of those worth their cost.")
        .def("submit",
             [](py_engine & self, std::vector<llama_token> prompt, const lci::sampling_params & sampling,
                int32_t max_tokens, std::vector<std::string> stop, int32_t logprobs, bool prompt_logprobs,
                bool stream, bool ignore_eos, bool speculative, int32_t debug_fail_at) {
                 lci::completion_request req;
                 req.prompt = std::move(prompt);
                 req.sampling = sampling;
                 req.max_tokens = max_tokens;
                 req.stop = std::move(stop);
                 req.logprobs = logprobs;
                 req.prompt_logprobs = prompt_logprobs;
                 req.stream = stream;
                 req.ignore_eos = ignore_eos;
                 req.speculative = speculative;
                 req.debug_fail_at = debug_fail_at;
                 gil_release release;
                 return self.get().submit(std::move(req));
             },
             nb::arg("prompt"), nb::arg("sampling"), nb::kw_only(), nb::arg("max_tokens") = 16,
             nb::arg("stop") = std::vector<std::string>{}, nb::arg("logprobs") = -1,
             nb::arg("prompt_logprobs") = false, nb::arg("stream") = false, nb::arg("ignore_eos") = false,
             nb::arg("speculative") = true, nb::arg("debug_fail_at") = -1,
             "Validates and queues a completion; raises before queuing when something is wrong. "
             "debug_fail_at (tests only): the sampler throws after that many tokens.")
        .def("submit_chat",
             [](py_engine & self, const lci::chat_templates & templates, std::string messages_json,
                const lci::sampling_params & sampling, std::string tools_json, std::string tool_choice,
                bool parallel_tool_calls, std::string json_schema, bool json_object, std::string grammar,
                bool enable_thinking, bool parse_reasoning, std::map<std::string, std::string> template_kwargs,
                int32_t max_tokens, std::vector<std::string> stop, int32_t logprobs, bool stream, bool ignore_eos,
                bool speculative, int32_t debug_fail_at, std::vector<nb::bytes> images) {
                 lci::chat_request chat = make_chat_request(
                     std::move(messages_json), std::move(tools_json), std::move(tool_choice), parallel_tool_calls,
                     std::move(json_schema), json_object, std::move(grammar), true, enable_thinking, parse_reasoning,
                     std::move(template_kwargs));
                 for (const auto & img : images) {
                     chat.images.emplace_back(img.c_str(), img.size());
                 }
                 lci::completion_request req;
                 req.sampling = sampling;
                 req.max_tokens = max_tokens;
                 req.stop = std::move(stop);
                 req.logprobs = logprobs;
                 req.stream = stream;
                 req.ignore_eos = ignore_eos;
                 req.speculative = speculative;
                 req.debug_fail_at = debug_fail_at;
                 gil_release release;
                 return self.get().submit_chat(templates, chat, std::move(req));
             },
             nb::arg("templates"), nb::arg("messages_json"), nb::arg("sampling"), nb::kw_only(),
             nb::arg("tools_json") = "", nb::arg("tool_choice") = "auto", nb::arg("parallel_tool_calls") = true,
             nb::arg("json_schema") = "", nb::arg("json_object") = false, nb::arg("grammar") = "",
             nb::arg("enable_thinking") = true, nb::arg("parse_reasoning") = true,
             nb::arg("template_kwargs") = std::map<std::string, std::string>{}, nb::arg("max_tokens") = 16,
             nb::arg("stop") = std::vector<std::string>{}, nb::arg("logprobs") = -1, nb::arg("stream") = false,
             nb::arg("ignore_eos") = false, nb::arg("speculative") = true, nb::arg("debug_fail_at") = -1,
             nb::arg("images") = std::vector<nb::bytes>{},
             "Renders, tokenizes and queues a chat request whole; the result carries the parsed message "
             "and, when streaming, each event the deltas of the message. Raises before queuing when "
             "something is wrong.")
        .def("chat_tokens",
             [](py_engine & self, const lci::chat_templates & templates, std::string messages_json,
                std::string tools_json, std::vector<nb::bytes> images) {
                 lci::chat_request chat = make_chat_request(std::move(messages_json), std::move(tools_json), "auto",
                                                            true, "", false, "", true, true, true, {});
                 for (const auto & img : images) {
                     chat.images.emplace_back(img.c_str(), img.size());
                 }
                 gil_release release;
                 return self.get().chat_tokens(templates, chat);
             },
             nb::arg("templates"), nb::arg("messages_json"), nb::kw_only(), nb::arg("tools_json") = "",
             nb::arg("images") = std::vector<nb::bytes>{},
             "The prompt tokens a chat request renders to, images included (each image position "
             "holds a negative placeholder id); nothing is queued.")
        .def("embed",
             [](py_engine & self, const std::vector<std::vector<llama_token>> & inputs, int32_t normalize) {
                 return self.get().embed(inputs, normalize);
             },
             nb::arg("inputs"), nb::arg("normalize") = 2, nb::call_guard<gil_release>(),
             "One embedding per input (token ids): the model's pooling, or the mean over the "
             "tokens. normalize: -1 none, 2 unit length.")
        .def_prop_ro("n_embed_max", [](py_engine & self) { return self.get().n_embed_max(); },
                     "The most tokens one embedding input may have.")
        .def("reset", [](py_engine & self) { self.get().reset(); }, nb::call_guard<gil_release>(),
             "Forgets every cached token.")
        .def("save_state",
             [](py_engine & self) {
                 std::string s;
                 {
                     gil_release release;
                     s = self.get().save_state();
                 }
                 return nb::bytes(s.data(), s.size());
             })
        .def("load_state",
             [](py_engine & self, nb::bytes data) {
                 std::string s(data.c_str(), data.size());
                 gil_release release;
                 self.get().load_state(s);
             },
             nb::arg("data"))
        .def("cached_tokens", [](py_engine & self, uint32_t slot) { return self.get().cached_tokens(slot); },
             nb::arg("slot") = 0, nb::call_guard<gil_release>())
        .def("kv_used", [](py_engine & self) { return self.get().kv_used(); }, nb::call_guard<gil_release>(),
             "KV cells in use by the slots, from llama.cpp's memory state.")
        .def("close", [](py_engine & self) { self.get().close(); }, nb::call_guard<gil_release>(),
             "Stops the worker; pending requests fail with EngineClosedError.")
        .def_prop_ro("closed", [](py_engine & self) { return self.get().closed(); })
        .def_prop_ro("model", [](py_engine & self) { return self.m; })
        .def_prop_ro("n_ctx", [](py_engine & self) { return self.get().n_ctx(); })
        .def_prop_ro("n_ctx_seq", [](py_engine & self) { return self.get().n_ctx_seq(); })
        .def_prop_ro("n_batch", [](py_engine & self) { return self.get().n_batch(); })
        .def_prop_ro("n_seq_max", [](py_engine & self) { return self.get().n_seq_max(); })
        .def_prop_ro("kv_unified", [](py_engine & self) { return self.get().kv_unified(); })
        .def_prop_ro("speculative", [](py_engine & self) { return self.get().speculative().type; })
        .def_prop_ro("vision", [](py_engine & self) { return self.get().vision(); },
                     "The vision projector given at creation, or None.")
        .def_prop_ro("draft_max", [](py_engine & self) { return self.get().speculative().draft_max; })
        .def_prop_ro("decode_costs", [](py_engine & self) { return self.get().decode_costs(); },
                     "Speculative decoding's cost policy: (rows, ms) of the decodes it measured when the engine "
                     "started, one row up to draft_max + 1 rows (empty without the policy).")
        .def("decode_time", [](py_engine & self, int32_t rows) { return self.get().decode_time(rows); },
             nb::arg("rows"),
             "The cost policy's expected time (ms) of a decode of this many rows: decode_costs interpolated "
             "(0 without the policy).")
        .def_prop_ro("n_threads", [](py_engine & self) { return self.get().n_threads(); })
        .def_prop_ro("n_threads_batch", [](py_engine & self) { return self.get().n_threads_batch(); });

    m.def("compute_count", &lci::compute_count,
          "How many graph computations have run on the process-wide compute thread.");
    m.def(
        "compute_stats",
        [] {
            const lci::compute_stats s = lci::compute_get_stats();
            nb::dict d;
            d["count"]      = s.count;
            d["level"]      = s.level;
            d["reductions"] = s.reductions;
            d["probes"]     = s.probes;
            d["restored"]   = s.restored;
            return d;
        },
        nb::sig("def compute_stats() -> dict[str, int]"),
        "The compute thread's thread policy: computations run, the current level (threads that were not "
        "set explicitly are divided by 2**level while the cores are contended), and how often it "
        "halved the threads, tried more again, and kept them.");
}
