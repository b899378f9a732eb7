#include "compute.h"

#include "llama.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <new>
#include <thread>

#ifndef _WIN32
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#endif

namespace lci {

namespace {

using clock_type = std::chrono::steady_clock;

// Below this share of its wall time on a core, the compute thread counts as contended. Alone it
// runs at 0.95-1.0 (OpenMP's team spins at barriers); with two spinning processes on two cores
// at about 0.5; with one more runnable thread than cores at about 0.67.
constexpr double kBusyShare = 0.8;
// Below this share one window is enough: that is two processes spinning against each other.
constexpr double kStarvedShare = 0.6;
// A verdict needs this much computation, so that one preemption does not decide it; the threads
// are halved when 2 of the last 3 verdicts were contended, or at once below kStarvedShare. Alone,
// a contended verdict comes now and then (0.7 once in ~40 windows here); two processes competing
// read about 0.5 in most windows, with an unhindered one between them when the other one waits.
constexpr double kWindowSeconds = 0.03;
// A larger thread count is tried again after this long, doubling after each failed try.
constexpr double kProbeFirstSeconds = 0.5;
constexpr double kProbeMaxSeconds   = 4.0;

double thread_cpu_seconds() {
#ifndef _WIN32
    timespec ts{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) {
        return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
    }
#endif
    return -1.0;
}

long major_faults() {
#if defined(RUSAGE_THREAD)
    rusage ru{};
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
        return ru.ru_majflt;
    }
#endif
    return 0;
}

// The thread policy. Every member but the statistics is touched only on the compute thread.
class thread_governor {
public:
    int32_t threads(int32_t configured) const { return std::max<int32_t>(1, configured >> level_); }

    // A computation is about to run with these counts.
    void start_job(const thread_counts & t) {
        job_adaptive_ = t.adaptive && std::max(t.n, t.n_batch) > 1;
        if (job_adaptive_) {
            int32_t most = std::max(t.n, t.n_batch), levels = 0;
            while ((most >>= 1) > 0) {
                ++levels;
            }
            max_level_ = std::max(max_level_, levels);
        }
    }

    // The computation ran: `wall` seconds, `cpu` of them on a core.
    void end_job(double wall, double cpu, bool faulted) {
        const bool counted = job_adaptive_;
        job_adaptive_ = false;
        if (!counted || cpu < 0.0) {
            return;
        }
        if (faulted) { // waited on the disk (the first reads of a mapped model), not on a core
            win_wall_ = win_cpu_ = 0.0;
            return;
        }
        win_wall_ += wall;
        win_cpu_ += cpu;
        if (win_wall_ < kWindowSeconds) {
            return;
        }
        const bool busy = win_cpu_ < kBusyShare * win_wall_;
        const bool starved = win_cpu_ < kStarvedShare * win_wall_;
        win_wall_ = win_cpu_ = 0.0;
        recent_ = ((recent_ << 1) | (busy ? 1u : 0u)) & 7u;
        const auto now = clock_type::now();
        if (probing_) {
            probing_ = false;
            if (!busy) {
                probe_seconds_ = kProbeFirstSeconds;
                restored_.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            probe_seconds_ = std::min(probe_seconds_ * 2.0, kProbeMaxSeconds);
            set_level(level_ + 1, now);
            return;
        }
        const int busy_of_last_3 = (int) (recent_ & 1u) + (int) ((recent_ >> 1) & 1u) + (int) ((recent_ >> 2) & 1u);
        if ((starved || busy_of_last_3 >= 2) && level_ < max_level_) {
            reductions_.fetch_add(1, std::memory_order_relaxed);
            set_level(level_ + 1, now);
        } else if (!busy && level_ > 0 && now >= next_probe_) {
            probes_.fetch_add(1, std::memory_order_relaxed);
            probing_ = true;
            set_level(level_ - 1, now);
        }
    }

    compute_stats stats() const {
        compute_stats s;
        s.level      = level_seen_.load(std::memory_order_relaxed);
        s.reductions = reductions_.load(std::memory_order_relaxed);
        s.probes     = probes_.load(std::memory_order_relaxed);
        s.restored   = restored_.load(std::memory_order_relaxed);
        return s;
    }

private:
    void set_level(int level, clock_type::time_point now) {
        level_ = level;
        recent_ = 0;
        level_seen_.store(level, std::memory_order_relaxed);
        next_probe_ = now + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(probe_seconds_));
    }

    int level_ = 0, max_level_ = 0;
    unsigned recent_ = 0; // the last verdicts, newest in bit 0 (1: contended)
    bool job_adaptive_ = false, probing_ = false;
    double win_wall_ = 0.0, win_cpu_ = 0.0;
    double probe_seconds_ = kProbeFirstSeconds;
    clock_type::time_point next_probe_{};
    std::atomic<int> level_seen_{0};
    std::atomic<unsigned long long> reductions_{0}, probes_{0}, restored_{0};
};

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

    // the policy's state is the compute thread's alone (compute_apply_threads runs inside a
    // computation); its stats() are atomics that any thread may read
    thread_governor & governor() { return governor_; }
    const thread_governor & governor() const { return governor_; }

private:
    void run() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            work_cv_.wait(lock, [&] { return !queue_.empty(); });
            job * j = queue_.front();
            queue_.pop_front();
            lock.unlock();
            const auto wall0   = clock_type::now();
            const double cpu0  = thread_cpu_seconds();
            const long faults0 = major_faults();
            try {
                (*j->fn)();
            } catch (...) {
                j->error = std::current_exception();
            }
            const double cpu1 = thread_cpu_seconds();
            governor_.end_job(std::chrono::duration<double>(clock_type::now() - wall0).count(),
                              cpu0 < 0.0 || cpu1 < 0.0 ? -1.0 : cpu1 - cpu0, major_faults() != faults0);
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
    thread_governor governor_;
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

void compute_apply_threads(llama_context * ctx, const thread_counts & t) {
    thread_governor & g = instance().governor();
    g.start_job(t);
    if (t.adaptive) {
        llama_set_n_threads(ctx, g.threads(t.n), g.threads(t.n_batch));
    } else {
        llama_set_n_threads(ctx, t.n, t.n_batch);
    }
}

compute_stats compute_get_stats() {
    compute_thread & t = instance();
    compute_stats s = t.governor().stats();
    s.count = t.count();
    return s;
}

} // namespace lci
