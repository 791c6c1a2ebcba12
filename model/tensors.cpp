#include "tensors.h"

namespace lmlab {

namespace {

using Shape = std::vector<std::size_t>;

Shape dim(const Config& c) { return {c.dim}; }
Shape embeddings(const Config& c) { return {c.vocab_size, c.dim}; }
Shape positions(const Config& c) { return {c.max_seq_len, c.dim}; }
Shape q_proj(const Config& c) { return {c.n_heads * c.head_dim(), c.dim}; }
Shape kv_proj(const Config& c) { return {c.kv_dim(), c.dim}; }
Shape o_proj(const Config& c) { return {c.dim, c.n_heads * c.head_dim()}; }
Shape qkv_proj(const Config& c) { return {3 * c.dim, c.dim}; }
Shape qkv_bias(const Config& c) { return {3 * c.dim}; }
Shape ffn_in(const Config& c) { return {c.ffn_dim, c.dim}; }
Shape ffn_out(const Config& c) { return {c.dim, c.ffn_dim}; }
Shape ffn_bias(const Config& c) { return {c.ffn_dim}; }

bool untied(const Config& c) { return !c.tied_embeddings; }

// Field accessors: captureless lambdas, so the table stays plain data.
#define LAYER(member) [](Model& m, std::size_t l) -> std::vector<float>& { return m.layers[l].member; }
#define GLOBAL(member) [](Model& m, std::size_t) -> std::vector<float>& { return m.member; }

bool has_qkv_bias(const Config& c) { return c.qkv_bias; }
Shape q_out(const Config& c) { return {c.n_heads * c.head_dim()}; }
Shape kv_out(const Config& c) { return {c.kv_dim()}; }

const std::vector<TensorSlot> kLlama = {
    {"tok_embeddings.weight", "embed_tokens.weight", false, embeddings, GLOBAL(tok_embeddings)},
    {"layers.{}.attention_norm.weight", "layers.{}.input_layernorm.weight", true, dim, LAYER(attn_norm.weight)},
    {"layers.{}.attention.wq.weight", "layers.{}.self_attn.q_proj.weight", true, q_proj, LAYER(wq.w)},
    {"layers.{}.attention.wk.weight", "layers.{}.self_attn.k_proj.weight", true, kv_proj, LAYER(wk.w)},
    {"layers.{}.attention.wv.weight", "layers.{}.self_attn.v_proj.weight", true, kv_proj, LAYER(wv.w)},
    {"layers.{}.attention.wq.bias", "layers.{}.self_attn.q_proj.bias", true, q_out, LAYER(wq.b), has_qkv_bias},
    {"layers.{}.attention.wk.bias", "layers.{}.self_attn.k_proj.bias", true, kv_out, LAYER(wk.b), has_qkv_bias},
    {"layers.{}.attention.wv.bias", "layers.{}.self_attn.v_proj.bias", true, kv_out, LAYER(wv.b), has_qkv_bias},
    {"layers.{}.attention.wo.weight", "layers.{}.self_attn.o_proj.weight", true, o_proj, LAYER(wo.w)},
    {"layers.{}.ffn_norm.weight", "layers.{}.post_attention_layernorm.weight", true, dim, LAYER(ffn_norm.weight)},
    {"layers.{}.feed_forward.w1.weight", "layers.{}.mlp.gate_proj.weight", true, ffn_in, LAYER(w_gate.w)},
    {"layers.{}.feed_forward.w2.weight", "layers.{}.mlp.down_proj.weight", true, ffn_out, LAYER(w_down.w)},
    {"layers.{}.feed_forward.w3.weight", "layers.{}.mlp.up_proj.weight", true, ffn_in, LAYER(w_up.w)},
    {"norm.weight", "norm.weight", false, dim, GLOBAL(final_norm.weight)},
    {"output.weight", "lm_head.weight", false, embeddings, GLOBAL(output), untied},
};

const std::vector<TensorSlot> kGpt2 = {
    {"wte.weight", nullptr, false, embeddings, GLOBAL(tok_embeddings)},
    {"wpe.weight", nullptr, false, positions, GLOBAL(pos_embeddings)},
    {"h.{}.ln_1.weight", nullptr, true, dim, LAYER(attn_norm.weight)},
    {"h.{}.ln_1.bias", nullptr, true, dim, LAYER(attn_norm.bias)},
    {"h.{}.attn.c_attn.weight", nullptr, true, qkv_proj, LAYER(wqkv.w), nullptr, true},
    {"h.{}.attn.c_attn.bias", nullptr, true, qkv_bias, LAYER(wqkv.b)},
    {"h.{}.attn.c_proj.weight", nullptr, true, o_proj, LAYER(wo.w), nullptr, true},
    {"h.{}.attn.c_proj.bias", nullptr, true, dim, LAYER(wo.b)},
    {"h.{}.ln_2.weight", nullptr, true, dim, LAYER(ffn_norm.weight)},
    {"h.{}.ln_2.bias", nullptr, true, dim, LAYER(ffn_norm.bias)},
    {"h.{}.mlp.c_fc.weight", nullptr, true, ffn_in, LAYER(w_up.w), nullptr, true},
    {"h.{}.mlp.c_fc.bias", nullptr, true, ffn_bias, LAYER(w_up.b)},
    {"h.{}.mlp.c_proj.weight", nullptr, true, ffn_out, LAYER(w_down.w), nullptr, true},
    {"h.{}.mlp.c_proj.bias", nullptr, true, dim, LAYER(w_down.b)},
    {"ln_f.weight", nullptr, false, dim, GLOBAL(final_norm.weight)},
    {"ln_f.bias", nullptr, false, dim, GLOBAL(final_norm.bias)},
    {"lm_head.weight", nullptr, false, embeddings, GLOBAL(output), untied},  // HF only: llm.c files are always tied
};

#undef LAYER
#undef GLOBAL

}  // namespace

const std::vector<TensorSlot>& tensor_table(Arch arch) {
    switch (arch) {
        case Arch::Llama:
        case Arch::Qwen2: return kLlama;
        case Arch::Gpt2: return kGpt2;
    }
    throw ModelError("tensor_table: unknown arch");
}

std::string tensor_name(const char* pattern, std::size_t layer) {
    std::string name = pattern;
    const auto at = name.find("{}");
    if (at != std::string::npos) name.replace(at, 2, std::to_string(layer));
    return name;
}

std::vector<BoundTensor> bind_tensors(Model& m) {
    const Config& c = m.config;
    m.layers.resize(c.n_layers);
    std::vector<BoundTensor> out;
    for (const TensorSlot& s : tensor_table(c.arch)) {
        if (s.present && !s.present(c)) continue;
        for (std::size_t l = 0; l < (s.per_layer ? c.n_layers : 1); ++l)
            out.push_back({tensor_name(s.name, l), tensor_name(s.hf ? s.hf : s.name, l), s.shape(c), &s.field(m, l),
                           s.hf_conv1d});
    }
    return out;
}

std::size_t numel(const std::vector<std::size_t>& shape) {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    return n;
}

}  // namespace lmlab
