// lmlab trace: the attention weights it recomputes are the ones the engine used (they reproduce the
// engine's own attention output, head by head, with grouped-query heads reading the right kv head),
// the top-5 is a softmax, and the page draws every layer and head.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/forward.h"
#include "model/record.h"
#include "model/kv_cache.h"
#include "model/sampler.h"
#include "model/session.h"
#include "model/testing/test_model.h"
#include "harness/fixture.h"
#include "harness/report/trace.h"

namespace lmlab {

namespace {

Config tiny_qwen2_config() {  // 4 query heads on 2 kv heads (h / 2 and h mod 2 differ), q/k/v biases
    Config c = Config::of(Arch::Qwen2);
    c.dim = 8;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = 12;
    c.vocab_size = 7;
    c.max_seq_len = 8;
    return c;
}

std::vector<Config> every_family() { return {test::tiny_config(), test::tiny_gpt2_config(), tiny_qwen2_config()}; }

const std::vector<int> kPrompt = {1, 4, 0};

}  // namespace

TEST(Trace, RowsAreProbabilitiesOverThePast) {
    for (const Config& c : every_family()) {
        const Model m = test::make_model(c);
        const AttentionTrace t = trace_attention(m, kPrompt, 4);
        const std::size_t n = t.tokens.size();
        ASSERT_EQ(n, kPrompt.size() + 3) << arch_name(c.arch) << ": the last generated token is never fed";
        ASSERT_EQ(t.steps.size(), 4u);
        ASSERT_EQ(t.weights.size(), c.n_layers);
        for (std::size_t l = 0; l < c.n_layers; ++l) {
            ASSERT_EQ(t.weights[l].size(), c.n_heads);
            for (std::size_t h = 0; h < c.n_heads; ++h)
                for (std::size_t i = 0; i < n; ++i) {
                    double sum = 0;
                    for (std::size_t j = 0; j < n; ++j) {
                        const float w = t.weights[l][h][i * n + j];
                        if (j > i) {
                            EXPECT_EQ(w, 0.0f) << "the future is masked";
                        }
                        EXPECT_GE(w, 0.0f);
                        sum += w;
                    }
                    EXPECT_NEAR(sum, 1.0, 1e-6) << arch_name(c.arch) << " layer " << l << " head " << h << " row " << i;
                }
        }
    }
}

// Σ_j w[i][j] · v_j of head h's kv head must be the attention output the engine computed for head h
// at position i (model.forward checks that output against PyTorch): the weights are the engine's.
// With a wrong kv head for a query head (h mod n_kv instead of h / group) the 2:1 Qwen2 case fails.
TEST(Trace, WeightsReproduceTheEnginesAttentionOutput) {
    for (const Config& c : every_family()) {
        const Model m = test::make_model(c);
        const AttentionTrace t = trace_attention(m, kPrompt, 4);
        const std::size_t n = t.tokens.size(), hd = c.head_dim(), group = c.n_heads / c.n_kv_heads;
        const Trace tr = traced_decode(m, t.tokens);  // v and heads [n, width] per layer
        const std::size_t kv = c.kv_dim(), qd = c.n_heads * hd;
        for (std::size_t l = 0; l < c.n_layers; ++l)
            for (std::size_t h = 0; h < c.n_heads; ++h)
                for (std::size_t i = 0; i < n; ++i)
                    for (std::size_t d = 0; d < hd; ++d) {
                        double out = 0;
                        for (std::size_t j = 0; j <= i; ++j)
                            out += t.weights[l][h][i * n + j] * tr.layers[l].at("v")[j * kv + (h / group) * hd + d];
                        EXPECT_NEAR(out, tr.layers[l].at("heads")[i * qd + h * hd + d], 1e-5)
                            << arch_name(c.arch) << " layer " << l << " head " << h << " position " << i << " element " << d;
                    }
    }
}

TEST(Trace, ZeroQueriesAttendUniformly) {
    // q = 0 makes every score 0: position i spreads its attention evenly, 1/(i+1) to each of 0..i
    Model m = test::make_model(test::tiny_config());
    for (LayerWeights& w : m.layers) std::fill(w.wq.w.begin(), w.wq.w.end(), 0.0f);
    const AttentionTrace t = trace_attention(m, kPrompt, 2);
    const std::size_t n = t.tokens.size();
    for (const auto& layer : t.weights)
        for (const auto& head : layer)
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j <= i; ++j) EXPECT_FLOAT_EQ(head[i * n + j], 1.0f / static_cast<float>(i + 1));
}

TEST(Trace, TopFiveIsTheGreedyChoiceAndASoftmax) {
    // tiny LLaMA: vocabulary 5, so the top 5 is every token and its probabilities sum to 1
    const Model m = test::make_model(test::tiny_config());
    const AttentionTrace t = trace_attention(m, kPrompt, 4);
    Session session(m);
    Sampler greedy({.temperature = 0.0f}, m.config.vocab_size);
    const std::vector<int> tokens = session.generate(kPrompt, 4, greedy).tokens;
    ASSERT_EQ(t.steps.size(), tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        const TraceStep& s = t.steps[i];
        EXPECT_EQ(s.chosen, tokens[i]) << "step " << i << ": the generate command's greedy token";
        ASSERT_EQ(s.top.size(), kTraceTopK);
        double sum = 0;
        for (std::size_t k = 0; k < s.top.size(); ++k) {
            sum += s.top[k].second;
            if (k) {
                EXPECT_GE(s.top[k - 1].second, s.top[k].second) << "most likely first";
            }
        }
        EXPECT_NEAR(sum, 1.0, 1e-12);
        EXPECT_EQ(s.top.front().first, s.chosen);
    }
    for (std::size_t i = 0; i + 1 < t.steps.size(); ++i) EXPECT_EQ(t.tokens[kPrompt.size() + i], t.steps[i].chosen);
}

TEST(Trace, StopsAtAStopToken) {
    const Model m = test::make_model(test::tiny_config());
    const AttentionTrace free_run = trace_attention(m, kPrompt, 4);
    const std::vector<int> stops = {free_run.steps[1].chosen};
    const AttentionTrace t = trace_attention(m, kPrompt, 4, stops);
    std::size_t first_stop = 0;
    while (free_run.steps[first_stop].chosen != stops[0]) ++first_stop;
    EXPECT_EQ(t.steps.size(), first_stop + 1) << "the stop token is the last step";
}

TEST(Trace, RefusesAPageTooLargeToOpen) {
    EXPECT_EQ(trace_cells(test::tiny_config(), 3, 3), 2u * 2u * 5u * 6u / 2u);  // 2 layers, 2 heads, 5 positions
    Config c = Config::of(Arch::Llama);
    c.dim = 32;
    c.n_layers = 24;
    c.n_heads = c.n_kv_heads = 16;
    c.ffn_dim = 8;
    c.vocab_size = 5;
    c.max_seq_len = 64;
    const Model m = test::make_model(c);
    test::expect_error<HarnessError>([&] { trace_attention(m, std::vector<int>(40, 1), 10); },
                                              {"shorter prompt", "24 layers x 16 heads x 49 positions"});
}

TEST(Trace, TokenLabelsShowWhitespaceAndEscapes) {
    const TextTokenizer tok(Tokenizer({"<unk>", " a", "\n", "x\x01", "<s>"}, {0, 0, 0, 0, 0}));
    EXPECT_EQ(token_label(&tok, 1), "␣a");
    EXPECT_EQ(token_label(&tok, 2), "↵");
    EXPECT_EQ(token_label(&tok, 3), "x\\x01");
    EXPECT_EQ(token_label(&tok, 9), "#9") << "past the vocabulary";
    EXPECT_EQ(token_label(nullptr, 3), "#3");
    // llama2.c's vocabularies: BOS is "\n<s>\n" and a newline is the byte piece "<0x0A>"
    const TextTokenizer sp(Tokenizer({"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", "<0x41>"}, {0, 0, 0, 0, 0}));
    EXPECT_EQ(token_label(&sp, 1), "<s>");
    EXPECT_EQ(token_label(&sp, 3), "↵");
    EXPECT_EQ(token_label(&sp, 4), "A");
}

TEST(Trace, ManyPositionsAreDrawnInBlocksAndChipsWrap) {
    // 100 generated tokens drew every position (28 MB, 11 s to render) and the chips ran off the page
    Config c = test::tiny_config();
    c.max_seq_len = 128;
    const Model m = test::make_model(c);
    const AttentionTrace t = trace_attention(m, kPrompt, 100);
    const std::string page = trace_html(t, m, nullptr, "tiny", "");
    EXPECT_NE(page.find("id=\"grouped\""), std::string::npos) << "the page says the positions are grouped";
    EXPECT_EQ(trace_cells(c, kPrompt.size(), 100), c.n_layers * c.n_heads * 51 * 52 / 2);  // 102 positions fed, 2 a block
    EXPECT_NE(page.find("</span><wbr>"), std::string::npos) << "a row of chips may wrap";
    EXPECT_LT(page.size(), std::size_t{2} << 20);
}

TEST(Trace, PageDrawsEveryLayerAndHead) {
    const Config c = tiny_qwen2_config();
    const Model m = test::make_model(c);
    const AttentionTrace t = trace_attention(m, kPrompt, 3);
    const TextTokenizer tok(Tokenizer({"<unk>", "<s>", "a", "b", "c<", "d", "e"}, {0, 0, 0, 0, 0, 0, 0}));
    const std::string page = trace_html(t, m, &tok, "tiny <model>", "a & b");
    for (std::size_t l = 0; l < c.n_layers; ++l)
        for (std::size_t h = 0; h < c.n_heads; ++h)
            EXPECT_NE(page.find("data-plot=\"attention.layer" + std::to_string(l) + ".head" + std::to_string(h) + "\""), std::string::npos)
                << l << " " << h;
    for (std::size_t i = 0; i < t.steps.size(); ++i)
        EXPECT_NE(page.find("<tr data-step=\"" + std::to_string(i) + "\">"), std::string::npos);
    EXPECT_NE(page.find("tiny &lt;model&gt;"), std::string::npos);
    EXPECT_NE(page.find("a &amp; b"), std::string::npos);
    EXPECT_EQ(page.find("c<"), std::string::npos) << "token text is escaped";
    EXPECT_NE(page.find("layer 0, head 3 (kv head 1)"), std::string::npos) << "grouped-query heads name their kv head";
    EXPECT_EQ(page, trace_html(t, m, &tok, "tiny <model>", "a & b")) << "same trace, same bytes";
}

}  // namespace lmlab
