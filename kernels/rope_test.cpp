#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

TEST(Rope, PositionZeroIsIdentity) {
    std::vector<float> x = {0.1f, -2.0f, 3.5f, 4.0f, 5.0f, -6.0f, 7.0f, 8.25f};
    const std::vector<float> before = x;
    rope(x, 4, 0, 10000.0f, RopeStyle::AdjacentPairs);
    EXPECT_EQ(x, before);
    rope(x, 4, 0, 10000.0f, RopeStyle::RotateHalf);
    EXPECT_EQ(x, before);
}

TEST(Rope, PairZeroTurnsByPosRadians) {
    // pair 0 always has freq theta^0 = 1, so at pos 1 it turns (1, 0) into (cos 1, sin 1)
    std::vector<float> x = {1.0f, 0.0f};
    rope(x, 2, 1, 10000.0f, RopeStyle::AdjacentPairs);
    EXPECT_NEAR(x[0], std::cos(1.0), 1e-7);
    EXPECT_NEAR(x[1], std::sin(1.0), 1e-7);
}

TEST(Rope, QuarterTurnWithThetaChosenForPiOverTwo) {
    // head_dim 4: pair 1 has freq = theta^(-2/4) = 1/sqrt(theta). With theta = (2/pi)² the freq is
    // pi/2, so at pos 1 pair 1 turns by 90°: (a, b) -> (-b, a). Pair 0 (freq 1) turns by 1 rad.
    const float theta = static_cast<float>((2.0 / M_PI) * (2.0 / M_PI));
    std::vector<float> adj = {0, 0, 2.0f, 3.0f};  // pair 1 = (x[2], x[3])
    rope(adj, 4, 1, theta, RopeStyle::AdjacentPairs);
    EXPECT_NEAR(adj[2], -3.0f, 1e-6);
    EXPECT_NEAR(adj[3], 2.0f, 1e-6);

    std::vector<float> half = {0, 2.0f, 0, 3.0f};  // rotate-half: pair 1 = (x[1], x[3])
    rope(half, 4, 1, theta, RopeStyle::RotateHalf);
    EXPECT_NEAR(half[1], -3.0f, 1e-6);
    EXPECT_NEAR(half[3], 2.0f, 1e-6);
}

TEST(Rope, AngleKeepsItsBitsAtLongPositions) {
    // Pair 1 of head_dim 4 with theta 1e6 has freq 1e-3; at pos 1,000,003 its angle is 1000.003 rad.
    // Formed in float32 (freq rounded, then pos * freq rounded, as PyTorch and llama2.c do) it comes
    // out 5.2e-5 rad off, and cos by 4.3e-5. The kernel forms the angle in double, so the result is
    // the exact rotation rounded once to float: within 1e-6 for a unit vector.
    const std::size_t pos = 1000003;
    std::vector<float> x = {0.0f, 0.0f, 1.0f, 0.0f};  // pair 1 = (x[2], x[3]) = (1, 0)
    rope(x, 4, pos, 1e6f, RopeStyle::AdjacentPairs);
    const double angle = static_cast<double>(pos) * 1e-3;
    EXPECT_NEAR(x[2], std::cos(angle), 1e-6);
    EXPECT_NEAR(x[3], std::sin(angle), 1e-6);
}

TEST(Rope, PreservesNormOfEveryPair) {
    // a rotation never changes length: |(a, b)| is the same before and after, at any position
    std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
    const std::vector<float> before = x;
    rope(x, 8, 511, 10000.0f, RopeStyle::AdjacentPairs);
    for (std::size_t i = 0; i < 8; i += 2) {
        const double n0 = std::hypot(before[i], before[i + 1]);
        const double n1 = std::hypot(x[i], x[i + 1]);
        EXPECT_NEAR(n0, n1, 1e-5);
    }
}

TEST(Rope, EveryHeadIsRotatedTheSame) {
    std::vector<float> x = {1, 2, 3, 4, 1, 2, 3, 4};  // two identical heads of dim 4
    rope(x, 4, 7, 10000.0f, RopeStyle::RotateHalf);
    for (std::size_t d = 0; d < 4; ++d) EXPECT_EQ(x[d], x[4 + d]);
    EXPECT_NE(x[0], 1.0f);
}

// rope_cos_sin: the rotation with its cos/sin given (ONNX's RotaryEmbedding takes them as inputs)

TEST(RopeCosSin, GivenRopesOwnCosSinItIsRopeBitForBit) {
    // rope() rounds cos/sin of the float64 angle pos·theta^(-2i/d) to float and rotates with them:
    // fed those same floats, rope_cos_sin must give the same bits, in both pairings
    const std::size_t head_dim = 8, pos = 37;
    std::vector<float> c(head_dim / 2), s(head_dim / 2);
    for (std::size_t i = 0; i < head_dim / 2; ++i) {
        const double angle = static_cast<double>(pos) * std::pow(10000.0, -static_cast<double>(2 * i) / head_dim);
        c[i] = static_cast<float>(std::cos(angle));
        s[i] = static_cast<float>(std::sin(angle));
    }
    for (RopeStyle style : {RopeStyle::AdjacentPairs, RopeStyle::RotateHalf}) {
        std::vector<float> a = {0.3f, -1.25f, 2.0f, 0.5f, -0.75f, 1.5f, 3.0f, -2.5f, 1, 2, 3, 4, 5, 6, 7, 8};
        std::vector<float> b = a;
        rope(a, head_dim, pos, 10000.0f, style);
        rope_cos_sin(b, head_dim, c, s, style);
        EXPECT_EQ(a, b);
    }
}

TEST(RopeCosSin, PartialRotationTurnsOnlyTheFirstRotDimElements) {
    // head_dim 8, rot_dim 4 (cos/sin of 2 entries): a quarter turn (cos 0, sin 1) sends (a, b) to (-b, a).
    // Rotate-half pairs within the rotated part: (x0, x2), (x1, x3); adjacent: (x0, x1), (x2, x3).
    // Elements 4..7 stay as they were.
    const std::vector<float> c = {0.0f, 0.0f}, s = {1.0f, 1.0f};
    std::vector<float> half = {1, 2, 3, 4, 5, 6, 7, 8};
    rope_cos_sin(half, 8, c, s, RopeStyle::RotateHalf);
    EXPECT_EQ(half, (std::vector<float>{-3, -4, 1, 2, 5, 6, 7, 8}));
    std::vector<float> adj = {1, 2, 3, 4, 5, 6, 7, 8};
    rope_cos_sin(adj, 8, c, s, RopeStyle::AdjacentPairs);
    EXPECT_EQ(adj, (std::vector<float>{-2, 1, -4, 3, 5, 6, 7, 8}));
}

TEST(RopeCosSin, EveryHeadTurnsByTheSameTable) {
    const std::vector<float> c = {0.6f}, s = {0.8f};  // a 3-4-5 rotation of pair 0 only (rot_dim 2 of 4)
    std::vector<float> x = {1, 0, 9, 9, 1, 0, 7, 7};  // two heads of dim 4
    rope_cos_sin(x, 4, c, s, RopeStyle::RotateHalf);
    EXPECT_EQ(x, (std::vector<float>{0.6f, 0.8f, 9, 9, 0.6f, 0.8f, 7, 7}));
}

TEST(RopeCosSin, BadSizesThrowNamingTheKernel) {
    std::vector<float> x(8), two(2), three(3), five(5);
    EXPECT_THROW(rope_cos_sin(x, 3, two, two, RopeStyle::RotateHalf), std::invalid_argument);   // 3 does not divide 8
    EXPECT_THROW(rope_cos_sin(x, 4, three, three, RopeStyle::RotateHalf), std::invalid_argument);  // 6 > head_dim 4
    EXPECT_THROW(rope_cos_sin(x, 8, two, three, RopeStyle::RotateHalf), std::invalid_argument);  // cos, sin differ
    EXPECT_THROW(rope_cos_sin(x, 8, {}, {}, RopeStyle::RotateHalf), std::invalid_argument);      // nothing to rotate
    try {
        rope_cos_sin(x, 8, five, five, RopeStyle::AdjacentPairs);
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("rope_cos_sin"), std::string::npos) << e.what();
    }
}

}  // namespace lmlab
