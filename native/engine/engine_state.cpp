// engine::save_state / load_state: the KV cache with the tokens each slot holds.
#include "engine.h"

#include "logging.h"

#include <cstring>

namespace lci {

namespace {
constexpr char kStateMagic[8] = {'L', 'C', 'I', 'S', 'T', 'A', 'T', '1'};

template <typename T> void put(std::string & out, T v) { out.append(reinterpret_cast<const char *>(&v), sizeof(T)); }

template <typename T> T get(const std::string & in, size_t & pos) {
    if (pos + sizeof(T) > in.size()) {
        throw invalid_argument_error("state data is truncated");
    }
    T v;
    std::memcpy(&v, in.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
}
} // namespace

std::string engine::save_state() {
    std::string out;
    run_exclusive([&](llama_context * ctx) {
        out.append(kStateMagic, sizeof(kStateMagic));
        put<uint32_t>(out, (uint32_t) slots_.size());
        for (const auto & s : slots_) {
            put<uint64_t>(out, s.tokens.size());
            out.append(reinterpret_cast<const char *>(s.tokens.data()), s.tokens.size() * sizeof(llama_token));
        }
        const size_t header = out.size();
        const size_t n = llama_state_get_size(ctx);
        out.resize(header + n);
        const size_t written = llama_state_get_data(ctx, reinterpret_cast<uint8_t *>(out.data() + header), n);
        out.resize(header + written);
    });
    return out;
}

void engine::load_state(const std::string & data) {
    size_t pos = 0;
    if (data.size() < sizeof(kStateMagic) || std::memcmp(data.data(), kStateMagic, sizeof(kStateMagic)) != 0) {
        throw invalid_argument_error("not a state saved by save_state()");
    }
    pos += sizeof(kStateMagic);
    const auto n_slots = get<uint32_t>(data, pos);
    if (n_slots != slots_.size()) {
        throw invalid_argument_error("the state has " + std::to_string(n_slots) + " slots, this engine has " +
                                     std::to_string(slots_.size()));
    }
    std::vector<std::vector<llama_token>> tokens(n_slots);
    for (auto & t : tokens) {
        const auto n = get<uint64_t>(data, pos);
        if (n > n_ctx_ || pos + n * sizeof(llama_token) > data.size()) {
            throw invalid_argument_error("state data is truncated or corrupt");
        }
        t.resize(n);
        std::memcpy(t.data(), data.data() + pos, n * sizeof(llama_token));
        pos += n * sizeof(llama_token);
        for (llama_token tok : t) {
            model_->check_token(tok);
        }
    }
    run_exclusive([&](llama_context * ctx) {
        log_capture capture;
        const size_t read = llama_state_set_data(ctx, reinterpret_cast<const uint8_t *>(data.data() + pos), data.size() - pos);
        if (read == 0) {
            llama_memory_clear(llama_get_memory(ctx), true);
            for (auto & s : slots_) {
                s.tokens.clear();
            }
            throw invalid_argument_error(capture.explain("the state does not fit this model and context"));
        }
        for (size_t i = 0; i < slots_.size(); ++i) {
            slots_[i].tokens = std::move(tokens[i]);
            slots_[i].reply_from = 0; // unknown: the half rule alone decides
        }
    });
}

} // namespace lci
