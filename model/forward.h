// The forward pass, one token at a time, as explicit functions:
//
//   token ─► embed ─► [ block 0 ] ─► … ─► [ block L-1 ] ─► head (final norm, classifier) ─► logits
//
// Each family has its own block in its own file, readable top to bottom:
//   model/llama.cpp  x ─► RMSNorm ─► attention (RoPE on q, k) ─► + x ─► h ─► RMSNorm ─► SwiGLU FFN ─► + h
//   model/gpt2.cpp   x ─► LayerNorm ─► attention (fused qkv)  ─► + x ─► h ─► LayerNorm ─► GELU MLP   ─► + h
// Both are pre-norm (each sub-block sees a normalised copy; the residual stream is never
// normalised) and share the pieces below: the multi-head attention loop over the KV cache and the
// per-token scratch buffers. embed(), block() and head() pick the family with one switch each:
// one branch per block, never one per operation.
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
    std::vector<float> qkv;      // [3 * dim] GPT-2's fused projection (q, k, v side by side); empty otherwise
    std::vector<float> q;        // [n_heads * head_dim] queries, all heads
    std::vector<float> k, v;     // [kv_dim] this token's key and value, all kv heads
    std::vector<float> heads;    // [n_heads * head_dim] attention output of every head, concatenated
    std::vector<float> att_out;  // [dim] after the output projection
    std::vector<float> gate;     // [ffn_dim] LLaMA's w1 x (then silu(w1 x) * (w3 x))
    std::vector<float> up;       // [ffn_dim] LLaMA's w3 x, GPT-2's c_fc x
    std::vector<float> act;      // [ffn_dim] the activation: silu(gate) * up, or gelu(up)
    std::vector<float> ffn_out;  // [dim]
    std::vector<float> scores;   // [max_seq_len] attention probabilities of one head
    std::vector<float> logits;   // [vocab_size]
};

// Every intermediate of one token through one block, named by role. A family fills the fields
// its pipeline has (LLaMA has a gate, GPT-2 does not); layer_trace_fields() lists them.
struct LayerTrace {
    std::vector<float> in, attn_norm, q, k, v, heads, attn_out, h, ffn_norm, ffn_gate, ffn_up, ffn_act, ffn_out, out;
};
struct TraceField {
    const char* name;  // as in the golden fixtures: "q" is compared with layer<i>.q
    std::vector<float> LayerTrace::*field;
};
// The intermediates of a block of this family, in pipeline order (the first mismatch in this order
// is the first divergence). The only list of intermediate names on the C++ side.
const std::vector<TraceField>& layer_trace_fields(Arch arch);

// Recorded by forward() when asked (tests and the harness; copies, so not for the hot path).
struct Trace {
    std::vector<float> embedding;
    std::vector<LayerTrace> layers;
    std::vector<float> final_norm, logits;
};

// ---- The three steps, each one switch over the family ---------------------------------------

// x [dim] = token's embedding row (+ GPT-2's learned position row). Throws ModelError for a token
// id outside the vocabulary or (learned positions) a position past the table.
void embed(const Model& m, int token, std::size_t pos, std::span<float> x);

// One transformer block on the residual stream x ([dim], updated in place) at position pos,
// appending this token's key and value to the cache.
void block(const Model& m, std::size_t layer, std::size_t pos, std::span<float> x, KVCache& cache, RunState& s,
           LayerTrace* trace = nullptr);

// Final norm (into s.xn) and classifier (into s.logits) of the last block's output x [dim].
void head(const Model& m, std::span<const float> x, RunState& s);

// The whole model for one token at position pos (== cache.length()): returns the logits
// ([vocab_size], a view of s.logits). Throws ModelError for a token id outside the vocabulary and
// past the context.
std::span<const float> forward(const Model& m, int token, std::size_t pos, KVCache& cache, RunState& s,
                               Trace* trace = nullptr);

// ---- Shared pieces ------------------------------------------------------------------------------

// Multi-head attention of this token (s.q, already in the cache at `pos`) over positions 0..pos of
// `layer`'s cache, into s.heads. Query head h reads kv head h / (n_heads / n_kv_heads): grouped-
// query attention, several query heads share one kv head (n_kv_heads == n_heads: one each).
void attend(const Config& c, std::size_t layer, std::size_t pos, const KVCache& cache, RunState& s);

// ---- Per family (model/llama.cpp, model/gpt2.cpp) ---------------------------------------------

// LLaMA's attention sub-block on xn ([dim], already normalised) -> out [dim]:
//   q = RoPE(wq xn), k = RoPE(wk xn), v = wv xn; (k, v) appended to the cache; attend; out = wo · heads.
void llama_attention(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos,
                     std::span<const float> xn, KVCache& cache, RunState& s, std::span<float> out);
// LLaMA's SwiGLU feed-forward: out = w2 · (silu(w1 xn) * (w3 xn)).  xn: [dim] -> out: [dim]
void llama_ffn(const Config& c, const LayerWeights& w, std::span<const float> xn, RunState& s, std::span<float> out);
void llama_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos, std::span<float> x,
                 KVCache& cache, RunState& s, LayerTrace* t);
void gpt2_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos, std::span<float> x,
                KVCache& cache, RunState& s, LayerTrace* t);

// dst = src when a trace is being recorded (copies: tests and the harness only).
inline void record(LayerTrace* t, std::vector<float> LayerTrace::*field, std::span<const float> src) {
    if (t) (t->*field).assign(src.begin(), src.end());
}

}  // namespace lmlab
