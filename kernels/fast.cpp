// Fast paths beside the plain kernels (see kernels.h): float partial sums written so that the
// compiler vectorises them, tiled attention with an online softmax, threads over rows (threads.h).
// Each is checked against its plain kernel (kernels/fast_test.cpp) and on the plain kernel's golden
// fixtures (the kernel.*.fast / .tiled stages and kernel.matmul_xwt).
//
// One reduction everywhere: every dot product here (a matvec row, a row of matmul_xwt, an
// attention score) is dot_rows() below or its two-token twin dot_rows_2(), so the same inputs give
// the same bits in every kernel, in every row position of a block and for any T and thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/check.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

// Multiply-adds are written out (mul_add below), never left to the compiler: with FMA in the target
// (-march=native) GCC fused acc += w·x in some loops and not in their twins (dot_rows<1> kept a
// separate multiply and add where dot_rows<4> fused, so a row's bits depended on T in the fast
// preset). The pragma stops that; mul_add then fuses everywhere or nowhere.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace lmlab {

namespace {

// Element j of a dot product goes to partial sum j % kLanes: kLanes independent float sums (two
// SSE vectors of 4 at the default -O2, one AVX vector with -mavx2), so the adds do not wait on one
// another and the loop vectorises without -ffast-math (the order of every add is written out).
// The lanes are combined pairwise at the end. Error: each lane sums n/kLanes terms, so the bound is
// γ(n/kLanes + log2(kLanes) + 1)·Σ|a_j b_j| (γ(k) = k·u/(1 - k·u), u = 2^-24), against γ(n + 1)
// for a single float accumulator: 8x shorter chains (optimised BLAS and PyTorch's vectorised
// reductions work the same way; the reference BLAS this PyTorch calls sums in one accumulator).
constexpr std::size_t kLanes = 8;
// Rows per block: 4 rows share each load of x (and 4 × 2 vector accumulators fit in the 16 SSE
// registers next to x), so the loop is bound by the loads of W, not by those of x.
constexpr std::size_t kRows = 4;

float combine(const float (&a)[kLanes]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// acc + w·x: one rounding where the target has FMA (the fast preset), two elsewhere (the default
// preset's generic x86-64). Fused, a prompt on the fast preset runs 1.5x faster (tiny LLaMA, 128
// tokens: 6.3k -> 9.3k tokens/s, BM_prompt, 2026-12-07); the two presets then give different bits,
// each the same bits for any T, tile and thread count.
inline float mul_add(float w, float x, float acc) {
#if defined(__FMA__)
    return std::fma(w, x, acc);
#else
    return acc + w * x;
#endif
}

// acc[k] += w[k] · x[k] for the kLanes lanes: two 4-float vector multiplies and adds
inline void add_products(float (&acc)[kLanes], const float* __restrict w, const float* __restrict x) {
    for (std::size_t k = 0; k < kLanes; ++k) acc[k] = mul_add(w[k], x[k], acc[k]);
}

// acc[r] += the products of row r (w + r·stride) with x over kLanes elements, for r < R. The rows
// are written out one by one, not as a loop over r: GCC keeps an array indexed by a loop variable
// in memory, and the accumulators must stay in registers.
template <std::size_t R>
inline void add_rows(float (&acc)[R][kLanes], const float* w, std::size_t stride, const float* x) {
    add_products(acc[0], w, x);
    if constexpr (R > 1) add_products(acc[1], w + stride, x);
    if constexpr (R > 2) add_products(acc[2], w + 2 * stride, x);
    if constexpr (R > 3) add_products(acc[3], w + 3 * stride, x);
}

// The last n - j (< kLanes) elements of R rows (stride apart) into zeroed steps: lane k gets element
// j + k, the rest stay +0 (+0 products change no sum)
template <std::size_t R>
inline void pad_tail(const float* w, std::size_t stride, std::size_t j, std::size_t n, float (&t)[R][kLanes]) {
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t k = 0; j + k < n; ++k) t[r][k] = w[r * stride + j + k];
}
inline void pad_tail(const float* x, std::size_t j, std::size_t n, float (&t)[kLanes]) {
    for (std::size_t k = 0; j + k < n; ++k) t[k] = x[j + k];
}

// y[r] = Σ_j w[r·stride + j] · x[j] for r < R, each row with the same kLanes-lane reduction whatever
// R is (rows never mix: the arithmetic of row r does not depend on the others).
template <std::size_t R>
    requires(R >= 1 && R <= kRows)
void dot_rows(const float* w, std::size_t stride, const float* x, std::size_t n, float* y) {
    float acc[R][kLanes] = {};
    std::size_t j = 0;
    for (; j + kLanes <= n; j += kLanes) add_rows(acc, w + j, stride, x + j);
    if (j < n) {  // the last n % kLanes elements, zero-padded to a full step (pad_tail)
        float wt[R][kLanes] = {}, xt[kLanes] = {};
        pad_tail(w, stride, j, n, wt);
        pad_tail(x, j, n, xt);
        add_rows(acc, wt[0], kLanes, xt);
    }
    for (std::size_t r = 0; r < R; ++r) y[r] = combine(acc[r]);
}

// Two tokens at once (matmul_xwt with T >= 2): each load of W feeds both tokens, and 2·R chains of
// adds run side by side. Row r of each token gets exactly dot_rows's arithmetic.
template <std::size_t R>
void dot_rows_2(const float* w, std::size_t stride, const float* x0, const float* x1, std::size_t n, float* y0,
                float* y1) {
    float a0[R][kLanes] = {}, a1[R][kLanes] = {};
    std::size_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
        add_rows(a0, w + j, stride, x0 + j);
        add_rows(a1, w + j, stride, x1 + j);
    }
    if (j < n) {  // as dot_rows: the last n % kLanes elements, zero-padded
        float wt[R][kLanes] = {}, xt0[kLanes] = {}, xt1[kLanes] = {};
        pad_tail(w, stride, j, n, wt);
        pad_tail(x0, j, n, xt0);
        pad_tail(x1, j, n, xt1);
        add_rows(a0, wt[0], kLanes, xt0);
        add_rows(a1, wt[0], kLanes, xt1);
    }
    for (std::size_t r = 0; r < R; ++r) {
        y0[r] = combine(a0[r]);
        y1[r] = combine(a1[r]);
    }
}

// rows < kRows at the end of a matrix: the same per-row arithmetic, fewer rows at a time
void dot_block(const float* w, std::size_t stride, const float* x, std::size_t n, float* y, std::size_t rows) {
    switch (rows) {
        case 4: dot_rows<4>(w, stride, x, n, y); break;
        case 3: dot_rows<3>(w, stride, x, n, y); break;
        case 2: dot_rows<2>(w, stride, x, n, y); break;
        default: dot_rows<1>(w, stride, x, n, y); break;
    }
}

// Σ p[0..n) in the same lane order as dot_rows (n <= kAttentionTile)
float sum_lanes(const float* p, std::size_t n) {
    float acc[kLanes] = {};
    for (std::size_t j = 0; j < n; ++j) acc[j % kLanes] += p[j];
    return combine(acc);
}

// acc[d] += p · v[d] over kLanes columns: two 4-float vector multiplies and adds (written like
// add_products: a loop of 8 is what GCC both vectorises and unrolls, keeping acc in registers)
inline void add_scaled(float (&acc)[kLanes], float p, const float* __restrict v) {
    for (std::size_t d = 0; d < kLanes; ++d) acc[d] = mul_add(p, v[d], acc[d]);
}

// out[d] = out[d]·rescale + Σ_{t<n} p[t]·v[t][d] for B·kLanes columns d (B = 1 or 2: up to 4 SSE
// vectors of accumulators in registers); v[t] points at value row t (rows of a paged cache may sit
// in different pages). The tile's sum is formed on its own (≤ 32 terms) before it meets the running
// total: two-level summation, more accurate than one long float sum.
template <std::size_t B>
void add_tile_values(const float* p, std::size_t n, const float* const* v, std::size_t d, float rescale, float* out) {
    float acc[B][kLanes] = {};
    for (std::size_t t = 0; t < n; ++t) {
        add_scaled(acc[0], p[t], v[t] + d);
        if constexpr (B > 1) add_scaled(acc[1], p[t], v[t] + d + kLanes);
    }
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t k = 0; k < kLanes; ++k) out[d + b * kLanes + k] = out[d + b * kLanes + k] * rescale + acc[b][k];
}
}  // namespace

// Fewer than kRows tokens (decode: T = 1) read each weight once, and from L3 or memory: the rest of
// the step's matrices have pushed it out of L1 and L2 since the last token. Then the rows are read
// one after another: the hardware prefetcher keeps up with one sequential stream and not with kRows
// rows read side by side, 1 KB apart. Measured 2026-12-07 on this machine class (AMD EPYC, generic
// x86-64 build): a 262144 × 256 matrix out of the caches, 9 GB/s in blocks of 4 rows (or of 2),
// 26 GB/s one row at a time (what one core streams, BM_stream); the tiny LLaMA's decode went from
// about 400 to about 1,000 tokens/s. Blocks stay faster where a matrix stays cached (in L2, 256 × 256:
// 70 against 45 GB/s), so a matrix of at most kCachedBytes (L1's size) keeps them, and so do T >=
// kRows tokens, which read every weight row several times. Either order gives every row the same
// bits: a row's arithmetic never depends on the rows beside it.
namespace {
// Two tokens at once (dot_rows_2) pays where a kLanes-float accumulator is one register: with AVX
// (16 registers of 8 floats) 4 rows × 2 tokens are 8 accumulators, and a prompt of 128 on the tiny
// LLaMA went from 8.3k to 9.3k tokens/s (fast preset, BM_prompt, 2026-12-07). With SSE2's registers
// of 4 floats that tile needs all 16 registers for its accumulators and spills (5.8k -> 4.9k), so the
// default build takes 2 rows × 2 tokens (5.8k -> 5.9k: the same speed, and the same code as above).
#if defined(__AVX__)
constexpr std::size_t kTile2Rows = 4;
#else
constexpr std::size_t kTile2Rows = 2;
#endif
constexpr std::size_t kCachedBytes = std::size_t{32} << 10;
bool stream_rows(std::size_t T, std::size_t out, std::size_t in) {
    return T < kRows && out * in * sizeof(float) > kCachedBytes;
}
}  // namespace

void matvec_fast(std::span<const float> W, std::span<const float> x, std::span<float> y) {
    const std::size_t in = x.size(), out = y.size();
    require(W.size() == out * in, "matvec_fast", "W must have y.size() * x.size() elements ([out, in])");
    matmul_xwt(x, W, y, 1, in, out);
}

void matmul_xwt(std::span<const float> X, std::span<const float> W, std::span<float> Y, std::size_t T, std::size_t in,
                std::size_t out) {
    require(X.size() == T * in && W.size() == out * in && Y.size() == T * out, "matmul_xwt",
            "X must be [T, in], W [out, in] and Y [T, out]");
    // Tiles of kRowTile rows of W × tok_tile tokens (≈ 64 KB of X, in L2), the unit of work of a
    // thread: within a tile, kRows rows of W (kRows·in floats, in L1) meet every token of the tile
    // before the next kRows rows (one row at a time when streaming, above), two tokens at a time
    // (kTile2Rows rows × 2 tokens, the tile's last odd token alone). Y[t, i..i+kRows) is dot_rows(W
    // rows i.., X row t) or its two-token twin, the same arithmetic for every row, so row t of Y is
    // the same bits whatever T, the tiles, the order and the thread count.
    constexpr std::size_t kRowTile = 64;
    const std::size_t tok_tile = std::clamp<std::size_t>(in ? 16384 / in : T, 1, 64);
    const std::size_t row_tiles = (out + kRowTile - 1) / kRowTile, tok_tiles = (T + tok_tile - 1) / tok_tile;
    const std::size_t step = stream_rows(T, out, in) ? 1 : kRows;
    parallel_for(row_tiles * tok_tiles, T * out * in >= kParallelMin, [&](std::size_t j0, std::size_t j1) {
        for (std::size_t j = j0; j < j1; ++j) {  // tile j: row tile j / tok_tiles, token tile j % tok_tiles
            const std::size_t rt = j / tok_tiles, tt = j % tok_tiles;
            const std::size_t i0 = rt * kRowTile, i1 = std::min(out, i0 + kRowTile);
            const std::size_t t0 = tt * tok_tile, t1 = std::min(T, t0 + tok_tile);
            for (std::size_t i = i0; i < i1;) {
                if (step == kRows && i + kTile2Rows <= i1 && t1 - t0 >= 2) {  // kTile2Rows rows × 2 tokens
                    std::size_t t = t0;
                    for (; t + 2 <= t1; t += 2)
                        dot_rows_2<kTile2Rows>(W.data() + i * in, in, X.data() + t * in, X.data() + (t + 1) * in, in,
                                               Y.data() + t * out + i, Y.data() + (t + 1) * out + i);
                    if (t < t1) dot_block(W.data() + i * in, in, X.data() + t * in, in, Y.data() + t * out + i, kTile2Rows);
                    i += kTile2Rows;
                    continue;
                }
                const std::size_t n = std::min(step, i1 - i);
                for (std::size_t t = t0; t < t1; ++t)
                    dot_block(W.data() + i * in, in, X.data() + t * in, in, Y.data() + t * out + i, n);
                i += n;
            }
        }
    });
}

namespace {
// The running state of one query's online softmax (see attention_tiled in kernels.h).
// Invariant after each tile: out = Σ_{t so far} exp(s_t - m)·v_t and l = Σ exp(s_t - m), m the
// running max. Dividing by l at the end gives softmax(s)·V without ever holding all the scores.
struct OnlineSoftmax {
    float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
};

// One tile of n <= kAttentionTile positions: key row t at k[t], value row t at v[t] (row pointers:
// in a paged cache the rows of one tile may sit in two pages). The only arithmetic of the tiled
// kernels: attention_tiled and attention_paged both call it tile by tile on the same numbers in the
// same order, which is why they give the same bits.
void attend_tile(const float* q, std::size_t head_dim, float scale, const float* const* k, const float* const* v,
                 std::size_t n, OnlineSoftmax& st, float* out) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    float p[kAttentionTile];  // this tile's scores, then its weights exp(s - m): the only buffer
    // scores of up to kRows evenly spaced keys at a time (q is loaded once for them): matvec_fast's
    // reduction, whose bits for a row do not depend on which rows share its group
    for (std::size_t t = 0; t < n;) {
        const std::ptrdiff_t step = t + 1 < n ? k[t + 1] - k[t] : 0;
        std::size_t r = 1;
        while (step > 0 && r < kRows && t + r < n && k[t + r] == k[t] + static_cast<std::ptrdiff_t>(r) * step) ++r;
        dot_block(k[t], static_cast<std::size_t>(std::max<std::ptrdiff_t>(step, 0)), q, head_dim, p + t, r);
        t += r;
    }
    float tile_max = kNegInf;
    for (std::size_t t = 0; t < n; ++t) {
        p[t] *= scale;
        tile_max = std::max(tile_max, p[t]);
    }
    const float m_new = std::max(st.m, tile_max);
    if (m_new == kNegInf) return;  // every score so far is -inf (masked): nothing to add yet
    // m only grows; when this tile raises it, what was summed so far was weighted by exp(s - m_old)
    // and must now be weighted by exp(s - m_new): multiply by exp(m_old - m_new) <= 1 (0 on the
    // first contributing tile, where m_old = -inf and out, l are still 0; exactly 1 if m did not move)
    const float rescale = std::exp(st.m - m_new);
    for (std::size_t t = 0; t < n; ++t) p[t] = std::exp(p[t] - m_new);  // exp(-inf) = 0: masked keys vanish
    st.l = st.l * rescale + sum_lanes(p, n);
    // out = out·rescale + Σ_t p[t]·v_t: 16 columns at a time, then 8, then one by one
    std::size_t d = 0;
    for (; d + 2 * kLanes <= head_dim; d += 2 * kLanes) add_tile_values<2>(p, n, v, d, rescale, out);
    for (; d + kLanes <= head_dim; d += kLanes) add_tile_values<1>(p, n, v, d, rescale, out);
    for (; d < head_dim; ++d) {
        float acc = 0.0f;
        for (std::size_t t = 0; t < n; ++t) acc += p[t] * v[t][d];
        out[d] = out[d] * rescale + acc;
    }
    st.m = m_new;
}

float attention_scale(std::size_t head_dim) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))); }
}  // namespace

void attention_tiled(std::span<const float> q, std::span<const float> keys, std::span<const float> values,
                     std::size_t n_pos, std::size_t stride, std::span<float> out, KvPositions at) {
    const std::size_t head_dim = q.size();
    const std::size_t ring = at.ring ? at.ring : n_pos;  // no ring: position t in row t
    require(n_pos >= 1 && at.first < n_pos && n_pos - at.first <= ring && out.size() == head_dim, "attention_tiled",
            "need first < n_pos, a ring that holds every position read, and out of head_dim elements");
    const std::size_t rows = std::min(ring, n_pos);
    require(keys.size() >= (rows - 1) * stride + head_dim && values.size() >= (rows - 1) * stride + head_dim,
            "attention_tiled", "keys/values too short for their rows of the given stride");
    OnlineSoftmax st;
    std::fill(out.begin(), out.end(), 0.0f);
    const float* k[kAttentionTile];  // the tile's rows
    const float* v[kAttentionTile];
    for (std::size_t t0 = at.first; t0 < n_pos; t0 += kAttentionTile) {  // tiles from the window's first position
        const std::size_t n = std::min(kAttentionTile, n_pos - t0);
        for (std::size_t t = 0; t < n; ++t) {
            const std::size_t row = (t0 + t) % ring;  // a ring buffer's row of position t0 + t (no ring: that position)
            k[t] = keys.data() + row * stride;
            v[t] = values.data() + row * stride;
        }
        attend_tile(q.data(), head_dim, attention_scale(head_dim), k, v, n, st, out.data());
    }
    // l >= 1 (the max term is exp(0)); all scores -inf leaves l = 0 and NaN, as softmax gives
    for (std::size_t d = 0; d < head_dim; ++d) out[d] /= st.l;
}

void attention_paged(std::span<const float> q, std::span<const float> keys, std::span<const float> values,
                     std::span<const std::uint32_t> page_table, std::size_t page_size, std::size_t n_pos,
                     std::size_t stride, std::span<float> out, std::size_t first) {
    const std::size_t head_dim = q.size();
    require(n_pos >= 1 && first < n_pos && out.size() == head_dim, "attention_paged",
            "need first < n_pos and out of head_dim elements");
    require(page_size >= 1 && page_table.size() * page_size >= n_pos, "attention_paged",
            "the page table must cover n_pos positions");
    for (std::size_t i = first / page_size; i * page_size < n_pos; ++i)  // every page read lies inside the pool
        require(keys.size() >= ((std::size_t{page_table[i]} + 1) * page_size - 1) * stride + head_dim &&
                    values.size() >= ((std::size_t{page_table[i]} + 1) * page_size - 1) * stride + head_dim,
                "attention_paged", "a page of the table lies outside keys/values");
    OnlineSoftmax st;
    std::fill(out.begin(), out.end(), 0.0f);
    const float* k[kAttentionTile];  // the tile's rows, wherever their pages are
    const float* v[kAttentionTile];
    for (std::size_t t0 = first; t0 < n_pos; t0 += kAttentionTile) {  // the same tiles as attention_tiled's
        const std::size_t n = std::min(kAttentionTile, n_pos - t0);
        for (std::size_t t = 0; t < n; ++t) {
            // position t0 + t lives in page page_table[(t0 + t) / page_size], row (t0 + t) % page_size of it
            const std::size_t pos = t0 + t, at = (page_table[pos / page_size] * page_size + pos % page_size) * stride;
            k[t] = keys.data() + at;
            v[t] = values.data() + at;
        }
        attend_tile(q.data(), head_dim, attention_scale(head_dim), k, v, n, st, out.data());
    }
    for (std::size_t d = 0; d < head_dim; ++d) out[d] /= st.l;
}

}  // namespace lmlab
