// ggml's reference quantizers of the weight types (quantize_row_<type>_ref in ggml/src/ggml-quants.c):
// what llama.cpp's quantizer runs on a tensor when no importance matrix is given, repeated float
// operation for float operation, so the same floats give the same bytes. lmlab uses them to make a
// quantized copy of a float model in memory (model/quantize.cpp: `--quantize gguf-q4_k`), to see
// what a type costs without a file made elsewhere. Checked bit for bit against our Python port
// (scripts/lmlab_ref/ggml_quants.py, itself checked against the gguf package) by the stage
// kernel.ggml_quantize.
//
// Two kinds of fit:
//   - the 32-blocks (Q4_0 .. Q8_0): one scale (and min) from the block's extremes, no search;
//   - the K-quants: per sub-block a small search for the scale (and min) of least weighted error
//     (make_qkx2_quants, make_qx_quants, make_q3_quants below), then the sub-block scales are
//     themselves quantized to 4, 6 or 8 bits against one F16 scale per super-block, and the values
//     re-quantized with the scales as stored.
// Analogy: fitting a line (scale, offset) to each 16 or 32 values by trying a few slopes and
// keeping the one of least error, then storing the slopes in a coarse lookup table.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/ggml_quant.h"

// No fused multiply-adds (see ggml_quant.cpp): a·b + c must round twice, as ggml's C does.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace lmlab::ggml {

namespace {

constexpr int QK = 32;
constexpr int QK_K = 256;
constexpr float GROUP_MAX_EPS = 1e-15f;

void store_u16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8);
}
void store_f16(std::uint8_t* p, float f) { store_u16(p, fp32_to_fp16(f)); }
float f16_round(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }  // what the stored F16 reads back as

// ggml's nearest_int: adding 1.5·2^23 leaves the integer in the low mantissa bits (rounded half to
// even by the addition); valid for |v| <= 2^22 - 1, which every call below is within.
int nearest_int(float v) {
    const float shifted = v + 12582912.0f;
    std::uint32_t i;
    std::memcpy(&i, &shifted, sizeof i);
    return static_cast<int>(i & 0x007fffff) - 0x00400000;
}

// The x of largest |x| (the first on ties: ggml's `if (amax < fabsf(v))`), and that |x|.
void absmax(const float* x, int n, float& amax, float& max) {
    amax = 0.0f;
    max = 0.0f;
    for (int j = 0; j < n; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
}

// ---- the 32-blocks ------------------------------------------------------------------------------

// Q4_0 (x ≈ d·(q - 8)) and Q5_0 (x ≈ d·(q - 16)): d = the extreme value / -8 (or -16), so the
// extreme maps to code 0 and the other sign gets one code less.
void q4_0_block(const float* x, std::uint8_t* y) {
    float amax, max;
    absmax(x, QK, amax, max);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y, d);
    for (int j = 0; j < QK / 2; ++j) {
        const int q0 = std::min(15, static_cast<int>(static_cast<std::int8_t>(x[j] * id + 8.5f)));
        const int q1 = std::min(15, static_cast<int>(static_cast<std::int8_t>(x[QK / 2 + j] * id + 8.5f)));
        y[2 + j] = static_cast<std::uint8_t>(q0 | q1 << 4);
    }
}

void q5_0_block(const float* x, std::uint8_t* y) {
    float amax, max;
    absmax(x, QK, amax, max);
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y, d);
    std::uint32_t qh = 0;
    for (int j = 0; j < QK / 2; ++j) {
        const int q0 = std::min(31, static_cast<int>(static_cast<std::int8_t>(x[j] * id + 16.5f)));
        const int q1 = std::min(31, static_cast<int>(static_cast<std::int8_t>(x[QK / 2 + j] * id + 16.5f)));
        y[6 + j] = static_cast<std::uint8_t>((q0 & 0x0F) | (q1 & 0x0F) << 4);
        qh |= static_cast<std::uint32_t>((q0 & 0x10) >> 4) << j;
        qh |= static_cast<std::uint32_t>((q1 & 0x10) >> 4) << (j + QK / 2);
    }
    for (int b = 0; b < 4; ++b) y[2 + b] = static_cast<std::uint8_t>(qh >> (8 * b));
}

// Q4_1 (x ≈ d·q + m) and Q5_1: affine, m = the block's min, d = (max - min) / 15 (or 31).
void q4_1_block(const float* x, std::uint8_t* y) {
    float min = x[0], max = x[0];  // ggml starts at ±FLT_MAX; the same extremes for finite x
    for (int j = 1; j < QK; ++j) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y, d);
    store_f16(y + 2, min);
    for (int j = 0; j < QK / 2; ++j) {
        const int q0 = std::min(15, static_cast<int>(static_cast<std::int8_t>((x[j] - min) * id + 0.5f)));
        const int q1 = std::min(15, static_cast<int>(static_cast<std::int8_t>((x[QK / 2 + j] - min) * id + 0.5f)));
        y[4 + j] = static_cast<std::uint8_t>(q0 | q1 << 4);
    }
}

void q5_1_block(const float* x, std::uint8_t* y) {
    float min = x[0], max = x[0];
    for (int j = 1; j < QK; ++j) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y, d);
    store_f16(y + 2, min);
    std::uint32_t qh = 0;
    for (int j = 0; j < QK / 2; ++j) {
        const int q0 = static_cast<std::uint8_t>((x[j] - min) * id + 0.5f);  // ggml: no clamp (<= 31 here)
        const int q1 = static_cast<std::uint8_t>((x[QK / 2 + j] - min) * id + 0.5f);
        y[8 + j] = static_cast<std::uint8_t>((q0 & 0x0F) | (q1 & 0x0F) << 4);
        qh |= static_cast<std::uint32_t>((q0 & 0x10) >> 4) << j;
        qh |= static_cast<std::uint32_t>((q1 & 0x10) >> 4) << (j + QK / 2);
    }
    for (int b = 0; b < 4; ++b) y[4 + b] = static_cast<std::uint8_t>(qh >> (8 * b));
}

// ---- the fits of the K-quants ---------------------------------------------------------------------

// make_qkx2_quants: x ≈ scale·L + min (min <= 0, L in [0, nmax]) for one sub-block of n, weights w.
// The first fit spans [min, max]; then nstep + 1 other scales around it, each followed by the least-
// squares scale and min for its L; the fit of least Σ w·|error| (use_mad) or Σ w·error² is kept.
// Returns the scale; the_min = -min.
float make_qkx2_quants(int n, int nmax, const float* x, const float* w, std::uint8_t* L, float& the_min,
                       float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        std::fill(L, L + n, std::uint8_t{0});
        the_min = -min;
        return 0.0f;
    }
    float iscale = static_cast<float>(nmax) / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        L[i] = static_cast<std::uint8_t>(std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    if (nstep < 1) {
        the_min = -min;
        return scale;
    }
    std::uint8_t Laux[32];
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = static_cast<std::uint8_t>(l);
            sum_l += w[i] * static_cast<float>(l);
            sum_l2 += w[i] * static_cast<float>(l) * static_cast<float>(l);
            sum_xl += w[i] * static_cast<float>(l) * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? std::fabs(diff) : diff * diff;
                cur_error += w[i] * diff;
            }
            if (cur_error < best_error) {
                std::copy(Laux, Laux + n, L);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    the_min = -min;
    return scale;
}

// make_qx_quants with rmse_type 1 (weights x²) and no importance weights (Q6_K's call): symmetric,
// x ≈ scale·l, l in [-nmax, nmax - 1], 18 scales tried around -nmax / (the extreme x). L = l + nmax.
float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L) {
    float amax, max;
    absmax(x, n, amax, max);
    if (amax < GROUP_MAX_EPS) {
        std::fill(L, L + n, std::int8_t{0});
        return 0.0f;
    }
    float iscale = static_cast<float>(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<std::int8_t>(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * static_cast<float>(l);
        suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * static_cast<float>(l);
            suml2 += w * static_cast<float>(l) * static_cast<float>(l);
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i)
                L[i] = static_cast<std::int8_t>(nmax + std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// make_q3_quants with do_rmse (Q3_K's call): the symmetric fit, then up to 5 passes that move one
// quant at a time while Σ x²·error² drops. L = l + nmax.
float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L) {
    float amax, max;
    absmax(x, n, amax, max);
    if (amax < GROUP_MAX_EPS) {
        std::fill(L, L + n, std::int8_t{0});
        return 0.0f;
    }
    const float iscale = static_cast<float>(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<std::int8_t>(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * static_cast<float>(l);
        suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * static_cast<float>(L[i]);
            if (slx > 0) {
                float sl2 = suml2 - w * static_cast<float>(L[i]) * static_cast<float>(L[i]);
                const int new_l = std::clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * static_cast<float>(new_l);
                    sl2 += w * static_cast<float>(new_l) * static_cast<float>(new_l);
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = static_cast<std::int8_t>(new_l);
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// qs[32h + l] = L[128h + l] | L[128h + l + 32] << 2 | L[.. + 64] << 4 | L[.. + 96] << 6 (Q2_K, Q3_K)
template <typename T>
void pack_2bit(const T* L, std::uint8_t* qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = static_cast<std::uint8_t>(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

// Q4_K / Q5_K's 6-bit scale and min of sub-block j from the 12 packed bytes (ggml's get_scale_min_k4)
void scale_min_k4(int j, const std::uint8_t* q, int& d, int& m) {
    if (j < 4) {
        d = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// ---- the K-quants ------------------------------------------------------------------------------

// Q2_K (84 bytes): 16 sub-blocks of 16, x ≈ d·sc·q - dmin·m, q in [0, 3], sc and m 4 bits each.
void q2_k_block(const float* x, std::uint8_t* y) {
    std::uint8_t L[QK_K];
    float weights[16], mins[16], scales[16];
    std::uint8_t* sc = y;  // scales@0[16]
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
        scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, mins[j], -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float d = 0.0f, dmin = 0.0f;
    if (max_scale > 0) {
        const float iscale = 15.0f / max_scale;
        for (int j = 0; j < 16; ++j) sc[j] = static_cast<std::uint8_t>(nearest_int(iscale * scales[j]));
        d = max_scale / 15.0f;
    } else {
        std::fill(sc, sc + 16, std::uint8_t{0});
    }
    if (max_min > 0) {
        const float iscale = 15.0f / max_min;
        for (int j = 0; j < 16; ++j) sc[j] = static_cast<std::uint8_t>(sc[j] | nearest_int(iscale * mins[j]) << 4);
        dmin = max_min / 15.0f;
    }
    store_f16(y + 80, d);
    store_f16(y + 82, dmin);
    for (int j = 0; j < 16; ++j) {
        const float dj = f16_round(d) * static_cast<float>(sc[j] & 0xF);
        if (dj == 0.0f) continue;
        const float dm = f16_round(dmin) * static_cast<float>(sc[j] >> 4);
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = static_cast<std::uint8_t>(std::clamp(nearest_int((x[16 * j + ii] + dm) / dj), 0, 3));
    }
    pack_2bit(L, y + 16);
}

// Q3_K (110 bytes): 16 sub-blocks of 16, x ≈ d·(sc - 32)·q, q in [-4, 3] (2 low bits + a high bit
// in hmask), sc 6 bits.
void q3_k_block(const float* x, std::uint8_t* y) {
    std::int8_t L[QK_K];
    float scales[16];
    std::uint8_t* hmask = y;         // @0[32]
    std::uint8_t* sb = y + 96;       // @96[12]
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        const float scale = std::fabs(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    std::fill(sb, sb + 12, std::uint8_t{0});
    float d = 0.0f;
    if (max_scale != 0.0f) {
        const float iscale = -32.0f / max_scale;
        for (int j = 0; j < 16; ++j) {
            const int l = std::clamp(static_cast<int>(static_cast<std::int8_t>(nearest_int(iscale * scales[j]))), -32, 31) + 32;
            if (j < 8) sb[j] = static_cast<std::uint8_t>(l & 0xF);
            else sb[j - 8] = static_cast<std::uint8_t>(sb[j - 8] | (l & 0xF) << 4);
            sb[j % 4 + 8] = static_cast<std::uint8_t>(sb[j % 4 + 8] | (l >> 4) << (2 * (j / 4)));
        }
        d = 1 / iscale;
    }
    store_f16(y + 108, d);
    for (int j = 0; j < 16; ++j) {
        const int low = j < 8 ? sb[j] & 0xF : sb[j - 8] >> 4;
        const int sc = (low | ((sb[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
        const float dj = f16_round(d) * static_cast<float>(sc);
        if (dj == 0.0f) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = static_cast<std::int8_t>(std::clamp(nearest_int(x[16 * j + ii] / dj), -4, 3) + 4);
    }
    // the high bit of element j goes to bit j / 32 of hmask[j % 32]
    std::fill(hmask, hmask + 32, std::uint8_t{0});
    for (int j = 0; j < QK_K; ++j)
        if (L[j] > 3) {
            hmask[j % 32] = static_cast<std::uint8_t>(hmask[j % 32] | 1 << (j / 32));
            L[j] = static_cast<std::int8_t>(L[j] - 4);
        }
    pack_2bit(L, y + 32);
}

// Q4_K (nmax 15) and Q5_K (nmax 31): 8 sub-blocks of 32, x ≈ d·sc·q - dmin·m, sc and m 6 bits.
// Fills d@0, dmin@2, scales@4[12] and returns the quants L.
void q45_k_fit(const float* x, std::uint8_t* y, int nmax, float rmin, int nstep, std::uint8_t* L) {
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        const float* xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
        scales[j] = make_qkx2_quants(32, nmax, xs, weights, L + 32 * j, mins[j], rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    std::uint8_t* sb = y + 4;
    for (int j = 0; j < 8; ++j) {
        const int ls = std::min(63, static_cast<int>(static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j]))));
        const int lm = std::min(63, static_cast<int>(static_cast<std::uint8_t>(nearest_int(inv_min * mins[j]))));
        if (j < 4) {
            sb[j] = static_cast<std::uint8_t>(ls);
            sb[j + 4] = static_cast<std::uint8_t>(lm);
        } else {
            sb[j + 4] = static_cast<std::uint8_t>((ls & 0xF) | (lm & 0xF) << 4);
            sb[j - 4] = static_cast<std::uint8_t>(sb[j - 4] | (ls >> 4) << 6);
            sb[j] = static_cast<std::uint8_t>(sb[j] | (lm >> 4) << 6);
        }
    }
    const float d = max_scale / 63.0f, dmin = max_min / 63.0f;
    store_f16(y, d);
    store_f16(y + 2, dmin);
    for (int j = 0; j < 8; ++j) {
        int sc, m;
        scale_min_k4(j, sb, sc, m);
        const float dj = f16_round(d) * static_cast<float>(sc);
        if (dj == 0.0f) continue;
        const float dm = f16_round(dmin) * static_cast<float>(m);
        for (int ii = 0; ii < 32; ++ii)
            L[32 * j + ii] = static_cast<std::uint8_t>(std::clamp(nearest_int((x[32 * j + ii] + dm) / dj), 0, nmax));
    }
}

void q4_k_block(const float* x, std::uint8_t* y) {  // 144 bytes: d, dmin, scales[12], qs@16[128]
    std::uint8_t L[QK_K];
    q45_k_fit(x, y, 15, -1.0f, 20, L);
    std::uint8_t* q = y + 16;
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = static_cast<std::uint8_t>(L[j + l] | L[j + l + 32] << 4);
}

void q5_k_block(const float* x, std::uint8_t* y) {  // 176 bytes: d, dmin, scales[12], qh@16[32], qs@48[128]
    std::uint8_t L[QK_K];
    q45_k_fit(x, y, 31, -0.5f, 15, L);
    std::uint8_t* qh = y + 16;
    std::uint8_t* ql = y + 48;
    std::fill(qh, qh + 32, std::uint8_t{0});
    int m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32, m1 <<= 2, m2 <<= 2)
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] = static_cast<std::uint8_t>(qh[j] | m1);
            }
            if (l2 > 15) {
                l2 -= 16;
                qh[j] = static_cast<std::uint8_t>(qh[j] | m2);
            }
            ql[j] = static_cast<std::uint8_t>(l1 | l2 << 4);
        }
}

// Q6_K (210 bytes): 16 sub-blocks of 16, x ≈ d·sc·q, q in [-32, 31] (4 low bits in ql, 2 high in
// qh), sc an int8.
void q6_k_block(const float* x, std::uint8_t* y) {
    std::int8_t L[QK_K];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        const float abs_scale = std::fabs(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {  // ggml: the whole block zero, d = F16(0)
        std::fill(y, y + 210, std::uint8_t{0});
        return;
    }
    std::uint8_t* ql = y;         // @0[128]
    std::uint8_t* qh = y + 128;   // @128[64]
    std::int8_t sc[16];           // @192[16]
    const float iscale = -128.0f / max_scale;
    const float d = 1 / iscale;
    store_f16(y + 208, d);
    for (int ib = 0; ib < 16; ++ib) {
        sc[ib] = static_cast<std::int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
        y[192 + ib] = static_cast<std::uint8_t>(sc[ib]);
    }
    for (int j = 0; j < 16; ++j) {
        const float dj = f16_round(d) * static_cast<float>(sc[j]);
        if (dj == 0.0f) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = static_cast<std::int8_t>(std::clamp(nearest_int(x[16 * j + ii] / dj), -32, 31) + 32);
    }
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; ++l) {
            const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
            ql[l] = static_cast<std::uint8_t>((q1 & 0xF) | (q3 & 0xF) << 4);
            ql[l + 32] = static_cast<std::uint8_t>((q2 & 0xF) | (q4 & 0xF) << 4);
            qh[l] = static_cast<std::uint8_t>((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
        }
}

}  // namespace

void quantize_row(Type type, std::span<const float> x, std::span<std::uint8_t> out) {
    const TypeInfo& t = type_info(type);
    const std::string kernel = "ggml::quantize_row (" + std::string(t.name) + ")";
    if (!t.is_weight) throw std::invalid_argument(kernel + ": not a weight type");
    const std::size_t nbytes = row_bytes(type, x.size());
    if (out.size() != nbytes)
        throw std::invalid_argument(kernel + ": a row of " + std::to_string(x.size()) + " elements needs " +
                                    std::to_string(nbytes) + " bytes, not " + std::to_string(out.size()));
    for (std::size_t j = 0; j < x.size(); ++j)
        if (!std::isfinite(x[j]))
            throw std::invalid_argument(kernel + ": element " + std::to_string(j) + " is " + std::to_string(x[j]) +
                                        "; only finite values can be quantized");
    const std::size_t nb = x.size() / t.block_elems;
    for (std::size_t i = 0; i < nb; ++i) {
        const float* xb = x.data() + i * t.block_elems;
        std::uint8_t* yb = out.data() + i * t.block_bytes;
        switch (type) {
            case Type::F32:
                for (int b = 0; b < 4; ++b) yb[b] = static_cast<std::uint8_t>(std::bit_cast<std::uint32_t>(*xb) >> (8 * b));
                break;
            case Type::F16: store_u16(yb, fp32_to_fp16(*xb)); break;
            case Type::BF16: store_u16(yb, fp32_to_bf16(*xb)); break;
            case Type::Q4_0: q4_0_block(xb, yb); break;
            case Type::Q4_1: q4_1_block(xb, yb); break;
            case Type::Q5_0: q5_0_block(xb, yb); break;
            case Type::Q5_1: q5_1_block(xb, yb); break;
            case Type::Q8_0: quantize_activations(Type::Q8_0, {xb, 32}, {yb, 34}); break;  // one function for both
            case Type::Q2_K: q2_k_block(xb, yb); break;
            case Type::Q3_K: q3_k_block(xb, yb); break;
            case Type::Q4_K: q4_k_block(xb, yb); break;
            case Type::Q5_K: q5_k_block(xb, yb); break;
            case Type::Q6_K: q6_k_block(xb, yb); break;
            default: throw std::invalid_argument(kernel + ": no quantizer");
        }
    }
}

}  // namespace lmlab::ggml
