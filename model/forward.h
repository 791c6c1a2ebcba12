// The forward pass: T rows (tokens) at a time, decode being T = 1.
//
//   tokens ─► embed ─► [ block 0 ] ─► … ─► [ block L-1 ] ─► final norm ─► classifier ─► logits
//
// One code path for every use: a prompt (T tokens of one sequence, prefill), one new token
// (decode, T = 1), and a continuous-batching step (each row its own sequence, model/serve/batch.h).
// llama.cpp builds one graph for prompt and decode the same way. Each projection is one
// X[T, in] · Wᵀ (matmul_xwt: a block of W is read once for all rows; its row t is bit for bit
// matvec_fast of that row, so T never changes a row's numbers), and each row attends over its own
// positions in the KV cache.
//
// Each family's block is in its own file, readable top to bottom (model/families/):
//   llama.cpp  x ─► RMSNorm ─► attention (RoPE on q, k) ─► + x ─► h ─► RMSNorm ─► SwiGLU FFN ─► + h
//   gpt2.cpp   x ─► LayerNorm ─► attention (fused qkv)  ─► + x ─► h ─► LayerNorm ─► GELU MLP   ─► + h
//   moe.cpp    the LLaMA block whose feed-forward is a mixture of experts (Qwen2-MoE, Mixtral)
// The family row (model/family.h) says which block a model runs; this file holds the pieces every
// block shares and the loop around them.
//
// The activations stay in RunState after each block (llm.c's way: the forward keeps its
// activations), one buffer per intermediate; the harness copies them out between blocks
// (model/record.h). Nothing in the arithmetic records anything.
//
// No allocation happens per token: every buffer lives in RunState, made once for at most max_rows rows.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"

namespace lmlab {

// The activations of up to max_rows rows through one block, each intermediate in its own buffer
// [max_rows, width] (row t at t * width), named as the golden fixtures name them. A block reads x
// and writes out; forward() then swaps them, so x is the next block's input.
struct RunState {
    RunState(const Config& c, std::size_t max_rows = 1);
    std::size_t max_rows;

    // ---- the block's intermediates, in pipeline order (intermediate_buffers() lists them) -----------
    std::vector<float> x;          // "in"        [dim] the residual stream entering the block
    std::vector<float> attn_norm;  // "attn_norm" [dim] its normalised copy, the attention's input
    std::vector<float> q;          // "q"         [n_heads*head_dim] queries of all heads (after RoPE)
    std::vector<float> k, v;       // "k", "v"    [kv_dim] this row's key (after RoPE) and value
    std::vector<float> heads;      // "heads"     [n_heads*head_dim] every head's attention output, side by side
    std::vector<float> attn_out;   // "attn_out"  [dim] after the output projection
    std::vector<float> h;          // "h"         [dim] x + attn_out: the first residual
    std::vector<float> ffn_norm;   // "ffn_norm"  [dim] the feed-forward's input
    std::vector<float> gate;       // "ffn_gate"  [ffn] SwiGLU's w1·x (MoE: scratch of the expert being run)
    std::vector<float> up;         // "ffn_up"    [ffn] w3·x (GPT-2: c_fc·x)
    std::vector<float> act;        // "ffn_act"   [ffn] silu(gate)·up, or gelu(up)
    std::vector<float> router_logits;   // "router_logits"  [n_experts] MoE: the router's score of every expert
    std::vector<int> expert_ids;        // "experts"        [top_k] the chosen experts, most probable first
    std::vector<float> expert_weights;  // "expert_weights" [top_k] their weights
    std::vector<float> shared_out;      // "shared_out"     [dim] Qwen2-MoE: the gated shared expert's output
    std::vector<float> ffn_out;    // "ffn_out"   [dim] the feed-forward's output
    std::vector<float> out;        // "out"       [dim] h + ffn_out: the block's output

    // ---- after the last block ------------------------------------------------------------------
    std::vector<float> final_norm;  // [max_rows, dim] the final norm of the rows logits were asked for
    std::vector<float> logits;      // [vocab] forward()'s and prefill()'s last row

    // ---- scratch -------------------------------------------------------------------------------
    std::vector<float> qkv;           // [max_rows, 3*dim] GPT-2's fused projection before the split
    std::vector<float> router_probs;  // [max_rows, n_experts] softmax of the router's scores
    std::vector<int> expert_order;    // [n_experts] the top-k selection's sort
    std::vector<float> expert_out;    // [dim] one expert's output
    std::vector<float> scores;        // [max_seq_len] the plain attention kernel's probabilities
    std::vector<double> inv_freq;     // [head_dim / 2] one row's RoPE frequencies (rope_frequencies, kernels.h)
    // int8 weights: the activation entering a matvec, quantized at run time (runq.c's s->xq, s->xs),
    // sized for the widest input and the smallest group (1)
    std::vector<std::int8_t> xq;
    std::vector<float> xs;
    // weights in a ggml type (GGUF files): the plain path's dequantized row, the fast path's
    // quantized activation (kernels/ggml_quant.h's scratch), sized for the widest input
    std::vector<float> gg_row;
    std::vector<std::uint8_t> gg_act;
};

// The intermediates RunState holds, by the names the fixtures and the families use: the one list
// of intermediate names on the C++ side. row(s, c, t) copies row t (expert ids as floats).
struct IntermediateBuffer {
    const char* name;
    std::vector<float> (*row)(const RunState& s, const Config& c, std::size_t t);
};
const std::vector<IntermediateBuffer>& intermediate_buffers();
const IntermediateBuffer& intermediate_buffer(const std::string& name);  // ModelError for an unknown name

// Where the T rows of a forward keep their keys and values, and what each row attends over. Two
// kinds: one sequence in a contiguous KVCache, row t at position pos0 + t (prefill, decode), or each
// row its own sequence and position in a PagedKVCache (continuous batching, model/serve/batch.cpp).
// The blocks are written once against this; only where k and v go and come from differs.
class RowCache {
public:
    virtual ~RowCache() = default;
    virtual std::size_t pos(std::size_t row) const = 0;  // the row's position in its sequence
    // The sequence length dynamic RoPE scaling rotates the row for: max(its sequence's prompt length,
    // pos(row) + 1), what transformers' generate() uses (kv_cache.h, set_prompt_length).
    virtual std::size_t seq_len(std::size_t row) const = 0;
    // k, v [kv_dim] of `row` into `layer`'s cache at pos(row)
    virtual void append(std::size_t layer, std::size_t row, std::span<const float> k, std::span<const float> v) = 0;
    // one head of one row: out [head_dim] = attention of q [head_dim] over the positions pos(row) sees
    // of kv head `kv_head` of the row's sequence in `layer`: 0 .. pos(row), or under the layer's sliding
    // window W (Config::window) pos(row) - W + 1 .. pos(row) (causal: later rows are not read). scores
    // [max_seq_len]: the plain kernel's scratch (the fast kernels need none).
    virtual void attend(std::size_t layer, std::size_t row, std::size_t kv_head, std::span<const float> q,
                        std::span<float> out, std::span<float> scores) const = 0;
};

// One sequence in a contiguous KVCache: row t at position pos0 + t.
class ContiguousRows final : public RowCache {
public:
    ContiguousRows(KVCache& cache, std::size_t pos0, std::size_t head_dim);
    std::size_t pos(std::size_t row) const override { return pos0_ + row; }
    std::size_t seq_len(std::size_t row) const override { return std::max(cache_.prompt_length(), pos(row) + 1); }
    void append(std::size_t layer, std::size_t row, std::span<const float> k, std::span<const float> v) override;
    void attend(std::size_t layer, std::size_t row, std::size_t kv_head, std::span<const float> q, std::span<float> out,
                std::span<float> scores) const override;

private:
    KVCache& cache_;
    std::size_t pos0_, head_dim_;
};

// ---- The steps ----------------------------------------------------------------------------------

// x [dim] = token's embedding row (+ GPT-2's learned position row). Throws ModelError for a token
// id outside the vocabulary or (learned positions) a position past the table.
void embed(const Model& m, int token, std::size_t pos, std::span<float> x);

// The model's block `layer` (its family's block, model/family.h) on rows [0, T) of s.x -> s.out.
void block(const Model& m, std::size_t layer, std::size_t T, RowCache& cache, RunState& s);

// The final norm of one row: x [dim] -> out [dim] (RMSNorm or LayerNorm, as the config says).
void final_norm(const Model& m, std::span<const float> x, std::span<float> out);

// The classifier for n rows at once: xn [n, dim] (already normalised) -> logits [n, vocab]. On the
// fast path one matmul_xwt, so the classifier (a small model's largest matrix) is read once for all.
void classifier_rows(const Model& m, std::span<const float> xn, std::size_t n, std::span<float> logits, RunState& s);

// The logits of the rows `rows` of s.x (the last block's output, after the swap): their final
// norms into s.final_norm (compacted: entry i is rows[i]), then classifier_rows into logits [n, vocab].
void head(const Model& m, std::span<const std::size_t> rows, RunState& s, std::span<float> logits);

// ---- The whole model ------------------------------------------------------------------------------

// tokens[t] at position cache.pos(t), t < T <= s.max_rows, through embed and every block (each row's
// keys and values appended to the cache). The output of the last block is then in s.x. Throws
// ModelError for a token id outside the vocabulary, a position past the context, or too many rows.
void forward_rows(const Model& m, std::span<const int> tokens, RowCache& cache, RunState& s);

// One token at position pos (== cache.length()): returns the logits ([vocab], a view of s.logits).
std::span<const float> forward(const Model& m, int token, std::size_t pos, KVCache& cache, RunState& s);

// T tokens at positions cache.length() .. + T - 1, in chunks of at most s.max_rows rows (the same
// bits as one call: a row's numbers never depend on the other rows): returns the last row's logits
// (a view of s.logits). all_logits (optional): every row's, [T, vocab] (speculative decoding
// verifies k + 1 rows at once). A long prompt in chunks keeps RunState (every intermediate of
// max_rows rows) and a windowed layer's ring (window + max_rows - 1 rows) bounded.
inline constexpr std::size_t kPrefillChunk = 256;  // the rows Session and the stages give a prompt at once
std::span<const float> prefill(const Model& m, std::span<const int> tokens, KVCache& cache, RunState& s,
                               std::vector<float>* all_logits = nullptr);

// ---- Pieces the blocks share ----------------------------------------------------------------------

// Which kernels the forward pass runs: the plain ones (kernels.h's first part: the readable
// reference, double accumulators, one row at a time) or the fast ones beside them (float partial
// sums, matmul_xwt over the rows, tiled attention, threads), each verified against the plain one.
// Process-wide; the default is Fast. `--plain` runs everything on the plain kernels.
enum class KernelPath { Plain, Fast };
void set_kernel_path(KernelPath p);
KernelPath kernel_path();

// Y[T, out] = X[T, in] · Wᵀ + b, l's weights [out, in] (+ [out]), on the chosen path: plain, linear()
// per row; fast, one matmul_xwt. An int8 layer (l.q8 set) takes runq.c's path whatever the kernel path:
// each row quantized into s.xq/s.xs, then matvec_q8_0, then the float bias. X and Y hold exactly T
// rows (rows(buffer, T, width) of RunState's buffers).
void project_rows(const Linear& l, std::span<const float> X, std::span<float> Y, std::size_t T, RunState& s);

// y = W x for an int8 matrix: x quantized into the scratch xq, xs (runq.c: quantize(&s->xq, x)
// before every matmul; each at least x.size() long), then the int8 matvec.
void matvec_q8(const QuantizedMatrix& w, std::span<const float> x, std::span<float> y, std::span<std::int8_t> xq,
               std::span<float> xs);

// Multi-head attention of rows [0, T): s.q (already rotated) over each row's cached positions, into
// s.heads. Query head h reads kv head h / (n_heads / n_kv_heads): grouped-query attention, several
// query heads share one kv head (n_kv_heads == n_heads: one each). Rows × heads are independent:
// threads split them on the fast path, each result computed by one thread alone.
void attend_rows(const Config& c, std::size_t layer, std::size_t T, const RowCache& cache, RunState& s);

// Row t of a [rows, n] buffer.
inline std::span<float> row(std::vector<float>& buf, std::size_t t, std::size_t n) {
    return std::span<float>(buf).subspan(t * n, n);
}
inline std::span<const float> row(const std::vector<float>& buf, std::size_t t, std::size_t n) {
    return std::span<const float>(buf).subspan(t * n, n);
}
// The first T rows of a [rows, n] buffer.
inline std::span<float> rows(std::vector<float>& buf, std::size_t T, std::size_t n) {
    return std::span<float>(buf).first(T * n);
}
inline std::span<const float> rows(const std::vector<float>& buf, std::size_t T, std::size_t n) {
    return std::span<const float>(buf).first(T * n);
}

}  // namespace lmlab
