// The prompt as T rows (prefill) against token by token (T = 1): one code path, but matmul_xwt and
// tiled attention see T rows at once, so this checks that a row's numbers never depend on the other
// rows: the logits and the KV cache must be bit-identical, for every family, at any offset, on both
// kernel paths.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "model/forward.h"
#include "model/testing/test_model.h"

namespace lmlab {

namespace {

Config qwen2_config() {
    Config c = Config::of(Arch::Qwen2);
    c.dim = 8;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 1;  // 4:1 grouped-query attention
    c.ffn_dim = 12;
    c.vocab_size = 7;
    c.max_seq_len = 8;
    return c;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_prefill_equals_forward(const Config& c, std::size_t pos0) {
    const Model m = test::make_model(c);
    const std::vector<int> tokens = {1, 4, 0, 3, 2, 5, 1, 6};
    // token by token
    KVCache c1(c.n_layers, c.max_seq_len, c.kv_dim());
    RunState s1(c);
    std::vector<float> expected;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        const auto logits = forward(m, tokens[p] % static_cast<int>(c.vocab_size), p, c1, s1);
        if (p >= pos0) expected.insert(expected.end(), logits.begin(), logits.end());
    }
    // the first pos0 tokens one by one, the rest in one prefill call
    KVCache c2(c.n_layers, c.max_seq_len, c.kv_dim());
    RunState s2(c);
    std::vector<int> rest;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        const int t = tokens[p] % static_cast<int>(c.vocab_size);
        if (p < pos0) forward(m, t, p, c2, s2);
        else rest.push_back(t);
    }
    RunState ps(c, rest.size() + 3);  // buffers larger than the prompt: only T rows are used
    std::vector<float> all;
    const auto last = prefill(m, rest, c2, ps, &all);
    EXPECT_TRUE(same_bits(all, expected)) << arch_name(c.arch) << " from position " << pos0;
    EXPECT_TRUE(same_bits(last, std::span<const float>(expected).last(c.vocab_size)));
    ASSERT_EQ(c2.length(), tokens.size());
    for (std::size_t l = 0; l < c.n_layers; ++l) {
        EXPECT_TRUE(same_bits(c1.keys(l), c2.keys(l))) << "keys of layer " << l;
        EXPECT_TRUE(same_bits(c1.values(l), c2.values(l))) << "values of layer " << l;
    }
}

}  // namespace

TEST(Prefill, BitIdenticalToTokenByTokenForEveryFamily) {
    ASSERT_EQ(kernel_path(), KernelPath::Fast);
    for (const Config& c : {test::tiny_config(), test::tiny_gpt2_config(), qwen2_config(), test::tiny_moe_config(false),
                            test::tiny_moe_config(true)})
        for (std::size_t pos0 : {0u, 3u}) expect_prefill_equals_forward(c, pos0);
}

TEST(Prefill, Int8ModelsAreBitIdenticalToTokenByTokenToo) {
    // int8 layers run runq.c's int8 matvec row by row inside the block
    Config c = test::tiny_config();
    c.dim = 8;
    c.ffn_dim = 16;
    const Model m = quantize_model(test::make_model(c), 4);
    const std::vector<int> tokens = {1, 4, 0, 3, 2, 1};
    KVCache c1(c.n_layers, c.max_seq_len, c.kv_dim()), c2(c.n_layers, c.max_seq_len, c.kv_dim());
    RunState s1(c);
    std::vector<float> expected, all;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        const auto l = forward(m, tokens[p], p, c1, s1);
        expected.insert(expected.end(), l.begin(), l.end());
    }
    RunState ps(c, tokens.size());
    prefill(m, tokens, c2, ps, &all);
    EXPECT_TRUE(same_bits(all, expected));
}

TEST(Prefill, EveryRowsLogitsBitIdenticalWithAWideClassifier) {
    // all_logits runs the classifier as one matmul_xwt over the rows (speculative decoding's
    // verification): a vocabulary of 300 and dim 64 cross its blocking in both directions
    Config c = test::tiny_config();
    c.dim = 64;
    c.n_heads = 4;
    c.ffn_dim = 96;
    c.vocab_size = 300;
    for (std::size_t pos0 : {0u, 5u}) expect_prefill_equals_forward(c, pos0);
    c.tied_embeddings = true;  // the classifier is the embedding table
    expect_prefill_equals_forward(c, 1);
}

TEST(Prefill, PlainPathToo) {
    set_kernel_path(KernelPath::Plain);
    for (const Config& c : {test::tiny_config(), test::tiny_gpt2_config()}) expect_prefill_equals_forward(c, 2);
    set_kernel_path(KernelPath::Fast);
}

TEST(Prefill, PastTheContextIsRefusedBeforeTouchingTheCache) {
    const Model m = test::make_model(test::tiny_config());  // context 8
    KVCache cache(m.config.n_layers, m.config.max_seq_len, m.config.kv_dim());
    RunState ps(m.config, 9);
    const std::vector<int> nine(9, 1);
    test::expect_error<ModelError>([&] { prefill(m, nine, cache, ps); }, {"beyond the context of 8"});
    EXPECT_EQ(cache.length(), 0u);
    RunState small(m.config, 2);
    test::expect_error<ModelError>([&] { prefill(m, std::vector<int>(3, 1), cache, small); }, {"3 tokens", "holds 2 rows"});
}

}  // namespace lmlab
