#include "text.h"

#include <algorithm>

namespace lci {

namespace {

// Expected length of the UTF-8 sequence starting with byte c; 0 for a continuation byte or an
// invalid lead byte.
size_t utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return c >= 0xC2 ? 2 : 0;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return c <= 0xF4 ? 4 : 0;
    return 0;
}

} // namespace

size_t utf8_complete_end(const std::string & s, size_t begin, size_t end) {
    // look back at most 3 bytes for the lead byte of the last sequence
    for (size_t back = 1; back <= 4 && back <= end - begin; ++back) {
        const auto c = (unsigned char) s[end - back];
        if ((c & 0xC0) == 0x80) {
            continue; // continuation byte: keep looking for its lead
        }
        const size_t need = utf8_len(c);
        if (need > back) {
            return end - back; // the last sequence is incomplete: hold it back
        }
        return end;
    }
    return end;
}

std::string utf8_sanitize(const std::string & s) {
    std::string out;
    out.reserve(s.size());
    static const char replacement[] = "\xEF\xBF\xBD";
    for (size_t i = 0; i < s.size();) {
        const auto c = (unsigned char) s[i];
        const size_t n = utf8_len(c);
        bool ok = n > 0 && i + n <= s.size();
        for (size_t k = 1; ok && k < n; ++k) {
            ok = ((unsigned char) s[i + k] & 0xC0) == 0x80;
        }
        if (ok && n == 3) { // overlong and surrogate forms
            const auto c1 = (unsigned char) s[i + 1];
            ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
        } else if (ok && n == 4) {
            const auto c1 = (unsigned char) s[i + 1];
            ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
        }
        if (ok) {
            out.append(s, i, n);
            i += n;
        } else {
            out += replacement;
            i += 1;
        }
    }
    return out;
}

text_stream::text_stream(std::vector<std::string> stop) {
    for (auto & s : stop) {
        if (!s.empty()) {
            max_stop_ = std::max(max_stop_, s.size());
            stop_.push_back(std::move(s));
        }
    }
}

std::string text_stream::take(size_t end) {
    std::string out = text_.substr(sent_, end - sent_);
    sent_ = end;
    return out;
}

std::string text_stream::push(const std::string & piece) {
    if (stopped_) {
        return {};
    }
    text_ += piece;
    if (!stop_.empty()) {
        // A stop string cannot start before sent_: a possible beginning of one is never sent.
        size_t best = std::string::npos;
        for (const auto & s : stop_) {
            const size_t pos = text_.find(s, sent_);
            if (pos < best) {
                best = pos;
                stop_word_ = s;
            }
        }
        if (best != std::string::npos) {
            stopped_ = true;
            text_.resize(best);
            return take(best);
        }
    }
    // hold back the longest tail that is a prefix of some stop string
    size_t hold = 0;
    const size_t avail = text_.size() - sent_;
    for (const auto & s : stop_) {
        for (size_t len = std::min(avail, s.size() - 1); len > hold; --len) {
            if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
                hold = len;
                break;
            }
        }
    }
    const size_t end = utf8_complete_end(text_, sent_, text_.size() - hold);
    return take(end);
}

std::string text_stream::flush() {
    return take(text_.size());
}

} // namespace lci
