#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

TEST(RmsNorm, KnownVector) {
    // x = [3, 4]: mean(x²) = 12.5, rms = 3.5355339; with eps = 0 -> x / rms = [0.8485281, 1.1313708]
    // weight [1, 2] scales the second element
    const std::vector<float> x = {3, 4}, w = {1, 2};
    std::vector<float> y(2);
    rmsnorm(x, w, 0.0f, y);
    EXPECT_NEAR(y[0], 0.8485281f, 1e-7);
    EXPECT_NEAR(y[1], 2 * 1.1313708f, 3e-7);
}

TEST(RmsNorm, AllZerosStayZeroThanksToEps) {
    const std::vector<float> x(8, 0.0f), w(8, 1.0f);
    std::vector<float> y(8, 42.0f);
    rmsnorm(x, w, 1e-5f, y);
    for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(RmsNorm, EpsDominatesTinyValues) {
    // x = 1e-6 everywhere: mean(x²) = 1e-12 << eps = 1e-5, so y ≈ x / sqrt(1e-5) = 3.1622776e-4
    const std::vector<float> x(4, 1e-6f), w(4, 1.0f);
    std::vector<float> y(4);
    rmsnorm(x, w, 1e-5f, y);
    // (relative 1e-6: 1e-6f and 1e-5f are themselves rounded to float)
    for (float v : y) EXPECT_NEAR(v, 1e-6 / std::sqrt(1e-5 + 1e-12), 3.2e-4 * 1e-6);
}

TEST(LayerNorm, KnownVector) {
    // x = [1, 2, 3, 4]: mean 2.5, deviations [-1.5, -0.5, 0.5, 1.5], biased variance 1.25,
    // std sqrt(1.25) = 1.1180340 -> normalised [-1.3416408, -0.4472136, 0.4472136, 1.3416408];
    // weight [1, 2, 1, 1], bias [0, 0, 1, -1]
    const std::vector<float> x = {1, 2, 3, 4}, w = {1, 2, 1, 1}, b = {0, 0, 1, -1};
    std::vector<float> y(4);
    layernorm(x, w, b, 0.0f, y);
    EXPECT_NEAR(y[0], -1.3416408f, 2e-7);
    EXPECT_NEAR(y[1], 2 * -0.4472136f, 2e-7);
    EXPECT_NEAR(y[2], 1.4472136f, 2e-7);
    EXPECT_NEAR(y[3], 0.3416408f, 2e-7);
}

TEST(LayerNorm, ConstantVectorGivesTheBias) {
    // variance 0: eps keeps 1/sqrt finite and every deviation is 0, so y = bias exactly
    const std::vector<float> x(5, 3.25f), w(5, 2.0f), b = {0.5f, -1, 0, 7, 1e-3f};
    std::vector<float> y(5);
    layernorm(x, w, b, 1e-5f, y);
    EXPECT_EQ(y, b);
}

TEST(LayerNorm, LargeOffsetDoesNotCancel) {
    // x = 1e4 ± 2^-7·1.25 (both exact in float): one-pass E[x²]-E[x]² computes 1e8 - 1e8 and loses
    // the variance entirely. Two-pass: ±0.009765625 / sqrt(0.009765625² + 1e-5) = ±0.95136429
    const std::vector<float> x = {10000.0f - 0.009765625f, 10000.0f + 0.009765625f}, w(2, 1.0f), b(2, 0.0f);
    std::vector<float> y(2);
    layernorm(x, w, b, 1e-5f, y);
    const double expect = 0.009765625 / std::sqrt(0.009765625 * 0.009765625 + 1e-5);
    EXPECT_NEAR(y[0], -expect, 1e-6);
    EXPECT_NEAR(y[1], expect, 1e-6);
}

TEST(LayerNorm, DimOneIsTheBias) {
    // a single element always equals its mean
    const std::vector<float> x = {42}, w = {3}, b = {-0.5f};
    std::vector<float> y(1);
    layernorm(x, w, b, 1e-5f, y);
    EXPECT_EQ(y[0], -0.5f);
}

}  // namespace lmlab
