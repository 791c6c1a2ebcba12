#include <cmath>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, float theta, RopeStyle style) {
    require(head_dim > 0 && head_dim % 2 == 0 && x.size() % head_dim == 0, "rope",
            "head_dim must be even and divide the length of x");
    const std::size_t half = head_dim / 2;
    const std::size_t n_heads = x.size() / head_dim;
    for (std::size_t i = 0; i < half; ++i) {
        // angle_i = pos * theta^(-2i/head_dim), computed in double and only then rounded through
        // cos/sin to float. A float32 angle (PyTorch's, llama2.c's) loses bits as pos grows: at
        // pos 511 its rounding error is up to ulp(511)/2 = 3e-5 rad, which the float32 reference
        // carries into q and k; the float64 angle keeps RoPE within an ulp of the exact rotation.
        const double angle = static_cast<double>(pos) *
                             std::pow(static_cast<double>(theta), -static_cast<double>(2 * i) / head_dim);
        const float c = static_cast<float>(std::cos(angle));
        const float s = static_cast<float>(std::sin(angle));
        for (std::size_t h = 0; h < n_heads; ++h) {
            float* head = x.data() + h * head_dim;
            // the two members of pair i
            const std::size_t ia = style == RopeStyle::AdjacentPairs ? 2 * i : i;
            const std::size_t ib = style == RopeStyle::AdjacentPairs ? 2 * i + 1 : i + half;
            const float a = head[ia];
            const float b = head[ib];
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
    }
}

void rope_cos_sin(std::span<float> x, std::size_t head_dim, std::span<const float> cos, std::span<const float> sin,
                  RopeStyle style) {
    const std::size_t half = cos.size();  // rot_dim / 2 pairs per head
    require(head_dim > 0 && x.size() % head_dim == 0, "rope_cos_sin", "head_dim must divide the length of x");
    require(half > 0 && sin.size() == half && 2 * half <= head_dim, "rope_cos_sin",
            "cos and sin need the same length, at least 1 and at most head_dim / 2");
    const std::size_t n_heads = x.size() / head_dim;
    for (std::size_t i = 0; i < half; ++i) {
        const float c = cos[i], s = sin[i];
        // the two members of pair i, within the rotated part [0, 2·half) of the head
        const std::size_t ia = style == RopeStyle::AdjacentPairs ? 2 * i : i;
        const std::size_t ib = style == RopeStyle::AdjacentPairs ? 2 * i + 1 : i + half;
        for (std::size_t h = 0; h < n_heads; ++h) {
            float* head = x.data() + h * head_dim;
            const float a = head[ia];
            const float b = head[ib];
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
    }
}

}  // namespace lmlab
