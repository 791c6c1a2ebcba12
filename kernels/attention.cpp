#include <cmath>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

void attention(std::span<const float> q, std::span<const float> keys,
               std::span<const float> values, std::size_t n_pos, std::size_t stride,
               std::span<float> scores, std::span<float> out) {
    const std::size_t head_dim = q.size();
    require(n_pos >= 1 && scores.size() >= n_pos && out.size() == head_dim, "attention",
            "need n_pos >= 1, scores of at least n_pos and out of head_dim elements");
    require(keys.size() >= (n_pos - 1) * stride + head_dim && values.size() >= (n_pos - 1) * stride + head_dim,
            "attention", "keys/values too short for n_pos rows of the given stride");
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));

    // scores[t] = q · k_t / sqrt(head_dim): how well position t's key matches this query
    for (std::size_t t = 0; t < n_pos; ++t) {
        const float* k = keys.data() + t * stride;
        double dot = 0.0;
        for (std::size_t d = 0; d < head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
        scores[t] = static_cast<float>(dot * scale);
    }
    // probabilities over the positions
    softmax(scores.first(n_pos), scores.first(n_pos));

    // out = Σ_t p[t] · v_t: a convex combination, so a float accumulator is accurate here
    for (std::size_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
    for (std::size_t t = 0; t < n_pos; ++t) {
        const float* v = values.data() + t * stride;
        const float p = scores[t];
        for (std::size_t d = 0; d < head_dim; ++d) out[d] += p * v[d];
    }
}

}  // namespace lmlab
