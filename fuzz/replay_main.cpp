// Replays inputs through a fuzz target without libFuzzer (the default and asan builds; ctest
// fuzz.replay.*): every file given, or every file in each directory given (an absent one is
// skipped), is passed to LLVMFuzzerTestOneInput once; no input at all is a skip (77). A finding aborts (an uncaught exception) or, under the asan preset,
// is reported by the sanitizers. Exit 0 when every input ran; 77 (ctest's skip) when the target
// needs ../shared and it is absent (the target prints why), or when there was nothing to replay.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);  // optional, as in libFuzzer

int main(int argc, char** argv) {
    if (LLVMFuzzerInitialize && LLVMFuzzerInitialize(&argc, &argv) != 0) return 77;
    std::vector<std::filesystem::path> files;
    for (int i = 1; i < argc; ++i) {
        const std::filesystem::path p = argv[i];
        if (!std::filesystem::exists(p)) {
            std::printf("%s: absent, nothing to replay from it\n", argv[i]);
        } else if (std::filesystem::is_directory(p)) {
            for (const auto& e : std::filesystem::recursive_directory_iterator(p))
                if (e.is_regular_file()) files.push_back(e.path());
        } else {
            files.push_back(p);
        }
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        const std::string bytes((std::istreambuf_iterator<char>(in)), {});
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    if (files.empty()) {  // e.g. a tokenizer target's seeds come from ../shared, which is absent
        std::printf("SKIPPED: no inputs to replay\n");
        return 77;
    }
    std::printf("replayed %zu inputs\n", files.size());
    return 0;
}
