// Loading an llm.c GPT-2 checkpoint (gpt2_124M.bin), as written by llm.c's train_gpt2.py
// write_model() and read by train_gpt2.c gpt2_build_from_checkpoint():
//   header: 256 x int32  [0] magic 20240326, [1] version (3: float32, 5: bfloat16), [2] maxT,
//           [3] V, [4] L, [5] NH, [6] C, [7] Vp (V padded up to a multiple of 128), rest zero
//   body:   16 parameter blocks, every per-layer tensor stacked over layers ([L, ...]):
//           wte (Vp, C), wpe (maxT, C), ln1w (L, C), ln1b (L, C), qkvw (L, 3C, C), qkvb (L, 3C),
//           attprojw (L, C, C), attprojb (L, C), ln2w (L, C), ln2b (L, C), fcw (L, 4C, C),
//           fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C), lnfw (C), lnfb (C)
//           (train_gpt2.c fill_in_parameter_sizes). Matrices are [out, in] (nn.Linear): no transpose.
// That is the GPT-2 tensor table's order (model/tensors.h), and bind_tensors expands a per-layer slot
// layer by layer: reading the bound tensors in order reads the file front to back. wte's rows V..Vp-1
// are padding (zeros, for GPU-friendly matrix sizes) and are skipped. The classifier is tied to wte.
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "model/load/load.h"
#include "model/model.h"
#include "kernels/ggml_quant.h"  // bf16_to_fp32
#include "model/tensors.h"

namespace lmlab {

Model load_model_llmc(const std::string& path) {
    constexpr std::int32_t kMagic = 20240326;
    constexpr std::size_t kHeaderBytes = 256 * sizeof(std::int32_t);

    std::error_code ec;
    const std::uint64_t file_size = std::filesystem::file_size(path, ec);
    if (ec) throw ModelError(fmt::format("{}: cannot open llm.c checkpoint ({})", path, ec.message()));
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ModelError(fmt::format("{}: cannot open llm.c checkpoint", path));
    std::int32_t h[256];
    if (file_size < kHeaderBytes || !in.read(reinterpret_cast<char*>(h), kHeaderBytes))
        throw ModelError(fmt::format("{}: {} bytes is shorter than the {}-byte llm.c header", path, file_size, kHeaderBytes));
    if (h[0] != kMagic)
        throw ModelError(fmt::format("{}: bad magic {} (expected {}): not an llm.c GPT-2 checkpoint", path, h[0], kMagic));
    // 3 and 5 are the padded-vocabulary formats; older versions predate Vp.
    if (h[1] != 3 && h[1] != 5)
        throw ModelError(fmt::format("{}: llm.c checkpoint version {} is not supported (supported: 3 = float32, "
                                     "5 = bfloat16); re-export with llm.c's train_gpt2.py",
                                     path, h[1]));
    const bool bf16 = h[1] == 5;
    const std::size_t elem = bf16 ? 2 : 4;

    const char* fields[] = {"maxT", "V", "L", "NH", "C", "Vp"};
    const std::string header_text = fmt::format("maxT {}, V {}, L {}, NH {}, C {}, Vp {}", h[2], h[3], h[4], h[5], h[6], h[7]);
    for (int i = 2; i < 8; ++i)
        if (h[i] <= 0)
            throw ModelError(fmt::format("{}: header field {} ({}) is {}; expected positive ({})", path, i, fields[i - 2],
                                         h[i], header_text));
    if (h[7] < h[3])
        throw ModelError(fmt::format("{}: padded vocabulary Vp {} is smaller than the vocabulary V {} ({})", path, h[7],
                                     h[3], header_text));

    Model m;
    m.source = path;
    m.format = "llm.c";
    Config& c = m.config;
    c = Config::of(Arch::Gpt2);  // LayerNorm eps 1e-5, GELU tanh, learned positions, biases, tied: llm.c's GPT-2
    c.max_seq_len = static_cast<std::size_t>(h[2]);
    c.vocab_size = static_cast<std::size_t>(h[3]);
    c.n_layers = static_cast<std::size_t>(h[4]);
    c.n_heads = c.n_kv_heads = static_cast<std::size_t>(h[5]);
    c.dim = static_cast<std::size_t>(h[6]);
    c.ffn_dim = 4 * c.dim;
    c.validate(path);  // also bounds the sizes, so the products below cannot overflow
    const std::size_t Vp = static_cast<std::size_t>(h[7]);
    if (static_cast<double>(Vp) * static_cast<double>(c.dim) > 4e10)
        throw ModelError(fmt::format("{}: padded vocabulary Vp {} x C {} is absurd ({})", path, Vp, c.dim, header_text));

    // The whole file, from the header alone: checked before a single weight is allocated.
    std::vector<BoundTensor> tensors = bind_tensors(m);
    std::size_t floats = 0;
    for (const BoundTensor& t : tensors)
        floats += t.dst == &m.tok_embeddings ? Vp * c.dim : numel(t.shape);
    const std::uint64_t expected = kHeaderBytes + static_cast<std::uint64_t>(floats) * elem;
    if (file_size != expected)
        throw ModelError(fmt::format("{}: file is {} bytes, but its header ({}, version {} = {}) requires {} bytes ({} "
                                     "parameters of {} bytes after the {}-byte header): truncated, or not this model",
                                     path, file_size, header_text, h[1], bf16 ? "bfloat16" : "float32", expected, floats,
                                     elem, kHeaderBytes));

    auto read = [&](std::vector<float>& dst, std::size_t n, const std::string& name) {
        dst.resize(n);
        bool ok;
        if (bf16) {
            std::vector<std::uint16_t> half(n);
            ok = static_cast<bool>(in.read(reinterpret_cast<char*>(half.data()), static_cast<std::streamsize>(n * 2)));
            for (std::size_t i = 0; i < n; ++i) dst[i] = ggml::bf16_to_fp32(half[i]);
        } else {
            ok = static_cast<bool>(in.read(reinterpret_cast<char*>(dst.data()), static_cast<std::streamsize>(n * 4)));
        }
        if (!ok) throw ModelError(fmt::format("{}: reading '{}' failed (file changed while loading?)", path, name));
    };
    for (const BoundTensor& t : tensors) {
        read(*t.dst, numel(t.shape), t.name);
        if (t.dst == &m.tok_embeddings)  // skip the Vp - V padding rows
            in.seekg(static_cast<std::streamoff>((Vp - c.vocab_size) * c.dim * elem), std::ios::cur);
    }
    return m;
}

}  // namespace lmlab
