#include "compute.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

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

compute_thread & instance() {
    // never destroyed: engines that outlive static destruction at exit can still hand work over
    static compute_thread * t = new compute_thread();
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
