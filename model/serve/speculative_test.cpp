// Tests of speculative decoding (model/serve/speculative.h): its output is the target's plain greedy
// output token for token, for both drafts and every k; a draft identical to the target is always
// accepted; the rollback leaves both caches holding exactly the accepted tokens (the same rows as a
// plain run); stop tokens and max_new_tokens end it as in Session::generate; bad input is refused.
// The expected tokens here come from Session::generate (our own plain greedy run: an invariant); the
// stages generation.speculative.* hold the same output to PyTorch's greedy tokens.
#include "model/load/load.h"
#include "model/serve/speculative.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "model/session.h"
#include "model/testing/test_model.h"
#include "model/testing/test_shared.h"

namespace lmlab {

namespace {

using test::expect_error;

// Plain greedy generation: the invariant's expected value.
std::vector<int> plain_greedy(const Model& m, const std::vector<int>& prompt, std::size_t n,
                              const std::vector<int>& stops = {}) {
    Session s(m);
    Sampler greedy(SamplerConfig{}, m.config.vocab_size);
    return s.generate(prompt, n, greedy, stops).tokens;
}

// A larger hashed LLaMA than tiny_model(): 4 layers (early exit at 1, 2, 3), vocabulary 48, context
// 64, so that runs are long enough for many rounds, rejections and all-accepted rounds alike.
Model medium_model() {
    Config c = test::tiny_config();
    c.dim = 16;
    c.n_layers = 4;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.ffn_dim = 32;
    c.vocab_size = 48;
    c.max_seq_len = 64;
    return test::make_model(c, 7);
}

// Every draft of m that needs no new weights: early exit at each layer count, and int8.
std::vector<std::pair<std::string, Model>> drafts_of(const Model& m) {
    std::vector<std::pair<std::string, Model>> out;
    for (std::size_t n = 1; n < m.config.n_layers; ++n) out.emplace_back("early-exit:" + std::to_string(n), early_exit_draft(m, n));
    out.emplace_back("int8", int8_draft(m));
    return out;
}

// The invariant for every draft and k in {1, 2, 4, 8}; also the statistics' bookkeeping.
void expect_token_identical(const Model& target, const std::vector<int>& prompt, std::size_t n) {
    const std::vector<int> expected = plain_greedy(target, prompt, n);
    ASSERT_EQ(expected.size(), n);
    for (const auto& [name, draft] : drafts_of(target)) {
        for (std::size_t k : {1, 2, 4, 8}) {
            SCOPED_TRACE(name + ", k = " + std::to_string(k));
            SpeculativeSession spec(target, draft, k);
            const SpeculativeResult r = spec.generate(prompt, n);
            EXPECT_EQ(r.tokens, expected);
            EXPECT_EQ(r.stop_reason, length_stop_reason(target.config, prompt.size(), n));
            const SpeculativeStats& st = r.stats;
            EXPECT_EQ(st.target_calls, st.rounds);
            EXPECT_LE(st.accepted, st.proposed);
            EXPECT_LE(st.proposed, k * st.rounds);
            // every round emits its accepted guesses plus one token of the target's own
            EXPECT_EQ(st.accepted + st.rounds, n);
            EXPECT_EQ(st.target_tokens, st.proposed + st.rounds);
            EXPECT_GE(st.acceptance_rate(), 0.0);
            EXPECT_LE(st.acceptance_rate(), 1.0);
        }
    }
}

}  // namespace

TEST(Speculative, TokenIdenticalToGreedyOnTheTinyModel) {
    // context 8: from 1 prompt token, 7 new fill it exactly (the last round may not overrun it)
    const Model m = test::tiny_model();
    expect_token_identical(m, {1}, 7);
    expect_token_identical(m, {1, 3, 2}, 5);
}

TEST(Speculative, TokenIdenticalToGreedyOnALargerModel) {
    const Model m = medium_model();
    expect_token_identical(m, {1}, 63);
    expect_token_identical(m, {5, 17, 2, 40, 9}, 40);
}

TEST(Speculative, TokenIdenticalToGreedyOnGpt2) {
    // GPT-2's learned positions and fused qkv: the batched verification is gpt2_block_prefill
    const Model m = test::make_model(test::tiny_gpt2_config());
    expect_token_identical(m, {1}, 7);
}

TEST(Speculative, TokenIdenticalToGreedyOnThePlainKernels) {
    // the plain kernels run the k+1 verification rows one linear() at a time: the same invariant
    set_kernel_path(KernelPath::Plain);
    const Model m = medium_model();
    expect_token_identical(m, {1, 2}, 30);
    set_kernel_path(KernelPath::Fast);
}

TEST(Speculative, ADraftIdenticalToTheTargetIsAlwaysAccepted) {
    // the target as its own draft (early_exit_draft refuses all layers, the session does not): its
    // one-at-a-time argmax is the batched verification's argmax bit for bit, so every guess is
    // accepted and each round emits k + 1 tokens
    const Model m = medium_model();
    for (std::size_t k : {1, 2, 4, 8}) {
        SCOPED_TRACE("k = " + std::to_string(k));
        SpeculativeSession spec(m, m, k);
        const SpeculativeResult r = spec.generate(std::vector<int>{1}, 45);
        EXPECT_EQ(r.tokens, plain_greedy(m, {1}, 45));
        EXPECT_EQ(r.stats.acceptance_rate(), 1.0);
        EXPECT_EQ(r.stats.accepted, r.stats.proposed);
        EXPECT_EQ(r.stats.rounds, (45 + k) / (k + 1));  // ceil(45 / (k + 1)): the last round proposes fewer
    }
}

TEST(Speculative, RollbackLeavesBothCachesAtTheAcceptedTokens) {
    // after generate: the target cache holds prompt + new tokens except the last, with the very rows
    // a plain session computes for them (no row of a rejected guess survives); the draft cache holds
    // a prefix of the same tokens, with the rows a plain run of the draft computes
    const Model m = medium_model();
    const std::vector<int> prompt = {3, 1, 4};
    const std::size_t n = 30;
    std::size_t runs_with_a_rollback = 0;  // (a run whose draft is always right rolls nothing back)
    for (const auto& [name, draft] : drafts_of(m)) {
        for (std::size_t k : {1, 3, 8}) {
            SCOPED_TRACE(name + ", k = " + std::to_string(k));
            SpeculativeSession spec(m, draft, k);
            const SpeculativeResult r = spec.generate(prompt, n);
            runs_with_a_rollback += r.stats.accepted > 0 && r.stats.accepted < r.stats.proposed;  // some kept, some not
            std::vector<int> seq = prompt;
            seq.insert(seq.end(), r.tokens.begin(), r.tokens.end());
            ASSERT_EQ(spec.target_cache().length(), seq.size() - 1);
            for (std::size_t l = 0; l < m.config.n_layers; ++l) ASSERT_EQ(spec.target_cache().length(l), seq.size() - 1);
            ASSERT_LE(spec.draft_cache().length(), seq.size() - 1);
            ASSERT_GE(spec.draft_cache().length() + 2, seq.size() - 1);  // at most 2 behind: the next catch-up

            auto expect_rows = [&](const Model& model, const KVCache& cache) {
                Session plain(model);
                for (std::size_t p = 0; p < cache.length(); ++p) plain.feed(seq[p]);
                for (std::size_t l = 0; l < model.config.n_layers; ++l) {
                    const auto k_ours = cache.keys(l), k_plain = plain.cache().keys(l);
                    const auto v_ours = cache.values(l), v_plain = plain.cache().values(l);
                    EXPECT_TRUE(std::equal(k_ours.begin(), k_ours.end(), k_plain.begin(), k_plain.end())) << "keys, layer " << l;
                    EXPECT_TRUE(std::equal(v_ours.begin(), v_ours.end(), v_plain.begin(), v_plain.end())) << "values, layer " << l;
                }
            };
            expect_rows(m, spec.target_cache());
            expect_rows(draft, spec.draft_cache());
        }
    }
    EXPECT_GE(runs_with_a_rollback, 6u);  // of the 12: the test exercised partial acceptance
}

TEST(Speculative, NeverMoreThanMaxNewTokensWhateverK) {
    // k larger than the tokens still wanted: the last rounds propose fewer
    const Model m = medium_model();
    const Model draft = early_exit_draft(m, 2);
    for (std::size_t n : {1, 2, 3, 9}) {
        for (std::size_t k : {1, 2, 4, 8, 100}) {
            SCOPED_TRACE("n = " + std::to_string(n) + ", k = " + std::to_string(k));
            SpeculativeSession spec(m, m, k);  // a draft that is always right would overshoot first
            EXPECT_EQ(spec.generate(std::vector<int>{1}, n).tokens, plain_greedy(m, {1}, n));
            SpeculativeSession spec2(m, draft, k);
            EXPECT_EQ(spec2.generate(std::vector<int>{1}, n).tokens, plain_greedy(m, {1}, n));
        }
    }
    SpeculativeSession spec(m, draft, 4);
    const SpeculativeResult none = spec.generate(std::vector<int>{1, 2}, 0);
    EXPECT_TRUE(none.tokens.empty());
    EXPECT_EQ(none.stats.rounds, 0u);
}

TEST(Speculative, StopTokenEndsItAsInSession) {
    // a stop token inside an accepted run of guesses ends generation right there (it is the last
    // token returned) and the caches are rolled back to it
    const Model m = medium_model();
    const std::vector<int> full = plain_greedy(m, {1}, 40);
    const int stop = full[12];  // some token the greedy run reaches
    const std::vector<int> expected = plain_greedy(m, {1}, 40, {stop});
    ASSERT_LT(expected.size(), 40u);
    for (std::size_t k : {1, 4, 8}) {
        SCOPED_TRACE("k = " + std::to_string(k));
        SpeculativeSession spec(m, m, k);
        std::vector<int> seen;
        const SpeculativeResult r = spec.generate(std::vector<int>{1}, 40, std::vector<int>{stop}, [&](int t) { seen.push_back(t); });
        EXPECT_EQ(r.tokens, expected);
        EXPECT_EQ(seen, expected);
        EXPECT_EQ(r.stop_reason, "stop token " + std::to_string(stop));
        EXPECT_EQ(spec.target_cache().length(), expected.size());  // 1 prompt token + new - 1
        EXPECT_LE(spec.draft_cache().length(), expected.size());
    }
}

TEST(Speculative, GenerateTwiceStartsAfresh) {
    const Model m = medium_model();
    const Model draft = int8_draft(m);
    SpeculativeSession spec(m, draft, 4);
    const auto a = spec.generate(std::vector<int>{7, 8}, 20).tokens;
    spec.generate(std::vector<int>{1}, 30);
    EXPECT_EQ(spec.generate(std::vector<int>{7, 8}, 20).tokens, a);
}

// ---- Refusals -----------------------------------------------------------------------------------

TEST(SpeculativeRejects, KZero) {
    const Model m = medium_model();
    expect_error<ModelError>([&] { SpeculativeSession(m, m, 0); }, {"k = 0", "k >= 1"});
}

TEST(SpeculativeRejects, EarlyExitOfNoLayersOrAllLayers) {
    const Model m = medium_model();  // 4 layers
    expect_error<ModelError>([&] { early_exit_draft(m, 0); }, {"of 0 layers", "has 4 layers", "1 .. 3"});
    expect_error<ModelError>([&] { early_exit_draft(m, 4); }, {"of 4 layers", "has 4 layers", "1 .. 3"});
    expect_error<ModelError>([&] { early_exit_draft(m, 9); }, {"of 9 layers", "1 .. 3"});
    const Model d = early_exit_draft(m, 3);
    EXPECT_EQ(d.config.n_layers, 3u);
    EXPECT_EQ(d.layers.size(), 3u);
    EXPECT_EQ(d.layers[2].wq.w, m.layers[2].wq.w);
    EXPECT_EQ(d.output, m.output);
}

TEST(SpeculativeRejects, DraftWithAnotherVocabulary) {
    const Model m = medium_model();
    Config c = m.config;
    c.vocab_size = 40;
    const Model other = test::make_model(c, 3);
    expect_error<ModelError>([&] { SpeculativeSession(m, other, 4); }, {"vocabulary of 40", "has 48", "tokenizer"});
}

TEST(SpeculativeRejects, Int8DraftOfAnInt8Target) {
    const Model q = int8_draft(medium_model());
    expect_error<ModelError>([&] { int8_draft(q); }, {"already int8", "early-exit"});
}

TEST(SpeculativeRejects, PromptOrRequestBeyondTheContext) {
    // the same checks as Session, for the target and (named as such) for the draft
    const Model m = medium_model();  // context 64
    SpeculativeSession spec(m, m, 4);
    expect_error<ModelError>([&] { spec.generate(std::vector<int>(65, 1), 1); }, {"65 tokens", "64"});
    expect_error<ModelError>([&] { spec.generate(std::vector<int>{1, 2}, 63); }, {"max_new_tokens (63)", "at most 62"});
    expect_error<ModelError>([&] { spec.generate(std::vector<int>{}, 3); }, {"empty"});
    Model short_draft = early_exit_draft(m, 1);
    short_draft.config.max_seq_len = 16;
    SpeculativeSession spec2(m, short_draft, 4);
    expect_error<ModelError>([&] { spec2.generate(std::vector<int>{1}, 20); }, {"draft model", "context of 16"});
}

// ---- stories260K (../shared) --------------------------------------------------------------------

TEST(Speculative, TokenIdenticalToGreedyOnStories260K) {
    // a real trained model (5 layers, GQA, vocabulary 512): 128 tokens from BOS, both drafts, k 1..8
    // (the stages generation.speculative.*.stories260k run all 256 of the fixture against PyTorch's)
    const std::string path = test::shared_dir() + "/models/stories260K/stories260K.bin";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found (../shared absent); set LMLAB_SHARED to run this";
    const Model m = load_model(path);
    const std::vector<int> expected = plain_greedy(m, {1}, 128);
    for (const auto& [name, draft] : std::vector<std::pair<std::string, Model>>{{"early-exit:1", early_exit_draft(m, 1)},
                                                                               {"early-exit:4", early_exit_draft(m, 4)},
                                                                               {"int8", int8_draft(m)}}) {
        for (std::size_t k : {1, 2, 4, 8}) {
            SCOPED_TRACE(name + ", k = " + std::to_string(k));
            SpeculativeSession spec(m, draft, k);
            const SpeculativeResult r = spec.generate(std::vector<int>{1}, 128);
            EXPECT_EQ(r.tokens, expected);
            EXPECT_EQ(r.stats.accepted + r.stats.rounds, 128u);
        }
    }
}

}  // namespace lmlab
