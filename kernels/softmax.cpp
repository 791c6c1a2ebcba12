#include <cmath>
#include <limits>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

void softmax(std::span<const float> x, std::span<float> y) {
    require(x.size() == y.size() && !x.empty(), "softmax", "x and y must have the same non-zero length");
    // 1. the max, so that the largest exponent is exp(0) = 1 (no overflow at x = 1e4)
    float max = -std::numeric_limits<float>::infinity();
    for (float v : x) max = v > max ? v : max;
    // 2. shifted exponentials and their sum; exp(-inf - max) = 0 for masked entries
    double sum = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double e = std::exp(static_cast<double>(x[i]) - max);
        y[i] = static_cast<float>(e);
        sum += e;
    }
    // 3. normalise: the shares add up to 1
    const double inv = 1.0 / sum;
    for (std::size_t i = 0; i < y.size(); ++i) y[i] = static_cast<float>(y[i] * inv);
}

}  // namespace lmlab
