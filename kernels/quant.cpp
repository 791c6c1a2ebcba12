// Q8_0 int8 quantization, as llama2.c's runq.c does it (see kernels.h for the rules and shapes).
// runq.c: quantize(), dequantize() and matmul(); the arithmetic below is the same, operation for
// operation and in the same order, so that the same inputs give the same bits.
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

namespace {

constexpr std::size_t kLanes = 16;  // int32 partial sums of a group's products (one SSE/AVX register's worth of int8)

void require_groups(std::size_t n, std::size_t group, const char* kernel) {
    require(group > 0, kernel, "group must be positive");
    require(group <= kQ8MaxGroup, kernel, "group must be at most kQ8MaxGroup (int32 group sums could overflow)");
    if (n % group != 0)
        throw std::invalid_argument(std::string(kernel) + ": length " + std::to_string(n) +
                                    " is not a multiple of the group size " + std::to_string(group) +
                                    " (Q8_0 needs whole groups; llama2.c requires it too)");
}

}  // namespace

void quantize_q8_0(std::span<const float> x, std::size_t group, std::span<std::int8_t> q, std::span<float> scales) {
    require_groups(x.size(), group, "quantize_q8_0");
    require(q.size() == x.size(), "quantize_q8_0", "q must have x.size() elements");
    require(scales.size() == x.size() / group, "quantize_q8_0", "scales must have x.size() / group elements");
    for (std::size_t g = 0; g < scales.size(); ++g) {
        const float* xg = x.data() + g * group;
        std::int8_t* qg = q.data() + g * group;
        // wmax = max |x| over the group (runq.c: `if (val > wmax)`, so a NaN never becomes the max)
        float wmax = 0.0f;
        bool finite = true;
        for (std::size_t i = 0; i < group; ++i) {
            const float v = std::fabs(xg[i]);
            if (v > wmax) wmax = v;
            finite = finite && std::isfinite(v);
        }
        const float scale = wmax / 127.0f;  // one float division, as runq.c (Q_MAX = 127.0f)
        if (!finite) {
            // inf or NaN in the group: runq.c would cast NaN to int8 (undefined behaviour). A NaN
            // scale with zeros makes every output that reads this group NaN, so it is not lost.
            scales[g] = NAN;
            for (std::size_t i = 0; i < group; ++i) qg[i] = 0;
            continue;
        }
        scales[g] = scale;
        if (scale == 0.0f) {
            // an all-zero group (or one so tiny that max|x|/127 underflows to 0): runq.c computes
            // 0/0 = NaN and casts it to int8 (undefined; 0 on x86). Here q = 0: the group is exactly 0.
            for (std::size_t i = 0; i < group; ++i) qg[i] = 0;
            continue;
        }
        for (std::size_t i = 0; i < group; ++i) {
            const float v = xg[i] / scale;  // float division, as runq.c
            // C's round(): halves away from zero (round(2.5) = 3, round(-0.5) = -1), NOT torch.round's
            // halves-to-even. Clamped to ±127: |v| <= 127 always, except when a subnormal scale was
            // rounded down (max|x| < ~1.5e-36), where runq.c's cast would overflow int8.
            const float r = std::round(v);
            qg[i] = static_cast<std::int8_t>(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
        }
    }
}

void dequantize_q8_0(std::span<const std::int8_t> q, std::span<const float> scales, std::size_t group,
                     std::span<float> x) {
    require_groups(q.size(), group, "dequantize_q8_0");
    require(x.size() == q.size(), "dequantize_q8_0", "x must have q.size() elements");
    require(scales.size() == q.size() / group, "dequantize_q8_0", "scales must have q.size() / group elements");
    for (std::size_t i = 0; i < q.size(); ++i) x[i] = static_cast<float>(q[i]) * scales[i / group];  // runq.c: q * s
}

void matvec_q8_0(std::span<const std::int8_t> Wq, std::span<const float> Ws, std::span<const std::int8_t> xq,
                 std::span<const float> xs, std::size_t group, std::span<float> y) {
    const std::size_t in = xq.size(), out = y.size();
    require_groups(in, group, "matvec_q8_0");
    const std::size_t n_groups = in / group;
    require(Wq.size() == out * in, "matvec_q8_0", "Wq must have y.size() * xq.size() elements ([out, in])");
    require(Ws.size() == out * n_groups, "matvec_q8_0", "Ws must have y.size() * xq.size() / group elements");
    require(xs.size() == n_groups, "matvec_q8_0", "xs must have xq.size() / group elements");
    for (std::size_t i = 0; i < out; ++i) {
        const std::int8_t* w = Wq.data() + i * in;
        const float* ws = Ws.data() + i * n_groups;
        float val = 0.0f;  // a float accumulator over the groups, as runq.c
        for (std::size_t g = 0; g < n_groups; ++g) {
            // integer dot product of one group: exact (|sum| <= 127·127·group < 2^31). Integer addition
            // is associative, so summing in kLanes partial sums gives runq.c's ival exactly; the lanes
            // only let the compiler vectorise the loop (about 4x faster at -O2 for groups of 64; for
            // groups shorter than kLanes the plain loop is faster).
            const std::int8_t* a = xq.data() + g * group;
            const std::int8_t* b = w + g * group;
            std::int32_t ival = 0;
            if (group < kLanes) {
                for (std::size_t k = 0; k < group; ++k) ival += static_cast<std::int32_t>(a[k]) * static_cast<std::int32_t>(b[k]);
            } else {
                std::int32_t lanes[kLanes] = {};
                std::size_t k = 0;
                for (; k + kLanes <= group; k += kLanes)
                    for (std::size_t j = 0; j < kLanes; ++j)
                        lanes[j] += static_cast<std::int32_t>(a[k + j]) * static_cast<std::int32_t>(b[k + j]);
                for (std::size_t j = 0; k + j < group; ++j)
                    lanes[j] += static_cast<std::int32_t>(a[k + j]) * static_cast<std::int32_t>(b[k + j]);
                for (std::int32_t lane : lanes) ival += lane;
            }
            // runq.c: val += ((float) ival) * w->s[...] * x->s[...]: (ival · ws) · xs, then the add
            val += (static_cast<float>(ival) * ws[g]) * xs[g];
        }
        y[i] = val;
    }
}

}  // namespace lmlab
