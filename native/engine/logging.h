// llama.cpp / ggml / common logging, routed to one sink.
//
// llama.cpp logs in fragments (progress dots, GGML_LOG_LEVEL_CONT); lines are assembled per
// thread and handed to the sink whole. Independently of the sink, a thread can capture the
// warnings and errors it causes (log_capture), so that an exception can carry llama.cpp's own
// explanation of why a load or a grammar failed.
#pragma once

#include <functional>
#include <string>

namespace lci {

void log_capture_append(int level, const std::string & line);

// level follows ggml_log_level: 1 debug, 2 info, 3 warn, 4 error.
using log_sink = std::function<void(int level, const std::string & line)>;

// Installs the llama.cpp/ggml log callback (once) and sets the sink. Lines below min_level are
// dropped without calling the sink; min_level 0 disables the sink entirely.
void log_install(log_sink sink);
// Hands a fragment logged by another llama.cpp library (mtmd has its own log setter) to the same
// line assembly, sink and captures as llama.cpp's own; level is a ggml_log_level.
void log_forward(int level, const char * text);
// Logs one line of ours through the same sink (and captures) as llama.cpp's.
void log_message(int level, const std::string & line);
void log_set_min_level(int min_level);
int  log_min_level();

// Collects warn/error lines logged on this thread while alive.
class log_capture {
public:
    log_capture();
    ~log_capture();
    log_capture(const log_capture &) = delete;
    log_capture & operator=(const log_capture &) = delete;

    // The captured lines, newline-separated, trimmed; empty if none.
    std::string text() const;
    // message + ": " + the most relevant captured lines, or message alone.
    std::string explain(const std::string & message) const;

private:
    std::string lines_;
    log_capture * prev_;
    friend void log_capture_append(int level, const std::string & line);
};

} // namespace lci
