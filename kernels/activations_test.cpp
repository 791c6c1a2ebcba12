#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

TEST(Silu, KnownValues) {
    // silu(0) = 0; silu(1) = 1/(1+e^-1) = 0.7310586; silu(-1) = -0.2689414;
    // silu(20) = 20/(1+e^-20) = 19.99999996 (rounds to 20.0f)
    const std::vector<float> x = {0.0f, 1.0f, -1.0f, 20.0f};
    std::vector<float> y(4);
    silu(x, y);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_NEAR(y[1], 0.7310586f, 1e-7);
    EXPECT_NEAR(y[2], -0.2689414f, 1e-7);
    EXPECT_NEAR(y[3], 19.99999996, 1e-5);
}

TEST(Silu, LargeNegativeUnderflowsToMinusZeroNotNaN) {
    // exp(100) = 2.7e43 overflows float to inf; x / (1 + inf) must give -0, not NaN
    const std::vector<float> x = {-100.0f};
    std::vector<float> y(1);
    silu(x, y);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_FALSE(std::isnan(y[0]));
}

TEST(Swiglu, GateTimesUp) {
    const std::vector<float> a = {1.0f, 0.0f, -1.0f}, b = {2.0f, 5.0f, -3.0f};
    std::vector<float> y(3);
    swiglu(a, b, y);
    EXPECT_NEAR(y[0], 2 * 0.7310586f, 2e-7);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_NEAR(y[2], -3 * -0.2689414f, 2e-7);
}

TEST(Gelu, TanhFormKnownValues) {
    // 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))) evaluated in Python's math (double):
    // x = 1 -> 0.84119199; -1 -> -0.15880801; 2 -> 1.95459769; -3 -> -0.00363739
    const std::vector<float> x = {1, -1, 2, -3};
    std::vector<float> y(4);
    gelu_tanh(x, y);
    EXPECT_NEAR(y[0], 0.8411919906f, 1e-7);
    EXPECT_NEAR(y[1], -0.1588080094f, 1e-7);
    EXPECT_NEAR(y[2], 1.954597694f, 2e-7);
    EXPECT_NEAR(y[3], -0.003637392082f, 1e-9);
}

TEST(Gelu, ErfFormKnownValues) {
    // x·Φ(x): Φ(1) = 0.8413447460685429, so gelu(1) = 0.84134475 and gelu(-1) = 1·Φ(1) - 1 = -0.15865525
    const std::vector<float> x = {1, -1, 2, -3};
    std::vector<float> y(4);
    gelu_erf(x, y);
    EXPECT_NEAR(y[0], 0.8413447461f, 1e-7);
    EXPECT_NEAR(y[1], -0.1586552539f, 1e-7);
    EXPECT_NEAR(y[2], 1.954499736f, 2e-7);
    EXPECT_NEAR(y[3], -0.004049694095f, 1e-9);
}

TEST(Gelu, TheTwoFormsDifferWhereItMatters) {
    // at x = -3 the tanh form is 10% off the exact one: swapping them is a real bug, not rounding
    const std::vector<float> x = {-3};
    std::vector<float> t(1), e(1);
    gelu_tanh(x, t);
    gelu_erf(x, e);
    EXPECT_GT(std::fabs(t[0] - e[0]), 4e-4);
}

TEST(Gelu, ExtremesAndTinyValues) {
    // ±10: identity and zero (tanh/erf saturate); 1e-4: just above x/2; -100: no NaN
    const std::vector<float> x = {10, -10, 1e-4f, -100};
    for (auto fn : {gelu_tanh, gelu_erf}) {
        std::vector<float> y(4);
        fn(x, y);
        EXPECT_EQ(y[0], 10.0f);
        EXPECT_EQ(y[1], 0.0f);
        EXPECT_NEAR(y[2], 5.000398942e-5, 1e-11);  // 1e-4 · Φ(1e-4) ≈ 1e-4 · (0.5 + 1e-4 / sqrt(2π))
        EXPECT_EQ(y[3], 0.0f);
    }
}

TEST(Sigmoid, KnownValuesAndSymmetry) {
    // sigmoid(0) = 1/2; sigmoid(ln 3) = 3/4 (Qwen2-MoE's shared gate in moe_test); sigmoid(-x) = 1 - sigmoid(x)
    const std::vector<float> x = {0.0f, static_cast<float>(std::log(3.0)), 1.0f, -1.0f};
    std::vector<float> y(4);
    sigmoid(x, y);
    EXPECT_EQ(y[0], 0.5f);
    EXPECT_NEAR(y[1], 0.75f, 1e-7);
    EXPECT_NEAR(y[2], 0.7310586f, 1e-7);
    EXPECT_NEAR(y[2] + y[3], 1.0f, 1e-7);
}

TEST(Sigmoid, ExtremesSaturateWithoutNaN) {
    // exp(100) overflows float to inf: 1/(1 + inf) = 0, not NaN; exp(-100) is 3.7e-44 and 1 + it rounds to 1
    const std::vector<float> x = {-100.0f, 100.0f, -1e30f, 1e30f};
    std::vector<float> y(4);
    sigmoid(x, y);
    EXPECT_EQ(y, (std::vector<float>{0.0f, 1.0f, 0.0f, 1.0f}));
    std::vector<float> in_place = {2.0f};
    sigmoid(in_place, in_place);
    EXPECT_NEAR(in_place[0], 0.880797f, 1e-6);
    std::vector<float> short_y(3);
    EXPECT_THROW(sigmoid(x, short_y), std::invalid_argument);
}

}  // namespace lmlab
