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
    Config& c = m.config;
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

    const std::size_t dim = c.dim, kv = c.kv_dim(), ffn = c.ffn_dim, L = c.n_layers, V = c.vocab_size;
    const std::size_t rope_tables = c.max_seq_len * c.head_dim();  // two halves of seq_len*head_size/2
    const std::size_t floats = V * dim + L * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * ffn * dim) + dim +
                               rope_tables + (c.tied_embeddings ? 0 : V * dim);
    const std::size_t expected = sizeof h + floats * sizeof(float);
    if (file_size != expected)
        throw ModelError(path + ": file is " + std::to_string(file_size) + " bytes, but its header (dim " +
                         std::to_string(dim) + ", hidden " + std::to_string(ffn) + ", " + std::to_string(L) +
                         " layers, " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + " heads, vocab " +
                         std::to_string(V) + (c.tied_embeddings ? " tied" : " untied") + ", seq_len " +
                         std::to_string(c.max_seq_len) + ") requires " + std::to_string(expected) +
                         " bytes: truncated, or not a llama2.c checkpoint");

    auto read = [&](std::size_t n) {
        std::vector<float> v(n);
        in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
        if (!in) throw ModelError(path + ": read failed");
        return v;
    };
    // a [L, rows, cols] block split into one vector per layer
    auto per_layer = [&](std::vector<float> LayerWeights::*field, std::size_t n) {
        for (std::size_t l = 0; l < L; ++l) m.layers[l].*field = read(n);
    };
    m.layers.resize(L);
    m.tok_embeddings = read(V * dim);
    per_layer(&LayerWeights::attention_norm, dim);
    per_layer(&LayerWeights::wq, dim * dim);
    per_layer(&LayerWeights::wk, kv * dim);
    per_layer(&LayerWeights::wv, kv * dim);
    per_layer(&LayerWeights::wo, dim * dim);
    per_layer(&LayerWeights::ffn_norm, dim);
    per_layer(&LayerWeights::w1, ffn * dim);
    per_layer(&LayerWeights::w2, dim * ffn);
    per_layer(&LayerWeights::w3, ffn * dim);
    m.norm = read(dim);
    read(rope_tables);  // precomputed RoPE tables of old llama2.c: we compute RoPE ourselves
    if (!c.tied_embeddings) m.output = read(V * dim);
    return m;
}

}  // namespace lmlab
