#include "model/kv_cache.h"

#include <algorithm>
#include <fmt/format.h>
#include <string>

namespace lmlab {

KVCache::KVCache(std::size_t n_layers, std::size_t max_seq_len, std::size_t kv_dim)
    : max_seq_len_(0), limit_(max_seq_len), kv_dim_(kv_dim), max_rows_(1), lengths_(n_layers, 0),
      windows_(n_layers, 0), held_from_(n_layers, 0) {
    layout(max_seq_len);
}

KVCache::KVCache(const Config& c, std::size_t positions, std::size_t max_rows)
    : max_seq_len_(0), limit_(c.max_seq_len), kv_dim_(c.kv_dim()), max_rows_(std::max<std::size_t>(max_rows, 1)),
      lengths_(c.n_layers, 0), windows_(c.n_layers, 0), held_from_(c.n_layers, 0) {
    if (positions > limit_)
        throw ModelError(fmt::format("KV cache: {} positions asked for, but the context is {} (max_seq_len)", positions, limit_));
    for (std::size_t l = 0; l < c.n_layers; ++l) windows_[l] = c.window(l);
    layout(positions);
}

void KVCache::layout(std::size_t positions) {
    max_seq_len_ = positions;
    rows_.assign(lengths_.size(), 0);
    offsets_.assign(lengths_.size(), 0);
    std::size_t at = 0;
    for (std::size_t l = 0; l < lengths_.size(); ++l) {
        // a windowed layer: its queries read at most window - 1 positions back, and the rows of one
        // forward (up to max_rows) are appended before any of them attends
        rows_[l] = windows_[l] ? std::min(positions, windows_[l] + max_rows_ - 1) : positions;
        offsets_[l] = at;
        at += rows_[l] * kv_dim_;
    }
    keys_.assign(at, 0.0f);
    values_.assign(at, 0.0f);
}

void KVCache::check_layer(std::size_t layer) const {
    if (layer >= lengths_.size())
        throw ModelError("KV cache: layer " + std::to_string(layer) + " out of range (" +
                           std::to_string(lengths_.size()) + " layers)");
}

void KVCache::append(std::size_t layer, std::size_t pos, std::span<const float> k, std::span<const float> v) {
    check_layer(layer);
    if (pos >= max_seq_len_)
        throw ModelError("KV cache: position " + std::to_string(pos) + " is beyond the context of " +
                           std::to_string(max_seq_len_) + " positions (max_seq_len); start a new sequence");
    if (pos != lengths_[layer])
        throw ModelError("KV cache: layer " + std::to_string(layer) + " holds " + std::to_string(lengths_[layer]) +
                           " positions, so the next append must be at position " + std::to_string(lengths_[layer]) +
                           ", not " + std::to_string(pos));
    if (k.size() != kv_dim_ || v.size() != kv_dim_)
        throw ModelError("KV cache: k/v of " + std::to_string(k.size()) + "/" + std::to_string(v.size()) +
                           " elements, expected kv_dim " + std::to_string(kv_dim_));
    // a ring layer overwrites the row of position pos - ring: out of every later query's window
    std::copy(k.begin(), k.end(), keys_.begin() + static_cast<std::ptrdiff_t>(offset(layer, pos)));
    std::copy(v.begin(), v.end(), values_.begin() + static_cast<std::ptrdiff_t>(offset(layer, pos)));
    ++lengths_[layer];
    if (lengths_[layer] > rows_[layer]) held_from_[layer] = std::max(held_from_[layer], lengths_[layer] - rows_[layer]);
}

std::span<const float> KVCache::keys(std::size_t layer) const {
    check_layer(layer);
    return std::span<const float>(keys_).subspan(offsets_[layer], std::min(lengths_[layer], rows_[layer]) * kv_dim_);
}

std::span<const float> KVCache::values(std::size_t layer) const {
    check_layer(layer);
    return std::span<const float>(values_).subspan(offsets_[layer], std::min(lengths_[layer], rows_[layer]) * kv_dim_);
}

std::size_t KVCache::ring(std::size_t layer) const {
    check_layer(layer);
    return rows_[layer];
}

std::size_t KVCache::held_from(std::size_t layer) const {
    check_layer(layer);
    return held_from_[layer];
}

std::size_t KVCache::window(std::size_t layer) const {
    check_layer(layer);
    return windows_[layer];
}

std::size_t KVCache::length(std::size_t layer) const {
    check_layer(layer);
    return lengths_[layer];
}

std::size_t KVCache::length() const { return lengths_.empty() ? 0 : *std::min_element(lengths_.begin(), lengths_.end()); }

void KVCache::reset() {
    std::fill(lengths_.begin(), lengths_.end(), 0);
    std::fill(held_from_.begin(), held_from_.end(), 0);
    prompt_length_ = 0;
}

void KVCache::reserve(std::size_t positions) {
    if (positions <= max_seq_len_) return;
    if (positions > limit_)
        throw ModelError(fmt::format("KV cache: {} positions asked for, but the context is {} (max_seq_len)", positions, limit_));
    // at least double: a cache grown one token at a time reallocates O(log n) times, not n
    const std::size_t grown = std::min(limit_, std::max(positions, 2 * max_seq_len_));
    const std::vector<std::size_t> old_rows = rows_, old_offsets = offsets_;
    const std::vector<float> old_keys = std::move(keys_), old_values = std::move(values_);
    layout(grown);
    for (std::size_t l = 0; l < lengths_.size(); ++l) {
        for (std::size_t p = held_from_[l]; p < lengths_[l]; ++p) {  // every position held moves to its new row
            const auto src = static_cast<std::ptrdiff_t>(old_offsets[l] + (p % old_rows[l]) * kv_dim_);
            const auto dst = static_cast<std::ptrdiff_t>(offset(l, p));
            std::copy(old_keys.begin() + src, old_keys.begin() + src + static_cast<std::ptrdiff_t>(kv_dim_), keys_.begin() + dst);
            std::copy(old_values.begin() + src, old_values.begin() + src + static_cast<std::ptrdiff_t>(kv_dim_),
                      values_.begin() + dst);
        }
    }
}

void KVCache::truncate(std::size_t length) {
    // checked for every layer first: a refused truncate changes nothing
    for (std::size_t l = 0; l < lengths_.size(); ++l) {
        if (length > lengths_[l])
            throw ModelError("KV cache: cannot truncate to " + std::to_string(length) + " positions: layer " +
                             std::to_string(l) + " holds only " + std::to_string(lengths_[l]) +
                             " (truncate only rolls back; append to grow)");
        // the next query (at position `length`) reads back to length - window + 1: still held?
        const std::size_t needed = windows_[l] && length + 1 > windows_[l] ? length + 1 - windows_[l] : 0;
        if (needed < held_from_[l])
            throw ModelError(fmt::format("KV cache: cannot truncate layer {} to {} positions: its ring of {} rows has "
                                         "overwritten position {}, which the next query's window reads (roll back by "
                                         "fewer than {} positions)",
                                         l, length, rows_[l], held_from_[l] - 1, max_rows_));
    }
    std::fill(lengths_.begin(), lengths_.end(), length);
}

}  // namespace lmlab
