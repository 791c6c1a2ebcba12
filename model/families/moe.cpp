// Qwen2-MoE and Mixtral: the LLaMA block (llama.cpp) whose feed-forward is a sparse mixture of
// experts (Shazeer et al. 2017; Jiang et al. 2024), as transformers 4.46.3's Qwen2MoeSparseMoeBlock /
// MixtralSparseMoeBlock compute it, row by row (each token picks its own experts):
//
//   xn ─► router (a Linear [n_experts, dim]) ─► softmax ─► top-k ─► (renormalise) ─► ids, weights
//   xn ─► expert e = SwiGLU_e(xn) for each chosen e ─► Σ weight_e · expert_e(xn) ─► (+ shared) ─► out
//
// Analogy: the router is a load balancer that sends each request (token) to 2 of 8 workers
// (experts) and blends their answers by its confidence in each; the other 6 never see the token.
// Every expert is the LLaMA SwiGLU feed-forward with its own weights.
//
// Matching transformers' arithmetic, step by step:
//  - the softmax runs in float32 (F.softmax(..., dtype=torch.float));
//  - torch.topk returns the k largest probabilities, largest first. At EXACTLY equal values its
//    order is unspecified (a partial sort: in torch 1.13 on CPU, top-2 of [0, 2, 2, 2] gives ids 2, 3
//    and of six equal values ids 6, 5); we take the lower id first. Either way such a token is a
//    routing near-tie (gap 0), which the harness reports and teacher-forces instead of failing;
//  - norm_topk_prob: weights /= their float32 sum (Mixtral always does this);
//  - the sum: transformers loops over experts 0..n-1 and index_add_s weight · expert(x) into a zero
//    row, so the terms are added in EXPERT-ID order, not rank order: we do the same (float addition
//    is not associative; the other order would differ in the last bit);
//  - Qwen2-MoE adds sigmoid(shared_expert_gate(x)) · shared_expert(x) after the routed sum.
//
// This file also holds the two families' tensor tables and config.json mappings.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "model/families/families.h"
#include "model/load/config_json.h"
#include "model/load/gguf.h"
#include "model/tensors.h"

namespace lmlab {

namespace {

std::size_t scratch_width(const Config& c) { return std::max(c.ffn_dim, c.shared_ffn_dim); }

// One SwiGLU expert of width `width` on row t: out = w_down · (silu(w_gate xn) ⊙ (w_up xn)), with row
// t of s.gate/up/act as scratch.  xn: [dim] -> out: [dim]
void expert_ffn(const Expert& e, std::size_t width, std::size_t t, std::span<const float> xn, RunState& s,
                std::span<float> out, const Config& c) {
    const std::size_t at = t * scratch_width(c);
    const auto gate = std::span<float>(s.gate).subspan(at, width), up = std::span<float>(s.up).subspan(at, width),
               act = std::span<float>(s.act).subspan(at, width);
    project_rows(e.w_gate, xn, gate, 1, s);
    project_rows(e.w_up, xn, up, 1, s);
    swiglu(gate, up, act);
    project_rows(e.w_down, act, out, 1, s);
}

}  // namespace

void moe_route(const Config& c, const LayerWeights& w, std::size_t t, RunState& s) {
    const std::size_t k = c.top_k, E = c.n_experts;
    const auto xn = row(std::as_const(s.ffn_norm), t, c.dim);
    const auto logits = row(s.router_logits, t, E), probs = row(s.router_probs, t, E);
    const auto ids = std::span<int>(s.expert_ids).subspan(t * k, k);
    // xn [dim] -> scores [n_experts] -> probabilities [n_experts]
    project_rows(w.router, xn, logits, 1, s);
    softmax(logits, probs);
    // top-k: the k most probable experts, largest first (equal probabilities: the lower id first)
    std::vector<int>& order = s.expert_order;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), [&](int a, int b) {
        const float pa = probs[static_cast<std::size_t>(a)], pb = probs[static_cast<std::size_t>(b)];
        return pa > pb || (pa == pb && a < b);
    });
    std::copy(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), ids.begin());
    moe_weights(c, t, s);
}

void moe_weights(const Config& c, std::size_t t, RunState& s) {
    const std::size_t k = c.top_k;
    const auto probs = row(std::as_const(s.router_probs), t, c.n_experts);
    const auto ids = std::span<const int>(s.expert_ids).subspan(t * k, k);
    const auto weights = row(s.expert_weights, t, k);
    float sum = 0.0f;  // float32, in rank order, as routing_weights.sum(dim=-1)
    for (std::size_t r = 0; r < k; ++r) {
        weights[r] = probs[static_cast<std::size_t>(ids[r])];
        sum += weights[r];
    }
    if (c.norm_topk_prob)
        for (float& wt : weights) wt /= sum;
}

void moe_mix(const Config& c, const LayerWeights& w, std::size_t t, RunState& s) {
    const std::size_t k = c.top_k;
    const auto xn = row(std::as_const(s.ffn_norm), t, c.dim);
    const auto ids = std::span<const int>(s.expert_ids).subspan(t * k, k);
    const auto weights = row(std::as_const(s.expert_weights), t, k);
    const auto out = row(s.ffn_out, t, c.dim);
    // the weighted sum of the chosen experts, in expert-id order (transformers' loop over experts)
    std::fill(out.begin(), out.end(), 0.0f);
    for (std::size_t e = 0; e < c.n_experts; ++e) {
        const auto rank = std::find(ids.begin(), ids.end(), static_cast<int>(e));
        if (rank == ids.end()) continue;  // not chosen for this token: never computed
        const float weight = weights[static_cast<std::size_t>(rank - ids.begin())];
        expert_ffn(w.experts[e], c.ffn_dim, t, xn, s, s.expert_out, c);
        for (std::size_t i = 0; i < out.size(); ++i) out[i] += s.expert_out[i] * weight;  // (y · w), then add
    }
    // Qwen2-MoE's shared expert: every token, scaled by a learned sigmoid gate in (0, 1)
    if (c.shared_ffn_dim) {
        float g = 0.0f;  // shared_gate: [1, dim] · xn -> one logit
        project_rows(w.shared_gate, xn, std::span<float>(&g, 1), 1, s);
        float gate = 0.0f;
        sigmoid(std::span<const float>(&g, 1), std::span<float>(&gate, 1));
        const auto shared = row(s.shared_out, t, c.dim);
        expert_ffn(w.shared_expert, c.shared_ffn_dim, t, xn, s, shared, c);
        for (float& v : shared) v *= gate;
        for (std::size_t i = 0; i < out.size(); ++i) out[i] += shared[i];
    }
}

void moe_ffn(const Config& c, const LayerWeights& w, std::size_t T, RunState& s) {
    for (std::size_t t = 0; t < T; ++t) {
        moe_route(c, w, t, s);
        moe_mix(c, w, t, s);
    }
}

namespace {

void moe_block(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s) {
    llama_block_with(m, layer, T, cache, s, moe_ffn);
}

// ---- Tensors: the attention and norms of LLaMA / Qwen2 (Hugging Face names), the router, the experts
// (one slot each, expanded per expert), and Qwen2-MoE's shared expert with its gate ----------------

using namespace slots;
Shape router(const Config& c) { return {c.n_experts, c.dim}; }
Shape shared_in(const Config& c) { return {c.shared_ffn_dim, c.dim}; }
Shape shared_out(const Config& c) { return {c.dim, c.shared_ffn_dim}; }
Shape shared_gate(const Config& c) { return {1, c.dim}; }
bool has_shared_expert(const Config& c) { return c.shared_ffn_dim > 0; }

const std::vector<TensorSlot>& qwen2moe_tensors() {
    static const std::vector<TensorSlot> table = {
        {"embed_tokens.weight", nullptr, "token_embd.weight", false, embeddings, LMLAB_GLOBAL(tok_embeddings)},
        {"layers.{}.input_layernorm.weight", nullptr, "blk.{}.attn_norm.weight", true, dim, LMLAB_LAYER(attn_norm.weight)},
        {"layers.{}.self_attn.q_proj.weight", nullptr, "blk.{}.attn_q.weight", true, q_proj, LMLAB_LAYER(wq.w)},
        {"layers.{}.self_attn.k_proj.weight", nullptr, "blk.{}.attn_k.weight", true, kv_proj, LMLAB_LAYER(wk.w)},
        {"layers.{}.self_attn.v_proj.weight", nullptr, "blk.{}.attn_v.weight", true, kv_proj, LMLAB_LAYER(wv.w)},
        {"layers.{}.self_attn.q_proj.bias", nullptr, "blk.{}.attn_q.bias", true, q_out, LMLAB_LAYER(wq.b)},
        {"layers.{}.self_attn.k_proj.bias", nullptr, "blk.{}.attn_k.bias", true, kv_out, LMLAB_LAYER(wk.b)},
        {"layers.{}.self_attn.v_proj.bias", nullptr, "blk.{}.attn_v.bias", true, kv_out, LMLAB_LAYER(wv.b)},
        {"layers.{}.self_attn.o_proj.weight", nullptr, "blk.{}.attn_output.weight", true, o_proj, LMLAB_LAYER(wo.w)},
        {"layers.{}.post_attention_layernorm.weight", nullptr, "blk.{}.ffn_norm.weight", true, dim, LMLAB_LAYER(ffn_norm.weight)},
        {"layers.{}.mlp.gate.weight", nullptr, "blk.{}.ffn_gate_inp.weight", true, router, LMLAB_LAYER(router.w)},
        {"layers.{}.mlp.experts.{}.gate_proj.weight", nullptr, "blk.{}.ffn_gate_exps.weight", true, ffn_in, LMLAB_EXPERT(w_gate.w), nullptr, false, true},
        {"layers.{}.mlp.experts.{}.up_proj.weight", nullptr, "blk.{}.ffn_up_exps.weight", true, ffn_in, LMLAB_EXPERT(w_up.w), nullptr, false, true},
        {"layers.{}.mlp.experts.{}.down_proj.weight", nullptr, "blk.{}.ffn_down_exps.weight", true, ffn_out, LMLAB_EXPERT(w_down.w), nullptr, false, true},
        {"layers.{}.mlp.shared_expert.gate_proj.weight", nullptr, "blk.{}.ffn_gate_shexp.weight", true, shared_in, LMLAB_LAYER(shared_expert.w_gate.w),
         has_shared_expert},
        {"layers.{}.mlp.shared_expert.up_proj.weight", nullptr, "blk.{}.ffn_up_shexp.weight", true, shared_in, LMLAB_LAYER(shared_expert.w_up.w),
         has_shared_expert},
        {"layers.{}.mlp.shared_expert.down_proj.weight", nullptr, "blk.{}.ffn_down_shexp.weight", true, shared_out, LMLAB_LAYER(shared_expert.w_down.w),
         has_shared_expert},
        {"layers.{}.mlp.shared_expert_gate.weight", nullptr, "blk.{}.ffn_gate_inp_shexp.weight", true, shared_gate, LMLAB_LAYER(shared_gate.w),
         has_shared_expert},
        {"norm.weight", nullptr, "output_norm.weight", false, dim, LMLAB_GLOBAL(final_norm.weight)},
        {"lm_head.weight", nullptr, "output.weight", false, embeddings, LMLAB_GLOBAL(output), untied},
    };
    return table;
}

// Mixtral's names: block_sparse_moe, and w1 (gate) / w2 (down) / w3 (up) as in Meta's LLaMA.
const std::vector<TensorSlot>& mixtral_tensors() {
    static const std::vector<TensorSlot> table = {
        {"embed_tokens.weight", nullptr, "token_embd.weight", false, embeddings, LMLAB_GLOBAL(tok_embeddings)},
        {"layers.{}.input_layernorm.weight", nullptr, "blk.{}.attn_norm.weight", true, dim, LMLAB_LAYER(attn_norm.weight)},
        {"layers.{}.self_attn.q_proj.weight", nullptr, "blk.{}.attn_q.weight", true, q_proj, LMLAB_LAYER(wq.w)},
        {"layers.{}.self_attn.k_proj.weight", nullptr, "blk.{}.attn_k.weight", true, kv_proj, LMLAB_LAYER(wk.w)},
        {"layers.{}.self_attn.v_proj.weight", nullptr, "blk.{}.attn_v.weight", true, kv_proj, LMLAB_LAYER(wv.w)},
        {"layers.{}.self_attn.o_proj.weight", nullptr, "blk.{}.attn_output.weight", true, o_proj, LMLAB_LAYER(wo.w)},
        {"layers.{}.post_attention_layernorm.weight", nullptr, "blk.{}.ffn_norm.weight", true, dim, LMLAB_LAYER(ffn_norm.weight)},
        {"layers.{}.block_sparse_moe.gate.weight", nullptr, "blk.{}.ffn_gate_inp.weight", true, router, LMLAB_LAYER(router.w)},
        {"layers.{}.block_sparse_moe.experts.{}.w1.weight", nullptr, "blk.{}.ffn_gate_exps.weight", true, ffn_in, LMLAB_EXPERT(w_gate.w), nullptr, false,
         true},
        {"layers.{}.block_sparse_moe.experts.{}.w2.weight", nullptr, "blk.{}.ffn_down_exps.weight", true, ffn_out, LMLAB_EXPERT(w_down.w), nullptr, false,
         true},
        {"layers.{}.block_sparse_moe.experts.{}.w3.weight", nullptr, "blk.{}.ffn_up_exps.weight", true, ffn_in, LMLAB_EXPERT(w_up.w), nullptr, false,
         true},
        {"norm.weight", nullptr, "output_norm.weight", false, dim, LMLAB_GLOBAL(final_norm.weight)},
        {"lm_head.weight", nullptr, "output.weight", false, embeddings, LMLAB_GLOBAL(output), untied},
    };
    return table;
}

// ---- The rows ------------------------------------------------------------------------------------

Config qwen2moe_defaults() {
    Config c;
    c.arch = Arch::Qwen2Moe;
    c.norm = NormKind::RMSNorm;
    c.norm_eps = 1e-6f;
    c.activation = Activation::SwiGLU;
    c.positions = Positions::Rope;
    c.rope_theta = 10000.0f;  // Qwen2MoeConfig's default (Qwen2's is 1e6)
    c.rope_style = RopeStyle::RotateHalf;  // Hugging Face's layout
    c.qkv_bias = true;                     // Qwen2's attention
    return c;
}

Config mixtral_defaults() {
    Config c;
    c.arch = Arch::Mixtral;
    c.norm = NormKind::RMSNorm;
    c.norm_eps = 1e-5f;
    c.activation = Activation::SwiGLU;
    c.positions = Positions::Rope;
    c.rope_theta = 1e6f;  // MixtralConfig's default
    c.rope_style = RopeStyle::RotateHalf;  // Hugging Face's layout
    c.norm_topk_prob = true;  // MixtralSparseMoeBlock always renormalises the top-k weights
    return c;
}

// The numbers every MoE config has: n_experts from `experts_field`, top-k, and the refusals of what
// our moe_ffn does not implement (every layer sparse, no sliding window).
void moe_common(const ConfigJson& j, Config& c, const char* experts_field) {
    c.n_experts = j.size(experts_field);
    c.top_k = j.size("num_experts_per_tok");
    if (c.top_k > c.n_experts)
        throw ModelError(fmt::format("{}: num_experts_per_tok is {} but {} is {}: a token cannot pick more experts than "
                                     "there are; fix config.json",
                                     j.path(), c.top_k, experts_field, c.n_experts));
    // (Mixtral's router_jitter_noise is applied only in training mode: inference ignores it, as we do.)
}

// transformers' Qwen2MoeConfig
Config qwen2moe_from_hf(const ConfigJson& j) {
    // the block would run it (the qwen2 family does), but no stage checks a scaled Qwen2-MoE yet
    if (j.has("rope_scaling"))
        throw ModelError(fmt::format("{}: rope_scaling is {}: scaled RoPE is not verified for qwen2moe (it is for llama "
                                     "and qwen2); refused rather than run unchecked",
                                     j.path(), j.dump("rope_scaling")));
    Config c = llama_like_config(j, qwen2moe_defaults());
    j.require("use_sliding_window", false, false, "sliding-window attention is not implemented");
    moe_common(j, c, "num_experts");
    c.ffn_dim = j.size("moe_intermediate_size");  // each expert's width (intermediate_size: the dense MLP, unused)
    c.shared_ffn_dim = j.size("shared_expert_intermediate_size");
    c.norm_topk_prob = j.boolean("norm_topk_prob", false);  // Qwen2MoeConfig's default
    // Qwen2MoeDecoderLayer has a sparse block at layer i only when (i + 1) % decoder_sparse_step == 0 and
    // i is not in mlp_only_layers; the others have a dense MLP, which this engine does not mix in.
    const double step = j.number("decoder_sparse_step", 1);
    if (step != 1)
        throw ModelError(fmt::format("{}: decoder_sparse_step is {}: only every layer sparse (1) is implemented; layers "
                                     "with a dense MLP between sparse ones are not",
                                     j.path(), j.dump("decoder_sparse_step")));
    if (j.has("mlp_only_layers") && !(j.raw("mlp_only_layers").is_array() && j.raw("mlp_only_layers").empty()))
        throw ModelError(fmt::format("{}: mlp_only_layers is {}: layers with a dense MLP instead of experts are not "
                                     "implemented; only [] (every layer sparse) is",
                                     j.path(), j.dump("mlp_only_layers")));
    return c;
}

// transformers' MixtralConfig
Config mixtral_from_hf(const ConfigJson& j) {
    // transformers 4.46.3's MixtralRotaryEmbedding ignores rope_scaling: no reference to check it against
    if (j.has("rope_scaling"))
        throw ModelError(fmt::format("{}: rope_scaling is {}: transformers 4.46.3's Mixtral ignores it and this engine "
                                     "has no reference for a scaled Mixtral; refused rather than guessed",
                                     j.path(), j.dump("rope_scaling")));
    Config c = llama_like_config(j, mixtral_defaults());
    // a sliding window that is in use changes which positions attention sees: not verified for the
    // mixture-of-experts families (the block would run it: the mistral family has it), so refused
    if (j.has("sliding_window") && j.size("sliding_window") < c.max_seq_len)
        throw ModelError(fmt::format("{}: sliding_window is {} (< max_position_embeddings {}): sliding-window attention "
                                     "is not verified for mixtral; set it to null to run the model with full attention",
                                     j.path(), j.dump("sliding_window"), c.max_seq_len));
    moe_common(j, c, "num_local_experts");  // c.ffn_dim = intermediate_size: each expert's width
    return c;
}

// llama.cpp's qwen2moe: experts of expert_feed_forward_length, a shared expert, no renormalisation
// unless the file says so (expert_weights_norm)
Config qwen2moe_from_gguf(const GgufFile& f) {
    Config c = llama_like_gguf(f, "qwen2moe", qwen2moe_defaults());
    c.n_experts = f.uint("qwen2moe.expert_count");
    c.top_k = f.uint("qwen2moe.expert_used_count");
    c.ffn_dim = f.uint("qwen2moe.expert_feed_forward_length");
    c.shared_ffn_dim = f.uint_or("qwen2moe.expert_shared_feed_forward_length", 0);
    c.norm_topk_prob = f.boolean_or("qwen2moe.expert_weights_norm", false);
    return c;
}

// Mixtral in GGUF is the `llama` architecture with experts (llama.cpp's converter), its q and k rows
// permuted back to Meta's order like any llama file's: adjacent-pair RoPE
Config mixtral_from_gguf(const GgufFile& f) {
    Config c = llama_like_gguf(f, "llama", mixtral_defaults());
    c.rope_style = RopeStyle::AdjacentPairs;
    c.n_experts = f.uint("llama.expert_count");
    c.top_k = f.uint("llama.expert_used_count");  // each expert's width: llama.feed_forward_length
    return c;
}

std::string moe_check(const Config& c, bool qkv_bias) {
    if (c.activation != Activation::SwiGLU) return "every expert is a SwiGLU feed-forward";
    if (c.n_experts == 0) return "a mixture of experts needs n_experts > 0";
    if (c.n_experts > 4096) return fmt::format("n_experts {}: more than 4096 experts is an absurd header", c.n_experts);
    if (c.top_k == 0 || c.top_k > c.n_experts)
        return fmt::format("experts per token (top_k) is {}, expected 1 .. n_experts = {}", c.top_k, c.n_experts);
    return llama_like_check(c, qkv_bias);
}

const std::vector<std::string>& moe_intermediates() {
    static const std::vector<std::string> names = {
    "in",       "attn_norm",     "q",       "k",              "v",          "heads",   "attn_out", "h",
    "ffn_norm", "router_logits", "experts", "expert_weights", "shared_out", "ffn_out", "out"};
    return names;
}

}  // namespace

const Family& qwen2moe_family() {
    static const Family f{
        Arch::Qwen2Moe, "qwen2moe",
        "Alibaba's Qwen2-MoE: Qwen2's attention + top-k of n SwiGLU experts + a sigmoid-gated shared expert",
        {"qwen2_moe"}, qwen2moe_defaults, qwen2moe_from_hf, "model.", llama_ignored, "qwen2moe", qwen2moe_from_gguf,
        [](const Config& c) { return moe_check(c, true); },
        moe_block, moe_intermediates(),
        [] {  // experts are SwiGLUs; the shared expert's gate is a sigmoid
            std::vector<std::string> k = llama_block_kernels();
            k.push_back("kernel.sigmoid");
            return k;
        }(),
        qwen2moe_tensors};
    return f;
}

const Family& mixtral_family() {
    static const Family f{
        Arch::Mixtral, "mixtral", "Mistral's Mixtral: LLaMA's attention + top-k of n SwiGLU experts, weights renormalised",
        {"mixtral"}, mixtral_defaults, mixtral_from_hf, "model.", llama_ignored, "llama", mixtral_from_gguf,
        [](const Config& c) {
            if (!c.norm_topk_prob) return std::string("mixtral always renormalises the top-k weights");
            if (c.shared_ffn_dim != 0) return std::string("mixtral has no shared expert");
            return moe_check(c, false);
        },
        moe_block,
        [] {
            std::vector<std::string> v = moe_intermediates();
            v.erase(std::find(v.begin(), v.end(), "shared_out"));  // no shared expert
            return v;
        }(),
        llama_block_kernels(), mixtral_tensors};
    return f;
}

}  // namespace lmlab
