#include "kernels/threads.h"

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lmlab {

namespace {

// The team: workers 1 .. n-1 (the caller is thread 0). A job is published under the mutex with a
// new generation number; each worker runs its share, and the last one to finish wakes the caller.
class Team {
public:
    explicit Team(int n) : n_(n) {
        for (int w = 1; w < n; ++w) workers_.emplace_back([this, w] { work(w); });
    }
    ~Team() {
        {
            std::lock_guard<std::mutex> lock(m_);
            stop_ = true;
        }
        start_.notify_all();
        for (std::thread& t : workers_) t.join();
    }
    int size() const { return n_; }

    void run(std::size_t n, detail::ShareFn fn, void* ctx) {
        {
            std::lock_guard<std::mutex> lock(m_);
            fn_ = fn, ctx_ = ctx, count_ = n;
            pending_ = n_ - 1;
            ++generation_;
        }
        start_.notify_all();
        share(0, n, fn, ctx);  // the caller's own share while the workers run theirs
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [this] { return pending_ == 0; });
    }

private:
    // thread t's contiguous share of [0, n): fixed by n and the team's size alone
    void share(int t, std::size_t n, detail::ShareFn fn, void* ctx) const {
        const std::size_t T = static_cast<std::size_t>(n_), begin = n * static_cast<std::size_t>(t) / T,
                          end = n * (static_cast<std::size_t>(t) + 1) / T;
        if (begin < end) fn(ctx, begin, end);
    }

    void work(int w) {
        std::uint64_t seen = 0;
        for (;;) {
            detail::ShareFn fn;
            void* ctx;
            std::size_t n;
            {
                std::unique_lock<std::mutex> lock(m_);
                start_.wait(lock, [&] { return stop_ || generation_ != seen; });  // asleep: no spinning
                if (stop_) return;
                seen = generation_;
                fn = fn_, ctx = ctx_, n = count_;
            }
            share(w, n, fn, ctx);
            {
                std::lock_guard<std::mutex> lock(m_);
                if (--pending_ == 0) done_.notify_one();
            }
        }
    }

    const int n_;
    std::vector<std::thread> workers_;
    std::mutex m_;
    std::condition_variable start_, done_;
    bool stop_ = false;
    std::uint64_t generation_ = 0;
    int pending_ = 0;
    detail::ShareFn fn_ = nullptr;
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
