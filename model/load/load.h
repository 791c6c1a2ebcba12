// The file formats a Model is read from (model/load/*.cpp), and load_model(), which recognises them.
// Each returns a Model whose every tensor has the shape its Config demands, or throws ModelError
// naming the file, the tensor, the expected and the actual shape.
#pragma once

#include <string>

#include "model/model.h"

namespace lmlab {

// HDF5 model file (golden/models/*.h5: config as root attributes, tensors under PyTorch names).
Model load_model_hdf5(const std::string& path);
// llama2.c checkpoint (header + float32 weights; see ../shared/models/stories260K/README.md).
Model load_model_llama2c(const std::string& path);
// llm.c GPT-2 checkpoint (gpt2_124M.bin: 256-int32 header, magic 20240326, version 3 = float32).
Model load_model_llmc(const std::string& path);
// Hugging Face model directory: config.json + model.safetensors (or sharded with
// model.safetensors.index.json). model_type "gpt2", "llama", "qwen2", "qwen2_moe" or "mixtral".
Model load_model_hf(const std::string& dir);
// Only the vocabulary of an HDF5 model file (group tokenizer/); throws ModelError when absent.
Vocabulary load_vocabulary_hdf5(const std::string& path);
// llama2.c's int8 checkpoint (export.py version2_export, read by runq.c): a 256-byte header
// (magic "ak42" = 0x616b3432, version 2, the 7 config ints, shared_classifier byte, group_size),
// the norms in float32, then every matrix as int8 values followed by its float32 group scales.
Model load_model_llama2c_q8(const std::string& path);
// GGUF (llama.cpp's files, versions 2 and 3): architectures llama (and Mixtral), qwen2, qwen2moe,
// gpt2; tensors in F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K (model/load/gguf_model.cpp).
Model load_model_gguf(const std::string& path);
// Recognises the format: a directory with config.json -> Hugging Face; .h5/.hdf5 -> HDF5; a file
// starting with llm.c's magic -> llm.c; with llama2.c's "ak42" magic -> its int8 format; with
// "GGUF" -> GGUF; anything else -> llama2.c checkpoint.
Model load_model(const std::string& path);

}  // namespace lmlab
