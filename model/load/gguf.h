// GGUF files (llama.cpp's format; gguf-py's GGUFReader/GGUFWriter define it), read and checked.
//
// Layout (little-endian; versions 2 and 3, which differ only in byte order flags we do not use):
//   magic "GGUF" (4 bytes) | version u32 | tensor_count u64 | kv_count u64
//   kv_count × { key: string, value_type: u32, value }        metadata: hyperparameters, the tokenizer
//   tensor_count × { name: string, n_dims: u32, dims: u64 × n_dims, type: u32, offset: u64 }
//   padding to `general.alignment` (default 32)
//   the data section: each tensor at its offset (relative to the section, aligned)
// A string is a u64 length and that many bytes (no terminator). A value is one of 13 types
// (uint8 .. float64, bool, string, or an array: element type u32, count u64, the elements).
// dims are ggml's ne[]: dims[0] is the innermost (a row's length), so a matrix [out, in] is stored
// with dims = {in, out}, row-major as ours.
//
// Hostile input: every count and length is checked against the bytes left before anything is
// allocated, every dims product against overflow and against whole blocks of its type, every tensor
// against the data section (inside it, aligned, not overlapping another), and the whole header
// against absurd sizes. A file that fails any of these is a ModelError naming the file, the field
// (or tensor) and the value; never a crash, never a read past the end. Tensors are read on demand
// (read_tensor), so a 2 GB model is checked in milliseconds before any weight is read.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kernels/ggml_quant.h"

namespace lmlab {

// One metadata value. Arrays keep their element type; nested arrays (an array of arrays) are read
// and kept as a count only (no key lmlab reads has one).
struct GgufValue {
    enum class Kind : std::uint32_t {
        U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
        F64 = 12
    };
    Kind kind = Kind::U8;
    Kind element = Kind::U8;  // arrays: the element kind
    std::variant<std::uint64_t, std::int64_t, double, bool, std::string> scalar;  // what a scalar holds
    std::vector<std::string> strings;  // an array of strings
    std::vector<double> numbers;       // an array of numbers (or bools as 0/1)
    std::uint64_t count = 0;           // arrays: the element count
    static const char* kind_name(Kind k);
};

struct GgufTensor {
    std::string name;
    std::vector<std::uint64_t> dims;  // ggml's ne[]: dims[0] innermost
    std::uint32_t type_id = 0;        // ggml_type as stored (checked supported by ggml::find_type)
    ggml::Type type = ggml::Type::F32;
    std::uint64_t offset = 0;         // within the data section
    std::uint64_t bytes = 0;          // its size: dims product / block_elems × block_bytes
    std::uint64_t elements() const;
};

class GgufFile {
public:
    // Reads and checks the header, the metadata and the tensor infos (not the tensor data).
    static GgufFile open(const std::string& path);

    const std::string& path() const { return path_; }
    std::uint32_t version() const { return version_; }
    std::uint64_t alignment() const { return alignment_; }

    // ---- metadata: each accessor throws ModelError naming the file, the key, what it is and what was expected
    bool has(const std::string& key) const { return kv_.count(key) > 0; }
    const GgufValue& value(const std::string& key) const;
    std::string text(const std::string& key) const;                   // a string
    std::uint64_t uint(const std::string& key) const;                 // an unsigned integer (any width, or a non-negative signed one)
    std::uint64_t uint_or(const std::string& key, std::uint64_t fallback) const;
    double number(const std::string& key) const;                      // any number
    double number_or(const std::string& key, double fallback) const;
    bool boolean_or(const std::string& key, bool fallback) const;
    const std::vector<std::string>& strings(const std::string& key) const;  // an array of strings
    std::vector<double> numbers(const std::string& key) const;             // an array of numbers
    std::vector<std::string> keys() const;

    // ---- tensors
    const std::vector<GgufTensor>& tensors() const { return tensors_; }
    const GgufTensor* find(const std::string& name) const;  // nullptr when absent
    // The tensor's raw bytes (its type's block layout).
    std::vector<std::uint8_t> read(const GgufTensor& t) const;

private:
    std::string path_;
    std::uint32_t version_ = 0;
    std::uint64_t alignment_ = 32, data_start_ = 0, file_size_ = 0;
    std::map<std::string, GgufValue> kv_;
    std::vector<GgufTensor> tensors_;
};

// ggml's name for a type id, including the types lmlab does not support (IQ2_XXS, TQ1_0, ...), for
// messages; "type <id>" for an id ggml does not have.
std::string ggml_type_name(std::uint32_t id);

}  // namespace lmlab
