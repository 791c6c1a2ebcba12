#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "harness/compare.h"

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

// ---- where the error sits (report.html's plots) ---------------------------------------------------

// x moved up by n representable floats
float ulps_up(float x, int n) {
    for (int i = 0; i < n; ++i) x = std::nextafter(x, INFINITY);
    return x;
}

TEST(Compare, UlpHistogramBinsByPowersOfTwo) {
    const float nan = std::nanf("");
    // distances 0, 0 (both NaN), 1, 2, 3, 4, 7, 8, 2^20, and NaN against a number
    const std::vector<float> torch = {1, nan, 1, 1, 1, 1, 1, 1, 1, 1};
    const std::vector<float> ours = {1, nan, ulps_up(1, 1), ulps_up(1, 2), ulps_up(1, 3), ulps_up(1, 4),
                                     ulps_up(1, 7), ulps_up(1, 8), ulps_up(1, 1 << 20), nan};
    const Metrics m = compare(ours, torch, {}, {0, 0});
    std::array<std::size_t, kUlpBins> want{};
    want[0] = 2;   // equal, and NaN where torch has NaN
    want[1] = 1;   // 1
    want[2] = 2;   // 2, 3
    want[3] = 2;   // 4, 7
    want[4] = 1;   // 8
    want[21] = 1;  // 2^20 is in [2^20, 2^21)
    want[kUlpNanBin] = 1;
    EXPECT_EQ(m.ulp_bins, want);
    // the widest distance between two finite floats (-max to +max) still lands in a finite bin
    const std::vector<float> lo = {-std::numeric_limits<float>::max()}, hi = {std::numeric_limits<float>::max()};
    EXPECT_EQ(compare(lo, hi, {}, {0, 0}).ulp_bins[32], 1u);
}

TEST(Compare, UlpsAreMeasuredOnlyAwayFromZero) {
    // a logits-like row: 8.0, and 1e-7 where ours is 2e-7 (an absolute error of 1e-7, far inside any
    // tolerance, but ~2^23 ULPs of a number that small): that element is counted near zero instead
    const std::vector<float> torch = {8.0f, 1e-7f, 0.5f}, ours = {ulps_up(8.0f, 2), 2e-7f, 0.5f};
    const Metrics m = compare(ours, torch, {}, {1e-4, 1e-4});
    EXPECT_EQ(m.max_ulp, 2.0);
    EXPECT_EQ(m.ulp_near_zero, 1u);
    EXPECT_EQ(m.ulp_bins[0] + m.ulp_bins[2], 2u);  // 0.5 equal, 8 two ulps apart
    EXPECT_TRUE(m.passed());
}

TEST(Compare, ErrorByRowTakesTheSecondToLastDimension) {
    // [3 positions, 2 features]: row errors 0.5, 1 and NaN (a NaN row must not read as 0)
    const float nan = std::nanf("");
    const std::vector<float> torch = {0, 0, 0, 0, 0, 0}, ours = {0, 0.5f, -1, 0, 0, nan};
    const RowProfile p = error_by_row(ours, torch, {3, 2});
    ASSERT_EQ(p.max_abs.size(), 3u);
    EXPECT_EQ(p.rows_per_value, 1u);
    EXPECT_DOUBLE_EQ(p.max_abs[0], 0.5);
    EXPECT_DOUBLE_EQ(p.max_abs[1], 1.0);
    EXPECT_TRUE(std::isnan(p.max_abs[2]));
    // [2 layers, 2 positions, 1]: position 1's error is the max over both layers
    const std::vector<float> kv_ref = {0, 0, 0, 0}, kv = {0, 0.25f, 0, 2};
    const RowProfile q = error_by_row(kv, kv_ref, {2, 2, 1});
    EXPECT_EQ(q.max_abs, (std::vector<double>{0.0, 2.0}));
    EXPECT_TRUE(error_by_row(kv, kv_ref, {4}).max_abs.empty()) << "a 1-D output has no rows";
}

TEST(Compare, ErrorByRowGroupsLongOutputs) {
    // 130 rows of one element: groups of 3 rows, 44 values; the error at row 129 is in the last group
    std::vector<float> ours(130, 0.0f);
    const std::vector<float> torch(130, 0.0f);
    ours[129] = 3.0f;
    const RowProfile p = error_by_row(ours, torch, {130, 1});
    EXPECT_EQ(p.rows_per_value, 3u);
    ASSERT_EQ(p.max_abs.size(), 44u);
    EXPECT_DOUBLE_EQ(p.max_abs[43], 3.0);
    EXPECT_DOUBLE_EQ(p.max_abs[42], 0.0);
}

TEST(Compare, HeatmapOfOneDimensionalOutputIsHeadsByHeadDim) {
    // 2 heads x 4: an error at flat index 5 is head 1, element 1
    std::vector<float> ours(8, 0.0f);
    const std::vector<float> torch(8, 0.0f);
    ours[5] = 0.75f;
    const Heatmap h = error_heatmap(ours, torch, {8}, 4);
    EXPECT_EQ(h.rows, 2u);
    EXPECT_EQ(h.cols, 4u);
    ASSERT_EQ(h.cells.size(), 8u);
    EXPECT_DOUBLE_EQ(h.cells[1 * 4 + 1], 0.75);
    EXPECT_DOUBLE_EQ(h.cells[5 - 4], 0.0);
    const Heatmap strip = error_heatmap(ours, torch, {8});  // no head_dim: one row
    EXPECT_EQ(strip.cell_rows, 1u);
    EXPECT_EQ(strip.cell_cols, 8u);
}

TEST(Compare, HeatmapGroupsIntoAtMost64Cells) {
    // [3, 130]: columns in blocks of 3 (44 cells), the leading dimensions kept as rows
    std::vector<float> ours(3 * 130, 0.0f);
    const std::vector<float> torch(3 * 130, 0.0f);
    ours[2 * 130 + 128] = -2.0f;  // row 2, column 128 -> cell (2, 42)
    const Heatmap h = error_heatmap(ours, torch, {3, 130});
    EXPECT_EQ(h.block_cols, 3u);
    EXPECT_EQ(h.block_rows, 1u);
    ASSERT_EQ(h.cell_cols, 44u);
    ASSERT_EQ(h.cell_rows, 3u);
    EXPECT_DOUBLE_EQ(h.cells[2 * 44 + 42], 2.0);
    double total = 0;
    for (double v : h.cells) total += v;
    EXPECT_DOUBLE_EQ(total, 2.0) << "one element in error, one cell shows it";
    // [2, 5, 64]: 10 rows of 64
    const std::vector<float> z(640, 0.0f);
    const Heatmap k = error_heatmap(z, z, {2, 5, 64});
    EXPECT_EQ(k.cell_rows, 10u);
    EXPECT_EQ(k.cell_cols, 64u);
}

}  // namespace lmlab
