#include "kernels/threads.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lmlab {

namespace {

// How long a thread waits by polling before it sleeps on a condition variable: a worker for the
// next job, the caller for the workers to finish. Waking a sleeping thread costs ~35 µs per loop on
// this VM (a futex wake, then the idle virtual CPU's wake-up), more than many of decode's matrix
// products take; a thread that polls picks a job up in ~2 µs, and decode's loops come back to back.
// Polling yields the CPU at every check (std::this_thread::yield), and after kPoll the poller
// sleeps: never OpenMP's spinning for a whole time slice (docs/performance.md, Threads).
constexpr auto kPoll = std::chrono::microseconds(100);

// Polls until done() or kPoll has passed; true when done() held
template <class Done>
bool poll(Done&& done) {
    const auto until = std::chrono::steady_clock::now() + kPoll;
    for (;;) {
        if (done()) return true;
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::yield();
    }
}

// The team: workers 1 .. n-1 (the caller is thread 0). A job is published under the mutex with a
// new generation number. Share w (w >= 1) is claimed once, by worker w or by the caller: when the
// caller has finished share 0 it runs every share whose worker has not started it yet, so on a busy
// machine, where a worker may not be scheduled for milliseconds, the caller does the work instead
// of waiting for it. A share gives the same numbers whichever thread runs it. The last share to
// finish wakes the caller; both waits poll first (poll, above), then sleep.
class Team {
public:
    explicit Team(int n) : n_(n), claimed_(new std::atomic<std::uint64_t>[static_cast<std::size_t>(n)]) {
        for (int w = 0; w < n; ++w) claimed_[w].store(0);
        for (int w = 1; w < n; ++w) workers_.emplace_back([this, w] { work(w); });
    }
    ~Team() {
        {
            std::lock_guard<std::mutex> lock(m_);
            stop_.store(true);
        }
        start_.notify_all();
        for (std::thread& t : workers_) t.join();
    }
    int size() const { return n_; }

    void run(std::size_t n, detail::ShareFn fn, void* ctx) {
        std::uint64_t g;
        {
            std::lock_guard<std::mutex> lock(m_);
            fn_ = fn, ctx_ = ctx, count_ = n;
            pending_.store(n_ - 1);
            g = generation_.fetch_add(1) + 1;  // under the mutex: a worker about to sleep cannot miss it
        }
        start_.notify_all();
        share(0, n, fn, ctx);  // the caller's own share while the workers run theirs
        for (int w = 1; w < n_; ++w)  // then the shares no worker has started
            if (claim(w, g)) {
                share(w, n, fn, ctx);
                pending_.fetch_sub(1);
            }
        if (poll([this] { return pending_.load() == 0; })) return;
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [this] { return pending_.load() == 0; });
    }

private:
    // Share w of job g, for the one thread that gets true. claimed_[w] holds the last job whose share
    // w was claimed; a job ends only when all its shares are claimed and done, so a worker still
    // holding an older job's number can never claim (and run) a share of a job that is over.
    bool claim(int w, std::uint64_t g) {
        std::uint64_t last = claimed_[w].load();
        while (last < g)
            if (claimed_[w].compare_exchange_weak(last, g)) return true;
        return false;
    }

    // thread t's contiguous share of [0, n): fixed by n and the team's size alone
    void share(int t, std::size_t n, detail::ShareFn fn, void* ctx) const {
        const std::size_t T = static_cast<std::size_t>(n_), begin = n * static_cast<std::size_t>(t) / T,
                          end = n * (static_cast<std::size_t>(t) + 1) / T;
        if (begin < end) fn(ctx, begin, end);
    }

    void work(int w) {
        std::uint64_t seen = 0;
        for (;;) {
            const auto ready = [&] { return stop_.load() || generation_.load() != seen; };
            detail::ShareFn fn;
            void* ctx;
            std::size_t n;
            {
                std::unique_lock<std::mutex> lock(m_);
                if (!ready()) {
                    lock.unlock();
                    poll(ready);
                    lock.lock();
                    start_.wait(lock, ready);  // asleep after kPoll: no spinning
                }
                if (stop_.load()) return;
                seen = generation_.load();
                fn = fn_, ctx = ctx_, n = count_;
            }
            if (!claim(w, seen)) continue;  // the caller ran it
            share(w, n, fn, ctx);
            if (pending_.fetch_sub(1) == 1) {
                std::lock_guard<std::mutex> lock(m_);  // the caller checks pending_ under it before sleeping
                done_.notify_one();
            }
        }
    }

    const int n_;
    std::vector<std::thread> workers_;
    std::mutex m_;
    std::condition_variable start_, done_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> generation_{0};
    std::atomic<int> pending_{0};                        // shares of the current job not yet done
    std::unique_ptr<std::atomic<std::uint64_t>[]> claimed_;  // per share: the last job that claimed it
    detail::ShareFn fn_ = nullptr;  // written under m_ before generation_ changes, read under m_
    void* ctx_ = nullptr;
    std::size_t count_ = 0;
};

int g_threads = 1;
std::unique_ptr<Team> g_team;  // made on first use with the current count

}  // namespace

void set_kernel_threads(int n) {
    const int want = n < 1 ? 1 : n;
    if (want == g_threads) return;
    g_threads = want;
    g_team.reset();  // (joins the old workers)
}

int kernel_threads() { return g_threads; }

namespace detail {
void run_shares(std::size_t n, ShareFn fn, void* ctx) {
    if (!g_team || g_team->size() != g_threads) g_team = std::make_unique<Team>(g_threads);
    g_team->run(n, fn, ctx);
}
}  // namespace detail

}  // namespace lmlab
