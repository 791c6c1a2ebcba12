// The model: its configuration and its weights, exactly as loaded from a file.
//
// Loading parses, it does not just validate: load_model() returns a Model whose every tensor has
// the shape its Config demands, or throws ModelError naming the file, the tensor, the expected and
// the actual shape. No later code re-checks shapes.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace lmlab {

struct ModelError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Config {
    std::string arch = "llama";
    std::size_t dim = 0;          // width of the residual stream
    std::size_t n_layers = 0;
    std::size_t n_heads = 0;      // query heads
    std::size_t n_kv_heads = 0;   // key/value heads (< n_heads: grouped-query attention)
    std::size_t ffn_dim = 0;      // hidden width of the SwiGLU feed-forward
    std::size_t vocab_size = 0;
    std::size_t max_seq_len = 0;  // context length: the KV cache holds this many positions
    float rope_theta = 10000.0f;
    RopeStyle rope_style = RopeStyle::AdjacentPairs;
    float norm_eps = 1e-5f;
    bool tied_embeddings = false;  // classifier = token embedding matrix

    std::size_t head_dim() const { return dim / n_heads; }
    std::size_t kv_dim() const { return head_dim() * n_kv_heads; }
    // Checks the numbers make a model (positive, n_heads divides dim, n_kv_heads divides n_heads,
    // even head_dim for RoPE). Throws ModelError naming `source` and the offending value.
    void validate(const std::string& source) const;
};

// One transformer block's weights. Matrices are [out, in], row-major (nn.Linear's layout).
struct LayerWeights {
    std::vector<float> attention_norm;  // [dim]
    std::vector<float> wq;              // [n_heads * head_dim, dim]
    std::vector<float> wk;              // [kv_dim, dim]
    std::vector<float> wv;              // [kv_dim, dim]
    std::vector<float> wo;              // [dim, n_heads * head_dim]
    std::vector<float> ffn_norm;        // [dim]
    std::vector<float> w1;              // [ffn_dim, dim]  gate
    std::vector<float> w2;              // [dim, ffn_dim]  down
    std::vector<float> w3;              // [ffn_dim, dim]  up
};

// The vocabulary stored with a model (pieces with ' ' for SentencePiece's U+2581, and scores).
struct Vocabulary {
    std::vector<std::string> pieces;
    std::vector<float> scores;
};

struct Model {
    Config config;
    std::string source;                  // the file it came from
    std::vector<float> tok_embeddings;   // [vocab_size, dim]
    std::vector<LayerWeights> layers;    // [n_layers]
    std::vector<float> norm;             // [dim] final RMSNorm
    std::vector<float> output;           // [vocab_size, dim]; empty when tied
    std::optional<Vocabulary> vocabulary;  // when the file carries one

    // The classifier matrix [vocab_size, dim]: output, or tok_embeddings when tied.
    std::span<const float> classifier() const { return config.tied_embeddings ? tok_embeddings : output; }
};

// HDF5 model file (golden/models/*.h5: config as root attributes, tensors under PyTorch names).
Model load_model_hdf5(const std::string& path);
// llama2.c checkpoint (header + float32 weights; see ../shared/models/stories260K/README.md).
Model load_model_llama2c(const std::string& path);
// Only the vocabulary of an HDF5 model file (group tokenizer/); throws ModelError when absent.
Vocabulary load_vocabulary_hdf5(const std::string& path);
// By extension: .h5/.hdf5 -> HDF5, anything else -> llama2.c checkpoint.
Model load_model(const std::string& path);

}  // namespace lmlab
