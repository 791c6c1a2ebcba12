#include <algorithm>
#include <cmath>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

void attention(std::span<const float> q, std::span<const float> keys,
               std::span<const float> values, std::size_t n_pos, std::size_t stride,
               std::span<float> scores, std::span<float> out, KvPositions at) {
    const std::size_t head_dim = q.size();
    const std::size_t ring = at.ring ? at.ring : n_pos;  // no ring: position t in row t
    require(n_pos >= 1 && at.first < n_pos && n_pos - at.first <= ring, "attention",
            "need first < n_pos, and a ring that holds every position read");
    const std::size_t n = n_pos - at.first;  // positions read
    require(scores.size() >= n && out.size() == head_dim, "attention",
            "need scores of at least n_pos - first and out of head_dim elements");
    const std::size_t rows = std::min(ring, n_pos);  // rows of keys/values that may be read
    require(keys.size() >= (rows - 1) * stride + head_dim && values.size() >= (rows - 1) * stride + head_dim,
            "attention", "keys/values too short for their rows of the given stride");
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    // where position t's key and value start: row t, or row t % ring of a ring buffer
    const auto at_row = [&](std::size_t t) { return (t % ring) * stride; };

    // scores[i] = q · k_t / sqrt(head_dim), t = first + i: how well position t's key matches this query
    for (std::size_t i = 0; i < n; ++i) {
        const float* k = keys.data() + at_row(at.first + i);
        double dot = 0.0;
        for (std::size_t d = 0; d < head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
        scores[i] = static_cast<float>(dot * scale);
    }
    // probabilities over the positions
    softmax(scores.first(n), scores.first(n));

    // out = Σ_t p[t] · v_t: a convex combination, so a float accumulator is accurate here
    for (std::size_t d = 0; d < head_dim; ++d) out[d] = 0.0f;
    for (std::size_t i = 0; i < n; ++i) {
        const float* v = values.data() + at_row(at.first + i);
        const float p = scores[i];
        for (std::size_t d = 0; d < head_dim; ++d) out[d] += p * v[d];
    }
}

}  // namespace lmlab
