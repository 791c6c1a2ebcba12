// Threads for the fast kernels: a fixed team of workers that poll briefly, then sleep, between
// parallel loops.
//
// Why not OpenMP: libgomp's workers spin at every barrier before they sleep (GOMP_SPINCOUNT, about
// 0.3 ms). When another process holds one of two cores, the spinning worker burns its time slice
// while the thread it waits for cannot run, and every loop costs a scheduler slice: `--threads 2`
// ran stories260K at 17.6 tok/s against one thread's 4,561 while a busy loop held a core. The wait
// policy can only be changed by an environment variable read when the library loads
// (OMP_WAIT_POLICY=passive: 1,722 tok/s in the same test), so the team is ours. Its threads poll
// for at most 100 µs, yielding the CPU at every check, and then sleep on a condition variable
// (threads.cpp, kPoll): a loop costs ~2 µs when loops come back to back, against ~35 µs for waking
// a sleeping thread on this VM. And the caller, once done with its own share, runs the shares no
// worker has started, so a worker the machine does not schedule delays nothing
// (docs/performance.md, Threads).
//
// Determinism: parallel_for hands each thread one contiguous share of the iterations, fixed by the
// thread count alone (OpenMP's schedule(static)), and every kernel computes each output inside one
// iteration: the numbers never depend on the thread count or on timing.
//
// Analogy: a small worker pool in a server; parallel_for is a fork-join request to it.
#pragma once

#include <cstddef>

namespace lmlab {

// Below this many multiply-adds a matrix product stays on one thread (kernels/fast.cpp,
// ggml_quant.cpp). 2^18 is ~25 µs of F32 on one core here. A product that short gains little from
// a second thread, and every parallel loop is a hand-over that can go wrong on a busy machine.
// Measured 2026-12-07 with the team of that time (workers that slept at once, ~35 µs to wake),
// tiny LLaMA decode with 2 threads (its matrices: 2^16 multiply-adds in attention, 2^18 in the
// feed-forward, 2^22 the classifier): at 2^15, F32 ~640 and Q8_0 ~760 tok/s; at 2^18, ~915 and
// ~1,095; one thread ~1,000 and ~1,450. The team now polls first (threads.cpp), and 2 threads beat
// one at 2^18 (docs/performance.md, Threads). The thread tests assert that their products reach
// this number, so they keep running threads.
inline constexpr std::size_t kParallelMin = std::size_t{1} << 18;

// The number of threads the fast kernels use (the caller plus n - 1 workers). Default 1: no workers.
void set_kernel_threads(int n);
int kernel_threads();

namespace detail {
using ShareFn = void (*)(void* ctx, std::size_t begin, std::size_t end);
void run_shares(std::size_t n, ShareFn fn, void* ctx);
}  // namespace detail

// body(begin, end) over [0, n) split into kernel_threads() contiguous shares, run at once (the
// calling thread takes the first); returns when all are done. With one thread, or `parallel` false
// (too little work to be worth waking the team), body(0, n) on the calling thread. Not reentrant:
// a body must not call parallel_for (the kernels never do).
template <class Body>
void parallel_for(std::size_t n, bool parallel, Body&& body) {
    if (!parallel || n < 2 || kernel_threads() < 2) {
        if (n) body(std::size_t{0}, n);
        return;
    }
    detail::run_shares(
        n, [](void* ctx, std::size_t begin, std::size_t end) { (*static_cast<Body*>(ctx))(begin, end); }, &body);
}

}  // namespace lmlab
