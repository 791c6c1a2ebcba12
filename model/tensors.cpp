#include "model/tensors.h"

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
#define LAYER(member) [](Model& m, std::size_t l, std::size_t) -> std::vector<float>& { return m.layers[l].member; }
#define GLOBAL(member) [](Model& m, std::size_t, std::size_t) -> std::vector<float>& { return m.member; }
#define EXPERT(member) \
    [](Model& m, std::size_t l, std::size_t e) -> std::vector<float>& { return m.layers[l].experts[e].member; }

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

// Mixture of experts: the attention and norms of LLaMA / Qwen2 (Hugging Face names), the router, the
// experts (one slot each, expanded per expert), and Qwen2-MoE's shared expert with its gate.
Shape router(const Config& c) { return {c.n_experts, c.dim}; }
Shape shared_in(const Config& c) { return {c.shared_ffn_dim, c.dim}; }
Shape shared_out(const Config& c) { return {c.dim, c.shared_ffn_dim}; }
Shape shared_gate(const Config& c) { return {1, c.dim}; }
bool has_shared_expert(const Config& c) { return c.shared_ffn_dim > 0; }

const std::vector<TensorSlot> kQwen2Moe = {
    {"embed_tokens.weight", nullptr, false, embeddings, GLOBAL(tok_embeddings)},
    {"layers.{}.input_layernorm.weight", nullptr, true, dim, LAYER(attn_norm.weight)},
    {"layers.{}.self_attn.q_proj.weight", nullptr, true, q_proj, LAYER(wq.w)},
    {"layers.{}.self_attn.k_proj.weight", nullptr, true, kv_proj, LAYER(wk.w)},
    {"layers.{}.self_attn.v_proj.weight", nullptr, true, kv_proj, LAYER(wv.w)},
    {"layers.{}.self_attn.q_proj.bias", nullptr, true, q_out, LAYER(wq.b)},
    {"layers.{}.self_attn.k_proj.bias", nullptr, true, kv_out, LAYER(wk.b)},
    {"layers.{}.self_attn.v_proj.bias", nullptr, true, kv_out, LAYER(wv.b)},
    {"layers.{}.self_attn.o_proj.weight", nullptr, true, o_proj, LAYER(wo.w)},
    {"layers.{}.post_attention_layernorm.weight", nullptr, true, dim, LAYER(ffn_norm.weight)},
    {"layers.{}.mlp.gate.weight", nullptr, true, router, LAYER(router.w)},
    {"layers.{}.mlp.experts.{}.gate_proj.weight", nullptr, true, ffn_in, EXPERT(w_gate.w), nullptr, false, true},
    {"layers.{}.mlp.experts.{}.up_proj.weight", nullptr, true, ffn_in, EXPERT(w_up.w), nullptr, false, true},
    {"layers.{}.mlp.experts.{}.down_proj.weight", nullptr, true, ffn_out, EXPERT(w_down.w), nullptr, false, true},
    {"layers.{}.mlp.shared_expert.gate_proj.weight", nullptr, true, shared_in, LAYER(shared_expert.w_gate.w), has_shared_expert},
    {"layers.{}.mlp.shared_expert.up_proj.weight", nullptr, true, shared_in, LAYER(shared_expert.w_up.w), has_shared_expert},
    {"layers.{}.mlp.shared_expert.down_proj.weight", nullptr, true, shared_out, LAYER(shared_expert.w_down.w), has_shared_expert},
    {"layers.{}.mlp.shared_expert_gate.weight", nullptr, true, shared_gate, LAYER(shared_gate.w), has_shared_expert},
    {"norm.weight", nullptr, false, dim, GLOBAL(final_norm.weight)},
    {"lm_head.weight", nullptr, false, embeddings, GLOBAL(output), untied},
};

// Mixtral's names: block_sparse_moe, and w1 (gate) / w2 (down) / w3 (up) as in Meta's LLaMA.
const std::vector<TensorSlot> kMixtral = {
    {"embed_tokens.weight", nullptr, false, embeddings, GLOBAL(tok_embeddings)},
    {"layers.{}.input_layernorm.weight", nullptr, true, dim, LAYER(attn_norm.weight)},
    {"layers.{}.self_attn.q_proj.weight", nullptr, true, q_proj, LAYER(wq.w)},
    {"layers.{}.self_attn.k_proj.weight", nullptr, true, kv_proj, LAYER(wk.w)},
    {"layers.{}.self_attn.v_proj.weight", nullptr, true, kv_proj, LAYER(wv.w)},
    {"layers.{}.self_attn.o_proj.weight", nullptr, true, o_proj, LAYER(wo.w)},
    {"layers.{}.post_attention_layernorm.weight", nullptr, true, dim, LAYER(ffn_norm.weight)},
    {"layers.{}.block_sparse_moe.gate.weight", nullptr, true, router, LAYER(router.w)},
    {"layers.{}.block_sparse_moe.experts.{}.w1.weight", nullptr, true, ffn_in, EXPERT(w_gate.w), nullptr, false, true},
    {"layers.{}.block_sparse_moe.experts.{}.w2.weight", nullptr, true, ffn_out, EXPERT(w_down.w), nullptr, false, true},
    {"layers.{}.block_sparse_moe.experts.{}.w3.weight", nullptr, true, ffn_in, EXPERT(w_up.w), nullptr, false, true},
    {"norm.weight", nullptr, false, dim, GLOBAL(final_norm.weight)},
    {"lm_head.weight", nullptr, false, embeddings, GLOBAL(output), untied},
};

#undef LAYER
#undef GLOBAL
#undef EXPERT

}  // namespace

const std::vector<TensorSlot>& tensor_table(Arch arch) {
    switch (arch) {
        case Arch::Llama:
        case Arch::Qwen2: return kLlama;
        case Arch::Gpt2: return kGpt2;
        case Arch::Qwen2Moe: return kQwen2Moe;
        case Arch::Mixtral: return kMixtral;
    }
    throw ModelError("tensor_table: unknown arch");
}

std::string tensor_name(const char* pattern, std::size_t layer, std::size_t expert) {
    std::string name = pattern;
    auto at = name.find("{}");
    if (at != std::string::npos) name.replace(at, 2, std::to_string(layer));
    at = name.find("{}");
    if (at != std::string::npos) name.replace(at, 2, std::to_string(expert));
    return name;
}

std::vector<BoundTensor> bind_tensors(Model& m) {
    const Config& c = m.config;
    m.layers.resize(c.n_layers);
    for (LayerWeights& l : m.layers) l.experts.resize(c.n_experts);
    std::vector<BoundTensor> out;
    for (const TensorSlot& s : tensor_table(c.arch)) {
        if (s.present && !s.present(c)) continue;
        for (std::size_t l = 0; l < (s.per_layer ? c.n_layers : 1); ++l)
            for (std::size_t e = 0; e < (s.per_expert ? c.n_experts : 1); ++e)
                out.push_back({tensor_name(s.name, l, e), tensor_name(s.hf ? s.hf : s.name, l, e), s.shape(c),
                               &s.field(m, l, e), s.hf_conv1d});
    }
    return out;
}

std::size_t numel(const std::vector<std::size_t>& shape) {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    return n;
}

}  // namespace lmlab
