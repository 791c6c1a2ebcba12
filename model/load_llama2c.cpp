// Loading a llama2.c checkpoint (Karpathy's run.c format), as documented in
// ../shared/models/stories260K/README.md:
//   header: 7 x int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//           (vocab_size < 0: a separate classifier follows the weights; > 0: tied to tok_emb)
//   body:   float32 tok_emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
//           two unused RoPE tables of seq_len * head_size / 2 floats each, [wcls]
// Per-layer tensors are stored layer-major ([n_layers, ...]); matrices are [out, in].
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "model.h"
#include "tensors.h"

namespace lmlab {

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
    Config& c = m.config = Config::llama();
    c.dim = static_cast<std::size_t>(h[0]);
    c.ffn_dim = static_cast<std::size_t>(h[1]);
    c.n_layers = static_cast<std::size_t>(h[2]);
    c.n_heads = static_cast<std::size_t>(h[3]);
    c.n_kv_heads = static_cast<std::size_t>(h[4]);
    c.tied_embeddings = h[5] > 0;
    c.vocab_size = static_cast<std::size_t>(h[5] > 0 ? h[5] : -static_cast<std::int64_t>(h[5]));
    c.max_seq_len = static_cast<std::size_t>(h[6]);
    c.rope_theta = 10000.0f;                      // llama2.c's fixed RoPE: theta 10000,
    c.rope_style = RopeStyle::AdjacentPairs;      // adjacent pairs,
    c.norm_eps = 1e-5f;                           // and RMSNorm eps 1e-5
    c.validate(path);
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

}  // namespace lmlab
