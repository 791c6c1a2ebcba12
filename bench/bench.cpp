// lmlab_bench: times every kernel at the tiny LLaMA's shapes (dim 256, 4 heads x 64, ffn 1024,
// vocab 16384, context 512). Timing, not tuning: numbers to compare before and after a change.
//   build/default/lmlab_bench                       (console)
//   cmake --build --preset default --target bench   (also writes reports/bench.json)
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/kernels.h"

namespace {

std::vector<float> random_vector(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

// matvec [out, in]: bytes = the weight matrix (it dominates), items = multiply-adds
void BM_matvec(benchmark::State& state) {
    const auto out = static_cast<std::size_t>(state.range(0)), in = static_cast<std::size_t>(state.range(1));
    const auto W = random_vector(out * in, 1), x = random_vector(in, 2);
    std::vector<float> y(out);
    for (auto _ : state) {
        lmlab::matvec(W, x, y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * out * in));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out * in * sizeof(float)));
}
BENCHMARK(BM_matvec)->ArgNames({"out", "in"})->Args({256, 256})->Args({1024, 256})->Args({256, 1024})->Args({16384, 256});

void BM_softmax(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    const auto x = random_vector(n, 3);
    std::vector<float> y(n);
    for (auto _ : state) {
        lmlab::softmax(x, y);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * 2 * sizeof(float)));
}
BENCHMARK(BM_softmax)->Arg(512);

void BM_rmsnorm(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    const auto x = random_vector(n, 4), w = random_vector(n, 5);
    std::vector<float> y(n);
    for (auto _ : state) {
        lmlab::rmsnorm(x, w, 1e-5f, y);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * 3 * sizeof(float)));
}
BENCHMARK(BM_rmsnorm)->Arg(256);

void BM_rope(benchmark::State& state) {
    auto x = random_vector(256, 6);  // 4 heads x 64
    const auto style = state.range(0) ? lmlab::RopeStyle::RotateHalf : lmlab::RopeStyle::AdjacentPairs;
    for (auto _ : state) {
        lmlab::rope(x, 64, 300, 10000.0f, style);
        benchmark::DoNotOptimize(x.data());
    }
    state.SetLabel(state.range(0) ? "rotate_half" : "adjacent");
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * x.size()));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * x.size() * 2 * sizeof(float)));
}
BENCHMARK(BM_rope)->Arg(0)->Arg(1);

void BM_swiglu(benchmark::State& state) {
    const auto a = random_vector(1024, 7), b = random_vector(1024, 8);
    std::vector<float> y(1024);
    for (auto _ : state) {
        lmlab::swiglu(a, b, y);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 1024));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 1024 * 3 * sizeof(float)));
}
BENCHMARK(BM_swiglu);

// one head over n_pos cached positions: reads n_pos keys and values of head_dim 64
void BM_attention(benchmark::State& state) {
    const auto n_pos = static_cast<std::size_t>(state.range(0));
    const std::size_t head_dim = 64;
    const auto q = random_vector(head_dim, 9), k = random_vector(n_pos * head_dim, 10), v = random_vector(n_pos * head_dim, 11);
    std::vector<float> scores(n_pos), out(head_dim);
    for (auto _ : state) {
        lmlab::attention(q, k, v, n_pos, head_dim, scores, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n_pos));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n_pos * head_dim * 2 * sizeof(float)));
}
BENCHMARK(BM_attention)->Arg(512);

void BM_argmax(benchmark::State& state) {
    const auto x = random_vector(16384, 12);
    for (auto _ : state) benchmark::DoNotOptimize(lmlab::argmax(x));
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * x.size()));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * x.size() * sizeof(float)));
}
BENCHMARK(BM_argmax);

}  // namespace

BENCHMARK_MAIN();
