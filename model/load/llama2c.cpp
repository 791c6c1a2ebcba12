// Loading a llama2.c checkpoint (Karpathy's run.c format), as documented in
// ../shared/models/stories260K/README.md:
//   header: 7 x int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//           (vocab_size < 0: a separate classifier follows the weights; > 0: tied to tok_emb)
//   body:   float32 tok_emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
//           two unused RoPE tables of seq_len * head_size / 2 floats each, [wcls]
// Per-layer tensors are stored layer-major ([n_layers, ...]); matrices are [out, in].
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "model/load/load.h"
#include "model/model.h"
#include "model/tensors.h"

namespace lmlab {

namespace {
// The Config of both llama2.c formats (run.c's float32 and runq.c's int8) from the header's
// dim, hidden_dim, n_layers, n_heads, n_kv_heads, (vocab), seq_len, plus llama2.c's fixed choices:
// RoPE theta 10000 on adjacent pairs, RMSNorm eps 1e-5. Validated (ModelError naming path).
Config llama2c_config(const std::int32_t h[7], std::size_t vocab_size, bool tied, const std::string& path) {
    Config c = Config::of(Arch::Llama);
    c.dim = static_cast<std::size_t>(h[0]);
    c.ffn_dim = static_cast<std::size_t>(h[1]);
    c.n_layers = static_cast<std::size_t>(h[2]);
    c.n_heads = static_cast<std::size_t>(h[3]);
    c.n_kv_heads = static_cast<std::size_t>(h[4]);
    c.vocab_size = vocab_size;
    c.max_seq_len = static_cast<std::size_t>(h[6]);
    c.tied_embeddings = tied;
    c.rope_theta = 10000.0f;
    c.rope_style = RopeStyle::AdjacentPairs;
    c.norm_eps = 1e-5f;
    c.validate(path);
    return c;
}
}  // namespace

Model load_model_llama2c(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ModelError(path + ": cannot open model file");
    const auto file_size = static_cast<std::size_t>(std::filesystem::file_size(path));

    std::int32_t h[7];
    if (file_size < sizeof h || !in.read(reinterpret_cast<char*>(h), sizeof h))
        throw ModelError(path + ": " + std::to_string(file_size) + " bytes is shorter than the 28-byte llama2.c header");
    for (int i = 0; i < 7; ++i)
        if ((i != 5 && h[i] <= 0) || h[i] == 0 || h[i] == INT32_MIN)
            throw ModelError(path + ": header field " + std::to_string(i) + " is " + std::to_string(h[i]) +
                             "; expected positive dim, hidden_dim, n_layers, n_heads, n_kv_heads, seq_len and a "
                             "non-zero vocab_size. Is this a llama2.c checkpoint?");

    Model m;
    m.source = path;
    m.format = "llama2.c";
    // vocab_size > 0: the classifier is the embedding; < 0: a separate one follows (use abs())
    try {
        m.config = llama2c_config(h, static_cast<std::size_t>(h[5] > 0 ? h[5] : -static_cast<std::int64_t>(h[5])),
                                  h[5] > 0, path);
    } catch (const ModelError& e) {
        // Any file lmlab does not recognise ends here (no GGUF, llm.c or "ak42" magic, no .h5
        // extension). When the weights the header implies cannot fit in the file either (the
        // embedding table, dim x vocab, and the FFN matrices, 3 x dim x hidden per layer, are a lower
        // bound; in long double: a text file's "header" multiplies to far past 2^64), say so first.
        const long double lower_bound = 4.0L * (static_cast<long double>(h[0]) * std::abs(static_cast<long double>(h[5])) +
                                                3.0L * h[2] * static_cast<long double>(h[0]) * h[1]);
        if (lower_bound <= static_cast<long double>(file_size)) throw;
        std::string why = e.what();
        if (why.rfind(path + ": ", 0) == 0) why.erase(0, path.size() + 2);
        throw ModelError(fmt::format("{}: not a model file lmlab can read. Read as a llama2.c checkpoint (it has no other "
                                     "format's magic number or extension), its header would need at least {:.3g} bytes of "
                                     "weights, and the file has {} bytes; the header itself is refused ({}). lmlab reads "
                                     "GGUF (.gguf), lmlab's .h5, llama2.c and llm.c .bin files and Hugging Face model folders",
                                     path, static_cast<double>(lower_bound), file_size, why));
    }
    const Config& c = m.config;
    const std::vector<BoundTensor> tensors = bind_tensors(m);  // in llama2.c's file order

    const std::size_t dim = c.dim, ffn = c.ffn_dim, L = c.n_layers, V = c.vocab_size;
    const std::size_t rope_tables = c.max_seq_len * c.head_dim();  // two halves of seq_len*head_size/2
    std::size_t floats = rope_tables;
    for (const BoundTensor& t : tensors) floats += numel(t.shape);
    const std::size_t expected = sizeof h + floats * sizeof(float);
    if (file_size != expected)
        throw ModelError(path + ": file is " + std::to_string(file_size) + " bytes, but its header (dim " +
                         std::to_string(dim) + ", hidden " + std::to_string(ffn) + ", " + std::to_string(L) +
                         " layers, " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + " heads, vocab " +
                         std::to_string(V) + (c.tied_embeddings ? " tied" : " untied") + ", seq_len " +
                         std::to_string(c.max_seq_len) + ") requires " + std::to_string(expected) +
                         " bytes: truncated, or not a llama2.c checkpoint");

    for (const BoundTensor& t : tensors) {
        // the old precomputed RoPE tables sit between the final norm and the classifier: skip them
        // (we compute RoPE ourselves)
        if (t.name == "output.weight") in.seekg(static_cast<std::streamoff>(rope_tables * sizeof(float)), std::ios::cur);
        t.dst->resize(numel(t.shape));
        in.read(reinterpret_cast<char*>(t.dst->data()), static_cast<std::streamsize>(t.dst->size() * sizeof(float)));
        if (!in) throw ModelError(path + ": read failed at tensor " + t.name);
    }
    return m;
}

// ---- llama2.c's int8 checkpoint (version 2, "ak42") --------------------------------------------
// Written by llama2.c's export.py (version2_export), read by runq.c:
//   header, 256 bytes: uint32 magic 0x616b3432 ("ak42"), int32 version (2), 7 x int32 dim,
//     hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len, uint8 shared_classifier,
//     int32 group_size (at byte 37, unaligned), zero padding
//   float32: attention norms [n_layers, dim], ffn norms [n_layers, dim], final norm [dim]
//   Q8_0, each tensor as int8 values [numel] then float32 scales [numel / group_size]: tok_embeddings,
//     wq, wk, wv, wo, w1, w2, w3 (each for every layer, layer 0 first), then wcls unless shared.
// Both orders are the llama2.c order of our tensor table (model/tensors.cpp), filtered to the norms
// and to the matrices. runq.c dequantizes the embedding table at load; we keep it int8 and
// dequantize a row per lookup (the same floats).
namespace {
constexpr std::uint32_t kAk42Magic = 0x616b3432;
constexpr std::size_t kAk42HeaderBytes = 256;

// a * b + c for sizes from a file header, refusing to wrap around
std::size_t checked_mul_add(std::size_t a, std::size_t b, std::size_t c, const std::string& path) {
    std::size_t r = 0;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r))
        throw ModelError(path + ": the sizes in its header overflow: not a valid llama2.c int8 checkpoint");
    return r;
}
}  // namespace

Model load_model_llama2c_q8(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ModelError(path + ": cannot open model file");
    const auto file_size = static_cast<std::size_t>(std::filesystem::file_size(path));
    unsigned char hdr[kAk42HeaderBytes];
    if (file_size < sizeof hdr || !in.read(reinterpret_cast<char*>(hdr), sizeof hdr))
        throw ModelError(fmt::format("{}: {} bytes is shorter than the 256-byte header of a llama2.c int8 checkpoint",
                                     path, file_size));
    std::uint32_t magic = 0;
    std::int32_t version = 0, h[7], group_size = 0;
    std::memcpy(&magic, hdr, 4);
    std::memcpy(&version, hdr + 4, 4);
    std::memcpy(h, hdr + 8, sizeof h);
    const std::uint8_t shared = hdr[36];
    std::memcpy(&group_size, hdr + 37, 4);
    if (magic != kAk42Magic)
        throw ModelError(fmt::format("{}: magic 0x{:08x}, expected 0x616b3432 (\"ak42\"): not a llama2.c version-2 file",
                                     path, magic));
    if (version != 2)
        throw ModelError(fmt::format("{}: llama2.c checkpoint version {}; lmlab reads version 2 (int8, Q8_0, written "
                                     "by export.py --version 2) and the legacy headerless float32 format",
                                     path, version));
    static const char* kFields[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; ++i)
        if (h[i] <= 0)
            throw ModelError(fmt::format("{}: header field {} is {}; expected a positive number", path, kFields[i], h[i]));
    if (shared > 1) throw ModelError(fmt::format("{}: shared_classifier byte is {}; expected 0 or 1", path, shared));
    if (group_size <= 0 || static_cast<std::size_t>(group_size) > kQ8MaxGroup)
        throw ModelError(fmt::format("{}: group_size {} in the header; expected 1 .. {}", path, group_size, kQ8MaxGroup));

    Model m;
    m.source = path;
    m.format = "llama2.c int8";
    m.config = llama2c_config(h, static_cast<std::size_t>(h[5]), shared == 1, path);
    const Config& c = m.config;
    const auto group = static_cast<std::size_t>(group_size);

    // sizes first, from the header alone: nothing is allocated for a file that cannot be right
    const std::vector<BoundTensor> tensors = bind_tensors(m);
    std::size_t expected = kAk42HeaderBytes;
    for (const BoundTensor& t : tensors) {
        const std::size_t n = checked_mul_add(t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, 0, path);
        if (!q8_slot(m, t.dst)) {
            expected = checked_mul_add(n, sizeof(float), expected, path);
            continue;
        }
        if (t.shape[1] % group != 0)
            throw ModelError(fmt::format(
                "{}: {} {} has rows of {} elements, not a multiple of the file's group_size {}. llama2.c's runq.c "
                "would run it anyway, its matmul stopping at the last whole group of each row (the remaining {} "
                "inputs ignored) and reading scales across row boundaries; lmlab refuses. Re-export with a "
                "group_size that divides {}",
                path, t.name, shape_str(t.shape), t.shape[1], group, t.shape[1] % group, t.shape[1]));
        expected = checked_mul_add(n / group, sizeof(float), checked_mul_add(n, 1, expected, path), path);
    }
    if (file_size != expected)
        throw ModelError(fmt::format(
            "{}: file is {} bytes, but its header (dim {}, hidden {}, {} layers, {}/{} heads, vocab {} {}, seq_len {}, "
            "group_size {}) requires {} bytes: truncated, or not a llama2.c int8 checkpoint",
            path, file_size, c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
            c.tied_embeddings ? "shared" : "unshared", c.max_seq_len, group, expected));

    auto read = [&](void* dst, std::size_t bytes, const std::string& what) {
        in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
        if (!in) throw ModelError(path + ": read failed at tensor " + what);
    };
    for (const BoundTensor& t : tensors)  // the float32 norms come first
        if (!q8_slot(m, t.dst)) {
            t.dst->resize(numel(t.shape));
            read(t.dst->data(), t.dst->size() * sizeof(float), t.name);
        }
    for (const BoundTensor& t : tensors)  // then the Q8_0 matrices, values then scales
        if (QuantizedMatrix* qm = q8_slot(m, t.dst)) {
            qm->group = group;
            qm->q.resize(numel(t.shape));
            qm->scales.resize(qm->q.size() / group);
            read(qm->q.data(), qm->q.size(), t.name);
            read(qm->scales.data(), qm->scales.size() * sizeof(float), t.name + " (scales)");
        }
    return m;
}

}  // namespace lmlab
