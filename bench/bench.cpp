// lmlab_bench: times every kernel at the tiny LLaMA's shapes (dim 256, 4 heads x 64, ffn 1024,
// vocab 16384, context 512). Timing, not tuning: numbers to compare before and after a change.
//   build/default/lmlab_bench                       (console)
//   cmake --build --preset default --target bench   (also writes reports/bench.json)
// plus forward() per token and greedy generation tokens/s of the default tiny LLaMA.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "model/forward.h"
#include "model/session.h"

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

// matmul [m, k] · [k, n]: four tokens through a 256x256 projection at once
void BM_matmul(benchmark::State& state) {
    const std::size_t m = 4, k = 256, n = 256;
    const auto A = random_vector(m * k, 13), B = random_vector(k * n, 14);
    std::vector<float> C(m * n);
    for (auto _ : state) {
        lmlab::matmul(A, B, C, m, k, n);
        benchmark::DoNotOptimize(C.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * m * k * n));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (m * k + k * n + m * n) * sizeof(float)));
}
BENCHMARK(BM_matmul);

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

void BM_silu(benchmark::State& state) {
    const auto x = random_vector(1024, 15);
    std::vector<float> y(1024);
    for (auto _ : state) {
        lmlab::silu(x, y);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 1024));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 1024 * 2 * sizeof(float)));
}
BENCHMARK(BM_silu);

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

// ---- The whole model: the default tiny LLaMA (golden/models/tiny-llama.h5, made by the exporter) ----

const lmlab::Model* tiny_llama(benchmark::State& state) {
    static std::unique_ptr<lmlab::Model> model;
    static std::string error;
    if (!model && error.empty()) {
        try {
            model = std::make_unique<lmlab::Model>(lmlab::load_model(LMLAB_SOURCE_DIR "/golden/models/tiny-llama.h5"));
        } catch (const std::exception& e) {
            error = std::string(e.what()) + " (build the `golden` target first)";
        }
    }
    if (!model) state.SkipWithError(error.c_str());
    return model.get();
}

// one token through the model at position `pos` (attention cost grows with pos)
void BM_forward(benchmark::State& state) {
    const lmlab::Model* m = tiny_llama(state);
    if (!m) return;
    const auto pos = static_cast<std::size_t>(state.range(0));
    lmlab::KVCache cache(m->config.n_layers, m->config.max_seq_len, m->config.kv_dim());
    lmlab::RunState s(m->config);
    for (std::size_t p = 0; p < pos; ++p) lmlab::forward(*m, 1, p, cache, s);  // fill the cache up to pos
    std::vector<float> k(m->config.kv_dim()), v(m->config.kv_dim());
    for (auto _ : state) {
        benchmark::DoNotOptimize(lmlab::forward(*m, 1, pos, cache, s).data());
        state.PauseTiming();
        // rewind to pos by appending placeholder (zero) rows: attention costs the same whatever the
        // cached values are, and this is outside the timing
        cache.reset();
        for (std::size_t p = 0; p < pos; ++p)
            for (std::size_t l = 0; l < m->config.n_layers; ++l) cache.append(l, p, k, v);
        state.ResumeTiming();
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_forward)->ArgName("pos")->Arg(0)->Arg(255)->Arg(511)->Unit(benchmark::kMillisecond);

// greedy generation of 128 tokens after a 1-token prompt: end-to-end tokens per second
void BM_generate(benchmark::State& state) {
    const lmlab::Model* m = tiny_llama(state);
    if (!m) return;
    lmlab::Session session(*m);
    const std::vector<int> prompt = {1};
    const std::size_t n = 128;
    for (auto _ : state) {
        lmlab::Sampler greedy({}, m->config.vocab_size);
        benchmark::DoNotOptimize(session.generate(prompt, n, greedy).tokens.data());
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_generate)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
