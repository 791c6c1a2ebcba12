// The routing verdict of the MoE stages (harness/stages/moe_stages.cpp): a swap of two experts whose
// reference scores lie within the tolerance is a routing near-tie (reported, not failed); a larger
// gap is a real mismatch.
#include <gtest/gtest.h>

#include "harness/stages/stages.h"

namespace lmlab {
namespace {

// 3 tokens, 4 experts, top-2. Reference router logits per token; the reference picked the top 2.
//   token 0: [2.0, 1.0, 0.5, -1.0]          -> 0, 1
//   token 1: [0.3, 1.5, 1.5000001, 0.0]     -> 2, 1  (experts 2 and 1 tied within 1e-7)
//   token 2: [0.1, 0.2, 3.0, 1.0]           -> 2, 3
const std::vector<float> kRefLogits = {2.0f, 1.0f, 0.5f, -1.0f, 0.3f, 1.5f, 1.5000001f, 0.0f, 0.1f, 0.2f, 3.0f, 1.0f};
const std::vector<float> kRefIds = {0, 1, 2, 1, 2, 3};
constexpr Tolerance kTol{1e-5, 1e-5};

TEST(Routing, SameExpertsNoDifference) {
    EXPECT_TRUE(compare_routing(kRefIds, kRefIds, kRefLogits, 2, 4, kTol).empty());
}

TEST(Routing, NearTieIsReportedAsSuch) {
    const std::vector<float> ours = {0, 1, 1, 2, 2, 3};  // token 1: ranks swapped (1 before 2)
    const auto d = compare_routing(ours, kRefIds, kRefLogits, 2, 4, kTol);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].token, 1u);
    EXPECT_EQ(d[0].rank, 0u);
    EXPECT_EQ(d[0].ref, 2);
    EXPECT_EQ(d[0].ours, 1);
    EXPECT_TRUE(d[0].near_tie());
    const std::string msg = d[0].describe();
    EXPECT_NE(msg.find("routing near-tie at token 1: experts 2/1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1.50000012 vs 1.5"), std::string::npos) << msg;
}

TEST(Routing, NearTieAtTheKthBoundary) {  // ours picked the (k+1)-th expert instead of the k-th, scores within tolerance
    std::vector<float> logits = kRefLogits;
    logits[2] = 1.0f - 4e-6f;  // token 0: expert 2 now 4e-6 below expert 1 (tolerance 1e-5 + 1e-5)
    const std::vector<float> ours = {0, 2, 2, 1, 2, 3};
    const auto d = compare_routing(ours, kRefIds, logits, 2, 4, kTol);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].rank, 1u);
    EXPECT_TRUE(d[0].near_tie()) << d[0].describe();
}

TEST(Routing, RealMismatchStillFails) {
    const std::vector<float> ours = {0, 2, 2, 1, 2, 3};  // token 0: expert 2 (0.5) instead of 1 (1.0): gap 0.5
    const auto d = compare_routing(ours, kRefIds, kRefLogits, 2, 4, kTol);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_FALSE(d[0].near_tie());
    EXPECT_NEAR(d[0].gap, 0.5, 1e-9);
    EXPECT_NE(d[0].describe().find("ROUTING MISMATCH at token 0"), std::string::npos) << d[0].describe();
}

TEST(Routing, BadIdsAreAnError) {
    const std::vector<float> ours = {0, 7, 2, 1, 2, 3};
    EXPECT_THROW(compare_routing(ours, kRefIds, kRefLogits, 2, 4, kTol), std::runtime_error);
}

TEST(Routing, ChoicesListEveryToken) { EXPECT_EQ(routing_choices(kRefIds, 2), "t0: 0 1 | t1: 2 1 | t2: 2 3"); }

}  // namespace
}  // namespace lmlab
