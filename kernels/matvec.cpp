#include <cassert>

#include "kernels.h"

namespace lmlab {

void matvec(std::span<const float> W, std::span<const float> x, std::span<float> y) {
    const std::size_t in = x.size();
    const std::size_t out = y.size();
    assert(W.size() == out * in);
    for (std::size_t i = 0; i < out; ++i) {
        const float* row = W.data() + i * in;
        double acc = 0.0;  // double: see kernels.h on long reductions
        for (std::size_t j = 0; j < in; ++j) acc += static_cast<double>(row[j]) * x[j];
        y[i] = static_cast<float>(acc);
    }
}

void matmul(std::span<const float> A, std::span<const float> B, std::span<float> C,
            std::size_t m, std::size_t k, std::size_t n) {
    assert(A.size() == m * k && B.size() == k * n && C.size() == m * n);
    for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
            double acc = 0.0;
            for (std::size_t p = 0; p < k; ++p) acc += static_cast<double>(A[i * k + p]) * B[p * n + j];
            C[i * n + j] = static_cast<float>(acc);
        }
    }
}

}  // namespace lmlab
