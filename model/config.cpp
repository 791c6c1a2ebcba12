#include "model.h"

#include <filesystem>

namespace lmlab {

void Config::validate(const std::string& source) const {
    auto bad = [&](const std::string& what) {
        throw ModelError(source + ": invalid model config: " + what + " (dim " + std::to_string(dim) + ", n_layers " +
                         std::to_string(n_layers) + ", n_heads " + std::to_string(n_heads) + ", n_kv_heads " +
                         std::to_string(n_kv_heads) + ", ffn_dim " + std::to_string(ffn_dim) + ", vocab_size " +
                         std::to_string(vocab_size) + ", max_seq_len " + std::to_string(max_seq_len) + ")");
    };
    if (dim == 0 || n_layers == 0 || n_heads == 0 || n_kv_heads == 0 || ffn_dim == 0 || vocab_size == 0 ||
        max_seq_len == 0)
        bad("every dimension must be positive");
    if (dim % n_heads != 0) bad("n_heads must divide dim");
    if (n_heads % n_kv_heads != 0) bad("n_kv_heads must divide n_heads");
    if (head_dim() % 2 != 0) bad("head_dim must be even for RoPE");
    if (!(norm_eps > 0) || !(rope_theta > 0)) bad("norm_eps and rope_theta must be positive");
    // a guard against absurd headers allocating terabytes: weights plus the KV cache, in floats
    const double params = static_cast<double>(vocab_size) * dim + static_cast<double>(n_layers) * dim * (4.0 * dim + 3.0 * ffn_dim);
    const double cache = 2.0 * static_cast<double>(n_layers) * static_cast<double>(max_seq_len) * static_cast<double>(kv_dim());
    if (params + cache > 4e10) bad("weights and KV cache exceed 40 billion floats: not a model this engine can hold");
}

Model load_model(const std::string& path) {
    const std::string ext = std::filesystem::path(path).extension().string();
    if (ext == ".h5" || ext == ".hdf5") return load_model_hdf5(path);
    return load_model_llama2c(path);
}

}  // namespace lmlab
