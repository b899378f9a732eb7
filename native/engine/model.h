// A loaded GGUF model: weights, vocabulary, metadata and LoRA adapters.
//
// A model is shared (std::shared_ptr) by every context created from it, so the weights outlive
// the last context no matter in which order Python releases them.
#pragma once

#include "llama-cpp.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace lci {

struct lora_spec {
    std::string path;
    float       scale = 1.0f;
};

struct model_params {
    std::string        path;
    int32_t            n_gpu_layers = 0; // < 0: all layers
    int32_t            main_gpu     = 0;
    std::vector<float> tensor_split;     // empty: llama.cpp decides
    bool               use_mmap     = true;
    bool               use_mlock    = false;
    bool               vocab_only   = false;
    bool               check_tensors = false;
    std::vector<lora_spec> lora;
};

// Called with progress in [0, 1]; return false to cancel the load.
using progress_fn = std::function<bool(float)>;

class model {
public:
    // Throws model_load_error with the cause (missing file, not GGUF, truncated, cancelled, ...).
    static std::shared_ptr<model> load(const model_params & params, const progress_fn & progress);

    const llama_model * get() const { return model_.get(); }
    const llama_vocab * vocab() const { return vocab_; }
    const model_params & params() const { return params_; }

    // adapters loaded from params.lora, in order, with their scales
    const std::vector<llama_adapter_lora *> & lora_adapters() const { return lora_ptrs_; }
    const std::vector<float> & lora_scales() const { return lora_scales_; }

    // --- vocabulary ---
    int32_t n_vocab() const;
    llama_token bos() const;
    llama_token eos() const;
    llama_token eot() const;
    llama_token nl() const;
    bool add_bos() const;
    bool add_eos() const;
    bool is_eog(llama_token token) const;
    // Every end-of-generation token of the vocabulary (computed once).
    const std::vector<llama_token> & eog_tokens() const;
    bool is_control(llama_token token) const;
    // Throws invalid_argument_error for ids outside [0, n_vocab).
    void check_token(llama_token token) const;

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize(const std::vector<llama_token> & tokens, bool remove_special, bool unparse_special) const;
    // The bytes of one token (may be an incomplete UTF-8 sequence).
    std::string token_to_piece(llama_token token, bool special) const;

    // --- metadata ---
    std::string description() const;
    std::string architecture() const;
    int32_t n_ctx_train() const;
    int32_t n_embd() const;
    int32_t n_layer() const;
    uint64_t size() const;
    uint64_t n_params() const;
    bool has_encoder() const;
    bool has_decoder() const;
    bool is_recurrent() const;
    std::map<std::string, std::string> metadata() const;
    // The named chat template (empty name: the default one); "" when the GGUF has none.
    std::string chat_template(const std::string & name = "") const;

    ~model();

private:
    model() = default;
    model_params                      params_;
    llama_model_ptr                   model_;
    const llama_vocab *               vocab_ = nullptr;
    std::vector<llama_adapter_lora_ptr> lora_;
    std::vector<llama_adapter_lora *> lora_ptrs_;
    std::vector<float>                lora_scales_;
    mutable std::once_flag            eog_once_;
    mutable std::vector<llama_token>  eog_tokens_;
};

// While alive, a failed GGML_ASSERT on this thread (a corrupt file breaking a loader's invariants)
// throws model_load_error instead of aborting the process. For file loads only.
class load_guard {
public:
    load_guard();
    ~load_guard();
    load_guard(const load_guard &) = delete;
    load_guard & operator=(const load_guard &) = delete;

private:
    bool prev_;
};

// Initializes the llama.cpp backends once per process.
void backend_init();

// llama_print_system_info() plus the registered backends and devices.
std::string system_info();
std::vector<std::string> backend_names();
bool supports_gpu_offload();
bool supports_mmap();
bool supports_mlock();

} // namespace lci
