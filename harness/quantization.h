// Where a quantized model parts from the float one, and by how much: `lmlab verify --model Q
// --against F` (or `--quantize TYPE`: the model against its own float weights). Both run on the same
// held-out text in lmlab's engine; each is checked against its reference by the stages, so what
// differs here is the quantization, not the engine.
//
// Per layer and per tensor kind (attn_q, attn_k, ..., ffn_down, and token_embd, output), at the
// tensor's output y = W·x (x: what the tensor multiplies, an intermediate of the float run, e.g.
// attn_norm for attn_q; the MoE experts' down projections read their expert's activation, recomputed):
//   added      |W_q·x_f - W_f·x_f| / |W_f·x_f|   this tensor's own rounding, on the float model's input
//   inherited  |W_f·x_q - W_f·x_f| / |W_f·x_f|   what arrives from upstream: the quantized model's input
//   total      |W_q·x_q - W_f·x_f| / |W_f·x_f|   both: what the quantized model computes there
// (|·| the root of the sum of squares over every row and element: relative RMS). llama.cpp's
// llama-perplexity --kl-divergence gives one number for a whole model; these say which tensor of
// which layer the number comes from. Analogy: a profiler's self time (added) against its total time.
// Per layer, the block's output both ways (the quantized block on the float model's input, the
// teacher-forced "added", and free-running, "total"), as `lmlab check` localises a diverging layer.
//
// Over the whole text, llama-perplexity's numbers: KL(P_float || P_quant) of the next-token
// distributions at every scored position (mean, median, p99, max), top-1 agreement, each model's
// perplexity. A text longer than the context is cut into chunks of ctx tokens as llama-perplexity
// does (each chunk starting with BOS when the model uses one, only its second half scored, so that
// every scored token has at least ctx/2 tokens of context); a text that fits is one chunk, every
// position scored.
#pragma once

#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"

namespace lmlab {

// One tensor kind of one layer (layer kGlobal: token_embd, output).
struct TensorError {
    static constexpr std::size_t kGlobal = std::numeric_limits<std::size_t>::max();
    std::size_t layer = kGlobal;
    std::string kind;          // llama.cpp's name without blk.N. and .weight: "attn_q", "ffn_down_exps"
    std::string type;          // the tensor's type in the quantized model: "Q4_K", "F16", "F32", "int8 (runq.c, group 64)"
    std::string against_type;  // and in the model it is compared with
    double added = 0, inherited = 0, total = 0;  // relative RMS errors (see above)
    std::size_t weights = 0;   // elements (every expert's, for a per-expert kind)
    std::size_t bytes = 0;     // of the quantized model's tensor
};

// The block's output ("out") of one layer against the float model's.
struct LayerError {
    double added = 0;  // teacher-forced: the quantized block on the float model's input
    double total = 0;  // free-running
};

// The tensors of one type of the quantized model, summed.
struct TypeSummary {
    std::string type;
    std::size_t tensors = 0, weights = 0, bytes = 0;
    double bits_per_weight() const { return weights ? 8.0 * static_cast<double>(bytes) / static_cast<double>(weights) : 0; }
    double worst_added = 0;    // the largest `added` of its tensors
    std::string worst;         // "blk.3.ffn_down"
};

struct QuantReport {
    std::string model, against;  // the two models' sources (and the in-memory quantization, if any)
    std::string model_label, against_label;  // short: "stories260K.gguf as Q4_K", "stories260K.gguf"
    std::size_t layers = 0;
    std::vector<std::string> kinds;  // the per-layer kinds present, in pipeline order (the heatmap's columns)
    std::vector<TensorError> tensors;
    std::vector<LayerError> layer_out;  // [layers]
    std::size_t analysed_rows = 0;      // text positions the per-tensor errors are measured over
    // over the text
    std::size_t text_tokens = 0, ctx = 0, chunks = 0;
    std::vector<std::size_t> positions;  // the scored positions (index into the text)
    std::vector<double> kl;              // KL(P_against || P_model) at each, nats
    std::vector<int> top1_same;          // 1 where both models' most likely next token agree
    double kl_mean = 0, kl_median = 0, kl_p99 = 0, kl_max = 0;
    double top1_agreement = 0;              // fraction of scored positions
    double ppl_model = 0, ppl_against = 0;  // exp(mean -log p(next token)) over the scored positions
    double logits_rel_rms = 0;              // |logits_q - logits_f| / |logits_f| over every scored position
    std::size_t bytes_model = 0, bytes_against = 0;  // weight_bytes()
    std::vector<TypeSummary> types;                  // of the quantized model's matrices, by bytes, largest first
};

// Both models over `text` (token ids; at least 2), chunks of ctx tokens (0: the models' context),
// the per-tensor errors over the first chunk's first `analysed_rows` positions (0: all of it).
// bos: the id a chunk starts with when the text is cut (-1: the model uses none). HarnessError
// when the two models are not the same architecture and shape (naming the first field that differs)
// or the text does not fit.
QuantReport compare_quantized(const Model& model, const Model& against, std::span<const int> text, std::size_t ctx,
                              std::size_t analysed_rows, int bos);

nlohmann::json quant_report_json(const QuantReport& r);
std::string quant_report_markdown(const QuantReport& r);
std::string quant_report_html(const QuantReport& r);  // harness/report/quant_report.cpp
// One line for stdout: "verify --against: stories260K.gguf as Q4_K vs stories260K.gguf: KL mean
// 0.0123 (p99 0.0712), top-1 97.1%, perplexity 5.21 vs 5.05 (+3.2%); most error added at blk.4.ffn_down"
std::string quant_report_line(const QuantReport& r);

// The label of a matrix's storage: "Q4_K" (ggml), "int8 (runq.c, group 64)", "F32".
std::string storage_label(const Linear& l);

}  // namespace lmlab
