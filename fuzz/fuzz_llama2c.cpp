// llama2.c float32 checkpoints (model/load_llama2c.cpp): a 28-byte header of 7 int32, then weights.
#include "fuzz.h"
#include "model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string path = lmlab::fuzz::write_file("model.bin", {reinterpret_cast<const char*>(data), size});
    try {
        (void)lmlab::load_model_llama2c(path);
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
