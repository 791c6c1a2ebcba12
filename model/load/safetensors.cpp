#include "model/load/safetensors.h"

#include "kernels/ggml_quant.h"

#include "model/load/json_depth.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "model/model.h"

namespace lmlab {

// The data buffer is little-endian; F32 tensors are read straight into floats.
static_assert(std::endian::native == std::endian::little, "safetensors reading assumes a little-endian host");

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The Rust reader's bound (MAX_HEADER_SIZE): a header is a table of contents, never this big.
constexpr std::uint64_t kMaxHeader = 100'000'000;

// Bits per element of every dtype of the format (safetensors/src/tensor.rs Dtype::bitsize). A dtype
// outside this table is not safetensors at all; one inside it but not F32/F16/BF16 is valid in the
// file (e.g. a BOOL causal-mask buffer we ignore) and refused only if someone reads it as weights.
std::size_t dtype_bits(const std::string& d) {
    static const std::map<std::string, std::size_t> bits = {
        {"BOOL", 8},  {"F4", 4},      {"F6_E2M3", 6},     {"F6_E3M2", 6},     {"U8", 8},
        {"I8", 8},    {"F8_E5M2", 8}, {"F8_E4M3", 8},     {"F8_E8M0", 8},     {"F8_E4M3FNUZ", 8},
        {"F8_E5M2FNUZ", 8}, {"I16", 16}, {"U16", 16},     {"F16", 16},        {"BF16", 16},
        {"I32", 32},  {"U32", 32},    {"F32", 32},        {"F64", 64},        {"C64", 64},
        {"I64", 64},  {"U64", 64},
    };
    const auto it = bits.find(d);
    return it == bits.end() ? 0 : it->second;
}

// a * b, or nullopt-like false when it overflows 64 bits
bool mul_ok(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
    out = a * b;
    return true;
}

}  // namespace

bool safetensors_dtype_is_float(const std::string& dtype) { return dtype == "F32" || dtype == "F16" || dtype == "BF16"; }

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
    std::error_code ec;
    const std::uint64_t file_size = fs::file_size(path, ec);
    if (ec) throw ModelError(fmt::format("{}: cannot open safetensors file ({})", path, ec.message()));
    in_.open(path, std::ios::binary);
    if (!in_) throw ModelError(fmt::format("{}: cannot open safetensors file", path));

    // 1. The header length, bounded before the header is allocated.
    unsigned char len_bytes[8];
    if (file_size < 8 || !in_.read(reinterpret_cast<char*>(len_bytes), 8))
        throw ModelError(fmt::format("{}: {} bytes is shorter than the 8-byte header length of a safetensors file",
                                     path, file_size));
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
    if (n > kMaxHeader || n > file_size - 8)
        throw ModelError(fmt::format(
            "{}: absurd header length {} bytes (the file has {} bytes after the length field; the limit is {}): "
            "truncated, or not a safetensors file",
            path, n, file_size - 8, kMaxHeader));
    data_start_ = 8 + n;
    const std::uint64_t buffer_size = file_size - data_start_;

    // 2. The JSON. Duplicate top-level keys are invalid in the format, and nlohmann would silently
    // keep the last one: a parser callback sees every key at depth 1.
    std::string text(n, '\0');
    if (!in_.read(text.data(), static_cast<std::streamsize>(n)))
        throw ModelError(fmt::format("{}: cannot read the {}-byte header", path, n));
    if (text.empty() || text[0] != '{')
        throw ModelError(fmt::format("{}: the header must be a JSON object starting with '{{' (found {})", path,
                                     text.empty() ? std::string("an empty header") : fmt::format("byte 0x{:02x}", static_cast<unsigned char>(text[0]))));
    std::set<std::string> seen;
    std::string duplicate;
    json header;
    try {
        header = json::parse(text, [&](int depth, json::parse_event_t event, json& parsed) {
            check_json_depth(depth, path + ": the header");
            if (depth == 1 && event == json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second)
                duplicate = parsed.get<std::string>();
            return true;
        });
    } catch (const json::exception& e) {
        throw ModelError(fmt::format("{}: the header is not valid JSON ({})", path, e.what()));
    }
    if (!duplicate.empty())
        throw ModelError(fmt::format("{}: the header lists '{}' twice (duplicate keys are invalid)", path, duplicate));
    if (!header.is_object()) throw ModelError(fmt::format("{}: the header must be a JSON object", path));

    // 3. Each entry on its own: fields present and typed, dtype known, shape × dtype == byte length,
    // inside the buffer.
    for (const auto& [name, v] : header.items()) {
        if (name == "__metadata__") {
            if (!v.is_object())
                throw ModelError(fmt::format("{}: __metadata__ must be an object of strings, found {}", path, v.dump()));
            for (const auto& [k, s] : v.items()) {
                if (!s.is_string())
                    throw ModelError(fmt::format("{}: __metadata__ '{}' must be a string, found {}", path, k, s.dump()));
                metadata_[k] = s.get<std::string>();
            }
            continue;
        }
        auto bad = [&, &name = name, &v = v](const std::string& what) {  // (explicit: clang 14 cannot capture bindings)
            return ModelError(fmt::format("{}: tensor '{}': {} (entry: {})", path, name, what, v.dump()));
        };
        if (!v.is_object()) throw bad("expected an object with dtype, shape and data_offsets");
        for (const char* field : {"dtype", "shape", "data_offsets"})
            if (!v.contains(field)) throw bad(fmt::format("missing field '{}'", field));
        SafetensorsEntry e;
        if (!v["dtype"].is_string()) throw bad("dtype must be a string");
        e.dtype = v["dtype"].get<std::string>();
        const std::size_t bits = dtype_bits(e.dtype);
        if (bits == 0) throw bad(fmt::format("unknown dtype '{}' (not a safetensors dtype)", e.dtype));
        if (!v["shape"].is_array()) throw bad("shape must be an array of non-negative integers");
        std::uint64_t count = 1;
        for (const json& d : v["shape"]) {
            if (!d.is_number_unsigned()) throw bad("shape must be an array of non-negative integers");
            const auto dim = d.get<std::uint64_t>();
            if (!mul_ok(count, dim, count)) throw bad("the shape's element count overflows 64 bits");
            e.shape.push_back(static_cast<std::size_t>(dim));
        }
        const json& off = v["data_offsets"];
        if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            throw bad("data_offsets must be [begin, end], two non-negative integers");
        e.begin = off[0].get<std::uint64_t>();
        e.end = off[1].get<std::uint64_t>();
        if (e.begin > e.end) throw bad(fmt::format("data_offsets [{}, {}] begin after end", e.begin, e.end));
        std::uint64_t nbits = 0;
        if (!mul_ok(count, bits, nbits)) throw bad("the shape's byte size overflows 64 bits");
        if (nbits % 8 != 0) throw bad(fmt::format("{} elements of {} do not fill whole bytes", count, e.dtype));
        if (e.end - e.begin != nbits / 8)
            throw bad(fmt::format("shape {} of {} needs {} bytes, but data_offsets [{}, {}] span {} bytes",
                                  shape_str(e.shape), e.dtype, nbits / 8, e.begin, e.end, e.end - e.begin));
        if (e.end > buffer_size)
            throw bad(fmt::format("data_offsets [{}, {}] run past the end of the {}-byte data buffer (file size {}): "
                                  "truncated file?",
                                  e.begin, e.end, buffer_size, file_size));
        entries_.emplace(name, std::move(e));
    }

    // 4. Together: sorted by offset, each tensor starts where the previous ended, and the last ends
    // at the end of the file (the Rust reader refuses holes: they would let a file be two formats at once).
    std::vector<std::pair<const std::string*, const SafetensorsEntry*>> order;
    for (const auto& [name, e] : entries_) order.emplace_back(&name, &e);
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
        return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
    });
    std::uint64_t at = 0;
    const std::string* prev = nullptr;
    for (const auto& [name, e] : order) {
        if (e->begin < at)
            throw ModelError(fmt::format("{}: tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (which ends at byte {})",
                                         path, *name, e->begin, e->end, *prev, at));
        if (e->begin > at)
            throw ModelError(fmt::format("{}: bytes [{}, {}) of the data buffer belong to no tensor (before '{}'); "
                                         "a safetensors buffer is covered exactly",
                                         path, at, e->begin, *name));
        at = e->end;
        prev = name;
    }
    if (at != buffer_size)
        throw ModelError(fmt::format("{}: the tensors cover {} bytes of data but the file has {} after the header "
                                     "({} trailing bytes belong to no tensor)",
                                     path, at, buffer_size, buffer_size - at));
}

std::vector<std::string> SafetensorsFile::names() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
    const auto it = entries_.find(name);
    if (it == entries_.end()) throw ModelError(fmt::format("{}: has no tensor '{}'", path_, name));
    return it->second;
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) {
    const SafetensorsEntry& e = entry(name);
    if (!safetensors_dtype_is_float(e.dtype))
        throw ModelError(fmt::format("{}: tensor '{}' has dtype {}; this engine reads F32, F16 and BF16 weights",
                                     path_, name, e.dtype));
    const std::size_t bytes = static_cast<std::size_t>(e.end - e.begin);
    const std::size_t count = e.dtype == "F32" ? bytes / 4 : bytes / 2;
    std::vector<float> out(count);
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(data_start_ + e.begin));
    auto read = [&](void* dst) {
        if (!in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes)))
            throw ModelError(fmt::format("{}: reading tensor '{}' (bytes [{}, {}) of the data) failed: the file changed "
                                         "or was truncated after it was opened",
                                         path_, name, e.begin, e.end));
    };
    if (e.dtype == "F32") {
        read(out.data());
    } else {
        std::vector<std::uint16_t> half(count);
        read(half.data());
        const bool bf16 = e.dtype == "BF16";
        for (std::size_t i = 0; i < count; ++i) out[i] = bf16 ? ggml::bf16_to_fp32(half[i]) : ggml::fp16_to_fp32(half[i]);  // exact
    }
    return out;
}

// ---- a directory: one file or shards --------------------------------------------------------------

SafetensorsCheckpoint SafetensorsCheckpoint::open_dir(const std::string& dir) {
    SafetensorsCheckpoint c;
    const fs::path single = fs::path(dir) / "model.safetensors";
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    if (fs::exists(single)) {
        c.source_ = single.string();
        c.files_.push_back(std::make_unique<SafetensorsFile>(c.source_));
        for (const std::string& n : c.files_[0]->names()) c.where_[n] = c.files_[0].get();
        return c;
    }
    if (!fs::exists(index)) {
        std::string hint;
        if (fs::exists(fs::path(dir) / "pytorch_model.bin"))
            hint = " (pytorch_model.bin is a pickle, which this engine does not read: convert it to safetensors)";
        throw ModelError(fmt::format("{}: no model.safetensors or model.safetensors.index.json{}", dir, hint));
    }

    // The index: {"metadata": {...}, "weight_map": {"h.0.ln_1.weight": "model-00001-of-00002.safetensors", ...}}
    c.source_ = index.string();
    json j;
    {
        std::ifstream in(index);
        if (!in) throw ModelError(fmt::format("{}: cannot open", c.source_));
        try {
            j = json::parse(in, json_depth_limit(c.source_));
        } catch (const json::exception& e) {
            throw ModelError(fmt::format("{}: not valid JSON ({})", c.source_, e.what()));
        }
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw ModelError(fmt::format("{}: expected an object with a \"weight_map\" object {{tensor name: file name}}",
                                     c.source_));
    std::map<std::string, std::string> map;  // tensor -> shard file name
    for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string())
            throw ModelError(fmt::format("{}: weight_map['{}'] must be a file name, found {}", c.source_, tensor, file.dump()));
        const fs::path p = file.get<std::string>();
        const bool escapes = std::any_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; });
        if (p.empty() || p.is_absolute() || escapes)
            throw ModelError(fmt::format("{}: weight_map['{}'] = '{}' is not a file name inside {}", c.source_, tensor,
                                         p.string(), dir));
        map[tensor] = p.string();
    }
    if (map.empty()) throw ModelError(fmt::format("{}: weight_map is empty", c.source_));

    std::map<std::string, SafetensorsFile*> shards;  // file name -> opened file
    for (const auto& [tensor, file] : map) {
        if (shards.count(file)) continue;
        const fs::path p = fs::path(dir) / file;
        if (!fs::exists(p))
            throw ModelError(fmt::format("{}: shard '{}' (listed for tensor '{}') is missing: expected {}", c.source_,
                                         file, tensor, p.string()));
        c.files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
        shards[file] = c.files_.back().get();
    }
    // Index and shards must agree both ways: anything else is a half-copied or mixed-up download.
    for (const auto& [tensor, file] : map) {
        if (!shards[file]->has(tensor))
            throw ModelError(fmt::format("{}: lists tensor '{}' in '{}', but that file does not contain it", c.source_,
                                         tensor, file));
        c.where_[tensor] = shards[file];
    }
    for (const auto& [file, shard] : shards)
        for (const std::string& tensor : shard->names()) {
            const auto it = map.find(tensor);
            if (it == map.end() || it->second != file)
                throw ModelError(fmt::format("{}: shard '{}' contains tensor '{}', which the index {}", c.source_, file,
                                             tensor,
                                             it == map.end() ? std::string("does not list")
                                                             : fmt::format("places in '{}'", it->second)));
        }
    return c;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
    std::vector<std::string> out;
    for (const auto& kv : where_) out.push_back(kv.first);
    return out;
}

SafetensorsFile& SafetensorsCheckpoint::file(const std::string& name) const {
    const auto it = where_.find(name);
    if (it == where_.end()) throw ModelError(fmt::format("{}: has no tensor '{}'", source_, name));
    return *it->second;
}

const std::string& SafetensorsCheckpoint::file_of(const std::string& name) const { return file(name).path(); }
const std::vector<std::size_t>& SafetensorsCheckpoint::shape(const std::string& name) const { return file(name).shape(name); }
const std::string& SafetensorsCheckpoint::dtype(const std::string& name) const { return file(name).dtype(name); }
std::vector<float> SafetensorsCheckpoint::read_f32(const std::string& name) { return file(name).read_f32(name); }

}  // namespace lmlab
