// Images in chat: a vision projector (llama.cpp's mtmd library) beside the language model.
//
// A chat request's images arrive as encoded bytes (JPEG, PNG, BMP, GIF, ...) with the rendered
// prompt, in which each image stands as a marker string. tokenize() decodes each image, checks it,
// and lets mtmd split the prompt into text tokens and image chunks (with the architecture's own
// wrapping text, tiles and token counts). The image's positions in the prompt hold placeholder
// ids (negative, never a vocabulary id) computed from the image's pixels, so a slot's cache
// recognises the same image again by content, whatever URL or file it came from, and the
// scheduler's prefix matching works unchanged. When the scheduler reaches an image span, decode()
// runs the vision encoder and decodes the embeddings into the slot's sequence.
#pragma once

#include "model.h"

#include "llama.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct mtmd_context;
struct mtmd_input_chunk;
struct mtmd_input_chunks;

namespace lci {

struct projector_params {
    std::string path;
    int32_t n_threads = -1;          // -1: physical cores
    bool use_gpu = true;             // offload the vision encoder where a GPU backend exists
    int64_t max_pixels = 50000000;   // an image with more pixels is refused before it is decoded
};

// One image of a prompt: the positions [start, start + n_tokens) it takes, and what fills them.
struct media_span {
    size_t start = 0;
    size_t n_tokens = 0;
    std::shared_ptr<const mtmd_input_chunk> chunk;
};

// Image placeholders in a prompt are negative ids below LLAMA_TOKEN_NULL.
inline bool is_media_token(llama_token t) { return t < -1; }

class projector {
public:
    // Throws model_load_error naming the file and llama.cpp's reason (missing, not a projector,
    // an embedding width other than the model's, a layout the engine cannot place).
    static std::shared_ptr<projector> load(std::shared_ptr<model> m, const projector_params & params);
    ~projector();
    projector(const projector &) = delete;
    projector & operator=(const projector &) = delete;

    const projector_params & params() const { return params_; }
    bool supports_vision() const;

    // Tokenizes a rendered prompt in which each image stands as `marker`; images[i] holds the
    // encoded bytes of the i-th marker's image. Appends text tokens and image placeholders to
    // tokens and one span per image chunk to spans. Throws invalid_argument_error naming the
    // image for bytes that are no image, a pixel count over max_pixels, or a count mismatch.
    // Thread-safe; runs on the caller's thread, not the worker's.
    void tokenize(const std::string & prompt, const std::string & marker, const std::vector<std::string> & images,
                  std::vector<llama_token> & tokens, std::vector<media_span> & spans) const;

    // Encodes the span's image and decodes its embeddings into seq at positions from pos on, in
    // decodes of at most n_batch rows. Must run on the compute thread. Returns 0, or non-zero
    // when a decode failed (aborted or no room); throws decode_error when the encoder failed.
    // encode_ms receives the time spent in the vision encoder.
    int32_t decode(llama_context * ctx, const media_span & span, llama_pos pos, llama_seq_id seq, int32_t n_batch,
                   double & encode_ms);

private:
    projector() = default;
    // Throws model_load_error when the projector's image wrapping needs tokens the model lacks.
    void check_vocabulary() const;
    void check_text_chunks(const mtmd_input_chunks * chunks) const;

    projector_params params_;
    std::shared_ptr<model> model_;
    mtmd_context * ctx_ = nullptr;
};

} // namespace lci
