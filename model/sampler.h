// Choosing the next token from the logits.
//
// The exact procedure (so that any sampled run can be reproduced, here or elsewhere):
//   1. temperature == 0: greedy, argmax of the logits (the first maximum wins). No randomness.
//   2. otherwise p = softmax(logits / temperature) (computed as softmax((logits - max) / T)).
//   3. top_k > 0: keep the top_k most probable tokens, in decreasing probability (ties: lower id
//      first).
//   4. 0 < top_p < 1: of those, in decreasing probability, keep the shortest prefix whose
//      probabilities add up to at least top_p ("nucleus"); at least one token is kept.
//   5. draw u uniform in [0, 1) from the RNG and walk the kept tokens — in decreasing probability
//      when a cut applied (0 < top_k < vocab size, or top_p < 1), else in id order 0, 1, 2, … —
//      returning the first at which the
//      running sum of probabilities exceeds u · (sum of kept).
// RNG: xorshift64* (Vigna 2014) seeded with `seed` (0 is replaced by a fixed non-zero constant);
// u = (next() >> 40) / 2^24, a float with 24 random bits. One draw per sampled token.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "model/model.h"  // ModelError

namespace lmlab {

struct SamplerConfig {
    float temperature = 0.0f;  // 0 = greedy
    int top_k = 0;             // 0 = no top-k cut
    float top_p = 1.0f;        // 1 = no nucleus cut
    std::uint64_t seed = 42;
    // Throws ModelError for negative temperature, negative top_k, top_p outside (0, 1].
    void validate() const;
};

class Sampler {
public:
    Sampler(SamplerConfig cfg, std::size_t vocab_size);
    int sample(std::span<const float> logits);
    float next_uniform();  // the RNG, exposed for tests
    const SamplerConfig& config() const { return cfg_; }

private:
    SamplerConfig cfg_;
    std::uint64_t state_;
    std::vector<float> probs_;  // [vocab] scratch, allocated once
    std::vector<int> order_;    // [vocab] token ids sorted by probability
};

}  // namespace lmlab
