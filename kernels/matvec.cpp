#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

// y = W · x (+ b). The bias joins the double sum, so each y[i] is rounded to float once, as
// PyTorch's addmm does (C starts as the bias): adding b after rounding W·x would round twice.
static void matvec_bias(std::span<const float> W, std::span<const float> b, std::span<const float> x,
                        std::span<float> y) {
    const std::size_t in = x.size();
    const std::size_t out = y.size();
    for (std::size_t i = 0; i < out; ++i) {
        const float* row = W.data() + i * in;
        double acc = b.empty() ? 0.0 : b[i];  // double: see kernels.h on long reductions
        for (std::size_t j = 0; j < in; ++j) acc += static_cast<double>(row[j]) * x[j];
        y[i] = static_cast<float>(acc);
    }
}

void matvec(std::span<const float> W, std::span<const float> x, std::span<float> y) {
    require(W.size() == y.size() * x.size(), "matvec", "W must have y.size() * x.size() elements ([out, in])");
    matvec_bias(W, {}, x, y);
}

void linear(std::span<const float> W, std::span<const float> b, std::span<const float> x, std::span<float> y) {
    require(W.size() == y.size() * x.size(), "linear", "W must have y.size() * x.size() elements ([out, in])");
    require(b.empty() || b.size() == y.size(), "linear", "bias must be empty or have y.size() elements");
    matvec_bias(W, b, x, y);
}

void add(std::span<const float> a, std::span<const float> b, std::span<float> y) {
    require(a.size() == b.size() && a.size() == y.size(), "add", "a, b and y must have the same length");
    for (std::size_t i = 0; i < y.size(); ++i) y[i] = a[i] + b[i];
}

}  // namespace lmlab
