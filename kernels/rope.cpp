#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

double rope_frequencies(std::size_t head_dim, double theta, const RopeScaling& s, std::size_t seq_len,
                        std::span<double> inv_freq) {
    require(head_dim > 0 && head_dim % 2 == 0 && inv_freq.size() == head_dim / 2, "rope_frequencies",
            "head_dim must be even and inv_freq hold head_dim / 2 values");
    require(s.kind == RopeScalingKind::None || (s.factor >= 1.0 && s.original_context > 0), "rope_frequencies",
            "a scaled kind needs factor >= 1 and original_context > 0");
    const std::size_t half = head_dim / 2;
    const double d = static_cast<double>(head_dim);
    // Dynamic NTK (transformers' _compute_dynamic_ntk_parameters): past the original context, a new
    // base theta · (factor·L/L0 - (factor - 1))^(d / (d - 2)); the highest frequency (i = 0) stays 1
    // and the lowest shrinks by about L/L0·factor: the long wavelengths stretch to cover L positions.
    double base = theta;
    if (s.kind == RopeScalingKind::Dynamic && seq_len > s.original_context) {
        const double grow = s.factor * static_cast<double>(seq_len) / static_cast<double>(s.original_context) - (s.factor - 1.0);
        base = theta * std::pow(grow, d / (d - 2.0));
    }
    // the unscaled frequencies, as transformers writes them: 1 / base^(2i / head_dim)
    for (std::size_t i = 0; i < half; ++i) inv_freq[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / d);

    switch (s.kind) {
        case RopeScalingKind::None:
        case RopeScalingKind::Dynamic:
            return 1.0;
        case RopeScalingKind::Linear:  // position interpolation: pos · inv_freq / factor == (pos / factor) · inv_freq
            for (double& f : inv_freq) f /= s.factor;
            return 1.0;
        case RopeScalingKind::Llama3: {
            // wavelength 2π / inv_freq: how many positions one full turn of the pair takes
            const double old_context = static_cast<double>(s.original_context);
            const double low_freq_wavelen = old_context / s.low_freq_factor;    // longer than this: / factor
            const double high_freq_wavelen = old_context / s.high_freq_factor;  // shorter than this: kept
            for (double& f : inv_freq) {
                const double wavelen = 2.0 * std::numbers::pi / f;
                if (wavelen > low_freq_wavelen) {
                    f /= s.factor;
                } else if (wavelen >= high_freq_wavelen) {  // the band between: a smooth blend of both
                    const double smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    f = (1.0 - smooth) * f / s.factor + smooth * f;
                }
            }
            return 1.0;
        }
        case RopeScalingKind::Yarn: {
            // transformers' _compute_yarn_parameters: the pair whose wavelength makes `rotations` full
            // turns over the original context, as a (fractional) dimension index
            const double L0 = static_cast<double>(s.original_context);
            const auto correction_dim = [&](double rotations) {
                return d * std::log(L0 / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
            };
            const double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
            double high = std::min(std::ceil(correction_dim(s.beta_slow)), d - 1.0);
            if (low == high) high += 0.001;  // (transformers': no division by zero)
            for (std::size_t i = 0; i < half; ++i) {
                // ramp 0 below `low` (fast pairs: kept, "extrapolated"), 1 above `high` (slow pairs: / factor)
                const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
                inv_freq[i] = inv_freq[i] / s.factor * ramp + inv_freq[i] * (1.0 - ramp);
            }
            return s.attention_factor;
        }
    }
    return 1.0;
}

void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, std::span<const double> inv_freq,
          double attention_factor, RopeStyle style) {
    require(head_dim > 0 && head_dim % 2 == 0 && x.size() % head_dim == 0, "rope",
            "head_dim must be even and divide the length of x");
    require(inv_freq.size() == head_dim / 2, "rope", "inv_freq must hold head_dim / 2 frequencies");
    const std::size_t half = head_dim / 2;
    const std::size_t n_heads = x.size() / head_dim;
    for (std::size_t i = 0; i < half; ++i) {
        // angle_i = pos * inv_freq_i, computed in double and only then rounded through cos/sin to
        // float. A float32 angle (PyTorch's, llama2.c's) loses bits as pos grows: at pos 511 its
        // rounding error is up to ulp(511)/2 = 3e-5 rad, which the float32 reference carries into q
        // and k; the float64 angle keeps RoPE within an ulp of the exact rotation.
        const double angle = static_cast<double>(pos) * inv_freq[i];
        const float c = static_cast<float>(std::cos(angle) * attention_factor);
        const float s = static_cast<float>(std::sin(angle) * attention_factor);
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

void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, float theta, RopeStyle style) {
    require(head_dim > 0 && head_dim % 2 == 0 && head_dim <= 4096, "rope", "head_dim must be even (and at most 4096)");
    double inv_freq[2048];  // no allocation: head_dim / 2 frequencies on the stack
    const std::span<double> f(inv_freq, head_dim / 2);
    const double attention_factor = rope_frequencies(head_dim, theta, RopeScaling{}, 0, f);
    rope(x, head_dim, pos, f, attention_factor, style);
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
