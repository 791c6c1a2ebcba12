#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>
#include <string>

#include "kernels/kernels.h"

namespace lmlab {

void SamplerConfig::validate() const {
    if (!(temperature >= 0.0f) || !std::isfinite(temperature))
        throw ModelError(fmt::format("temperature {} must be >= 0 (0 = greedy)", temperature));
    if (top_k < 0) throw ModelError("top_k " + std::to_string(top_k) + " must be >= 0 (0 = off)");
    if (!(top_p > 0.0f && top_p <= 1.0f))
        throw ModelError(fmt::format("top_p {} must be in (0, 1] (1 = off)", top_p));
}

Sampler::Sampler(SamplerConfig cfg, std::size_t vocab_size)
    : cfg_(cfg), state_(cfg.seed ? cfg.seed : 0x9E3779B97F4A7C15ull), probs_(vocab_size), order_(vocab_size) {
    cfg_.validate();
}

float Sampler::next_uniform() {
    // xorshift64*
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    const std::uint64_t r = state_ * 0x2545F4914F6CDD1Dull;
    return static_cast<float>(r >> 40) / 16777216.0f;
}

int Sampler::sample(std::span<const float> logits) {
    if (logits.size() != probs_.size())
        throw ModelError("sampler built for " + std::to_string(probs_.size()) + " logits, got " +
                                    std::to_string(logits.size()));
    // NaN or +inf logits mean the model produced garbage; sampling from them would silently
    // return some fixed id. (-inf is a legitimate mask, as long as not every logit is masked.)
    bool any_finite = false;
    for (std::size_t i = 0; i < logits.size(); ++i) {
        if (std::isnan(logits[i]) || logits[i] == INFINITY)
            throw ModelError("cannot sample: logit " + std::to_string(i) + " is " +
                                        (std::isnan(logits[i]) ? "NaN" : "+inf"));
        any_finite = any_finite || std::isfinite(logits[i]);
    }
    if (!any_finite) throw ModelError("cannot sample: every logit is -inf");
    if (cfg_.temperature == 0.0f) return static_cast<int>(argmax(logits));

    // p = softmax(logits / T), formed as (logit - max) / T so that a tiny T cannot overflow to
    // inf/inf = NaN: the maximum becomes 0 and everything else a finite or -inf negative number.
    const float max = logits[argmax(logits)];
    for (std::size_t i = 0; i < logits.size(); ++i) probs_[i] = (logits[i] - max) / cfg_.temperature;
    softmax(probs_, probs_);

    // Candidates in decreasing probability, ties by lower id. Without a cut there is nothing to
    // sort: the walk below goes over the ids in order. std::sort and std::partial_sort work in
    // place (no allocation per token; std::stable_sort would allocate).
    std::iota(order_.begin(), order_.end(), 0);
    std::size_t kept = order_.size();
    auto before = [&](int a, int b) {
        const float pa = probs_[static_cast<std::size_t>(a)], pb = probs_[static_cast<std::size_t>(b)];
        return pa > pb || (pa == pb && a < b);
    };
    if (cfg_.top_k > 0 && static_cast<std::size_t>(cfg_.top_k) < kept) {
        kept = static_cast<std::size_t>(cfg_.top_k);
        std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(kept), order_.end(), before);
    } else if (cfg_.top_p < 1.0f) {
        std::sort(order_.begin(), order_.end(), before);
    }
    if (cfg_.top_p < 1.0f) {
        double cum = 0.0;
        std::size_t n = 0;
        while (n < kept) {
            cum += probs_[static_cast<std::size_t>(order_[n])];
            ++n;
            if (cum >= cfg_.top_p) break;
        }
        kept = std::max<std::size_t>(n, 1);
    }
    double total = 0.0;
    for (std::size_t i = 0; i < kept; ++i) total += probs_[static_cast<std::size_t>(order_[i])];
    const double u = static_cast<double>(next_uniform()) * total;
    double cum = 0.0;
    for (std::size_t i = 0; i < kept; ++i) {
        cum += probs_[static_cast<std::size_t>(order_[i])];
        if (cum > u) return order_[i];
    }
    return order_[kept - 1];  // rounding: u·total can equal the final sum
}

}  // namespace lmlab
