#include "logging.h"

#include "ggml.h"
#include "llama.h"

#include <atomic>
#include <memory>
#include <mutex>

// common/log.h of llama.cpp
#include "log.h"

namespace lci {

namespace {

std::mutex               g_sink_mutex;
std::shared_ptr<log_sink> g_sink;
std::atomic<int>          g_min_level{0};

thread_local log_capture * t_capture = nullptr;
thread_local std::string   t_partial;
thread_local int           t_partial_level = GGML_LOG_LEVEL_INFO;

void deliver(int level, const std::string & line) {
    log_capture_append(level, line);
    const int min_level = g_min_level.load(std::memory_order_relaxed);
    if (min_level <= 0 || level < min_level) {
        return;
    }
    std::shared_ptr<log_sink> sink;
    {
        std::lock_guard<std::mutex> lock(g_sink_mutex);
        sink = g_sink;
    }
    if (sink && *sink) {
        (*sink)(level, line);
    }
}

void on_log(enum ggml_log_level level, const char * text, void * /*user_data*/) {
    if (text == nullptr) {
        return;
    }
    if (level != GGML_LOG_LEVEL_CONT) {
        t_partial_level = level == GGML_LOG_LEVEL_NONE ? GGML_LOG_LEVEL_INFO : (int) level;
    }
    t_partial += text;
    size_t start = 0;
    for (size_t nl; (nl = t_partial.find('\n', start)) != std::string::npos; start = nl + 1) {
        if (nl > start) {
            deliver(t_partial_level, t_partial.substr(start, nl - start));
        }
    }
    t_partial.erase(0, start);
}

} // namespace

void log_forward(int level, const char * text) {
    on_log((enum ggml_log_level) level, text, nullptr);
}

void log_message(int level, const std::string & line) {
    deliver(level, line);
}

void log_capture_append(int level, const std::string & line) {
    if (t_capture != nullptr && level >= GGML_LOG_LEVEL_WARN) {
        if (!t_capture->lines_.empty()) {
            t_capture->lines_ += '\n';
        }
        t_capture->lines_ += line;
    }
}

void log_install(log_sink sink) {
    {
        std::lock_guard<std::mutex> lock(g_sink_mutex);
        g_sink = std::make_shared<log_sink>(std::move(sink));
    }
    llama_log_set(on_log, nullptr);
}

void log_set_min_level(int min_level) {
    g_min_level.store(min_level, std::memory_order_relaxed);
    // common/ logs through its own printer (stderr), not llama_log_set: silence it unless asked.
    common_log_set_verbosity_thold(min_level <= 0 ? -1 : LOG_LEVEL_INFO);
}

int log_min_level() {
    return g_min_level.load(std::memory_order_relaxed);
}

log_capture::log_capture() : prev_(t_capture) {
    t_capture = this;
}

log_capture::~log_capture() {
    t_capture = prev_;
}

std::string log_capture::text() const {
    return lines_;
}

std::string log_capture::explain(const std::string & message) const {
    if (lines_.empty()) {
        return message;
    }
    // the last few lines carry the cause; earlier ones are context
    size_t pos = lines_.size();
    for (int n = 0; n < 4 && pos != std::string::npos && pos > 0; ++n) {
        pos = lines_.rfind('\n', pos - 1);
    }
    const std::string tail = pos == std::string::npos ? lines_ : lines_.substr(pos + 1);
    return message + ": " + tail;
}

} // namespace lci
