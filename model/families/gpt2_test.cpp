// Tests of the GPT-2 forward pass (model/families/gpt2.cpp) against an independent, naive float64 GPT-2
// written below from the paper's formulas (plain loops, no kernel calls, the whole prefix
// recomputed at every step instead of a KV cache), plus what a comparison alone would not pin down:
// where the fused projection's q, k and v come from, the learned-position bound, the GELU form.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "model/family.h"
#include "model/forward.h"
#include "model/record.h"
#include "model/testing/test_model.h"

namespace lmlab {

namespace {

using Vec = std::vector<double>;

// dim 8, 2 heads of 4, ffn 16, vocab 9, 6 positions: small enough to check by hand, big enough
// that heads, positions and layers differ.
Config tiny_gpt2_config(Activation act = Activation::GeluTanh) {
    Config c = test::tiny_gpt2_config();
    c.max_seq_len = 6;
    c.activation = act;
    return c;
}

Vec linear(const Linear& l, const Vec& x) {
    const std::size_t out = l.b.size();
    Vec y(out);
    for (std::size_t i = 0; i < out; ++i) {
        y[i] = l.b[i];
        for (std::size_t j = 0; j < x.size(); ++j) y[i] += static_cast<double>(l.w[i * x.size() + j]) * x[j];
    }
    return y;
}

Vec layer_norm(const Vec& x, const Norm& n, double eps) {
    double mean = 0, var = 0;
    for (double v : x) mean += v / static_cast<double>(x.size());
    for (double v : x) var += (v - mean) * (v - mean) / static_cast<double>(x.size());
    Vec y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + eps) * n.weight[i] + n.bias[i];
    return y;
}

double gelu(double x, Activation act) {
    if (act == Activation::GeluErf) return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
}

// Logits of the last token of `tokens`, the whole sequence recomputed (causal self-attention).
Vec naive_gpt2_logits(const Model& m, const std::vector<int>& tokens) {
    const Config& c = m.config;
    const std::size_t T = tokens.size(), D = c.dim, hd = c.head_dim();
    std::vector<Vec> x(T, Vec(D));
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t i = 0; i < D; ++i)
            x[t][i] = static_cast<double>(m.tok_embeddings[tokens[t] * D + i]) + m.pos_embeddings[t * D + i];
    for (const LayerWeights& w : m.layers) {
        std::vector<Vec> q(T), k(T), v(T);
        for (std::size_t t = 0; t < T; ++t) {
            const Vec qkv = linear(w.wqkv, layer_norm(x[t], w.attn_norm, c.norm_eps));
            q[t].assign(qkv.begin(), qkv.begin() + D);
            k[t].assign(qkv.begin() + D, qkv.begin() + 2 * D);
            v[t].assign(qkv.begin() + 2 * D, qkv.end());
        }
        for (std::size_t t = 0; t < T; ++t) {
            Vec heads(D, 0.0);
            for (std::size_t h = 0; h < c.n_heads; ++h) {
                Vec s(t + 1);
                double mx = -1e300, sum = 0;
                for (std::size_t p = 0; p <= t; ++p) {
                    for (std::size_t d = 0; d < hd; ++d) s[p] += q[t][h * hd + d] * k[p][h * hd + d];
                    s[p] /= std::sqrt(static_cast<double>(hd));
                    mx = std::max(mx, s[p]);
                }
                for (double& e : s) sum += (e = std::exp(e - mx));
                for (std::size_t p = 0; p <= t; ++p)
                    for (std::size_t d = 0; d < hd; ++d) heads[h * hd + d] += s[p] / sum * v[p][h * hd + d];
            }
            const Vec attn = linear(w.wo, heads);
            for (std::size_t i = 0; i < D; ++i) x[t][i] += attn[i];
            Vec up = linear(w.w_up, layer_norm(x[t], w.ffn_norm, c.norm_eps));
            for (double& u : up) u = gelu(u, c.activation);
            const Vec mlp = linear(w.w_down, up);
            for (std::size_t i = 0; i < D; ++i) x[t][i] += mlp[i];
        }
    }
    const Vec xn = layer_norm(x.back(), m.final_norm, c.norm_eps);
    Vec logits(c.vocab_size, 0.0);
    for (std::size_t v = 0; v < c.vocab_size; ++v)
        for (std::size_t i = 0; i < D; ++i) logits[v] += static_cast<double>(m.tok_embeddings[v * D + i]) * xn[i];
    return logits;
}

double max_abs_diff(std::span<const float> a, const Vec& b) {
    double worst = 0;
    for (std::size_t i = 0; i < b.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
    return worst;
}

}  // namespace

TEST(Gpt2Forward, LogitsMatchTheNaiveModelAtEveryPosition) {
    for (Activation act : {Activation::GeluTanh, Activation::GeluErf}) {
        const Model m = test::make_model(tiny_gpt2_config(act));
        KVCache cache(m.config.n_layers, m.config.max_seq_len, m.config.kv_dim());
        RunState s(m.config);
        const std::vector<int> tokens = {3, 8, 0, 3, 5, 1};  // token 3 twice: only the position tells them apart
        std::vector<int> prefix;
        double spread = 0;
        for (std::size_t pos = 0; pos < tokens.size(); ++pos) {
            prefix.push_back(tokens[pos]);
            const auto logits = forward(m, tokens[pos], pos, cache, s);
            const Vec expected = naive_gpt2_logits(m, prefix);
            EXPECT_LT(max_abs_diff(logits, expected), 1e-5) << "position " << pos;
            if (pos == 3) spread = max_abs_diff(logits, naive_gpt2_logits(m, {tokens[0]}));
        }
        EXPECT_GT(spread, 1e-2) << "the comparison must be sensitive to position and context";
    }
}

TEST(Gpt2Forward, FusedProjectionSplitsIntoQKV) {
    // q, k, v are rows [0, dim), [dim, 2 dim), [2 dim, 3 dim) of c_attn's output: with ln_1 giving
    // its bias (weight 0) and c_attn's weights 0, q|k|v equal the three thirds of c_attn's bias
    Model m = test::make_model(tiny_gpt2_config());
    LayerWeights& w = m.layers[0];
    std::fill(w.attn_norm.weight.begin(), w.attn_norm.weight.end(), 0.0f);
    std::fill(w.wqkv.w.begin(), w.wqkv.w.end(), 0.0f);
    const Trace t = traced_decode(m, std::vector<int>{2});
    const LayerRecord& L = t.layers[0];
    const std::size_t D = m.config.dim;
    for (std::size_t i = 0; i < D; ++i) {
        EXPECT_EQ(L.at("q")[i], w.wqkv.b[i]);
        EXPECT_EQ(L.at("k")[i], w.wqkv.b[D + i]);
        EXPECT_EQ(L.at("v")[i], w.wqkv.b[2 * D + i]);
    }
    // at position 0 attention returns v itself: heads == v
    EXPECT_EQ(L.at("heads"), L.at("v"));
}

TEST(Gpt2Forward, TraceHasEveryRoleOfTheFamily) {
    const Model m = test::make_model(tiny_gpt2_config());
    const Trace t = traced_decode(m, std::vector<int>{1});
    for (const std::string& name : family(Arch::Gpt2).intermediates) {
        const std::size_t n = t.layers[1].at(name).size();
        EXPECT_EQ(n, name == "ffn_up" || name == "ffn_act" ? m.config.ffn_dim : m.config.dim) << name;
    }
    EXPECT_FALSE(t.layers[0].count("ffn_gate")) << "GPT-2's MLP has no gate";
    // the embedding is the token's row plus position 0's row
    for (std::size_t i = 0; i < m.config.dim; ++i)
        EXPECT_EQ(t.embedding[i], m.tok_embeddings[1 * m.config.dim + i] + m.pos_embeddings[i]);
}

TEST(Gpt2Forward, PositionPastTheLearnedTableIsAClearError) {
    const Model m = test::make_model(tiny_gpt2_config());
    std::vector<float> x(m.config.dim);
    test::expect_error<ModelError>([&] { embed(m, 1, 6, x); }, {"position 6", "6 learned positions"});
    test::expect_error<ModelError>([&] { embed(m, 9, 0, x); }, {"token id 9", "[0, 9)"});
}

TEST(Gpt2Config, RefusesWhatTheGpt2ForwardDoesNotImplement) {
    Config c = tiny_gpt2_config();
    c.norm = NormKind::RMSNorm;
    test::expect_error<ModelError>([&] { c.validate("cfg"); }, {"cfg", "gpt2", "LayerNorm"});
    c = tiny_gpt2_config();
    c.n_kv_heads = 1;
    test::expect_error<ModelError>([&] { c.validate("cfg"); }, {"n_kv_heads == n_heads"});
    c = tiny_gpt2_config();
    c.activation = Activation::SwiGLU;
    test::expect_error<ModelError>([&] { c.validate("cfg"); }, {"GELU"});
    Config l = test::tiny_config();
    l.positions = Positions::Learned;
    test::expect_error<ModelError>([&] { l.validate("cfg"); }, {"llama", "RoPE"});
}

}  // namespace lmlab
