#include <cassert>
#include <cmath>

#include "kernels.h"

namespace lmlab {

void rmsnorm(std::span<const float> x, std::span<const float> weight, float eps,
             std::span<float> y) {
    assert(x.size() == weight.size() && x.size() == y.size() && !x.empty());
    double sum_sq = 0.0;
    for (float v : x) sum_sq += static_cast<double>(v) * v;
    const double mean_sq = sum_sq / static_cast<double>(x.size());
    const double scale = 1.0 / std::sqrt(mean_sq + eps);  // eps keeps this finite for x = 0
    for (std::size_t i = 0; i < x.size(); ++i)
        y[i] = static_cast<float>(x[i] * scale * weight[i]);
}

}  // namespace lmlab
