#include "compute.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <new>
#include <thread>

#ifndef _WIN32
#include <pthread.h>
#endif

namespace lci {

namespace {

struct job {
    const std::function<void()> * fn;
    std::exception_ptr error;
    bool done = false;
};

class compute_thread {
public:
    compute_thread() : thread_([this] { run(); }) {
        id_ = thread_.get_id();
        thread_.detach();
    }

    void submit_and_wait(const std::function<void()> & fn) {
        if (std::this_thread::get_id() == id_) { // a computation that computes: run inline
            fn();
            return;
        }
        job j{&fn, nullptr, false};
        {
            std::lock_guard<std::mutex> lock(mutex_);
            queue_.push_back(&j);
        }
        work_cv_.notify_one();
        {
            std::unique_lock<std::mutex> lock(mutex_);
            done_cv_.wait(lock, [&] { return j.done; });
        }
        if (j.error) {
            std::rethrow_exception(j.error);
        }
    }

    unsigned long long count() {
        std::lock_guard<std::mutex> lock(mutex_);
        return count_;
    }

private:
    void run() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            work_cv_.wait(lock, [&] { return !queue_.empty(); });
            job * j = queue_.front();
            queue_.pop_front();
            lock.unlock();
            try {
                (*j->fn)();
            } catch (...) {
                j->error = std::current_exception();
            }
            lock.lock();
            j->done = true;
            ++count_;
            done_cv_.notify_all();
        }
    }

    std::mutex mutex_;
    std::condition_variable work_cv_, done_cv_;
    std::deque<job *> queue_;
    std::thread::id id_;
    unsigned long long count_ = 0;
    std::thread thread_;
};

// Never destroyed: engines that outlive static destruction at exit can still hand work over.
std::atomic<compute_thread *> g_instance{nullptr};
std::mutex g_create_mutex;

#ifndef _WIN32
// A forked child has the parent's memory but not its threads: it starts its own compute thread
// when it first computes (the parent's object is left alone, its thread does not exist here).
void forget_after_fork() {
    g_instance.store(nullptr);
    new (&g_create_mutex) std::mutex();
}
#endif

compute_thread & instance() {
    compute_thread * t = g_instance.load(std::memory_order_acquire);
    if (t != nullptr) {
        return *t;
    }
    std::lock_guard<std::mutex> lock(g_create_mutex);
    t = g_instance.load(std::memory_order_acquire);
    if (t == nullptr) {
#ifndef _WIN32
        static const int registered = pthread_atfork(nullptr, nullptr, forget_after_fork);
        (void) registered;
#endif
        t = new compute_thread();
        g_instance.store(t, std::memory_order_release);
    }
    return *t;
}

} // namespace

void compute_run(const std::function<void()> & fn) {
    instance().submit_and_wait(fn);
}

unsigned long long compute_count() {
    return instance().count();
}

} // namespace lci
