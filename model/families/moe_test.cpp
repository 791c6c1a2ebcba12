// The mixture of experts (model/families/moe.cpp) on a hand-sized mixture: 4 experts of width 1 on dim 2, top-2.
//
//   xn = [1, 0];  router rows e0..e3 = [1,0], [3,0], [2,0], [0,0]  ->  logits [1, 3, 2, 0]
//   softmax: e^1, e^3, e^2, e^0 over their sum 31.19287  ->  p = [0.0871443, 0.6439142, 0.2368828, 0.0320586]
//   top-2: experts 1 (0.6439) and 2 (0.2369)
//   expert e: w_gate [1, 0], w_up [e+1, 0], w_down [1, -1]  ->  y_e = silu(1)·(e+1)·[1, -1], silu(1) = 0.7310586
//   no renormalisation: out[0] = p1·2·silu(1) + p2·3·silu(1) = 0.9414786 + 0.5195260 = 1.4610046
//   renormalised: p1 / (p1 + p2) = 1 / (1 + e^-1) = sigmoid(1) = 0.7310586 (the logits differ by 1),
//                 out[0] = 0.7310586·1.4621172 + 0.2689414·2.1931758 = 1.0688930 + 0.5898361 = 1.6587291
//   shared expert (width 1): w_gate [1, 0], w_up [1, 0], w_down [2, 2], gate [ln 3, 0] -> sigmoid = 0.75:
//                 shared_out = 0.75 · 2 · silu(1) = 1.0965879 in both elements
// The test recomputes these in double from the formulas above and allows float32 rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/families/families.h"
#include "model/family.h"
#include "model/forward.h"
#include "model/record.h"
#include "model/testing/test_model.h"

namespace lmlab {
namespace {

double silu1() { return 1.0 / (1.0 + std::exp(-1.0)); }  // silu(1) = 1 · sigmoid(1)

// The hand-sized config: Mixtral's fields (norm_topk_prob set by the test), dim 2, 4 experts of width 1, top-2.
Config hand_config(bool renormalise, std::size_t shared) {
    Config c = shared ? Config::of(Arch::Qwen2Moe) : Config::of(Arch::Mixtral);
    c.dim = 2;
    c.n_layers = 1;
    c.n_heads = c.n_kv_heads = 1;
    c.ffn_dim = 1;
    c.vocab_size = 3;
    c.max_seq_len = 4;
    c.n_experts = 4;
    c.top_k = 2;
    c.norm_topk_prob = renormalise;
    c.shared_ffn_dim = shared;
    return c;
}

LayerWeights hand_weights(bool shared) {
    LayerWeights w;
    w.router.w = {1, 0, 3, 0, 2, 0, 0, 0};
    w.experts.resize(4);
    for (int e = 0; e < 4; ++e) {
        w.experts[static_cast<std::size_t>(e)].w_gate.w = {1, 0};
        w.experts[static_cast<std::size_t>(e)].w_up.w = {static_cast<float>(e + 1), 0};
        w.experts[static_cast<std::size_t>(e)].w_down.w = {1, -1};
    }
    if (shared) {
        w.shared_expert.w_gate.w = {1, 0};
        w.shared_expert.w_up.w = {1, 0};
        w.shared_expert.w_down.w = {2, 2};
        w.shared_gate.w = {static_cast<float>(std::log(3.0)), 0};
    }
    return w;
}

std::vector<double> probabilities() {  // softmax of [1, 3, 2, 0]
    const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + 1.0;
    return {std::exp(1.0) / z, std::exp(3.0) / z, std::exp(2.0) / z, 1.0 / z};
}

// The mixture of experts on one row xn: what it leaves in RunState. forced (the harness's teacher
// forcing at a routing near-tie): these experts instead of the top-k, weighted by our probabilities.
struct MoeRun {
    std::vector<float> router_logits, experts, expert_weights, shared_out, out;
};
MoeRun run_moe(const Config& c, const LayerWeights& w, const std::vector<float>& xn, const std::vector<int>& forced = {}) {
    RunState s(c);
    std::copy(xn.begin(), xn.end(), s.ffn_norm.begin());
    moe_route(c, w, 0, s);
    if (!forced.empty()) {
        std::copy(forced.begin(), forced.end(), s.expert_ids.begin());
        moe_weights(c, 0, s);
    }
    moe_mix(c, w, 0, s);
    auto get = [&](const char* name) { return intermediate_buffer(name).row(s, c, 0); };
    return {get("router_logits"), get("experts"), get("expert_weights"),
            c.shared_ffn_dim ? get("shared_out") : std::vector<float>{}, get("ffn_out")};
}

class MoeFfn : public ::testing::TestWithParam<KernelPath> {
protected:
    void SetUp() override { set_kernel_path(GetParam()); }
    void TearDown() override { set_kernel_path(KernelPath::Fast); }
};

TEST_P(MoeFfn, TopTwoWithoutRenormalisation) {
    const Config c = hand_config(false, 0);
    const LayerWeights w = hand_weights(false);
    const MoeRun t = run_moe(c, w, {1, 0});
    const std::vector<float>& out = t.out;
    const auto p = probabilities();
    EXPECT_EQ(t.router_logits, (std::vector<float>{1, 3, 2, 0}));
    EXPECT_EQ(t.experts, (std::vector<float>{1, 2}));  // most probable first
    EXPECT_NEAR(t.expert_weights[0], p[1], 1e-7);     // 0.6439142
    EXPECT_NEAR(t.expert_weights[1], p[2], 1e-7);     // 0.2368828
    const double want = p[1] * 2 * silu1() + p[2] * 3 * silu1();  // 1.4610046
    EXPECT_NEAR(out[0], want, 1e-6);
    EXPECT_NEAR(out[1], -want, 1e-6);
    EXPECT_TRUE(t.shared_out.empty());
}

TEST_P(MoeFfn, RenormalisedWeightsSumToOne) {
    const Config c = hand_config(true, 0);
    const LayerWeights w = hand_weights(false);
    const MoeRun t = run_moe(c, w, {1, 0});
    const std::vector<float>& out = t.out;
    const double s1 = 1.0 / (1.0 + std::exp(-1.0));  // p1 / (p1 + p2) = sigmoid(3 - 2)
    EXPECT_NEAR(t.expert_weights[0], s1, 1e-7);        // 0.7310586
    EXPECT_NEAR(t.expert_weights[1], 1 - s1, 1e-7);    // 0.2689414
    EXPECT_NEAR(out[0], s1 * 2 * silu1() + (1 - s1) * 3 * silu1(), 1e-6);  // 1.6587291
}

TEST_P(MoeFfn, SharedExpertScaledBySigmoidGate) {
    const Config c = hand_config(false, 1);
    const LayerWeights w = hand_weights(true);
    const MoeRun t = run_moe(c, w, {1, 0});
    const std::vector<float>& out = t.out;
    const double shared = 0.75 * 2 * silu1();  // sigmoid(ln 3) = 3/4: 1.0965879
    ASSERT_EQ(t.shared_out.size(), 2u);
    EXPECT_NEAR(t.shared_out[0], shared, 1e-6);
    EXPECT_NEAR(t.shared_out[1], shared, 1e-6);
    const auto p = probabilities();
    const double routed = p[1] * 2 * silu1() + p[2] * 3 * silu1();
    EXPECT_NEAR(out[0], routed + shared, 1e-6);   // 2.5575925
    EXPECT_NEAR(out[1], -routed + shared, 1e-6);  // -0.3644167
}

// Our rule at exact ties (torch's order is unspecified there: see moe.cpp; the harness calls it a near-tie).
TEST_P(MoeFfn, EqualScoresPickTheLowerExpertFirst) {
    const Config c = hand_config(false, 0);
    LayerWeights w = hand_weights(false);
    w.router.w = {0, 0, 2, 0, 2, 0, 2, 0};  // experts 1, 2, 3 tie exactly
    const MoeRun t = run_moe(c, w, {1, 0});
    EXPECT_EQ(t.experts, (std::vector<float>{1, 2}));
}

TEST_P(MoeFfn, ForcedExpertsKeepOurProbabilities) {
    const Config c = hand_config(false, 0);
    const LayerWeights w = hand_weights(false);
    const std::vector<int> forced = {3, 0};  // the two least probable: what teacher forcing would impose
    const MoeRun t = run_moe(c, w, {1, 0}, forced);
    const std::vector<float>& out = t.out;
    const auto p = probabilities();
    EXPECT_EQ(t.experts, (std::vector<float>{3, 0}));
    EXPECT_NEAR(t.expert_weights[0], p[3], 1e-7);
    EXPECT_NEAR(t.expert_weights[1], p[0], 1e-7);
    EXPECT_NEAR(out[0], p[0] * 1 * silu1() + p[3] * 4 * silu1(), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(BothPaths, MoeFfn, ::testing::Values(KernelPath::Plain, KernelPath::Fast));

// A whole tiny Mixtral and Qwen2-MoE (hashed weights): the block fills the MoE intermediates, and
// the prompt as one call (each row its own experts) gives token-by-token's logits bit for bit.
TEST(MoeModel, BlockIntermediatesAndPrefillBitIdentical) {
    for (bool qwen : {false, true}) {
        const Config c = test::tiny_moe_config(qwen);
        const Model m = test::make_model(c);
        const std::vector<int> tokens = {1, 5, 2, 6};
        const Trace t = traced_decode(m, tokens);
        const LayerRecord& lt = t.layers[1];
        EXPECT_EQ(lt.at("router_logits").size(), 4u * tokens.size());
        EXPECT_EQ(lt.at("experts").size(), 2u * tokens.size());
        EXPECT_EQ(lt.at("expert_weights").size(), 2u * tokens.size());
        EXPECT_EQ(lt.count("shared_out") ? lt.at("shared_out").size() : 0u, qwen ? 8u * tokens.size() : 0u);
        EXPECT_FALSE(lt.count("ffn_gate"));  // a single SwiGLU's intermediates do not exist here
        for (const std::string& f : family(c.arch).intermediates) EXPECT_FALSE(lt.at(f).empty()) << f;
        KVCache cache2(c.n_layers, c.max_seq_len, c.kv_dim());
        RunState ps(c, tokens.size());
        std::vector<float> got;
        prefill(m, tokens, cache2, ps, &got);
        EXPECT_EQ(got, t.logits) << (qwen ? "qwen2moe" : "mixtral");
    }
}

TEST(MoeModel, ConfigRefusesTopKAboveExperts) {
    Config c = Config::of(Arch::Mixtral);
    c.dim = 8, c.n_layers = 1, c.n_heads = c.n_kv_heads = 2, c.ffn_dim = 4, c.vocab_size = 5, c.max_seq_len = 4;
    c.n_experts = 2;
    c.top_k = 3;
    test::expect_error<ModelError>([&] { c.validate("cfg"); }, {"cfg", "top_k", "is 3", "n_experts = 2"});
    c.top_k = 2;
    c.n_experts = 0;
    test::expect_error<ModelError>([&] { c.validate("cfg"); }, {"n_experts > 0"});
}

}  // namespace
}  // namespace lmlab
