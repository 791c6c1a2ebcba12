#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "compare.h"

namespace lmlab {

TEST(Compare, IdenticalArraysHaveZeroError) {
    const std::vector<float> a = {1, -2, 3};
    const Metrics m = compare(a, a, {}, {1e-5, 1.3e-6});
    EXPECT_TRUE(m.passed());
    EXPECT_EQ(m.max_abs, 0.0);
    EXPECT_EQ(m.max_ulp, 0.0);
    EXPECT_DOUBLE_EQ(m.cosine, 1.0);
    EXPECT_FALSE(m.has_reference64);
}

TEST(Compare, AssertCloseRuleAndWorstElement) {
    // |a-b| <= atol + rtol·|b| with atol 0.1, rtol 0.1: element 1 (diff 0.5 > 0.1 + 0.2) fails
    const std::vector<float> ours = {1.05f, 2.5f, 10.5f}, torch = {1.0f, 2.0f, 10.0f};
    const Metrics m = compare(ours, torch, {}, {0.1, 0.1});
    EXPECT_EQ(m.n_mismatch, 1u);
    EXPECT_NEAR(m.max_abs, 0.5, 1e-6);
    EXPECT_EQ(m.max_abs_index, 1u);  // 0.5 at index 1 and 2: the first wins
    EXPECT_NEAR(m.max_rel, 0.25, 1e-6);
    EXPECT_EQ(m.max_rel_index, 1u);
    EXPECT_NEAR(m.mean_abs, (0.05 + 0.5 + 0.5) / 3, 1e-6);
    EXPECT_NEAR(m.nmse, (0.0025 + 0.25 + 0.25) / (1 + 4 + 100), 1e-6);
    EXPECT_FLOAT_EQ(m.ours_at_worst, 2.5f);
    EXPECT_FLOAT_EQ(m.torch_at_worst, 2.0f);
}

TEST(Compare, UlpDistanceOfNeighbouringFloats) {
    const float one = 1.0f;
    const std::vector<float> ours = {std::nextafter(std::nextafter(one, 2.0f), 2.0f)}, torch = {one};
    EXPECT_EQ(compare(ours, torch, {}, {0, 0}).max_ulp, 2.0);
    // across zero: -0 and +0 compare equal (0 apart); the smallest positive and negative
    // denormals are 2 apart (-denorm, ±0, +denorm)
    const std::vector<float> pz = {0.0f}, nz = {-0.0f};
    EXPECT_EQ(compare(pz, nz, {}, {0, 0}).max_ulp, 0.0);
    const std::vector<float> a = {std::numeric_limits<float>::denorm_min()}, b = {-std::numeric_limits<float>::denorm_min()};
    EXPECT_EQ(compare(a, b, {}, {1, 0}).max_ulp, 2.0);
}

TEST(Compare, NanOrInfWhereTorchIsFiniteAlwaysFails) {
    const std::vector<float> ours = {std::nanf(""), std::numeric_limits<float>::infinity()}, torch = {0.0f, 1.0f};
    const Metrics m = compare(ours, torch, {}, {1e30, 1e30});
    EXPECT_EQ(m.n_mismatch, 2u);
}

TEST(Compare, MatchingInfinitiesPass) {
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> ours = {-inf, 1.0f}, torch = {-inf, 1.0f};
    const Metrics m = compare(ours, torch, {}, {0, 0});
    EXPECT_TRUE(m.passed());
    EXPECT_EQ(m.max_abs, 0.0);
}

TEST(Compare, AccuracyRatioAgainstFloat64Truth) {
    // truth 1/3; ours is off by 1e-8, torch by 4e-8 -> ratio 0.25 (we are closer)
    const std::vector<double> truth = {1.0 / 3.0};
    const std::vector<float> ours = {static_cast<float>(1.0 / 3.0 + 1e-8)}, torch = {static_cast<float>(1.0 / 3.0 + 4e-8)};
    const Metrics m = compare(ours, torch, truth, {1e-5, 0});
    ASSERT_TRUE(m.has_reference64);
    EXPECT_NEAR(m.ours_err64, std::fabs(static_cast<double>(ours[0]) - truth[0]), 1e-15);
    EXPECT_NEAR(m.accuracy_ratio, std::fabs(ours[0] - truth[0]) / std::fabs(torch[0] - truth[0]), 1e-9);
    EXPECT_LT(m.accuracy_ratio, 1.0);
}

TEST(Compare, MessageReadsLikeAssertClose) {
    const std::vector<float> ours(100, 0.0f);
    std::vector<float> torch(100, 0.0f);
    torch[42] = 1.0f;
    const Metrics m = compare(ours, torch, {}, {1e-5, 1.3e-6});
    const std::string msg = mismatch_message(m, {10, 10}, {1e-5, 1.3e-6});
    EXPECT_NE(msg.find("Mismatched elements: 1 / 100 (1.0%)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Greatest absolute difference: 1 at index (4, 2) (up to 1e-05 allowed)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Greatest relative difference: 1 at index (4, 2) (up to 1.3e-06 allowed)"), std::string::npos) << msg;
}

TEST(Compare, IndexStr) {
    EXPECT_EQ(index_str(5, {7}), "(5,)");
    EXPECT_EQ(index_str(4, {2, 3}), "(1, 1)");
    EXPECT_EQ(index_str(23, {2, 3, 4}), "(1, 2, 3)");
}

}  // namespace lmlab
