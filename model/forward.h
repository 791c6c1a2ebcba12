// The forward pass of a LLaMA-style decoder, one token at a time, as explicit functions:
//
//   token ─► embedding row ─► [ block 0 ] ─► … ─► [ block L-1 ] ─► final RMSNorm ─► classifier ─► logits
//
//   block:  x ─► RMSNorm ─► attention ─► + x ─► h ─► RMSNorm ─► SwiGLU FFN ─► + h ─► out
//           (pre-norm: each sub-block sees a normalised copy; the residual stream x is never normalised)
//
// No allocation happens here: every buffer lives in RunState, made once per model.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "kv_cache.h"
#include "model.h"

namespace lmlab {

// Scratch buffers for one token, sized from the config once.
struct RunState {
    explicit RunState(const Config& c);
    std::vector<float> x;        // [dim] the residual stream
    std::vector<float> xn;       // [dim] normalised input of the current sub-block
    std::vector<float> q;        // [n_heads * head_dim] queries, all heads
    std::vector<float> k, v;     // [kv_dim] this token's key and value, all kv heads
    std::vector<float> heads;    // [n_heads * head_dim] attention output of every head, concatenated
    std::vector<float> att_out;  // [dim] after the output projection wo
    std::vector<float> gate;     // [ffn_dim] w1 x, then silu(w1 x) * (w3 x)
    std::vector<float> up;       // [ffn_dim] w3 x
    std::vector<float> ffn_out;  // [dim]
    std::vector<float> scores;   // [max_seq_len] attention probabilities of one head
    std::vector<float> logits;   // [vocab_size]
};

// Every intermediate of one token through one block (names as in the golden fixtures).
struct LayerTrace {
    std::vector<float> in, attn_norm, q, k, v, attn_out, h, ffn_norm, ffn_out, out;
};
// Recorded by forward() when asked (tests and the harness; copies, so not for the hot path).
struct Trace {
    std::vector<float> embedding;
    std::vector<LayerTrace> layers;
    std::vector<float> final_norm, logits;
};

// Attention sub-block of `layer` at position `pos`.
//   xn: [dim] (already normalised) -> out: [dim]
//   q = RoPE(wq xn), k = RoPE(wk xn), v = wv xn; (k, v) appended to the cache at pos;
//   for each query head h: attend over the cache of kv head h / (n_heads / n_kv_heads)
//   (grouped-query attention: several query heads share one kv head); out = wo · concat(heads).
void attention_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos,
                     std::span<const float> xn, KVCache& cache, RunState& s, std::span<float> out);

// SwiGLU feed-forward: out = w2 · (silu(w1 xn) * (w3 xn)).  xn: [dim] -> out: [dim]
void ffn_block(const Config& c, const LayerWeights& w, std::span<const float> xn, RunState& s, std::span<float> out);

// One transformer block on the residual stream x ([dim], updated in place):
//   h = x + attention(rmsnorm(x));  x = h + ffn(rmsnorm(h))
void transformer_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos,
                       std::span<float> x, KVCache& cache, RunState& s, LayerTrace* trace = nullptr);

// The whole model for one token at position pos (== cache.length()): returns the logits
// ([vocab_size], a view of s.logits). Throws ModelError for a token id outside the vocabulary and
// KVCacheError past the context.
std::span<const float> forward(const Model& m, int token, std::size_t pos, KVCache& cache, RunState& s,
                               Trace* trace = nullptr);

}  // namespace lmlab
