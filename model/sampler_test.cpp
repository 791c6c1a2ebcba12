// Tests of the sampler: greedy decoding, the RNG, the top-k / top-p cuts, the distribution of the
// draws, and config validation. Expected probabilities are computed here in double from the
// procedure documented in sampler.h.
#include "model/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

namespace lmlab {

namespace {

SamplerConfig config(float temperature, int top_k = 0, float top_p = 1.0f, std::uint64_t seed = 42) {
    SamplerConfig c;
    c.temperature = temperature;
    c.top_k = top_k;
    c.top_p = top_p;
    c.seed = seed;
    return c;
}

std::vector<int> draws(Sampler& s, const std::vector<float>& logits, int n) {
    std::vector<int> out;
    for (int i = 0; i < n; ++i) out.push_back(s.sample(logits));
    return out;
}

// softmax(logits / temperature) in double
std::vector<double> probabilities(const std::vector<float>& logits, double temperature) {
    double mx = -1e300, sum = 0.0;
    for (float l : logits) mx = std::max(mx, l / temperature);
    std::vector<double> p;
    for (float l : logits) sum += p.emplace_back(std::exp(l / temperature - mx));
    for (double& x : p) x /= sum;
    return p;
}

// Checks that the counts of n draws match the probabilities p within 4 standard errors
// sqrt(p(1-p)/n) per token (a fixed seed makes this deterministic, not flaky).
void expect_frequencies(const std::vector<int>& counts, const std::vector<double>& p, int n) {
    ASSERT_EQ(counts.size(), p.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
        const double freq = static_cast<double>(counts[i]) / n;
        const double se = std::sqrt(p[i] * (1 - p[i]) / n);
        EXPECT_NEAR(freq, p[i], 4 * se + 1e-12) << "token " << i << " (" << counts[i] << " of " << n << ")";
    }
}

std::vector<int> histogram(Sampler& s, const std::vector<float>& logits, int n) {
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < n; ++i) ++counts.at(static_cast<std::size_t>(s.sample(logits)));
    return counts;
}

}  // namespace

TEST(Sampler, TemperatureZeroIsArgmaxFirstMaximumWins) {
    // greedy decoding: ids 1 and 2 tie for the maximum, id 1 (the first) wins, every time
    Sampler s(config(0.0f), 4);
    const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f};
    for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sample(logits), 1);
    const std::vector<float> last = {-5.0f, -4.0f, -3.0f, -1.0f};
    EXPECT_EQ(s.sample(last), 3);
}

TEST(Sampler, TemperatureZeroUsesNoRandomness) {
    // greedy steps draw nothing: the RNG afterwards is where a fresh sampler's RNG starts
    Sampler greedy(config(0.0f, 0, 1.0f, 7), 3), fresh(config(0.0f, 0, 1.0f, 7), 3);
    const std::vector<float> logits = {0.0f, 1.0f, 0.5f};
    for (int i = 0; i < 5; ++i) greedy.sample(logits);
    EXPECT_EQ(greedy.next_uniform(), fresh.next_uniform());
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedDifferentSequence) {
    // reproducible runs: the seed fixes every draw; another seed gives another sequence
    const std::vector<float> flat(10, 0.0f);
    Sampler a(config(1.0f, 0, 1.0f, 123), 10), b(config(1.0f, 0, 1.0f, 123), 10), c(config(1.0f, 0, 1.0f, 124), 10);
    const auto da = draws(a, flat, 50), db = draws(b, flat, 50), dc = draws(c, flat, 50);
    EXPECT_EQ(da, db);
    EXPECT_NE(da, dc);
    // and the draws actually vary (a sampler stuck on one id would pass the two checks above)
    EXPECT_GE(std::set<int>(da.begin(), da.end()).size(), 8u);
}

TEST(Sampler, SeedZeroIsReplacedByANonZeroState) {
    // xorshift from state 0 stays 0 forever (every u would be 0); seed 0 must still give randomness
    Sampler s(config(1.0f, 0, 1.0f, 0), 2);
    std::set<float> seen;
    for (int i = 0; i < 20; ++i) seen.insert(s.next_uniform());
    EXPECT_GE(seen.size(), 19u);
}

TEST(Sampler, NextUniformIsXorshift64StarInTheUnitInterval) {
    // the documented RNG, recomputed here: xorshift64* then the top 24 bits / 2^24. Every value
    // is in [0, 1) and the mean of many is near 1/2
    std::uint64_t x = 42;
    auto reference = [&x] {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        return static_cast<double>((x * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0;
    };
    Sampler s(config(1.0f), 2);
    double sum = 0.0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) {
        const float u = s.next_uniform();
        if (i < 1000) {
            ASSERT_EQ(static_cast<double>(u), reference()) << "draw " << i;
        }
        ASSERT_GE(u, 0.0f);
        ASSERT_LT(u, 1.0f);
        sum += u;
    }
    EXPECT_NEAR(sum / n, 0.5, 0.005);  // standard error 1/sqrt(12 n) ≈ 0.0009
}

TEST(Sampler, EachDrawFollowsTheDocumentedWalk) {
    // step 5 of sampler.h, exactly: with u from a twin RNG, the chosen id is the first whose
    // running sum exceeds u. Without a cut the walk goes in id order (0.3, 0.1, 0.4, 0.2); with a
    // top-p cut (here p = 0.9999, which keeps everything) in decreasing probability: ids 2, 0, 3, 1.
    const std::vector<float> logits = {std::log(0.3f), std::log(0.1f), std::log(0.4f), std::log(0.2f)};
    struct Walk {
        float top_p;
        int order[4];
        double cum[4];
    };
    for (const Walk& w : {Walk{1.0f, {0, 1, 2, 3}, {0.3, 0.4, 0.8, 1.0}}, Walk{0.9999f, {2, 0, 3, 1}, {0.4, 0.7, 0.9, 1.0}}}) {
        Sampler s(config(1.0f, 0, w.top_p, 99), 4), twin(config(1.0f, 0, w.top_p, 99), 4);
        for (int i = 0; i < 500; ++i) {
            const double u = twin.next_uniform();
            int expected = w.order[3];
            for (int j = 0; j < 4; ++j)
                if (w.cum[j] > u) {
                    expected = w.order[j];
                    break;
                }
            ASSERT_EQ(s.sample(logits), expected) << "top_p " << w.top_p << ", draw " << i << ", u = " << u;
        }
    }
}

TEST(Sampler, TinyTemperatureIsGreedyNotNaN) {
    // logits / 1e-39 would overflow to inf and softmax to NaN; (logits - max) / T does not
    const std::vector<float> logits = {0.5f, 2.0f, 1.0f, -3.0f};
    Sampler s(config(1e-39f, 0, 1.0f, 5), 4);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(logits), 1);
}

TEST(Sampler, FrequenciesMatchSoftmaxAtTemperatureOne) {
    // 20000 draws from a 4-token distribution land on each token in proportion to softmax(logits)
    const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f};
    Sampler s(config(1.0f, 0, 1.0f, 2024), 4);
    const int n = 20000;
    const auto p = probabilities(logits, 1.0);
    // softmax([0, 1, 2, 0.5]) by hand: e^x / (1 + e + e^2 + e^0.5) = e^x / 12.7561
    //   = 0.0784, 0.2131, 0.5793, 0.1292
    EXPECT_NEAR(p[0], 0.0784, 1e-4);
    EXPECT_NEAR(p[2], 0.5793, 1e-4);
    expect_frequencies(histogram(s, logits, n), p, n);
}

TEST(Sampler, TemperatureFlattensTheDistribution) {
    // temperature 2 samples from softmax(logits / 2), not from softmax(logits)
    const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f};
    Sampler s(config(2.0f, 0, 1.0f, 5), 4);
    const int n = 20000;
    const auto counts = histogram(s, logits, n);
    expect_frequencies(counts, probabilities(logits, 2.0), n);
    // at temperature 1 token 2 would get 57.9%; at 2 it gets e^1 / (1 + e^0.5 + e + e^0.25) = 40.9%
    EXPECT_LT(counts[2], n / 2);
}

TEST(Sampler, TopKOneIsArgmaxEvenAtHighTemperature) {
    // top_k = 1 keeps only the most probable token, however flat the temperature makes the rest
    Sampler s(config(100.0f, 1), 5);
    const std::vector<float> logits = {0.1f, 0.3f, 0.2f, 0.29f, -1.0f};
    for (int i = 0; i < 200; ++i) ASSERT_EQ(s.sample(logits), 1);
}

TEST(Sampler, TopKTieKeepsTheLowerId) {
    // ties in the top-k cut go to the lower id (as documented): ids 1 and 3 tie, only 1 survives
    Sampler s(config(1.0f, 1), 4);
    const std::vector<float> logits = {0.0f, 2.0f, 1.0f, 2.0f};
    for (int i = 0; i < 100; ++i) ASSERT_EQ(s.sample(logits), 1);
}

TEST(Sampler, TinyTopPIsArgmax) {
    // the nucleus always keeps at least the most probable token; with top_p tiny, only that one
    Sampler s(config(1.5f, 0, 1e-6f), 4);
    const std::vector<float> logits = {0.5f, 0.4f, 0.45f, 0.6f};
    for (int i = 0; i < 200; ++i) ASSERT_EQ(s.sample(logits), 3);
}

TEST(Sampler, TopKTwoOnlyEverReturnsTheTwoMostProbable) {
    // over 2000 draws only ids 0 and 3 (the two largest logits) appear, both of them, in the ratio
    // of their renormalised probabilities e^2 : e^1.5 = 0.622 : 0.378
    Sampler s(config(1.0f, 2, 1.0f, 11), 5);
    const std::vector<float> logits = {2.0f, 1.0f, 0.0f, 1.5f, 1.4f};
    const int n = 2000;
    const auto counts = histogram(s, logits, n);
    EXPECT_EQ(counts[1] + counts[2] + counts[4], 0);
    EXPECT_EQ(counts[0] + counts[3], n);
    const double p0 = 1.0 / (1.0 + std::exp(-0.5));
    EXPECT_NEAR(static_cast<double>(counts[0]) / n, p0, 4 * std::sqrt(p0 * (1 - p0) / n));
}

TEST(Sampler, TopPKeepsTheShortestPrefixReachingP) {
    // probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps {0, 1} (0.5 < 0.75 <= 0.8) and draws them
    // in the ratio 0.5 : 0.3 = 0.625 : 0.375
    const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    Sampler s(config(1.0f, 0, 0.75f, 3), 4);
    const int n = 4000;
    const auto counts = histogram(s, logits, n);
    EXPECT_EQ(counts[2] + counts[3], 0);
    expect_frequencies({counts[0], counts[1]}, {0.625, 0.375}, n);
}

TEST(Sampler, TopKThenTopP) {
    // top_k 3 keeps 0.5, 0.3, 0.15 (sum 0.95); top_p 0.9 is then reached at 0.95, so all three stay
    // and are drawn as 0.5/0.95, 0.3/0.95, 0.15/0.95; id 3 never
    const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    Sampler s(config(1.0f, 3, 0.9f, 8), 4);
    const int n = 20000;
    const auto counts = histogram(s, logits, n);
    EXPECT_EQ(counts[3], 0);
    expect_frequencies({counts[0], counts[1], counts[2]}, {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95}, n);
}

TEST(Sampler, InvalidConfigsThrow) {
    // misconfigurations are rejected when the sampler is made, with ModelError
    EXPECT_THROW(config(-0.5f).validate(), ModelError);
    EXPECT_THROW(config(std::numeric_limits<float>::quiet_NaN()).validate(), ModelError);
    EXPECT_THROW(config(std::numeric_limits<float>::infinity()).validate(), ModelError);
    EXPECT_THROW(config(1.0f, -1).validate(), ModelError);
    EXPECT_THROW(config(1.0f, 0, 0.0f).validate(), ModelError);
    EXPECT_THROW(config(1.0f, 0, -0.1f).validate(), ModelError);
    EXPECT_THROW(config(1.0f, 0, 1.01f).validate(), ModelError);
    EXPECT_THROW(Sampler(config(-1.0f), 4), ModelError);
    EXPECT_THROW(Sampler(config(1.0f, -3), 4), ModelError);
    EXPECT_THROW(Sampler(config(1.0f, 0, 0.0f), 4), ModelError);
    EXPECT_THROW(Sampler(config(1.0f, 0, 2.0f), 4), ModelError);
    // the boundaries are valid
    EXPECT_NO_THROW(config(0.0f, 0, 1.0f).validate());
    EXPECT_NO_THROW(config(1.0f, 0, 1e-9f).validate());
}

TEST(Sampler, LogitsOfTheWrongSizeThrow) {
    // a sampler sized for one vocabulary must not read past (or short of) another's logits
    Sampler s(config(1.0f), 4);
    const std::vector<float> three = {0, 1, 2}, five = {0, 1, 2, 3, 4};
    EXPECT_THROW(s.sample(three), ModelError);
    EXPECT_THROW(s.sample(five), ModelError);
}

TEST(Sampler, NaNOrInfLogitsAreAnErrorNotAFixedId) {
    // garbage logits must not turn into a plausible-looking token
    for (const float bad : {NAN, INFINITY}) {
        const std::vector<float> logits = {5.0f, 9.0f, bad, 1.0f, 0.0f};
        for (float t : {0.0f, 0.8f}) {
            Sampler s(config(t, 0, 1.0f, 1), 5);
            EXPECT_THROW(s.sample(logits), ModelError) << "temperature " << t;
        }
    }
    const std::vector<float> all_masked(5, -INFINITY);
    Sampler s(config(0.8f, 0, 1.0f, 1), 5);
    EXPECT_THROW(s.sample(all_masked), ModelError);
    // a -inf mask on some ids is fine and those ids are never drawn
    const std::vector<float> masked = {0.0f, -INFINITY, 0.0f, -INFINITY, 0.0f};
    for (int i = 0; i < 200; ++i) {
        const int id = s.sample(masked);
        EXPECT_TRUE(id == 0 || id == 2 || id == 4) << id;
    }
}

}  // namespace lmlab
