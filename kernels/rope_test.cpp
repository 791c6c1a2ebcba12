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

// ---- RoPE scaling (rope_frequencies): each kind by hand ----------------------------------------------

namespace {
std::vector<double> frequencies(std::size_t head_dim, double theta, const RopeScaling& s, std::size_t seq_len,
                                double* factor = nullptr) {
    std::vector<double> f(head_dim / 2);
    const double a = rope_frequencies(head_dim, theta, s, seq_len, f);
    if (factor) *factor = a;
    return f;
}
RopeScaling scaling(RopeScalingKind kind, double factor, std::size_t original) {
    RopeScaling s;
    s.kind = kind;
    s.factor = factor;
    s.original_context = original;
    return s;
}
}  // namespace

TEST(RopeScaling, NoneIsThetaToTheMinusTwoIOverD) {
    const auto f = frequencies(8, 10000.0, RopeScaling{}, 0);
    for (std::size_t i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(f[i], 1.0 / std::pow(10000.0, 2.0 * i / 8.0));
}

TEST(RopeScaling, LinearDividesEveryFrequency) {
    const auto plain = frequencies(8, 10000.0, RopeScaling{}, 0);
    const auto f = frequencies(8, 10000.0, scaling(RopeScalingKind::Linear, 4.0, 2048), 0);
    for (std::size_t i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(f[i], plain[i] / 4.0);
}

TEST(RopeScaling, DynamicIsUnscaledUpToTheOriginalContextThenGrowsTheBase) {
    const RopeScaling s = scaling(RopeScalingKind::Dynamic, 2.0, 100);
    const auto plain = frequencies(8, 10000.0, RopeScaling{}, 0);
    EXPECT_EQ(frequencies(8, 10000.0, s, 50), plain);
    EXPECT_EQ(frequencies(8, 10000.0, s, 100), plain);
    // 300 positions: base = 10000 * (2 * 300 / 100 - 1)^(8 / 6) = 10000 * 5^(4/3)
    const auto f = frequencies(8, 10000.0, s, 300);
    const double base = 10000.0 * std::pow(5.0, 8.0 / 6.0);
    EXPECT_DOUBLE_EQ(f[0], 1.0);  // the fastest pair is never slowed down
    for (std::size_t i = 1; i < 4; ++i) EXPECT_NEAR(f[i], 1.0 / std::pow(base, 2.0 * i / 8.0), 1e-15);
    EXPECT_LT(f[3], plain[3]);
}

TEST(RopeScaling, Llama3KeepsShortWavelengthsDividesLongOnesBlendsBetween) {
    // head_dim 8, theta 10000: wavelengths 2π·10000^(i/4) = 6.28, 62.8, 628, 6283. Original context
    // 1000, low 1, high 4: wavelengths under 250 kept, over 1000 divided by 8, between blended with
    // smooth = (1000 / wavelength - 1) / 3
    RopeScaling s = scaling(RopeScalingKind::Llama3, 8.0, 1000);
    s.low_freq_factor = 1.0;
    s.high_freq_factor = 4.0;
    const auto plain = frequencies(8, 10000.0, RopeScaling{}, 0);
    const auto f = frequencies(8, 10000.0, s, 0);
    EXPECT_EQ(f[0], plain[0]);
    EXPECT_EQ(f[1], plain[1]);
    const double smooth = (1000.0 / (2 * M_PI / plain[2]) - 1.0) / 3.0;
    EXPECT_NEAR(f[2], (1 - smooth) * plain[2] / 8.0 + smooth * plain[2], 1e-15);
    EXPECT_GT(smooth, 0.0);
    EXPECT_LT(smooth, 1.0);
    EXPECT_DOUBLE_EQ(f[3], plain[3] / 8.0);
}

TEST(RopeScaling, YarnRampsFromKeptToDividedAndReturnsItsAttentionFactor) {
    // head_dim 16, theta 10000, original 32: the correction dims of 32 and 1 rotations are -1.6
    // (floor -2, clamped to 0) and 1.41 (ceil 2): pair 0 kept, pair 1 half-way, pairs 2.. divided
    RopeScaling s = scaling(RopeScalingKind::Yarn, 4.0, 32);
    s.attention_factor = 1.25;
    const auto plain = frequencies(16, 10000.0, RopeScaling{}, 0);
    double factor = 0;
    const auto f = frequencies(16, 10000.0, s, 0, &factor);
    EXPECT_EQ(factor, 1.25);
    EXPECT_DOUBLE_EQ(f[0], plain[0]);
    EXPECT_DOUBLE_EQ(f[1], 0.5 * plain[1] / 4.0 + 0.5 * plain[1]);
    for (std::size_t i = 2; i < 8; ++i) EXPECT_DOUBLE_EQ(f[i], plain[i] / 4.0);
}

TEST(RopeScaling, TheAttentionFactorScalesTheRotatedVector) {
    // cos and sin times 1.5: every pair's length grows by 1.5 (yarn's scores grow by 1.5²)
    std::vector<float> x = {3, 4, 1, 0};
    const std::vector<double> f = {1.0, 0.01};
    rope(x, 4, 5, f, 1.5, RopeStyle::AdjacentPairs);
    EXPECT_NEAR(std::hypot(x[0], x[1]), 7.5, 1e-5);
    EXPECT_NEAR(std::hypot(x[2], x[3]), 1.5, 1e-6);
}

TEST(RopeScaling, BadNumbersThrow) {
    std::vector<double> f(4);
    EXPECT_THROW(rope_frequencies(8, 1e4, scaling(RopeScalingKind::Linear, 0.5, 10), 0, f), std::invalid_argument);
    EXPECT_THROW(rope_frequencies(8, 1e4, scaling(RopeScalingKind::Yarn, 2.0, 0), 0, f), std::invalid_argument);
    EXPECT_THROW(rope_frequencies(8, 1e4, RopeScaling{}, 0, std::span<double>(f).first(3)), std::invalid_argument);
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
