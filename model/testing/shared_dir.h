// Where the shared data folder (real models and tokenizers, "../shared" beside the checkout) is:
// $LMLAB_SHARED when set and non-empty, else the given default. The one place that rule lives; the
// CLI, the benchmark and the tests call it.
#pragma once

#include <cstdlib>
#include <string>

namespace lmlab {

inline std::string shared_dir_or(const std::string& fallback) {
    const char* env = std::getenv("LMLAB_SHARED");
    return env != nullptr && env[0] != '\0' ? std::string(env) : fallback;
}

}  // namespace lmlab
