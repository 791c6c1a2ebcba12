// The KV cache: every layer's keys and values for the positions its queries can still read.
//
// Analogy: memoised request results. Attention at position t needs the keys and values of all
// positions <= t; they never change once computed, so each is computed once and stored here.
//
// Layout: keys[layer][row][kv_dim] (values alike), preallocated so the per-token loop never
// allocates. A layer without a sliding window keeps every position, position p in row p. A layer
// with a window of W (Config::window) keeps a ring buffer: its queries never read a position more
// than W - 1 behind them, so it holds only the last W + max_rows - 1 positions (max_rows: the most
// rows one forward appends before they attend, a prefill chunk; decode appends 1, so a decode-only
// cache holds exactly W), position p in row p % ring(layer), the oldest overwritten first. Memory
// is then bounded by the window, not by the sequence.
// Invariants, checked on every append:
//   - a layer may only append at position == its current length (no gaps, no overwrites of what
//     a query may still read);
//   - no position >= max_seq_len (the cache is full: a clear error, not a buffer overrun).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "model/model.h"  // ModelError, Config

namespace lmlab {

class KVCache {
public:
    // Every layer keeps every position, up to max_seq_len of them, and no layer has a window: a model
    // with a sliding window needs the Config constructor below (with this one its queries would read
    // every position: another model).
    KVCache(std::size_t n_layers, std::size_t max_seq_len, std::size_t kv_dim);
    // The cache of a model for up to `positions` positions (at most c.max_seq_len; reserve() grows
    // it): a layer with a sliding window keeps a ring of min(positions, window + max_rows - 1) rows.
    KVCache(const Config& c, std::size_t positions, std::size_t max_rows = 1);

    // Stores k and v (each [kv_dim]) of `layer` at `pos`. Throws ModelError unless
    // pos == length(layer) and pos < max_seq_len.
    void append(std::size_t layer, std::size_t pos, std::span<const float> k, std::span<const float> v);

    // One layer's rows, [min(length, ring), kv_dim] row-major: position p in row p % ring(layer), for
    // the positions held_from(layer) .. length(layer) - 1 (a layer without a window: rows 0 .. length - 1).
    std::span<const float> keys(std::size_t layer) const;
    std::span<const float> values(std::size_t layer) const;
    std::size_t ring(std::size_t layer) const;       // rows the layer has: max_seq_len, or its ring's size
    std::size_t held_from(std::size_t layer) const;  // the oldest position it still holds
    std::size_t window(std::size_t layer) const;     // its sliding window (0: none)

    std::size_t length(std::size_t layer) const;
    // Positions held by every layer (the sequence length once a token has gone through all layers).
    std::size_t length() const;
    std::size_t max_seq_len() const { return max_seq_len_; }
    std::size_t kv_dim() const { return kv_dim_; }
    std::size_t n_layers() const { return lengths_.size(); }
    // Bytes of keys and values allocated (what the cache costs in memory).
    std::size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(float); }

    // Dynamic RoPE scaling (kernels.h) rotates a row for the sequence length transformers' generate()
    // sees when it computes it: the prompt's length for the prompt's rows (one forward over all of
    // them), pos + 1 for each token after. Whoever starts a sequence says how long its prompt is
    // (Session::generate, speculative decoding, the stages); 0: every row pos + 1.
    void set_prompt_length(std::size_t n) { prompt_length_ = n; }
    std::size_t prompt_length() const { return prompt_length_; }

    void reset();  // start a new sequence (storage is kept; the prompt length forgotten)

    // Room for `positions` positions (keeping what is held): a session sizes its cache to the request
    // instead of the model's whole context (Llama 3's 131072 positions would take gigabytes). Grows
    // at least geometrically, so feeding token by token reallocates O(log n) times. Throws ModelError
    // past the model's context (the `positions` limit given at construction for the plain cache).
    void reserve(std::size_t positions);

    // Rolls every layer back to its first `length` positions (speculative decoding: the rows of
    // rejected draft tokens are dropped; the next append overwrites them). Analogy: a database
    // transaction rolled back to a savepoint. Throws ModelError when a layer holds fewer than
    // `length` positions (a truncate never adds rows), or when a ring has already overwritten a
    // position the next query would read (roll back by fewer than max_rows positions).
    void truncate(std::size_t length);

private:
    std::size_t max_seq_len_, limit_, kv_dim_, max_rows_;
    std::vector<std::size_t> lengths_;  // per layer
    std::vector<std::size_t> windows_;  // per layer, 0: none
    std::vector<std::size_t> rows_;     // per layer: max_seq_len_, or the ring's size
    std::vector<std::size_t> offsets_;  // per layer: where its rows start in keys_ / values_ (floats)
    std::vector<std::size_t> held_from_;  // per layer: its oldest position not yet overwritten
    std::vector<float> keys_, values_;  // the layers' rows one after the other
    std::size_t prompt_length_ = 0;
    void check_layer(std::size_t layer) const;  // ModelError when out of range
    void layout(std::size_t positions);         // rows_ and offsets_ for that many positions
    std::size_t offset(std::size_t layer, std::size_t pos) const { return offsets_[layer] + (pos % rows_[layer]) * kv_dim_; }
};

}  // namespace lmlab
