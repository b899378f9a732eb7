#include "vision.h"

#include "errors.h"
#include "logging.h"

#include "common.h" // common/common.h: common_cpu_get_num_math
#include "mtmd-helper.h"
#include "mtmd.h"
#include "stb/stb_image.h" // compiled into mtmd's helper; we use its header-checking entry points

#include <chrono>
#include <filesystem>
#include <mutex>

namespace lci {

namespace {

void on_mtmd_log(enum ggml_log_level level, const char * text, void * /*user_data*/) {
    log_forward((int) level, text);
}

void route_mtmd_logs() {
    static std::once_flag once;
    std::call_once(once, [] { mtmd_helper_log_set(on_mtmd_log, nullptr); });
}

struct chunks_deleter {
    void operator()(mtmd_input_chunks * c) const { mtmd_input_chunks_free(c); }
};
struct bitmap_deleter {
    void operator()(mtmd_bitmap * b) const { mtmd_bitmap_free(b); }
};
struct chunk_deleter {
    void operator()(const mtmd_input_chunk * c) const { mtmd_input_chunk_free(const_cast<mtmd_input_chunk *>(c)); }
};
struct stbi_deleter {
    void operator()(unsigned char * p) const { stbi_image_free(p); }
};

// FNV-1a, 64 bits.
uint64_t fnv1a(const void * data, size_t n, uint64_t h = 1469598103934665603ULL) {
    const auto * p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < n; ++i) {
        h = (h ^ p[i]) * 1099511628211ULL;
    }
    return h;
}

uint64_t mix64(uint64_t x) { // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

std::string ordinal(size_t i) {
    return "image " + std::to_string(i + 1);
}

// Decodes one image's bytes into an RGB bitmap whose id is a hash of its size and pixels.
std::unique_ptr<mtmd_bitmap, bitmap_deleter> decode_image(const std::string & bytes, size_t index, int64_t max_pixels) {
    if (bytes.empty()) {
        throw invalid_argument_error(ordinal(index) + " is empty (0 bytes)");
    }
    if (bytes.size() > (size_t) std::numeric_limits<int>::max()) {
        throw invalid_argument_error(ordinal(index) + " is too large (" + std::to_string(bytes.size()) + " bytes)");
    }
    const auto * buf = reinterpret_cast<const stbi_uc *>(bytes.data());
    const int len = (int) bytes.size();
    int nx = 0, ny = 0, nc = 0;
    // the header first: a small file can claim a huge image, refused before it is allocated
    if (stbi_info_from_memory(buf, len, &nx, &ny, &nc) == 0) {
        const char * why = stbi_failure_reason();
        throw invalid_argument_error(ordinal(index) + " could not be read as an image (" +
                                     std::string(why != nullptr ? why : "unknown format") +
                                     "); supported formats: JPEG, PNG, BMP, GIF, TGA, PSD, HDR, PIC, PNM");
    }
    if (nx <= 0 || ny <= 0 || (int64_t) nx * (int64_t) ny > max_pixels) {
        throw invalid_argument_error(ordinal(index) + " is " + std::to_string(nx) + "x" + std::to_string(ny) +
                                     " pixels, more than the limit of " + std::to_string(max_pixels) +
                                     " (max_image_pixels)");
    }
    // stb_image decodes a cut-off JPEG or PNG without complaint (grey where the data ended):
    // their end markers must be there
    const bool jpeg = bytes.size() >= 2 && (unsigned char) bytes[0] == 0xFF && (unsigned char) bytes[1] == 0xD8;
    const bool png = bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
    if ((jpeg && bytes.rfind("\xFF\xD9") == std::string::npos) || (png && bytes.rfind("IEND") == std::string::npos)) {
        throw invalid_argument_error(ordinal(index) + " is truncated (the " + std::string(jpeg ? "JPEG" : "PNG") +
                                     " data has no end marker)");
    }
    std::unique_ptr<unsigned char, stbi_deleter> rgb(stbi_load_from_memory(buf, len, &nx, &ny, &nc, 3));
    if (!rgb) {
        const char * why = stbi_failure_reason();
        throw invalid_argument_error(ordinal(index) + " could not be decoded (" +
                                     std::string(why != nullptr ? why : "corrupt or truncated data") + ")");
    }
    const size_t n_bytes = (size_t) nx * (size_t) ny * 3;
    std::unique_ptr<mtmd_bitmap, bitmap_deleter> bmp(mtmd_bitmap_init((uint32_t) nx, (uint32_t) ny, rgb.get()));
    if (!bmp) {
        throw invalid_argument_error(ordinal(index) + " could not be converted to a bitmap");
    }
    const uint32_t dims[2] = {(uint32_t) nx, (uint32_t) ny};
    const uint64_t h = fnv1a(rgb.get(), n_bytes, fnv1a(dims, sizeof(dims)));
    char id[17];
    snprintf(id, sizeof(id), "%016llx", (unsigned long long) h);
    mtmd_bitmap_set_id(bmp.get(), id);
    return bmp;
}

} // namespace

std::shared_ptr<projector> projector::load(std::shared_ptr<model> m, const projector_params & params) {
    backend_init();
    route_mtmd_logs();
    if (!std::filesystem::exists(params.path)) {
        throw model_load_error("projector file not found: " + params.path);
    }
    if (params.max_pixels <= 0) {
        throw invalid_argument_error("max_image_pixels must be positive");
    }
    mtmd_context_params cp = mtmd_context_params_default();
    cp.use_gpu = params.use_gpu;
    cp.print_timings = false;
    cp.n_threads = params.n_threads > 0 ? params.n_threads : common_cpu_get_num_math(); // as the engine's
    cp.warmup = true;
    std::shared_ptr<projector> p(new projector());
    p->params_ = params;
    p->model_ = std::move(m);
    {
        log_capture capture;
        load_guard guard;
        p->ctx_ = mtmd_init_from_file(params.path.c_str(), p->model_->get(), cp);
        if (p->ctx_ == nullptr) {
            throw model_load_error(capture.explain("failed to load the projector " + params.path));
        }
    }
    if (!mtmd_support_vision(p->ctx_)) {
        throw model_load_error("the projector " + params.path + " has no vision encoder (audio-only projectors are not supported)");
    }
    if (mtmd_decode_use_mrope(p->ctx_)) {
        // M-RoPE places an image on a 2-D grid of positions, so positions stop matching token
        // counts; the scheduler's slots assume one position per token
        throw model_load_error("the projector " + params.path +
                               " uses M-RoPE positions (Qwen2-VL family), which the engine does not place yet");
    }
    p->check_vocabulary();
    return p;
}

void projector::check_vocabulary() const {
    // mtmd wraps images in the architecture's special tokens (SmolVLM: <fake_token_around_image>,
    // <global-img>, ...) and puts -1 where the model's vocabulary lacks one: a projector made for
    // another model. A placeholder image (no pixels) shows the wrapping without encoding.
    std::unique_ptr<mtmd_bitmap, bitmap_deleter> probe(mtmd_bitmap_init(64, 64, nullptr));
    const mtmd_input_text text{"a", 1, false, true};
    const mtmd_input_part parts[2] = {{&text, nullptr}, {nullptr, probe.get()}};
    const mtmd_input_part * ptrs[3] = {&parts[0], &parts[1], &parts[0]};
    std::unique_ptr<mtmd_input_chunks, chunks_deleter> chunks(mtmd_input_chunks_init());
    if (mtmd_tokenize_from_parts(ctx_, chunks.get(), ptrs, 3, false) != 0) {
        throw model_load_error("the projector " + params_.path + " could not place a test image");
    }
    check_text_chunks(chunks.get());
}

void projector::check_text_chunks(const mtmd_input_chunks * chunks) const {
    const int32_t n_vocab = model_->n_vocab();
    for (size_t c = 0; c < mtmd_input_chunks_size(chunks); ++c) {
        const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, c);
        if (mtmd_input_chunk_get_type(chunk) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
            continue;
        }
        size_t n = 0;
        const llama_token * ids = mtmd_input_chunk_get_tokens_text(chunk, &n);
        for (size_t i = 0; i < n; ++i) {
            if (ids[i] < 0 || ids[i] >= n_vocab) {
                throw model_load_error("the projector " + params_.path +
                                       " wraps images in special tokens that the model's vocabulary lacks "
                                       "(for SmolVLM's idefics3: <fake_token_around_image>, <global-img>): it "
                                       "was made for another model");
            }
        }
    }
}

projector::~projector() {
    if (ctx_ != nullptr) {
        mtmd_free(ctx_);
    }
}

bool projector::supports_vision() const { return mtmd_support_vision(ctx_); }

void projector::tokenize(const std::string & prompt, const std::string & marker, const std::vector<std::string> & images,
                         std::vector<llama_token> & tokens, std::vector<media_span> & spans) const {
    // the text between markers, in order
    std::vector<std::string> texts;
    size_t from = 0;
    for (size_t at; (at = prompt.find(marker, from)) != std::string::npos; from = at + marker.size()) {
        texts.push_back(prompt.substr(from, at - from));
    }
    texts.push_back(prompt.substr(from));
    if (texts.size() - 1 != images.size()) {
        throw invalid_argument_error("the rendered prompt holds " + std::to_string(texts.size() - 1) +
                                     " image places but the request has " + std::to_string(images.size()) +
                                     " images (the chat template dropped or repeated message content)");
    }
    std::vector<std::unique_ptr<mtmd_bitmap, bitmap_deleter>> bitmaps;
    for (size_t i = 0; i < images.size(); ++i) {
        bitmaps.push_back(decode_image(images[i], i, params_.max_pixels));
    }

    std::vector<mtmd_input_text> text_parts(texts.size());
    std::vector<mtmd_input_part> parts;
    for (size_t i = 0; i < texts.size(); ++i) {
        text_parts[i] = mtmd_input_text{texts[i].c_str(), texts[i].size(), false, true};
        if (!texts[i].empty()) {
            parts.push_back(mtmd_input_part{&text_parts[i], nullptr});
        }
        if (i < bitmaps.size()) {
            parts.push_back(mtmd_input_part{nullptr, bitmaps[i].get()});
        }
    }
    std::vector<const mtmd_input_part *> part_ptrs;
    for (const auto & part : parts) {
        part_ptrs.push_back(&part);
    }
    std::unique_ptr<mtmd_input_chunks, chunks_deleter> chunks(mtmd_input_chunks_init());
    int32_t rc = 0;
    {
        log_capture capture;
        try {
            rc = mtmd_tokenize_from_parts(ctx_, chunks.get(), part_ptrs.data(), part_ptrs.size(), true);
        } catch (const std::exception & e) {
            throw invalid_argument_error(capture.explain(std::string("the images could not be prepared: ") + e.what()));
        }
        if (rc != 0) {
            throw invalid_argument_error(capture.explain("the images could not be prepared for the projector (mtmd "
                                                         "status " + std::to_string(rc) + ")"));
        }
    }

    check_text_chunks(chunks.get());
    const size_t base = tokens.size();
    size_t image_chunk = 0;
    std::string last_id;
    size_t same_id = 0;
    for (size_t c = 0; c < mtmd_input_chunks_size(chunks.get()); ++c) {
        const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks.get(), c);
        const auto type = mtmd_input_chunk_get_type(chunk);
        if (type == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n = 0;
            const llama_token * ids = mtmd_input_chunk_get_tokens_text(chunk, &n);
            tokens.insert(tokens.end(), ids, ids + n);
            continue;
        }
        if (type != MTMD_INPUT_CHUNK_TYPE_IMAGE) {
            throw invalid_argument_error("an input is not an image (audio is not supported)");
        }
        const size_t n = mtmd_input_chunk_get_n_tokens(chunk);
        if ((size_t) mtmd_input_chunk_get_n_pos(chunk) != n) {
            throw invalid_argument_error("an image chunk takes a different number of positions than tokens");
        }
        // an image may come in several chunks (tiles) sharing its id: each gets its own ids
        const char * cid = mtmd_input_chunk_get_id(chunk);
        const std::string id = cid != nullptr ? cid : std::to_string(image_chunk);
        same_id = id == last_id ? same_id + 1 : 0;
        last_id = id;
        const uint64_t h = fnv1a(&same_id, sizeof(same_id), fnv1a(id.data(), id.size()));
        media_span span;
        span.start = tokens.size();
        span.n_tokens = n;
        span.chunk = std::shared_ptr<const mtmd_input_chunk>(mtmd_input_chunk_copy(chunk), chunk_deleter());
        for (size_t k = 0; k < n; ++k) {
            tokens.push_back(-2 - (llama_token) (mix64(h + k) & 0x3fffffffULL));
        }
        spans.push_back(std::move(span));
        image_chunk++;
    }
    // a template that writes the BOS itself, as in chat_templates::apply
    const llama_token bos = model_->bos();
    if (tokens.size() >= base + 2 && tokens[base] == bos && tokens[base + 1] == bos && bos >= 0) {
        tokens.erase(tokens.begin() + (ptrdiff_t) base);
        for (auto & s : spans) {
            s.start--;
        }
    }
}

int32_t projector::decode(llama_context * ctx, const media_span & span, llama_pos pos, llama_seq_id seq, int32_t n_batch,
                          double & encode_ms) {
    auto * chunk = span.chunk.get();
    const auto t0 = std::chrono::steady_clock::now();
    {
        log_capture capture;
        if (mtmd_encode_chunk(ctx_, chunk) != 0) {
            throw decode_error(capture.explain("the vision encoder failed"));
        }
    }
    encode_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    float * embd = mtmd_get_output_embd(ctx_);
    llama_pos new_pos = 0;
    return mtmd_helper_decode_image_chunk(ctx_, ctx, chunk, embd, pos, seq, n_batch, &new_pos, nullptr, nullptr);
}

} // namespace lci
