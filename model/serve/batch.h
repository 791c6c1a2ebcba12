// One batched forward over many sequences at once (continuous batching's step, model/serve/scheduler.h).
//
// The rows of a step may belong to different sequences at different positions: a decode token of
// each running sequence, plus a chunk of a newcomer's prompt. Every projection is still one
// X[rows, in] · Wᵀ over all of them (the weights are read once per step, not once per sequence),
// and each row attends over its own sequence's keys and values in the paged cache. On the fast
// path, every row's numbers are bit-identical to running its sequence alone (matmul_xwt's row t is
// matvec_fast of that row; attention_paged is attention_tiled's arithmetic): batching changes the
// speed, never a bit of any sequence's output.
#pragma once

#include <span>
#include <vector>

#include "model/forward.h"
#include "model/serve/paged_kv.h"

namespace lmlab {

struct BatchRow {
    std::size_t seq = 0;  // the sequence's id in the paged cache
    int token = 0;
    std::size_t pos = 0;  // its position: the sequence's length before this step + earlier rows of it in the step
    bool logits = false;  // compute this row's logits (a sequence's last row of the step)
};

// Runs the rows (at most s.max_rows) through the model, appending every row's k, v to its
// sequence, then gives back the pages that fell out of the sequences' windows (PagedKVCache::slide).
// logits: [rows with .logits, vocab] in row order. Everything is checked before anything
// is written: the fast kernel path (the plain one has no paged attention), token ids, positions
// (each row continues its sequence), the context limit, and enough free pages for the step.
void forward_batch(const Model& m, std::span<const BatchRow> rows, PagedKVCache& kv, RunState& s,
                   std::vector<float>& logits);

}  // namespace lmlab
