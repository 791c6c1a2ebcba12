// A deliberately wrong engine, for the test that `lmlab verify` localises a bug (CMake target
// lmlab_faulty, ctest verify.localises): RoPE rotates the pairs of the OTHER convention, the classic
// porting mistake (Meta/llama2.c rotate adjacent pairs, Hugging Face rotates halves). kernels/rope.cpp
// is compiled a second time with rope renamed to rope_correct; this file is the rope the engine calls.
#include "kernels/kernels.h"

namespace lmlab {

void rope_correct(std::span<float> x, std::size_t head_dim, std::size_t pos, std::span<const double> inv_freq,
                  double attention_factor, RopeStyle style);
void rope_correct(std::span<float> x, std::size_t head_dim, std::size_t pos, float theta, RopeStyle style);

namespace {
RopeStyle other(RopeStyle style) { return style == RopeStyle::AdjacentPairs ? RopeStyle::RotateHalf : RopeStyle::AdjacentPairs; }
}  // namespace

void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, std::span<const double> inv_freq,
          double attention_factor, RopeStyle style) {
    rope_correct(x, head_dim, pos, inv_freq, attention_factor, other(style));
}

void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, float theta, RopeStyle style) {
    rope_correct(x, head_dim, pos, theta, other(style));
}

}  // namespace lmlab
