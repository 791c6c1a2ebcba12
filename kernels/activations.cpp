#include <cmath>
#include <numbers>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

void silu(std::span<const float> x, std::span<float> y) {
    require(x.size() == y.size(), "silu", "x and y must have the same length");
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void sigmoid(std::span<const float> x, std::span<float> y) {
    require(x.size() == y.size(), "sigmoid", "x and y must have the same length");
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void swiglu(std::span<const float> a, std::span<const float> b, std::span<float> y) {
    require(a.size() == b.size() && a.size() == y.size(), "swiglu", "a, b and y must have the same length");
    for (std::size_t i = 0; i < a.size(); ++i) y[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
}

void gelu_tanh(std::span<const float> x, std::span<float> y) {
    require(x.size() == y.size(), "gelu_tanh", "x and y must have the same length");
    const double c = std::sqrt(2.0 / std::numbers::pi);
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double v = x[i];  // double: one rounding at the end instead of one per operation
        y[i] = static_cast<float>(0.5 * v * (1.0 + std::tanh(c * (v + 0.044715 * v * v * v))));
    }
}

void gelu_erf(std::span<const float> x, std::span<float> y) {
    require(x.size() == y.size(), "gelu_erf", "x and y must have the same length");
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double v = x[i];
        y[i] = static_cast<float>(0.5 * v * (1.0 + std::erf(v / std::numbers::sqrt2)));
    }
}

}  // namespace lmlab
