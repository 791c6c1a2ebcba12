// llm.c GPT-2 checkpoints (model/load_llmc.cpp): 256 int32 of header (magic 20240326, version 3 =
// float32 or 5 = bfloat16), then the parameters.
#include "fuzz.h"
#include "model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string path = lmlab::fuzz::write_file("gpt2.llmc.bin", {reinterpret_cast<const char*>(data), size});
    try {
        (void)lmlab::load_model_llmc(path);
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
