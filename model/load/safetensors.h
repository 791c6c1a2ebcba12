// A reader for Hugging Face's safetensors files, and for a directory of them (one file, or shards
// listed by model.safetensors.index.json).
//
// safetensors: a JSON table of contents followed by one flat byte buffer. On disk:
//   8 bytes   N, little-endian u64: the header's length
//   N bytes   JSON: {"wte.weight": {"dtype": "F32", "shape": [50257, 768], "data_offsets": [0, 154389504]},
//                    ..., "__metadata__": {"format": "pt"}}   (string-to-string, optional)
//   the rest  the byte buffer; data_offsets [begin, end) are relative to its first byte, row-major,
//             little-endian. The tensors tile the buffer exactly: no gaps, no overlaps, nothing after.
// (Format: github.com/huggingface/safetensors README "Format"; the checks below are those of its
// Rust reader, safetensors/src/tensor.rs read_metadata() and Metadata::validate().)
//
// Opening a file reads and validates the whole header before anything big is allocated: a damaged
// or hostile file is a ModelError naming the file, the tensor, what was expected and what was found,
// never a bad_alloc or a read past the end. Tensor data is read only on request, converted to float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lmlab {

// One tensor's entry in the header.
struct SafetensorsEntry {
    std::string dtype;                // "F32", "F16", "BF16", ... (any dtype of the format; see read_f32)
    std::vector<std::size_t> shape;   // [] is a scalar
    std::uint64_t begin = 0, end = 0; // byte range in the data buffer
};

// One .safetensors file: the validated header, and the data read on request.
class SafetensorsFile {
public:
    // Reads and validates the header; throws ModelError (see the top of this file).
    explicit SafetensorsFile(const std::string& path);

    const std::string& path() const { return path_; }
    bool has(const std::string& name) const { return entries_.count(name) != 0; }
    std::vector<std::string> names() const;  // sorted
    const SafetensorsEntry& entry(const std::string& name) const;  // throws ModelError when absent
    const std::vector<std::size_t>& shape(const std::string& name) const { return entry(name).shape; }
    const std::string& dtype(const std::string& name) const { return entry(name).dtype; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // The tensor as float32, row-major. F32, F16 and BF16 are supported (F16/BF16 converted
    // exactly); any other dtype (I64, F64, F8_*, ...) is refused by name with a ModelError.
    std::vector<float> read_f32(const std::string& name);

private:
    std::string path_;
    std::ifstream in_;
    std::uint64_t data_start_ = 0;  // file offset of the byte buffer: 8 + N
    std::map<std::string, SafetensorsEntry> entries_;
    std::map<std::string, std::string> metadata_;
};

// The dtypes read_f32 converts: F32, F16, BF16.
bool safetensors_dtype_is_float(const std::string& dtype);

// A model directory's weights: `dir/model.safetensors`, or the shards that
// `dir/model.safetensors.index.json` ({"metadata": {...}, "weight_map": {tensor: file}}) lists.
// Tensor names are looked up in the file the index names; the index and the shards must agree
// exactly (a tensor the map lists is in its file, a tensor in a shard is listed for that shard).
class SafetensorsCheckpoint {
public:
    // Throws ModelError when neither file exists, a shard is missing, or index and shards disagree.
    static SafetensorsCheckpoint open_dir(const std::string& dir);

    const std::string& source() const { return source_; }  // the .safetensors or the index.json
    bool has(const std::string& name) const { return where_.count(name) != 0; }
    std::vector<std::string> names() const;  // every tensor of every file, sorted
    const std::string& file_of(const std::string& name) const;  // the shard holding it
    const std::vector<std::size_t>& shape(const std::string& name) const;
    const std::string& dtype(const std::string& name) const;
    std::vector<float> read_f32(const std::string& name);

private:
    SafetensorsFile& file(const std::string& name) const;

    std::string source_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, SafetensorsFile*> where_;  // tensor name -> the file holding it
};

}  // namespace lmlab
