// A deliberately wrong engine, for the test that `lmlab verify` localises a bug (CMake target
// lmlab_faulty, ctest verify.localises): RoPE rotates the pairs of the OTHER convention, the classic
// porting mistake (Meta/llama2.c rotate adjacent pairs, Hugging Face rotates halves). kernels/rope.cpp
// is compiled a second time with rope renamed to rope_correct; this file is the rope the engine calls.
#include "kernels/kernels.h"

namespace lmlab {

void rope_correct(std::span<float> x, std::size_t head_dim, std::size_t pos, float theta, RopeStyle style);

void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, float theta, RopeStyle style) {
    const RopeStyle wrong = style == RopeStyle::AdjacentPairs ? RopeStyle::RotateHalf : RopeStyle::AdjacentPairs;
    rope_correct(x, head_dim, pos, theta, wrong);
}

}  // namespace lmlab
