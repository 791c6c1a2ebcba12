#include <cassert>
#include <cmath>

#include "kernels.h"

namespace lmlab {

void silu(std::span<const float> x, std::span<float> y) {
    assert(x.size() == y.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void swiglu(std::span<const float> a, std::span<const float> b, std::span<float> y) {
    assert(a.size() == b.size() && a.size() == y.size());
    for (std::size_t i = 0; i < a.size(); ++i) y[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
}

}  // namespace lmlab
