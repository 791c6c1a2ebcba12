// A Model from a GGUF file (model/load/gguf.h reads the format): the family by
// general.architecture (model/family.h's gguf_arch), the Config from its metadata (the family's
// from_gguf), every tensor by its GGUF name (the gguf column of the family's tensor table).
//
// What llama.cpp's converter does, and so what we undo or keep:
//   - names: token_embd, blk.N.attn_q, ..., output_norm, output (tensor tables);
//   - `llama` (and Mixtral, which is `llama` with experts): q and k rows permuted back to Meta's
//     adjacent-pair RoPE (from_gguf sets AdjacentPairs); qwen2, qwen2moe: rotate-half, as HF;
//   - gpt2: the Conv1D weights transposed to [out, in] (ours);
//   - experts: all of a layer's experts in one tensor [n_experts, rows, cols] (blk.N.ffn_up_exps),
//     which the loader slices;
//   - a tied model has no output.weight: the classifier is token_embd.
// Weights keep their ggml type (F16, Q8_0, Q4_K, ...: Linear::gg, Model::tok_embeddings_gg) and
// are dequantized row by row as they are used; F32 tensors, norms and biases are read as floats.
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <set>

#include "model/family.h"
#include "model/load/gguf.h"
#include "model/load/load.h"
#include "model/tensors.h"

namespace lmlab {

namespace {

std::string dims_str(const std::vector<std::uint64_t>& dims) {
    std::string s = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
    return s + "]";
}

// The tensor's dims as ours: ggml lists the innermost first, so [out, in] is {in, out}. Leading 1s
// (a [1, dim] gate stored as {dim}) do not count.
bool same_shape(const std::vector<std::uint64_t>& ggml_dims, std::vector<std::size_t> ours) {
    std::vector<std::size_t> theirs(ggml_dims.rbegin(), ggml_dims.rend());
    while (theirs.size() > 1 && theirs.front() == 1) theirs.erase(theirs.begin());
    while (ours.size() > 1 && ours.front() == 1) ours.erase(ours.begin());
    return theirs == ours;
}

// Floats from a tensor's bytes in any supported type (F32 read as is, the others dequantized).
void to_floats(ggml::Type type, std::span<const std::uint8_t> bytes, std::size_t cols, std::vector<float>& out) {
    const std::size_t n = bytes.size() / ggml::row_bytes(type, cols) * cols;
    out.resize(n);
    if (type == ggml::Type::F32) {
        std::memcpy(out.data(), bytes.data(), n * sizeof(float));  // (little-endian, as the file and x86)
        return;
    }
    const std::size_t rb = ggml::row_bytes(type, cols);
    for (std::size_t r = 0; r < n / cols; ++r)
        ggml::dequantize_row(type, bytes.subspan(r * rb, rb), std::span<float>(out).subspan(r * cols, cols));
}

}  // namespace

Model load_model_gguf(const std::string& path) {
    const GgufFile f = GgufFile::open(path);
    const Family& fam = find_family_gguf(f);
    Model m;
    m.source = path;
    m.format = "gguf";
    m.config = fam.from_gguf(f);
    const GgufTensor* embd = f.find("token_embd.weight");
    if (!embd || embd->dims.size() != 2)
        throw ModelError(fmt::format("{}: no 2-D tensor 'token_embd.weight' (the token embeddings [vocab, dim])", path));
    m.config.vocab_size = embd->dims[1];
    m.config.tied_embeddings = f.find("output.weight") == nullptr;  // the converter drops a tied classifier
    m.config.validate(path);
    if (f.has("tokenizer.ggml.eos_token_id")) m.eos_token_ids = {static_cast<int>(f.uint("tokenizer.ggml.eos_token_id"))};
    const Config& c = m.config;

    // every tensor present, of the right shape, before reading any
    std::vector<BoundTensor> want = bind_tensors(m);
    std::set<std::string> explained;
    for (const BoundTensor& b : want) {
        if (b.gguf_name.empty())
            throw ModelError(fmt::format("{}: the {} family has no GGUF name for {} (model/families/)", path, fam.name, b.name));
        const GgufTensor* t = f.find(b.gguf_name);
        if (!t)
            throw ModelError(fmt::format("{}: tensor '{}' is missing (expected {}, for {} {} layers dim {} vocab {})", path,
                                         b.gguf_name, shape_str(b.shape), fam.name, c.n_layers, c.dim, c.vocab_size));
        explained.insert(b.gguf_name);
        std::vector<std::size_t> want_shape = b.shape;
        if (b.per_expert) want_shape.insert(want_shape.begin(), c.n_experts);  // all of a layer's experts in one tensor
        if (!same_shape(t->dims, want_shape))
            throw ModelError(fmt::format("{}: tensor '{}' has ggml dims {} (innermost first), expected {} (ours, outermost "
                                         "first)",
                                         path, b.gguf_name, dims_str(t->dims), shape_str(want_shape)));
    }
    std::vector<std::string> unknown;
    for (const GgufTensor& t : f.tensors())
        if (!explained.count(t.name)) unknown.push_back(t.name);
    if (!unknown.empty())
        throw ModelError(fmt::format("{}: the file has tensors this engine would ignore: {}{} — a feature this engine does not "
                                     "implement ({} architecture)",
                                     path, fmt::join(unknown.begin(), unknown.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(unknown.size(), 5)), ", "),
                                     unknown.size() > 5 ? fmt::format(" (and {} more)", unknown.size() - 5) : "",
                                     f.text("general.architecture")));

    // then the reads: a tensor shared by the experts of a layer is read once and sliced
    std::string cached_name;
    std::vector<std::uint8_t> cached;
    for (const BoundTensor& b : want) {
        const GgufTensor& t = *f.find(b.gguf_name);
        if (b.gguf_name != cached_name) {
            cached = f.read(t);
            cached_name = b.gguf_name;
        }
        const std::size_t cols = b.shape.back(), rows = numel(b.shape) / cols;
        const std::size_t bytes = rows * ggml::row_bytes(t.type, cols);
        const auto slice = std::span<const std::uint8_t>(cached).subspan(b.per_expert ? b.expert * bytes : 0, bytes);
        GgmlMatrix* gg = gg_slot(m, b.dst);
        if (gg && t.type != ggml::Type::F32) {  // kept in its type, dequantized as it is used
            gg->type = t.type;
            gg->rows = rows;
            gg->cols = cols;
            gg->data.assign(slice.begin(), slice.end());
            b.dst->clear();
        } else {
            to_floats(t.type, slice, cols, *b.dst);
        }
    }
    return m;
}

}  // namespace lmlab
