// Where tests find ../shared (real models and tokenizers): $LMLAB_SHARED when set, else the
// compile-time default. Tests that need it GTEST_SKIP with a clear message when it is absent.
#pragma once

#include <cstdlib>
#include <string>

#include "model/testing/shared_dir.h"

#ifndef LMLAB_SHARED_DIR
#ifndef LMLAB_SOURCE_DIR
#error "Define LMLAB_SHARED_DIR (path of shared/) or LMLAB_SOURCE_DIR (the source root; shared/ is its sibling)"
#endif
#define LMLAB_SHARED_DIR LMLAB_SOURCE_DIR "/../shared"
#endif

namespace lmlab::test {

inline std::string shared_dir() { return shared_dir_or(LMLAB_SHARED_DIR); }

}  // namespace lmlab::test
