// The fast kernels (kernels/fast.cpp) against the plain ones beside them.
//
// Tolerances are worst-case bounds derived from float rounding, not guesses: the plain kernels
// accumulate in double (their error is one final float rounding, u·|y|), the fast ones in float, so
// |fast - plain| is bounded by the fast kernel's rounding error plus u·|y|. u = 2^-24 is float's unit
// roundoff and γ(k) = k·u / (1 - k·u) bounds the relative error of k successive float roundings
// (Higham, "Accuracy and Stability of Numerical Algorithms", §3.1). A wrong kernel (a missed
// rescale, a lost tail element, a row of the wrong block) is off by O(|y|), orders of magnitude
// above these bounds; correct ones land far below them (random rounding errors mostly cancel).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

namespace {

constexpr double kU = 0x1p-24;  // unit roundoff of float
constexpr std::size_t kLanes = 8;  // fast.cpp's partial sums per dot product
constexpr float kInf = std::numeric_limits<float>::infinity();

double gamma(double k) { return k * kU / (1.0 - k * kU); }

std::vector<float> randn(std::size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Restores the thread count (1) when a test that changes it ends, even on failure.
struct Threads {
    explicit Threads(int n) { set_kernel_threads(n); }
    ~Threads() { set_kernel_threads(1); }
};

// The bound for one fast dot product of n terms against the plain kernel's double one.
// Each of the kLanes partial sums adds ceil(n / kLanes) rounded products one after another (one
// rounding for the product, one per add), then 3 pairwise levels combine the lanes:
//   |fast - exact| <= γ(ceil(n / kLanes) + 4) · Σ_j |w_j x_j|,   |plain - exact| <= u·|exact|
// (the double sum's own error, ~n·2^-53·Σ|w x|, is far below both).
double dot_bound(const float* w, const float* x, std::size_t n, double exact) {
    double abs_sum = 0.0;
    for (std::size_t j = 0; j < n; ++j) abs_sum += std::fabs(static_cast<double>(w[j]) * x[j]);
    const double lanes_len = static_cast<double>((n + kLanes - 1) / kLanes);
    return gamma(lanes_len + 4) * abs_sum + 2 * kU * std::fabs(exact) + std::numeric_limits<float>::denorm_min();
}

// Expects the fast y within dot_bound of the plain y, row by row (W: [out, in]).
void expect_matvec_close(const std::vector<float>& W, const std::vector<float>& x, const std::vector<float>& fast,
                         const std::vector<float>& plain, const std::string& what) {
    const std::size_t in = x.size();
    for (std::size_t i = 0; i < plain.size(); ++i) {
        const double bound = dot_bound(W.data() + i * in, x.data(), in, plain[i]);
        ASSERT_LE(std::fabs(static_cast<double>(fast[i]) - plain[i]), bound)
            << what << ": row " << i << ", fast " << fast[i] << ", plain " << plain[i];
    }
}

// Sizes chosen to break lane and block bookkeeping: 1, a lane minus one, around the attention
// tile, odd, and the longest reduction of the fixtures.
const std::size_t kSizes[] = {1, 7, 31, 32, 33, 255, 1000, 16384};

}  // namespace

// ---- matvec_fast ---------------------------------------------------------------------------------

TEST(MatvecFast, MatchesPlainOnAwkwardSizes) {
    unsigned seed = 1;
    for (const std::size_t in : kSizes)
        for (const std::size_t out : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{4}, std::size_t{5},
                                      std::size_t{7}, std::size_t{33}}) {
            const auto W = randn(out * in, seed++, 1.0f / std::sqrt(static_cast<float>(in))), x = randn(in, seed++);
            std::vector<float> fast(out), plain(out);
            matvec_fast(W, x, fast);
            matvec(W, x, plain);
            expect_matvec_close(W, x, fast, plain, std::to_string(out) + "x" + std::to_string(in));
        }
    for (const std::size_t out : {std::size_t{1000}, std::size_t{16384}}) {  // many rows, short reductions
        const auto W = randn(out * 31, seed++), x = randn(31, seed++);
        std::vector<float> fast(out), plain(out);
        matvec_fast(W, x, fast);
        matvec(W, x, plain);
        expect_matvec_close(W, x, fast, plain, std::to_string(out) + "x31");
    }
}

TEST(MatvecFast, ExactWhereEveryPartialSumIsExact) {
    // small integers: every product and partial sum is an integer below 2^24, so both kernels are exact
    for (const std::size_t in : kSizes) {
        const std::size_t out = 7;
        std::vector<float> W(out * in), x(in);
        for (std::size_t j = 0; j < W.size(); ++j) W[j] = static_cast<float>(static_cast<int>(j * 7 % 13) - 6);
        for (std::size_t j = 0; j < in; ++j) x[j] = static_cast<float>(static_cast<int>(j * 5 % 11) - 5);
        std::vector<float> fast(out), plain(out);
        matvec_fast(W, x, fast);
        matvec(W, x, plain);
        EXPECT_EQ(fast, plain) << "in " << in;
    }
}

TEST(MatvecFast, SameBitsWhateverTheRowsPlaceInItsBlock) {
    // rows go 4 at a time, the last out % 4 fewer at a time: the same row must give the same bits in
    // every place (7 copies of one row: places 0-3 of a full block, 0-2 of the remainder)
    for (const std::size_t in : kSizes) {
        const auto row = randn(in, 7), x = randn(in, 8);
        std::vector<float> W;
        for (int i = 0; i < 7; ++i) W.insert(W.end(), row.begin(), row.end());
        std::vector<float> y(7);
        matvec_fast(W, x, y);
        for (std::size_t i = 1; i < 7; ++i) EXPECT_EQ(std::memcmp(&y[i], &y[0], sizeof(float)), 0) << "in " << in << " row " << i;
    }
}

TEST(MatvecFast, SameBitsForAnyThreadCount) {
    // large enough for the parallel path (kParallelMin multiply-adds), with a remainder block
    for (const auto& [out, in] : {std::pair<std::size_t, std::size_t>{16384, 256}, {1024, 256}, {1031, 255}, {5, 65536}}) {
        ASSERT_GE(out * in, kParallelMin) << out << "x" << in << " would stay on one thread";
        const auto W = randn(out * in, 11), x = randn(in, 12);
        std::vector<float> one(out);
        matvec_fast(W, x, one);
        for (const int n : {2, 3}) {
            Threads threads(n);
            std::vector<float> many(out);
            matvec_fast(W, x, many);
            EXPECT_TRUE(same_bits(one, many)) << out << "x" << in << " with " << n << " threads";
        }
    }
}

TEST(MatvecFast, WrongShapeThrows) {
    const std::vector<float> W(5), x(2);
    std::vector<float> y(3);
    EXPECT_THROW(matvec_fast(W, x, y), std::invalid_argument);
}

// ---- matmul_xwt ----------------------------------------------------------------------------------

TEST(MatmulXwt, EveryRowIsMatvecFastBitForBit) {
    // batched prefill relies on this: a prompt through matmul_xwt gives exactly the bits of the
    // token-by-token path (and so the same generated text)
    unsigned seed = 100;
    for (const auto& [out, in] : {std::pair<std::size_t, std::size_t>{256, 256}, {7, 1000}, {65, 33}, {1, 16384},
                                  {130, 7}, {33, 1}})
        for (const std::size_t T : {std::size_t{1}, std::size_t{7}, std::size_t{33}, std::size_t{128}})
            for (const int n : {1, 2}) {
                Threads threads(n);
                const auto W = randn(out * in, seed++), X = randn(T * in, seed++);
                std::vector<float> Y(T * out);
                matmul_xwt(X, W, Y, T, in, out);
                for (std::size_t t = 0; t < T; ++t) {
                    std::vector<float> y(out);
                    matvec_fast(W, std::span<const float>(X).subspan(t * in, in), y);
                    ASSERT_TRUE(same_bits(y, std::vector<float>(Y.begin() + t * out, Y.begin() + (t + 1) * out)))
                        << "T " << T << ", " << out << "x" << in << ", row " << t << ", " << n << " threads";
                }
            }
}

TEST(MatmulXwt, MatchesPlainMatvecRowByRow) {
    const std::size_t T = 9;
    unsigned seed = 200;
    for (const std::size_t in : kSizes) {
        const std::size_t out = in >= 1000 ? 5 : 37;
        const auto W = randn(out * in, seed++, 1.0f / std::sqrt(static_cast<float>(in))), X = randn(T * in, seed++);
        std::vector<float> Y(T * out);
        matmul_xwt(X, W, Y, T, in, out);
        for (std::size_t t = 0; t < T; ++t) {
            const std::vector<float> x(X.begin() + t * in, X.begin() + (t + 1) * in);
            std::vector<float> plain(out);
            matvec(W, x, plain);
            expect_matvec_close(W, x, std::vector<float>(Y.begin() + t * out, Y.begin() + (t + 1) * out), plain,
                                "T " + std::to_string(t) + " in " + std::to_string(in));
        }
    }
}

TEST(MatmulXwt, SameBitsForAnyThreadCount) {
    const std::size_t T = 128, in = 256, out = 1000;
    ASSERT_GE(T * out * in, kParallelMin);
    const auto W = randn(out * in, 21), X = randn(T * in, 22);
    std::vector<float> one(T * out), two(T * out);
    matmul_xwt(X, W, one, T, in, out);
    Threads threads(2);
    matmul_xwt(X, W, two, T, in, out);
    EXPECT_TRUE(same_bits(one, two));
}

TEST(MatmulXwt, WrongShapesThrow) {
    const std::vector<float> X(6), W(6);  // X [2, 3], W [2, 3]
    std::vector<float> Y(4), short_Y(3);
    EXPECT_NO_THROW(matmul_xwt(X, W, Y, 2, 3, 2));
    EXPECT_THROW(matmul_xwt(X, W, short_Y, 2, 3, 2), std::invalid_argument);
    EXPECT_THROW(matmul_xwt(X, W, Y, 3, 3, 2), std::invalid_argument);  // X too short for 3 tokens
    EXPECT_THROW(matmul_xwt(X, W, Y, 2, 2, 2), std::invalid_argument);  // W, X not [., 2]
}

// ---- attention_tiled -----------------------------------------------------------------------------

namespace {

// One head's cache: position t's key starts at k[offset + t·stride] (several heads per row).
struct Cache {
    std::size_t n_pos, head_dim, stride, offset;
    std::vector<float> q, k, v;
    std::span<const float> keys() const { return std::span<const float>(k).subspan(offset); }
    std::span<const float> values() const { return std::span<const float>(v).subspan(offset); }
    float* key(std::size_t t) { return k.data() + offset + t * stride; }
    float* value(std::size_t t) { return v.data() + offset + t * stride; }
};

Cache make_cache(std::size_t n_pos, std::size_t head_dim, unsigned seed, bool strided = false) {
    const std::size_t stride = strided ? 3 * head_dim + 1 : head_dim, offset = strided ? head_dim + 1 : 0;
    Cache c{n_pos, head_dim, stride, offset, randn(head_dim, seed), randn(offset + n_pos * stride, seed + 1),
            randn(offset + n_pos * stride, seed + 2)};
    for (float& x : c.q) x = x == 0.0f ? 0.5f : x;  // no zero entries: -inf·sign(q) keys then score exactly -inf
    return c;
}

// Marks key t as masked: q·k = Σ q_j·(-inf·sign(q_j)) = -inf (no NaN: every term is -inf).
void mask(Cache& c, std::size_t t) {
    for (std::size_t d = 0; d < c.head_dim; ++d) c.key(t)[d] = c.q[d] > 0 ? -kInf : kInf;
}

struct AttentionRun {
    std::vector<float> plain, fast;
};

AttentionRun run_both(const Cache& c) {
    AttentionRun r{std::vector<float>(c.head_dim), std::vector<float>(c.head_dim)};
    std::vector<float> scores(c.n_pos);
    attention(c.q, c.keys(), c.values(), c.n_pos, c.stride, scores, r.plain);
    attention_tiled(c.q, c.keys(), c.values(), c.n_pos, c.stride, r.fast);
    return r;
}

// The bound for |tiled - plain| on one output element (attention is a convex combination of values):
//  - scores: each is one fast dot (dot_bound) times the scale; plain's is rounded once (u·|s|). A
//    perturbation of every score by at most Δ moves every softmax weight by a factor within e^{±2Δ},
//    so the output by at most (e^{2Δ} - 1)·max|v|;
//  - weights: exp(s - m) is formed from a float subtraction (error u·|s - m| in the exponent), expf
//    (< 2u), and is rescaled by exp(m_old - m_new) once per tile that raised the max (error
//    u·|m_old - m_new| + 3u each, and the exponents add up to at most R = max s - min s): relative
//    error (2R + 3·(n_tiles + 1))·u per weight, plain's < 2u; the weights sum to 1, so max|v| times that;
//  - sums: each output is a tile sum of <= 32 terms, then a rescale-and-add per tile, then a division:
//    γ(kAttentionTile + 2·n_tiles + 2) relative to Σ p|v| <= max|v|; the same for the denominator l.
double attention_bound(const Cache& c) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    double delta = 0, s_max = -INFINITY, s_min = INFINITY, v_max = 0;
    for (std::size_t t = 0; t < c.n_pos; ++t) {
        const float* k = c.k.data() + c.offset + t * c.stride;
        double s = 0;
        for (std::size_t d = 0; d < c.head_dim; ++d) s += static_cast<double>(c.q[d]) * k[d];
        if (std::isinf(s)) continue;  // masked: weight exactly 0 in both kernels
        s *= scale;
        delta = std::max(delta, dot_bound(c.q.data(), k, c.head_dim, s / scale) * scale + 2 * kU * std::fabs(s));
        s_max = std::max(s_max, s);
        s_min = std::min(s_min, s);
        for (std::size_t d = 0; d < c.head_dim; ++d)
            v_max = std::max(v_max, std::fabs(static_cast<double>(c.v[c.offset + t * c.stride + d])));
    }
    const double n_tiles = static_cast<double>((c.n_pos + kAttentionTile - 1) / kAttentionTile);
    const double weights = (2 * (s_max - s_min) + 3 * (n_tiles + 1) + 2) * kU;
    const double sums = 2 * gamma(static_cast<double>(kAttentionTile) + 2 * n_tiles + 2);
    return (std::expm1(2 * delta) + weights + sums) * v_max + std::numeric_limits<float>::denorm_min();
}

void expect_attention_close(const Cache& c, const std::string& what) {
    const AttentionRun r = run_both(c);
    const double bound = attention_bound(c);
    for (std::size_t d = 0; d < c.head_dim; ++d) {
        ASSERT_TRUE(std::isfinite(r.fast[d])) << what << ": out[" << d << "] = " << r.fast[d];
        ASSERT_LE(std::fabs(static_cast<double>(r.fast[d]) - r.plain[d]), bound)
            << what << ": out[" << d << "], tiled " << r.fast[d] << ", plain " << r.plain[d];
    }
}

std::string describe(std::size_t n_pos, std::size_t head_dim, bool strided) {
    return std::to_string(n_pos) + " positions, head_dim " + std::to_string(head_dim) + (strided ? ", strided" : "");
}

}  // namespace

TEST(AttentionTiled, MatchesPlainAtTileBoundariesAndAwkwardSizes) {
    // tile - 1, tile, tile + 1 (and twice that), the plain stage's 1, 2, 17, 512, and odd head sizes
    const std::size_t T = kAttentionTile;
    unsigned seed = 300;
    for (const std::size_t n_pos : {std::size_t{1}, std::size_t{2}, std::size_t{17}, T - 1, T, T + 1, 2 * T - 1,
                                    2 * T, 2 * T + 1, std::size_t{255}, std::size_t{512}, std::size_t{1000}})
        // head_dim: values go 16 columns at a time, then 8, then one by one (8: stories260K, tiny Qwen2)
        for (const std::size_t head_dim : {std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{24}, std::size_t{33},
                                           std::size_t{64}, std::size_t{128}})
            for (const bool strided : {false, true}) {
                seed += 3;
                expect_attention_close(make_cache(n_pos, head_dim, seed, strided), describe(n_pos, head_dim, strided));
            }
}

TEST(AttentionTiled, OnePositionReturnsItsValueExactly) {
    // softmax of one score is exp(0) / exp(0) = 1: out = v_0, bit for bit (as torch gives)
    for (const std::size_t head_dim : {std::size_t{1}, std::size_t{64}, std::size_t{33}}) {
        const Cache c = make_cache(1, head_dim, 17, true);
        const AttentionRun r = run_both(c);
        EXPECT_EQ(r.fast, std::vector<float>(c.values().begin(), c.values().begin() + head_dim));
    }
}

TEST(AttentionTiled, MaskedKeysAreIgnored) {
    // a -inf score gets weight exactly 0: the output is attention over the other keys, whatever the
    // masked key's value holds (1e30 here: any weight above 0 would show)
    for (const std::size_t n_pos : {std::size_t{2}, std::size_t{31}, std::size_t{33}, std::size_t{100}}) {
        Cache c = make_cache(n_pos, 64, 400 + static_cast<unsigned>(n_pos));
        for (const std::size_t t : {n_pos > 2 ? std::size_t{0} : n_pos - 1, n_pos / 2}) {  // n_pos 2: key 1 only
            mask(c, t);
            std::fill(c.value(t), c.value(t) + c.head_dim, 1e30f);
        }
        expect_attention_close(c, "masked keys, " + describe(n_pos, 64, false));
    }
}

TEST(AttentionTiled, FullyMaskedTiles) {
    // a whole tile of -inf scores: first (the running max stays -inf: nothing to rescale yet), in the
    // middle, and last (the tile adds exactly nothing)
    const std::size_t T = kAttentionTile, n_pos = 3 * T + 5;
    for (const std::size_t masked_tile : {0, 1, 3}) {
        Cache c = make_cache(n_pos, 64, 500 + static_cast<unsigned>(masked_tile), true);
        for (std::size_t t = masked_tile * T; t < std::min(n_pos, (masked_tile + 1) * T); ++t) mask(c, t);
        expect_attention_close(c, "tile " + std::to_string(masked_tile) + " fully masked");
    }
}

TEST(AttentionTiled, AllMaskedIsNaNAsInThePlainKernel) {
    // no key to attend to: softmax of all -inf is 0/0 in the plain kernel (and in torch)
    Cache c = make_cache(40, 8, 600);
    for (std::size_t t = 0; t < c.n_pos; ++t) mask(c, t);
    const AttentionRun r = run_both(c);
    for (std::size_t d = 0; d < c.head_dim; ++d) {
        EXPECT_TRUE(std::isnan(r.plain[d]));
        EXPECT_TRUE(std::isnan(r.fast[d]));
    }
}

TEST(AttentionTiled, OneDominantKey) {
    // key `hot` scores `score` above the rest: in the first tile (later tiles never raise the max), in a
    // later tile (everything summed before is rescaled by ~exp(-score)), and so far above that every
    // other weight underflows to 0 (out = v_hot exactly, as in the plain kernel)
    const std::size_t T = kAttentionTile;
    for (const std::size_t hot : {std::size_t{0}, std::size_t{7}, T, 2 * T + 3, std::size_t{99}})
        for (const float score : {40.0f, 1e3f}) {
            Cache c = make_cache(100, 64, 700 + static_cast<unsigned>(hot));
            double qq = 0;
            for (const float x : c.q) qq += static_cast<double>(x) * x;
            for (std::size_t d = 0; d < c.head_dim; ++d)  // q·k_hot / 8 = score
                c.key(hot)[d] = static_cast<float>(c.q[d] * score * 8.0 / qq);
            const std::string what = "key " + std::to_string(hot) + " at " + std::to_string(score);
            if (score > 100) {
                const AttentionRun r = run_both(c);
                EXPECT_EQ(r.fast, std::vector<float>(c.value(hot), c.value(hot) + c.head_dim)) << what;
                EXPECT_EQ(r.fast, r.plain) << what;
            } else {
                expect_attention_close(c, what);
            }
        }
}

TEST(AttentionTiled, SameBitsForAnyThreadCount) {
    // one head is one thread's work: the count must not change anything
    const Cache c = make_cache(513, 64, 800, true);
    std::vector<float> one(64), two(64);
    attention_tiled(c.q, c.keys(), c.values(), c.n_pos, c.stride, one);
    Threads threads(2);
    attention_tiled(c.q, c.keys(), c.values(), c.n_pos, c.stride, two);
    EXPECT_TRUE(same_bits(one, two));
}

TEST(AttentionTiled, WrongShapesThrow) {
    const std::vector<float> q(4), k(8), v(8);
    std::vector<float> out(4), short_out(3);
    EXPECT_NO_THROW(attention_tiled(q, k, v, 2, 4, out));
    EXPECT_THROW(attention_tiled(q, k, v, 0, 4, out), std::invalid_argument);          // no position
    EXPECT_THROW(attention_tiled(q, k, v, 2, 4, short_out), std::invalid_argument);    // out not head_dim
    EXPECT_THROW(attention_tiled(q, k, v, 3, 4, out), std::invalid_argument);          // keys too short
    EXPECT_THROW(attention_tiled(q, k, std::span<const float>(v).first(7), 2, 4, out), std::invalid_argument);
}

// ---- attention_paged -----------------------------------------------------------------------------

namespace {
// The positions of a contiguous strided cache scattered over a pool of pages in a shuffled order
// (as a paged KV cache holds a sequence after other sequences took and returned pages).
struct PagedCopy {
    std::vector<float> k, v;         // the pool: n_pages · page_size rows of `stride` floats
    std::vector<std::uint32_t> table;  // logical page -> physical page
};

PagedCopy scatter(const Cache& c, std::size_t page_size, unsigned seed) {
    const std::size_t n_logical = (c.n_pos + page_size - 1) / page_size, n_pages = n_logical + 3;  // spare pages
    PagedCopy p{randn(n_pages * page_size * c.stride, seed), randn(n_pages * page_size * c.stride, seed + 1), {}};
    std::vector<std::uint32_t> physical(n_pages);
    for (std::size_t i = 0; i < n_pages; ++i) physical[i] = static_cast<std::uint32_t>(i);
    std::shuffle(physical.begin(), physical.end(), std::mt19937(seed));
    p.table.assign(physical.begin(), physical.begin() + static_cast<std::ptrdiff_t>(n_logical));
    for (std::size_t t = 0; t < c.n_pos; ++t) {  // the head's slice of row t, at the same offset in the row
        const std::size_t at = c.offset + (p.table[t / page_size] * page_size + t % page_size) * c.stride;
        std::copy_n(c.k.data() + c.offset + t * c.stride, c.head_dim, p.k.data() + at);
        std::copy_n(c.v.data() + c.offset + t * c.stride, c.head_dim, p.v.data() + at);
    }
    return p;
}
}  // namespace

TEST(AttentionPaged, SameBitsAsTiledForEveryPageSize) {
    // page sizes below, equal to, above and not multiples of the 32-position tile: tiles within one
    // page and tiles straddling two or more (row groups of the score dots split at page edges);
    // either way the bits of attention_tiled
    for (const std::size_t n_pos : {1, 16, 31, 32, 33, 100, 257})
        for (const std::size_t page_size : {1, 7, 16, 32, 48, 64, 512})
            for (const bool strided : {false, true}) {
                const Cache c = make_cache(n_pos, 40, static_cast<unsigned>(900 + n_pos + page_size), strided);
                const PagedCopy p = scatter(c, page_size, static_cast<unsigned>(n_pos * 7 + page_size));
                std::vector<float> tiled(c.head_dim), paged(c.head_dim);
                attention_tiled(c.q, c.keys(), c.values(), c.n_pos, c.stride, tiled);
                attention_paged(c.q, std::span<const float>(p.k).subspan(c.offset),
                                std::span<const float>(p.v).subspan(c.offset), p.table, page_size, c.n_pos, c.stride,
                                paged);
                EXPECT_TRUE(same_bits(tiled, paged)) << "n_pos " << n_pos << ", page_size " << page_size
                                                     << (strided ? ", strided" : "");
            }
}

TEST(AttentionPaged, ReadsOnlyThePagesOfItsTable) {
    // a wrong page mapping (the identity instead of the shuffled table) must change the result
    const Cache c = make_cache(100, 16, 950);
    const PagedCopy p = scatter(c, 16, 951);
    std::vector<std::uint32_t> identity(p.table.size());
    for (std::size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<std::uint32_t>(i);
    ASSERT_NE(identity, p.table);
    std::vector<float> right(16), wrong(16), tiled(16);
    attention_tiled(c.q, c.keys(), c.values(), c.n_pos, c.stride, tiled);
    attention_paged(c.q, p.k, p.v, p.table, 16, c.n_pos, c.stride, right);
    attention_paged(c.q, p.k, p.v, identity, 16, c.n_pos, c.stride, wrong);
    EXPECT_TRUE(same_bits(tiled, right));
    EXPECT_FALSE(same_bits(tiled, wrong));
}

TEST(AttentionPaged, WrongShapesThrow) {
    const std::vector<float> q(4), k(4 * 8), v(4 * 8);  // a pool of 4 pages of 2 positions, stride 4
    const std::vector<std::uint32_t> table = {3, 1}, short_table = {3}, outside = {4, 0};
    std::vector<float> out(4), short_out(3);
    EXPECT_NO_THROW(attention_paged(q, k, v, table, 2, 4, 4, out));
    EXPECT_THROW(attention_paged(q, k, v, table, 2, 0, 4, out), std::invalid_argument);        // no position
    EXPECT_THROW(attention_paged(q, k, v, short_table, 2, 3, 4, out), std::invalid_argument);  // table too short
    EXPECT_THROW(attention_paged(q, k, v, outside, 2, 4, 4, out), std::invalid_argument);      // page 4 of 4
    EXPECT_THROW(attention_paged(q, k, v, table, 0, 4, 4, out), std::invalid_argument);        // page size 0
    EXPECT_THROW(attention_paged(q, k, v, table, 2, 4, 4, short_out), std::invalid_argument);
}

// ---- Sliding windows: a start position, and a ring buffer --------------------------------------------

namespace {
// positions 0 .. n_pos - 1 of a contiguous cache written into a ring of `ring` rows in position order
// (the later overwrite the earlier, as a windowed layer's KV cache does)
Cache ring_copy(const Cache& c, std::size_t ring) {
    Cache r{c.n_pos, c.head_dim, c.stride, c.offset, c.q, std::vector<float>(c.offset + ring * c.stride),
            std::vector<float>(c.offset + ring * c.stride)};
    for (std::size_t t = 0; t < c.n_pos; ++t) {
        std::copy_n(c.k.data() + c.offset + t * c.stride, c.head_dim, r.key(t % ring));
        std::copy_n(c.v.data() + c.offset + t * c.stride, c.head_dim, r.value(t % ring));
    }
    return r;
}
}  // namespace

TEST(AttentionWindow, AStartIsTheSameAsTheCacheFromThere) {
    // positions first .. n_pos - 1 read in place = the kernel on the cache cut at `first`, bit for
    // bit, plain and tiled (the tiles start at `first` in both)
    for (const std::size_t n_pos : {5, 40, 100})
        for (const std::size_t first : {1, 4, 31, 32, 33}) {
            if (first >= n_pos) continue;
            const Cache c = make_cache(n_pos, 16, static_cast<unsigned>(1200 + n_pos + first), true);
            const std::size_t n = n_pos - first;
            std::vector<float> s1(n), s2(n), a(16), b(16), ta(16), tb(16);
            attention(c.q, c.keys(), c.values(), n_pos, c.stride, s1, a, KvPositions{first, 0});
            attention(c.q, c.keys().subspan(first * c.stride), c.values().subspan(first * c.stride), n, c.stride, s2, b);
            attention_tiled(c.q, c.keys(), c.values(), n_pos, c.stride, ta, KvPositions{first, 0});
            attention_tiled(c.q, c.keys().subspan(first * c.stride), c.values().subspan(first * c.stride), n, c.stride, tb);
            EXPECT_TRUE(same_bits(a, b) && same_bits(s1, s2)) << n_pos << " from " << first;
            EXPECT_TRUE(same_bits(ta, tb)) << n_pos << " from " << first;
            for (std::size_t d = 0; d < 16; ++d) EXPECT_NEAR(a[d], ta[d], 1e-5);
        }
}

TEST(AttentionWindow, ARingGivesTheBitsOfTheContiguousCacheAndOfPages) {
    // a window of W read from a ring of W + extra rows that wrapped several times: the same bits as
    // from the contiguous cache, and as attention_paged over scattered pages with the same start
    for (const std::size_t window : {1, 8, 33})
        for (const std::size_t extra : {0, 7}) {
            const std::size_t n_pos = 150, first = n_pos - window, ring = window + extra;
            const Cache c = make_cache(n_pos, 24, static_cast<unsigned>(1300 + window + extra), true);
            const Cache r = ring_copy(c, ring);
            const PagedCopy p = scatter(c, 5, static_cast<unsigned>(window * 3 + extra));
            std::vector<float> contiguous(24), in_ring(24), paged(24), plain_ring(24), scores(window);
            attention_tiled(c.q, c.keys(), c.values(), n_pos, c.stride, contiguous, KvPositions{first, 0});
            attention_tiled(r.q, r.keys(), r.values(), n_pos, r.stride, in_ring, KvPositions{first, ring});
            attention_paged(c.q, std::span<const float>(p.k).subspan(c.offset), std::span<const float>(p.v).subspan(c.offset),
                            p.table, 5, n_pos, c.stride, paged, first);
            attention(r.q, r.keys(), r.values(), n_pos, r.stride, scores, plain_ring, KvPositions{first, ring});
            EXPECT_TRUE(same_bits(contiguous, in_ring)) << "window " << window << " ring " << ring;
            EXPECT_TRUE(same_bits(contiguous, paged)) << "window " << window;
            for (std::size_t d = 0; d < 24; ++d) EXPECT_NEAR(plain_ring[d], contiguous[d], 1e-5);
        }
}

TEST(AttentionWindow, PagesBeforeTheWindowAreNeverRead) {
    // a windowed paged cache gives back the pages before the window: their table entries may point
    // anywhere (kNoPage) and are not read
    const Cache c = make_cache(64, 8, 1400);
    PagedCopy p = scatter(c, 4, 1401);
    std::vector<float> before(8), after(8);
    attention_paged(c.q, p.k, p.v, p.table, 4, 64, c.stride, before, 40);
    for (std::size_t i = 0; i < 40 / 4; ++i) p.table[i] = UINT32_MAX;  // pages 0..9 given back
    attention_paged(c.q, p.k, p.v, p.table, 4, 64, c.stride, after, 40);
    EXPECT_TRUE(same_bits(before, after));
}

TEST(AttentionWindow, WrongWindowsThrow) {
    const std::vector<float> q(4), k(4 * 8), v(4 * 8);
    std::vector<float> out(4), scores(8);
    EXPECT_THROW(attention(q, k, v, 8, 4, scores, out, KvPositions{8, 0}), std::invalid_argument);   // first == n_pos
    EXPECT_THROW(attention_tiled(q, k, v, 8, 4, out, KvPositions{2, 4}), std::invalid_argument);     // 6 positions, ring of 4
    EXPECT_THROW(attention_tiled(q, k, v, 9, 4, out, KvPositions{4, 0}), std::invalid_argument);     // rows past the keys
    EXPECT_NO_THROW(attention_tiled(q, k, v, 20, 4, out, KvPositions{16, 8}));                      // a ring of 8 rows
    EXPECT_THROW(attention(q, k, v, 8, 4, std::span<float>(scores).first(3), out, KvPositions{4, 0}), std::invalid_argument);
}

TEST(KernelThreads, DefaultOneAndClamped) {
    EXPECT_EQ(kernel_threads(), 1);
    {
        Threads threads(4);
        EXPECT_EQ(kernel_threads(), 4);
    }
    set_kernel_threads(0);  // nonsense counts mean one thread
    EXPECT_EQ(kernel_threads(), 1);
    set_kernel_threads(-3);
    EXPECT_EQ(kernel_threads(), 1);
}

// The team hands a job over by polling when loops come back to back and by a condition variable
// after a pause, and the caller runs the shares no worker has started (kernels/threads.cpp). Every
// way, each iteration runs exactly once, the shares are the ones the thread count fixes, and
// parallel_for returns only when all of them are done. The loop count changes from job to job, so
// a thread that ran a share with an older job's count would be caught; a slow share now and then
// makes the caller sleep while it waits.
TEST(KernelThreads, EveryIterationOnceWhetherTheTeamPollsOrSleeps) {
    for (const int n : {2, 3}) {
        Threads threads(n);
        std::vector<std::atomic<int>> runs(17);
        std::vector<int> want(runs.size(), 0);
        std::vector<std::size_t> begins;
        std::mutex m;
        for (int loop = 0; loop < 400; ++loop) {
            if (loop % 50 == 49) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // the team sleeps
            const std::size_t count = 13 + static_cast<std::size_t>(loop % 5);
            const bool slow = loop % 50 == 25;
            begins.clear();
            parallel_for(count, true, [&](std::size_t b, std::size_t e) {
                if (slow && b != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                for (std::size_t i = b; i < e; ++i) runs[i].fetch_add(1);
                std::lock_guard<std::mutex> lock(m);
                begins.push_back(b);
            });
            for (std::size_t i = 0; i < count; ++i) ++want[i];
            for (std::size_t i = 0; i < runs.size(); ++i)
                ASSERT_EQ(runs[i].load(), want[i]) << "iteration " << i << ", loop " << loop << ", " << n << " threads";
            std::sort(begins.begin(), begins.end());
            std::vector<std::size_t> shares;
            for (int t = 0; t < n; ++t) shares.push_back(count * static_cast<std::size_t>(t) / static_cast<std::size_t>(n));
            ASSERT_EQ(begins, shares) << "loop " << loop << ", " << n << " threads";
        }
    }
}

}  // namespace lmlab
