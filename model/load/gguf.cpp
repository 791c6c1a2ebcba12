#include "model/load/gguf.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "model/model.h"

namespace lmlab {

namespace {

using Kind = GgufValue::Kind;

constexpr std::uint64_t kMaxCount = 1u << 24;      // tensors, keys, array elements: far above any model's
constexpr std::uint64_t kMaxKeyLength = 65535;     // gguf-py's limit on key names
constexpr std::uint64_t kMaxStringLength = 1u << 30;
constexpr std::uint32_t kMaxDims = 4;              // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 2;                  // an array of arrays; deeper is not a model file

std::size_t kind_size(Kind k) {
    switch (k) {
        case Kind::U8: case Kind::I8: case Kind::Bool: return 1;
        case Kind::U16: case Kind::I16: return 2;
        case Kind::U32: case Kind::I32: case Kind::F32: return 4;
        case Kind::U64: case Kind::I64: case Kind::F64: return 8;
        case Kind::String: return 8;  // at least its length field
        case Kind::Array: return 12;  // at least its element type and count
    }
    return 1;
}

// Sequential reads with the bytes left always known: every length is checked before it is used.
class Reader {
public:
    Reader(const std::string& path, std::uint64_t size) : path_(path), size_(size) {
        in_.rdbuf()->pubsetbuf(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));  // (before open)
        in_.open(path, std::ios::binary);
        if (!in_) throw ModelError(fmt::format("{}: cannot open", path));
    }
    std::uint64_t pos() const { return pos_; }
    std::uint64_t left() const { return size_ - pos_; }

    void bytes(void* out, std::uint64_t n, const std::string& what) {
        if (n > left())
            throw ModelError(fmt::format("{}: {} needs {} bytes at offset {} but the file ends after {} more: the file is "
                                         "truncated or damaged (re-download or re-convert it)",
                                         path_, what, n, pos_, left()));
        if (!in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n)))
            throw ModelError(fmt::format("{}: error while reading {} at offset {}", path_, what, pos_));
        pos_ += n;
    }
    template <class T>
    T get(const std::string& what) {
        unsigned char b[sizeof(T)];
        bytes(b, sizeof(T), what);
        std::uint64_t v = 0;  // little-endian, whatever the host
        for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(b[i]) << (8 * i);
        T out;
        if constexpr (sizeof(T) == 8) std::memcpy(&out, &v, 8);
        else {
            const auto narrow = static_cast<std::uint32_t>(v);
            if constexpr (sizeof(T) == 4) std::memcpy(&out, &narrow, 4);
            else if constexpr (sizeof(T) == 2) {
                const auto n16 = static_cast<std::uint16_t>(v);
                std::memcpy(&out, &n16, 2);
            } else {
                const auto n8 = static_cast<std::uint8_t>(v);
                std::memcpy(&out, &n8, 1);
            }
        }
        return out;
    }
    std::string string(const std::string& what, std::uint64_t max_length = kMaxStringLength) {
        const auto n = get<std::uint64_t>(what + " (its length)");
        // a length past the end of a plausible one is most often a file cut short; an absurd one is not GGUF
        if (n > max_length)
            throw ModelError(fmt::format("{}: {} has length {} at offset {}, but at most {} is allowed: the file is "
                                         "damaged or not GGUF",
                                         path_, what, n, pos_, max_length));
        if (n > left())
            throw ModelError(fmt::format("{}: {} has length {} at offset {}, but the file ends {} bytes later: it is "
                                         "truncated or damaged (re-download or re-convert it)",
                                         path_, what, n, pos_, left()));
        std::string s(n, '\0');
        bytes(s.data(), n, what);
        return s;
    }
    // A count of `unit`-byte items that must fit in what is left (and under kMaxCount).
    std::uint64_t count(const std::string& what, std::uint64_t unit) {
        const auto n = get<std::uint64_t>(what);
        if (n > kMaxCount || n > left() / std::max<std::uint64_t>(unit, 1))
            throw ModelError(fmt::format("{}: {} is {}, but the {} bytes left hold at most {}: {}", path_, what, n, left(),
                                         std::min(kMaxCount, left() / std::max<std::uint64_t>(unit, 1)),
                                         n > kMaxCount ? "the header is damaged or not GGUF"
                                                       : "the file is truncated or its header damaged (re-download or "
                                                         "re-convert it)"));
        return n;
    }
    void skip_to(std::uint64_t target) {
        if (target > size_ || target < pos_) throw ModelError(fmt::format("{}: cannot skip to offset {}", path_, target));
        in_.seekg(static_cast<std::streamoff>(target));
        pos_ = target;
    }

private:
    std::string path_;
    std::uint64_t size_, pos_ = 0;
    std::array<char, 1 << 20> buffer_{};
    std::ifstream in_;
};

GgufValue read_value(Reader& r, Kind kind, const std::string& where, int depth, const std::string& path) {
    GgufValue v;
    v.kind = kind;
    switch (kind) {
        case Kind::U8: v.scalar = std::uint64_t{r.get<std::uint8_t>(where)}; break;
        case Kind::U16: v.scalar = std::uint64_t{r.get<std::uint16_t>(where)}; break;
        case Kind::U32: v.scalar = std::uint64_t{r.get<std::uint32_t>(where)}; break;
        case Kind::U64: v.scalar = r.get<std::uint64_t>(where); break;
        case Kind::I8: v.scalar = std::int64_t{r.get<std::int8_t>(where)}; break;
        case Kind::I16: v.scalar = std::int64_t{r.get<std::int16_t>(where)}; break;
        case Kind::I32: v.scalar = std::int64_t{r.get<std::int32_t>(where)}; break;
        case Kind::I64: v.scalar = r.get<std::int64_t>(where); break;
        case Kind::F32: v.scalar = double{r.get<float>(where)}; break;
        case Kind::F64: v.scalar = r.get<double>(where); break;
        case Kind::Bool: {
            const auto b = r.get<std::uint8_t>(where);
            if (b > 1) throw ModelError(fmt::format("{}: {} is a bool of value {} (expected 0 or 1)", path, where, b));
            v.scalar = b == 1;
            break;
        }
        case Kind::String: v.scalar = r.string(where); break;
        case Kind::Array: {
            if (depth >= kMaxArrayDepth)
                throw ModelError(fmt::format("{}: {} nests arrays more than {} deep: not a model file", path, where, kMaxArrayDepth));
            const auto element = r.get<std::uint32_t>(where + " (its element type)");
            if (element > static_cast<std::uint32_t>(Kind::F64))
                throw ModelError(fmt::format("{}: {} has element type {}, not a GGUF value type (0-12)", path, where, element));
            v.element = static_cast<Kind>(element);
            v.count = r.count(where + " (its element count)", kind_size(v.element));
            for (std::uint64_t i = 0; i < v.count; ++i) {
                const GgufValue e = read_value(r, v.element, where, depth + 1, path);
                if (v.element == Kind::String) v.strings.push_back(std::get<std::string>(e.scalar));
                else if (v.element == Kind::Array) continue;  // kept as a count only
                else if (const auto* u = std::get_if<std::uint64_t>(&e.scalar)) v.numbers.push_back(static_cast<double>(*u));
                else if (const auto* s = std::get_if<std::int64_t>(&e.scalar)) v.numbers.push_back(static_cast<double>(*s));
                else if (const auto* d = std::get_if<double>(&e.scalar)) v.numbers.push_back(*d);
                else if (const auto* b = std::get_if<bool>(&e.scalar)) v.numbers.push_back(*b ? 1.0 : 0.0);
            }
            break;
        }
        default:
            throw ModelError(fmt::format("{}: {} has value type {}, not a GGUF value type (0-12)", path, where,
                                         static_cast<std::uint32_t>(kind)));
    }
    return v;
}

}  // namespace

const char* GgufValue::kind_name(Kind k) {
    switch (k) {
        case Kind::U8: return "uint8";
        case Kind::I8: return "int8";
        case Kind::U16: return "uint16";
        case Kind::I16: return "int16";
        case Kind::U32: return "uint32";
        case Kind::I32: return "int32";
        case Kind::F32: return "float32";
        case Kind::Bool: return "bool";
        case Kind::String: return "string";
        case Kind::Array: return "array";
        case Kind::U64: return "uint64";
        case Kind::I64: return "int64";
        case Kind::F64: return "float64";
    }
    return "?";
}

std::uint64_t GgufTensor::elements() const {
    std::uint64_t n = 1;
    for (std::uint64_t d : dims) n *= d;
    return n;
}

std::string ggml_type_name(std::uint32_t id) {
    // ggml.h's enum ggml_type, the types lmlab does not run included (so a refusal names them)
    static const std::map<std::uint32_t, const char*> names = {
        {0, "F32"},      {1, "F16"},      {2, "Q4_0"},     {3, "Q4_1"},    {4, "Q4_2 (removed from ggml)"},
        {5, "Q4_3 (removed from ggml)"},  {6, "Q5_0"},     {7, "Q5_1"},    {8, "Q8_0"},       {9, "Q8_1"},
        {10, "Q2_K"},    {11, "Q3_K"},    {12, "Q4_K"},    {13, "Q5_K"},   {14, "Q6_K"},      {15, "Q8_K"},
        {16, "IQ2_XXS"}, {17, "IQ2_XS"},  {18, "IQ3_XXS"}, {19, "IQ1_S"},  {20, "IQ4_NL"},    {21, "IQ3_S"},
        {22, "IQ2_S"},   {23, "IQ4_XS"},  {24, "I8"},      {25, "I16"},    {26, "I32"},       {27, "I64"},
        {28, "F64"},     {29, "IQ1_M"},   {30, "BF16"},    {34, "TQ1_0"},  {35, "TQ2_0"},     {39, "MXFP4"}};
    const auto it = names.find(id);
    return it == names.end() ? fmt::format("type {}", id) : it->second;
}

GgufFile GgufFile::open(const std::string& path) {
    namespace fs = std::filesystem;
    if (!fs::exists(path)) throw ModelError(fmt::format("{}: no such file", path));
    GgufFile f;
    f.path_ = path;
    f.file_size_ = fs::file_size(path);
    Reader r(path, f.file_size_);

    char magic[4];
    if (f.file_size_ < 24) throw ModelError(fmt::format("{}: {} bytes, too short for a GGUF header (24 bytes)", path, f.file_size_));
    r.bytes(magic, 4, "the magic");
    if (std::memcmp(magic, "GGUF", 4) != 0)
        throw ModelError(fmt::format("{}: the file does not start with \"GGUF\": not a GGUF file", path));
    f.version_ = r.get<std::uint32_t>("the version");
    if (f.version_ != 2 && f.version_ != 3)
        throw ModelError(fmt::format("{}: GGUF version {}; this engine reads versions 2 and 3{}", path, f.version_,
                                     f.version_ == 1 ? " (version 1 files are from 2023: re-convert the model)" : ""));
    // the smallest tensor info is 33 bytes (8 + 1 name, 4 n_dims, 8 dim, 4 type, 8 offset), a kv 13
    const std::uint64_t n_tensors = r.count("tensor_count", 33);
    const std::uint64_t n_kv = r.count("kv_count", 13);

    for (std::uint64_t i = 0; i < n_kv; ++i) {
        const std::string key = r.string(fmt::format("metadata key {}", i), kMaxKeyLength);
        const auto kind = r.get<std::uint32_t>(fmt::format("the type of '{}'", key));
        if (kind > static_cast<std::uint32_t>(Kind::F64))
            throw ModelError(fmt::format("{}: metadata '{}' has value type {}, not a GGUF value type (0-12)", path, key, kind));
        GgufValue v = read_value(r, static_cast<Kind>(kind), fmt::format("metadata '{}'", key), 0, path);
        if (!f.kv_.emplace(key, std::move(v)).second)
            throw ModelError(fmt::format("{}: metadata '{}' is given twice", path, key));
    }

    if (f.has("general.alignment")) {
        const std::uint64_t a = f.uint("general.alignment");
        if (a == 0 || (a & (a - 1)) != 0 || a > 65536)
            throw ModelError(fmt::format("{}: general.alignment is {}; expected a power of two up to 65536", path, a));
        f.alignment_ = a;
    }

    std::map<std::string, std::size_t> names;
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensor t;
        t.name = r.string(fmt::format("the name of tensor {}", i), kMaxKeyLength);
        const std::string what = fmt::format("tensor '{}'", t.name);
        const auto n_dims = r.get<std::uint32_t>(what + " n_dims");
        if (n_dims == 0 || n_dims > kMaxDims)
            throw ModelError(fmt::format("{}: {} has {} dimensions; ggml tensors have 1 to {}", path, what, n_dims, kMaxDims));
        std::uint64_t product = 1;
        for (std::uint32_t d = 0; d < n_dims; ++d) {
            const auto dim = r.get<std::uint64_t>(what + " dims");
            if (dim == 0 || dim > (std::uint64_t{1} << 40) || product > (std::uint64_t{1} << 62) / dim)
                throw ModelError(fmt::format("{}: {} dimension {} is {}: not a tensor size (a damaged header?)", path, what, d, dim));
            product *= dim;
            t.dims.push_back(dim);
        }
        t.type_id = r.get<std::uint32_t>(what + " type");
        const auto info = ggml::find_type(t.type_id);
        if (!info || !info->is_weight)
            throw ModelError(fmt::format("{}: {} has ggml type {}, which this engine does not read (supported: F32, F16, "
                                         "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                                         path, what, ggml_type_name(t.type_id)));
        t.type = info->type;
        if (t.dims[0] % info->block_elems != 0)
            throw ModelError(fmt::format("{}: {} rows of {} elements are not whole {}-element blocks of {}", path, what, t.dims[0],
                                         info->block_elems, info->name));
        t.bytes = product / info->block_elems * info->block_bytes;
        t.offset = r.get<std::uint64_t>(what + " offset");
        if (t.offset % f.alignment_ != 0)
            throw ModelError(fmt::format("{}: {} starts at offset {} of the data section, not a multiple of the alignment "
                                         "{}",
                                         path, what, t.offset, f.alignment_));
        if (!names.emplace(t.name, f.tensors_.size()).second)
            throw ModelError(fmt::format("{}: {} is given twice", path, what));
        f.tensors_.push_back(std::move(t));
    }

    // the data section: aligned after the tensor infos, every tensor inside it and none overlapping
    f.data_start_ = (r.pos() + f.alignment_ - 1) / f.alignment_ * f.alignment_;
    if (f.data_start_ > f.file_size_)
        throw ModelError(fmt::format("{}: the data section would start at {}, past the end of the {}-byte file", path,
                                     f.data_start_, f.file_size_));
    const std::uint64_t data_size = f.file_size_ - f.data_start_;
    std::vector<const GgufTensor*> by_offset;
    for (const GgufTensor& t : f.tensors_) {
        if (t.offset > data_size || t.bytes > data_size - t.offset)
            throw ModelError(fmt::format("{}: tensor '{}' ({} bytes of {} at offset {}) ends past the data section ({} bytes): "
                                         "the file is truncated or damaged",
                                         path, t.name, t.bytes, ggml::type_info(t.type).name, t.offset, data_size));
        by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i)
        if (by_offset[i - 1]->offset + by_offset[i - 1]->bytes > by_offset[i]->offset)
            throw ModelError(fmt::format("{}: tensors '{}' and '{}' overlap in the data section", path, by_offset[i - 1]->name,
                                         by_offset[i]->name));
    return f;
}

const GgufValue& GgufFile::value(const std::string& key) const {
    const auto it = kv_.find(key);
    if (it == kv_.end()) throw ModelError(fmt::format("{}: metadata '{}' is missing", path_, key));
    return it->second;
}

std::string GgufFile::text(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.kind != GgufValue::Kind::String)
        throw ModelError(fmt::format("{}: metadata '{}' is a {}, expected a string", path_, key, GgufValue::kind_name(v.kind)));
    return std::get<std::string>(v.scalar);
}

std::uint64_t GgufFile::uint(const std::string& key) const {
    const GgufValue& v = value(key);
    if (const auto* u = std::get_if<std::uint64_t>(&v.scalar); u && v.kind != GgufValue::Kind::Array) return *u;
    if (const auto* s = std::get_if<std::int64_t>(&v.scalar); s && *s >= 0 && v.kind != GgufValue::Kind::Array)
        return static_cast<std::uint64_t>(*s);
    throw ModelError(fmt::format("{}: metadata '{}' is a {}{}, expected a non-negative integer", path_, key,
                                 GgufValue::kind_name(v.kind),
                                 std::holds_alternative<std::int64_t>(v.scalar) ? fmt::format(" ({})", std::get<std::int64_t>(v.scalar)) : ""));
}

std::uint64_t GgufFile::uint_or(const std::string& key, std::uint64_t fallback) const {
    return has(key) ? uint(key) : fallback;
}

double GgufFile::number(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.kind != GgufValue::Kind::Array && v.kind != GgufValue::Kind::String && v.kind != GgufValue::Kind::Bool) {
        if (const auto* u = std::get_if<std::uint64_t>(&v.scalar)) return static_cast<double>(*u);
        if (const auto* s = std::get_if<std::int64_t>(&v.scalar)) return static_cast<double>(*s);
        if (const auto* d = std::get_if<double>(&v.scalar)) return *d;
    }
    throw ModelError(fmt::format("{}: metadata '{}' is a {}, expected a number", path_, key, GgufValue::kind_name(v.kind)));
}

double GgufFile::number_or(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }

bool GgufFile::boolean_or(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const GgufValue& v = value(key);
    if (v.kind != GgufValue::Kind::Bool)
        throw ModelError(fmt::format("{}: metadata '{}' is a {}, expected a bool", path_, key, GgufValue::kind_name(v.kind)));
    return std::get<bool>(v.scalar);
}

const std::vector<std::string>& GgufFile::strings(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.kind != GgufValue::Kind::Array || v.element != GgufValue::Kind::String)
        throw ModelError(fmt::format("{}: metadata '{}' is a {}, expected an array of strings", path_, key,
                                     GgufValue::kind_name(v.kind)));
    return v.strings;
}

std::vector<double> GgufFile::numbers(const std::string& key) const {
    const GgufValue& v = value(key);
    if (v.kind != GgufValue::Kind::Array || v.element == GgufValue::Kind::String || v.element == GgufValue::Kind::Array)
        throw ModelError(fmt::format("{}: metadata '{}' is a {}, expected an array of numbers", path_, key,
                                     GgufValue::kind_name(v.kind)));
    return v.numbers;
}

std::vector<std::string> GgufFile::keys() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : kv_) out.push_back(k);
    return out;
}

const GgufTensor* GgufFile::find(const std::string& name) const {
    for (const GgufTensor& t : tensors_)
        if (t.name == name) return &t;
    return nullptr;
}

std::vector<std::uint8_t> GgufFile::read(const GgufTensor& t) const {
    std::ifstream in(path_, std::ios::binary);
    if (!in) throw ModelError(fmt::format("{}: cannot open", path_));
    std::vector<std::uint8_t> out(t.bytes);
    in.seekg(static_cast<std::streamoff>(data_start_ + t.offset));
    if (!in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(t.bytes)))
        throw ModelError(fmt::format("{}: error while reading tensor '{}' ({} bytes at offset {})", path_, t.name, t.bytes,
                                     data_start_ + t.offset));
    return out;
}

}  // namespace lmlab
