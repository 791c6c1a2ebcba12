// Recording a forward pass: every intermediate of every layer, copied out of RunState between blocks,
// for the harness's stages, lmlab trace and the tests. The arithmetic records nothing itself (llm.c's
// way: the forward keeps its activations in its own buffers; a caller reads them); this is
// forward_rows()'s loop with a copy after each block, by the family's list of intermediates
// (model/family.h). Never on the generation path: the copies cost time and memory.
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

#include "model/forward.h"

namespace lmlab {

// One layer's intermediates, by name (the family's list), each [T, width] for the T rows recorded.
using LayerRecord = std::map<std::string, std::vector<float>>;

// A whole forward pass: the embedding, every layer, the final norm and the logits of every row.
struct Trace {
    std::vector<float> embedding;     // [T, dim]
    std::vector<LayerRecord> layers;  // [n_layers]
    std::vector<float> final_norm;    // [T, dim]
    std::vector<float> logits;        // [T, vocab]
};

// The family's intermediates of rows [0, T) of s, as the block just left them.
LayerRecord record_layer(const Model& m, const RunState& s, std::size_t T);

// forward_rows() on tokens (row t at cache.pos(t)), recording every block, then the final norm and
// the logits of every row. The same arithmetic as forward_rows(): the copies sit between the steps.
Trace traced_forward(const Model& m, std::span<const int> tokens, RowCache& cache, RunState& s);

// Token by token from position 0 (decode: T = 1 at each step, a fresh contiguous cache of
// tokens.size() positions), the steps' traces stacked: every intermediate [n, width].
Trace traced_decode(const Model& m, std::span<const int> tokens);

// b's rows appended to a's (a trace of more positions).
void append_rows(Trace& a, const Trace& b);

}  // namespace lmlab
