// The KV cache: every layer's keys and values for every position seen so far.
//
// Analogy: memoised request results. Attention at position t needs the keys and values of all
// positions <= t; they never change once computed, so each is computed once and stored here.
//
// Layout: keys[layer][position][kv_dim] (values alike), preallocated to max_seq_len so the
// per-token loop never allocates. Invariants, checked on every append:
//   - a layer may only append at position == its current length (no gaps, no overwrites);
//   - no position >= max_seq_len (the context is full: a clear error, not a buffer overrun).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "model/model.h"  // ModelError

namespace lmlab {

class KVCache {
public:
    KVCache(std::size_t n_layers, std::size_t max_seq_len, std::size_t kv_dim);

    // Stores k and v (each [kv_dim]) of `layer` at `pos`. Throws ModelError unless
    // pos == length(layer) and pos < max_seq_len.
    void append(std::size_t layer, std::size_t pos, std::span<const float> k, std::span<const float> v);

    // Rows [0, length(layer)) of one layer: [length, kv_dim], row-major.
    std::span<const float> keys(std::size_t layer) const;
    std::span<const float> values(std::size_t layer) const;

    std::size_t length(std::size_t layer) const;
    // Positions held by every layer (the sequence length once a token has gone through all layers).
    std::size_t length() const;
    std::size_t max_seq_len() const { return max_seq_len_; }
    std::size_t kv_dim() const { return kv_dim_; }
    std::size_t n_layers() const { return lengths_.size(); }

    void reset();  // start a new sequence (storage is kept)

    // Rolls every layer back to its first `length` positions (speculative decoding: the rows of
    // rejected draft tokens are dropped; the next append overwrites them). Analogy: a database
    // transaction rolled back to a savepoint. Throws ModelError when a layer holds fewer than
    // `length` positions (a truncate never adds rows).
    void truncate(std::size_t length);

private:
    std::size_t max_seq_len_, kv_dim_;
    std::vector<std::size_t> lengths_;  // per layer
    std::vector<float> keys_, values_;  // [n_layers * max_seq_len * kv_dim]
    void check_layer(std::size_t layer) const;  // ModelError when out of range
    void write_row(std::size_t layer, std::size_t pos, std::span<const float> k, std::span<const float> v);
    std::size_t offset(std::size_t layer, std::size_t pos) const { return (layer * max_seq_len_ + pos) * kv_dim_; }
};

}  // namespace lmlab
