// GPT-2 (Radford et al. 2019; transformers' GPT2Block, llm.c's train_gpt2.c), over T rows at once
// (decode: T = 1):
//
//   x ─► LayerNorm ─► c_attn (one fused projection: q | k | v) ─► attend over the cache ─► c_proj ─► + x ─► h
//   h ─► LayerNorm ─► c_fc ─► GELU ─► c_proj                                                  ─► + h ─► out
//
// Shapes per row: x [dim]; qkv [3·dim] = q [dim] | k [dim] | v [dim] (n_kv_heads == n_heads);
// up [ffn_dim = 4·dim]. Next to LLaMA: LayerNorm (mean and bias) instead of RMSNorm, every
// projection has a bias, no RoPE (positions were added to the embedding), GELU instead of SwiGLU
// (no gate). This file also holds GPT-2's tensor table and its config.json mapping.
#include <algorithm>
#include <cctype>
#include <fmt/format.h>

#include "model/families/families.h"
#include "model/load/config_json.h"
#include "model/load/gguf.h"
#include "model/tensors.h"

namespace lmlab {

namespace {

// ---- The block -----------------------------------------------------------------------------------

void gpt2_block(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s) {
    const Config& c = m.config;
    const LayerWeights& w = m.layers[layer];
    const std::size_t dim = c.dim, f = c.ffn_dim;
    for (std::size_t t = 0; t < T; ++t)
        layernorm(row(s.x, t, dim), w.attn_norm.weight, w.attn_norm.bias, c.norm_eps, row(s.attn_norm, t, dim));

    // one projection for all three: per row, [0, dim) is q, [dim, 2·dim) k, [2·dim, 3·dim) v
    project_rows(w.wqkv, rows(s.attn_norm, T, dim), rows(s.qkv, T, 3 * dim), T, s);
    for (std::size_t t = 0; t < T; ++t) {
        const auto qkv = row(std::as_const(s.qkv), t, 3 * dim);
        std::ranges::copy(qkv.subspan(0, dim), row(s.q, t, dim).begin());
        std::ranges::copy(qkv.subspan(dim, dim), row(s.k, t, dim).begin());
        std::ranges::copy(qkv.subspan(2 * dim, dim), row(s.v, t, dim).begin());
        cache.append(layer, t, row(s.k, t, dim), row(s.v, t, dim));
    }
    attend_rows(c, layer, T, cache, s);  // -> s.heads
    project_rows(w.wo, rows(s.heads, T, dim), rows(s.attn_out, T, dim), T, s);
    add(rows(s.x, T, dim), rows(s.attn_out, T, dim), rows(s.h, T, dim));  // first residual: h

    for (std::size_t t = 0; t < T; ++t)
        layernorm(row(s.h, t, dim), w.ffn_norm.weight, w.ffn_norm.bias, c.norm_eps, row(s.ffn_norm, t, dim));
    project_rows(w.w_up, rows(s.ffn_norm, T, dim), rows(s.up, T, f), T, s);  // [T, dim] -> [T, 4·dim]
    // the GELU form the model was trained with
    if (c.activation == Activation::GeluTanh) gelu_tanh(rows(s.up, T, f), rows(s.act, T, f));
    else gelu_erf(rows(s.up, T, f), rows(s.act, T, f));
    project_rows(w.w_down, rows(s.act, T, f), rows(s.ffn_out, T, dim), T, s);  // [T, 4·dim] -> [T, dim]
    add(rows(s.h, T, dim), rows(s.ffn_out, T, dim), rows(s.out, T, dim));  // second residual: the block's output
}

// ---- Tensors: Hugging Face's names without the "transformer." prefix, in llm.c's checkpoint order --

const std::vector<TensorSlot>& gpt2_tensors() {
    using namespace slots;
    auto qkv_proj = [](const Config& c) -> Shape { return {3 * c.dim, c.dim}; };
    auto qkv_bias = [](const Config& c) -> Shape { return {3 * c.dim}; };
    static const std::vector<TensorSlot> table = {
        {"wte.weight", nullptr, "token_embd.weight", false, embeddings, LMLAB_GLOBAL(tok_embeddings)},
        {"wpe.weight", nullptr, "position_embd.weight", false, positions, LMLAB_GLOBAL(pos_embeddings)},
        {"h.{}.ln_1.weight", nullptr, "blk.{}.attn_norm.weight", true, dim, LMLAB_LAYER(attn_norm.weight)},
        {"h.{}.ln_1.bias", nullptr, "blk.{}.attn_norm.bias", true, dim, LMLAB_LAYER(attn_norm.bias)},
        {"h.{}.attn.c_attn.weight", nullptr, "blk.{}.attn_qkv.weight", true, qkv_proj, LMLAB_LAYER(wqkv.w), nullptr, true},
        {"h.{}.attn.c_attn.bias", nullptr, "blk.{}.attn_qkv.bias", true, qkv_bias, LMLAB_LAYER(wqkv.b)},
        {"h.{}.attn.c_proj.weight", nullptr, "blk.{}.attn_output.weight", true, o_proj, LMLAB_LAYER(wo.w), nullptr, true},
        {"h.{}.attn.c_proj.bias", nullptr, "blk.{}.attn_output.bias", true, dim, LMLAB_LAYER(wo.b)},
        {"h.{}.ln_2.weight", nullptr, "blk.{}.ffn_norm.weight", true, dim, LMLAB_LAYER(ffn_norm.weight)},
        {"h.{}.ln_2.bias", nullptr, "blk.{}.ffn_norm.bias", true, dim, LMLAB_LAYER(ffn_norm.bias)},
        {"h.{}.mlp.c_fc.weight", nullptr, "blk.{}.ffn_up.weight", true, ffn_in, LMLAB_LAYER(w_up.w), nullptr, true},
        {"h.{}.mlp.c_fc.bias", nullptr, "blk.{}.ffn_up.bias", true, ffn_bias, LMLAB_LAYER(w_up.b)},
        {"h.{}.mlp.c_proj.weight", nullptr, "blk.{}.ffn_down.weight", true, ffn_out, LMLAB_LAYER(w_down.w), nullptr, true},
        {"h.{}.mlp.c_proj.bias", nullptr, "blk.{}.ffn_down.bias", true, dim, LMLAB_LAYER(w_down.b)},
        {"ln_f.weight", nullptr, "output_norm.weight", false, dim, LMLAB_GLOBAL(final_norm.weight)},
        {"ln_f.bias", nullptr, "output_norm.bias", false, dim, LMLAB_GLOBAL(final_norm.bias)},
        {"lm_head.weight", nullptr, "output.weight", false, embeddings, LMLAB_GLOBAL(output), untied},  // HF only: llm.c files are always tied
    };
    return table;
}

// ---- The row -------------------------------------------------------------------------------------

Config gpt2_defaults() {
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

// transformers' GPT2Config (src/transformers/models/gpt2/configuration_gpt2.py)
Config gpt2_from_hf(const ConfigJson& j) {
    Config c = gpt2_defaults();
    c.dim = j.size("n_embd");
    c.n_layers = j.size("n_layer");
    c.n_heads = j.size("n_head");
    c.n_kv_heads = c.n_heads;  // GPT-2 is plain multi-head attention
    c.ffn_dim = j.has("n_inner") ? j.size("n_inner") : 4 * c.dim;  // n_inner null: 4 * n_embd
    c.vocab_size = j.size("vocab_size");
    c.max_seq_len = j.size("n_positions");  // the wpe table's rows: no position beyond it has an embedding
    c.norm_eps = static_cast<float>(j.number("layer_norm_epsilon", 1e-5));
    // transformers' ACT2FN: gelu_new (OpenAI's formula) and gelu_pytorch_tanh are the tanh
    // approximation; gelu is the exact erf form. Others (relu, gelu_fast, quick_gelu, ...) change the model.
    const std::string act = j.text("activation_function", "gelu_new");
    if (act == "gelu_new" || act == "gelu_pytorch_tanh")
        c.activation = Activation::GeluTanh;
    else if (act == "gelu")
        c.activation = Activation::GeluErf;
    else
        throw ModelError(fmt::format("{}: activation_function '{}' is not supported (supported: gelu_new, "
                                     "gelu_pytorch_tanh (tanh approximation), gelu (erf))",
                                     j.path(), act));
    c.tied_embeddings = j.boolean("tie_word_embeddings", true);  // PretrainedConfig's default
    // Switches of GPT2Attention that our forward does not implement: refused, never ignored.
    j.require("add_cross_attention", false, false, "cross-attention layers (an encoder-decoder GPT-2) are not supported");
    j.require("scale_attn_weights", true, true,
              "attention scores without the 1/sqrt(head_dim) scale are an unsupported numerical variant");
    j.require("scale_attn_by_inverse_layer_idx", false, false,
              "scaling attention by 1/(layer+1) is an unsupported numerical variant");
    j.require("reorder_and_upcast_attn", false, false,
              "reordered, upcast attention (Mistral's GPT-2 training trick) is an unsupported numerical variant");
    return c;
}

// llama.cpp's gpt2 architecture: the converter transposes the Conv1D weights to [out, in], as ours
Config gpt2_from_gguf(const GgufFile& f) {
    Config c = gpt2_defaults();
    c.dim = f.uint("gpt2.embedding_length");
    c.n_layers = f.uint("gpt2.block_count");
    c.n_heads = c.n_kv_heads = f.uint("gpt2.attention.head_count");
    c.ffn_dim = f.uint("gpt2.feed_forward_length");
    c.max_seq_len = f.uint("gpt2.context_length");  // the position table's rows
    c.norm_eps = static_cast<float>(f.number_or("gpt2.attention.layer_norm_epsilon", 1e-5));
    c.activation = Activation::GeluTanh;  // llama.cpp's gpt2 graph uses the tanh form
    return c;
}

// "h.3.attn.bias" / "h.3.attn.masked_bias": GPT2Attention's causal-mask buffers (older transformers
// saved them). Masks, not weights: our attention is causal by construction.
bool gpt2_ignored(const std::string& name) {
    if (name.rfind("h.", 0) != 0) return false;
    std::size_t i = 2;
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
    if (i == 2) return false;
    const std::string rest = name.substr(i);
    return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

std::string gpt2_check(const Config& c) {
    if (c.norm != NormKind::LayerNorm) return "the gpt2 block uses LayerNorm";
    if (c.activation != Activation::GeluTanh && c.activation != Activation::GeluErf)
        return "the gpt2 block uses GELU (tanh or erf form)";
    if (c.positions != Positions::Learned) return "the gpt2 block uses learned positions";
    if (!c.qkv_bias || !c.out_bias || !c.ffn_bias) return "the gpt2 block has biases on every projection";
    if (c.n_kv_heads != c.n_heads) return "gpt2 has one key/value head per query head (n_kv_heads == n_heads)";
    if (c.n_experts || c.top_k || c.shared_ffn_dim || c.norm_topk_prob)
        return "experts (n_experts, top_k, shared_ffn_dim, norm_topk_prob) belong to the qwen2moe and mixtral families only";
    return "";
}

}  // namespace

const Family& gpt2_family() {
    static const Family f{
        Arch::Gpt2, "gpt2",
        "OpenAI's GPT-2: LayerNorm, learned positions, GELU, biases everywhere, tied embeddings",
        {"gpt2"}, gpt2_defaults, gpt2_from_hf, "transformer.", gpt2_ignored, "gpt2", gpt2_from_gguf, gpt2_check, gpt2_block,
        {"in", "attn_norm", "q", "k", "v", "heads", "attn_out", "h", "ffn_norm", "ffn_up", "ffn_act", "ffn_out", "out"},
        {"kernel.matvec", "kernel.matvec.fast", "kernel.matmul_xwt", "kernel.linear", "kernel.add", "kernel.softmax",
         "kernel.layernorm", "kernel.gelu_tanh", "kernel.gelu_erf", "kernel.attention", "kernel.attention.tiled",
         "kernel.argmax"},
        gpt2_tensors};
    return f;
}

}  // namespace lmlab
