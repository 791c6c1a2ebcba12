// The LLaMA block (Touvron et al. 2023; llama2.c's run.c computes the same thing), also Qwen2's
// (Qwen2 = this block with biases on the q, k, v projections; the config says which):
//
//   x ─► RMSNorm ─► q = RoPE(wq·), k = RoPE(wk·), v = wv· ─► attend over the cache ─► wo ─► + x ─► h
//   h ─► RMSNorm ─► w2 · (silu(w1·) ⊙ w3·)                                          ─► + h ─► out
//
// Shapes: x [dim]; q [n_heads·head_dim]; k, v [kv_dim]; heads [n_heads·head_dim]; gate/up [ffn_dim].
//
// Qwen2-MoE and Mixtral are this block with the SwiGLU replaced by a mixture of experts (moe.cpp):
//   h ─► RMSNorm ─► router ─► top-k experts, each a SwiGLU ─► weighted sum (+ gated shared expert) ─► + h
#include "model/forward.h"

namespace lmlab {

void llama_attention(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos,
                     std::span<const float> xn, KVCache& cache, RunState& s, std::span<float> out) {
    // projections: xn [dim] -> q [n_heads*head_dim], k, v [kv_dim]
    project(w.wq, xn, s.q, s);
    project(w.wk, xn, s.k, s);
    project(w.wv, xn, s.v, s);
    // position enters only here: q and k are rotated by angles proportional to pos
    rope(s.q, c.head_dim(), pos, c.rope_theta, c.rope_style);
    rope(s.k, c.head_dim(), pos, c.rope_theta, c.rope_style);
    cache.append(layer, pos, s.k, s.v);
    attend(c, layer, pos, cache, s);  // -> s.heads
    project(w.wo, s.heads, out, s);     // mix the heads back into the residual width
}

void llama_ffn(const Config&, const LayerWeights& w, std::span<const float> xn, RunState& s, std::span<float> out) {
    project(w.w_gate, xn, s.gate, s);  // [ffn_dim]
    project(w.w_up, xn, s.up, s);      // [ffn_dim]
    swiglu(s.gate, s.up, s.act);     // silu(gate) * up: the gate decides how much of each "up" feature passes
    project(w.w_down, s.act, out, s);  // [ffn_dim] -> [dim]
}

void llama_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos, std::span<float> x,
                 KVCache& cache, RunState& s, LayerTrace* t) {
    record(t, &LayerTrace::in, x);
    rmsnorm(x, w.attn_norm.weight, c.norm_eps, s.xn);
    record(t, &LayerTrace::attn_norm, s.xn);
    llama_attention(c, w, layer, pos, s.xn, cache, s, s.att_out);
    record(t, &LayerTrace::q, s.q);
    record(t, &LayerTrace::k, s.k);
    record(t, &LayerTrace::v, s.v);
    record(t, &LayerTrace::heads, s.heads);
    record(t, &LayerTrace::attn_out, s.att_out);
    add(x, s.att_out, x);  // first residual: h
    record(t, &LayerTrace::h, x);

    rmsnorm(x, w.ffn_norm.weight, c.norm_eps, s.xn);
    record(t, &LayerTrace::ffn_norm, s.xn);
    if (c.moe()) {
        MoeTrace mt;
        moe_ffn(c, w, s.xn, s, s.ffn_out, t ? &mt : nullptr);
        if (t) {
            t->router_logits = std::move(mt.router_logits);
            t->experts = std::move(mt.experts);
            t->expert_weights = std::move(mt.expert_weights);
            t->shared_out = std::move(mt.shared_out);
        }
    } else {
        llama_ffn(c, w, s.xn, s, s.ffn_out);
        record(t, &LayerTrace::ffn_gate, s.gate);
        record(t, &LayerTrace::ffn_up, s.up);
        record(t, &LayerTrace::ffn_act, s.act);
    }
    record(t, &LayerTrace::ffn_out, s.ffn_out);
    add(x, s.ffn_out, x);  // second residual: the block's output
    record(t, &LayerTrace::out, x);
}

}  // namespace lmlab
