#include <cmath>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

void rmsnorm(std::span<const float> x, std::span<const float> weight, float eps,
             std::span<float> y) {
    require(x.size() == weight.size() && x.size() == y.size() && !x.empty(), "rmsnorm",
            "x, weight and y must have the same non-zero length");
    double sum_sq = 0.0;
    for (float v : x) sum_sq += static_cast<double>(v) * v;
    const double mean_sq = sum_sq / static_cast<double>(x.size());
    const double scale = 1.0 / std::sqrt(mean_sq + eps);  // eps keeps this finite for x = 0
    for (std::size_t i = 0; i < x.size(); ++i)
        y[i] = static_cast<float>(x[i] * scale * weight[i]);
}

void layernorm(std::span<const float> x, std::span<const float> weight, std::span<const float> bias, float eps,
               std::span<float> y) {
    require(x.size() == weight.size() && x.size() == bias.size() && x.size() == y.size() && !x.empty(),
            "layernorm", "x, weight, bias and y must have the same non-zero length");
    const double n = static_cast<double>(x.size());
    // pass 1: the mean
    double sum = 0.0;
    for (float v : x) sum += v;
    const double mean = sum / n;
    // pass 2: the variance around that mean. Not E[x²] - E[x]²: for x ≈ 1e4 ± 1e-2 both terms are
    // ≈ 1e8 and their difference (≈ 1e-4) is lost to cancellation; deviations from the mean are small
    // numbers whose squares add up accurately.
    double sum_sq = 0.0;
    for (float v : x) sum_sq += (v - mean) * (v - mean);
    const double inv_std = 1.0 / std::sqrt(sum_sq / n + eps);  // biased variance (divide by n), as PyTorch
    for (std::size_t i = 0; i < x.size(); ++i)
        y[i] = static_cast<float>((x[i] - mean) * inv_std * weight[i] + bias[i]);
}

}  // namespace lmlab
