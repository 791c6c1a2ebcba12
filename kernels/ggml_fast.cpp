// Fast paths for ggml's dot products (ggml_quant.h, "Fast paths"): the same integer sums and the same
// float operations in the same order as vec_dot (kernels/ggml_quant.cpp, ggml's generic C), so the
// same bits, but the integer work written as plain widening loops that the compiler vectorises.
//
// Why it can be both fast and bit-exact: the integer part of every ggml dot product is exact (the
// bounds are given below), so any order of the integer adds gives the same int; only the float
// operations carry rounding, and they stay one per block (Q8_0) or eight lanes per super-block
// (Q4_K, Q6_K), in ggml's order. The speed comes from the integer part, which is 32 or 256 products
// per float operation: int8·int8 products fit an int16, so a vector of 16-bit lanes multiplies 8, 16
// or 32 of them per instruction (pmullw / pmaddwd with SSE2, their 256- and 512-bit forms with
// -march=native; see docs/performance.md for the instruction mix).
//
// Checked: kernels/ggml_quant_test.cpp runs vec_dot_fast against vec_dot on random blocks (every bit),
// fp16_to_fp32_fast against fp16_to_fp32 on all 65536 halves, and matmul_fast against matvec_fast.
#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include "kernels/check.h"
#include "kernels/ggml_quant.h"
#include "kernels/threads.h"

// No fused multiply-adds (as ggml_quant.cpp): a fused a·b + c rounds once where ggml's C rounds twice.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace lmlab::ggml {

namespace {

constexpr std::size_t QK = 32, QK_K = 256;

// Little-endian fields, assembled from bytes as ggml_quant.cpp reads them.
std::uint16_t load_u16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
float load_f32(const std::uint8_t* p) {
    const std::uint32_t v = std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
    return std::bit_cast<float>(v);
}
float load_f16(const std::uint8_t* p) { return detail::fp16_to_fp32_fast(load_u16(p)); }
std::int16_t load_i16(const std::uint8_t* p) { return static_cast<std::int16_t>(load_u16(p)); }
std::uint32_t load_u32(const std::uint8_t* p) {
    return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
}
const std::int8_t* as_i8(const std::uint8_t* p) { return reinterpret_cast<const std::int8_t*>(p); }

// ggml_vec_dot_q8_0_q8_0: per block of 32, sumi = Σ w·x (|sumi| <= 32·128·128 < 2^20), then
// sumf += (float)sumi·(d_w·d_x) in block order. In chunks of up to 64 blocks, each step a loop over
// the chunk: the integer sums, the scales' conversion from F16 (perf showed the scalar conversion
// per block taking more time than the 32 products), their products, and then the one chain of float
// adds in block order (the only part that must stay sequential).
float dot_q8_0(const std::uint8_t* w, const std::uint8_t* x, std::size_t nb) {
    constexpr std::size_t kChunk = 64;
    float sumf = 0.0f;
    for (std::size_t i0 = 0; i0 < nb; i0 += kChunk) {
        const std::size_t n = std::min(kChunk, nb - i0);
        int sumi[kChunk];
        std::uint16_t hw[kChunk], hx[kChunk];
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint8_t* wb = w + 34 * (i0 + i);
            const std::uint8_t* xb = x + 34 * (i0 + i);
            const std::int8_t* __restrict a = as_i8(wb + 2);
            const std::int8_t* __restrict b = as_i8(xb + 2);
            // widened to int16 first, then int16·int16 summed into int: GCC recognises the second
            // loop as a dot product and emits pmaddwd (SSE2: 8 products, 4 pairwise sums in one
            // instruction; vpdpwssd with AVX-512 VNNI). Multiplying the int8s directly gives
            // pmullw plus separate widening adds instead (docs/performance.md).
            std::int16_t a16[QK], b16[QK];
            for (std::size_t j = 0; j < QK; ++j) {
                a16[j] = a[j];
                b16[j] = b[j];
            }
            int s = 0;
            for (std::size_t j = 0; j < QK; ++j) s += a16[j] * b16[j];
            sumi[i] = s;
            hw[i] = load_u16(wb);
            hx[i] = load_u16(xb);
        }
        float scale[kChunk];
        for (std::size_t i = 0; i < n; ++i) scale[i] = detail::fp16_to_fp32_fast(hw[i]) * detail::fp16_to_fp32_fast(hx[i]);
        for (std::size_t i = 0; i < n; ++i) sumf += static_cast<float>(sumi[i]) * scale[i];
    }
    return sumf;
}

// Block i of a weight row as int16, for the types whose activations are Q8_0 (ggml_quant.cpp's
// dequantize_block without the scale): Q8_0 [d f16 | 32 int8], Q5_0 [d f16 | qh 4 | qs 16] (a nibble,
// its fifth bit from qh, minus 16), Q4_0 [d f16 | qs 16] (a nibble minus 8). Each block starts with
// its scale d.
template <Type T>
constexpr std::size_t kBlockBytes = T == Type::Q8_0 ? 34 : T == Type::Q5_0 ? 22 : 18;
constexpr auto kBit = [] {  // the fifth bits by masks from a table, not by shifts of qh: a shift by
    std::array<std::uint32_t, 32> b{};  // each lane's own count has no SSE2 instruction, an AND
    for (std::size_t j = 0; j < 32; ++j) b[j] = 1u << j;  // and a compare per lane do
    return b;
}();
// Q5_0 / Q5_1's 32 weights: element j is a nibble of qs (low nibbles first) with its fifth bit, bit j
// of the uint32 at qh, minus offset (16 for Q5_0, 0 for Q5_1). The same integers written two ways,
// because GCC 12 vectorises each well for one target only (16384 × 256 Q5_0, a standalone copy of
// dot_q8_rows<Q5_0, 4>, 2026-12-07, G multiply-adds/s; BM_ggml_matvec on the whole matvec_fast:
// 1.8 -> 6.5 with -march=native, the generic build unchanged at 4.2):
// - 16 steps, a low and a high weight each: generic x86-64 4.3, -march=native 1.7 (its 16-byte
//   stores of a16 are read back as 32-byte vectors by the dot, which stalls the loads);
// - 32 steps, one weight each (the nibble chosen by j < 16): generic 1.2, -march=native 6.3 (one
//   32-lane loop, masks for the choice).
inline void unpack_q5(const std::uint8_t* qh_bytes, const std::uint8_t* qs, int offset, std::int16_t* a16) {
    const std::uint32_t qh = load_u32(qh_bytes);
#if defined(__AVX2__)
    for (std::size_t j = 0; j < 32; ++j) {
        const int nibble = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
        a16[j] = static_cast<std::int16_t>((nibble | ((qh & kBit[j]) != 0) << 4) - offset);
    }
#else
    for (std::size_t j = 0; j < 16; ++j) {
        const int lo = (qh & kBit[j]) != 0, hi = (qh & kBit[j + 16]) != 0;
        a16[j] = static_cast<std::int16_t>(((qs[j] & 0x0F) | lo << 4) - offset);
        a16[j + 16] = static_cast<std::int16_t>(((qs[j] >> 4) | hi << 4) - offset);
    }
#endif
}
template <Type T>
inline void unpack_block(const std::uint8_t* wb, std::int16_t* a16) {
    if constexpr (T == Type::Q8_0) {
        for (std::size_t j = 0; j < QK; ++j) a16[j] = as_i8(wb + 2)[j];
    } else if constexpr (T == Type::Q5_0) {
        unpack_q5(wb + 2, wb + 6, 16, a16);
    } else {
        const std::uint8_t* qs = wb + 2;
        for (std::size_t j = 0; j < 16; ++j) {
            a16[j] = static_cast<std::int16_t>((qs[j] & 0x0F) - 8);
            a16[j + 16] = static_cast<std::int16_t>((qs[j] >> 4) - 8);
        }
    }
}

// A block's float step in ggml's order (ggml_quant.cpp's vec_dot_blocks): Q4_0 (sumi·d_w)·d_x, two
// roundings; Q8_0 and Q5_0 sumi·(d_w·d_x), where d_w·d_x (two halves) is exact.
template <Type T>
inline float block_term(int sumi, float dw, float dx) {
    if constexpr (T == Type::Q4_0) return (static_cast<float>(sumi) * dw) * dx;
    else return static_cast<float>(sumi) * (dw * dx);
}

// The dot products of Q8_0, Q5_0 and Q4_0 for R weight rows at once (matvec_fast, matmul_fast),
// against activations prepared once per row of x (prepare_activations: the int8s widened to int16,
// the scales converted to float). dot_q8_0 above is bound by its one chain of float adds (each add
// waits for the last, ~4 cycles, for 32 products); R rows give R independent chains side by side.
// The weights are still read one row after another (row r's blocks, then row r + 1's): rows read
// side by side are a stream the hardware prefetcher does not follow (kernels/fast.cpp,
// stream_rows). Measured 2026-12-07 for Q8_0 (16384 × 256 in L3, best of 100): 7.1 → 11.0 G
// multiply-adds/s generic x86-64, 7.3 → 13.5 with -march=native; 151936 × 896 from memory: 8.6 →
// 10.7 and 11.3 → 13.4. Each row keeps vec_dot's float steps (block_term) in block order: every
// bit the same.
template <Type T, std::size_t R>
void dot_q8_rows(const std::uint8_t* w, std::size_t rb, const std::int16_t* x16, const float* xd, std::size_t nb,
                 float* y) {
    constexpr std::size_t kChunk = 64;
    float sumf[R] = {};
    for (std::size_t i0 = 0; i0 < nb; i0 += kChunk) {
        const std::size_t n = std::min(kChunk, nb - i0);
        int sumi[R][kChunk];
        float dw[R][kChunk];
        for (std::size_t r = 0; r < R; ++r) {
            std::uint16_t hw[kChunk];
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint8_t* wb = w + r * rb + kBlockBytes<T> * (i0 + i);
                const std::int16_t* __restrict b = x16 + QK * (i0 + i);
                std::int16_t a16[QK];
                unpack_block<T>(wb, a16);
                int s = 0;
                for (std::size_t j = 0; j < QK; ++j) s += a16[j] * b[j];
                sumi[r][i] = s;
                hw[i] = load_u16(wb);
            }
            for (std::size_t i = 0; i < n; ++i) dw[r][i] = detail::fp16_to_fp32_fast(hw[i]);
        }
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t r = 0; r < R; ++r) sumf[r] += block_term<T>(sumi[r][i], dw[r][i], xd[i0 + i]);
    }
    for (std::size_t r = 0; r < R; ++r) y[r] = sumf[r];
}

// ggml_vec_dot_q5_0_q8_0 and ggml_vec_dot_q5_1_q8_1: per block of 32, each weight is a nibble of qs
// with its fifth bit from the uint32 qh (bit j for element j), minus 16 for Q5_0; sumi = Σ w·x in
// int (|sumi| <= 32·31·128 < 2^17). Then, in block order, Q5_0: sumf += (d_w·d_x)·sumi; Q5_1:
// sumf += (d_w·d_x)·sumi + m_w·s_x (Q8_1's s_x = d_x·Σx). Chunked as dot_q8_0: the unpacking and
// the integer dots vectorise (shifts and masks, then pmaddwd); the float chain stays in order.
// Block layouts: Q5_0 [d f16 | qh 4 | qs 16] = 22 bytes against Q8_0's 34; Q5_1 [d f16 | m f16 |
// qh 4 | qs 16] = 24 bytes against Q8_1's [d f16 | s f16 | 32 int8] = 36.
template <bool kQ5_1>
float dot_q5(const std::uint8_t* w, const std::uint8_t* x, std::size_t nb) {
    constexpr std::size_t kChunk = 64, kW = kQ5_1 ? 24 : 22, kX = kQ5_1 ? 36 : 34;
    constexpr std::size_t kQh = kQ5_1 ? 4 : 2, kQs = kQ5_1 ? 8 : 6, kXq = kQ5_1 ? 4 : 2;
    constexpr int kOffset = kQ5_1 ? 0 : 16;
    float sumf = 0.0f;
    for (std::size_t i0 = 0; i0 < nb; i0 += kChunk) {
        const std::size_t n = std::min(kChunk, nb - i0);
        int sumi[kChunk];
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint8_t* wb = w + kW * (i0 + i);
            const std::int8_t* __restrict b = as_i8(x + kX * (i0 + i) + kXq);
            std::int16_t a16[QK], b16[QK];
            unpack_q5(wb + kQh, wb + kQs, kOffset, a16);
            for (std::size_t j = 0; j < QK; ++j) b16[j] = b[j];
            int sum = 0;
            for (std::size_t j = 0; j < QK; ++j) sum += a16[j] * b16[j];
            sumi[i] = sum;
        }
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint8_t* wb = w + kW * (i0 + i);
            const std::uint8_t* xb = x + kX * (i0 + i);
            if constexpr (kQ5_1)
                sumf += (load_f16(wb) * load_f16(xb)) * static_cast<float>(sumi[i]) + load_f16(wb + 2) * load_f16(xb + 2);
            else
                sumf += (load_f16(wb) * load_f16(xb)) * static_cast<float>(sumi[i]);
        }
    }
    return sumf;
}

// Q4_K / Q5_K scales and mins (ggml's get_scale_min_k4; ggml_quant.cpp's q4_k_scales)
void q4_k_scales(const std::uint8_t* b, int (&sc)[8], int (&mn)[8]) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = b[j] & 63;
        mn[j] = b[j + 4] & 63;
    }
    for (int j = 4; j < 8; ++j) {
        sc[j] = (b[j + 4] & 0x0F) | (b[j - 4] >> 6) << 4;
        mn[j] = (b[j + 4] >> 4) | (b[j] >> 6) << 4;
    }
}

// lanes[l] += sc · Σ_k q[8k + l]·x[8k + l] over one 32-element sub-block: ggml's aux32[l] += scale·aux16[l].
// q in [0, 15] (Q4_K) or [0, 31] (Q5_K) or [-32, 31] (Q6_K, 16-element sub-blocks: n = 16), x int8:
// |q·x| <= 32·128 = 2^12 and a lane adds at most 4 of them (< 2^14): exact in int16.
template <std::size_t N>
inline void lane_madd(const std::int8_t* __restrict q, const std::int8_t* __restrict x, int sc, int (&lanes)[8]) {
    std::int16_t prod[N];
    for (std::size_t j = 0; j < N; ++j) prod[j] = static_cast<std::int16_t>(q[j] * x[j]);
    std::int16_t p[8];
    for (std::size_t l = 0; l < 8; ++l) p[l] = prod[l];
    for (std::size_t k = 8; k < N; k += 8)
        for (std::size_t l = 0; l < 8; ++l) p[l] = static_cast<std::int16_t>(p[l] + prod[k + l]);
    // int16 × int16 into int: SSE2's pmullw / pmulhw pair (a 32-bit multiply, pmulld, is SSE4.1)
    const auto sc16 = static_cast<std::int16_t>(sc);
    for (std::size_t l = 0; l < 8; ++l) lanes[l] += static_cast<int>(sc16) * static_cast<int>(p[l]);
}

// ggml_vec_dot_q4_K_q8_K: 8 float lanes, lane l += (d_w·d_x)·(float)aux[l] per super-block, and
// sumf -= (dmin_w·d_x)·(float)Σ bsums·m; the lanes added to sumf at the end.
float dot_q4_k(const std::uint8_t* w, const std::uint8_t* x, std::size_t nb) {
    float sums[8] = {};
    float sumf = 0.0f;
    for (std::size_t i = 0; i < nb; ++i, w += 144, x += 292) {
        int sc[8], mn[8];
        q4_k_scales(w + 4, sc, mn);
        int sumi = 0;  // the min term: 16 bsums, two per 32-element sub-block
        for (std::size_t s = 0; s < 16; ++s) sumi += load_i16(x + 260 + 2 * s) * mn[s / 2];
        const std::uint8_t* qs = w + 16;
        const std::int8_t* q8 = as_i8(x + 4);
        int aux[8] = {};  // |aux[l]| <= 32 · 63·15·128 < 2^23
        for (std::size_t c = 0; c < 4; ++c) {  // 64 elements: the low nibbles of 32 bytes, then the high
            std::int8_t lo[32], hi[32];
            for (std::size_t l = 0; l < 32; ++l) {
                lo[l] = static_cast<std::int8_t>(qs[32 * c + l] & 0x0F);
                hi[l] = static_cast<std::int8_t>(qs[32 * c + l] >> 4);
            }
            lane_madd<32>(lo, q8 + 64 * c, sc[2 * c], aux);
            lane_madd<32>(hi, q8 + 64 * c + 32, sc[2 * c + 1], aux);
        }
        const float xd = load_f32(x);
        const float d = load_f16(w) * xd;
        for (std::size_t l = 0; l < 8; ++l) sums[l] += d * static_cast<float>(aux[l]);
        const float dmin = load_f16(w + 2) * xd;
        sumf -= dmin * static_cast<float>(sumi);
    }
    for (float s : sums) sumf += s;
    return sumf;
}

// ggml_vec_dot_q6_K_q8_K: 16 sub-blocks of 16 with int8 scales, the 8 float lanes, no min term.
float dot_q6_k(const std::uint8_t* w, const std::uint8_t* x, std::size_t nb) {
    float sums[8] = {};
    for (std::size_t i = 0; i < nb; ++i, w += 210, x += 292) {
        const std::uint8_t *ql = w, *qh = w + 128;
        const std::int8_t* sc = as_i8(w + 192);
        const std::int8_t* q8 = as_i8(x + 4);
        std::int8_t q[QK_K];  // in [-32, 31]: ggml_quant.cpp's unpack_q6_k
        for (std::size_t h = 0; h < 2; ++h)
            for (std::size_t l = 0; l < 32; ++l) {
                const std::uint8_t* lo = ql + 64 * h;
                const int hb = qh[32 * h + l];
                q[128 * h + l] = static_cast<std::int8_t>(((lo[l] & 0x0F) | (hb & 3) << 4) - 32);
                q[128 * h + 32 + l] = static_cast<std::int8_t>(((lo[32 + l] & 0x0F) | ((hb >> 2) & 3) << 4) - 32);
                q[128 * h + 64 + l] = static_cast<std::int8_t>(((lo[l] >> 4) | ((hb >> 4) & 3) << 4) - 32);
                q[128 * h + 96 + l] = static_cast<std::int8_t>(((lo[32 + l] >> 4) | ((hb >> 6) & 3) << 4) - 32);
            }
        int aux[8] = {};  // |aux[l]| <= 32 · 128·32·128 < 2^24
        for (std::size_t s = 0; s < 16; ++s) lane_madd<16>(q + 16 * s, q8 + 16 * s, sc[s], aux);
        const float d = load_f16(w + 208) * load_f32(x);
        for (std::size_t l = 0; l < 8; ++l) sums[l] += d * static_cast<float>(aux[l]);
    }
    float sumf = 0.0f;
    for (float s : sums) sumf += s;
    return sumf;
}

// Float weights (F32, F16, BF16) against float activations: element j to lane j % 8, the lanes added
// pairwise at the end; the last n % 8 elements zero-padded to a full step (kernels/fast.cpp's
// matvec_fast: for F32 weights the same bits, where the compiler does not fuse fast.cpp's multiply-adds).
constexpr std::size_t kLanes = 8;
// The weights are converted to float 64 at a time (fp16_to_fp32_fast: no branches, so the conversion
// vectorises), then multiplied into the lanes in the same order as 8 at a time.
template <Type T>
void float_weights(const std::uint8_t* w, float* out, std::size_t n) {
    if constexpr (T == Type::F32) {
        for (std::size_t k = 0; k < n; ++k) out[k] = load_f32(w + 4 * k);
    } else {
        // the halves as uint16 (memcpy: a plain load on a little-endian host, as GGUF is; swapped on a
        // big-endian one), so that the loop below is a vector loop over 16-bit lanes
        std::uint16_t h[64];
        std::memcpy(h, w, 2 * n);
        if constexpr (std::endian::native == std::endian::big)
            for (std::size_t k = 0; k < n; ++k) h[k] = static_cast<std::uint16_t>(h[k] << 8 | h[k] >> 8);
        for (std::size_t k = 0; k < n; ++k) {
            if constexpr (T == Type::F16) out[k] = detail::fp16_to_fp32_fast(h[k]);
            else out[k] = std::bit_cast<float>(static_cast<std::uint32_t>(h[k]) << 16);  // bf16_to_fp32
        }
    }
}
template <Type T>
float dot_float_t(const std::uint8_t* w, const float* x, std::size_t n) {
    constexpr std::size_t wb = T == Type::F32 ? 4 : 2;
    float acc[kLanes] = {};
    float wf[kLanes];
    std::size_t j = 0;
    constexpr std::size_t kChunk = 64;
    for (; j + kChunk <= n; j += kChunk) {
        float wc[kChunk];
        float_weights<T>(w + wb * j, wc, kChunk);
        for (std::size_t s = 0; s < kChunk; s += kLanes)
            for (std::size_t l = 0; l < kLanes; ++l) acc[l] += wc[s + l] * x[j + s + l];
    }
    for (; j + kLanes <= n; j += kLanes) {
        float_weights<T>(w + wb * j, wf, kLanes);
        for (std::size_t l = 0; l < kLanes; ++l) acc[l] += wf[l] * x[j + l];
    }
    if (j < n) {
        float xt[kLanes] = {};
        std::fill(wf, wf + kLanes, 0.0f);
        float_weights<T>(w + wb * j, wf, n - j);
        for (std::size_t l = 0; j + l < n; ++l) xt[l] = x[j + l];
        for (std::size_t l = 0; l < kLanes; ++l) acc[l] += wf[l] * xt[l];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
}  // namespace

float detail::dot_float(Type type, const std::uint8_t* w, const float* x, std::size_t n) {
    if (type == Type::F32) return dot_float_t<Type::F32>(w, x, n);
    if (type == Type::F16) return dot_float_t<Type::F16>(w, x, n);
    return dot_float_t<Type::BF16>(w, x, n);
}

namespace detail {

float vec_dot_fast_blocks(Type type, const std::uint8_t* w, const std::uint8_t* x, std::size_t nb) {
    switch (type) {
        case Type::Q8_0: return dot_q8_0(w, x, nb);
        case Type::Q5_0: return dot_q5<false>(w, x, nb);
        case Type::Q5_1: return dot_q5<true>(w, x, nb);
        case Type::Q4_K: return dot_q4_k(w, x, nb);
        case Type::Q6_K: return dot_q6_k(w, x, nb);
        default: return vec_dot_blocks(type, w, x, nb);
    }
}

// Q8_0's prepared activations sit after the quantized row in the scratch, 16-byte aligned:
// [Q8_0 blocks][x as int16: cols][the scales as float: nb]
std::size_t prepared_offset(Type type, std::size_t cols) {
    return (row_bytes(type_info(type).vec_dot_type, cols) + 15) / 16 * 16;
}
namespace {
// The types dot_q8_rows and matmul_q8_rows take (their activations are Q8_0), listed once here:
// f.template operator()<Q>() with the type as a template argument, and true; false for any other.
template <class F>
bool with_grouped_type(Type type, F&& f) {
    switch (type) {
        case Type::Q8_0: f.template operator()<Type::Q8_0>(); return true;
        case Type::Q5_0: f.template operator()<Type::Q5_0>(); return true;
        case Type::Q4_0: f.template operator()<Type::Q4_0>(); return true;
        default: return false;
    }
}
}  // namespace
bool grouped(Type type) { return with_grouped_type(type, []<Type>() {}); }
std::size_t prepared_bytes(Type type, std::size_t cols) {
    return grouped(type) ? 2 * cols + 4 * (cols / QK) : 0;
}
void prepare_activations(Type type, std::uint8_t* act, std::size_t cols) {
    if (!grouped(type)) return;
    auto* x16 = reinterpret_cast<std::int16_t*>(act + prepared_offset(type, cols));
    auto* xd = reinterpret_cast<float*>(x16 + cols);
    for (std::size_t i = 0; i < cols / QK; ++i) {
        const std::uint8_t* xb = act + 34 * i;
        xd[i] = load_f16(xb);
        for (std::size_t j = 0; j < QK; ++j) x16[QK * i + j] = as_i8(xb + 2)[j];
    }
}

namespace {
// matmul_fast's Q8_0 work on R weight rows (in cache) against T rows of prepared activations. Per
// chunk of 64 blocks the R weight rows are widened to int16 once (16 KB on the stack), not once per
// token as in dot_q8_rows; per token the integer sums are then int16·int16 on both sides (pmaddwd
// with no widening). Each (weight row, token) keeps dot_q8_0's float chain in block order, carried in
// y from one chunk to the next: the same bits.
template <Type Q, std::size_t R>
void matmul_q8_rows(const std::uint8_t* w, std::size_t rb, const std::uint8_t* act, std::size_t act_stride,
                      std::size_t T, std::size_t cols, float* y, std::size_t y_stride) {
    constexpr std::size_t kChunk = 64;
    const std::size_t nb = cols / QK, off = prepared_offset(Q, cols);
    for (std::size_t t = 0; t < T; ++t)  // each chain starts at 0 and is carried in y
        for (std::size_t r = 0; r < R; ++r) y[t * y_stride + r] = 0.0f;
    std::int16_t w16[R][kChunk * QK];
    float wd[R][kChunk];
    for (std::size_t i0 = 0; i0 < nb; i0 += kChunk) {
        const std::size_t n = std::min(kChunk, nb - i0);
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint8_t* wb = w + r * rb + kBlockBytes<Q> * (i0 + i);
                wd[r][i] = load_f16(wb);
                unpack_block<Q>(wb, w16[r] + QK * i);
            }
        for (std::size_t t = 0; t < T; ++t) {
            const auto* x16_all = reinterpret_cast<const std::int16_t*>(act + t * act_stride + off);
            const std::int16_t* __restrict x16 = x16_all + QK * i0;
            const float* xd = reinterpret_cast<const float*>(x16_all + cols) + i0;
            int sumi[R][kChunk];
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t i = 0; i < n; ++i) {
                    const std::int16_t* __restrict a = w16[r] + QK * i;
                    int sum = 0;
                    for (std::size_t j = 0; j < QK; ++j) sum += a[j] * x16[QK * i + j];
                    sumi[r][i] = sum;
                }
            float sumf[R];
            for (std::size_t r = 0; r < R; ++r) sumf[r] = y[t * y_stride + r];
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t r = 0; r < R; ++r) sumf[r] += block_term<Q>(sumi[r][i], wd[r][i], xd[i]);
            for (std::size_t r = 0; r < R; ++r) y[t * y_stride + r] = sumf[r];
        }
    }
}
}  // namespace

void matmul_rows_fast(Type type, const std::uint8_t* w, std::size_t rb, std::size_t rows, const std::uint8_t* act,
                      std::size_t act_stride, std::size_t T, std::size_t cols, float* y, std::size_t y_stride) {
    const bool done = with_grouped_type(type, [&]<Type Q>() {
        std::size_t i = 0;
        for (; i + 4 <= rows; i += 4) matmul_q8_rows<Q, 4>(w + i * rb, rb, act, act_stride, T, cols, y + i, y_stride);
        for (; i < rows; ++i) matmul_q8_rows<Q, 1>(w + i * rb, rb, act, act_stride, T, cols, y + i, y_stride);
    });
    if (!done)
        for (std::size_t t = 0; t < T; ++t) dot_rows_fast(type, w, rb, rows, act + t * act_stride, cols, y + t * y_stride);
}

void dot_rows_fast(Type type, const std::uint8_t* w, std::size_t rb, std::size_t rows, const std::uint8_t* act,
                   std::size_t cols, float* y) {
    const std::size_t nb = cols / type_info(type).block_elems;
    const bool done = with_grouped_type(type, [&]<Type Q>() {
        const auto* x16 = reinterpret_cast<const std::int16_t*>(act + prepared_offset(Q, cols));
        const auto* xd = reinterpret_cast<const float*>(x16 + cols);
        std::size_t i = 0;
        for (; i + 4 <= rows; i += 4) dot_q8_rows<Q, 4>(w + i * rb, rb, x16, xd, nb, y + i);
        for (; i < rows; ++i) dot_q8_rows<Q, 1>(w + i * rb, rb, x16, xd, nb, y + i);
    });
    if (!done)
        for (std::size_t i = 0; i < rows; ++i) y[i] = vec_dot_fast_blocks(type, w + i * rb, act, nb);
}

}  // namespace detail

float vec_dot_fast(Type type, std::span<const std::uint8_t> w_row, std::span<const std::uint8_t> x_act) {
    const auto t = find_type(static_cast<std::uint32_t>(type));
    const bool ok = t && t->is_weight && t->vec_dot_type != Type::F32 && w_row.size() % t->block_bytes == 0 &&
                    x_act.size() == w_row.size() / t->block_bytes * type_info(t->vec_dot_type).block_bytes;
    if (!ok) return vec_dot(type, w_row, x_act);  // throws, with vec_dot's message naming the type and sizes
    return detail::vec_dot_fast_blocks(type, w_row.data(), x_act.data(), w_row.size() / t->block_bytes);
}

}  // namespace lmlab::ggml
