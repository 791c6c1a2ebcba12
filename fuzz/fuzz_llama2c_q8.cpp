// llama2.c's int8 checkpoints (magic "ak42", version 2; model/load_llama2c.cpp): a 256-byte header,
// float32 norms, then int8 matrices each followed by their float32 group scales.
#include "fuzz.h"
#include "model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string path = lmlab::fuzz::write_file("model_q8.bin", {reinterpret_cast<const char*>(data), size});
    try {
        (void)lmlab::load_model_llama2c_q8(path);
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
