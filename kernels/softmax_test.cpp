#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

TEST(Softmax, OneTwoThree) {
    // exp(1), exp(2), exp(3) over their sum: the textbook example
    const std::vector<float> x = {1, 2, 3};
    std::vector<float> y(3);
    softmax(x, y);
    EXPECT_NEAR(y[0], 0.0900306f, 1e-7);
    EXPECT_NEAR(y[1], 0.2447285f, 1e-7);
    EXPECT_NEAR(y[2], 0.6652410f, 1e-7);
}

TEST(Softmax, LargeMagnitudesDoNotOverflow) {
    // without the max subtraction exp(1e4) = inf and the result is NaN
    const std::vector<float> x = {1e4f, 1e4f - 1.0f, -1e4f};
    std::vector<float> y(3);
    softmax(x, y);
    // same as softmax([1, 0, -20000]) = [e/(e+1), 1/(e+1), 0]
    EXPECT_NEAR(y[0], 0.7310586f, 1e-7);
    EXPECT_NEAR(y[1], 0.2689414f, 1e-7);
    EXPECT_EQ(y[2], 0.0f);
}

TEST(Softmax, MaskedEntryGetsExactlyZero) {
    const std::vector<float> x = {0.0f, -std::numeric_limits<float>::infinity(), 0.0f};
    std::vector<float> y(3);
    softmax(x, y);
    EXPECT_FLOAT_EQ(y[0], 0.5f);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_FLOAT_EQ(y[2], 0.5f);
}

TEST(Softmax, SingleElementIsOne) {
    std::vector<float> x = {-123.5f};
    softmax(x, x);  // in place
    EXPECT_EQ(x[0], 1.0f);
}

}  // namespace lmlab
