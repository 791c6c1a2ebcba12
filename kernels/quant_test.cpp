#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

using Q = std::vector<std::int8_t>;

TEST(QuantizeQ8_0, HalvesRoundAwayFromZeroAsCRound) {
    // max|x| = 127 -> scale = 1 exactly, so x / scale = x: the halves are exact.
    // C's round(): 2.5 -> 3, -0.5 -> -1, 0.5 -> 1, -2.5 -> -3 (torch.round: 2, -0, 0, -2).
    const std::vector<float> x = {127, 2.5f, -0.5f, 0.5f, -2.5f, 1.5f, -126.5f, 0.49999997f};
    Q q(8);
    std::vector<float> s(1);
    quantize_q8_0(x, 8, q, s);
    EXPECT_EQ(s[0], 1.0f);
    EXPECT_EQ(q, (Q{127, 3, -1, 1, -3, 2, -127, 0}));
}

TEST(QuantizeQ8_0, ScaleIsMaxAbsOver127) {
    // max|x| = 254 (a negative value) -> scale = 2: 5 / 2 = 2.5 -> 3, -3 / 2 = -1.5 -> -2, 1 / 2 -> 1
    const std::vector<float> x = {5, -254, -3, 1};
    Q q(4);
    std::vector<float> s(1);
    quantize_q8_0(x, 4, q, s);
    EXPECT_EQ(s[0], 2.0f);
    EXPECT_EQ(q, (Q{3, -127, -2, 1}));
    // a scale that is not a power of two: one float division, max|x| / 127
    const std::vector<float> y = {0.3f, -0.1f};
    Q qy(2);
    quantize_q8_0(y, 2, qy, s);
    EXPECT_EQ(s[0], 0.3f / 127.0f);
    EXPECT_EQ(qy, (Q{127, static_cast<std::int8_t>(std::round(-0.1f / (0.3f / 127.0f)))}));
    EXPECT_EQ(qy[1], -42);  // -0.1 / 0.3 · 127 = -42.33
}

TEST(QuantizeQ8_0, EachGroupHasItsOwnScaleUpToTheLastGroup) {
    // 12 elements in groups of 4: an outlier (1270) coarsens only its own group's scale
    const std::vector<float> x = {1, 2, 3, 127, 1270, 10, -20, 5, -0.25f, 0.5f, 0.125f, 0.127f};
    Q q(12);
    std::vector<float> s(3);
    quantize_q8_0(x, 4, q, s);
    EXPECT_EQ(s[0], 1.0f);
    EXPECT_EQ(s[1], 10.0f);
    EXPECT_EQ(s[2], 0.5f / 127.0f);
    EXPECT_EQ(q[0], 1);
    EXPECT_EQ(q[3], 127);
    EXPECT_EQ(q[4], 127);
    EXPECT_EQ(q[5], 1);
    EXPECT_EQ(q[6], -2);
    EXPECT_EQ(q[7], 1);  // 5 / 10 = 0.5 -> 1 (away from zero)
    EXPECT_EQ(q[9], 127);   // the last group: its max
    EXPECT_EQ(q[8], static_cast<std::int8_t>(std::round(-0.25f / s[2])));
    EXPECT_EQ(q[8], -64);  // -0.25 / (0.5 / 127) = -63.5 (in float: just past it) -> -64
}

TEST(QuantizeQ8_0, ZeroGroupHasScaleZeroAndZeros) {
    // runq.c divides 0 by 0 here (NaN cast to int8: undefined behaviour); we define q = 0, scale 0
    const std::vector<float> x = {0, 0, -0.0f, 0, 127, 1, 2, 3};
    Q q(8, 99);
    std::vector<float> s(2);
    quantize_q8_0(x, 4, q, s);
    EXPECT_EQ(s[0], 0.0f);
    EXPECT_EQ(q, (Q{0, 0, 0, 0, 127, 1, 2, 3}));
    std::vector<float> back(8);
    dequantize_q8_0(q, s, 4, back);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], 0.0f);
}

TEST(QuantizeQ8_0, SubnormalScalesAreClampedOrZero) {
    const float d = std::numeric_limits<float>::denorm_min();
    Q q(1);
    std::vector<float> s(1);
    // max|x| = 190·d: 190/127 = 1.496 d rounds to the subnormal d, and x / d = 190 > 127: clamped
    // (runq.c's cast to int8 would overflow)
    quantize_q8_0(std::vector<float>{190 * d}, 1, q, s);
    EXPECT_EQ(s[0], d);
    EXPECT_EQ(q[0], 127);
    // max|x| = 60·d: 60/127 d underflows to 0: a zero group although x is not 0
    quantize_q8_0(std::vector<float>{-60 * d}, 1, q, s);
    EXPECT_EQ(s[0], 0.0f);
    EXPECT_EQ(q[0], 0);
}

TEST(QuantizeQ8_0, NonFiniteGroupGetsANaNScale) {
    const std::vector<float> x = {1, NAN, 2, 3, 4, 5, -INFINITY, 6, 127, 0, 0, 0};
    Q q(12, 99);
    std::vector<float> s(3);
    quantize_q8_0(x, 4, q, s);
    EXPECT_TRUE(std::isnan(s[0]));
    EXPECT_TRUE(std::isnan(s[1]));
    EXPECT_EQ(s[2], 1.0f);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(q[i], 0);
    // the NaN reaches the output of a matvec that reads the group
    std::vector<float> y(1);
    matvec_q8_0(Q(12, 1), std::vector<float>{1, 1, 1}, q, s, 4, y);
    EXPECT_TRUE(std::isnan(y[0]));
}

TEST(QuantizeQ8_0, RoundTripErrorIsAtMostHalfAScale) {
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(1024), back(1024);
    for (float& v : x) v = dist(rng);
    Q q(1024);
    std::vector<float> s(16);
    quantize_q8_0(x, 64, q, s);
    dequantize_q8_0(q, s, 64, back);
    for (std::size_t i = 0; i < x.size(); ++i) {
        EXPECT_LE(std::fabs(x[i] - back[i]), 0.5f * s[i / 64] * (1 + 1e-5f)) << i;
        EXPECT_EQ(back[i], static_cast<float>(q[i]) * s[i / 64]);  // runq.c's dequantize: q · s
    }
}

TEST(QuantizeQ8_0, LengthNotAMultipleOfTheGroupThrows) {
    Q q(10);
    std::vector<float> s(2);
    EXPECT_THROW(quantize_q8_0(std::vector<float>(10, 1.0f), 4, q, s), std::invalid_argument);
    EXPECT_THROW(quantize_q8_0(std::vector<float>(10, 1.0f), 0, q, s), std::invalid_argument);
    Q q8(8);
    EXPECT_THROW(quantize_q8_0(std::vector<float>(8, 1.0f), 4, q8, s = std::vector<float>(3)), std::invalid_argument);
    std::vector<float> y(1);
    EXPECT_THROW(matvec_q8_0(Q(10), std::vector<float>(2), Q(10), std::vector<float>(2), 4, y), std::invalid_argument);
    try {
        quantize_q8_0(std::vector<float>(10, 1.0f), 4, q, s = std::vector<float>(2));
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("not a multiple of the group size 4"), std::string::npos) << e.what();
    }
}

TEST(MatvecQ8_0, TwoByFourByHand) {
    // W = [[1, 2 | 3, 4], [-1, -2 | -3, -4]] in groups of 2, row scales [0.5, 2] and [1, 0.25];
    // xq = [1, -1 | 2, 0], xs = [1, 0.5].
    // row 0: group 0: 1 - 2 = -1 -> -1 · 0.5 · 1 = -0.5; group 1: 6 + 0 -> 6 · 2 · 0.5 = 6;  y0 = 5.5
    // row 1: group 0: -1 + 2 = 1 -> 1 · 1 · 1 = 1;      group 1: -6 -> -6 · 0.25 · 0.5 = -0.75; y1 = 0.25
    const Q Wq = {1, 2, 3, 4, -1, -2, -3, -4}, xq = {1, -1, 2, 0};
    const std::vector<float> Ws = {0.5f, 2, 1, 0.25f}, xs = {1, 0.5f};
    std::vector<float> y(2);
    matvec_q8_0(Wq, Ws, xq, xs, 2, y);
    EXPECT_EQ(y, (std::vector<float>{5.5f, 0.25f}));
}

TEST(MatvecQ8_0, GroupSumsAreExactInt32) {
    // 64 products of 127 · 127 = 1032256 (far past int8 and int16), and -127 · 127 in the second group
    Q w(128, 127), x(128, 127);
    for (std::size_t k = 64; k < 128; ++k) x[k] = -127;
    std::vector<float> y(1);
    matvec_q8_0(w, std::vector<float>{1, 1}, x, std::vector<float>{1, 1}, 64, y);
    EXPECT_EQ(y[0], 0.0f);  // 1032256 - 1032256
    matvec_q8_0(w, std::vector<float>{1, 0.5f}, x, std::vector<float>{1, 1}, 64, y);
    EXPECT_EQ(y[0], 516128.0f);  // 1032256 - 516128
    // the largest group: 127 · 127 · kQ8MaxGroup still fits in int32
    Q big(kQ8MaxGroup, -127);
    matvec_q8_0(big, std::vector<float>{1}, Q(kQ8MaxGroup, 127), std::vector<float>{1}, kQ8MaxGroup, y);
    EXPECT_EQ(y[0], static_cast<float>(-16129LL * static_cast<long long>(kQ8MaxGroup)));
}

TEST(MatvecQ8_0, GroupsAccumulateInFloatInOrderAsRunqC) {
    // group 0 contributes 2^24, group 1 contributes 1: a float accumulator rounds 2^24 + 1 to 2^24
    // (runq.c's `float val`); a double one would give 2^24 + 1
    const Q w = {1, 1}, x = {1, 1};
    std::vector<float> y(1);
    matvec_q8_0(w, std::vector<float>{16777216.0f, 1}, x, std::vector<float>{1, 1}, 1, y);
    EXPECT_EQ(y[0], 16777216.0f);
    // (ival · ws) · xs, in that order: 3 · (1/3 as float) rounds before · 3
    const float third = 1.0f / 3.0f;
    matvec_q8_0(Q{3}, std::vector<float>{third}, Q{1}, std::vector<float>{3}, 1, y);
    EXPECT_EQ(y[0], (3.0f * third) * 3.0f);
}

TEST(MatvecQ8_0, QuantizedProductApproximatesTheFloatOne) {
    std::mt19937 rng(11);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    const std::size_t out = 32, in = 256, g = 64;
    std::vector<float> W(out * in), x(in), yf(out), yq(out);
    for (float& v : W) v = dist(rng) / 16.0f;
    for (float& v : x) v = dist(rng);
    Q Wq(out * in), xq(in);
    std::vector<float> Ws(out * in / g), xs(in / g);
    for (std::size_t i = 0; i < out; ++i)
        quantize_q8_0(std::span<const float>(W).subspan(i * in, in), g, std::span<std::int8_t>(Wq).subspan(i * in, in),
                      std::span<float>(Ws).subspan(i * in / g, in / g));
    quantize_q8_0(x, g, xq, xs);
    matvec(W, x, yf);
    matvec_q8_0(Wq, Ws, xq, xs, g, yq);
    for (std::size_t i = 0; i < out; ++i) EXPECT_NEAR(yq[i], yf[i], 0.02) << i;  // |y| ~ 1, relative error ~1%
}

}  // namespace lmlab
