#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels.h"

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

}  // namespace lmlab
