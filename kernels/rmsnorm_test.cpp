#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels.h"

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

}  // namespace lmlab
