// Kernel preconditions that stay on in every build.
//
// Why not assert(): the default preset compiles assert() out, and a wrong span size in a kernel
// reads or writes out of bounds silently. These checks compare a few sizes once per call (never
// inside the inner loops), which costs nothing next to the O(n) or O(n·m) work of the kernel.
#pragma once

#include <stdexcept>
#include <string>

namespace lmlab {

// Throws std::invalid_argument("<kernel>: <what>") when ok is false.
inline void require(bool ok, const char* kernel, const char* what) {
    if (!ok) throw std::invalid_argument(std::string(kernel) + ": " + what);
}

}  // namespace lmlab
