#include <gtest/gtest.h>

#include <cmath>

#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

TEST(Matvec, TwoByThreeByHand) {
    // W = [[1, 2, 3], [4, 5, 6]], x = [1, 0, -1]  ->  y = [1 - 3, 4 - 6] = [-2, -2]
    const std::vector<float> W = {1, 2, 3, 4, 5, 6};
    const std::vector<float> x = {1, 0, -1};
    std::vector<float> y(2);
    matvec(W, x, y);
    EXPECT_FLOAT_EQ(y[0], -2.0f);
    EXPECT_FLOAT_EQ(y[1], -2.0f);
}

TEST(Matvec, LongReductionKeepsSmallTerms) {
    // 1e8 followed by 16384 ones and then -1e8: a float accumulator would absorb every 1 into 1e8
    // (spacing of floats near 1e8 is 8) and return 0; the double accumulator returns 16384.
    const std::size_t n = 16386;
    std::vector<float> W(n, 1.0f), x(n, 1.0f);
    x.front() = 1e8f;
    x.back() = -1e8f;
    std::vector<float> y(1);
    matvec(W, x, y);
    EXPECT_FLOAT_EQ(y[0], 16384.0f);
}

TEST(Linear, AddsTheBiasAfterTheProduct) {
    // W = [[1, 2], [3, 4]], x = [1, -1], b = [0.5, -2]  ->  W x = [-1, -1], + b = [-0.5, -3]
    const std::vector<float> W = {1, 2, 3, 4}, x = {1, -1}, b = {0.5f, -2};
    std::vector<float> y(2);
    linear(W, b, x, y);
    EXPECT_EQ(y, (std::vector<float>{-0.5f, -3}));
    linear(W, {}, x, y);  // empty bias: a plain matvec
    EXPECT_EQ(y, (std::vector<float>{-1, -1}));
}

TEST(Linear, RoundsOnceWithTheBiasInTheSum) {
    // W·x = 1 + 2^-24 exactly, b = 2^-24. Rounded once, y = 1 + 2^-23 (a float). Rounding W·x first
    // gives 1 (a tie, to even), and 1 + 2^-24 rounds to 1 again: the bias would be lost.
    const float tiny = std::ldexp(1.0f, -24);
    const std::vector<float> W = {1, 1}, x = {1, tiny}, b = {tiny};
    std::vector<float> y(1);
    linear(W, b, x, y);
    EXPECT_EQ(y[0], std::nextafter(1.0f, 2.0f));
}

TEST(Linear, WrongBiasLengthThrows) {
    const std::vector<float> W = {1, 2, 3, 4}, x = {1, -1}, b = {1, 2, 3};
    std::vector<float> y(2);
    EXPECT_THROW(linear(W, b, x, y), std::invalid_argument);
}

TEST(Matvec, WrongShapeThrowsInEveryBuild) {
    // a size mismatch must never become an out-of-bounds read, even with NDEBUG
    const std::vector<float> W(5), x(2);
    std::vector<float> y(3);
    EXPECT_THROW(matvec(W, x, y), std::invalid_argument);
}

TEST(Add, ElementwiseAndInPlace) {
    std::vector<float> a = {1, -2, 0.25f};
    const std::vector<float> b = {0.5f, 2, -0.25f};
    add(a, b, a);  // y aliases a: the residual stream updated in place
    EXPECT_EQ(a, (std::vector<float>{1.5f, 0, 0}));
    std::vector<float> short_y(2);
    EXPECT_THROW(add(a, b, short_y), std::invalid_argument);
}

}  // namespace lmlab
