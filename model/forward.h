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
    // int8 models only: the activation entering a matvec, quantized at run time (runq.c's s->xq/hq).
    // Sized for the widest input (dim, n_heads*head_dim or ffn_dim) and the smallest group (1).
    std::vector<std::int8_t> xq;  // [widest input]
    std::vector<float> xs;        // [widest input / group]
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

// Which kernels the forward pass runs: the plain ones (kernels.h's first part: the readable
// reference, double accumulators) or the fast ones beside them (float partial sums, tiled
// attention, threads), each verified against the plain one. Process-wide; the default is Fast.
// `lmlab check --plain` and `lmlab generate --plain` run everything on the plain kernels.
enum class KernelPath { Plain, Fast };
void set_kernel_path(KernelPath p);
KernelPath kernel_path();

// y = W x + b on the chosen path. l: [out, in] (+ [out]); x: [in] -> y: [out].
// An int8 layer (l.q8 set) takes runq.c's path whatever the kernel path: x is quantized into
// s.xq/s.xs (groups of l.q8.group), then matvec_q8_0, then the float bias.
void project(const Linear& l, std::span<const float> x, std::span<float> y, RunState& s);

// Multi-head attention of this token (s.q, already in the cache at `pos`) over positions 0..pos of
// `layer`'s cache, into s.heads. Query head h reads kv head h / (n_heads / n_kv_heads): grouped-
// query attention, several query heads share one kv head (n_kv_heads == n_heads: one each).
void attend(const Config& c, std::size_t layer, std::size_t pos, const KVCache& cache, RunState& s);

// ---- Batched prefill (model/prefill.cpp) ----------------------------------------------------------
// The prompt as matrices: T tokens at positions pos0 .. pos0+T-1 go through each block together.
// Every projection is one X[T, in] · Wᵀ (matmul_xwt: a block of W is read once for many tokens
// instead of once per token), the KV cache receives all T rows of a layer in one call, and row t
// attends over positions 0 .. pos0+t (causal: later rows are in the cache but not read). On the fast
// path every row's numbers are bit-identical to running the tokens one at a time with forward();
// on the plain path prefill() simply runs forward() per token.
//
// Analogy: batching requests to a database: same answers, one scan of the table per batch.
struct PrefillState {
    PrefillState(const Config& c, std::size_t max_tokens);
    std::size_t max_tokens;
    std::vector<float> x, xn;         // [T, dim]
    std::vector<float> qkv;           // [T, 3*dim] GPT-2 only
    std::vector<float> q, heads;      // [T, n_heads*head_dim]
    std::vector<float> k, v;          // [T, kv_dim]
    std::vector<float> att_out;       // [T, dim]
    std::vector<float> gate, up, act; // [T, ffn_dim]
    std::vector<float> ffn_out;       // [T, dim]
};

// Runs tokens at positions cache.length() .. + T - 1 (T <= ps.max_tokens); returns the logits of
// the last token (a view of s.logits). all_logits (optional, [T, vocab]): every row's logits, the
// classifier then run as one matmul_xwt over the rows (speculative decoding verifies k+1 rows at once).
std::span<const float> prefill(const Model& m, std::span<const int> tokens, KVCache& cache, PrefillState& ps,
                               RunState& s, std::vector<float>* all_logits = nullptr);

// Shared pieces of the batched blocks: Y[T, out] = X[T, in] · Wᵀ + b (X, Y: buffers of at least T rows);
// causal attention of T rows.
void project_rows(const Linear& l, std::span<const float> X, std::span<float> Y, std::size_t T, std::size_t in);
void attend_rows(const Config& c, std::size_t layer, std::size_t pos0, std::size_t T, const KVCache& cache,
                 PrefillState& ps);
void llama_block_prefill(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos0, std::size_t T,
                         KVCache& cache, PrefillState& ps);
void gpt2_block_prefill(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos0, std::size_t T,
                        KVCache& cache, PrefillState& ps);

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
