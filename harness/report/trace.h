// lmlab trace: what a model attends to and what it predicts, as a page for learners (trace.html).
//
// The engine does not keep attention weights (the fast path never forms them: tiled attention
// uses an online softmax). They are recomputed here from what forward() records and what the KV
// cache holds: for layer l, query head h at position i,
//     w[l][h][i][j] = softmax_j( q_h(i) · k_kvh(j) / sqrt(head_dim) ),  j = 0 .. i  (causal)
// with kv head kvh = h / (n_heads / n_kv_heads) (grouped-query attention), q and k after RoPE
// (LLaMA, Qwen2) or as projected (GPT-2), computed by the plain attention kernel.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/model.h"
#include "model/tokenizer/text_tokenizer.h"

namespace lmlab {

inline constexpr std::size_t kTraceTopK = 5;
// A heatmap draws at most this many rows and columns: past it, positions are grouped into blocks
// of ceil(n / kTraceDrawnPositions), a cell showing the largest weight in its block (the page says
// so). 100 generated tokens drew 28 MB and took 11 s to render before; now a head is at most 64^2/2 cells.
inline constexpr std::size_t kTraceDrawnPositions = 64;
// A page holds layers x heads x m(m+1)/2 cells, m = min(positions, kTraceDrawnPositions) (each an
// SVG rectangle with a hover text, ~100 bytes): beyond this many (too many layers x heads for one
// page) the request is refused.
inline constexpr std::size_t kMaxTraceCells = 300000;
// The weights kept in memory: layers x heads x positions^2 floats; beyond this the request is refused.
inline constexpr std::size_t kMaxTraceWeights = std::size_t{64} << 20;  // 256 MB of floats

struct TraceStep {
    int chosen = 0;                           // the greedy token (= top[0].first)
    std::vector<std::pair<int, double>> top;  // the kTraceTopK most likely next tokens, probability (softmax of the logits)
};

struct AttentionTrace {
    std::vector<int> tokens;    // the positions fed: the prompt, then every generated token but the last
    std::size_t n_prompt = 0;
    std::vector<TraceStep> steps;  // one per generated token: the prediction after the prompt, after each generated token
    // weights[l][h]: [n, n] row-major, n = tokens.size(); row i (query position i) holds columns
    // 0..i, which sum to 1; the columns after i (future positions) are 0
    std::vector<std::vector<std::vector<float>>> weights;
};

// Attention cells the page for this request would draw (layers x heads x m(m+1)/2, m the drawn positions).
std::size_t trace_cells(const Config& c, std::size_t n_prompt, std::size_t max_new_tokens);

// Greedy generation of up to max_new_tokens after the prompt (stopping after a stop id), with the
// top-k predictions at every step and the attention weights at every position. Throws ModelError
// for a request the model refuses (check_request) and HarnessError past kMaxTraceCells.
AttentionTrace trace_attention(const Model& m, std::span<const int> prompt, std::size_t max_new_tokens,
                               std::span<const int> stop_ids = {});

// The page: the prompt's tokens, the generated text, the top-5 table per step and, per layer and
// head, the attention heatmap labelled with the tokens. tok may be null (ids are shown instead).
std::string trace_html(const AttentionTrace& t, const Model& m, const TextTokenizer* tok, const std::string& model_name,
                       const std::string& prompt_text);

// A token as a label: its text with a space shown as ␣, a newline as ↵, a tab as ⇥, other control
// bytes and bytes that are not UTF-8 as \xNN; "#<id>" without a tokenizer or past its vocabulary.
std::string token_label(const TextTokenizer* tok, int id);

}  // namespace lmlab
