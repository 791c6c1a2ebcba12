#include <cmath>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "model/family.h"
#include "model/model.h"

namespace lmlab {

std::string shape_str(std::span<const std::size_t> shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)  // SIZE_MAX: "any length" in an expected shape
        s += fmt::format("{}{}", i ? ", " : "", shape[i] == static_cast<std::size_t>(-1) ? "*" : std::to_string(shape[i]));
    return s + "]";
}

const char* arch_name(Arch a) { return family(a).name; }

Arch parse_arch(const std::string& name, const std::string& source) {
    if (const Family* f = find_family(name)) return f->arch;
    std::vector<std::string> known;
    for (const Family* f : families()) known.push_back(f->name);
    throw ModelError(fmt::format("{}: arch '{}' is not one this engine runs (known: {})", source, name, fmt::join(known, ", ")));
}

Config Config::of(Arch arch) { return family(arch).defaults(); }

void Config::validate(const std::string& source) const {
    auto bad = [&](const std::string& what) {
        throw ModelError(fmt::format(
            "{}: invalid {} model config: {} (dim {}, n_layers {}, n_heads {}, n_kv_heads {}, ffn_dim {}, vocab_size {}, "
            "max_seq_len {})",
            source, arch_name(arch), what, dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, max_seq_len));
    };
    if (dim == 0 || n_layers == 0 || n_heads == 0 || n_kv_heads == 0 || ffn_dim == 0 || vocab_size == 0 ||
        max_seq_len == 0)
        bad("every dimension must be positive");
    // lmlab's names, then the files' (config.json; GGUF's <arch>.*), so that the field to fix is found
    if (dim % n_heads != 0)
        bad("n_heads must divide dim (config.json: num_attention_heads must divide hidden_size, GPT-2's n_head n_embd; "
            "GGUF: attention.head_count and embedding_length)");
    if (n_heads % n_kv_heads != 0)
        bad("n_kv_heads must divide n_heads (config.json: num_key_value_heads must divide num_attention_heads; GGUF: "
            "attention.head_count_kv and attention.head_count)");
    if (!(norm_eps > 0)) bad("norm_eps must be positive");
    if (n_layers > 4096)
        bad("more than 4096 layers (config.json num_hidden_layers, GGUF block_count): no model has that many; the "
            "header is damaged or not a model's");
    // a guard against absurd headers allocating terabytes: weights plus the KV cache, in floats
    const double ffn_width = moe() ? static_cast<double>(n_experts) * ffn_dim + shared_ffn_dim : static_cast<double>(ffn_dim);
    const double params = static_cast<double>(vocab_size) * dim * 2 + static_cast<double>(max_seq_len) * dim +
                          static_cast<double>(n_layers) * dim * (4.0 * dim + 3.0 * ffn_width);
    const double cache = 2.0 * static_cast<double>(n_layers) * static_cast<double>(max_seq_len) * static_cast<double>(kv_dim());
    if (params + cache > 4e10) bad("weights and KV cache exceed 40 billion floats: not a model this engine can hold");

    // RoPE scaling: numbers the formulas can use (kernels.h, rope_frequencies)
    if (rope_scaling.kind != RopeScalingKind::None) {
        const RopeScaling& r = rope_scaling;
        if (positions != Positions::Rope) bad("rope_scaling needs RoPE positions");
        if (!(r.factor >= 1.0) || !std::isfinite(r.factor)) bad(fmt::format("rope_scaling factor {} must be at least 1", r.factor));
        if (r.original_context == 0) bad("rope_scaling needs the original context (original_max_position_embeddings)");
        if (r.kind == RopeScalingKind::Llama3 && !(r.high_freq_factor > r.low_freq_factor && r.low_freq_factor > 0))
            bad(fmt::format("rope_scaling low_freq_factor {} and high_freq_factor {}: need 0 < low < high", r.low_freq_factor,
                            r.high_freq_factor));
        if (r.kind == RopeScalingKind::Yarn &&
            !(r.beta_fast > 0 && r.beta_slow > 0 && std::isfinite(r.attention_factor) && r.attention_factor > 0))
            bad(fmt::format("rope_scaling beta_fast {}, beta_slow {}, attention_factor {}: each must be positive",
                            r.beta_fast, r.beta_slow, r.attention_factor));
    }
    if (sliding_window && positions != Positions::Rope) bad("a sliding window is implemented for the RoPE (llama-like) block only");

    // What the family's block implements (its row's check); anything else would be a silently different model.
    if (const std::string why = family(arch).check(*this); !why.empty()) bad(why);
}

}  // namespace lmlab
