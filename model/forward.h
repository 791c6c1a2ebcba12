// The forward pass, one token at a time, as explicit functions:
//
//   token ─► embed ─► [ block 0 ] ─► … ─► [ block L-1 ] ─► head (final norm, classifier) ─► logits
//
// Each family has its own block in its own file, readable top to bottom:
//   model/llama.cpp  x ─► RMSNorm ─► attention (RoPE on q, k) ─► + x ─► h ─► RMSNorm ─► SwiGLU FFN ─► + h
//   model/gpt2.cpp   x ─► LayerNorm ─► attention (fused qkv)  ─► + x ─► h ─► LayerNorm ─► GELU MLP   ─► + h
//   model/moe.cpp    the feed-forward of Qwen2-MoE and Mixtral (llama.cpp's block otherwise): a router
//                    picks top-k of n SwiGLU experts per token, their outputs summed with its weights
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

#include "model/kv_cache.h"
#include "model/model.h"

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
    std::vector<float> gate;     // [ffn_dim] LLaMA's w1 x (then silu(w1 x) * (w3 x)); MoE: [max(ffn_dim, shared_ffn_dim)]
    std::vector<float> up;       // [ffn_dim] LLaMA's w3 x, GPT-2's c_fc x (MoE: as gate)
    std::vector<float> act;      // [ffn_dim] the activation: silu(gate) * up, or gelu(up) (MoE: as gate)
    std::vector<float> ffn_out;  // [dim]
    // mixture of experts only (empty otherwise)
    std::vector<float> router_logits;   // [n_experts] the router's score of every expert
    std::vector<float> router_probs;    // [n_experts] softmax of the scores
    std::vector<int> expert_order;      // [n_experts] scratch of the top-k selection
    std::vector<int> expert_ids;        // [top_k] the chosen experts, most probable first
    std::vector<float> expert_weights;  // [top_k] their weights (renormalised when the config says so)
    std::vector<float> expert_out;      // [dim] one expert's output
    std::vector<float> shared_out;      // [dim] Qwen2-MoE: sigmoid(shared_gate x) * shared_expert(x)
    std::vector<float> scores;   // [max_seq_len] attention probabilities of one head
    std::vector<float> logits;   // [vocab_size]
    // int8 models only: the activation entering a matvec, quantized at run time (runq.c's s->xq/hq).
    // Sized for the widest input (dim, n_heads*head_dim or ffn_dim) and the smallest group (1).
    std::vector<std::int8_t> xq;  // [widest input]
    std::vector<float> xs;        // [widest input / group]
};

// Every intermediate of one token through one block, named by role. A family fills the fields
// its pipeline has (LLaMA has a gate, GPT-2 does not); layer_trace_fields() lists them.
// Mixture of experts: router_logits [n_experts], experts [top_k] (expert ids as floats, most
// probable first), expert_weights [top_k], shared_out [dim] (Qwen2-MoE) instead of ffn_gate/up/act.
struct LayerTrace {
    std::vector<float> in, attn_norm, q, k, v, heads, attn_out, h, ffn_norm, ffn_gate, ffn_up, ffn_act, ffn_out, out;
    std::vector<float> router_logits, experts, expert_weights, shared_out;
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
// The final norm alone: x [dim] -> out [dim] (RMSNorm or LayerNorm, as the family says).
void final_norm(const Model& m, std::span<const float> x, std::span<float> out);
// head()'s classifier for n rows at once: xn [n, dim] (already normalised) -> logits [n, vocab].
// Each row's bits equal head()'s on it; on the fast path it is one matmul_xwt, so the classifier
// (a small model's largest matrix) is read once for all rows.
void classifier_rows(const Model& m, std::span<const float> xn, std::size_t n, std::span<float> logits, RunState& s);

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
// y = W x for an int8 matrix: x quantized into the scratch xq, xs (runq.c: quantize(&s->xq, x)
// before every matmul; each at least x.size() long), then the int8 matvec.
void matvec_q8(const QuantizedMatrix& w, std::span<const float> x, std::span<float> y, std::span<std::int8_t> xq,
               std::span<float> xs);

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
    RunState one;  // the pieces that run row by row: int8 matvecs (its xq, xs), MoE feed-forwards (moe.cpp)
};

// Runs tokens at positions cache.length() .. + T - 1 (T <= ps.max_tokens); returns the logits of
// the last token (a view of s.logits). all_logits (optional, [T, vocab]): every row's logits, the
// classifier then run as one matmul_xwt over the rows (speculative decoding verifies k+1 rows at once).
std::span<const float> prefill(const Model& m, std::span<const int> tokens, KVCache& cache, PrefillState& ps,
                               RunState& s, std::vector<float>* all_logits = nullptr);

// Where the T rows of a batched block keep their keys and values, and what each row attends over.
// Two kinds: one sequence in a contiguous KVCache, row t at position pos0 + t (prefill), or each
// row its own sequence and position in a PagedKVCache (continuous batching, model/batch.cpp).
// The batched blocks below are written once against this; only where k/v go and come from differs.
class RowCache {
public:
    virtual ~RowCache() = default;
    virtual std::size_t pos(std::size_t row) const = 0;  // the row's position in its sequence
    // k, v [kv_dim] of `row` into `layer`'s cache at pos(row)
    virtual void append(std::size_t layer, std::size_t row, std::span<const float> k, std::span<const float> v) = 0;
    // one head of one row: out [head_dim] = attention of q [head_dim] over positions 0 .. pos(row)
    // of kv head `kv_head` of the row's sequence in `layer` (causal: later rows are not read)
    virtual void attend(std::size_t layer, std::size_t row, std::size_t kv_head, std::span<const float> q,
                        std::span<float> out) const = 0;
};

// Shared pieces of the batched blocks: Y[T, out] = X[T, in] · Wᵀ + b (X, Y: buffers of at least T
// rows; an int8 layer runs project()'s int8 matvec row by row with ps's scratch); causal attention of T rows.
void project_rows(const Linear& l, std::span<const float> X, std::span<float> Y, std::size_t T, std::size_t in,
                  PrefillState& ps);
void attend_rows(const Config& c, std::size_t layer, std::size_t T, const RowCache& cache, PrefillState& ps);
void llama_block_rows(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t T, RowCache& cache,
                      PrefillState& ps);
void gpt2_block_rows(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t T, RowCache& cache,
                     PrefillState& ps);
// The family's batched block on rows ps.x[0..T) (block()'s one switch, for T rows).
void block_rows(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, PrefillState& ps);

// ---- Per family (model/llama.cpp, model/gpt2.cpp) ---------------------------------------------

// LLaMA's attention sub-block on xn ([dim], already normalised) -> out [dim]:
//   q = RoPE(wq xn), k = RoPE(wk xn), v = wv xn; (k, v) appended to the cache; attend; out = wo · heads.
void llama_attention(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos,
                     std::span<const float> xn, KVCache& cache, RunState& s, std::span<float> out);
// LLaMA's SwiGLU feed-forward: out = w2 · (silu(w1 xn) * (w3 xn)).  xn: [dim] -> out: [dim]
void llama_ffn(const Config& c, const LayerWeights& w, std::span<const float> xn, RunState& s, std::span<float> out);

// ---- Mixture of experts (model/moe.cpp) ---------------------------------------------------------

// What moe_ffn decided for one token (copies, for tests and the harness).
struct MoeTrace {
    std::vector<float> router_logits;   // [n_experts]
    std::vector<float> experts;         // [top_k] chosen expert ids (as floats), most probable first
    std::vector<float> expert_weights;  // [top_k]
    std::vector<float> shared_out;      // [dim] Qwen2-MoE's gated shared expert; empty without one
};

// The sparse MoE feed-forward of one token, transformers' Qwen2MoeSparseMoeBlock / MixtralSparseMoeBlock:
//   p = softmax(router xn) (float32);  top_k experts by p (exact ties: the lower id first; torch's order is unspecified);
//   weights = p of those (/ their sum when norm_topk_prob);
//   out = Σ over the chosen experts IN EXPERT-ID ORDER of weight · expert(xn)   (transformers' index_add_ loop)
//       [+ sigmoid(shared_gate xn) · shared_expert(xn)]                          (Qwen2-MoE)
// xn: [dim] -> out: [dim]. Leaves the routing in s.router_logits/router_probs/expert_ids/expert_weights.
// forced_experts (harness only, [top_k] ids): use these instead of the top-k (teacher forcing at a
// routing near-tie); the weights are still our probabilities of them.
void moe_ffn(const Config& c, const LayerWeights& w, std::span<const float> xn, RunState& s, std::span<float> out,
             MoeTrace* trace = nullptr, std::span<const int> forced_experts = {});
void llama_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos, std::span<float> x,
                 KVCache& cache, RunState& s, LayerTrace* t);
void gpt2_block(const Config& c, const LayerWeights& w, std::size_t layer, std::size_t pos, std::span<float> x,
                KVCache& cache, RunState& s, LayerTrace* t);

// dst = src when a trace is being recorded (copies: tests and the harness only).
inline void record(LayerTrace* t, std::vector<float> LayerTrace::*field, std::span<const float> src) {
    if (t) (t->*field).assign(src.begin(), src.end());
}

}  // namespace lmlab
