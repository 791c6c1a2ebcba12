// lmlab kernels: the numerical building blocks of a decoder-only transformer.
//
// Every kernel is a plain function over std::span: no I/O, no allocation, no knowledge of models
// or files. Shapes are passed explicitly; matrices are row-major with rows = outputs, exactly as
// PyTorch stores nn.Linear weights ([out, in]).
//
// Preconditions (span sizes) are checked once per call, in every build (kernels/check.h), and a
// violation throws std::invalid_argument naming the kernel: a wrong size is a bug in the caller,
// and it must never turn into an out-of-bounds read. The inner loops check nothing.
//
// Reductions (dot products, sums of squares, softmax denominators) accumulate in double. Why: a
// float accumulator loses about log2(n) bits over n terms, and the golden fixtures include
// 16384-long reductions; in double the only float32 rounding left is the final one, so our output
// sits at least as close to the float64 truth as PyTorch's own float32 result does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/threads.h"

namespace lmlab {

// ---- Linear algebra ---------------------------------------------------------------------------

// y = W · x.  W: [out, in] row-major, x: [in], y: [out].
// y[i] = Σ_j W[i*in + j] · x[j]. This is every nn.Linear of the model, one token at a time.
void matvec(std::span<const float> W, std::span<const float> x, std::span<float> y);

// y = W · x + b.  W: [out, in], b: [out] or empty (no bias), x: [in], y: [out]. F.linear.
// GPT-2 and Qwen2 give some projections a bias; LLaMA has none.
// The bias joins the sum before the one rounding to float (as PyTorch's addmm).
void linear(std::span<const float> W, std::span<const float> b, std::span<const float> x, std::span<float> y);

// y = a + b, elementwise. The residual connection (x + sublayer(x)), the bias add and GPT-2's
// learned position embedding (token row + position row) are all this. y may alias a or b.
void add(std::span<const float> a, std::span<const float> b, std::span<float> y);

// ---- Normalisation and probabilities -----------------------------------------------------------

// Numerically stable softmax: y[i] = exp(x[i] - max(x)) / Σ_j exp(x[j] - max(x)).
// Why subtract the max: exp(1e4) overflows float (max ≈ 3.4e38 ≈ e^88.7); shifting by the max
// makes the largest exponent exp(0) = 1 and changes nothing mathematically, since the common
// factor exp(-max) cancels between numerator and denominator. -inf entries (masked positions)
// get probability exactly 0. x and y may be the same span (in-place).
// Analogy: weighted load balancing — scores become shares that add up to 1.
void softmax(std::span<const float> x, std::span<float> y);

// RMSNorm (Zhang & Sennrich 2019): y[i] = x[i] / sqrt(mean(x²) + eps) · weight[i].
// Why eps: for an all-zero (or tiny) x the mean square is 0 and 1/sqrt(0) is +inf; eps bounds the
// scale at 1/sqrt(eps). x, weight, y: [n]; x and y may alias.
void rmsnorm(std::span<const float> x, std::span<const float> weight, float eps,
             std::span<float> y);

// LayerNorm (Ba et al. 2016), GPT-2's norm: y[i] = (x[i] - mean(x)) / sqrt(var(x) + eps) · weight[i] + bias[i],
// var the biased variance (divide by n), as F.layer_norm. Two passes (mean, then the squared
// deviations from it): the one-pass E[x²] - E[x]² cancels catastrophically for values far from 0.
// RMSNorm is LayerNorm without the mean subtraction and the bias. x, weight, bias, y: [n]; x and y may alias.
void layernorm(std::span<const float> x, std::span<const float> weight, std::span<const float> bias, float eps,
               std::span<float> y);

// ---- Rotary position embedding -----------------------------------------------------------------

// Which elements of a head form a rotation pair.
enum class RopeStyle {
    AdjacentPairs,  // (x[2i], x[2i+1]): Meta's LLaMA, llama2.c
    RotateHalf,     // (x[i], x[i + head_dim/2]): Hugging Face LLaMA, Qwen2
};

// RoPE scaling: how a long-context model stretches the rotation past the context it was first
// trained on (config.json's rope_scaling; transformers 4.46.3's ROPE_INIT_FUNCTIONS in
// modeling_rope_utils.py, mirrored kind by kind in rope_frequencies; docs/models.md explains each):
//   Linear  every frequency / factor: positions are squeezed (pos -> pos / factor, "position interpolation")
//   Dynamic NTK-aware: theta grows with the sequence length once it passes original_context, so
//           the low frequencies stretch most and the highest hardly at all; unscaled before that
//   Yarn    high frequencies kept, low ones / factor, a linear ramp between (beta_fast..beta_slow
//           rotations over original_context), and cos, sin times attention_factor
//   Llama3  wavelengths below original_context / high_freq_factor kept, above
//           original_context / low_freq_factor divided by factor, a smooth blend between
enum class RopeScalingKind { None, Linear, Dynamic, Yarn, Llama3 };
struct RopeScaling {
    RopeScalingKind kind = RopeScalingKind::None;
    double factor = 1.0;  // how many times longer the context becomes (>= 1)
    // the context the unscaled model was trained on: llama3's original_max_position_embeddings; for
    // dynamic and yarn max_position_embeddings (what transformers 4.46.3's formulas read)
    std::size_t original_context = 0;
    double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3: the band edges (wavelengths original_context / each)
    double beta_fast = 32.0, beta_slow = 1.0;              // yarn: the ramp's edges, in rotations over original_context
    double attention_factor = 1.0;                         // yarn: multiplies cos and sin (loaders fill 0.1 ln(factor) + 1)
};

// The rotation frequency of every pair of a head: inv_freq [head_dim / 2], the angle per position of
// pair i (unscaled: theta^(-2i / head_dim), each pair turning more slowly than the one before), as
// the scaling says. seq_len matters to Dynamic only: the length of the sequence the frequencies are
// for (unscaled up to original_context). Returns the factor cos and sin are multiplied by (Yarn's
// attention_factor, else 1). Computed in double; transformers computes it in float32 (its values
// are within a few float32 ulp of these: the kernel.rope_scaling stage).
double rope_frequencies(std::size_t head_dim, double theta, const RopeScaling& s, std::size_t seq_len,
                        std::span<double> inv_freq);

// RoPE (Su et al. 2021), in place. x: [n_heads * head_dim], every head rotated the same way.
// Pair i of a head is rotated by the angle pos · inv_freq[i] (rope_frequencies: one table per row,
// so a scaled kind's branches and ramps run once per row, not once per head and element):
//   (a, b) -> (a·cos - b·sin, a·sin + b·cos), cos and sin times attention_factor.
// The angle is formed in float64 and rounded only through cos/sin (kernels/rope.cpp): PyTorch and
// llama2.c form it in float32 and lose angle bits as pos grows, so from position 256 the stage
// holds this kernel to the float64 truth (harness/stages/stages.cpp).
// At pos 0 every angle is 0: RoPE is the identity (times attention_factor).
void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, std::span<const double> inv_freq,
          double attention_factor, RopeStyle style);
// Unscaled RoPE with base theta (inv_freq[i] = theta^(-2i / head_dim)): the kernel.rope stage's form.
void rope(std::span<float> x, std::size_t head_dim, std::size_t pos, float theta, RopeStyle style);

// RoPE with the rotation's cos and sin given, in place: whoever builds the cos/sin tables decides the
// angles and their precision. ONNX's RotaryEmbedding takes the tables as inputs (as Hugging Face's
// models build them once per sequence), which rope() cannot run: it forms its own angles.
//   x: [n_heads * head_dim]; cos, sin: [rot_dim / 2], rot_dim = 2·cos.size() <= head_dim.
// Pair i of every head turns by the angle whose cos and sin are cos[i], sin[i], with rope()'s
// arithmetic: (a, b) -> (a·cos - b·sin, a·sin + b·cos). The pairs lie within the first rot_dim
// elements of a head: AdjacentPairs (x[2i], x[2i+1]), RotateHalf (x[i], x[i + rot_dim/2]);
// elements from rot_dim on are left as they are (partial rotation: GPT-NeoX's rotary_pct, ONNX's
// rotary_embedding_dim). With rot_dim = head_dim and rope()'s cos/sin it gives rope()'s bits.
void rope_cos_sin(std::span<float> x, std::size_t head_dim, std::span<const float> cos, std::span<const float> sin,
                  RopeStyle style);

// ---- Activations -------------------------------------------------------------------------------

// SiLU (a.k.a. swish): y = x · sigmoid(x) = x / (1 + exp(-x)). x and y may alias.
void silu(std::span<const float> x, std::span<float> y);

// Sigmoid (the logistic function): y = 1 / (1 + exp(-x)), in (0, 1). Qwen2-MoE's shared-expert
// gate. Large negative x: exp(-x) overflows to inf and y is 0, never NaN. x and y may alias.
void sigmoid(std::span<const float> x, std::span<float> y);

// SwiGLU gate (Shazeer 2020): y[i] = silu(a[i]) · b[i]. In the FFN a = w1·x ("gate"), b = w3·x ("up").
// a, b, y: [n]; y may alias a or b.
void swiglu(std::span<const float> a, std::span<const float> b, std::span<float> y);

// GELU (Hendrycks & Gimpel 2016), GPT-2's activation, in its tanh approximation
// (F.gelu(x, approximate="tanh"), transformers' "gelu_new"):
//   y = 0.5 · x · (1 + tanh(sqrt(2/π) · (x + 0.044715 · x³)))
// Like ReLU for large |x| (≈ x for x ≫ 0, ≈ 0 for x ≪ 0) but smooth around 0. x and y may alias.
void gelu_tanh(std::span<const float> x, std::span<float> y);

// GELU, exact form (F.gelu(x), transformers' "gelu"): y = x · Φ(x) = 0.5 · x · (1 + erf(x / sqrt(2))).
// Differs from gelu_tanh by up to ~5e-4 around |x| ≈ 2: a model must use the form it was trained with.
void gelu_erf(std::span<const float> x, std::span<float> y);

// ---- Attention ---------------------------------------------------------------------------------

// Which cached positions a query reads, and where they sit. The default: every position
// 0 .. n_pos - 1, position t in row t.
//   first: a sliding window's first position (a query at position p under a window of W reads
//          p - W + 1 .. p: Mistral, Qwen2's use_sliding_window); 0 reads from the start.
//   ring:  a ring buffer of `ring` rows holds the positions, position t in row t % ring (a windowed
//          layer's KV cache keeps only what its queries can still see, model/kv_cache.h); 0: no
//          ring, position t in row t. Analogy: a circular log file overwriting its oldest lines.
struct KvPositions {
    std::size_t first = 0;
    std::size_t ring = 0;
};

// Single-query attention of one head over the cached positions first .. n_pos - 1.
//   q: [head_dim]; keys/values: position t of this head starts at keys[row(t) * stride] (stride is
//   the row length of the cache, e.g. kv_dim, so one head's slice is read straight out of the cache;
//   row(t) = t, or t % ring in a ring buffer); scores: [n_pos - first] scratch, on return holds the
//   attention probabilities; out: [head_dim].
//   scores[t] = (q · k_t) / sqrt(head_dim);  p = softmax(scores);  out = Σ_t p[t] · v_t.
// Why 1/sqrt(head_dim): q·k of unit-variance vectors has variance head_dim; scaling keeps scores
// O(1) so softmax does not saturate into a one-hot. A window starting at `first` is the same as
// masking the scores of positions < first with -inf (transformers' sliding-window mask), read or not.
// Analogy: a soft key-value lookup — every cached key matches a little, the best ones the most.
void attention(std::span<const float> q, std::span<const float> keys,
               std::span<const float> values, std::size_t n_pos, std::size_t stride,
               std::span<float> scores, std::span<float> out, KvPositions at = {});

// Index of the largest element; the first maximum wins on ties (as torch.argmax). NaN never wins.
// x must not be empty.
std::size_t argmax(std::span<const float> x);

// ---- Fast paths (kernels/fast.cpp) ----------------------------------------------------------------
// Each sits beside its plain kernel above (the readable reference, which a learner reads first) and
// is verified against it: unit tests (kernels/fast_test.cpp) and golden stages on the plain kernel's
// fixtures. Plain loops written so that the compiler vectorises them; no intrinsics.

// matvec with float accumulation: several independent partial sums per row, combined pairwise
// (what BLAS and PyTorch do): vectorisable, and about as accurate as PyTorch's float32.
void matvec_fast(std::span<const float> W, std::span<const float> x, std::span<float> y);

// Y = X · Wᵀ for a batch of rows (batched prefill: the prompt as a matrix).
//   X: [T, in], W: [out, in] (nn.Linear's layout), Y: [T, out]. Blocked over rows of W and X so
//   that a block of W is read from cache for several tokens. Row t of Y equals matvec_fast(W, X[t]).
void matmul_xwt(std::span<const float> X, std::span<const float> W, std::span<float> Y, std::size_t T,
                std::size_t in, std::size_t out);

// Single-query attention without a buffer of all scores (FlashAttention's online softmax, Dao et
// al. 2022): positions in tiles of kAttentionTile; a running max m and running sum l; when a tile
// raises the max, the partial output and l are rescaled by exp(m_old - m_new). Same arguments and
// result as attention() (no scores output). Tiles start at `first`: a window's tiles are the same
// in a ring and in a paged cache, so both give the same bits.
inline constexpr std::size_t kAttentionTile = 32;
void attention_tiled(std::span<const float> q, std::span<const float> keys, std::span<const float> values,
                     std::size_t n_pos, std::size_t stride, std::span<float> out, KvPositions at = {});

// attention_tiled over a paged KV cache (model/serve/paged_kv.h): the cache is a pool of pages of
// page_size positions, and a sequence's positions are spread over the pages its table names:
// position t is row t % page_size of page page_table[t / page_size], i.e. keys[(page·page_size +
// row)·stride]. keys/values: the whole pool of one layer, offset to this head; page_table: at least
// ceil(n_pos / page_size) entries. Same tiles, same arithmetic, same bits as attention_tiled on the
// same positions stored contiguously: both hand each tile to one routine as a list of row pointers,
// so a tile that straddles two pages (page_size not a multiple of kAttentionTile) is read in place
// like any other. Analogy: virtual memory — the page table maps a sequence's logical positions to
// physical pages. first: a sliding window's first position (positions first .. n_pos - 1 are read,
// in tiles from first, as attention_tiled's); the table's entries for pages wholly before it are
// never read (a windowed cache has given those pages back).
void attention_paged(std::span<const float> q, std::span<const float> keys, std::span<const float> values,
                     std::span<const std::uint32_t> page_table, std::size_t page_size, std::size_t n_pos,
                     std::size_t stride, std::span<float> out, std::size_t first = 0);

// Threads for the fast kernels (kernels/threads.h: a team of workers over output rows and over
// heads, sleeping between loops): results are bit-identical for any count, since every output is
// computed by one thread in the same order. Default 1.

// ---- Int8 weights: Q8_0 (kernels/quant.cpp) ---------------------------------------------------------
// Why: a matvec reads every weight once per token, so its speed is bound by memory; int8 weights
// are a quarter of float32's bytes. Q8_0 is llama2.c's runq.c scheme (and llama.cpp's Q8_0):
// symmetric, per group of `group` consecutive elements (default 64), one float scale per group:
//   scale = max|x| / 127,  q = round(x / scale) in [-127, 127],  x ≈ q · scale.
// Groups, because one outlier then only coarsens its own group's scale. The activations are
// quantized the same way at run time, so a matvec is int8 · int8 products summed exactly in int32
// per group, then scaled: y[i] = Σ_g (Σ_k xq·Wq) · Ws[i,g] · xs[g]. The arithmetic is runq.c's
// operation for operation (float division, C's round(), float accumulation over groups), so the
// same inputs give the same bits. Lengths must be whole groups: a length that is not a multiple of
// `group` throws std::invalid_argument (runq.c would silently drop the tail).

// Largest group whose int32 sum cannot overflow: 127 · 127 · group < 2^31.
inline constexpr std::size_t kQ8MaxGroup = 133144;

// x [n] -> q [n] int8, scales [n / group]. Per group: wmax = max|x|, scale = wmax / 127 (float),
// q = round(x / scale) with C's round() (halves away from zero: 2.5 -> 3, -0.5 -> -1; torch.round
// gives 2 and -0), clamped to ±127. Defined where runq.c is not: an all-zero group (scale 0;
// runq.c divides 0 by 0) gets q = 0; a group holding inf or NaN gets scale NaN and q = 0, so the
// NaN reaches every output that uses it.
void quantize_q8_0(std::span<const float> x, std::size_t group, std::span<std::int8_t> q, std::span<float> scales);

// x[i] = q[i] · scales[i / group]. q, x: [n]; scales: [n / group]. (runq.c's dequantize, used for
// the token embedding rows.)
void dequantize_q8_0(std::span<const std::int8_t> q, std::span<const float> scales, std::size_t group,
                     std::span<float> x);

// y = W · x on quantized operands. Wq: [out, in] int8, Ws: [out, in / group] (row i's scales),
// xq: [in] int8, xs: [in / group], y: [out]. Per row: int32 sum of q products per group, then
// val += (float)ival · Ws · xs in a float accumulator, groups in order (runq.c's matmul).
void matvec_q8_0(std::span<const std::int8_t> Wq, std::span<const float> Ws, std::span<const std::int8_t> xq,
                 std::span<const float> xs, std::size_t group, std::span<float> y);

}  // namespace lmlab
