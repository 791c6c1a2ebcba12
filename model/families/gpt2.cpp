// The GPT-2 block (Radford et al. 2019; transformers' GPT2Block, llm.c's train_gpt2.c):
//
//   x ─► LayerNorm ─► c_attn (one fused projection: q | k | v) ─► attend over the cache ─► c_proj ─► + x ─► h
//   h ─► LayerNorm ─► c_fc ─► GELU ─► c_proj                                                  ─► + h ─► out
//
// Shapes: x [dim]; qkv [3·dim] = q [dim] | k [dim] | v [dim] (n_kv_heads == n_heads); up [ffn_dim = 4·dim].
// Next to LLaMA: LayerNorm (mean and bias) instead of RMSNorm, every projection has a bias, no
// RoPE (positions were added to the embedding), GELU instead of SwiGLU (no gate).
#include <algorithm>

#include "model/forward.h"

namespace lmlab {

void gpt2_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos, std::span<float> x,
                KVCache& cache, RunState& s, LayerTrace* t) {
    const std::size_t dim = c.dim;
    record(t, &LayerTrace::in, x);
    layernorm(x, w.attn_norm.weight, w.attn_norm.bias, c.norm_eps, s.xn);
    record(t, &LayerTrace::attn_norm, s.xn);

    // one matvec for all three projections: rows [0, dim) are q, [dim, 2·dim) k, [2·dim, 3·dim) v
    project(w.wqkv, s.xn, s.qkv, s);
    const auto qkv = std::span<const float>(s.qkv);
    std::ranges::copy(qkv.subspan(0, dim), s.q.begin());
    std::ranges::copy(qkv.subspan(dim, dim), s.k.begin());
    std::ranges::copy(qkv.subspan(2 * dim, dim), s.v.begin());
    record(t, &LayerTrace::q, s.q);
    record(t, &LayerTrace::k, s.k);
    record(t, &LayerTrace::v, s.v);
    cache.append(layer, pos, s.k, s.v);
    attend(c, layer, pos, cache, s);  // -> s.heads
    record(t, &LayerTrace::heads, s.heads);
    project(w.wo, s.heads, s.att_out, s);
    record(t, &LayerTrace::attn_out, s.att_out);
    add(x, s.att_out, x);  // first residual: h
    record(t, &LayerTrace::h, x);

    layernorm(x, w.ffn_norm.weight, w.ffn_norm.bias, c.norm_eps, s.xn);
    record(t, &LayerTrace::ffn_norm, s.xn);
    project(w.w_up, s.xn, s.up, s);  // [dim] -> [4·dim]
    record(t, &LayerTrace::ffn_up, s.up);
    if (c.activation == Activation::GeluTanh) gelu_tanh(s.up, s.act);  // the form the model was trained with
    else gelu_erf(s.up, s.act);
    record(t, &LayerTrace::ffn_act, s.act);
    project(w.w_down, s.act, s.ffn_out, s);  // [4·dim] -> [dim]
    record(t, &LayerTrace::ffn_out, s.ffn_out);
    add(x, s.ffn_out, x);  // second residual: the block's output
    record(t, &LayerTrace::out, x);
}

}  // namespace lmlab
