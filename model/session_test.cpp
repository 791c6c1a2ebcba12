// Tests of Session::generate on the tiny in-memory model: the checks it makes before running,
// agreement with a hand-written feed + argmax loop, stop tokens, seeding and the token callback.
#include "model/session.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include "model/testing/test_model.h"

namespace lmlab {

namespace {

using test::expect_error;

SamplerConfig greedy() { return SamplerConfig{}; }  // temperature 0

SamplerConfig random_config(std::uint64_t seed) {
    SamplerConfig c;
    c.temperature = 1.0f;
    c.seed = seed;
    return c;
}

// First index of the largest logit, written out (not the kernel's argmax).
int first_max(std::span<const float> logits) {
    int best = 0;
    for (std::size_t i = 1; i < logits.size(); ++i)
        if (logits[i] > logits[static_cast<std::size_t>(best)]) best = static_cast<int>(i);
    return best;
}

// Greedy continuation by hand: feed the prompt, then repeatedly take the argmax and feed it.
std::vector<int> manual_greedy(const Model& m, const std::vector<int>& prompt, std::size_t n) {
    Session s(m);
    std::span<const float> logits;
    for (int t : prompt) logits = s.feed(t);
    std::vector<int> out;
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(first_max(logits));
        if (i + 1 < n) logits = s.feed(out.back());
    }
    return out;
}

}  // namespace

// ---- Checks before running --------------------------------------------------------------------

class SessionRejects : public ::testing::Test {
protected:
    // Each rejected call must leave the session as it was: two tokens in the cache, no callback.
    void SetUp() override {
        session.feed(1);
        session.feed(2);
    }
    void expect_untouched() {
        EXPECT_EQ(session.position(), 2u);
        EXPECT_EQ(callbacks, 0);
    }
    Model model = test::tiny_model();  // vocab 5, max_seq_len 8
    Session session{model};
    Sampler sampler{greedy(), 5};
    int callbacks = 0;
    std::function<void(int)> count = [this](int) { ++callbacks; };
};

TEST_F(SessionRejects, EmptyPrompt) {
    // nothing to condition on: a clear error rather than sampling from uninitialised logits
    const std::vector<int> prompt;
    expect_error<ModelError>([&] { session.generate(prompt, 3, sampler, {}, count); }, {"empty"});
    expect_untouched();
}

TEST_F(SessionRejects, TokenOutsideTheVocabulary) {
    // the bad id and its index are named, and checked before the earlier tokens are run
    const std::vector<int> prompt = {1, 2, 5};
    expect_error<ModelError>([&] { session.generate(prompt, 1, sampler, {}, count); },
                             {"prompt token 2 (counting from 0)", "is id 5", "[0, 5)"});
    expect_untouched();
    const std::vector<int> negative = {-1};
    expect_error<ModelError>([&] { session.generate(negative, 1, sampler, {}, count); }, {"is id -1"});
    expect_untouched();
}

TEST_F(SessionRejects, PromptLongerThanTheContext) {
    const std::vector<int> prompt(9, 1);
    expect_error<ModelError>([&] { session.generate(prompt, 0, sampler, {}, count); },
                             {"9 tokens", "context of 8"});
    expect_untouched();
}

TEST_F(SessionRejects, PromptPlusNewTokensBeyondTheContext) {
    // 3 + 6 > 8: refused up front (not after 5 tokens of work), naming the numbers and the fix
    const std::vector<int> prompt = {1, 2, 3};
    expect_error<ModelError>([&] { session.generate(prompt, 6, sampler, {}, count); },
                             {"3 tokens", "max_new_tokens (6)", "context of 8", "at most 5"});
    expect_untouched();
}

TEST_F(SessionRejects, HugeMaxNewTokensDoesNotWrapAround) {
    // prompt.size() + max_new_tokens must not overflow size_t and slip under the limit
    const std::vector<int> prompt = {1, 2, 3};
    expect_error<ModelError>(
        [&] { session.generate(prompt, std::numeric_limits<std::size_t>::max(), sampler, {}, count); },
        {"context of 8"});
    expect_untouched();
}

TEST(Session, PromptPlusNewTokensExactlyFillingTheContextIsAccepted) {
    // the boundary: 3 + 5 == max_seq_len 8 is allowed and yields 5 tokens
    const Model m = test::tiny_model();
    Session s(m);
    Sampler greedy_sampler(greedy(), 5);
    const std::vector<int> prompt = {1, 2, 3};
    const GenerationResult r = s.generate(prompt, 5, greedy_sampler);
    EXPECT_EQ(r.tokens.size(), 5u);
    EXPECT_EQ(r.n_prompt, 3u);
    EXPECT_EQ(r.stop_reason, "context full");  // 3 + 5 fill the context of 8
}

// ---- Generation -------------------------------------------------------------------------------

TEST(Session, GreedyGenerateEqualsManualFeedAndArgmaxLoop) {
    // generate() adds nothing to the model: same tokens as feeding and taking the argmax by hand
    const Model m = test::tiny_model();
    const std::vector<int> prompt = {1, 4};
    const std::vector<int> expected = manual_greedy(m, prompt, 6);
    Session s(m);
    Sampler sampler(greedy(), 5);
    const GenerationResult r = s.generate(prompt, 6, sampler);
    EXPECT_EQ(r.tokens, expected);
    EXPECT_EQ(r.n_prompt, 2u);
    EXPECT_EQ(r.stop_reason, length_stop_reason(m.config, prompt.size(), 6));
    // the continuation is not constant, so the comparison above exercises more than one id
    EXPECT_GE(std::set<int>(expected.begin(), expected.end()).size(), 2u);
}

TEST(Session, GenerateStartsFromAnEmptyCache) {
    // generate() resets: whatever was fed before does not leak into the next sequence
    const Model m = test::tiny_model();
    Session s(m);
    Sampler sampler(greedy(), 5);
    const std::vector<int> prompt = {3};
    const std::vector<int> first = s.generate(prompt, 5, sampler).tokens;
    s.feed(0);
    s.feed(4);
    EXPECT_EQ(s.generate(prompt, 5, sampler).tokens, first);
    EXPECT_EQ(first, manual_greedy(m, prompt, 5));
}

TEST(Session, FeedAdvancesThePosition) {
    // feed() runs at the next position; reset() goes back to 0
    const Model m = test::tiny_model();
    Session s(m);
    EXPECT_EQ(s.position(), 0u);
    s.feed(1);
    s.feed(2);
    EXPECT_EQ(s.position(), 2u);
    EXPECT_EQ(s.cache().length(0), 2u);
    s.reset();
    EXPECT_EQ(s.position(), 0u);
}

TEST(Session, StopTokenEndsGenerationAndIsReturnedLast) {
    // stop at the first occurrence of a stop id, which is included as the last token
    const Model m = test::tiny_model();
    const std::vector<int> prompt = {1, 4};
    const std::vector<int> free_run = manual_greedy(m, prompt, 6);
    // the stop id: the first token of the free run that differs from its first token, so this is
    // that id's first occurrence
    std::size_t cut = 1;
    while (cut < free_run.size() && free_run[cut] == free_run[0]) ++cut;
    ASSERT_LT(cut, free_run.size()) << "the greedy run is constant; pick another prompt";
    const int stop = free_run[cut];
    Session s(m);
    Sampler sampler(greedy(), 5);
    const std::vector<int> stop_ids = {stop, 77};  // an id that never occurs is harmless
    const GenerationResult r = s.generate(prompt, 6, sampler, stop_ids);
    const std::vector<int> expected(free_run.begin(), free_run.begin() + static_cast<std::ptrdiff_t>(cut) + 1);
    EXPECT_EQ(r.tokens, expected);
    EXPECT_EQ(r.tokens.back(), stop);
    EXPECT_EQ(r.stop_reason, "stop token " + std::to_string(stop));
}

TEST(Session, StopTokenAsTheFirstNewTokenReturnsOnlyIt) {
    const Model m = test::tiny_model();
    const std::vector<int> prompt = {2};
    const int first = manual_greedy(m, prompt, 1)[0];
    Session s(m);
    Sampler sampler(greedy(), 5);
    const std::vector<int> stop_ids = {first};
    const GenerationResult r = s.generate(prompt, 5, sampler, stop_ids);
    EXPECT_EQ(r.tokens, std::vector<int>{first});
    EXPECT_EQ(s.position(), 1u);  // the stop token is returned, not run
}

TEST(Session, ZeroNewTokensRunsOnlyThePrompt) {
    const Model m = test::tiny_model();
    Session s(m);
    Sampler sampler(greedy(), 5);
    const std::vector<int> prompt = {1, 2, 3};
    const GenerationResult r = s.generate(prompt, 0, sampler);
    EXPECT_TRUE(r.tokens.empty());
    EXPECT_EQ(r.stop_reason, "max_new_tokens");
    EXPECT_EQ(s.position(), 3u);
}

TEST(Session, SameSeedGivesTheSameTokens) {
    // sampled runs are reproducible from the seed (temperature 1, fresh sessions and samplers)
    const Model m = test::tiny_model();
    const std::vector<int> prompt = {1};
    auto run = [&](std::uint64_t seed) {
        Session s(m);
        Sampler sampler(random_config(seed), 5);
        return s.generate(prompt, 7, sampler).tokens;
    };
    const std::vector<int> a = run(17);
    EXPECT_EQ(a.size(), 7u);
    EXPECT_EQ(run(17), a);
    // and the seed matters: among a few other seeds at least one run differs
    bool any_differs = false;
    for (std::uint64_t seed = 18; seed < 24; ++seed) any_differs = any_differs || run(seed) != a;
    EXPECT_TRUE(any_differs);
}

TEST(Session, OnTokenSeesEveryTokenInOrder) {
    // streaming output: the callback gets each new token as chosen, the stop token included
    const Model m = test::tiny_model();
    const std::vector<int> prompt = {1, 3};
    Session s(m);
    Sampler sampler(random_config(5), 5);
    std::vector<int> seen;
    const GenerationResult r = s.generate(prompt, 6, sampler, {}, [&](int t) { seen.push_back(t); });
    EXPECT_EQ(r.tokens.size(), 6u);
    EXPECT_EQ(seen, r.tokens);

    Session s2(m);
    Sampler greedy_sampler(greedy(), 5);
    const std::vector<int> free_run = manual_greedy(m, prompt, 3);
    const std::vector<int> stop_ids = {free_run[2]};
    seen.clear();
    const GenerationResult stopped = s2.generate(prompt, 6, greedy_sampler, stop_ids, [&](int t) { seen.push_back(t); });
    EXPECT_EQ(seen, stopped.tokens);
    EXPECT_EQ(seen.back(), free_run[2]);
}

}  // namespace lmlab
