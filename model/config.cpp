#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>

#include "model/model.h"

namespace lmlab {

std::string shape_str(std::span<const std::size_t> shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)  // SIZE_MAX: "any length" in an expected shape
        s += fmt::format("{}{}", i ? ", " : "", shape[i] == static_cast<std::size_t>(-1) ? "*" : std::to_string(shape[i]));
    return s + "]";
}

const char* arch_name(Arch a) {
    switch (a) {
        case Arch::Llama: return "llama";
        case Arch::Gpt2: return "gpt2";
        case Arch::Qwen2: return "qwen2";
        case Arch::Qwen2Moe: return "qwen2_moe";
        case Arch::Mixtral: return "mixtral";
    }
    return "?";
}

Arch parse_arch(const std::string& name, const std::string& source) {
    for (Arch a : {Arch::Llama, Arch::Gpt2, Arch::Qwen2, Arch::Qwen2Moe, Arch::Mixtral})
        if (name == arch_name(a)) return a;
    throw ModelError(fmt::format("{}: arch '{}' is not one this engine runs (known: llama, gpt2, qwen2, qwen2_moe, mixtral)",
                                 source, name));
}

Config Config::llama() {
    Config c;
    c.arch = Arch::Llama;
    c.norm = NormKind::RMSNorm;
    c.norm_eps = 1e-5f;
    c.activation = Activation::SwiGLU;
    c.positions = Positions::Rope;
    return c;
}

Config Config::gpt2() {
    Config c;
    c.arch = Arch::Gpt2;
    c.norm = NormKind::LayerNorm;
    c.norm_eps = 1e-5f;
    c.activation = Activation::GeluTanh;
    c.positions = Positions::Learned;
    c.qkv_bias = c.out_bias = c.ffn_bias = true;
    c.tied_embeddings = true;
    return c;
}

Config Config::qwen2() {
    Config c = llama();
    c.arch = Arch::Qwen2;
    c.norm_eps = 1e-6f;
    c.rope_theta = 1e6f;
    c.rope_style = RopeStyle::RotateHalf;  // Hugging Face's layout
    c.qkv_bias = true;
    return c;
}

Config Config::qwen2_moe() {
    Config c = qwen2();  // Qwen2's attention (q/k/v biases, rotate-half RoPE); Qwen2MoeConfig's rope_theta default is 1e4
    c.arch = Arch::Qwen2Moe;
    c.rope_theta = 10000.0f;
    return c;
}

Config Config::mixtral() {
    Config c = llama();
    c.arch = Arch::Mixtral;
    c.rope_theta = 1e6f;  // MixtralConfig's default
    c.rope_style = RopeStyle::RotateHalf;  // Hugging Face's layout
    c.norm_topk_prob = true;  // MixtralSparseMoeBlock always renormalises the top-k weights
    return c;
}

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
    if (dim % n_heads != 0) bad("n_heads must divide dim");
    if (n_heads % n_kv_heads != 0) bad("n_kv_heads must divide n_heads");
    if (!(norm_eps > 0)) bad("norm_eps must be positive");
    if (n_layers > 4096) bad("more than 4096 layers: an absurd header, not a model");
    // a guard against absurd headers allocating terabytes: weights plus the KV cache, in floats
    const double ffn_width = moe() ? static_cast<double>(n_experts) * ffn_dim + shared_ffn_dim : static_cast<double>(ffn_dim);
    const double params = static_cast<double>(vocab_size) * dim * 2 + static_cast<double>(max_seq_len) * dim +
                          static_cast<double>(n_layers) * dim * (4.0 * dim + 3.0 * ffn_width);
    const double cache = 2.0 * static_cast<double>(n_layers) * static_cast<double>(max_seq_len) * static_cast<double>(kv_dim());
    if (params + cache > 4e10) bad("weights and KV cache exceed 40 billion floats: not a model this engine can hold");

    // Mixture of experts: only the MoE families have experts, and they always do.
    const bool moe_arch = arch == Arch::Qwen2Moe || arch == Arch::Mixtral;
    if (moe_arch) {
        if (n_experts == 0) bad("a mixture of experts needs n_experts > 0");
        if (n_experts > 4096) bad(fmt::format("n_experts {}: more than 4096 experts is an absurd header", n_experts));
        if (top_k == 0 || top_k > n_experts)
            bad(fmt::format("experts per token (top_k) is {}, expected 1 .. n_experts = {}", top_k, n_experts));
        if (arch == Arch::Mixtral && !norm_topk_prob) bad("mixtral always renormalises the top-k weights");
        if (arch == Arch::Mixtral && shared_ffn_dim != 0) bad("mixtral has no shared expert");
    } else if (n_experts || top_k || shared_ffn_dim || norm_topk_prob) {
        bad("experts (n_experts, top_k, shared_ffn_dim, norm_topk_prob) belong to the qwen2_moe and mixtral families only");
    }

    // What each family's forward file implements; anything else would be a silently different model.
    switch (arch) {
        case Arch::Llama:
        case Arch::Qwen2:  // one forward file (llama.cpp): Qwen2 differs only in fields
        case Arch::Qwen2Moe:  // the same block with model/moe.cpp's feed-forward
        case Arch::Mixtral:
            if (norm != NormKind::RMSNorm) bad("the llama forward uses RMSNorm");
            if (activation != Activation::SwiGLU) bad("the llama forward uses a SwiGLU feed-forward");
            if (positions != Positions::Rope) bad("the llama forward uses RoPE positions");
            if (out_bias || ffn_bias) bad("the llama forward has no bias on the output or feed-forward projections");
            if (qkv_bias != (arch == Arch::Qwen2 || arch == Arch::Qwen2Moe))
                bad("q/k/v biases: Qwen2 and Qwen2-MoE always have them, LLaMA and Mixtral never");
            if (head_dim() % 2 != 0) bad("head_dim must be even for RoPE");
            if (!(rope_theta > 0)) bad("rope_theta must be positive");
            break;
        case Arch::Gpt2:
            if (norm != NormKind::LayerNorm) bad("the gpt2 forward uses LayerNorm");
            if (activation != Activation::GeluTanh && activation != Activation::GeluErf)
                bad("the gpt2 forward uses GELU (tanh or erf form)");
            if (positions != Positions::Learned) bad("the gpt2 forward uses learned positions");
            if (!qkv_bias || !out_bias || !ffn_bias) bad("the gpt2 forward has biases on every projection");
            if (n_kv_heads != n_heads) bad("gpt2 has one key/value head per query head (n_kv_heads == n_heads)");
            break;
    }
}

namespace {
// The first 4 bytes of a file as a little-endian int32 (0 when shorter).
std::int32_t first_int32(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::int32_t v = 0;
    if (!in.read(reinterpret_cast<char*>(&v), sizeof v)) return 0;
    return v;
}
}  // namespace

Model load_model(const std::string& path) {
    namespace fs = std::filesystem;
    if (fs::is_directory(path)) {
        if (!fs::exists(fs::path(path) / "config.json"))
            throw ModelError(path + ": a directory without config.json; expected a Hugging Face model directory "
                             "(config.json + model.safetensors)");
        return load_model_hf(path);
    }
    if (!fs::exists(path)) throw ModelError(path + ": no such file or directory");
    const std::string ext = fs::path(path).extension().string();
    if (ext == ".h5" || ext == ".hdf5") return load_model_hdf5(path);
    if (ext == ".safetensors" || ext == ".json")
        throw ModelError(path + ": pass the Hugging Face model directory (" + fs::path(path).parent_path().string() +
                         "), not one of its files: the weights need config.json beside them");
    if (first_int32(path) == 20240326) return load_model_llmc(path);  // llm.c's magic number
    if (first_int32(path) == 0x616b3432) return load_model_llama2c_q8(path);  // llama2.c's "ak42": int8 (version 2)
    return load_model_llama2c(path);
}

}  // namespace lmlab
