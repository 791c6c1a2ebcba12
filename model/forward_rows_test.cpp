// The prompt as T rows (prefill) against token by token (T = 1): one code path, but matmul_xwt and
// tiled attention see T rows at once, so this checks that a row's numbers never depend on the other
// rows: the logits and the KV cache must be bit-identical, for every family, at any offset, on both
// kernel paths.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/ggml_quant.h"
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

TEST(RunState, GgmlScratchHoldsTheActivationsOfEveryTypeForEveryRow) {
    // matvec_fast (T = 1) and matmul_fast (T rows) quantize each row of x into gg_act, with the fast
    // kernels' prepared copy (Q8_0: 3.2 bytes per value); the tiny LLaMA's FFN rows of 1024 once
    // outgrew it
    Config c = Config::of(Arch::Llama);
    c.dim = 256;
    c.n_heads = 8;
    c.n_kv_heads = 8;
    c.ffn_dim = 1024;
    const std::size_t rows = 3;
    const RunState s(c, rows);
    for (std::uint32_t id = 0; id < 64; ++id) {
        const auto t = ggml::find_type(id);
        if (!t || !t->is_weight) continue;
        for (const std::size_t cols : {c.dim, c.ffn_dim})
            EXPECT_GE(s.gg_act.size(), rows * ggml::matvec_fast_scratch_bytes(t->type, cols)) << t->name << ", rows of " << cols;
    }
}

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
    ContiguousRows rows(cache, 0, m.config.head_dim());
    test::expect_error<ModelError>([&] { forward_rows(m, std::vector<int>(3, 1), rows, small); }, {"3 tokens", "holds 2 rows"});
}

// ---- Long context: chunks, sliding windows in a ring, dynamic RoPE ----------------------------------

namespace {

// The tiny LLaMA with a sliding window of 3 (Mistral's block) or Qwen2 with it from layer 1 on, and
// a context of 24 (every position past the window several times)
Config windowed_config(bool qwen2_layers) {
    Config c = qwen2_layers ? qwen2_config() : test::tiny_config();
    if (!qwen2_layers) {
        c.arch = Arch::Mistral;
        c.rope_style = RopeStyle::RotateHalf;
    }
    c.max_seq_len = 24;
    c.sliding_window = 3;
    c.window_from_layer = qwen2_layers ? 1 : 0;
    return c;
}

std::vector<int> sequence(const Config& c, std::size_t n) {
    std::vector<int> t(n);
    for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<int>((i * 7 + 3) % c.vocab_size);
    return t;
}

// every row's logits of tokens fed as one prompt of `prompt` rows in chunks of `chunk` rows, then one
// token at a time, into a cache whose windowed layers keep a ring of window + chunk - 1 rows
std::vector<float> logits_in_chunks(const Model& m, const std::vector<int>& tokens, std::size_t prompt, std::size_t chunk) {
    KVCache cache(m.config, tokens.size(), chunk);
    cache.set_prompt_length(prompt);
    RunState ps(m.config, chunk), s(m.config);
    std::vector<float> all, out;
    prefill(m, std::span<const int>(tokens).first(prompt), cache, ps, &all);
    out = all;
    for (std::size_t p = prompt; p < tokens.size(); ++p) {
        const auto l = forward(m, tokens[p], p, cache, s);
        out.insert(out.end(), l.begin(), l.end());
    }
    return out;
}

}  // namespace

TEST(Prefill, ChunksOfAnySizeGiveTheSameBitsWithAWindowInARing) {
    // the ring holds window + chunk - 1 positions (3 + 4 - 1 = 6 of 24, every row overwritten 3
    // times); a cache that keeps every position (chunk 24: no ring wraps) gives the same bits
    for (bool qwen2_layers : {false, true}) {
        const Config c = windowed_config(qwen2_layers);
        const Model m = test::make_model(c);
        const std::vector<int> tokens = sequence(c, 24);
        const std::vector<float> whole = logits_in_chunks(m, tokens, 20, 24);
        for (std::size_t chunk : {1u, 4u, 7u}) {
            EXPECT_TRUE(same_bits(logits_in_chunks(m, tokens, 20, chunk), whole)) << arch_name(c.arch) << " chunk " << chunk;
            KVCache ring(c, 24, chunk);
            EXPECT_EQ(ring.ring(c.n_layers - 1), std::min<std::size_t>(24, 3 + chunk - 1));
            EXPECT_EQ(ring.ring(0), qwen2_layers ? 24u : std::min<std::size_t>(24, 3 + chunk - 1));  // Qwen2's layer 0: no window
        }
    }
}

TEST(Prefill, ARingTooSmallForTheRowsOfACallIsAnErrorNotAWrongAnswer) {
    // a decode-only cache (ring = window 3) given a 4-row prefill: row 0 needs positions the later
    // rows of the same call overwrote
    const Config c = windowed_config(false);
    const Model m = test::make_model(c);
    KVCache cache(c, 24);
    RunState ps(c, 4);
    const std::vector<int> tokens = sequence(c, 8);
    prefill(m, std::span<const int>(tokens).first(3), cache, ps);  // 3 rows into a ring of 3: fine
    test::expect_error<ModelError>([&] { prefill(m, std::span<const int>(tokens).subspan(3, 4), cache, ps); },
                                   {"layer 0 has overwritten position", "fewer rows per forward"});
}

TEST(Prefill, TheWindowChangesTheModel) {
    // (a test that could not fail otherwise) the same weights without the window give other logits
    // from position 3 on, and the same before it (a window of 3 hides nothing there)
    Config c = windowed_config(false);
    const Model windowed = test::make_model(c);
    c.sliding_window = 0;
    const Model full = test::make_model(c);
    const std::vector<int> tokens = sequence(c, 8);
    const std::vector<float> a = logits_in_chunks(windowed, tokens, 8, 8), b = logits_in_chunks(full, tokens, 8, 8);
    const std::size_t v = c.vocab_size;
    EXPECT_TRUE(same_bits(std::span<const float>(a).first(3 * v), std::span<const float>(b).first(3 * v)));
    EXPECT_FALSE(same_bits(std::span<const float>(a).subspan(3 * v), std::span<const float>(b).subspan(3 * v)));
}

TEST(Prefill, PlainAndFastAgreeUnderAWindow) {
    const Config c = windowed_config(true);
    const Model m = test::make_model(c);
    const std::vector<int> tokens = sequence(c, 20);
    const std::vector<float> fast = logits_in_chunks(m, tokens, 12, 5);
    set_kernel_path(KernelPath::Plain);
    const std::vector<float> plain = logits_in_chunks(m, tokens, 12, 5);
    set_kernel_path(KernelPath::Fast);
    ASSERT_EQ(fast.size(), plain.size());
    for (std::size_t i = 0; i < fast.size(); ++i) EXPECT_NEAR(fast[i], plain[i], 1e-5) << i;
}

TEST(Prefill, DynamicRopeRotatesARowForItsPromptOrItsPosition) {
    // dynamic NTK from 4 positions: a prompt of 10 rotates every prompt row for 10 (however it is
    // chunked), each later row for pos + 1, as transformers' generate() does
    Config c = test::tiny_config();
    c.dim = 8;  // head_dim 4: two pairs (with one, head_dim 2, the only frequency is theta^0 = 1 for any base)
    c.ffn_dim = 16;
    c.max_seq_len = 16;
    c.rope_scaling.kind = RopeScalingKind::Dynamic;
    c.rope_scaling.factor = 4.0;
    c.rope_scaling.original_context = 4;
    const Model m = test::make_model(c);
    const std::vector<int> tokens = sequence(c, 14);
    const std::vector<float> whole = logits_in_chunks(m, tokens, 10, 10);
    for (std::size_t chunk : {1u, 3u}) EXPECT_TRUE(same_bits(logits_in_chunks(m, tokens, 10, chunk), whole)) << chunk;
    // the same tokens as a prompt of 6: its rows are rotated for 6, not 10 (position 0 is the identity
    // either way), so rows 1..9 differ; and as a prompt of 14, rows 10..13 are rotated for 14, not pos + 1
    const std::size_t v = c.vocab_size;
    const std::vector<float> shorter = logits_in_chunks(m, tokens, 6, 6), longer = logits_in_chunks(m, tokens, 14, 14);
    EXPECT_FALSE(same_bits(std::span<const float>(shorter).subspan(v, 9 * v), std::span<const float>(whole).subspan(v, 9 * v)));
    EXPECT_FALSE(same_bits(std::span<const float>(longer).subspan(10 * v), std::span<const float>(whole).subspan(10 * v)));
}

}  // namespace lmlab
