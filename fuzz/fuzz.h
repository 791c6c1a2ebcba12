// Shared helpers of the fuzz targets (fuzz/fuzz_*.cpp). Each target feeds arbitrary bytes to one
// parser lmlab owns and accepts exactly one outcome besides success: the parser's own error type
// (ModelError, HarnessError, std::invalid_argument for the CLI). Anything else (another exception,
// a crash, undefined behaviour, a leak, an allocation past -malloc_limit_mb) is a finding.
//
// Built two ways from the same sources (CMakeLists.txt):
//   fuzz preset   clang -fsanitize=fuzzer,address,undefined: libFuzzer drives LLVMFuzzerTestOneInput
//   every build   with fuzz/replay_main.cpp: replays the committed inputs under fuzz/regressions/
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>

#include "model/testing/shared_dir.h"

namespace lmlab::fuzz {

// A private scratch folder in memory (/dev/shm when it exists), removed at exit.
inline const std::filesystem::path& scratch_dir() {
    static const std::filesystem::path dir = [] {
        const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
        std::filesystem::path d = base / ("lmlab-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
        return d;
    }();
    return dir;
}

// Writes bytes to scratch_dir()/name (parsers read files) and returns the path.
inline std::string write_file(const std::string& name, std::string_view bytes) {
    const std::filesystem::path p = scratch_dir() / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p.string();
}

// Splits an input into parts: each part but the last is a 2-byte little-endian length and that many
// bytes (shorter when the input ends); the last part is the rest. So one input can carry several
// files (config.json + model.safetensors) and libFuzzer's mutations still reach every one.
class Parts {
public:
    Parts(const std::uint8_t* data, std::size_t size) : p_(reinterpret_cast<const char*>(data)), left_(size) {}
    std::string_view next() {
        if (left_ < 2) return take(left_);
        const std::size_t n = static_cast<std::size_t>(static_cast<unsigned char>(p_[0])) |
                              static_cast<std::size_t>(static_cast<unsigned char>(p_[1])) << 8;
        p_ += 2;
        left_ -= 2;
        return take(n < left_ ? n : left_);
    }
    std::string_view rest() { return take(left_); }

private:
    std::string_view take(std::size_t n) {
        std::string_view v(p_, n);
        p_ += n;
        left_ -= n;
        return v;
    }
    const char* p_;
    std::size_t left_;
};

// The shared data folder (real tokenizers for the encode/decode targets): model/testing/shared_dir.h's rule
// with the build's default (../shared beside the checkout).
inline std::string shared_dir() { return shared_dir_or(LMLAB_SHARED_DIR); }

}  // namespace lmlab::fuzz
