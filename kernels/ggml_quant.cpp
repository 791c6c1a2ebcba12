// ggml's block formats (see ggml_quant.h for the layouts and the rules). Each function names the ggml
// function whose arithmetic it repeats; "ggml" below means ggml/src/ggml-quants.c (dequantization,
// the activation quantizers) and ggml/src/ggml-cpu/quants.c (the generic vec_dot functions).
//
// Integer sums are exact (the bounds are given where they are formed), so they may be summed in any
// order: the loops below are arranged for the compiler to vectorise, not in ggml's order. Float
// operations are never reordered: each one is ggml's, in ggml's order.
#include "kernels/ggml_quant.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/check.h"
#include "kernels/kernels.h"
#include "kernels/threads.h"

// No fused multiply-adds in this file: a·b + c fused rounds once where ggml's C rounds twice, so the
// bits would differ wherever the target has FMA (-march=native). Clang contracts within an expression
// by default and GCC across statements (its default outside ISO C is -ffp-contract=fast).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace lmlab::ggml {

namespace {

constexpr std::size_t QK = 32;     // elements of a Q4_0 .. Q8_1 block
constexpr std::size_t QK_K = 256;  // elements of a K-quant super-block

constexpr std::array<TypeInfo, 15> kTypes = {{
    {Type::F32, "F32", 1, 4, true, Type::F32},
    {Type::F16, "F16", 1, 2, true, Type::F32},
    {Type::Q4_0, "Q4_0", QK, 18, true, Type::Q8_0},
    {Type::Q4_1, "Q4_1", QK, 20, true, Type::Q8_1},
    {Type::Q5_0, "Q5_0", QK, 22, true, Type::Q8_0},
    {Type::Q5_1, "Q5_1", QK, 24, true, Type::Q8_1},
    {Type::Q8_0, "Q8_0", QK, 34, true, Type::Q8_0},
    {Type::Q8_1, "Q8_1", QK, 36, false, Type::Q8_1},
    {Type::Q2_K, "Q2_K", QK_K, 84, true, Type::Q8_K},
    {Type::Q3_K, "Q3_K", QK_K, 110, true, Type::Q8_K},
    {Type::Q4_K, "Q4_K", QK_K, 144, true, Type::Q8_K},
    {Type::Q5_K, "Q5_K", QK_K, 176, true, Type::Q8_K},
    {Type::Q6_K, "Q6_K", QK_K, 210, true, Type::Q8_K},
    {Type::Q8_K, "Q8_K", QK_K, 292, false, Type::Q8_K},
    {Type::BF16, "BF16", 1, 2, true, Type::F32},
}};

const TypeInfo* lookup(std::uint32_t id) {
    for (const TypeInfo& t : kTypes)
        if (static_cast<std::uint32_t>(t.type) == id) return &t;
    return nullptr;
}

bool is_float_type(Type t) { return t == Type::F32 || t == Type::F16 || t == Type::BF16; }

// "<kernel>: <type> ..." for the messages that name the type
std::string named(const char* kernel, const TypeInfo& t, const std::string& what) {
    return std::string(kernel) + ": " + std::string(t.name) + " " + what;
}

// ---- little-endian fields -------------------------------------------------------------------------
std::uint16_t load_u16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
std::uint32_t load_u32(const std::uint8_t* p) {
    return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
}
float load_f16(const std::uint8_t* p) { return fp16_to_fp32(load_u16(p)); }
float load_f32(const std::uint8_t* p) { return std::bit_cast<float>(load_u32(p)); }
std::int16_t load_i16(const std::uint8_t* p) { return static_cast<std::int16_t>(load_u16(p)); }
void store_u16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8);
}
void store_f32(std::uint8_t* p, float f) {
    const std::uint32_t v = std::bit_cast<std::uint32_t>(f);
    for (int k = 0; k < 4; ++k) p[k] = static_cast<std::uint8_t>(v >> (8 * k));
}
// The int8 quants of an activation block. (Reading bytes as int8_t is allowed: signed char is the
// signed type corresponding to unsigned char.)
const std::int8_t* as_i8(const std::uint8_t* p) { return reinterpret_cast<const std::int8_t*>(p); }

// ---- the 6-bit scales of the K-quants -------------------------------------------------------------
// Q3_K: 16 scales of 6 bits in 12 bytes (ggml_quant.h), as signed values sc - 32 in [-32, 31]
void q3_k_scales(const std::uint8_t* b, int (&sc)[16]) {
    for (int j = 0; j < 16; ++j) {
        const int low = j < 8 ? b[j] & 0x0F : b[j - 8] >> 4;
        const int high = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (low | high << 4) - 32;
    }
}

// Q4_K / Q5_K: 8 scales and 8 mins of 6 bits in 12 bytes (ggml's get_scale_min_k4)
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

// ---- weights unpacked to small integers (the quants q_e of ggml_quant.h, one per element) -------------
void unpack_q4_0(const std::uint8_t* b, std::int8_t* q) {  // q - 8 in [-8, 7]
    for (std::size_t j = 0; j < 16; ++j) {
        q[j] = static_cast<std::int8_t>((b[2 + j] & 0x0F) - 8);
        q[j + 16] = static_cast<std::int8_t>((b[2 + j] >> 4) - 8);
    }
}
void unpack_q4_1(const std::uint8_t* b, std::int8_t* q) {  // in [0, 15]
    for (std::size_t j = 0; j < 16; ++j) {
        q[j] = static_cast<std::int8_t>(b[4 + j] & 0x0F);
        q[j + 16] = static_cast<std::int8_t>(b[4 + j] >> 4);
    }
}
// Q5_0 / Q5_1: the nibbles at qs, the fifth bits in the uint32 at qh (bit j for element j), minus offset
void unpack_q5(const std::uint8_t* qh_bytes, const std::uint8_t* qs, int offset, std::int8_t* q) {
    const std::uint32_t qh = load_u32(qh_bytes);
    for (std::size_t j = 0; j < 16; ++j) {
        const int h0 = static_cast<int>((qh >> j) & 1u) << 4, h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
        q[j] = static_cast<std::int8_t>(((qs[j] & 0x0F) | h0) - offset);
        q[j + 16] = static_cast<std::int8_t>(((qs[j] >> 4) | h1) - offset);
    }
}
void unpack_q2_k(const std::uint8_t* b, std::int8_t* q) {  // in [0, 3]
    const std::uint8_t* qs = b + 16;
    for (std::size_t h = 0; h < 2; ++h)
        for (std::size_t k = 0; k < 4; ++k)
            for (std::size_t l = 0; l < 32; ++l)
                q[128 * h + 32 * k + l] = static_cast<std::int8_t>((qs[32 * h + l] >> (2 * k)) & 3);
}
void unpack_q3_k(const std::uint8_t* b, std::int8_t* q) {  // in [-4, 3]
    const std::uint8_t *hmask = b, *qs = b + 32;
    for (std::size_t h = 0; h < 2; ++h)
        for (std::size_t k = 0; k < 4; ++k)
            for (std::size_t l = 0; l < 32; ++l) {
                const int low = (qs[32 * h + l] >> (2 * k)) & 3;
                const bool high = (hmask[l] >> (4 * h + k)) & 1;
                q[128 * h + 32 * k + l] = static_cast<std::int8_t>(low - (high ? 0 : 4));
            }
}
void unpack_q4_k(const std::uint8_t* b, std::int8_t* q) {  // in [0, 15]
    const std::uint8_t* qs = b + 16;
    for (std::size_t c = 0; c < 4; ++c)
        for (std::size_t l = 0; l < 32; ++l) {
            q[64 * c + l] = static_cast<std::int8_t>(qs[32 * c + l] & 0x0F);
            q[64 * c + 32 + l] = static_cast<std::int8_t>(qs[32 * c + l] >> 4);
        }
}
void unpack_q5_k(const std::uint8_t* b, std::int8_t* q) {  // in [0, 31]
    const std::uint8_t *qh = b + 16, *qs = b + 48;
    for (std::size_t c = 0; c < 4; ++c)
        for (std::size_t l = 0; l < 32; ++l) {
            q[64 * c + l] = static_cast<std::int8_t>((qs[32 * c + l] & 0x0F) | ((qh[l] >> (2 * c)) & 1) << 4);
            q[64 * c + 32 + l] = static_cast<std::int8_t>((qs[32 * c + l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4);
        }
}
void unpack_q6_k(const std::uint8_t* b, std::int8_t* q) {  // in [-32, 31]
    const std::uint8_t *ql = b, *qh = b + 128;
    for (std::size_t h = 0; h < 2; ++h)
        for (std::size_t l = 0; l < 32; ++l) {
            const std::uint8_t* lo = ql + 64 * h;
            const int hi = qh[32 * h + l];
            q[128 * h + l] = static_cast<std::int8_t>(((lo[l] & 0x0F) | (hi & 3) << 4) - 32);
            q[128 * h + 32 + l] = static_cast<std::int8_t>(((lo[32 + l] & 0x0F) | ((hi >> 2) & 3) << 4) - 32);
            q[128 * h + 64 + l] = static_cast<std::int8_t>(((lo[l] >> 4) | ((hi >> 4) & 3) << 4) - 32);
            q[128 * h + 96 + l] = static_cast<std::int8_t>(((lo[32 + l] >> 4) | ((hi >> 6) & 3) << 4) - 32);
        }
}

// ---- dequantization of one block (ggml's dequantize_row_<type>, same float operations) --------------
// (int) q · d below is ggml's `x0*d`: the int converted to float, one multiplication.
void dequantize_block(Type type, const std::uint8_t* b, float* y) {
    std::int8_t q[QK_K];
    switch (type) {
        case Type::F32: y[0] = load_f32(b); return;
        case Type::F16: y[0] = load_f16(b); return;
        case Type::BF16: y[0] = bf16_to_fp32(load_u16(b)); return;
        case Type::Q4_0: {
            const float d = load_f16(b);
            unpack_q4_0(b, q);
            for (std::size_t j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j]) * d;
            return;
        }
        case Type::Q4_1: {  // x0*d + m
            const float d = load_f16(b), m = load_f16(b + 2);
            unpack_q4_1(b, q);
            for (std::size_t j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j]) * d + m;
            return;
        }
        case Type::Q5_0: {
            const float d = load_f16(b);
            unpack_q5(b + 2, b + 6, 16, q);
            for (std::size_t j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j]) * d;
            return;
        }
        case Type::Q5_1: {
            const float d = load_f16(b), m = load_f16(b + 2);
            unpack_q5(b + 4, b + 8, 0, q);
            for (std::size_t j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j]) * d + m;
            return;
        }
        case Type::Q8_0:
        case Type::Q8_1: {  // Q8_1's s is not needed to dequantize
            const float d = load_f16(b);
            const std::int8_t* qs = as_i8(b + (type == Type::Q8_0 ? 2 : 4));
            for (std::size_t j = 0; j < QK; ++j) y[j] = static_cast<float>(qs[j]) * d;
            return;
        }
        case Type::Q8_K: {  // d·q, d F32
            const float d = load_f32(b);
            const std::int8_t* qs = as_i8(b + 4);
            for (std::size_t j = 0; j < QK_K; ++j) y[j] = d * static_cast<float>(qs[j]);
            return;
        }
        case Type::Q2_K: {  // dl = d·(sc & 15), ml = dmin·(sc >> 4), x = dl·q - ml
            const float d = load_f16(b + 80), dmin = load_f16(b + 82);
            unpack_q2_k(b, q);
            for (std::size_t s = 0; s < 16; ++s) {
                const float dl = d * static_cast<float>(b[s] & 0x0F), ml = dmin * static_cast<float>(b[s] >> 4);
                for (std::size_t l = 0; l < 16; ++l) y[16 * s + l] = dl * static_cast<float>(q[16 * s + l]) - ml;
            }
            return;
        }
        case Type::Q3_K: {  // dl = d·(sc - 32), x = dl·q
            const float d = load_f16(b + 108);
            int sc[16];
            q3_k_scales(b + 96, sc);
            unpack_q3_k(b, q);
            for (std::size_t s = 0; s < 16; ++s) {
                const float dl = d * static_cast<float>(sc[s]);
                for (std::size_t l = 0; l < 16; ++l) y[16 * s + l] = dl * static_cast<float>(q[16 * s + l]);
            }
            return;
        }
        case Type::Q4_K:
        case Type::Q5_K: {  // d1 = d·sc, m1 = dmin·m, x = d1·q - m1
            const float d = load_f16(b), dmin = load_f16(b + 2);
            int sc[8], mn[8];
            q4_k_scales(b + 4, sc, mn);
            if (type == Type::Q4_K) unpack_q4_k(b, q);
            else unpack_q5_k(b, q);
            for (std::size_t s = 0; s < 8; ++s) {
                const float d1 = d * static_cast<float>(sc[s]), m1 = dmin * static_cast<float>(mn[s]);
                for (std::size_t l = 0; l < 32; ++l) y[32 * s + l] = d1 * static_cast<float>(q[32 * s + l]) - m1;
            }
            return;
        }
        case Type::Q6_K: {  // (d·sc)·q
            const float d = load_f16(b + 208);
            const std::int8_t* sc = as_i8(b + 192);
            unpack_q6_k(b, q);
            for (std::size_t s = 0; s < 16; ++s) {
                const float ds = d * static_cast<float>(sc[s]);
                for (std::size_t l = 0; l < 16; ++l) y[16 * s + l] = ds * static_cast<float>(q[16 * s + l]);
            }
            return;
        }
    }
}

// ---- activation quantization (ggml's quantize_row_q8_0_ref, _q8_1_ref, _q8_K_ref) ---------------------

// x·id -> int8 with C's roundf (halves away from zero), as ggml's `y[i].qs[j] = roundf(x0)`. The
// clamp and the NaN test change nothing for finite blocks (|x·id| <= 127); they define the tiny-block
// case where id = inf (see quantize_activations in ggml_quant.h).
std::int8_t round_away(float v) {
    if (std::isnan(v)) return 0;
    return static_cast<std::int8_t>(std::round(std::clamp(v, -127.0f, 127.0f)));
}
// ggml's nearest_int: halves to even (it adds 1.5·2^23 and keeps the low mantissa bits, which is
// the float rounding of the addition; equal to nearbyint for |v| < 2^22, far beyond ±127).
std::int8_t round_even(float v) {
    if (std::isnan(v)) return 0;
    return static_cast<std::int8_t>(std::nearbyint(std::clamp(v, -127.0f, 127.0f)));
}

bool all_finite(const float* x, std::size_t n) {
    bool ok = true;
    for (std::size_t j = 0; j < n; ++j) ok = ok && std::isfinite(x[j]);
    return ok;
}

// Q8_0 (with_sum = false) or Q8_1 (true) block of 32
void quantize_q8_01_block(const float* x, bool with_sum, std::uint8_t* out) {
    std::uint8_t* qs = out + (with_sum ? 4 : 2);
    if (!all_finite(x, QK)) {
        store_u16(out, fp32_to_fp16(NAN));
        if (with_sum) store_u16(out + 2, fp32_to_fp16(NAN));
        std::fill(qs, qs + QK, std::uint8_t{0});
        return;
    }
    float amax = 0.0f;
    for (std::size_t j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;            // ggml: amax / ((1 << 7) - 1)
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (std::size_t j = 0; j < QK; ++j) {
        const std::int8_t q = round_away(x[j] * id);
        qs[j] = static_cast<std::uint8_t>(q);
        sum += q;
    }
    store_u16(out, fp32_to_fp16(d));  // the stored scale is F16; the q were made with the float d
    if (with_sum) store_u16(out + 2, fp32_to_fp16(static_cast<float>(sum) * d));  // ggml: sum*d
}

void quantize_q8_k_block(const float* x, std::uint8_t* out) {
    std::uint8_t* qs = out + 4;
    std::uint8_t* bsums = out + 260;
    const bool finite = all_finite(x, QK_K);
    float max = 0.0f, amax = 0.0f;  // the x of largest |x|, the first one on ties (ggml: `ax > amax`)
    for (std::size_t j = 0; j < QK_K; ++j) {
        const float ax = std::fabs(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (!finite || amax == 0.0f) {
        store_f32(out, finite ? 0.0f : NAN);
        std::fill(qs, qs + QK_K + 32, std::uint8_t{0});  // the quants and the 16 bsums
        return;
    }
    const float iscale = -127.0f / max;
    for (std::size_t j = 0; j < QK_K; ++j) qs[j] = static_cast<std::uint8_t>(round_even(iscale * x[j]));  // <= 127 (ggml's MIN(127, v))
    const std::int8_t* q = as_i8(qs);
    for (std::size_t s = 0; s < 16; ++s) {
        int sum = 0;  // |sum| <= 16·127
        for (std::size_t l = 0; l < 16; ++l) sum += q[16 * s + l];
        store_u16(bsums + 2 * s, static_cast<std::uint16_t>(static_cast<std::int16_t>(sum)));
    }
    store_f32(out, 1.0f / iscale);  // ggml: y[i].d = 1/iscale (not max / -127)
}

// ---- integer dot products ---------------------------------------------------------------------------

// Σ_j a[j]·b[j] over N int8 pairs: exact in int32 (|sum| <= 128·128·N)
template <std::size_t N>
int dot_i8(const std::int8_t* a, const std::int8_t* b) {
    int s = 0;
    for (std::size_t j = 0; j < N; ++j) s += static_cast<int>(a[j]) * static_cast<int>(b[j]);
    return s;
}

// The K-quants' 8 lanes: p[l] = Σ a[e]·b[e] over the elements e of [0, len) with e % 8 == l. ggml's
// generic code forms exactly these sums (its aux16 / aux32 arrays of 8), and its float arithmetic is
// per lane, so the lanes are part of the result's bits.
void lane_dot(const std::int8_t* a, const std::int8_t* b, std::size_t len, int (&p)[8]) {
    for (int& v : p) v = 0;
    for (std::size_t k = 0; k < len; k += 8)
        for (std::size_t l = 0; l < 8; ++l) p[l] += static_cast<int>(a[k + l]) * static_cast<int>(b[k + l]);
}

}  // namespace

// One weight row (nb blocks) against one activation row, per ggml's ggml_vec_dot_<type>_q8_<x>_generic.
float detail::vec_dot_blocks(Type type, const std::uint8_t* w, const std::uint8_t* x, std::size_t nb) {
    std::int8_t q[QK_K];
    float sumf = 0.0f;
    switch (type) {
        case Type::Q4_0:  // ggml_vec_dot_q4_0_q8_0: sumf += sumi*d_w*d_x
            for (std::size_t i = 0; i < nb; ++i, w += 18, x += 34) {
                unpack_q4_0(w, q);
                const int sumi = dot_i8<QK>(q, as_i8(x + 2));
                sumf += (static_cast<float>(sumi) * load_f16(w)) * load_f16(x);
            }
            return sumf;
        case Type::Q5_0:  // ggml_vec_dot_q5_0_q8_0: sumf += (d_w*d_x) * sumi
            for (std::size_t i = 0; i < nb; ++i, w += 22, x += 34) {
                unpack_q5(w + 2, w + 6, 16, q);
                const int sumi = dot_i8<QK>(q, as_i8(x + 2));
                sumf += (load_f16(w) * load_f16(x)) * static_cast<float>(sumi);
            }
            return sumf;
        case Type::Q8_0:  // ggml_vec_dot_q8_0_q8_0: sumf += sumi*(d_w*d_x)
            for (std::size_t i = 0; i < nb; ++i, w += 34, x += 34) {
                const int sumi = dot_i8<QK>(as_i8(w + 2), as_i8(x + 2));
                sumf += static_cast<float>(sumi) * (load_f16(w) * load_f16(x));
            }
            return sumf;
        case Type::Q4_1:  // ggml_vec_dot_q4_1_q8_1: sumf += (d_w*d_x)*sumi + m_w*s_x
        case Type::Q5_1: {
            const std::size_t wb = type == Type::Q4_1 ? 20 : 24;
            for (std::size_t i = 0; i < nb; ++i, w += wb, x += 36) {
                if (type == Type::Q4_1) unpack_q4_1(w, q);
                else unpack_q5(w + 4, w + 8, 0, q);
                const int sumi = dot_i8<QK>(q, as_i8(x + 4));
                sumf += (load_f16(w) * load_f16(x)) * static_cast<float>(sumi) + load_f16(w + 2) * load_f16(x + 2);
            }
            return sumf;
        }
        case Type::Q2_K:  // ggml_vec_dot_q2_K_q8_K: sumf += dall*isum - dmin*summs
            for (std::size_t i = 0; i < nb; ++i, w += 84, x += 292) {
                const std::uint8_t* sc = w;
                unpack_q2_k(w, q);
                int summs = 0;  // Σ_b bsums_b · m_b, |.| <= 16·2032·15
                for (std::size_t s = 0; s < 16; ++s) summs += load_i16(x + 260 + 2 * s) * (sc[s] >> 4);
                int isum = 0;  // Σ_b sc_b · Σ_e q8·q2, |.| <= 256·127·3·15
                for (std::size_t s = 0; s < 16; ++s) isum += (sc[s] & 0x0F) * dot_i8<16>(q + 16 * s, as_i8(x + 4 + 16 * s));
                const float xd = load_f32(x);
                const float dall = xd * load_f16(w + 80), dmin = xd * load_f16(w + 82);
                sumf += dall * static_cast<float>(isum) - dmin * static_cast<float>(summs);
            }
            return sumf;
        case Type::Q3_K:  // ggml_vec_dot_q3_K_q8_K: 8 lanes, sums[l] += d*aux32[l], summed at the end
        case Type::Q6_K: {
            const std::size_t wb = type == Type::Q3_K ? 110 : 210;
            float sums[8] = {};
            for (std::size_t i = 0; i < nb; ++i, w += wb, x += 292) {
                int sc[16];
                if (type == Type::Q3_K) {
                    q3_k_scales(w + 96, sc);
                    unpack_q3_k(w, q);
                } else {
                    for (std::size_t s = 0; s < 16; ++s) sc[s] = as_i8(w + 192)[s];
                    unpack_q6_k(w, q);
                }
                // |aux[l]| <= 32 elements · 128·32·128 (Q6_K) < 2^24: exact as an int and as a float
                int aux[8] = {};
                for (std::size_t s = 0; s < 16; ++s) {
                    int p[8];
                    lane_dot(q + 16 * s, as_i8(x + 4 + 16 * s), 16, p);
                    for (std::size_t l = 0; l < 8; ++l) aux[l] += sc[s] * p[l];
                }
                const float d = load_f16(w + (type == Type::Q3_K ? 108 : 208)) * load_f32(x);
                for (std::size_t l = 0; l < 8; ++l) sums[l] += d * static_cast<float>(aux[l]);
            }
            for (float s : sums) sumf += s;
            return sumf;
        }
        case Type::Q4_K:  // ggml_vec_dot_q4_K_q8_K: the lanes, and sumf -= dmin*sumi per super-block
        case Type::Q5_K: {
            const std::size_t wb = type == Type::Q4_K ? 144 : 176;
            float sums[8] = {};
            for (std::size_t i = 0; i < nb; ++i, w += wb, x += 292) {
                int sc[8], mn[8];
                q4_k_scales(w + 4, sc, mn);
                if (type == Type::Q4_K) unpack_q4_k(w, q);
                else unpack_q5_k(w, q);
                int sumi = 0;  // the min term: Σ over the 16 bsums, two per 32-element sub-block
                for (std::size_t s = 0; s < 16; ++s) sumi += load_i16(x + 260 + 2 * s) * mn[s / 2];
                int aux[8] = {};  // |aux[l]| <= 32 · 63·31·127 < 2^23
                for (std::size_t s = 0; s < 8; ++s) {
                    int p[8];
                    lane_dot(q + 32 * s, as_i8(x + 4 + 32 * s), 32, p);
                    for (std::size_t l = 0; l < 8; ++l) aux[l] += sc[s] * p[l];
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
        default: return NAN;  // not reached: the callers accept only the types above
    }
}

namespace {

// The checks matvec and matvec_fast share: a weight type, whole blocks, W of rows × row bytes
const TypeInfo& check_matvec(const char* kernel, Type type, std::size_t W_bytes, std::size_t cols, std::size_t rows) {
    const TypeInfo* t = lookup(static_cast<std::uint32_t>(type));
    require(t != nullptr, kernel, "unknown ggml type");
    if (!t->is_weight) throw std::invalid_argument(named(kernel, *t, "is an activation type, not a weight type"));
    if (cols % t->block_elems != 0)
        throw std::invalid_argument(named(kernel, *t, "rows of x.size() = " + std::to_string(cols) +
                                                          " elements are not a whole number of " +
                                                          std::to_string(t->block_elems) + "-element blocks"));
    if (W_bytes != rows * (cols / t->block_elems) * t->block_bytes)
        throw std::invalid_argument(named(kernel, *t, "W must have y.size() * row_bytes(type, x.size()) = " +
                                                          std::to_string(rows * (cols / t->block_elems) * t->block_bytes) +
                                                          " bytes, not " + std::to_string(W_bytes)));
    return *t;
}

// The scratch checks matvec_fast and matmul_fast share: at least need bytes, 4-byte aligned
void check_scratch(const char* kernel, std::span<std::uint8_t> scratch, std::size_t need, const char* too_small) {
    require(scratch.size() >= need, kernel, too_small);
    require(reinterpret_cast<std::uintptr_t>(scratch.data()) % 4 == 0, kernel,
            "scratch must be 4-byte aligned (it holds int16s and floats)");
}

}  // namespace

// ---- the table ---------------------------------------------------------------------------------------

std::optional<TypeInfo> find_type(std::uint32_t id) {
    const TypeInfo* t = lookup(id);
    if (t == nullptr) return std::nullopt;
    return *t;
}

std::optional<TypeInfo> find_type_named(std::string_view name) {
    for (const TypeInfo& t : kTypes) {
        bool same = t.name.size() == name.size();
        for (std::size_t i = 0; same && i < name.size(); ++i)
            same = std::toupper(static_cast<unsigned char>(name[i])) == t.name[i];
        if (same) return t;
    }
    return std::nullopt;
}

const TypeInfo& type_info(Type type) {
    const TypeInfo* t = lookup(static_cast<std::uint32_t>(type));
    if (t == nullptr)
        throw std::invalid_argument("ggml::type_info: unsupported ggml type id " +
                                    std::to_string(static_cast<std::uint32_t>(type)));
    return *t;
}

std::size_t row_bytes(Type type, std::size_t n) {
    const TypeInfo& t = type_info(type);
    if (n % t.block_elems != 0)
        throw std::invalid_argument(named("ggml::row_bytes", t, "rows of " + std::to_string(n) +
                                                                   " elements are not a whole number of " +
                                                                   std::to_string(t.block_elems) + "-element blocks"));
    return n / t.block_elems * t.block_bytes;
}

// ---- half-precision floats ------------------------------------------------------------------------

float fp16_to_fp32(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13) | (mant != 0 ? 0x400000u : 0u);  // inf, or NaN made quiet
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign;  // ±0
        } else {
            // subnormal: mant · 2^-24. Shift until the implicit 1 (bit 10) appears, one less in the
            // exponent per shift; every half subnormal is a float normal, so this is exact.
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                --exp;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    return std::bit_cast<float>(bits);
}

std::uint16_t fp32_to_fp16(float f) {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    const std::uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u;    // NaN
    if (ax >= 0x477ff000u) return sign | 0x7c00u;   // >= 65520 (half way from 65504 to 2^16) or inf: inf
    const std::uint32_t exp = ax >> 23;
    if (exp == 0) return sign;                       // float zeros and subnormals (< 2^-126): ±0
    // The value in units of the half's last place: m · 2^-shift, m the 24-bit float significand.
    // Normal halves (exp >= 113, |f| >= 2^-14) keep 10 of the 23 mantissa bits; subnormal halves count
    // in units of 2^-24, so the shift grows as the value shrinks.
    const std::uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = exp >= 113 ? 13 : 126 - exp;  // 126 - exp: 14 at 2^-15, 24 at 2^-25
    if (shift > 24) return sign;                     // below 2^-25, half the smallest subnormal: 0
    std::uint32_t h = exp >= 113 ? ((exp - 112) << 10) | ((m >> shift) & 0x3ffu) : m >> shift;
    const std::uint32_t rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1u))) ++h;  // ties to even; a carry moves to the next binade correctly
    return static_cast<std::uint16_t>(sign | h);
}

float bf16_to_fp32(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

std::uint16_t fp32_to_bf16(float f) {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 64u);  // NaN, made quiet
    return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);                // ties to even
}

// ---- rows ----------------------------------------------------------------------------------------------

void dequantize_row(Type type, std::span<const std::uint8_t> bytes, std::span<float> out) {
    const std::size_t nbytes = row_bytes(type, out.size());
    const TypeInfo& t = type_info(type);
    if (bytes.size() != nbytes)
        throw std::invalid_argument(named("ggml::dequantize_row", t, "row of " + std::to_string(out.size()) +
                                                                        " elements must have " + std::to_string(nbytes) +
                                                                        " bytes, not " + std::to_string(bytes.size())));
    const std::size_t nb = out.size() / t.block_elems;
    for (std::size_t i = 0; i < nb; ++i) dequantize_block(type, bytes.data() + i * t.block_bytes, out.data() + i * t.block_elems);
}

void quantize_activations(Type act, std::span<const float> x, std::span<std::uint8_t> out) {
    require(act == Type::Q8_0 || act == Type::Q8_1 || act == Type::Q8_K, "ggml::quantize_activations",
            "the activation type must be Q8_0, Q8_1 or Q8_K");
    const TypeInfo& t = type_info(act);
    const std::size_t nbytes = row_bytes(act, x.size());
    if (out.size() != nbytes)
        throw std::invalid_argument(named("ggml::quantize_activations", t, "blocks of " + std::to_string(x.size()) +
                                                                              " elements need " + std::to_string(nbytes) +
                                                                              " bytes, not " + std::to_string(out.size())));
    const std::size_t nb = x.size() / t.block_elems;
    for (std::size_t i = 0; i < nb; ++i) {
        const float* xb = x.data() + i * t.block_elems;
        std::uint8_t* ob = out.data() + i * t.block_bytes;
        if (act == Type::Q8_K) quantize_q8_k_block(xb, ob);
        else quantize_q8_01_block(xb, act == Type::Q8_1, ob);
    }
}

float vec_dot(Type type, std::span<const std::uint8_t> w_row, std::span<const std::uint8_t> x_act) {
    const TypeInfo* t = lookup(static_cast<std::uint32_t>(type));
    require(t != nullptr && t->is_weight && !is_float_type(type), "ggml::vec_dot",
            "the weight type must be one of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K");
    if (w_row.size() % t->block_bytes != 0)
        throw std::invalid_argument(named("ggml::vec_dot", *t, "row of " + std::to_string(w_row.size()) +
                                                                  " bytes is not a whole number of " +
                                                                  std::to_string(t->block_bytes) + "-byte blocks"));
    const std::size_t nb = w_row.size() / t->block_bytes;
    const std::size_t act_bytes = nb * type_info(t->vec_dot_type).block_bytes;
    if (x_act.size() != act_bytes)
        throw std::invalid_argument(named("ggml::vec_dot", *t, "row of " + std::to_string(nb * t->block_elems) +
                                                                  " elements needs " + std::to_string(act_bytes) + " bytes of " +
                                                                  std::string(type_info(t->vec_dot_type).name) +
                                                                  " activations, not " + std::to_string(x_act.size())));
    return detail::vec_dot_blocks(type, w_row.data(), x_act.data(), nb);
}

void matvec(Type type, std::span<const std::uint8_t> W, std::span<const float> x, std::span<float> scratch,
            std::span<float> y) {
    const std::size_t cols = x.size(), rows = y.size();
    const TypeInfo& t = check_matvec("ggml::matvec", type, W.size(), cols, rows);
    require(scratch.size() >= cols, "ggml::matvec", "scratch must hold x.size() floats (matvec_scratch_floats)");
    const std::size_t rb = cols / t.block_elems * t.block_bytes;
    for (std::size_t i = 0; i < rows; ++i) {
        for (std::size_t b = 0; b < cols / t.block_elems; ++b)
            dequantize_block(type, W.data() + i * rb + b * t.block_bytes, scratch.data() + b * t.block_elems);
        double acc = 0.0;  // double: kernels.h on long reductions
        for (std::size_t j = 0; j < cols; ++j) acc += static_cast<double>(scratch[j]) * x[j];
        y[i] = static_cast<float>(acc);
    }
}

std::size_t matvec_fast_scratch_bytes(Type type, std::size_t cols) {
    row_bytes(type, cols);  // throws, naming the type, unless cols is whole blocks
    if (is_float_type(type)) return 0;
    const std::size_t prepared = detail::prepared_bytes(type, cols);
    if (prepared == 0) return row_bytes(type_info(type).vec_dot_type, cols);
    return (detail::prepared_offset(type, cols) + prepared + 15) / 16 * 16;  // 16: each row's part aligned
}

namespace {
// x quantized to the type's activations, then prepared for the fast kernel (ggml_quant.h, detail)
void fast_activations(const TypeInfo& t, Type type, std::span<const float> x, std::span<std::uint8_t> act) {
    quantize_activations(t.vec_dot_type, x, act.first(row_bytes(t.vec_dot_type, x.size())));
    detail::prepare_activations(type, act.data(), x.size());
}
}  // namespace

void matvec_fast(Type type, std::span<const std::uint8_t> W, std::span<const float> x, std::span<std::uint8_t> scratch,
                 std::span<float> y) {
    const std::size_t cols = x.size(), rows = y.size();
    const TypeInfo& t = check_matvec("ggml::matvec_fast", type, W.size(), cols, rows);
    const std::size_t need = matvec_fast_scratch_bytes(type, cols);
    check_scratch("ggml::matvec_fast", scratch, need, "scratch too small (matvec_fast_scratch_bytes)");
    const std::size_t rb = cols / t.block_elems * t.block_bytes;
    const bool quantized = !is_float_type(type);
    if (quantized) fast_activations(t, type, x, scratch.first(need));  // once per call, for every row
    // each row computed whole on one thread (rows grouped or not: a row's arithmetic is its own), so
    // the thread count never changes a bit
    parallel_for(rows, rows * cols >= kParallelMin, [&](std::size_t i0, std::size_t i1) {
        if (quantized) {
            detail::dot_rows_fast(type, W.data() + i0 * rb, rb, i1 - i0, scratch.data(), cols, y.data() + i0);
            return;
        }
        for (std::size_t i = i0; i < i1; ++i) y[i] = detail::dot_float(type, W.data() + i * rb, x.data(), cols);
    });
}

void matmul_fast(Type type, std::span<const std::uint8_t> W, std::span<const float> X, std::size_t T,
                 std::span<std::uint8_t> scratch, std::span<float> Y) {
    require(T > 0 && X.size() % T == 0 && Y.size() % T == 0, "ggml::matmul_fast", "X and Y must hold T whole rows");
    const std::size_t cols = X.size() / T, rows = Y.size() / T;
    const TypeInfo& t = check_matvec("ggml::matmul_fast", type, W.size(), cols, rows);
    const std::size_t act = matvec_fast_scratch_bytes(type, cols);
    check_scratch("ggml::matmul_fast", scratch, T * act, "scratch too small (T * matvec_fast_scratch_bytes)");
    const bool quantized = !is_float_type(type);
    if (quantized)
        for (std::size_t r = 0; r < T; ++r) fast_activations(t, type, X.subspan(r * cols, cols), scratch.subspan(r * act, act));
    const std::size_t rb = cols / t.block_elems * t.block_bytes;
    // kRowBlock weight rows (16 rows of 896 Q8_0 values: 15 KB) stay in L1/L2 while the T activation
    // rows pass over them; threads take whole blocks
    constexpr std::size_t kRowBlock = 16;
    const std::size_t nblocks = (rows + kRowBlock - 1) / kRowBlock;
    parallel_for(nblocks, T * rows * cols >= kParallelMin, [&](std::size_t b0, std::size_t b1) {
        for (std::size_t b = b0; b < b1; ++b) {
            const std::size_t i0 = b * kRowBlock, i1 = std::min(rows, i0 + kRowBlock);
            if (quantized) {
                detail::matmul_rows_fast(type, W.data() + i0 * rb, rb, i1 - i0, scratch.data(), act, T, cols,
                                         Y.data() + i0, rows);
                continue;
            }
            for (std::size_t r = 0; r < T; ++r)
                for (std::size_t i = i0; i < i1; ++i)
                    Y[r * rows + i] = detail::dot_float(type, W.data() + i * rb, X.data() + r * cols, cols);
        }
    });
}

}  // namespace lmlab::ggml
