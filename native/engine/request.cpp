// request_state: what a caller and the worker share about one completion.
#include "engine.h"

#include <chrono>

#ifndef _WIN32
#include <unistd.h>
#endif

namespace lci {

void request_state::set_notify_fd(int fd) {
    std::lock_guard<std::mutex> lock(mutex_);
    notify_fd_ = fd;
    if (fd >= 0 && (done_ || !events_.empty())) {
        notify_locked();
    }
}

void request_state::notify_locked() const {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
#ifndef _WIN32
    if (notify_fd_ >= 0) {
        const char byte = 1;
        // a full pipe (EAGAIN) already wakes the reader; nothing else can go wrong that matters
        [[maybe_unused]] ssize_t n = ::write(notify_fd_, &byte, 1);
    }
#endif
}

bool request_state::wait(double timeout_s) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto available = [&] { return done_ || !events_.empty(); };
    if (timeout_s < 0) {
        cv_.wait(lock, available);
        return true;
    }
    if (timeout_s == 0) {
        return available(); // no timed wait: it would sleep in the kernel even for 0
    }
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), available);
}

bool request_state::ready() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return done_ || !events_.empty();
}

std::optional<stream_event> request_state::next_event() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (events_.empty()) {
        return std::nullopt;
    }
    stream_event ev = std::move(events_.front());
    events_.pop_front();
    return ev;
}

bool request_state::done() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return done_ && events_.empty();
}

completion_result request_state::result() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return done_; });
    if (error_) {
        std::rethrow_exception(error_);
    }
    return result_;
}

void request_state::push_event(stream_event ev) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        events_.push_back(std::move(ev));
        notify_locked();
    }
    cv_.notify_all();
}

void request_state::finish(completion_result res) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (done_) {
            return;
        }
        result_ = std::move(res);
        done_ = true;
        notify_locked();
    }
    sampler_.reset();
    cv_.notify_all();
}

void request_state::fail(std::exception_ptr err) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (done_) {
            return;
        }
        error_ = std::move(err);
        done_ = true;
        notify_locked();
    }
    sampler_.reset();
    cv_.notify_all();
}

} // namespace lci
