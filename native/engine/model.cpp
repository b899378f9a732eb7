#include "model.h"

#include "errors.h"
#include "logging.h"

#include "ggml-backend.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>

namespace lci {

namespace {

// llama.cpp's "return the length, write at most buf_size" string getters.
template <typename F> std::string read_string(F && getter) {
    std::vector<char> buf(256);
    int32_t n = getter(buf.data(), buf.size());
    if (n < 0) {
        return {};
    }
    if ((size_t) n >= buf.size()) {
        buf.resize((size_t) n + 1);
        n = getter(buf.data(), buf.size());
        if (n < 0) {
            return {};
        }
    }
    return std::string(buf.data(), (size_t) n);
}

void check_gguf_value_types(std::ifstream & f, const std::string & path);

void check_gguf_file(const std::string & path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (path.empty()) {
        throw model_load_error("model_path is empty");
    }
    const fs::path p(path);
    if (!fs::exists(p, ec)) {
        throw model_load_error("model file not found: " + path);
    }
    if (fs::is_directory(p, ec)) {
        throw model_load_error("model path is a directory, not a GGUF file: " + path);
    }
    std::ifstream f(p, std::ios::binary);
    if (!f) {
        throw model_load_error("cannot open model file (permission denied?): " + path);
    }
    char magic[4] = {0, 0, 0, 0};
    f.read(magic, 4);
    if (f.gcount() < 4 || std::memcmp(magic, "GGUF", 4) != 0) {
        throw model_load_error("not a GGUF file (bad magic bytes): " + path);
    }
    check_gguf_value_types(f, path);
}

// Walks the key/value section and refuses a value type id outside GGUF's: llama.cpp's reader
// loads the id into its enum before it checks it, which is undefined behaviour (UBSan reports
// it). Everything else (truncation, absurd sizes) is left to llama.cpp, whose messages name it:
// the walk just stops where the file ends or stops making sense.
void check_gguf_value_types(std::ifstream & f, const std::string & path) {
    constexpr uint32_t kString = 8, kArray = 9, kTypeCount = 13;
    auto size_of = [](uint32_t t) -> uint64_t {
        static const uint64_t sizes[kTypeCount] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        return sizes[t];
    };
    auto read_u32 = [&](uint32_t & v) { return static_cast<bool>(f.read(reinterpret_cast<char *>(&v), 4)); };
    auto read_u64 = [&](uint64_t & v) { return static_cast<bool>(f.read(reinterpret_cast<char *>(&v), 8)); };
    auto skip = [&](uint64_t n) {
        if (n > (uint64_t) std::numeric_limits<std::streamoff>::max() / 2) {
            return false;
        }
        if (n > (1u << 20)) { // seekg() drops the read buffer: only for long skips
            f.seekg((std::streamoff) n, std::ios::cur);
            return f.good() && f.peek() != std::ifstream::traits_type::eof();
        }
        f.ignore((std::streamsize) n);
        return static_cast<bool>(f) && (uint64_t) f.gcount() == n;
    };
    auto bad_type = [&](uint64_t kv, uint32_t t) {
        throw model_load_error("invalid GGUF file " + path + ": key/value " + std::to_string(kv) +
                               " has value type " + std::to_string(t) + " (valid types are 0-12)");
    };
    uint32_t version = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    if (!read_u32(version) || version < 2 || !read_u64(n_tensors) || !read_u64(n_kv)) {
        return; // llama.cpp explains a bad version or a truncated header
    }
    for (uint64_t kv = 0; kv < n_kv; ++kv) {
        uint64_t key_len = 0;
        uint32_t type = 0;
        if (!read_u64(key_len) || !skip(key_len) || !read_u32(type)) {
            return;
        }
        if (type >= kTypeCount) {
            bad_type(kv, type);
        }
        uint64_t count = 1;
        if (type == kArray) {
            if (!read_u32(type) || !read_u64(count)) {
                return;
            }
            if (type >= kTypeCount || type == kArray) {
                bad_type(kv, type);
            }
        }
        if (type == kString) {
            for (uint64_t i = 0; i < count; ++i) {
                uint64_t len = 0;
                if (!read_u64(len) || !skip(len)) {
                    return;
                }
            }
        } else if (count > std::numeric_limits<uint64_t>::max() / 8 || !skip(count * size_of(type))) {
            return;
        }
    }
}

} // namespace

namespace {

// Set while a model file is read: a failed GGML_ASSERT in llama.cpp's loader (a corrupt file can
// break its invariants, e.g. two tokens with the same text) then throws model_load_error instead
// of aborting the process. Anywhere else an assertion still aborts, as llama.cpp intends.
thread_local bool t_loading = false;

void on_ggml_abort(const char * message) {
    if (t_loading) {
        t_loading = false;
        throw model_load_error(std::string("llama.cpp rejected the file: ") + message);
    }
    fprintf(stderr, "%s\n", message); // then ggml aborts
}

} // namespace

load_guard::load_guard() : prev_(t_loading) { t_loading = true; }
load_guard::~load_guard() { t_loading = prev_; }

void backend_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        llama_backend_init();
        ggml_set_abort_callback(on_ggml_abort);
    });
}

std::shared_ptr<model> model::load(const model_params & params, const progress_fn & progress) {
    backend_init();
    check_gguf_file(params.path);
    if (!params.tensor_split.empty() && params.tensor_split.size() > llama_max_devices()) {
        throw invalid_argument_error("tensor_split has " + std::to_string(params.tensor_split.size()) +
                                     " entries but at most " + std::to_string(llama_max_devices()) +
                                     " devices are supported");
    }

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params.n_gpu_layers < 0 ? 999999 : params.n_gpu_layers;
    mp.main_gpu     = params.main_gpu;
    mp.vocab_only   = params.vocab_only;
    mp.check_tensors = params.check_tensors;
    if (params.use_mmap) {
        mp.load_mode = params.use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP;
    } else {
        mp.load_mode = params.use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE;
    }
    std::vector<float> split(llama_max_devices(), 0.0f);
    if (!params.tensor_split.empty()) {
        std::copy(params.tensor_split.begin(), params.tensor_split.end(), split.begin());
        mp.tensor_split = split.data();
    }
    struct progress_state {
        const progress_fn * fn;
        bool cancelled = false;
    } state{&progress};
    if (progress) {
        mp.progress_callback = [](float p, void * ud) -> bool {
            auto * st = static_cast<progress_state *>(ud);
            if (!(*st->fn)(p)) {
                st->cancelled = true;
                return false;
            }
            return true;
        };
        mp.progress_callback_user_data = &state;
    }

    std::shared_ptr<model> m(new model());
    m->params_ = params;
    {
        log_capture capture;
        load_guard guard;
        m->model_.reset(llama_model_load_from_file(params.path.c_str(), mp));
        if (!m->model_) {
            if (state.cancelled) {
                throw model_load_error("model load cancelled by the progress callback: " + params.path);
            }
            throw model_load_error(capture.explain("failed to load model from " + params.path));
        }
    }
    m->vocab_ = llama_model_get_vocab(m->model_.get());

    for (const auto & spec : params.lora) {
        if (params.vocab_only) {
            throw model_load_error("LoRA adapters need the weights; cannot apply them with vocab_only=True");
        }
        if (!std::filesystem::exists(spec.path)) {
            throw model_load_error("LoRA adapter file not found: " + spec.path);
        }
        log_capture capture;
        llama_adapter_lora_ptr adapter(llama_adapter_lora_init(m->model_.get(), spec.path.c_str()));
        if (!adapter) {
            throw model_load_error(capture.explain("failed to load LoRA adapter " + spec.path));
        }
        m->lora_ptrs_.push_back(adapter.get());
        m->lora_scales_.push_back(spec.scale);
        m->lora_.push_back(std::move(adapter));
    }
    return m;
}

model::~model() {
    lora_ptrs_.clear();
    lora_.clear(); // adapters before the model they belong to
    model_.reset();
}

int32_t model::n_vocab() const { return llama_vocab_n_tokens(vocab_); }
llama_token model::bos() const { return llama_vocab_bos(vocab_); }
llama_token model::eos() const { return llama_vocab_eos(vocab_); }
llama_token model::eot() const { return llama_vocab_eot(vocab_); }
llama_token model::nl() const { return llama_vocab_nl(vocab_); }
bool model::add_bos() const { return llama_vocab_get_add_bos(vocab_); }
bool model::add_eos() const { return llama_vocab_get_add_eos(vocab_); }

bool model::is_eog(llama_token token) const {
    check_token(token);
    return llama_vocab_is_eog(vocab_, token);
}

const std::vector<llama_token> & model::eog_tokens() const {
    std::call_once(eog_once_, [this] {
        for (llama_token t = 0; t < n_vocab(); ++t) {
            if (llama_vocab_is_eog(vocab_, t)) {
                eog_tokens_.push_back(t);
            }
        }
    });
    return eog_tokens_;
}

bool model::is_control(llama_token token) const {
    check_token(token);
    return llama_vocab_is_control(vocab_, token);
}

void model::check_token(llama_token token) const {
    const int32_t n = n_vocab();
    if (token < 0 || token >= n) {
        throw invalid_argument_error("token id " + std::to_string(token) + " is out of range [0, " +
                                     std::to_string(n) + ")");
    }
}

std::vector<llama_token> model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    if (text.size() > (size_t) INT32_MAX) {
        throw invalid_argument_error("text too long to tokenize");
    }
    std::vector<llama_token> tokens(text.size() + 2 * (add_special ? 1 : 0) + 1);
    int32_t n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(),
                               add_special, parse_special);
    if (n == INT32_MIN) {
        throw invalid_argument_error("tokenization overflowed int32");
    }
    if (n < 0) {
        tokens.resize((size_t) -n);
        n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(),
                           add_special, parse_special);
        if (n < 0) {
            throw llama_error("tokenization failed");
        }
    }
    tokens.resize((size_t) n);
    return tokens;
}

std::string model::detokenize(const std::vector<llama_token> & tokens, bool remove_special, bool unparse_special) const {
    for (llama_token t : tokens) {
        check_token(t);
    }
    if (tokens.empty()) {
        return {};
    }
    std::string out(tokens.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab_, tokens.data(), (int32_t) tokens.size(), out.data(), (int32_t) out.size(),
                                 remove_special, unparse_special);
    if (n < 0) {
        out.resize((size_t) -n);
        n = llama_detokenize(vocab_, tokens.data(), (int32_t) tokens.size(), out.data(), (int32_t) out.size(),
                             remove_special, unparse_special);
        if (n < 0) {
            throw llama_error("detokenization failed");
        }
    }
    out.resize((size_t) n);
    return out;
}

std::string model::token_to_piece(llama_token token, bool special) const {
    check_token(token);
    char buf[128];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, special);
    if (n >= 0) {
        return std::string(buf, (size_t) n);
    }
    std::string out((size_t) -n, '\0');
    n = llama_token_to_piece(vocab_, token, out.data(), (int32_t) out.size(), 0, special);
    if (n < 0) {
        throw llama_error("token_to_piece failed for token " + std::to_string(token));
    }
    out.resize((size_t) n);
    return out;
}

std::string model::description() const {
    return read_string([&](char * b, size_t n) { return llama_model_desc(model_.get(), b, n); });
}

std::string model::architecture() const {
    return read_string([&](char * b, size_t n) {
        return llama_model_meta_val_str(model_.get(), "general.architecture", b, n);
    });
}

int32_t model::n_ctx_train() const { return llama_model_n_ctx_train(model_.get()); }
int32_t model::n_embd() const { return llama_model_n_embd(model_.get()); }
int32_t model::n_layer() const { return llama_model_n_layer(model_.get()); }
uint64_t model::size() const { return llama_model_size(model_.get()); }
uint64_t model::n_params() const { return llama_model_n_params(model_.get()); }
bool model::has_encoder() const { return llama_model_has_encoder(model_.get()); }
bool model::has_decoder() const { return llama_model_has_decoder(model_.get()); }
bool model::is_recurrent() const { return llama_model_is_recurrent(model_.get()) || llama_model_is_hybrid(model_.get()); }

std::map<std::string, std::string> model::metadata() const {
    std::map<std::string, std::string> out;
    const int32_t n = llama_model_meta_count(model_.get());
    for (int32_t i = 0; i < n; ++i) {
        std::string key = read_string([&](char * b, size_t sz) {
            return llama_model_meta_key_by_index(model_.get(), i, b, sz);
        });
        std::string val = read_string([&](char * b, size_t sz) {
            return llama_model_meta_val_str_by_index(model_.get(), i, b, sz);
        });
        out.emplace(std::move(key), std::move(val));
    }
    return out;
}

std::string model::chat_template(const std::string & name) const {
    const char * tmpl = llama_model_chat_template(model_.get(), name.empty() ? nullptr : name.c_str());
    return tmpl ? std::string(tmpl) : std::string();
}

std::string system_info() {
    backend_init();
    return llama_print_system_info();
}

std::vector<std::string> backend_names() {
    backend_init();
    std::vector<std::string> out;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        out.emplace_back(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    return out;
}

bool supports_gpu_offload() { backend_init(); return llama_supports_gpu_offload(); }
bool supports_mmap() { return llama_supports_mmap(); }
bool supports_mlock() { return llama_supports_mlock(); }

} // namespace lci
