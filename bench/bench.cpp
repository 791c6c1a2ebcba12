// lmlab_bench: times every kernel at the tiny models' shapes (LLaMA: dim 256, 4 heads x 64, ffn 1024,
// vocab 16384, context 512; GPT-2: dim 128 and 768). Timing, not tuning: numbers to compare before
// and after a change.
//   build/default/lmlab_bench                       (console)
//   cmake --build --preset default --target bench   (also writes reports/bench.json)
// plus forward() per token and greedy generation tokens/s of the tiny LLaMA, the tiny GPT-2 and a
// GPT-2 124M-shaped model with random weights, and speculative decoding against plain greedy
// (BM_speculative).
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <chrono>
#include <ctime>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model/testing/run_alone.h"
#include "model/load/load.h"
#include "kernels/ggml_quant.h"
#include "kernels/kernels.h"
#include "model/forward.h"
#include "model/serve/scheduler.h"
#include "model/session.h"
#include "model/testing/shared_dir.h"
#include "model/serve/speculative.h"
#include "model/tensors.h"

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

// the int8 matvec (Q8_0, group 64) at the same shapes, the run-time quantization of x included:
// bytes = the int8 matrix and its scales, a little over a quarter of the float one
void BM_matvec_q8_0(benchmark::State& state) {
    const auto out = static_cast<std::size_t>(state.range(0)), in = static_cast<std::size_t>(state.range(1));
    constexpr std::size_t g = 64;
    const auto W = random_vector(out * in, 1), x = random_vector(in, 2);
    std::vector<std::int8_t> Wq(out * in), xq(in);
    std::vector<float> Ws(out * in / g), xs(in / g), y(out);
    lmlab::quantize_q8_0(W, g, Wq, Ws);  // rows are whole groups: quantizing the flat matrix is per row
    for (auto _ : state) {
        lmlab::quantize_q8_0(x, g, xq, xs);
        lmlab::matvec_q8_0(Wq, Ws, xq, xs, g, y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * out * in));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (out * in + out * in / g * sizeof(float))));
}
BENCHMARK(BM_matvec_q8_0)->ArgNames({"out", "in"})->Args({256, 256})->Args({1024, 256})->Args({256, 1024})->Args({16384, 256});

// the same shapes through matvec_fast (float partial sums, vectorised; arg "threads": set_kernel_threads)
void BM_matvec_fast(benchmark::State& state) {
    const auto out = static_cast<std::size_t>(state.range(0)), in = static_cast<std::size_t>(state.range(1));
    const auto W = random_vector(out * in, 1), x = random_vector(in, 2);
    std::vector<float> y(out);
    lmlab::set_kernel_threads(static_cast<int>(state.range(2)));
    for (auto _ : state) {
        lmlab::matvec_fast(W, x, y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    lmlab::set_kernel_threads(1);
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * out * in));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out * in * sizeof(float)));
}
BENCHMARK(BM_matvec_fast)->ArgNames({"out", "in", "threads"})->Args({256, 256, 1})->Args({1024, 256, 1})
    ->Args({256, 1024, 1})->Args({16384, 256, 1})->Args({1024, 256, 2})->Args({16384, 256, 2})->UseRealTime();

// T tokens at once, Y = X·Wᵀ (batched prefill), against T matvec_fast calls (arg "batched" 0)
void BM_matmul_xwt(benchmark::State& state) {
    const auto T = static_cast<std::size_t>(state.range(0)), out = static_cast<std::size_t>(state.range(1)),
               in = static_cast<std::size_t>(state.range(2));
    const auto W = random_vector(out * in, 1), X = random_vector(T * in, 2);
    std::vector<float> Y(T * out);
    lmlab::set_kernel_threads(static_cast<int>(state.range(4)));
    for (auto _ : state) {
        if (state.range(3))
            lmlab::matmul_xwt(X, W, Y, T, in, out);
        else
            for (std::size_t t = 0; t < T; ++t)
                lmlab::matvec_fast(W, std::span<const float>(X).subspan(t * in, in), std::span<float>(Y).subspan(t * out, out));
        benchmark::DoNotOptimize(Y.data());
        benchmark::ClobberMemory();
    }
    lmlab::set_kernel_threads(1);
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * T * out * in));
}
BENCHMARK(BM_matmul_xwt)->ArgNames({"T", "out", "in", "batched", "threads"})->Args({128, 256, 256, 0, 1})
    ->Args({128, 256, 256, 1, 1})->Args({128, 1024, 256, 0, 1})->Args({128, 1024, 256, 1, 1})
    ->Args({128, 256, 1024, 0, 1})->Args({128, 256, 1024, 1, 1})->Args({128, 1024, 256, 1, 2})->UseRealTime();

// A GGUF weight type's matvec_fast (activations quantized to Q8_0 / Q8_K once per call, then ggml's
// integer dot products per row: kernels/ggml_fast.cpp) at the tiny LLaMA's shapes and a larger
// one; arg "type" is the ggml id (1 F16, 2 Q4_0, 6 Q5_0, 7 Q5_1, 8 Q8_0, 12 Q4_K, 14 Q6_K); bytes =
// the quantized matrix
void BM_ggml_matvec(benchmark::State& state) {
    const auto type = static_cast<lmlab::ggml::Type>(state.range(0));
    const auto out = static_cast<std::size_t>(state.range(1)), in = static_cast<std::size_t>(state.range(2));
    const auto Wf = random_vector(out * in, 1), x = random_vector(in, 2);
    const std::size_t rb = lmlab::ggml::row_bytes(type, in);
    std::vector<std::uint8_t> W(out * rb), scratch(lmlab::ggml::matvec_fast_scratch_bytes(type, in));
    for (std::size_t i = 0; i < out; ++i)
        lmlab::ggml::quantize_row(type, std::span<const float>(Wf).subspan(i * in, in), std::span<std::uint8_t>(W).subspan(i * rb, rb));
    std::vector<float> y(out);
    for (auto _ : state) {
        lmlab::ggml::matvec_fast(type, W, x, scratch, y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * out * in));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * W.size()));
}
BENCHMARK(BM_ggml_matvec)->ArgNames({"type", "out", "in"})->ArgsProduct({{1, 2, 6, 7, 8, 12, 14}, {1024}, {256}})
    ->ArgsProduct({{1, 2, 6, 7, 8, 12, 14}, {16384}, {256}})->ArgsProduct({{8, 12}, {4096}, {1024}});

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

void BM_layernorm(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    const auto x = random_vector(n, 16), w = random_vector(n, 17), b = random_vector(n, 18);
    std::vector<float> y(n);
    for (auto _ : state) {
        lmlab::layernorm(x, w, b, 1e-5f, y);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * 4 * sizeof(float)));
}
BENCHMARK(BM_layernorm)->Arg(128)->Arg(768);

void BM_gelu_tanh(benchmark::State& state) {
    const auto x = random_vector(3072, 19);
    std::vector<float> y(3072);
    for (auto _ : state) {
        lmlab::gelu_tanh(x, y);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 3072));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 3072 * 2 * sizeof(float)));
}
BENCHMARK(BM_gelu_tanh);

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

// the same head through the tiled kernel (online softmax, no scores buffer)
void BM_attention_tiled(benchmark::State& state) {
    const auto n_pos = static_cast<std::size_t>(state.range(0));
    const std::size_t head_dim = 64;
    const auto q = random_vector(head_dim, 9), k = random_vector(n_pos * head_dim, 10), v = random_vector(n_pos * head_dim, 11);
    std::vector<float> out(head_dim);
    for (auto _ : state) {
        lmlab::attention_tiled(q, k, v, n_pos, head_dim, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n_pos));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n_pos * head_dim * 2 * sizeof(float)));
}
BENCHMARK(BM_attention_tiled)->Arg(512);

void BM_argmax(benchmark::State& state) {
    const auto x = random_vector(16384, 12);
    for (auto _ : state) benchmark::DoNotOptimize(lmlab::argmax(x));
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * x.size()));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * x.size() * sizeof(float)));
}
BENCHMARK(BM_argmax);

// What one core streams from memory: the sum of a 1 GiB float array (far past every cache), in 8
// independent lanes so the adds never limit it. Decode reads every weight once per token, so bytes of
// weights per token × tokens/s against this is how close decode is to memory-bound
// (scripts/bench_vs_llamacpp.py prints it).
void BM_stream(benchmark::State& state) {
    const std::size_t n = std::size_t{1} << 28;
    std::vector<float> a(n, 1.0f);
    for (auto _ : state) {
        float acc[8] = {};
        for (std::size_t i = 0; i < n; i += 8)
            for (std::size_t l = 0; l < 8; ++l) acc[l] += a[i + l];
        benchmark::DoNotOptimize(acc);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * sizeof(float)));
}
BENCHMARK(BM_stream)->Unit(benchmark::kMillisecond)->MinTime(0.5);

// ---- Whole models --------------------------------------------------------------------------------
// 0: the default tiny LLaMA (golden/models/tiny-llama.h5), 1: the tiny GPT-2 (golden/models/tiny-gpt2),
// 7: the tiny Qwen2 (golden/models/tiny-qwen2), all made by the exporter; 2: a GPT-2 124M-shaped and
// 3: a Qwen2.5-0.5B-shaped model with random weights built in memory (what the real models cost);
// 5: stories260K from ../shared; 4 and 6: int8 (Q8_0) copies of 0 and 5.

// A model of config c with small pseudo-random weights (a fast LCG: the values do not matter for
// timing, only that they are finite and not all equal) and norm weights 1.
lmlab::Model random_model(const lmlab::Config& c, const char* what) {
    c.validate(what);
    lmlab::Model m;
    m.config = c;
    m.source = std::string(what) + " with random weights (in memory)";
    std::uint32_t state = 12345;
    for (const lmlab::BoundTensor& t : lmlab::bind_tensors(m)) {
        t.dst->resize(lmlab::numel(t.shape));
        for (float& v : *t.dst) {
            state = state * 1664525u + 1013904223u;
            v = (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 0.04f;  // uniform in [-0.02, 0.02]
        }
    }
    for (lmlab::LayerWeights& l : m.layers)
        for (lmlab::Norm* n : {&l.attn_norm, &l.ffn_norm}) std::fill(n->weight.begin(), n->weight.end(), 1.0f);
    std::fill(m.final_norm.weight.begin(), m.final_norm.weight.end(), 1.0f);
    return m;
}

// GPT-2 124M: dim 768, 12 layers, 12 heads, ffn 3072, vocab 50257, 1024 positions.
lmlab::Model gpt2_124m_shape() {
    lmlab::Config c = lmlab::Config::of(lmlab::Arch::Gpt2);
    c.dim = 768;
    c.n_layers = 12;
    c.n_heads = c.n_kv_heads = 12;
    c.ffn_dim = 3072;
    c.vocab_size = 50257;
    c.max_seq_len = 1024;
    return random_model(c, "gpt2-124M-shaped model");
}

// Qwen2.5-0.5B: dim 896, 24 layers, 14 query heads on 2 kv heads (7:1), ffn 4864, vocab 151936,
// tied. Its context is 32768; 1024 here keeps the KV cache small (a token's cost depends on its
// position, not on the context size).
lmlab::Config qwen2_05b_config(std::size_t max_seq_len) {
    lmlab::Config c = lmlab::Config::of(lmlab::Arch::Qwen2);
    c.dim = 896;
    c.n_layers = 24;
    c.n_heads = 14;
    c.n_kv_heads = 2;
    c.ffn_dim = 4864;
    c.vocab_size = 151936;
    c.max_seq_len = max_seq_len;
    c.tied_embeddings = true;
    return c;
}
lmlab::Model qwen2_05b_shape() { return random_model(qwen2_05b_config(1024), "qwen2-0.5B-shaped model"); }

// ../shared (stories260K): $LMLAB_SHARED, else beside the source tree
std::string shared_dir() { return lmlab::shared_dir_or(LMLAB_SOURCE_DIR "/../shared"); }

// The models by index (bench_model's argument); the benchmarks are registered under these names
// ("BM_decode/tiny-llama/fast/threads:1"), so a result names its model.
constexpr const char* kModelNames[] = {"tiny-llama",  "tiny-gpt2",        "gpt2-124M-shape", "qwen2-0.5B-shape",
                                       "tiny-llama-int8", "stories260K", "stories260K-int8", "tiny-qwen2"};
constexpr int kTinyLlama = 0, kTinyGpt2 = 1, kGpt2124M = 2, kQwen2_05B = 3, kTinyLlamaInt8 = 4, kStories260K = 5,
              kStories260KInt8 = 6;

// 4-6: int8 (Q8_0, model/quantize.cpp) next to float: the tiny LLaMA in groups of 64, and
// stories260K (from ../shared; skipped when absent) float and in groups of 4 (its hidden width
// 172 = 4·43 allows no larger group).
const lmlab::Model* bench_model(benchmark::State& state, int which) {
    static std::unique_ptr<lmlab::Model> models[8];
    static std::string errors[8];
    const char* const* names = kModelNames;
    if (!models[which] && errors[which].empty()) {
        try {
            const std::string stories = shared_dir() + "/models/stories260K/stories260K.bin";
            if (which == 0) models[0] = std::make_unique<lmlab::Model>(lmlab::load_model(LMLAB_SOURCE_DIR "/golden/models/tiny-llama.h5"));
            if (which == 1) models[1] = std::make_unique<lmlab::Model>(lmlab::load_model(LMLAB_SOURCE_DIR "/golden/models/tiny-gpt2"));
            if (which == 2) models[2] = std::make_unique<lmlab::Model>(gpt2_124m_shape());
            if (which == 3) models[3] = std::make_unique<lmlab::Model>(qwen2_05b_shape());
            if (which == 4)
                models[4] = std::make_unique<lmlab::Model>(
                    lmlab::quantize_model(lmlab::load_model(LMLAB_SOURCE_DIR "/golden/models/tiny-llama.h5"), 64));
            if (which == 5) models[5] = std::make_unique<lmlab::Model>(lmlab::load_model(stories));
            if (which == 6) models[6] = std::make_unique<lmlab::Model>(lmlab::quantize_model(lmlab::load_model(stories), 4));
            if (which == 7) models[7] = std::make_unique<lmlab::Model>(lmlab::load_model(LMLAB_SOURCE_DIR "/golden/models/tiny-qwen2"));
        } catch (const std::exception& e) {
            errors[which] = std::string(e.what()) + (which >= 5 ? " (../shared absent?)" : " (build the `golden` target first)");
        }
    }
    state.SetLabel(names[which]);
    if (!models[which]) state.SkipWithError(errors[which].c_str());
    return models[which].get();
}

// one token through the model at position `pos` (attention cost grows with pos)
void BM_forward(benchmark::State& state, int model) {
    const lmlab::Model* m = bench_model(state, model);
    if (!m) return;
    const auto pos = static_cast<std::size_t>(state.range(0));
    lmlab::KVCache cache(m->config.n_layers, m->config.max_seq_len, m->config.kv_dim());
    lmlab::RunState s(m->config);
    std::vector<float> k(m->config.kv_dim()), v(m->config.kv_dim());
    auto fill = [&] {  // placeholder (zero) rows up to pos: attention costs the same whatever they hold
        cache.reset();
        for (std::size_t p = 0; p < pos; ++p)
            for (std::size_t l = 0; l < m->config.n_layers; ++l) cache.append(l, p, k, v);
    };
    fill();
    for (auto _ : state) {
        benchmark::DoNotOptimize(lmlab::forward(*m, 1, pos, cache, s).data());
        state.PauseTiming();
        fill();  // rewind to pos, outside the timing
        state.ResumeTiming();
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// a prompt of n tokens: batched prefill (arg path 1) vs token by token through forward() (path 0)
void BM_prompt(benchmark::State& state, int model) {
    const lmlab::Model* m = bench_model(state, model);
    if (!m) return;
    const bool batched = state.range(0) == 1;
    const auto n = static_cast<std::size_t>(state.range(1));
    std::vector<int> tokens(n);
    for (std::size_t i = 0; i < n; ++i) tokens[i] = static_cast<int>((i * 7919 + 3) % m->config.vocab_size);
    lmlab::KVCache cache(m->config.n_layers, m->config.max_seq_len, m->config.kv_dim());
    lmlab::RunState s(m->config), all(m->config, n);  // one row; every row of the prompt
    for (auto _ : state) {
        cache.reset();
        if (batched) benchmark::DoNotOptimize(lmlab::prefill(*m, tokens, cache, all).data());
        else
            for (std::size_t p = 0; p < n; ++p) benchmark::DoNotOptimize(lmlab::forward(*m, tokens[p], p, cache, s).data());
    }
    state.SetLabel(std::string(batched ? "prefill" : "token by token"));
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}

// greedy generation of n tokens after a 1-token prompt: end-to-end tokens per second
void BM_generate(benchmark::State& state, int model) {
    const lmlab::Model* m = bench_model(state, model);
    if (!m) return;
    lmlab::Session session(*m);
    const std::vector<int> prompt = {1};
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        lmlab::Sampler greedy({}, m->config.vocab_size);
        benchmark::DoNotOptimize(session.generate(prompt, n, greedy).tokens.data());
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
    state.counters["weight_MB"] = static_cast<double>(lmlab::weight_bytes(*m)) / 1e6;  // weight_bytes(): float vs int8
}

// Decode tokens/s on the plain kernels (the readable reference) vs the fast ones, on 1 and 2
// threads: 256 greedy tokens after a 1-token prompt. Wall time (UseRealTime): threads must win on
// the clock, not on CPU time.
void BM_decode(benchmark::State& state, int model) {
    const lmlab::Model* m = bench_model(state, model);
    if (!m) return;
    const bool fast = state.range(0) == 1;
    const int threads = static_cast<int>(state.range(1));
    lmlab::set_kernel_path(fast ? lmlab::KernelPath::Fast : lmlab::KernelPath::Plain);
    lmlab::set_kernel_threads(threads);
    lmlab::Session session(*m);
    const std::vector<int> prompt = {1};
    const std::size_t n = 256;
    for (auto _ : state) {
        lmlab::Sampler greedy({}, m->config.vocab_size);
        benchmark::DoNotOptimize(session.generate(prompt, n, greedy).tokens.data());
    }
    lmlab::set_kernel_path(lmlab::KernelPath::Fast);
    lmlab::set_kernel_threads(1);
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
    state.counters["weight_MB"] = static_cast<double>(lmlab::weight_bytes(*m)) / 1e6;
    state.SetLabel(std::string(fast ? "fast" : "plain") + ", " + std::to_string(threads) + " thread(s)");
}

// ---- Serving (model/serve/scheduler.h) --------------------------------------------------------------------

// n requests, all submitted at step 0: prompts of 8 to 64 tokens, 64 greedy tokens each.
std::vector<lmlab::ServeRequest> serve_requests(const lmlab::Config& c, std::size_t n) {
    std::vector<lmlab::ServeRequest> rs(n);
    for (std::size_t i = 0; i < n; ++i) {
        rs[i].id = std::to_string(i);
        for (std::size_t t = 0; t < 8 + (i * 23) % 57; ++t) rs[i].prompt.push_back(static_cast<int>((i * 131 + t * 7919 + 3) % c.vocab_size));
        rs[i].max_new_tokens = 64;
    }
    return rs;
}

// Continuous batching (mode 1: serve(), every request in one batch, chunk 64) against the same
// requests one after another (mode 0: run_alone, the prompt through prefill then one token at a
// time). Both produce the same tokens; counter: new tokens per second of wall time.
void BM_serve(benchmark::State& state, int model) {
    const lmlab::Model* m = bench_model(state, model);
    if (!m) return;
    const bool batched = state.range(0) == 1;
    const auto n = static_cast<std::size_t>(state.range(1));
    const auto requests = serve_requests(m->config, n);
    lmlab::ServeOptions opt;
    opt.max_running = n;
    opt.chunk = 64;
    opt.page_size = 16;
    std::size_t new_tokens = 0;
    for (auto _ : state) {
        if (batched) {
            new_tokens += lmlab::serve(*m, requests, opt).new_tokens;
        } else {
            for (const auto& r : requests) new_tokens += lmlab::run_alone(*m, r).tokens.size();
        }
    }
    state.SetLabel(std::string(batched ? "batched" : "sequential"));
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(new_tokens), benchmark::Counter::kIsRate);
}

// The cost of paging for one sequence: 256 greedy tokens after a 64-token prompt on the contiguous
// cache (page 0: run_alone) or through serve() alone on pages of 16 (every attention tile of 32
// straddles two pages and is copied) or 32 (tiles read in place).
void BM_paged(benchmark::State& state, int model) {
    const lmlab::Model* m = bench_model(state, model);
    if (!m) return;
    const auto page = static_cast<std::size_t>(state.range(0));
    lmlab::ServeRequest r = serve_requests(m->config, 1)[0];
    r.prompt.resize(64, 1);
    r.max_new_tokens = 256;
    lmlab::ServeOptions opt;
    opt.max_running = 1;
    opt.chunk = 64;
    opt.page_size = page;
    for (auto _ : state) {
        if (page == 0) benchmark::DoNotOptimize(lmlab::run_alone(*m, r).tokens.data());
        else benchmark::DoNotOptimize(lmlab::serve(*m, {r}, opt).results[0].tokens.data());
    }
    state.SetLabel(page == 0 ? "contiguous" : "paged, pages of " + std::to_string(page));
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * 256), benchmark::Counter::kIsRate);
}

// Speculative decoding (model/serve/speculative.h) vs plain greedy: 128 greedy tokens after a 1-token
// prompt (the same run as BM_generate), the target float. Arg "draft": 0 = early exit after 1 layer,
// 1 = an int8 copy of the target, 2 = no draft: plain Session greedy, the baseline the other rows are
// compared with (speed-up = their tokens/s / its tokens/s). The output is the same tokens in every
// row (checked by the tests and the generation.speculative.* stages); only the time differs.
// Counters: tokens/s, acceptance (accepted / proposed draft tokens), tokens per target call.
void BM_speculative(benchmark::State& state, int model) {
    const int which = model;
    const lmlab::Model* m = bench_model(state, which);
    if (!m) return;
    const auto draft_kind = state.range(0);
    const auto k = static_cast<std::size_t>(state.range(1));
    const std::vector<int> prompt = {1};
    const std::size_t n = 128;
    static std::unique_ptr<lmlab::Model> drafts[8][2];  // [model][draft kind], made once
    if (draft_kind < 2 && !drafts[which][draft_kind])
        drafts[which][draft_kind] = std::make_unique<lmlab::Model>(draft_kind == 0 ? lmlab::early_exit_draft(*m, 1)
                                                                                   : lmlab::int8_draft(*m));
    std::string label = kModelNames[which];
    if (draft_kind == 2) {
        lmlab::Session session(*m);
        for (auto _ : state) {
            lmlab::Sampler greedy({}, m->config.vocab_size);
            benchmark::DoNotOptimize(session.generate(prompt, n, greedy).tokens.data());
        }
        state.SetLabel(label + ", plain greedy (baseline)");
    } else {
        lmlab::SpeculativeSession spec(*m, *drafts[which][draft_kind], k);
        lmlab::SpeculativeStats stats;
        for (auto _ : state) {
            auto r = spec.generate(prompt, n);
            benchmark::DoNotOptimize(r.tokens.data());
            stats = r.stats;
        }
        state.counters["acceptance"] = stats.acceptance_rate();
        state.counters["tokens/target_call"] = static_cast<double>(n) / static_cast<double>(stats.target_calls);
        state.SetLabel(label + (draft_kind == 0 ? ", draft early exit 1 layer" : ", draft int8") + ", k " + std::to_string(k));
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}

// ---- Long prompts (docs/performance.md#long-prompts) -------------------------------------------------
// Not registered by default (minutes per run on 2 cores): lmlab_bench --long_prompts
// --benchmark_filter=BM_long_prompt. The Qwen2.5-0.5B shape with its real context (32768), random
// weights; a prompt of n tokens through Session::start (chunks of kPrefillChunk rows), then 16
// tokens one at a time. Arg "window": 0 = Qwen2.5 as released (full attention), 4096 = the same
// with a sliding window of 4096 in every layer (use_sliding_window, max_window_layers 0), to show
// the memory a window saves. One iteration (a run is long); counters: prefill and decode tokens/s,
// the KV cache's bytes (keys and values, float32) in all and per position held, and the process's
// peak resident memory (ru_maxrss: weights + cache + one chunk's activations; run each case in a
// process of its own, --benchmark_filter=.../tokens:8192/window:0, or it includes the earlier cases'
// models and caches); wall-clock and CPU-time rates (the CPU ones hold on a shared machine).
lmlab::Model qwen2_05b_long(std::size_t window) {
    lmlab::Config c = qwen2_05b_config(32768);  // Qwen2.5-0.5B's whole context
    c.sliding_window = window;
    return random_model(c, window ? "qwen2-0.5B-shaped model, window 4096" : "qwen2-0.5B-shaped model, 32768 positions");
}

void BM_long_prompt(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0)), window = static_cast<std::size_t>(state.range(1));
    static std::unique_ptr<lmlab::Model> models[2];
    auto& m = models[window ? 1 : 0];
    if (!m) m = std::make_unique<lmlab::Model>(qwen2_05b_long(window));
    std::vector<int> prompt(n);
    for (std::size_t i = 0; i < n; ++i) prompt[i] = static_cast<int>((i * 7919 + 3) % 151643);
    constexpr std::size_t kDecode = 16;
    using clock = std::chrono::steady_clock;
    // the process's CPU time beside the wall clock: on a shared machine the wall clock counts the time
    // other jobs hold the core; one kernel thread, so CPU seconds are the work's own seconds
    const auto cpu_now = [] {
        timespec ts{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    };
    double prefill_s = 0, decode_s = 0, prefill_cpu = 0, decode_cpu = 0;
    std::size_t kv_bytes = 0;
    for (auto _ : state) {
        lmlab::Session session(*m);
        const auto t0 = clock::now();
        const double c0 = cpu_now();
        std::span<const float> logits = session.start(prompt, kDecode);
        const auto t1 = clock::now();
        const double c1 = cpu_now();
        for (std::size_t i = 0; i < kDecode; ++i) logits = session.feed(static_cast<int>(lmlab::argmax(logits)));
        const auto t2 = clock::now();
        const double c2 = cpu_now();
        prefill_s = std::chrono::duration<double>(t1 - t0).count();
        decode_s = std::chrono::duration<double>(t2 - t1).count();
        prefill_cpu = c1 - c0;
        decode_cpu = c2 - c1;
        kv_bytes = session.cache().bytes();
        state.SetIterationTime(prefill_s + decode_s);
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    state.counters["prefill_tok/s"] = static_cast<double>(n) / prefill_s;
    state.counters["decode_tok/s"] = static_cast<double>(kDecode) / decode_s;
    state.counters["prefill_tok/cpu_s"] = static_cast<double>(n) / prefill_cpu;
    state.counters["decode_tok/cpu_s"] = static_cast<double>(kDecode) / decode_cpu;
    state.counters["kv_MB"] = static_cast<double>(kv_bytes) / 1e6;
    state.counters["kv_bytes/pos"] = static_cast<double>(kv_bytes) / static_cast<double>(n + kDecode);
    state.counters["peak_rss_MB"] = static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
    state.SetLabel(window ? "window 4096" : "full attention");
}

}  // namespace

// Registers fn for one model under "<family>/<model name>/<label>"; the remaining arguments (state.range)
// and their names as given.
benchmark::internal::Benchmark* on(const char* family, void (*fn)(benchmark::State&, int), int model,
                                   const std::string& label = "") {
    const std::string name = std::string(family) + "/" + kModelNames[model] + (label.empty() ? "" : "/" + label);
    return benchmark::RegisterBenchmark(name.c_str(), fn, model);
}

// The whole-model benchmarks, by model name.
void register_models() {
    using benchmark::kMillisecond;
    // one token at a position: attention's cost grows with pos
    on("BM_forward", BM_forward, kTinyLlama)->ArgName("pos")->Arg(0)->Arg(255)->Arg(511)->Unit(kMillisecond);
    on("BM_forward", BM_forward, kTinyGpt2)->ArgName("pos")->Arg(0)->Arg(255)->Unit(kMillisecond);
    on("BM_forward", BM_forward, kGpt2124M)->ArgName("pos")->Arg(0)->Arg(511)->Unit(kMillisecond);
    on("BM_forward", BM_forward, kQwen2_05B)->ArgName("pos")->Arg(0)->Arg(511)->Unit(kMillisecond);
    // a prompt of 128 tokens: all rows at once (prefill) vs token by token
    for (int m : {kTinyLlama, kTinyGpt2, kStories260K})
        on("BM_prompt", BM_prompt, m)->ArgNames({"batched", "tokens"})->Args({0, 128})->Args({1, 128})->Unit(kMillisecond);
    // greedy generation after a 1-token prompt: end-to-end tokens per second
    for (const auto& [m, n] : std::initializer_list<std::pair<int, int>>{
             {kTinyLlama, 128}, {kTinyGpt2, 128}, {kGpt2124M, 32}, {kQwen2_05B, 16}, {kTinyLlamaInt8, 128},
             {kStories260K, 128}, {kStories260KInt8, 128}, {7, 128}})
        on("BM_generate", BM_generate, m)->ArgName("tokens")->Arg(n)->Unit(kMillisecond);
    // decode on the plain and the fast kernels, 1 and 2 threads (wall time: threads must win on the clock)
    for (int m : {kTinyLlama, kStories260K})
        on("BM_decode", BM_decode, m)->ArgNames({"fast", "threads"})->Args({0, 1})->Args({1, 1})->Args({1, 2})->UseRealTime()
            ->Unit(kMillisecond);
    for (int m : {kTinyLlamaInt8, kStories260KInt8})  // int8 has no plain twin
        on("BM_decode", BM_decode, m)->ArgNames({"fast", "threads"})->Args({1, 1})->UseRealTime()->Unit(kMillisecond);
    // continuous batching vs the same requests one after another
    for (int m : {kTinyLlama, kStories260K})
        on("BM_serve", BM_serve, m)->ArgNames({"batched", "requests"})->Args({0, 8})->Args({1, 8})->Args({0, 32})->Args({1, 32})
            ->UseRealTime()->Unit(kMillisecond);
    on("BM_serve", BM_serve, kGpt2124M)->ArgNames({"batched", "requests"})->Args({0, 8})->Args({1, 8})->UseRealTime()->Unit(kMillisecond);
    for (int m : {kTinyLlama, kStories260K})
        on("BM_paged", BM_paged, m)->ArgName("page")->Arg(0)->Arg(16)->Arg(32)->UseRealTime()->Unit(kMillisecond);
    // speculative decoding: draft 2 = none (plain greedy, the baseline), 0 = early exit after 1 layer, 1 = int8
    for (int m : {kTinyLlama, kStories260K}) {
        auto* b = on("BM_speculative", BM_speculative, m)->ArgNames({"draft", "k"})->Args({2, 0});
        for (int draft : {0, 1})
            for (int k : {1, 2, 4, 8}) b->Args({draft, k});
        b->Unit(kMillisecond);
    }
}

int main(int argc, char** argv) {
    register_models();
    // --long_prompts (ours, taken out before Google Benchmark reads the rest): the long-prompt runs
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--long_prompts") {
            for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
            --argc;
            benchmark::RegisterBenchmark("BM_long_prompt/qwen2-0.5B-shape", BM_long_prompt)
                ->ArgNames({"tokens", "window"})
                ->Args({1024, 0})->Args({4096, 0})->Args({8192, 0})->Args({8192, 4096})
                ->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
            break;
        }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
