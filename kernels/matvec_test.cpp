#include <gtest/gtest.h>

#include <vector>

#include "kernels.h"

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

TEST(Matmul, TwoByTwoByHand) {
    // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
    const std::vector<float> A = {1, 2, 3, 4}, B = {5, 6, 7, 8};
    std::vector<float> C(4);
    matmul(A, B, C, 2, 2, 2);
    EXPECT_EQ(C, (std::vector<float>{19, 22, 43, 50}));
}

TEST(Matmul, RectangularMatchesMatvecColumnByColumn) {
    // A: [2, 3], B: [3, 1] is a matvec of A with the column of B
    const std::vector<float> A = {0.5f, -1, 2, 3, 0.25f, -4}, B = {2, 4, 1};
    std::vector<float> C(2);
    matmul(A, B, C, 2, 3, 1);
    EXPECT_FLOAT_EQ(C[0], 0.5f * 2 - 4 + 2);  // -1
    EXPECT_FLOAT_EQ(C[1], 6 + 1 - 4);         // 3
}

}  // namespace lmlab
