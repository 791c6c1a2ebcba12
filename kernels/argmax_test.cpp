#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

TEST(Argmax, FirstMaximumWins) {
    const std::vector<float> x = {1, 5, 3, 5};
    EXPECT_EQ(argmax(x), 1u);
}

TEST(Argmax, NaNNeverWins) {
    const std::vector<float> x = {std::nanf(""), -1, std::nanf(""), -0.5f};
    EXPECT_EQ(argmax(x), 3u);
}

}  // namespace lmlab
