// The checkpoint formats lmlab reads, one fuzz target each: this file is compiled once per format
// with LMLAB_CHECKPOINT_LOADER =
//   load_model_llama2c     llama2.c float32: 7 int32 of header, then the weights  (fuzz_llama2c)
//   load_model_llama2c_q8  llama2.c int8, magic "ak42": a 256-byte header, norms, int8 matrices with
//                          their group scales                                     (fuzz_llama2c_q8)
//   load_model_llmc        llm.c GPT-2: 256 int32 of header (version 3 float32, 5 bfloat16), the
//                          parameters                                              (fuzz_llmc)
// (model/load/llama2c.cpp, model/load/llmc.cpp). The input is the file.
#include "model/load/load.h"
#include "fuzz/fuzz.h"
#include "model/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string path = lmlab::fuzz::write_file("checkpoint.bin", {reinterpret_cast<const char*>(data), size});
    try {
        (void)lmlab::LMLAB_CHECKPOINT_LOADER(path);
    } catch (const lmlab::ModelError&) {
    }
    return 0;
}
