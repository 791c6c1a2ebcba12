// Tests of the forward pass against an independent, naive float64 LLaMA written below from the
// formulas in forward.h and kernels.h (plain loops, no kernel calls), plus the properties that a
// reference comparison alone would not pin down: which kv head a query head reads, the input
// checks, the trace, and bit-for-bit determinism.
#include "model/families/families.h"
#include "model/family.h"
#include "model/forward.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "model/testing/test_model.h"

namespace lmlab {

namespace {

using test::expect_error;
using Vec = std::vector<double>;

// ---- The independent reference ----------------------------------------------------------------

Vec mat_vec(const std::vector<float>& W, const Vec& x, std::size_t out) {
    Vec y(out, 0.0);
    for (std::size_t i = 0; i < out; ++i)
        for (std::size_t j = 0; j < x.size(); ++j) y[i] += static_cast<double>(W[i * x.size() + j]) * x[j];
    return y;
}

Vec rms_norm(const Vec& x, const std::vector<float>& w, double eps) {
    double ss = 0.0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
    Vec y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w[i];
    return y;
}

// RoPE of every head of x: pair i of a head turns by pos * theta^(-2i/head_dim).
void rotate(Vec& x, std::size_t head_dim, std::size_t pos, double theta, RopeStyle style) {
    const std::size_t half = head_dim / 2;
    for (std::size_t h = 0; h < x.size() / head_dim; ++h)
        for (std::size_t i = 0; i < half; ++i) {
            const double angle = static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / head_dim);
            const std::size_t a = h * head_dim + (style == RopeStyle::AdjacentPairs ? 2 * i : i);
            const std::size_t b = h * head_dim + (style == RopeStyle::AdjacentPairs ? 2 * i + 1 : i + half);
            const double xa = x[a], xb = x[b];
            x[a] = xa * std::cos(angle) - xb * std::sin(angle);
            x[b] = xa * std::sin(angle) + xb * std::cos(angle);
        }
}

struct NaiveLayer {
    Vec attn_norm, q, k, v, heads, attn_out, h, ffn_norm, ffn_out, out;
};

// A LLaMA decoder in double, one token at a time, with its own cache of every position's k and v.
class NaiveLlama {
public:
    // modulo_kv: query head h reads kv head h % n_kv_heads instead of h / group (a plausible bug,
    // modelled here only to show that the GQA tests can tell the two apart)
    explicit NaiveLlama(const Model& m, bool modulo_kv = false)
        : m_(m), modulo_kv_(modulo_kv), keys_(m.config.n_layers), values_(m.config.n_layers) {}

    Vec step(int token) {
        const Config& c = m_.config;
        const std::size_t dim = c.dim, hd = c.head_dim(), kv = c.kv_dim(), q_dim = c.n_heads * hd;
        const std::size_t pos = keys_[0].size();
        Vec x(dim);
        for (std::size_t i = 0; i < dim; ++i) x[i] = m_.tok_embeddings[static_cast<std::size_t>(token) * dim + i];
        embedding = x;
        layers.assign(c.n_layers, {});
        for (std::size_t l = 0; l < c.n_layers; ++l) {
            const LayerWeights& w = m_.layers[l];
            NaiveLayer& t = layers[l];
            t.attn_norm = rms_norm(x, w.attn_norm.weight, c.norm_eps);
            t.q = mat_vec(w.wq.w, t.attn_norm, q_dim);
            t.k = mat_vec(w.wk.w, t.attn_norm, kv);
            t.v = mat_vec(w.wv.w, t.attn_norm, kv);
            rotate(t.q, hd, pos, c.rope_theta, c.rope_style);
            rotate(t.k, hd, pos, c.rope_theta, c.rope_style);
            keys_[l].push_back(t.k);
            values_[l].push_back(t.v);
            t.heads.assign(q_dim, 0.0);
            for (std::size_t h = 0; h < c.n_heads; ++h) {
                // the kv head this query head shares
                const std::size_t g = modulo_kv_ ? h % c.n_kv_heads : h / (c.n_heads / c.n_kv_heads);
                Vec s(pos + 1);
                double mx = -1e300;
                for (std::size_t p = 0; p <= pos; ++p) {
                    double dot = 0.0;
                    for (std::size_t d = 0; d < hd; ++d) dot += t.q[h * hd + d] * keys_[l][p][g * hd + d];
                    s[p] = dot / std::sqrt(static_cast<double>(hd));
                    mx = std::max(mx, s[p]);
                }
                double sum = 0.0;
                for (double& e : s) sum += (e = std::exp(e - mx));
                for (std::size_t p = 0; p <= pos; ++p)
                    for (std::size_t d = 0; d < hd; ++d) t.heads[h * hd + d] += s[p] / sum * values_[l][p][g * hd + d];
            }
            t.attn_out = mat_vec(w.wo.w, t.heads, dim);
            t.h = x;
            for (std::size_t i = 0; i < dim; ++i) t.h[i] += t.attn_out[i];
            t.ffn_norm = rms_norm(t.h, w.ffn_norm.weight, c.norm_eps);
            const Vec gate = mat_vec(w.w_gate.w, t.ffn_norm, c.ffn_dim), up = mat_vec(w.w_up.w, t.ffn_norm, c.ffn_dim);
            Vec act(c.ffn_dim);
            for (std::size_t i = 0; i < c.ffn_dim; ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
            t.ffn_out = mat_vec(w.w_down.w, act, dim);
            t.out = t.h;
            for (std::size_t i = 0; i < dim; ++i) t.out[i] += t.ffn_out[i];
            x = t.out;
        }
        final_norm = rms_norm(x, m_.final_norm.weight, c.norm_eps);
        const std::vector<float>& cls = c.tied_embeddings ? m_.tok_embeddings : m_.output;
        return mat_vec(cls, final_norm, c.vocab_size);
    }

    Vec embedding, final_norm;
    std::vector<NaiveLayer> layers;  // intermediates of the last step

private:
    const Model& m_;
    bool modulo_kv_;
    std::vector<std::vector<Vec>> keys_, values_;  // [layer][pos][kv_dim]
};

// ---- Helpers ------------------------------------------------------------------------------------

template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
    EXPECT_EQ(a.size(), b.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
        worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    return worst;
}

// dim 8, 4 query heads of width 2 over 2 kv heads: heads 0,1 share kv head 0, heads 2,3 kv head 1.
Config gqa_config(RopeStyle style) {
    Config c = test::tiny_config();
    c.dim = 8;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = 12;
    c.vocab_size = 7;
    c.rope_style = style;
    return c;
}

// dim 8, 2 query heads of width 4 on 1 kv head. With head_dim 2 the two RoPE pairings coincide
// (the only pair is (0, 1) either way); width 4 makes them differ: (0,1),(2,3) vs (0,2),(1,3).
Config wide_head_config(RopeStyle style) {
    Config c = test::tiny_config();
    c.dim = 8;
    c.ffn_dim = 12;
    c.vocab_size = 6;
    c.rope_theta = 100.0f;  // the second pair then turns by pos/10 radians: a visible rotation
    c.rope_style = style;
    return c;
}

const std::vector<int> kTokens = {1, 3, 0, 4, 2, 2, 4, 1};  // fills the tiny model's context of 8

}  // namespace

// ---- Against the reference -------------------------------------------------------------------

struct NamedConfig {
    const char* name;
    Config config;
};
std::ostream& operator<<(std::ostream& os, const NamedConfig& c) { return os << c.name; }

class ForwardVsNaive : public ::testing::TestWithParam<NamedConfig> {};

TEST_P(ForwardVsNaive, LogitsMatchAtEveryPosition) {
    // the whole pipeline (embedding, RMSNorm, RoPE, GQA attention over the cache, SwiGLU, residuals,
    // classifier) agrees with the float64 reference at every position of the context
    const Model m = test::make_model(GetParam().config);
    KVCache cache(m.config.n_layers, m.config.max_seq_len, m.config.kv_dim());
    RunState s(m.config);
    NaiveLlama ref(m);
    ASSERT_EQ(kTokens.size(), m.config.max_seq_len);
    double spread = 0.0;  // how far logits move between positions: the comparison must be sensitive
    Vec previous;
    for (std::size_t pos = 0; pos < kTokens.size(); ++pos) {
        const int tok = kTokens[pos] % static_cast<int>(m.config.vocab_size);
        const auto logits = forward(m, tok, pos, cache, s);
        const Vec expected = ref.step(tok);
        EXPECT_LT(max_abs_diff(logits, expected), 1e-5) << "position " << pos;
        EXPECT_EQ(cache.length(), pos + 1);
        if (!previous.empty()) spread = std::max(spread, max_abs_diff(previous, expected));
        previous = expected;
    }
    EXPECT_GT(spread, 1e-2);
}

Config tied_mha_config() {
    Config c = test::tiny_config();
    c.tied_embeddings = true;  // classifier = tok_embeddings
    c.n_kv_heads = 2;          // plain multi-head attention
    return c;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, ForwardVsNaive,
    ::testing::Values(NamedConfig{"Tiny2HeadsOn1Kv", test::tiny_config()},
                      NamedConfig{"Gqa4HeadsOn2Kv", gqa_config(RopeStyle::AdjacentPairs)},
                      NamedConfig{"HeadDim4Adjacent", wide_head_config(RopeStyle::AdjacentPairs)},
                      NamedConfig{"HeadDim4RotateHalf", wide_head_config(RopeStyle::RotateHalf)},
                      NamedConfig{"TiedMultiHead", tied_mha_config()}),
    [](const ::testing::TestParamInfo<NamedConfig>& info) { return std::string(info.param.name); });

TEST(Forward, RopeStyleChangesTheResult) {
    // the two pairings are different rotations (for head_dim > 2): the reference comparison of each
    // style is only meaningful if the styles do not give the same logits
    const Model a = test::make_model(wide_head_config(RopeStyle::AdjacentPairs));
    Model b = a;
    b.config.rope_style = RopeStyle::RotateHalf;
    KVCache ca(a.config.n_layers, a.config.max_seq_len, a.config.kv_dim()), cb = ca;
    RunState sa(a.config), sb(b.config);
    forward(a, 1, 0, ca, sa);
    forward(b, 1, 0, cb, sb);
    EXPECT_EQ(max_abs_diff(sa.logits, sb.logits), 0.0);  // pos 0: RoPE is the identity for both
    forward(a, 3, 1, ca, sa);
    forward(b, 3, 1, cb, sb);
    EXPECT_GT(max_abs_diff(sa.logits, sb.logits), 1e-3);
}

// ---- Grouped-query attention ------------------------------------------------------------------

TEST(Forward, AtPositionZeroEveryHeadReturnsTheValueOfItsKvHead) {
    // with one cached position softmax is [1], so head h outputs exactly v of kv head h / 2:
    // heads = [v0, v0, v1, v1]. Reading kv head h % n_kv_heads would give [v0, v1, v0, v1].
    const Config c = gqa_config(RopeStyle::AdjacentPairs);
    const Model m = test::make_model(c);
    KVCache cache(c.n_layers, c.max_seq_len, c.kv_dim());
    RunState s(c);
    const std::vector<float> xn = {0.5f, -1.0f, 0.25f, 1.5f, -0.75f, 1.0f, 0.125f, -0.5f};
    std::copy(xn.begin(), xn.end(), s.attn_norm.begin());
    ContiguousRows rows(cache, 0, c.head_dim());
    llama_attention(c, m.layers[0], 0, 1, rows, s);
    const std::size_t hd = c.head_dim();  // 2
    for (std::size_t h = 0; h < c.n_heads; ++h)
        for (std::size_t d = 0; d < hd; ++d) EXPECT_EQ(s.heads[h * hd + d], s.v[(h / 2) * hd + d]) << "head " << h;
    // the two kv heads differ, so the check above can tell them apart
    EXPECT_NE(s.v[0], s.v[2]);
    EXPECT_EQ(cache.length(0), 1u);
}

TEST(Forward, QueryHeadsSharingAKvHeadWithEqualQueriesGiveEqualOutputs) {
    // make query head 1 a copy of query head 0 (rows 2,3 of wq = rows 0,1): with 1 kv head both read
    // the same keys and values, so their outputs must agree at every position; a head 1 that read
    // elsewhere in the cache row (or another row) would differ
    Model m = test::tiny_model();
    const Config& c = m.config;
    ASSERT_EQ(c.n_heads, 2u);
    ASSERT_EQ(c.n_kv_heads, 1u);
    const std::size_t hd = c.head_dim();
    for (LayerWeights& w : m.layers)
        std::copy(w.wq.w.begin(), w.wq.w.begin() + static_cast<std::ptrdiff_t>(hd * c.dim),
                  w.wq.w.begin() + static_cast<std::ptrdiff_t>(hd * c.dim));
    KVCache cache(c.n_layers, c.max_seq_len, c.kv_dim());
    RunState s(c);
    NaiveLlama ref(m);
    for (std::size_t pos = 0; pos < 5; ++pos) {
        forward(m, kTokens[pos], pos, cache, s);
        ref.step(kTokens[pos]);
        // the heads of the last layer are still in the run state
        for (std::size_t d = 0; d < hd; ++d) EXPECT_EQ(s.heads[d], s.heads[hd + d]) << "position " << pos;
        EXPECT_LT(max_abs_diff(s.heads, ref.layers.back().heads), 1e-5);
    }
}

TEST(Forward, QueryHeadReadsKvHeadOfItsGroupAtLaterPositions) {
    // over several positions with 4 query heads on 2 kv heads, every head agrees with the reference
    // (query head h reads kv head h / 2) and not with one where it reads kv head h % 2
    const Config c = gqa_config(RopeStyle::AdjacentPairs);
    const Model m = test::make_model(c);
    KVCache cache(c.n_layers, c.max_seq_len, c.kv_dim());
    RunState s(c);
    NaiveLlama ref(m), modulo(m, /*modulo_kv=*/true);
    for (std::size_t pos = 0; pos < 4; ++pos) {
        forward(m, kTokens[pos], pos, cache, s);
        ref.step(kTokens[pos]);
        modulo.step(kTokens[pos]);
        EXPECT_LT(max_abs_diff(s.heads, ref.layers.back().heads), 1e-5) << "position " << pos;
        EXPECT_GT(max_abs_diff(s.heads, modulo.layers.back().heads), 1e-3) << "position " << pos;
    }
}

// ---- Input checks -----------------------------------------------------------------------------

TEST(Forward, TokenOutsideTheVocabularyThrowsNamingTheId) {
    // an id >= vocab_size would read past the embedding matrix; nothing may be cached
    const Model m = test::tiny_model();
    KVCache cache(m.config.n_layers, m.config.max_seq_len, m.config.kv_dim());
    RunState s(m.config);
    expect_error<ModelError>([&] { forward(m, 5, 0, cache, s); }, {"token id 5", "[0, 5)"});
    expect_error<ModelError>([&] { forward(m, -1, 0, cache, s); }, {"token id -1", "[0, 5)"});
    expect_error<ModelError>([&] { forward(m, 1000000, 0, cache, s); }, {"token id 1000000"});
    EXPECT_EQ(cache.length(0), 0u);
    forward(m, 4, 0, cache, s);  // the last valid id works
    EXPECT_EQ(cache.length(), 1u);
}

TEST(Forward, PastTheContextThrowsModelError) {
    // position max_seq_len does not fit in the cache: an error, not an overrun
    const Model m = test::tiny_model();
    KVCache cache(m.config.n_layers, m.config.max_seq_len, m.config.kv_dim());
    RunState s(m.config);
    for (std::size_t pos = 0; pos < 8; ++pos) forward(m, 1, pos, cache, s);
    expect_error<ModelError>([&] { forward(m, 1, 8, cache, s); }, {"position 8", "max_seq_len"});
    EXPECT_EQ(cache.length(), 8u);
}

TEST(Forward, PositionOtherThanTheCacheLengthThrows) {
    // skipping a position would attend over a row never written
    const Model m = test::tiny_model();
    KVCache cache(m.config.n_layers, m.config.max_seq_len, m.config.kv_dim());
    RunState s(m.config);
    forward(m, 1, 0, cache, s);
    EXPECT_THROW(forward(m, 1, 2, cache, s), ModelError);
    EXPECT_THROW(forward(m, 1, 0, cache, s), ModelError);
}

// ---- Trace --------------------------------------------------------------------------------------

TEST(Forward, RunStateKeepsEveryIntermediate) {
    // the harness copies these out between blocks and compares them one by one against PyTorch: after
    // each block every buffer the family lists must hold its documented size, its value, and the
    // residual relations between them; and the steps run one by one must give forward()'s logits
    const Config c = wide_head_config(RopeStyle::RotateHalf);
    const Model m = test::make_model(c);
    KVCache cache(c.n_layers, c.max_seq_len, c.kv_dim()), cache2 = cache;
    RunState s(c), s2(c);
    NaiveLlama ref(m);
    forward(m, 2, 0, cache, s);
    forward(m, 2, 0, cache2, s2);
    ref.step(2);
    const auto logits = forward(m, 5, 1, cache2, s2);  // position 1: q and k are rotated
    ref.step(5);

    const std::size_t dim = c.dim, qd = c.n_heads * c.head_dim(), kv = c.kv_dim();
    ContiguousRows rows(cache, 1, c.head_dim());
    embed(m, 5, 1, row(s.x, 0, dim));
    std::vector<float> in(s.x.begin(), s.x.begin() + static_cast<std::ptrdiff_t>(dim));
    EXPECT_TRUE(std::equal(in.begin(), in.end(), m.tok_embeddings.begin() + 5 * 8));
    EXPECT_EQ(family(c.arch).intermediates.size(), 14u);  // in .. out, every one of them in RunState
    for (std::size_t l = 0; l < c.n_layers; ++l) {
        block(m, l, 1, rows, s);
        auto get = [&](const char* name) { return intermediate_buffer(name).row(s, c, 0); };
        const NaiveLayer& R = ref.layers[l];
        const auto L_in = get("in"), L_h = get("h"), L_out = get("out"), attn_out = get("attn_out"), ffn_out = get("ffn_out");
        EXPECT_EQ(get("attn_norm").size(), dim);
        EXPECT_EQ(get("q").size(), qd);
        EXPECT_EQ(get("k").size(), kv);
        EXPECT_EQ(get("v").size(), kv);
        EXPECT_EQ(get("ffn_gate").size(), c.ffn_dim);
        EXPECT_EQ(L_out.size(), dim);
        EXPECT_EQ(L_in, in) << "layer " << l;  // the previous block's output (or the embedding)
        for (std::size_t i = 0; i < dim; ++i) {
            EXPECT_EQ(L_h[i], L_in[i] + attn_out[i]);
            EXPECT_EQ(L_out[i], L_h[i] + ffn_out[i]);
        }
        EXPECT_LT(max_abs_diff(get("attn_norm"), R.attn_norm), 1e-5) << "layer " << l;
        EXPECT_LT(max_abs_diff(get("q"), R.q), 1e-5) << "layer " << l;
        EXPECT_LT(max_abs_diff(get("k"), R.k), 1e-5) << "layer " << l;
        EXPECT_LT(max_abs_diff(get("v"), R.v), 1e-5) << "layer " << l;
        EXPECT_LT(max_abs_diff(attn_out, R.attn_out), 1e-5) << "layer " << l;
        EXPECT_LT(max_abs_diff(get("ffn_norm"), R.ffn_norm), 1e-5) << "layer " << l;
        EXPECT_LT(max_abs_diff(ffn_out, R.ffn_out), 1e-5) << "layer " << l;
        EXPECT_LT(max_abs_diff(L_out, R.out), 1e-5) << "layer " << l;
        // k and v are the rows the cache holds for position 1
        const auto k = get("k"), v = get("v");
        EXPECT_TRUE(std::equal(k.begin(), k.end(), cache.keys(l).begin() + static_cast<std::ptrdiff_t>(kv)));
        EXPECT_TRUE(std::equal(v.begin(), v.end(), cache.values(l).begin() + static_cast<std::ptrdiff_t>(kv)));
        in = L_out;
        std::swap(s.x, s.out);  // as forward_rows() does between blocks
    }
    const std::size_t last = 0;
    std::vector<float> mine(c.vocab_size);
    head(m, std::span<const std::size_t>(&last, 1), s, mine);
    EXPECT_LT(max_abs_diff(std::vector<float>(s.final_norm.begin(), s.final_norm.begin() + static_cast<std::ptrdiff_t>(dim)),
                           ref.final_norm),
              1e-5);
    EXPECT_TRUE(std::equal(mine.begin(), mine.end(), logits.begin()));  // the same bits as forward()
}

// ---- Determinism ------------------------------------------------------------------------------

TEST(Forward, TwoRunsGiveBitIdenticalLogits) {
    // reproducibility: fresh state, or the same state after a cache reset, gives the same bits
    const Model m = test::make_model(gqa_config(RopeStyle::AdjacentPairs));
    const Config& c = m.config;
    KVCache c1(c.n_layers, c.max_seq_len, c.kv_dim()), c2 = c1;
    RunState s1(c), s2(c);
    std::vector<std::vector<float>> first;
    for (std::size_t pos = 0; pos < kTokens.size(); ++pos) {
        const auto a = forward(m, kTokens[pos], pos, c1, s1);
        const auto b = forward(m, kTokens[pos], pos, c2, s2);
        ASSERT_EQ(a.size(), b.size());
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "position " << pos;
        first.emplace_back(a.begin(), a.end());
    }
    c1.reset();  // reuse s1: no state may leak from the previous sequence
    for (std::size_t pos = 0; pos < kTokens.size(); ++pos) {
        const auto a = forward(m, kTokens[pos], pos, c1, s1);
        EXPECT_EQ(std::memcmp(a.data(), first[pos].data(), a.size() * sizeof(float)), 0) << "position " << pos;
    }
}

}  // namespace lmlab
