// compare_quantized (harness/quantization.h): a model against itself is all zeros; one changed
// tensor shows up as added error in its own cell only and as inherited error downstream; the KL,
// top-1 and perplexity numbers against a direct computation from forward(); chunking as
// llama-perplexity's; shapes that differ are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "harness/fixture.h"
#include "harness/quantization.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/testing/test_model.h"

namespace lmlab {

namespace {

Config small_config(Arch arch = Arch::Llama) {
    Config c = arch == Arch::Gpt2 ? test::tiny_gpt2_config() : test::tiny_config();
    c.dim = 32;
    c.ffn_dim = 64;
    c.vocab_size = 40;
    c.max_seq_len = 32;
    if (arch != Arch::Gpt2) c.n_heads = 4, c.n_kv_heads = 2;
    return c;
}

const TensorError& cell(const QuantReport& r, std::size_t layer, const std::string& kind) {
    for (const TensorError& t : r.tensors)
        if (t.layer == layer && t.kind == kind) return t;
    throw std::runtime_error("no cell " + kind);
}

std::vector<int> text_of(std::size_t n, std::size_t vocab) {
    std::vector<int> t(n);
    for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<int>((7 * i + 3) % vocab);
    return t;
}

// log softmax in double, written out again (not harness/quantization.cpp's)
std::vector<double> logp(std::span<const float> l) {
    double m = -INFINITY, s = 0;
    for (float v : l) m = std::max(m, double(v));
    for (float v : l) s += std::exp(double(v) - m);
    std::vector<double> out;
    for (float v : l) out.push_back(double(v) - m - std::log(s));
    return out;
}

}  // namespace

TEST(CompareQuantized, AModelAgainstItselfIsZeroEverywhere) {
    const Model m = test::make_model(small_config());
    const QuantReport r = compare_quantized(m, m, text_of(12, 40), 0, 0, -1);
    EXPECT_EQ(r.kinds, (std::vector<std::string>{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}));
    EXPECT_EQ(r.tensors.size(), 2 + 7 * m.config.n_layers);  // token_embd, output and 7 per layer
    for (const TensorError& t : r.tensors) {
        EXPECT_EQ(t.added, 0.0) << t.kind;
        EXPECT_EQ(t.inherited, 0.0) << t.kind;
        EXPECT_EQ(t.total, 0.0) << t.kind;
        EXPECT_EQ(t.type, "F32");
    }
    EXPECT_EQ(r.kl_max, 0.0);
    EXPECT_EQ(r.top1_agreement, 1.0);
    EXPECT_EQ(r.ppl_model, r.ppl_against);
    EXPECT_EQ(r.kl.size(), 11u);  // every position but the last predicts the next token
}

// One weight of layer 1's attn_v changed: its cell adds error, the cells before it (in layer 0 and
// the earlier tensors of layer 1) see none, and what follows inherits it.
TEST(CompareQuantized, OneChangedTensorAddsErrorInItsCellAndDownstreamInherits) {
    const Model f = test::make_model(small_config());
    Model q = f;
    for (float& w : q.layers[1].wv.w) w *= 1.01f;  // 1% on every weight of one matrix: attn_v's output is 1% off
    const QuantReport r = compare_quantized(q, f, text_of(12, 40), 0, 0, -1);
    for (const TensorError& t : r.tensors) {
        if (t.layer == 1 && t.kind == "attn_v") continue;
        EXPECT_EQ(t.added, 0.0) << t.layer << " " << t.kind;
    }
    EXPECT_NEAR(cell(r, 1, "attn_v").added, 0.01, 1e-6);
    EXPECT_EQ(cell(r, 1, "attn_v").inherited, 0.0);  // its input (attn_norm of layer 1) is unchanged
    EXPECT_EQ(cell(r, 1, "attn_q").total, 0.0);
    EXPECT_EQ(cell(r, 0, "ffn_down").total, 0.0);
    EXPECT_GT(cell(r, 1, "attn_output").inherited, 0.0);  // heads carry the changed values
    EXPECT_GT(cell(r, TensorError::kGlobal, "output").inherited, 0.0);
    EXPECT_EQ(r.layer_out[0].added, 0.0);
    EXPECT_EQ(r.layer_out[0].total, 0.0);
    EXPECT_GT(r.layer_out[1].added, 0.0);
    EXPECT_EQ(r.layer_out[1].added, r.layer_out[1].total);  // the first layer that differs: all its error is its own
}

TEST(CompareQuantized, KlTopOneAndPerplexityAreWhatTheLogitsSay) {
    const Model f = test::make_model(small_config());
    Model q = f;
    for (float& w : q.layers[0].w_up.w) w = std::round(w * 8) / 8;  // a coarse grid: a quantized copy
    const std::vector<int> text = text_of(10, 40);
    const QuantReport r = compare_quantized(q, f, text, 0, 0, -1);
    // the same numbers from forward(), token by token
    KVCache cf(f.config.n_layers, 32, f.config.kv_dim()), cq(f.config.n_layers, 32, f.config.kv_dim());
    RunState sf(f.config), sq(f.config);
    double kl_sum = 0, nll_f = 0, nll_q = 0;
    int same = 0;
    for (std::size_t p = 0; p + 1 < text.size(); ++p) {
        const auto a = forward(f, text[p], p, cf, sf);
        const std::vector<double> pf = logp(a);
        const auto b = forward(q, text[p], p, cq, sq);
        const std::vector<double> pq = logp(b);
        double kl = 0;
        std::size_t af = 0, aq = 0;
        for (std::size_t v = 0; v < pf.size(); ++v) {
            kl += std::exp(pf[v]) * (pf[v] - pq[v]);
            if (pf[v] > pf[af]) af = v;
            if (pq[v] > pq[aq]) aq = v;
        }
        EXPECT_NEAR(r.kl[p], kl, 1e-9 + 1e-6 * kl) << p;
        kl_sum += kl;
        same += af == aq;
        nll_f -= pf[static_cast<std::size_t>(text[p + 1])];
        nll_q -= pq[static_cast<std::size_t>(text[p + 1])];
    }
    const double n = static_cast<double>(text.size() - 1);
    EXPECT_NEAR(r.kl_mean, kl_sum / n, 1e-9 + 1e-6 * kl_sum / n);
    EXPECT_GT(r.kl_mean, 0.0);
    EXPECT_EQ(r.top1_agreement, same / n);
    EXPECT_NEAR(r.ppl_against, std::exp(nll_f / n), 1e-6 * r.ppl_against);
    EXPECT_NEAR(r.ppl_model, std::exp(nll_q / n), 1e-6 * r.ppl_model);
}

// A text longer than ctx: chunks of ctx tokens (the remainder dropped), each starting with BOS, only
// the second half of each scored: llama-perplexity's scheme.
TEST(CompareQuantized, ALongTextIsCutIntoChunksAsLlamaPerplexityDoes) {
    const Model m = test::make_model(small_config());
    const QuantReport r = compare_quantized(m, m, text_of(30, 40), 8, 0, 1);
    EXPECT_EQ(r.chunks, 3u);  // 30 / 8, the last 6 tokens dropped
    EXPECT_EQ(r.kl.size(), 3u * 3u);  // positions 4, 5, 6 of each chunk (position 7 has no next token in the chunk)
    EXPECT_EQ(r.positions.front(), 4u);
    EXPECT_EQ(r.positions.back(), 16u + 6u);
    EXPECT_EQ(r.analysed_rows, 8u);
}

TEST(CompareQuantized, GptTwoAndMixturesOfExpertsHaveTheirKinds) {
    const Model g = test::make_model(test::tiny_gpt2_config());
    const QuantReport rg = compare_quantized(g, g, std::vector<int>{1, 2, 3}, 0, 0, -1);
    EXPECT_EQ(rg.kinds, (std::vector<std::string>{"attn_qkv", "attn_output", "ffn_up", "ffn_down"}));
    const Model e = test::make_model(test::tiny_moe_config(true));
    Model eq = e;
    for (float& w : eq.layers[0].experts[2].w_down.w) w *= 1.02f;
    const QuantReport re = compare_quantized(eq, e, std::vector<int>{1, 2, 3, 4}, 0, 0, -1);
    EXPECT_EQ(re.kinds, (std::vector<std::string>{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_inp",
                                                  "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_shexp",
                                                  "ffn_up_shexp", "ffn_down_shexp"}));
    EXPECT_GT(cell(re, 0, "ffn_down_exps").added, 0.0);  // one expert of four: measured on every row
    EXPECT_EQ(cell(re, 0, "ffn_up_exps").added, 0.0);
    EXPECT_EQ(cell(re, 0, "ffn_down_shexp").added, 0.0);
}

TEST(CompareQuantized, DifferentShapesOrBadTextAreRefusedByName) {
    const Model a = test::make_model(small_config());
    Config c = small_config();
    c.ffn_dim = 48;
    const Model b = test::make_model(c);
    test::expect_error<HarnessError>([&] { compare_quantized(a, b, std::vector<int>{1, 2, 3}, 0, 0, -1); }, {"ffn_dim 64", "ffn_dim 48"});
    test::expect_error<HarnessError>([&] { compare_quantized(a, test::make_model(test::tiny_gpt2_config()), std::vector<int>{1, 2}, 0, 0, -1); },
                                     {"architecture"});
    test::expect_error<HarnessError>([&] { compare_quantized(a, a, std::vector<int>{1}, 0, 0, -1); }, {"1 token", "at least 2"});
    test::expect_error<HarnessError>([&] { compare_quantized(a, a, std::vector<int>{1, 40}, 0, 0, -1); }, {"token 40", "vocabulary"});
    test::expect_error<HarnessError>([&] { compare_quantized(a, a, std::vector<int>{1, 2}, 64, 0, -1); }, {"--ctx 64", "2 .. 32"});
}

}  // namespace lmlab
