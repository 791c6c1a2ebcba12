#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

TEST(Attention, SinglePositionReturnsItsValue) {
    // one cached position: softmax of one score is 1, so out = v_0 whatever q and k are
    const std::vector<float> q = {1, 2}, k = {3, -4}, v = {0.5f, -7};
    std::vector<float> scores(1), out(2);
    attention(q, k, v, 1, 2, scores, out);
    EXPECT_EQ(scores[0], 1.0f);
    EXPECT_FLOAT_EQ(out[0], 0.5f);
    EXPECT_FLOAT_EQ(out[1], -7.0f);
}

TEST(Attention, TwoPositionsByHand) {
    // head_dim 4, scale 1/2. q·k0 = 0, q·k1 = 2 -> scores [0, 1] -> p = [0.2689414, 0.7310586]
    const std::vector<float> q = {1, 1, 0, 0};
    const std::vector<float> k = {0, 0, 1, 1,  /* t=1 */ 1, 1, 0, 0};
    const std::vector<float> v = {1, 0, 0, 0,  /* t=1 */ 0, 1, 0, 0};
    std::vector<float> scores(2), out(4);
    attention(q, k, v, 2, 4, scores, out);
    EXPECT_NEAR(scores[0], 0.2689414f, 1e-7);
    EXPECT_NEAR(scores[1], 0.7310586f, 1e-7);
    EXPECT_NEAR(out[0], 0.2689414f, 1e-7);
    EXPECT_NEAR(out[1], 0.7310586f, 1e-7);
    EXPECT_EQ(out[2], 0.0f);
}

TEST(Attention, ReadsOneHeadOutOfAStridedCache) {
    // cache rows of 4 floats hold two heads of dim 2; reading head 1 starts at offset 2, stride 4
    const std::vector<float> cache_k = {9, 9, 1, 0,  9, 9, 0, 1};
    const std::vector<float> cache_v = {9, 9, 10, 20,  9, 9, 30, 40};
    const std::vector<float> q = {100, 0};  // strongly prefers position 0 of head 1
    std::vector<float> scores(2), out(2);
    attention(q, std::span(cache_k).subspan(2), std::span(cache_v).subspan(2), 2, 4, scores, out);
    EXPECT_NEAR(out[0], 10.0f, 1e-4);
    EXPECT_NEAR(out[1], 20.0f, 1e-4);
}

}  // namespace lmlab
