
#include "kernels/check.h"
#include "kernels/kernels.h"

namespace lmlab {

std::size_t argmax(std::span<const float> x) {
    require(!x.empty(), "argmax", "x must not be empty");
    std::size_t best = 0;
    for (std::size_t i = 1; i < x.size(); ++i)
        if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i])) best = i;  // strict >: first max wins
    return best;
}

}  // namespace lmlab
